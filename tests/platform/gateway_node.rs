//! A gateway node whose control plane is down: `turnpike gateway` started while its
//! database cannot be reached serves the last-known-good snapshot that an earlier
//! run saved, reports itself ready but degraded, and picks the database up in the
//! background once it answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use turnpike_testkit::Postgres;

use crate::server::Server;
use crate::support::Upstream;

/// A TCP relay in front of PostgreSQL that stands for the database being down
/// (connections are closed at once) until it is switched on.
struct Relay {
    port: u16,
    up: Arc<AtomicBool>,
}

impl Relay {
    async fn start(target_port: u16) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(false));
        let on = up.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !on.load(Ordering::SeqCst) {
                    continue;
                }
                tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", target_port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Relay { port, up }
    }
}

/// Publishes an API through the admin API, as the quickstart does; returns its base path.
async fn publish_api(node: &Server, token: &str, upstream_url: &str) -> String {
    let http = reqwest::Client::new();
    let call = |path: &str, body: Value| {
        http.post(format!("{}/admin/v1{path}", node.admin_url)).bearer_auth(token).json(&body).send()
    };
    let upstream: Value = call("/upstreams", json!({"name": "lkg", "targets": [{"url": upstream_url}]}))
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    for (path, body) in [
        ("/apis", json!({"name": "Survivor", "slug": "survivor"})),
        ("/apis/survivor/versions", json!({"label": "v1", "upstream_id": upstream["id"]})),
        ("/apis/survivor/versions/v1/routes", json!({"path": "/*"})),
        ("/apis/survivor/versions/v1/publish", Value::Null),
    ] {
        let response = call(path, body).await.unwrap();
        assert!(response.status().is_success(), "POST {path}: {}", response.text().await.unwrap());
    }
    "/survivor/v1".to_owned()
}

/// Waits until `url` answers 200 and returns its JSON.
async fn wait_for_200(url: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let response = reqwest::get(url).await.unwrap();
        if response.status() == 200 {
            return response.json().await.unwrap();
        }
        assert!(Instant::now() < deadline, "{url} still answers {} after {within:?}", response.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_node_starts_and_serves_from_its_last_known_good_file_while_the_database_is_down() {
    let dir = TempDir::new().unwrap();
    let pg = tokio::task::spawn_blocking(Postgres::shared).await.unwrap();
    let url = tokio::task::spawn_blocking(|| Postgres::shared().create_database("gateway_node")).await.unwrap();
    let upstream = Upstream::start("lkg").await;

    // An all-in-one server publishes an API; its gateway saves what it applies.
    let server = Server::start(dir.path(), &["serve"], &[("DATABASE_URL", &url)]).await;
    let token = std::fs::read_to_string(dir.path().join("turnpike-data/admin-token")).unwrap();
    let base = publish_api(&server, token.trim(), &upstream.url).await;
    let answer = wait_for_200(&format!("{}{base}/hello", server.gateway_url), Duration::from_secs(10)).await;
    assert_eq!(answer["upstream"], "lkg");
    let version = server.status().await["config_version"].as_u64().unwrap();
    let file = turnpike_gateway::LastKnownGood::new(dir.path().join("turnpike-data/gateway-snapshot.json"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while file.load().map_or(true, |s| s.version < version) {
        assert!(Instant::now() < deadline, "snapshot {version} was not saved:\n{}", server.output());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    drop(server);

    // The database is down (the relay drops every connection): the gateway node
    // starts anyway, ready on the file's configuration and reporting it.
    let relay = Relay::start(pg.port()).await;
    let relayed = url.replacen(&format!(":{}/", pg.port()), &format!(":{}/", relay.port), 1);
    assert_ne!(relayed, url);
    let mut node = Server::start(dir.path(), &["gateway"], &[("DATABASE_URL", &relayed)]).await;
    let status = node.status().await;
    assert_eq!(status["source"], "last-known-good", "{status}");
    assert_eq!(status["degraded"], true);
    assert_eq!(status["config_version"], version);
    let response = reqwest::get(format!("{}{base}/hello", node.gateway_url)).await.unwrap();
    assert_eq!(response.status(), 200, "the node does not serve the saved API:\n{}", node.output());
    let answer: Value = response.json().await.unwrap();
    assert_eq!((answer["upstream"].as_str(), answer["path"].as_str()), (Some("lkg"), Some("/hello")));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node.output().contains("cannot reach the database") {
        assert!(Instant::now() < deadline, "no log of the failed connection:\n{}", node.output());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // The database comes back: the node connects in the background, without a
    // restart, and the bus confirms the file's snapshot.
    relay.up.store(true, Ordering::SeqCst);
    let status = node.wait_for_status(Duration::from_secs(45), |s| s["source"] == "bus").await;
    assert_eq!((status["degraded"].as_bool(), status["config_version"].as_u64()), (Some(false), Some(version)));
    assert!(node.child.try_wait().unwrap().is_none(), "the node exited:\n{}", node.output());
}
