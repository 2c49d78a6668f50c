"""A real SMTP server for tests: aiosmtpd on a port the kernel picks on 127.0.0.1.

Run by turnpike-testkit's SmtpServer with PYTHONPATH pointing at tests/smtp-server/.pylib, where
scripts/test installs aiosmtpd:

    python3 server.py --ready-file FILE --mail-dir DIR [--user USER --password PASSWORD]

It binds 127.0.0.1 port 0 itself (so no other process can take the port in between), then writes
the port it got to FILE, by rename, so a reader never sees half of it.

Each message it accepts is stored in DIR as `<n>.eml` (the message as received, after the dot
un-stuffing) and then `<n>.envelope` (`from <sender>` on the first line, then one `to <recipient>`
line per recipient), both by rename; `n` counts from 1, and a message is complete once its
`.envelope` file is there.

With --user and --password, clients must AUTH (PLAIN or LOGIN, offered on plaintext: this is
loopback only) before MAIL; each attempt is stored as `auth-<k>` holding `ok <login>` or
`failed <login>`.
"""

import argparse
import asyncio
import os
import sys
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def write_atomically(path, data):
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, "." + name + ".tmp")
    with open(tmp, "wb") as file:
        file.write(data)
    os.replace(tmp, path)


class Mailbox:
    """Stores accepted messages and AUTH attempts in a directory."""

    def __init__(self, directory):
        self.directory = directory
        self.messages = 0
        # Not `auth_...`: aiosmtpd takes handler attributes named so for AUTH mechanisms.
        self.logins = 0

    async def handle_DATA(self, server, session, envelope):
        self.messages += 1
        n = self.messages
        content = envelope.original_content or envelope.content or b""
        if isinstance(content, str):
            content = content.encode("utf-8", "surrogateescape")
        write_atomically(os.path.join(self.directory, f"{n}.eml"), content)
        lines = [f"from {envelope.mail_from}\n"] + [f"to {rcpt}\n" for rcpt in envelope.rcpt_tos]
        write_atomically(os.path.join(self.directory, f"{n}.envelope"), "".join(lines).encode("utf-8"))
        print(f"message {n}: from {envelope.mail_from} to {', '.join(envelope.rcpt_tos)}", flush=True)
        return "250 Message accepted"

    def record_auth(self, login, succeeded):
        self.logins += 1
        outcome = "ok" if succeeded else "failed"
        write_atomically(
            os.path.join(self.directory, f"auth-{self.logins}"),
            f"{outcome} {login}\n".encode("utf-8", "surrogateescape"),
        )
        print(f"AUTH {outcome} for {login!r}", flush=True)


class Authenticator:
    """Accepts one user and password (compared as bytes)."""

    def __init__(self, mailbox, user, password):
        self.mailbox = mailbox
        self.user = user.encode("utf-8")
        self.password = password.encode("utf-8")

    def __call__(self, server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        succeeded = auth_data.login == self.user and auth_data.password == self.password
        self.mailbox.record_auth(auth_data.login.decode("utf-8", "surrogateescape"), succeeded)
        return AuthResult(success=succeeded, handled=False)


async def serve(args):
    loop = asyncio.get_running_loop()
    mailbox = Mailbox(args.mail_dir)
    authenticator = Authenticator(mailbox, args.user, args.password) if args.user is not None else None

    def protocol():
        return SMTP(
            mailbox,
            hostname="localhost",
            enable_SMTPUTF8=True,
            authenticator=authenticator,
            auth_required=authenticator is not None,
            auth_require_tls=False,
            loop=loop,
        )

    server = await loop.create_server(protocol, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    write_atomically(args.ready_file, f"{port}\n".encode())
    print(f"listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ready-file", required=True)
    parser.add_argument("--mail-dir", required=True)
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()
    if (args.user is None) != (args.password is None):
        parser.error("--user and --password go together")
    os.makedirs(args.mail_dir, exist_ok=True)
    # Plaintext AUTH is the point here: the server listens on loopback only.
    warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
    asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
