//! A real SMTP server for tests: `aiosmtpd` (PyPI), run under `python3` from
//! `tests/smtp-server/server.py`, on a port it binds itself on 127.0.0.1.
//!
//! Every message the server accepts is kept, with its envelope, and read back with
//! [`SmtpServer::messages`] or waited for with [`SmtpServer::wait_for`]. Started with
//! [`SmtpServer::start_with_login`], the server requires AUTH (PLAIN or LOGIN, offered on plaintext:
//! loopback only) before it takes mail, and records each attempt ([`SmtpServer::auth_attempts`]).
//!
//! `scripts/test` installs aiosmtpd into `tests/smtp-server/.pylib` (pinned by
//! `tests/smtp-server/requirements.txt`); nothing is downloaded while tests run.
//!
//! ```no_run
//! use std::time::Duration;
//! use turnpike_testkit::SmtpServer;
//!
//! let server = SmtpServer::start().unwrap();
//! assert!(server.url().starts_with("smtp://127.0.0.1:"));
//! // ... make the code under test send mail to server.url(), then:
//! let mail = server.wait_for(|m| m.to.contains(&"ada@example.com".to_owned()), Duration::from_secs(15)).unwrap();
//! assert_eq!(mail.header("Subject").as_deref(), Some("Hello"));
//! ```

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::child::{ChildService, StopSignal};
use crate::{Error, Result, repo_root};

/// Python starts in well under a second; CI machines are slower.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One message the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The envelope sender (`MAIL FROM`).
    pub from: String,
    /// The envelope recipients (`RCPT TO`), in order.
    pub to: Vec<String>,
    /// The message as received (headers, a blank line, the body; lines end in CRLF), read as
    /// UTF-8 with invalid bytes replaced.
    pub data: String,
}

impl ReceivedMail {
    /// The headers, before the first blank line.
    fn head(&self) -> &str {
        split_message(&self.data).0
    }

    /// The body, after the first blank line (still in its transfer encoding).
    pub fn body(&self) -> &str {
        split_message(&self.data).1
    }

    /// The value of the first header called `name` (case-insensitive), unfolded and trimmed.
    pub fn header(&self, name: &str) -> Option<String> {
        let mut found: Option<String> = None;
        for line in self.head().lines() {
            let line = line.trim_end_matches('\r');
            if line.starts_with([' ', '\t']) {
                if let Some(value) = found.as_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                continue;
            }
            if found.is_some() {
                break;
            }
            if let Some((key, value)) = line.split_once(':')
                && key.trim().eq_ignore_ascii_case(name)
            {
                found = Some(value.trim().to_owned());
            }
        }
        found
    }
}

/// Headers and body of a message, split at the first blank line.
fn split_message(data: &str) -> (&str, &str) {
    for separator in ["\r\n\r\n", "\n\n"] {
        if let Some(at) = data.find(separator) {
            return (&data[..at], &data[at + separator.len()..]);
        }
    }
    (data, "")
}

/// One AUTH exchange with a server started by [`SmtpServer::start_with_login`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthAttempt {
    /// The user name the client gave.
    pub login: String,
    /// Whether the user name and password were the right ones.
    pub succeeded: bool,
}

/// A running SMTP server, stopped on drop (see [`ChildService`]).
pub struct SmtpServer {
    service: ChildService,
    port: u16,
    mail_dir: PathBuf,
}

impl SmtpServer {
    /// Starts a server that takes mail from anyone, without AUTH. Blocking (a fraction of a
    /// second); from async tests use `spawn_blocking` or `block_in_place`.
    pub fn start() -> Result<Self> {
        Self::spawn(None)
    }

    /// Starts a server that takes mail only after AUTH (PLAIN or LOGIN) as `user` with `password`.
    pub fn start_with_login(user: &str, password: &str) -> Result<Self> {
        Self::spawn(Some((user, password)))
    }

