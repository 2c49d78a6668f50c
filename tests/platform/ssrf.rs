//! Upstream targets on non-public addresses (RELIABILITY: "Upstream and webhook URLs
//! pointing at loopback, link-local or private ranges are refused at save and at
//! connect time unless an operator allows them"), through the real binary and its
//! `upstreams.*` options: a literal address is refused when the upstream is saved
//! (admin API and `config import`), a name when the gateway connects, and the
//! operator's allow list lets its blocks through.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::server::{STARTUP, Server, turnpike};

const STRICT: (&str, &str) = ("TURNPIKE_UPSTREAMS_ALLOW_LOOPBACK_TARGETS", "false");

/// A real HTTP upstream on loopback that counts the connections it accepts, so a
/// test can tell "refused before connecting" from "connected and failed".
struct CountingUpstream {
    port: u16,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CountingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CountingUpstream {
    async fn start() -> CountingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let body = r#"{"upstream":"counting"}"#;
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                         connection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                });
            }
        });
        CountingUpstream { port, connections, task }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// The admin API of a running server, with its bootstrap token.
struct Admin {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Admin {
    fn of(server: &Server, dir: &Path) -> Admin {
        let token = std::fs::read_to_string(dir.join("turnpike-data/admin-token")).unwrap().trim().to_owned();
        Admin { url: format!("{}/admin/v1", server.admin_url), token, http: reqwest::Client::new() }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the admin API answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn audit_count(&self) -> u64 {
        self.get("/audit?per_page=1").await["total"].as_u64().unwrap()
    }

    /// Creates an upstream with one target, or panics with the answer.
    async fn upstream(&self, name: &str, url: &str) -> Value {
        let (status, body) = self.post("/upstreams", json!({"name": name, "targets": [{"url": url}]})).await;
        assert_eq!(status, 201, "creating upstream {name} at {url}: {body}");
        body
    }

    /// Publishes API `slug` v1 with a catch-all route to `upstream`; returns its base path.
    async fn publish(&self, slug: &str, upstream: &str) -> String {
        for (path, body) in [
            ("/apis".to_owned(), json!({"name": slug, "slug": slug})),
            (format!("/apis/{slug}/versions"), json!({"label": "v1", "upstream_id": upstream})),
            (format!("/apis/{slug}/versions/v1/routes"), json!({"path": "/*"})),
            (format!("/apis/{slug}/versions/v1/publish"), Value::Null),
        ] {
            let (status, answer) = self.post(&path, body).await;
            assert!((200..300).contains(&status), "POST {path}: {status} {answer}");
        }
        format!("/{slug}/v1")
    }
}

/// Calls `url` on the gateway until the published API is routed (not 404 or 503),
/// then returns the status, content type and body.
async fn call_published(url: &str) -> (u16, String, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = reqwest::get(url).await.unwrap();
        let status = response.status().as_u16();
        if status != 404 && status != 503 {
            let content_type =
                response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
            return (status, content_type, response.text().await.unwrap());
        }
        assert!(Instant::now() < deadline, "{url} still answers {status}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts a 422 problem naming exactly `field`.
#[track_caller]
fn refused_naming(answer: &(u16, Value), field: &str) {
    let (status, body) = answer;
    assert_eq!(*status, 422, "{body}");
    let fields: Vec<_> = body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, [field], "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literal_non_public_targets_are_refused_when_saved_and_nothing_is_written() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(dir.path(), &[], &[STRICT]).await;
    let admin = Admin::of(&server, dir.path());
    let before = admin.audit_count().await;

    for url in [
        "http://127.0.0.1:8001",
        "http://10.0.0.1",
        "http://[::1]:8080",
        "http://169.254.169.254/latest",
        "https://[::ffff:192.168.0.1]",
        "http://[fd00::7]:80",
        "http://100.64.0.1",
        "http://0.0.0.0:8002",
        "h2c://172.16.5.5:50051",
        // Numeric forms the system resolver reads as 127.0.0.1.
        "http://127.1:8001",
        "http://2130706433",
    ] {
        let answer = admin
            .post(
                "/upstreams",
                json!({"name": "internal", "targets": [{"url": "https://api.example.com"}, {"url": url}]}),
            )
            .await;
        refused_naming(&answer, "targets[1].url");
        let message = answer.1["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("operator allows"), "{url}: {message}");
    }

    // A change to a saved upstream is held to the same rule.
    admin.upstream("public", "https://api.example.com").await;
    let answer = admin
        .send(reqwest::Method::PATCH, "/upstreams/public", Some(json!({"targets": [{"url": "http://10.1.2.3:80"}]})))
        .await;
    refused_naming(&answer, "targets[0].url");
    assert_eq!(admin.get("/upstreams/public").await["targets"][0]["url"], "https://api.example.com");

    assert_eq!(admin.audit_count().await, before + 1, "only the public upstream was written");
    assert_eq!(admin.get("/upstreams").await["total"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_loopback_is_saved_but_the_gateway_never_connects_to_it() {
    let upstream = CountingUpstream::start().await;
    let dir = TempDir::new().unwrap();
    let server = Server::start(dir.path(), &[], &[STRICT]).await;
    let admin = Admin::of(&server, dir.path());

    // Names cannot be judged when saved: what they resolve to can change.
    admin.upstream("by-name", &format!("http://localhost:{}", upstream.port)).await;
    let base = admin.publish("by-name", "by-name").await;

    let (status, content_type, body) = call_published(&format!("{}{base}/hello", server.gateway_url)).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(content_type, "application/problem+json");
    let problem: Value = serde_json::from_str(&body).unwrap();
    assert!(problem["type"].as_str().unwrap().ends_with("upstream-unreachable"), "{problem}");
    for internal in ["127.0.0.1", "::1", "localhost", &format!(":{}", upstream.port), "policy"] {
        assert!(!body.contains(internal), "the problem leaks {internal:?}: {body}");
    }
    assert_eq!(upstream.connections(), 0, "the gateway connected to a refused address");
    // The reason is in the log, for the operator.
    let deadline = Instant::now() + STARTUP;
    while !server.output().contains("refused by the upstream target policy") {
        assert!(Instant::now() < deadline, "no log of the refusal:\n{}", server.output());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_allow_list_lets_its_blocks_through() {
    let upstream = CountingUpstream::start().await;
    let dir = TempDir::new().unwrap();
    let allow = ("TURNPIKE_UPSTREAMS_PRIVATE_TARGET_ALLOWLIST", "127.0.0.0/8, ::1");
    let server = Server::start(dir.path(), &[], &[STRICT, allow]).await;
    let admin = Admin::of(&server, dir.path());

    admin.upstream("by-address", &format!("http://127.0.0.1:{}", upstream.port)).await;
    admin.upstream("by-name", &format!("http://localhost:{}", upstream.port)).await;
    refused_naming(
        &admin.post("/upstreams", json!({"name": "lan", "targets": [{"url": "http://10.0.0.1"}]})).await,
        "targets[0].url",
    );

    for name in ["by-address", "by-name"] {
        let base = admin.publish(name, name).await;
        let (status, _, body) = call_published(&format!("{}{base}/hello", server.gateway_url)).await;
        assert_eq!((status, body.as_str()), (200, r#"{"upstream":"counting"}"#), "{name}");
    }
    assert!(upstream.connections() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_loopback_is_allowed_and_other_private_ranges_are_refused_in_imports_too() {
    let dir = TempDir::new().unwrap();
    let server = Server::start(dir.path(), &[], &[]).await;
    let admin = Admin::of(&server, dir.path());
    admin.upstream("local", "http://127.0.0.1:9000").await;
    admin.upstream("local6", "http://[::1]:9000").await;
    for url in ["http://169.254.169.254", "http://192.168.1.20:8080", "http://[fe80::1]"] {
        refused_naming(
            &admin.post("/upstreams", json!({"name": "x", "targets": [{"url": url}]})).await,
            "targets[0].url",
        );
    }
    drop(server);

    // `config import` saves through the same rule: the whole document is refused.
    let file = dir.path().join("metadata.yaml");
    std::fs::write(
        &file,
        "upstreams:\n- name: fine\n  targets:\n  - url: https://api.example.com\n\
         - name: metadata\n  targets:\n  - url: http://169.254.169.254/latest\n",
    )
    .unwrap();
    // A dry run judges targets as the import would, naming the upstream in the document.
    for dry_run in [true, false] {
        let mut command = tokio::process::Command::from(turnpike(dir.path(), &["config", "import"]));
        command.arg(&file).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        if dry_run {
            command.arg("--dry-run");
        }
        let output = tokio::time::timeout(STARTUP, command.output()).await.unwrap().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "the import was accepted:\n{}", String::from_utf8_lossy(&output.stdout));
        assert!(
            stderr.contains("nothing was written")
                && stderr.contains("upstreams[1].targets[0].url")
                && stderr.contains("link-local"),
            "dry run {dry_run}: {stderr}"
        );
    }
    let mut command = tokio::process::Command::from(turnpike(dir.path(), &["config", "export"]));
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let exported = tokio::time::timeout(STARTUP, command.output()).await.unwrap().unwrap();
    let exported = String::from_utf8_lossy(&exported.stdout);
    assert!(exported.contains("name: local") && !exported.contains("name: fine"), "{exported}");
}
