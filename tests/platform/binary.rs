//! The real `turnpike` binary, driven as a user would: first start prints and saves
//! the bootstrap token, the quickstart script works against it (SQLite and
//! PostgreSQL), a restart keeps the token, bad configuration stops start-up, and
//! `migrate` and `config export|import` work from the command line.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use turnpike_testkit::{Postgres, repo_root};

use crate::server::{Listeners, STARTUP, Server, turnpike};
use crate::support::Upstream;

/// How long the quickstart script may take (it retries the gateway for up to 5 s).
const QUICKSTART: Duration = Duration::from_secs(30);
const TOKEN_BANNER: &str = "Bootstrap admin token";

/// Runs a command to completion within `timeout`, killing it if it takes longer.
async fn run(command: Command, timeout: Duration) -> Output {
    let description = format!("{command:?}");
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true).stdout(Stdio::piped()).stderr(Stdio::piped());
    tokio::time::timeout(timeout, command.output())
        .await
        .unwrap_or_else(|_| panic!("{description} did not finish within {timeout:?}"))
        .unwrap_or_else(|e| panic!("cannot run {description}: {e}"))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn succeeded(output: &Output) -> String {
    assert!(
        output.status.success(),
        "exit {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

impl Server {
    /// The bootstrap token printed on stdout, if any; asserts it was printed at most once.
    fn printed_token(&self) -> Option<String> {
        let out = self.stdout();
        let banners = out.matches(TOKEN_BANNER).count();
        assert!(banners <= 1, "the token banner was printed {banners} times:\n{out}");
        let mut lines = out.lines().skip_while(|l| !l.starts_with(TOKEN_BANNER));
        lines.next()?;
        Some(lines.next().expect("a token follows the banner").trim().to_owned())
    }

    /// `GET` on the admin API with `token`.
    async fn admin_get(&self, path: &str, token: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("{}/admin/v1{path}", self.admin_url))
            .bearer_auth(token)
            .send()
            .await
            .expect("the admin API answers")
    }

    /// Runs `examples/quickstart.sh` in `dir` against this server; returns its output.
    async fn quickstart(&self, dir: &Path) -> String {
        let mut command = Command::new("bash");
        command
            .arg(repo_root().join("examples/quickstart.sh"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .env("TURNPIKE_ADMIN_URL", &self.admin_url)
            .env("TURNPIKE_GATEWAY_URL", &self.gateway_url);
        let output = run(command, QUICKSTART).await;
        let out = succeeded(&output);
        assert!(out.contains(r#"upstream answered: {"hello": "world", "path": "/greeting"}"#), "{out}");
        out
    }
}

fn token_file(dir: &Path) -> PathBuf {
    dir.join("turnpike-data/admin-token")
}

/// Checks what a first start must leave behind: the printed token is the saved one,
/// the file is private and the token opens the admin API. Returns the token.
async fn check_bootstrap(server: &Server, dir: &Path) -> String {
    let token = server.printed_token().unwrap_or_else(|| panic!("no bootstrap token printed:\n{}", server.output()));
    let path = token_file(dir);
    let saved = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(saved.trim_end(), token, "the saved token differs from the printed one");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
    assert_eq!(server.admin_get("/apis", &token).await.status(), 200);
    assert_eq!(server.admin_get("/apis", "not-a-token").await.status(), 401);
    token
}

/// The slug the quickstart created (`hello-<suffix>`), read from its output.
fn quickstart_slug(out: &str) -> String {
    let start = out.find("API \"hello-").expect("the quickstart names its API") + 5;
    out[start..].split('"').next().unwrap().to_owned()
}

async fn export(dir: &Path) -> String {
    succeeded(&run(turnpike(dir, &["config", "export"]), STARTUP).await)
}

async fn import(dir: &Path, file: &Path, dry_run: bool) -> Output {
    let mut command = turnpike(dir, &["config", "import"]);
    command.arg(file);
    if dry_run {
        command.arg("--dry-run");
    }
    run(command, STARTUP).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_quickstart_and_restart_on_sqlite() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(dir.path(), &[], &[]).await;
    let token = check_bootstrap(&server, dir.path()).await;
    assert!(dir.path().join("turnpike-data/turnpike.db").exists(), "SQLite is the default store");

    let out = server.quickstart(dir.path()).await;
    let slug = quickstart_slug(&out);
    drop(server);

    // A restart on the same data directory keeps the first token and prints none.
    let server = Server::start(dir.path(), &[], &[]).await;
    assert_eq!(server.printed_token(), None, "a second start printed a new token:\n{}", server.output());
    assert_eq!(std::fs::read_to_string(token_file(dir.path())).unwrap().trim_end(), token);
    let apis: serde_json::Value = server.admin_get("/apis", &token).await.json().await.unwrap();
    assert!(apis["items"].as_array().unwrap().iter().any(|a| a["slug"] == slug.as_str()), "{apis}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_against_serve_on_postgres() {
    let dir = TempDir::new().unwrap();
    let url = tokio::task::spawn_blocking(|| Postgres::shared().create_database("binary")).await.unwrap();
    let server = Server::start(dir.path(), &["serve"], &[("DATABASE_URL", &url)]).await;
    check_bootstrap(&server, dir.path()).await;
    assert!(!dir.path().join("turnpike-data/turnpike.db").exists(), "no SQLite file when PostgreSQL is configured");
    server.quickstart(dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_export_and_import_from_the_command_line() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(dir.path(), &[], &[]).await;
    let slug = quickstart_slug(&server.quickstart(dir.path()).await);
    drop(server);

    let exported = export(dir.path()).await;
    assert!(exported.contains(&format!("slug: {slug}")), "{exported}");
    assert!(exported.contains("state: published"), "{exported}");

    // Dry run: the plan is printed, nothing is written.
    let modified = exported.replacen("name: Hello", "name: Hello again", 1);
    assert_ne!(modified, exported);
    let file = dir.path().join("modified.yaml");
    std::fs::write(&file, &modified).unwrap();
    let dry = succeeded(&import(dir.path(), &file, true).await);
    assert!(dry.contains(&format!("~ api {slug}")), "{dry}");
    assert!(dry.contains("1 change(s)") && dry.contains("dry run: nothing written"), "{dry}");
    assert_eq!(export(dir.path()).await, exported, "a dry run changed the store");

    // For real: applied, and a second import finds nothing to do.
    let applied = succeeded(&import(dir.path(), &file, false).await);
    assert!(applied.contains(&format!("~ api {slug}")) && !applied.contains("dry run"), "{applied}");
    assert_eq!(export(dir.path()).await, modified);
    assert!(succeeded(&import(dir.path(), &file, false).await).contains("0 change(s)"));

    // A broken file (a valid change plus a reference to a missing upstream) changes nothing.
    let broken = modified.replacen("name: Hello again", "name: Hello broken", 1).replacen(
        "upstream: quickstart-",
        "upstream: missing-",
        1,
    );
    let file = dir.path().join("broken.yaml");
    std::fs::write(&file, &broken).unwrap();
    let refused = import(dir.path(), &file, false).await;
    assert!(!refused.status.success(), "a broken file was accepted:\n{}", stdout(&refused));
    let message = stderr(&refused);
    assert!(message.contains("nothing was written") && message.contains(".upstream"), "{message}");
    assert_eq!(export(dir.path()).await, modified, "a refused import changed the store");

    // A document with an unknown field is refused as it is read.
    std::fs::write(&file, "apis: [{slug: x, name: X, colour: red}]\n").unwrap();
    let refused = import(dir.path(), &file, false).await;
    assert!(!refused.status.success() && stderr(&refused).contains("colour"), "{}", stderr(&refused));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_prepares_a_fresh_data_dir() {
    let dir = TempDir::new().unwrap();
    let out = succeeded(&run(turnpike(dir.path(), &["migrate"]), STARTUP).await);
    assert!(out.contains("migrations applied"), "{out}");
    assert!(dir.path().join("turnpike-data/turnpike.db").exists());
    assert!(!token_file(dir.path()).exists(), "migrate does not create an admin token");
}

/// Starts `turnpike <args>` with one bad setting and expects it to stop at once with
/// a message that names the option, before it creates anything.
async fn refuses_to_start(args: &[&str], env: &[(&str, &str)], expected: &[&str]) {
    let dir = TempDir::new().unwrap();
    let mut command = turnpike(dir.path(), args);
    Listeners::free().apply(&mut command);
    command.envs(env.iter().copied());
    let output = run(command, STARTUP).await;
    let message = stderr(&output);
    assert!(!output.status.success(), "turnpike started despite bad configuration:\n{}", stdout(&output));
    for text in expected {
        assert!(message.contains(text), "the error does not mention {text:?}:\n{message}");
    }
    assert!(!stdout(&output).contains("Turnpike is running"));
    assert!(!dir.path().join("turnpike-data").exists(), "a refused start created the data directory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_configuration_stops_start_up() {
    let bad_address = [("TURNPIKE_GATEWAY_LISTEN", "abc")];
    refuses_to_start(&[], &bad_address, &["gateway.listen", "TURNPIKE_GATEWAY_LISTEN", "abc"]).await;
    let misspelt = [("TURNPIKE_GATWAY_LISTEN", "127.0.0.1:9")];
    refuses_to_start(&[], &misspelt, &["TURNPIKE_GATWAY_LISTEN", "did you mean TURNPIKE_GATEWAY_LISTEN"]).await;
    refuses_to_start(&[], &[("DATABASE_URL", "mysql://x")], &["database.url", "DATABASE_URL", "mysql"]).await;

    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), "[gateway]\nlisten = \"127.0.0.1:0\"\nlisen_timeout = 3\n").unwrap();
    let (path, name) = (file.path().to_str().unwrap(), file.path().file_name().unwrap().to_str().unwrap());
    refuses_to_start(&["--config", path], &[], &["gateway.lisen_timeout", name, "line 3"]).await;
}

/// `config import` while the all-in-one server runs: the server's own gateway must
/// pick up the snapshot the import compiled, as a gateway-only node does by polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_reaches_the_gateway_of_a_running_server() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(dir.path(), &[], &[]).await;
    let upstream = Upstream::start("imported").await;
    let document = format!(
        r#"
upstreams:
- name: imported
  targets:
  - url: {}
apis:
- slug: imported
  name: Imported
  versions:
  - label: v1
    state: published
    base_path: /imported/v1
    upstream: imported
    routes:
    - path: /*
"#,
        upstream.url
    );
    let file = dir.path().join("new-api.yaml");
    std::fs::write(&file, document).unwrap();
    let out = succeeded(&import(dir.path(), &file, false).await);
    assert!(out.contains("configuration snapshot"), "{out}");

    let url = format!("{}/imported/v1/hello", server.gateway_url);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = reqwest::get(&url).await.unwrap().status();
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the running gateway still answers {status} for the imported API 5 s after `config import` ({out:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