    fn spawn(login: Option<(&str, &str)>) -> Result<Self> {
        let python = find_python()?;
        let (script, pylib) = server_script()?;
        let dir = tempfile::Builder::new()
            .prefix("turnpike-smtp-")
            .tempdir()
            .map_err(|source| Error::Io { context: "creating a directory for the SMTP server".into(), source })?;
        let ready_file = dir.path().join("port");
        let mail_dir = dir.path().join("mail");

        let mut pythonpath = OsString::from("PYTHONPATH=");
        pythonpath.push(&pylib);
        let mut argv: Vec<OsString> = vec![
            "env".into(),
            pythonpath,
            "PYTHONDONTWRITEBYTECODE=1".into(),
            python.into_os_string(),
            "-u".into(),
            script.into_os_string(),
            "--ready-file".into(),
            ready_file.clone().into_os_string(),
            "--mail-dir".into(),
            mail_dir.clone().into_os_string(),
        ];
        if let Some((user, password)) = login {
            argv.extend(["--user".into(), user.into(), "--password".into(), password.into()]);
        }
        let mut service = ChildService::spawn("smtp-server", dir, &argv, StopSignal::Terminate)?;
        // The server writes the file (by rename, so never half of it) once it listens.
        service.wait_until_ready(READY_TIMEOUT, || read_port(&ready_file).is_some())?;
        let port = read_port(&ready_file).ok_or_else(|| Error::Io {
            context: format!("reading {}", ready_file.display()),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "no port in the ready file"),
        })?;
        tracing::info!(port, dir = %service.dir().display(), "SMTP server ready");
        Ok(Self { service, port, mail_dir })
    }

    /// The port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.1:<port>`: plaintext SMTP, as lettre's URLs spell it.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message accepted so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        numbered_files(&self.mail_dir, "", ".envelope")
            .into_iter()
            .filter_map(|(n, envelope_path)| {
                let envelope = std::fs::read_to_string(envelope_path).ok()?;
                // `<n>.eml` is renamed into place before `<n>.envelope`.
                let data = std::fs::read(self.mail_dir.join(format!("{n}.eml"))).ok()?;
                let mut from = String::new();
                let mut to = Vec::new();
                for line in envelope.lines() {
                    if let Some(sender) = line.strip_prefix("from ") {
                        sender.clone_into(&mut from);
                    } else if let Some(recipient) = line.strip_prefix("to ") {
                        to.push(recipient.to_owned());
                    }
                }
                Some(ReceivedMail { from, to, data: String::from_utf8_lossy(&data).into_owned() })
            })
            .collect()
    }

    /// Every AUTH attempt so far, oldest first (none unless started with a login).
    pub fn auth_attempts(&self) -> Vec<AuthAttempt> {
        numbered_files(&self.mail_dir, "auth-", "")
            .into_iter()
            .filter_map(|(_, path)| {
                let text = std::fs::read_to_string(path).ok()?;
                let (outcome, login) = text.trim_end_matches('\n').split_once(' ')?;
                Some(AuthAttempt { login: login.to_owned(), succeeded: outcome == "ok" })
            })
            .collect()
    }

    /// Waits for the first message `wanted` accepts, polling (10 ms apart, backing off to 100 ms)
    /// until `timeout` passes.
    pub fn wait_for(&self, wanted: impl Fn(&ReceivedMail) -> bool, timeout: Duration) -> Result<ReceivedMail> {
        self.poll(timeout, "matching message", || self.messages().into_iter().find(|mail| wanted(mail)))
    }

    /// Waits for the first AUTH attempt `wanted` accepts, like [`SmtpServer::wait_for`].
    pub fn wait_for_auth_attempt(
        &self,
        wanted: impl Fn(&AuthAttempt) -> bool,
        timeout: Duration,
    ) -> Result<AuthAttempt> {
        self.poll(timeout, "matching AUTH attempt", || self.auth_attempts().into_iter().find(|a| wanted(a)))
    }

    fn poll<T>(&self, timeout: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(found) = probe() {
                return Ok(found);
            }
            if Instant::now() >= deadline {
                let received = self.messages().len();
                let attempts = self.auth_attempts().len();
                return Err(Error::Io {
                    context: format!(
                        "the SMTP server on port {} saw no {what} within {timeout:?} ({received} messages, \
                         {attempts} AUTH attempts); log tail:\n{}",
                        self.port,
                        self.log_tail()
                    ),
                    source: std::io::ErrorKind::TimedOut.into(),
                });
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// The last lines of the server's log (each message and AUTH attempt, errors).
    pub fn log_tail(&self) -> String {
        self.service.log_tail()
    }
}

impl std::fmt::Debug for SmtpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpServer").field("port", &self.port).field("dir", &self.service.dir()).finish()
    }
}

