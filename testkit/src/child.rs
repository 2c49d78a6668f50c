//! A service process owned by a test: its private directory, its log, its readiness wait, and a
//! watchdog that stops it (and removes the directory) when the test process goes away.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{Error, Result};

/// How long [`Drop`] waits for a stopped service before killing it outright.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Lines of the service's log quoted in errors.
const LOG_TAIL_LINES: usize = 40;

/// The wrapper every service runs under:
/// `sh -c WATCHDOG watchdog <dir> <stop signal> <program> <args>...`.
///
/// Its stdin is a pipe whose only write end the test process holds. The kernel closes that end when
/// the test process exits, however it exits (normal exit without running destructors of statics,
/// panic=abort, SIGKILL), so `read` returning is the signal to stop the server and remove its
/// directory. This needs no `libc`, no `prctl` and no helper binary. `PR_SET_PDEATHSIG` (e.g.
/// `setpriv --pdeathsig`) was ruled out: it fires when the spawning *thread* exits, and test threads
/// end long before the test process does.
///
/// The watchdog runs in the background and the shell then `exec`s the server, so the process the
/// test holds *is* the server: its exit is seen directly, and the server keeps default handling of
/// SIGINT and SIGQUIT, which a non-interactive shell would ignore for a background server.
const WATCHDOG: &str = r#"
dir=$1
signal=$2
shift 2
pid=$$
exec 3<&0
(
    read -r _ <&3
    kill -s "$signal" "$pid" 2>/dev/null
    # Wait for the server to be gone; a zombie (state Z, awaiting its reaper) counts as gone.
    while state=$(sed 's/.*) //; s/ .*//' "/proc/$pid/stat" 2>/dev/null) && [ "$state" != Z ]; do
        sleep 0.05
    done
    rm -rf -- "$dir"
) </dev/null &
exec "$@" </dev/null 3<&-
"#;

/// The signal that stops a service quickly, whatever its clients are doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: the usual graceful stop (Redis, ClickHouse).
    Terminate,
    /// SIGINT.
    Interrupt,
    /// SIGQUIT: PostgreSQL's immediate shutdown. Its SIGTERM waits for clients to disconnect,
    /// which a connection pool held by a test never does.
    Quit,
}

impl StopSignal {
    fn name(self) -> &'static str {
        match self {
            Self::Terminate => "TERM",
            Self::Interrupt => "INT",
            Self::Quit => "QUIT",
        }
    }
}

/// A running service process, stopped on drop.
///
/// The server is started through a small `sh` wrapper that leaves a watchdog behind (see
/// `WATCHDOG` in the source): dropping this value, or the test process ending, makes the watchdog
/// send the server its [`StopSignal`] and remove the service's directory. Drop waits until the
/// server has exited, so its port is closed once `drop` returns.
pub struct ChildService {
    name: String,
    process: Child,
    /// The write end of the watchdog's stdin: closing it stops the service.
    lifeline: Option<ChildStdin>,
    log_path: PathBuf,
    dir: TempDir,
}

impl ChildService {
    /// Starts `argv` (program first) in `dir`, with stdout and stderr going to `dir/<name>.log`.
    ///
    /// The log goes to a file rather than a pipe so that a test runner capturing the test's output
    /// (nextest waits for its pipes to close) never waits on a server that outlives a test.
    pub fn spawn(name: &str, dir: TempDir, argv: &[OsString], stop_signal: StopSignal) -> Result<Self> {
        let log_path = dir.path().join(format!("{name}.log"));
        let log = File::create(&log_path)
            .map_err(|source| Error::Io { context: format!("creating {}", log_path.display()), source })?;
        let log_err = log.try_clone().map_err(|source| Error::Io {
            context: format!("duplicating the handle of {}", log_path.display()),
            source,
        })?;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(WATCHDOG)
            .arg("watchdog")
            .arg(dir.path())
            .arg(stop_signal.name())
            .args(argv)
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(log)
            .stderr(log_err);
        let mut process =
            command.spawn().map_err(|source| Error::Spawn { command: format!("{name} ({argv:?})"), source })?;
        let lifeline = process.stdin.take();
        tracing::debug!(service = name, pid = process.id(), dir = %dir.path().display(), "started");
        Ok(Self { name: name.to_owned(), process, lifeline, log_path, dir })
    }

