//! A throwaway PostgreSQL server for tests, started from the installed binaries, and a fresh
//! database per test so tests never share state.

use std::ffi::{OsStr, OsString};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tempfile::TempDir;

use crate::child::{ChildService, StopSignal, run};
use crate::{Error, Result, RunAs, free_port};

/// The operating-system account the server runs as when the tests run as root. The Debian
/// packages create it.
const OS_USER: &str = "postgres";
/// The database superuser `initdb` creates; it logs in without a password (trust, loopback only).
const SUPERUSER: &str = "postgres";
/// Where Debian and Ubuntu install the server binaries, one directory per major version.
const DEBIAN_ROOT: &str = "/usr/lib/postgresql";
/// How often a start is retried when another process took the port first (see [`free_port`]).
const START_ATTEMPTS: usize = 5;
/// A generous bound: a start takes well under a second on an idle machine, but CI machines with
/// two cores also run test binaries in parallel.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Postgres truncates identifiers at 63 bytes; we keep the readable part of a name below that.
const NAME_HINT_MAX: usize = 40;

/// The PostgreSQL programs the testkit runs.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    pub postgres: PathBuf,
    pub initdb: PathBuf,
    pub pg_isready: PathBuf,
    pub createdb: PathBuf,
    pub psql: PathBuf,
}

impl PgBinaries {
    /// Finds the server on `PATH` (resolving symlinks to its real directory), else the newest
    /// `/usr/lib/postgresql/<version>/bin`, where Debian puts it outside `PATH`. The client
    /// programs are taken from the server's directory, else from `PATH`.
    pub fn discover() -> Result<Self> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path_dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
        let on_path = find_in(&path_dirs, "postgres")
            .filter(|_| find_in(&path_dirs, "initdb").is_some())
            .and_then(|postgres| std::fs::canonicalize(postgres).ok())
            .and_then(|postgres| postgres.parent().map(Path::to_path_buf));
        let bin_dir = on_path.or_else(newest_debian_bin_dir).ok_or_else(|| Error::NotFound {
            what: "PostgreSQL server binaries (postgres, initdb)".into(),
            hint: format!(
                "looked on PATH and in {DEBIAN_ROOT}/*/bin; install the `postgresql` package \
                 (scripts/test does)"
            ),
        })?;
        let mut search = vec![bin_dir];
        search.extend(path_dirs);
        let find = |name: &str| {
            find_in(&search, name).ok_or_else(|| Error::NotFound {
                what: format!("PostgreSQL program `{name}`"),
                hint: format!("looked in {search:?}"),
            })
        };
        Ok(Self {
            postgres: find("postgres")?,
            initdb: find("initdb")?,
            pg_isready: find("pg_isready")?,
            createdb: find("createdb")?,
            psql: find("psql")?,
        })
    }
}

/// A PostgreSQL server on a free loopback port, with its data in a temporary directory.
///
/// Tuned for tests, not durability: no fsync, no synchronous commit, no full-page writes. The
/// server stops and its directory is removed when this value is dropped or the test process
/// exits (see [`ChildService`]).
pub struct Postgres {
    service: ChildService,
    binaries: PgBinaries,
    port: u16,
}

