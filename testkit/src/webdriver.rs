//! A ChromeDriver (WebDriver server) for browser tests, driving headless Chromium, and the
//! directory where tests leave artifacts such as screenshots.
//!
//! The driver listens on a port it picks itself (`--port=0`) and names in its log, so there is
//! no race for a port. Each WebDriver session gets a fresh Chromium profile inside the driver's
//! private directory. Stopping the driver (drop, or the test process ending) also stops the
//! browsers it started: ChromeDriver itself leaves them running when it is told to stop.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::child::{ChildService, StopSignal};
use crate::oidc::json_string;
use crate::{Error, Result, repo_root};

/// What to install when the programs are missing.
const INSTALL_HINT: &str = "install chromium and chromium-driver (scripts/test does)";
/// Where the Debian packages put the programs.
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
const DEFAULT_CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// ChromeDriver starts in well under a second; two-core CI machines running test binaries in
/// parallel get a generous bound.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// The line ChromeDriver logs once it listens, followed by the port and a full stop.
const STARTED: &str = "started successfully on port ";

/// Runs ChromeDriver (`"$@"`) and, when stopped, first stops the browsers it started (its
/// children): ChromeDriver leaves them running, re-parented to init, when it gets SIGTERM.
/// Only the driver's own children are signalled, found by parent process id.
const DRIVER_WRAPPER: &str = r#"
"$@" &
driver=$!
stop() {
    pkill -TERM -P "$driver" 2>/dev/null
    tries=0
    # Until no child is left but zombies (the driver does not reap its browsers).
    while ps -o stat= --ppid "$driver" 2>/dev/null | grep -qv '^Z' && [ "$tries" -lt 50 ]; do
        sleep 0.1
        tries=$((tries + 1))
    done
    pkill -KILL -P "$driver" 2>/dev/null
    kill -TERM "$driver" 2>/dev/null
    wait "$driver"
    exit 0
}
trap stop TERM INT
wait "$driver"
"#;

/// Chromium preference that blocks JavaScript on every site, for
/// [`ChromeDriver::capabilities_with_prefs`].
pub const JAVASCRIPT_OFF: (&str, &str) = ("profile.managed_default_content_settings.javascript", "2");

/// A ChromeDriver on a loopback port, stopped (with its browsers) on drop.
pub struct ChromeDriver {
    service: ChildService,
    port: u16,
    chromium: PathBuf,
    profiles: AtomicU32,
}

impl ChromeDriver {
    /// Starts ChromeDriver for the Chromium at `$CHROMIUM` (default `/usr/bin/chromium`); the
    /// driver is `$CHROMEDRIVER`, else `chromedriver` on `PATH`, else `/usr/bin/chromedriver`.
    ///
    /// Fails, naming the packages to install, when either program is missing.
    pub fn start() -> Result<Self> {
        let chromium = std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from(DEFAULT_CHROMIUM), PathBuf::from);
        if !is_executable(&chromium) {
            return Err(Error::NotFound {
                what: format!("Chromium ({})", chromium.display()),
                hint: format!("{INSTALL_HINT}, or set CHROMIUM"),
            });
        }
        let driver = find_chromedriver().ok_or_else(|| Error::NotFound {
            what: "chromedriver".into(),
            hint: format!("looked at $CHROMEDRIVER, on PATH and at {DEFAULT_CHROMEDRIVER}; {INSTALL_HINT}"),
        })?;
        let dir = tempfile::Builder::new()
            .prefix("turnpike-chromedriver-")
            .tempdir()
            .map_err(|source| Error::Io { context: "creating a directory for ChromeDriver".into(), source })?;
        let mut argv: Vec<OsString> =
            ["sh", "-c", DRIVER_WRAPPER, "chromedriver-wrapper"].into_iter().map(OsString::from).collect();
        argv.push(driver.into_os_string());
        // Port 0: the driver picks a free port and logs it. Loopback only is its default.
        argv.push("--port=0".into());
        // ChildService logs to `<dir>/<name>.log`; the driver names its port there.
        let log_path = dir.path().join("chromedriver.log");
        let mut service = ChildService::spawn("chromedriver", dir, &argv, StopSignal::Terminate)?;
        let mut port = None;
        service.wait_until_ready(READY_TIMEOUT, || {
            port = port.or_else(|| std::fs::read_to_string(&log_path).ok().as_deref().and_then(reported_port));
            port.is_some_and(status_ready)
        })?;
        let port = port.expect("ready implies a port");
        tracing::info!(port, dir = %service.dir().display(), "ChromeDriver ready");
        Ok(Self { service, port, chromium, profiles: AtomicU32::new(0) })
    }

    /// The WebDriver endpoint, for a client's `connect`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port the driver listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The driver's private directory (browser profiles live here; removed on stop).
    pub fn dir(&self) -> &Path {
        self.service.dir()
    }

    /// The last lines of the driver's log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.service.log_tail()
    }

    /// New-session capabilities (JSON text) for headless Chromium with a fresh profile.
    pub fn capabilities(&self) -> String {
        self.capabilities_with_prefs(&[])
    }

    /// Like [`ChromeDriver::capabilities`], with Chromium preferences: names with values as
    /// JSON literals, e.g. [`JAVASCRIPT_OFF`]. The browser's console is kept at every level,
    /// so a test can read it through ChromeDriver's log endpoint.
    pub fn capabilities_with_prefs(&self, prefs: &[(&str, &str)]) -> String {
        let profile = self.service.dir().join(format!("profile-{}", self.profiles.fetch_add(1, Ordering::Relaxed)));
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1280,900".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let args: Vec<String> = args.iter().map(|a| json_string(a)).collect();
        let prefs: Vec<String> = prefs.iter().map(|(name, value)| format!("{}:{value}", json_string(name))).collect();
        format!(
            r#"{{"browserName":"chrome","goog:loggingPrefs":{{"browser":"ALL"}},"goog:chromeOptions":{{"binary":{},"args":[{}],"prefs":{{{}}}}}}}"#,
            json_string(&self.chromium.to_string_lossy()),
            args.join(","),
            prefs.join(","),
        )
    }
}