    /// Polls `probe` until it answers `true`, failing early if the service exits and late if
    /// `timeout` passes. Polls start at 10 ms apart and back off to 100 ms.
    pub fn wait_until_ready(&mut self, timeout: Duration, mut probe: impl FnMut() -> bool) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(status) = self.exit_status()? {
                return Err(Error::Exited { service: self.name.clone(), status, log: self.log_tail() });
            }
            if probe() {
                tracing::debug!(service = %self.name, "ready");
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::NotReady { service: self.name.clone(), timeout, log: self.log_tail() });
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// The exit status, if the service has exited.
    pub fn exit_status(&mut self) -> Result<Option<ExitStatus>> {
        self.process
            .try_wait()
            .map_err(|source| Error::Io { context: format!("checking whether {} is still running", self.name), source })
    }

    /// The service's private directory (removed when the service stops).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The last lines of the service's log, for error messages.
    pub fn log_tail(&self) -> String {
        read_tail(&self.log_path, LOG_TAIL_LINES)
            .unwrap_or_else(|err| format!("(could not read {}: {err})", self.log_path.display()))
    }
}

impl Drop for ChildService {
    fn drop(&mut self) {
        // Closing the lifeline is the stop signal for the watchdog.
        drop(self.lifeline.take());
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.process.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => {
                    tracing::warn!(service = %self.name, "did not stop in time; killing it");
                    let _ = self.process.kill();
                    let _ = self.process.wait();
                    break;
                }
            }
        }
        tracing::debug!(service = %self.name, "stopped");
    }
}

/// Runs a short command to completion, returning its stdout, or its whole output on failure.
pub(crate) fn run(command: &mut Command) -> Result<String> {
    let description = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn { command: description.clone(), source })?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(Error::CommandFailed {
        command: description,
        status: output.status,
        output: format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
    })
}

/// The last `lines` lines of a file, reading at most its last 64 KiB.
fn read_tail(path: &Path, lines: usize) -> std::io::Result<String> {
    const MAX_BYTES: u64 = 64 * 1024;
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(MAX_BYTES)))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(last_lines(&String::from_utf8_lossy(&bytes), lines).to_owned())
}

/// The suffix of `text` holding its last `count` lines.
fn last_lines(text: &str, count: usize) -> &str {
    let trimmed = text.trim_end_matches('\n');
    match trimmed.rmatch_indices('\n').nth(count.saturating_sub(1)) {
        Some((newline, _)) if count > 0 => &trimmed[newline + 1..],
        _ if count == 0 => "",
        _ => trimmed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_keeps_only_the_tail() {
        assert_eq!(last_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(last_lines("a\nb\nc", 5), "a\nb\nc");
        assert_eq!(last_lines("a\nb\nc", 1), "c");
        assert_eq!(last_lines("a\nb\nc", 0), "");
        assert_eq!(last_lines("", 3), "");
    }

    fn tempdir() -> TempDir {
        tempfile::Builder::new().prefix("turnpike-testkit-").tempdir().unwrap()
    }

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn drop_stops_the_service_and_removes_its_dir() {
        let mut service = ChildService::spawn(
            "sleeper",
            tempdir(),
            &argv(&["sh", "-c", "echo started; exec sleep 600"]),
            StopSignal::Terminate,
        )
        .unwrap();
        let log = service.log_path.clone();
        service
            .wait_until_ready(Duration::from_secs(10), || {
                std::fs::read_to_string(&log).is_ok_and(|text| text.contains("started"))
            })
            .unwrap();
        let dir = service.dir().to_path_buf();
        let started = Instant::now();
        drop(service);
        // The signal ends `sleep` at once; anything near STOP_TIMEOUT means the watchdog did nothing.
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(!dir.exists(), "{} was left behind", dir.display());
    }

    #[test]
    fn early_exit_is_reported_with_the_log() {
        let mut service = ChildService::spawn(
            "crasher",
            tempdir(),
            &argv(&["sh", "-c", "echo 'could not bind' >&2; exit 3"]),
            StopSignal::Terminate,
        )
        .unwrap();
        let err = service.wait_until_ready(Duration::from_secs(10), || false).unwrap_err();
        match err {
            Error::Exited { status, log, .. } => {
                assert_eq!(status.code(), Some(3));
                assert!(log.contains("could not bind"), "log was {log:?}");
            }
            other => panic!("expected Exited, got {other}"),
        }
    }

    #[test]
    fn a_service_that_never_gets_ready_times_out() {
        let mut service =
            ChildService::spawn("idler", tempdir(), &argv(&["sleep", "600"]), StopSignal::Interrupt).unwrap();
        let err = service.wait_until_ready(Duration::from_millis(200), || false).unwrap_err();
        assert!(matches!(err, Error::NotReady { .. }), "got {err}");
    }

    #[test]
    fn run_reports_the_output_of_a_failed_command() {
        let err = run(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 2"])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("out") && text.contains("err"), "{text}");
        assert_eq!(run(Command::new("echo").arg("hi")).unwrap(), "hi\n");
    }
}