impl Postgres {
    /// The server shared by every test in this test binary, started on first use.
    ///
    /// Its destructor never runs (it is a `static`); the server still stops and its directory is
    /// still removed when the test process exits, through [`ChildService`]'s watchdog. Under
    /// nextest every test is its own process, so each gets its own server (about half a second).
    ///
    /// # Panics
    /// If the server cannot start; the message says why (missing binaries, the server's log).
    pub fn shared() -> &'static Self {
        static SHARED: OnceLock<Postgres> = OnceLock::new();
        SHARED.get_or_init(|| Self::start().unwrap_or_else(|err| panic!("starting the shared PostgreSQL: {err}")))
    }

    /// Starts a server of its own, with the binaries [`PgBinaries::discover`] finds.
    pub fn start() -> Result<Self> {
        Self::start_with(PgBinaries::discover()?)
    }

    /// Starts a server of its own with the given binaries.
    pub fn start_with(binaries: PgBinaries) -> Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::start_once(&binaries, free_port()) {
                Err(Error::Exited { log, .. }) if attempt < START_ATTEMPTS && is_port_clash(&log) => {
                    tracing::debug!(attempt, "port taken before PostgreSQL bound it; retrying");
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    fn start_once(binaries: &PgBinaries, port: u16) -> Result<Self> {
        let run_as = RunAs::unprivileged(OS_USER);
        let dir = service_dir(&run_as)?;
        run_as.take_ownership(dir.path())?;
        let data = dir.path().join("data");

        let mut initdb = command(&run_as.argv(&binaries.initdb));
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "--auth=trust", "--no-sync", "-E", "UTF8"])
            // A fixed locale makes sorting and case rules the same on every machine, whatever
            // the host's LANG says (or whether that locale is even installed).
            .arg("--locale=C.UTF-8");
        run(&mut initdb)?;

        let mut argv = run_as.argv(&binaries.postgres);
        argv.extend(
            [
                "-D".as_ref(),
                data.as_os_str(),
                "-p".as_ref(),
                port.to_string().as_ref(),
                "-h".as_ref(),
                "127.0.0.1".as_ref(),
                // The Unix socket goes in our own directory, never in the system's /run, so
                // concurrent servers and the machine's own PostgreSQL never meet.
                "-k".as_ref(),
                dir.path().as_os_str(),
                "-F".as_ref(),
            ]
            .map(OsString::from),
        );
        for setting in ["fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=200"] {
            argv.extend(["-c", setting].map(OsString::from));
        }
        let mut service = ChildService::spawn("postgres", dir, &argv, StopSignal::Quit)?;
        // Readiness is the server answering the protocol, not merely a port being open (it opens
        // before startup finishes). It is asked through the Unix socket in our private directory:
        // another test process's server that won a race for the same port could answer on TCP,
        // but never there. Postgres opens its socket after binding TCP and exits if it cannot
        // bind, so an answer there also means the TCP port is ours.
        let socket_dir = service.dir().to_path_buf();
        service.wait_until_ready(READY_TIMEOUT, || {
            accepts_connections(&binaries.pg_isready, socket_dir.as_os_str(), port) && port_open(port)
        })?;
        tracing::info!(port, dir = %service.dir().display(), "PostgreSQL ready");
        Ok(Self { service, binaries: binaries.clone(), port })
    }

    /// The port the server listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connection URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates an empty database with a unique name built from `name_hint` and returns its URL.
    ///
    /// # Panics
    /// If `createdb` fails; use [`Postgres::try_create_database`] to handle that.
    pub fn create_database(&self, name_hint: &str) -> String {
        self.try_create_database(name_hint).unwrap_or_else(|err| panic!("creating a database for {name_hint:?}: {err}"))
    }

    /// Creates an empty database with a unique name built from `name_hint` and returns its URL.
    pub fn try_create_database(&self, name_hint: &str) -> Result<String> {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let name = database_name(name_hint, std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let mut createdb = command(&[self.binaries.createdb.clone().into()]);
        self.connect_args(&mut createdb).arg("--").arg(&name);
        run(&mut createdb)?;
        Ok(self.url(&name))
    }

    /// Runs `sql` in `database` with `psql` and returns its unaligned, tuples-only output.
    pub fn psql(&self, database: &str, sql: &str) -> Result<String> {
        let mut psql = command(&[self.binaries.psql.clone().into()]);
        self.connect_args(&mut psql).args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", database, "-c", sql]);
        run(&mut psql)
    }

    /// The server's private directory (data, socket, log).
    pub fn dir(&self) -> &Path {
        self.service.dir()
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        self.service.log_tail()
    }

    fn connect_args<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        command.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", SUPERUSER])
    }
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres").field("port", &self.port).field("dir", &self.service.dir()).finish_non_exhaustive()
    }
}

/// A command for `argv`, with the caller's `PG*` variables removed so a developer's `PGHOST`,
/// `PGDATA` or `PGOPTIONS` cannot point the tests somewhere else.
fn command(argv: &[OsString]) -> Command {
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            command.env_remove(key);
        }
    }
    command
}

/// A private directory the server's account can reach. When we switch accounts the directory
/// goes in /tmp, which every account can traverse (a root's TMPDIR may not be).
fn service_dir(run_as: &RunAs) -> Result<TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("turnpike-pg-");
    let dir = match run_as {
        RunAs::CurrentUser => builder.tempdir(),
        RunAs::User(_) => builder.tempdir_in("/tmp"),
    };
    dir.map_err(|source| Error::Io { context: "creating a directory for PostgreSQL".into(), source })
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), Duration::from_millis(200)).is_ok()
}