/// The port in the ready file, once it is there.
fn read_port(ready_file: &Path) -> Option<u16> {
    std::fs::read_to_string(ready_file).ok()?.trim().parse().ok().filter(|port| *port != 0)
}

/// Files in `dir` named `<prefix><n><suffix>`, sorted by `n`.
fn numbered_files(dir: &Path, prefix: &str, suffix: &str) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<(u64, PathBuf)> = entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name();
            let n = name.to_str()?.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok()?;
            Some((n, entry.path()))
        })
        .collect();
    files.sort();
    files
}

/// `server.py` and the directory holding aiosmtpd, once it is installed.
fn server_script() -> Result<(PathBuf, PathBuf)> {
    let dir = repo_root().join("tests").join("smtp-server");
    let pylib = dir.join(".pylib");
    if !pylib.join("aiosmtpd").join("__init__.py").is_file() {
        return Err(Error::NotFound {
            what: format!("the Python package aiosmtpd in {}", pylib.display()),
            hint: "run scripts/test, which installs aiosmtpd into tests/smtp-server/.pylib".into(),
        });
    }
    Ok((dir.join("server.py"), pylib))
}

/// `python3` on `PATH`.
fn find_python() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("python3"))
        .find(|python| python.metadata().is_ok_and(|meta| meta.is_file()))
        .ok_or_else(|| Error::NotFound {
            what: "Python 3 (`python3`)".into(),
            hint: "looked on PATH; install the `python3` package (scripts/test does)".into(),
        })
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpStream;

    use super::*;

    /// A plaintext SMTP session over a std `TcpStream`, one command and reply at a time.
    struct Session {
        reader: BufReader<TcpStream>,
        writer: TcpStream,
    }

    impl Session {
        fn connect(port: u16) -> Session {
            let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            let writer = stream.try_clone().unwrap();
            let mut session = Session { reader: BufReader::new(stream), writer };
            assert_eq!(session.reply().0, 220);
            session
        }

        /// A reply: its code and its lines' text, multi-line replies joined.
        fn reply(&mut self) -> (u16, String) {
            let mut text = String::new();
            loop {
                let mut line = String::new();
                self.reader.read_line(&mut line).unwrap();
                assert!(line.len() >= 4, "a short reply line: {line:?}");
                text.push_str(line[4..].trim_end());
                text.push('\n');
                if line.as_bytes()[3] == b' ' {
                    return (line[..3].parse().unwrap(), text);
                }
            }
        }

        fn command(&mut self, line: &str) -> (u16, String) {
            self.writer.write_all(format!("{line}\r\n").as_bytes()).unwrap();
            self.reply()
        }

        #[track_caller]
        fn expect(&mut self, line: &str, code: u16) {
            let (got, text) = self.command(line);
            assert_eq!(got, code, "{line}: {text}");
        }
    }

    /// Standard base64 with padding (testkit has no base64 library; AUTH PLAIN needs a little).
    fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, encoded) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")]
        {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn headers_are_read_unfolded_and_bodies_split_off() {
        let mail = ReceivedMail {
            from: "a@example.com".into(),
            to: vec!["b@example.com".into()],
            data: "Subject: a long\r\n subject\r\nFrom: A <a@example.com>\r\n\r\nbody\r\nX-Not: a header\r\n".into(),
        };
        assert_eq!(mail.header("subject").as_deref(), Some("a long subject"));
        assert_eq!(mail.header("FROM").as_deref(), Some("A <a@example.com>"));
        assert_eq!(mail.header("X-Not"), None);
        assert_eq!(mail.body(), "body\r\nX-Not: a header\r\n");
    }

    #[test]
    fn a_message_sent_over_smtp_is_read_back() {
        let server = SmtpServer::start().unwrap();
        assert_eq!(server.url(), format!("smtp://127.0.0.1:{}", server.port()));
        assert!(server.messages().is_empty());

        let mut smtp = Session::connect(server.port());
        smtp.expect("HELO client.example", 250);
        smtp.expect("MAIL FROM:<sender@example.com>", 250);
        smtp.expect("RCPT TO:<ada@example.com>", 250);
        smtp.expect("RCPT TO:<grace@example.com>", 250);
        smtp.expect("DATA", 354);
        // A line starting with a dot is dot-stuffed on the wire and un-stuffed by the server.
        smtp.expect("Subject: Hello\r\nFrom: Sender <sender@example.com>\r\n\r\nFirst line\r\n..dotted\r\n.", 250);
        smtp.expect("QUIT", 221);

        let mail = server.wait_for(|m| m.to.iter().any(|to| to == "ada@example.com"), Duration::from_secs(15)).unwrap();
        assert_eq!(mail.from, "sender@example.com");
        assert_eq!(mail.to, ["ada@example.com", "grace@example.com"]);
        assert_eq!(mail.header("Subject").as_deref(), Some("Hello"));
        assert_eq!(mail.body(), "First line\r\n.dotted\r\n");
        assert_eq!(server.messages(), [mail]);
        assert!(server.auth_attempts().is_empty());

        let err = server.wait_for(|m| m.from == "nobody@example.com", Duration::from_millis(50)).unwrap_err();
        assert!(
            err.to_string().contains("saw no matching message") && err.to_string().contains("(1 messages"),
            "{err}"
        );
    }

    #[test]
    fn with_a_login_mail_is_taken_only_after_auth() {
        let server = SmtpServer::start_with_login("mailer", "s3cret pass").unwrap();
        let mut smtp = Session::connect(server.port());
        let (code, features) = smtp.command("EHLO client.example");
        assert_eq!(code, 250);
        assert!(features.contains("AUTH") && features.contains("PLAIN"), "{features}");
        smtp.expect("MAIL FROM:<sender@example.com>", 530);
        smtp.expect(&format!("AUTH PLAIN {}", base64(b"\0mailer\0wrong")), 535);
        smtp.expect("MAIL FROM:<sender@example.com>", 530);
        smtp.expect(&format!("AUTH PLAIN {}", base64(b"\0mailer\0s3cret pass")), 235);
        smtp.expect("MAIL FROM:<sender@example.com>", 250);
        smtp.expect("RCPT TO:<ada@example.com>", 250);
        smtp.expect("DATA", 354);
        smtp.expect("Subject: Authenticated\r\n\r\nHi\r\n.", 250);
        smtp.expect("QUIT", 221);

        let mail = server.wait_for(|_| true, Duration::from_secs(15)).unwrap();
        assert_eq!(mail.header("Subject").as_deref(), Some("Authenticated"));
        assert_eq!(
            server.auth_attempts(),
            [
                AuthAttempt { login: "mailer".into(), succeeded: false },
                AuthAttempt { login: "mailer".into(), succeeded: true }
            ]
        );
        let attempt = server.wait_for_auth_attempt(|a| a.succeeded, Duration::from_secs(1)).unwrap();
        assert_eq!(attempt.login, "mailer");
    }
}