/// Where tests of `kind` leave artifacts (screenshots, logs), created if needed:
/// `$TURNPIKE_TEST_ARTIFACTS/<kind>` when that is set, else `target/test-artifacts/<kind>` in
/// the build's target directory (`$CARGO_TARGET_DIR`, else the repository's `target`).
pub fn artifacts_dir(kind: &str) -> PathBuf {
    let base = match std::env::var_os("TURNPIKE_TEST_ARTIFACTS") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo_root().join("target"), PathBuf::from);
            let target = if target.is_relative() { repo_root().join(target) } else { target };
            target.join("test-artifacts")
        }
    };
    let dir = base.join(kind);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

fn find_chromedriver() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMEDRIVER") {
        return Some(PathBuf::from(path)).filter(|p| is_executable(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromedriver"))
        .chain([PathBuf::from(DEFAULT_CHROMEDRIVER)])
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// The port in ChromeDriver's "started successfully on port N." line.
fn reported_port(log: &str) -> Option<u16> {
    let rest = &log[log.find(STARTED)? + STARTED.len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|port| *port != 0)
}

/// Whether the driver on `port` answers `GET /status` with `"ready": true`.
fn status_ready(port: u16) -> bool {
    exchange(port, "GET", "/status", "", Duration::from_secs(2)).is_ok_and(|(status, body)| {
        let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        status == 200 && compact.contains(r#""ready":true"#)
    })
}

/// One HTTP/1.1 exchange with the driver: the answer's status and body. The body is read by its
/// `Content-Length`: ChromeDriver keeps the connection open even when asked to close it.
fn exchange(port: u16, method: &str, path: &str, body: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    use std::io::{BufRead, BufReader, Error as IoError};
    let invalid = |what: &str| IoError::new(std::io::ErrorKind::InvalidData, format!("ChromeDriver answered {what}"));
    let mut stream = TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // ChromeDriver refuses a Host header that is not a loopback name.
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| invalid(&line))?;
    let mut length = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().map_err(|_| invalid(&line))?;
        }
    }
    let mut bytes = vec![0; length];
    reader.read_exact(&mut bytes)?;
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_read_from_the_started_line() {
        let log = "Starting ChromeDriver 156.0 on port 0\nOnly local connections are allowed.\n\
                   ChromeDriver was started successfully on port 34503.\n";
        assert_eq!(reported_port(log), Some(34503));
        assert_eq!(reported_port("Starting ChromeDriver 156.0 on port 0\n"), None);
        assert_eq!(reported_port("ChromeDriver was started successfully on port "), None);
    }

    #[test]
    fn capabilities_name_the_browser_a_fresh_profile_and_the_prefs() {
        let driver = ChromeDriver::start().unwrap();
        let first = driver.capabilities();
        let second = driver.capabilities_with_prefs(&[JAVASCRIPT_OFF]);
        assert!(first.contains(r#""binary":"/usr/bin/chromium""#) || std::env::var_os("CHROMIUM").is_some(), "{first}");
        assert!(first.contains("--headless=new") && first.contains(r#""prefs":{}"#), "{first}");
        assert!(first.contains("profile-0") && second.contains("profile-1"), "{first}\n{second}");
        assert!(second.contains(r#""profile.managed_default_content_settings.javascript":2"#), "{second}");
    }

    #[test]
    fn stopping_the_driver_stops_its_browsers_and_closes_its_port() {
        let driver = ChromeDriver::start().unwrap();
        let port = driver.port();
        assert!(status_ready(port));
        assert_eq!(driver.url(), format!("http://127.0.0.1:{port}"));
        let body = format!(r#"{{"capabilities":{{"alwaysMatch":{}}}}}"#, driver.capabilities());
        let (_, answer) = exchange(port, "POST", "/session", &body, Duration::from_secs(60)).unwrap();
        let key = r#""goog:processID":"#;
        let at = answer.find(key).unwrap_or_else(|| panic!("no browser process in: {answer}")) + key.len();
        let pid: u32 = answer[at..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap();
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        assert!(proc_dir.exists(), "the browser {pid} is not running");
        let dir = driver.dir().to_path_buf();

        // Dropped without ending the session: the browser must not outlive the driver.
        drop(driver);
        let gone = |path: &Path| {
            !path.exists() || std::fs::read_to_string(path.join("stat")).is_ok_and(|stat| stat.contains(") Z "))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !gone(&proc_dir) || dir.exists() {
            assert!(std::time::Instant::now() < deadline, "browser {pid} or {} outlived the driver", dir.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!status_ready(port), "the driver still answers");
    }

    #[test]
    fn artifacts_go_under_the_target_directory_by_default() {
        let dir = artifacts_dir("testkit-selftest");
        assert!(dir.is_dir());
        assert!(dir.ends_with("testkit-selftest"));
        if std::env::var_os("TURNPIKE_TEST_ARTIFACTS").is_none() {
            assert!(dir.parent().unwrap().ends_with("test-artifacts"), "{}", dir.display());
        }
        std::fs::remove_dir(&dir).ok();
    }
}