/// Whether the server at `host` (an address, or a directory holding its Unix socket) accepts
/// connections.
fn accepts_connections(pg_isready: &Path, host: &OsStr, port: u16) -> bool {
    let mut command = command(&[pg_isready.into()]);
    command.args(["-q", "-t", "2", "-p", &port.to_string()]);
    command.arg("-h").arg(host);
    command.args(["-U", SUPERUSER, "-d", "postgres"]);
    run(&mut command).is_ok()
}

/// Whether the server's log says another process holds the port.
fn is_port_clash(log: &str) -> bool {
    log.contains("could not bind") || log.contains("Address already in use")
}

/// `hint` made into a safe, lowercase identifier, then made unique by process and counter.
fn database_name(hint: &str, pid: u32, counter: u32) -> String {
    let mut base: String = hint
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .take(NAME_HINT_MAX)
        .collect();
    if !base.starts_with(|c: char| c.is_ascii_lowercase() || c == '_') {
        base.insert_str(0, "db_");
    }
    format!("{base}_{pid}_{counter}")
}

/// The first executable file called `name` in `dirs`.
fn find_in(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    dirs.iter().map(|dir| dir.join(name)).find(|candidate| {
        candidate.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    })
}

/// `/usr/lib/postgresql/<newest version>/bin`, if it holds a server.
fn newest_debian_bin_dir() -> Option<PathBuf> {
    let versions = std::fs::read_dir(DEBIAN_ROOT).ok()?.filter_map(|entry| entry.ok()?.file_name().into_string().ok());
    newest_version(versions)
        .map(|version| Path::new(DEBIAN_ROOT).join(version).join("bin"))
        .filter(|bin| find_in(std::slice::from_ref(bin), "postgres").is_some())
}

/// The highest of directory names like `9.6`, `15`, `17`, compared numerically part by part.
fn newest_version(names: impl IntoIterator<Item = String>) -> Option<String> {
    names
        .into_iter()
        .filter_map(|name| {
            let parts: Option<Vec<u32>> = name.split('.').map(|part| part.parse().ok()).collect();
            Some((parts?, name))
        })
        .max()
        .map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_version_compares_numbers_not_strings() {
        let names = ["9.6", "15", "10", "notes", "17"].map(String::from);
        assert_eq!(newest_version(names), Some("17".into()));
        assert_eq!(newest_version(["9.6", "9.10"].map(String::from)), Some("9.10".into()));
        assert_eq!(newest_version(["x".to_owned()]), None);
    }

    #[test]
    fn database_names_are_safe_identifiers() {
        assert_eq!(database_name("Store Tests-1", 42, 7), "store_tests_1_42_7");
        assert_eq!(database_name("1st", 1, 2), "db_1st_1_2");
        assert_eq!(database_name("", 1, 2), "db__1_2");
        assert_eq!(database_name("ünï", 1, 2), "_n__1_2");
        let long = database_name(&"x".repeat(200), u32::MAX, u32::MAX);
        assert!(long.len() <= 63, "{long} is {} bytes", long.len());
    }

    #[test]
    fn port_clash_is_recognised_from_the_log() {
        let log = "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use\n";
        assert!(is_port_clash(log));
        assert!(!is_port_clash("FATAL:  data directory has wrong ownership"));
    }

    #[test]
    fn a_port_taken_by_another_server_fails_the_start_as_a_clash() {
        // The worst case of the free_port race: the port went to another test's PostgreSQL,
        // which would answer a readiness probe over TCP as if it were ours.
        let other = Postgres::start().unwrap();
        match Postgres::start_once(&other.binaries, other.port()) {
            Err(Error::Exited { log, .. }) => assert!(is_port_clash(&log), "log: {log}"),
            other => panic!("expected the server to exit, got {other:?}"),
        }
    }

    #[test]
    fn finds_only_executable_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        let exe = dir.path().join("exe");
        std::fs::write(&plain, "").unwrap();
        std::fs::write(&exe, "").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::create_dir(dir.path().join("subdir")).unwrap();
        let dirs = [dir.path().to_path_buf()];
        assert_eq!(find_in(&dirs, "exe"), Some(exe));
        assert_eq!(find_in(&dirs, "plain"), None);
        assert_eq!(find_in(&dirs, "subdir"), None);
    }
}
