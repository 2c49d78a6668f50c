//! Test-only helpers: start real services (PostgreSQL, an OpenID provider, ChromeDriver with
//! headless Chromium; Redis and ClickHouse later) as child processes on free loopback ports, and
//! find the repository's files from tests.
//!
//! Everything here is blocking and uses only `std`, so it works the same from plain `#[test]`s and
//! from any tokio runtime (each `#[tokio::test]` has its own runtime; a `'static` server must not be
//! tied to one of them). Starting a server takes about a second; call it from async tests directly.
//!
//! Servers never outlive the test process: see [`ChildService`] for how that holds even for the
//! `'static` instance behind [`Postgres::shared`], whose destructor never runs.
//!
//! ```
//! use turnpike_testkit::Postgres;
//!
//! // One server per test process, one fresh database per test.
//! let url = Postgres::shared().create_database("store_queries");
//! assert!(url.starts_with("postgres://postgres@127.0.0.1:"));
//! ```

mod child;
mod oidc;
mod postgres;
mod privilege;
mod smtp;
mod webdriver;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

pub use child::{ChildService, StopSignal};
pub use oidc::{OidcAccount, OidcClient, OidcOptions, OidcProvider};
pub use postgres::{PgBinaries, Postgres};
pub use privilege::RunAs;
pub use smtp::{AuthAttempt, ReceivedMail, SmtpServer};
pub use webdriver::{ChromeDriver, JAVASCRIPT_OFF, artifacts_dir};

/// Why a service could not be started or used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} not found ({hint})")]
    NotFound { what: String, hint: String },
    #[error("could not run {command}: {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed ({status}):\n{output}")]
    CommandFailed { command: String, status: ExitStatus, output: String },
    #[error("{service} exited before it was ready ({status}); log tail:\n{log}")]
    Exited { service: String, status: ExitStatus, log: String },
    #[error("{service} was not ready within {timeout:?}; log tail:\n{log}")]
    NotReady { service: String, timeout: Duration, log: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is found by binding port 0 and releasing it, so another process can take it before the
/// caller binds it (a small race). Servers started by this crate retry on a fresh port when their
/// bind fails; code that can bind port 0 itself should do that instead and read the port back.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("binding 127.0.0.1:0 must work on a test machine");
    listener.local_addr().expect("a bound listener has a local address").port()
}

/// The workspace root (the directory holding the root `Cargo.toml`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the testkit crate lives one level below the workspace root")
        .to_path_buf()
}

/// Where the shared test fixtures may be, in order: `$TESTKIT_FIXTURES_DIR`, beside the
/// repository (`../shared/fixtures`, the usual layout), or the workplace's shared folder
/// (`/work/shared/fixtures`), for a clone made somewhere else.
fn fixture_candidates() -> Vec<PathBuf> {
    let mut candidates: Vec<PathBuf> =
        std::env::var_os("TESTKIT_FIXTURES_DIR").map(PathBuf::from).into_iter().collect();
    if let Some(parent) = repo_root().parent() {
        candidates.push(parent.join("shared").join("fixtures"));
    }
    candidates.push(PathBuf::from("/work/shared/fixtures"));
    candidates
}

/// The shared test fixtures (real-world inputs such as OpenAPI documents).
pub fn fixtures_dir() -> PathBuf {
    let candidates = fixture_candidates();
    candidates
        .iter()
        .find(|dir| dir.join("openapi").is_dir())
        .cloned()
        .unwrap_or_else(|| panic!("no shared fixtures found; looked in {candidates:?} (set TESTKIT_FIXTURES_DIR)"))
}

/// The seed corpus of fuzz target `name` (`fuzz/corpus/<name>`), as (file name,
/// contents) sorted by name, for tests that replay it so known hostile inputs stay
/// handled.
pub fn fuzz_seeds(name: &str) -> Vec<(String, Vec<u8>)> {
    let dir = repo_root().join("fuzz").join("corpus").join(name);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_can_be_bound_again() {
        let port = free_port();
        assert_ne!(port, 0);
        // The port was released, so binding it must work (barring the documented race).
        TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).unwrap();
    }

    #[test]
    fn repo_root_is_the_workspace() {
        let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"), "not the workspace root");
        assert!(manifest.contains("\"testkit\""), "testkit is not a member");
    }

    #[test]
    fn fixtures_dir_holds_the_openapi_documents() {
        let dir = fixtures_dir();
        assert!(fixture_candidates().contains(&dir));
        let documents = std::fs::read_dir(dir.join("openapi")).unwrap().count();
        assert!(documents >= 7, "{} holds only {documents} documents", dir.display());
    }
}
