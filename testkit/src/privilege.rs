//! Which user a service runs as: PostgreSQL refuses to run as root, and CI machines run as root.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use crate::{Error, Result};

/// The user a child service runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunAs {
    /// The user running the tests.
    CurrentUser,
    /// Another account, switched to with `setpriv` (util-linux, present on every Debian system).
    /// `setpriv` execs the program in place, so the process id we hold is the server's own and a
    /// signal sent to it reaches the server, not a wrapper that might not forward it.
    User(String),
}

impl RunAs {
    /// `user` when the tests run as root, the current user otherwise.
    pub fn unprivileged(user: &str) -> Self {
        if effective_uid() == Some(0) { Self::User(user.to_owned()) } else { Self::CurrentUser }
    }

    /// The argument vector that runs `program` as this user.
    pub fn argv(&self, program: &Path) -> Vec<OsString> {
        let mut argv = Vec::new();
        if let Self::User(user) = self {
            argv.extend(
                [
                    "setpriv".to_owned(),
                    format!("--reuid={user}"),
                    format!("--regid={user}"),
                    "--init-groups".to_owned(),
                    "--".to_owned(),
                ]
                .map(OsString::from),
            );
        }
        argv.push(program.as_os_str().to_owned());
        argv
    }

    /// Hands `dir` (recursively) to this user so the service can write there.
    pub fn take_ownership(&self, dir: &Path) -> Result<()> {
        let Self::User(user) = self else {
            return Ok(());
        };
        let mut chown = Command::new("chown");
        chown.arg("-R").arg(format!("{user}:")).arg(dir);
        crate::child::run(&mut chown).map(drop).map_err(|err| match err {
            Error::CommandFailed { .. } => Error::NotFound {
                what: format!("a usable `{user}` account"),
                hint: format!("{err}; install the server package, which creates it"),
            },
            other => other,
        })
    }
}

/// The effective user id, read from `/proc` so no `libc` call (and no `unsafe`) is needed.
fn effective_uid() -> Option<u32> {
    std::fs::read_to_string("/proc/self/status").ok().and_then(|status| parse_effective_uid(&status))
}

/// The second field of the `Uid:` line of `/proc/<pid>/status` (real, effective, saved, fs).
fn parse_effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_effective_not_the_real_uid() {
        let status = "Name:\tx\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_effective_uid(status), Some(0));
    }

    #[test]
    fn missing_or_garbled_uid_line_is_none() {
        assert_eq!(parse_effective_uid("Name:\tx\n"), None);
        assert_eq!(parse_effective_uid("Uid:\t1000\n"), None);
        assert_eq!(parse_effective_uid("Uid:\t1000\tabc\n"), None);
    }

    #[test]
    fn other_user_runs_through_setpriv() {
        let argv = RunAs::User("postgres".into()).argv(Path::new("/bin/postgres"));
        assert_eq!(argv, ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", "/bin/postgres"]);
        assert_eq!(RunAs::CurrentUser.argv(Path::new("/bin/postgres")), ["/bin/postgres"]);
    }
}
