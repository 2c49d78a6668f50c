//! The real `turnpike` binary as a child process: started on free loopback ports with
//! no configuration inherited from the test's environment, waited for until its
//! gateway is ready, and killed when dropped so a failing test leaks no process.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use turnpike_testkit::free_port;

/// How long a server may take to become ready.
pub const STARTUP: Duration = Duration::from_secs(20);

/// `turnpike <args>` run in `dir`, with no configuration inherited from the test's
/// own environment.
pub fn turnpike(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_turnpike"));
    command.args(args).current_dir(dir).stdin(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| n.starts_with("TURNPIKE_") || n == "DATABASE_URL") {
            command.env_remove(name);
        }
    }
    command
}

/// Copies everything a child writes to a pipe into a string the test can read.
pub fn collect(pipe: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let mut sink = sink.lock().unwrap();
            sink.push_str(&line);
            sink.push('\n');
        }
    });
    text
}

/// The four listeners of a server, each on its own free port.
pub struct Listeners {
    pub gateway: String,
    pub status: String,
    pub admin: String,
    pub portal: String,
}

impl Listeners {
    pub fn free() -> Listeners {
        let addr = || format!("127.0.0.1:{}", free_port());
        Listeners { gateway: addr(), status: addr(), admin: addr(), portal: addr() }
    }

    pub fn apply(&self, command: &mut Command) {
        command
            .env("TURNPIKE_GATEWAY_LISTEN", &self.gateway)
            .env("TURNPIKE_GATEWAY_STATUS_LISTEN", &self.status)
            .env("TURNPIKE_ADMIN_LISTEN", &self.admin)
            .env("TURNPIKE_PORTAL_LISTEN", &self.portal);
    }
}

/// A running `turnpike` server; killed when dropped, so a failing test leaks no process.
pub struct Server {
    pub child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    pub admin_url: String,
    pub gateway_url: String,
    pub status_url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `turnpike <args>` in `dir` with `extra` environment variables and waits
    /// until its gateway reports ready.
    pub async fn start(dir: &Path, args: &[&str], extra: &[(&str, &str)]) -> Server {
        let listeners = Listeners::free();
        let mut command = turnpike(dir, args);
        command.envs(extra.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::piped());
        listeners.apply(&mut command);
        let mut child = command.spawn().expect("the turnpike binary starts");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let mut server = Server {
            child,
            stdout,
            stderr,
            admin_url: format!("http://{}", listeners.admin),
            gateway_url: format!("http://{}", listeners.gateway),
            status_url: format!("http://{}", listeners.status),
        };
        let ready = format!("http://{}/status/ready", listeners.status);
        let client = reqwest::Client::builder().timeout(Duration::from_secs(1)).build().unwrap();
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("turnpike exited during start-up ({status}):\n{}", server.output());
            }
            if client.get(&ready).send().await.is_ok_and(|r| r.status() == 200) {
                break;
            }
            assert!(Instant::now() < deadline, "turnpike was not ready within {STARTUP:?}:\n{}", server.output());
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        // The banner is printed just after the listeners start serving.
        server.wait_for_stdout("Turnpike is running:").await;
        server
    }

    pub async fn wait_for_stdout(&self, text: &str) {
        let deadline = Instant::now() + STARTUP;
        while !self.stdout.lock().unwrap().contains(text) {
            assert!(Instant::now() < deadline, "turnpike never printed {text:?}:\n{}", self.output());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn output(&self) -> String {
        format!("stdout:\n{}\nstderr:\n{}", self.stdout(), self.stderr.lock().unwrap())
    }

    /// The gateway's `/status` document.
    pub async fn status(&self) -> Value {
        reqwest::get(format!("{}/status", self.status_url)).await.unwrap().json().await.unwrap()
    }

    /// Waits (up to `within`) until `/status` satisfies `done`.
    pub async fn wait_for_status(&self, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let status = self.status().await;
            if done(&status) {
                return status;
            }
            assert!(Instant::now() < deadline, "status still {status} after {within:?}:\n{}", self.output());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
