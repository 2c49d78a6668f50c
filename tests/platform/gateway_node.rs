//! A gateway node whose control plane is down: `turnpike gateway` started while its
//! database cannot be reached serves the last-known-good snapshot that an earlier
//! run saved, checks API keys against the last-known-good credentials saved beside
//! it, reports itself ready but degraded, and picks the database up in the
//! background once it answers.

use std::os::unix::fs::PermissionsExt;
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

/// What a keyed API needs from the admin API: the API (key auth on), a plan, a
/// developer's application subscribed to it, and keys.
struct Keyed {
    base: String,
    application: String,
}

/// A created key: its plaintext and id.
struct Key {
    key: String,
    id: String,
}

async fn admin(node: &Server, token: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
    let request = reqwest::Client::new()
        .request(method.clone(), format!("{}/admin/v1{path}", node.admin_url))
        .bearer_auth(token)
        .json(&body);
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    assert!(status.is_success(), "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

async fn publish_keyed_api(node: &Server, token: &str, upstream_url: &str) -> Keyed {
    use reqwest::Method;
    let post = |path: &'static str, body: Value| admin(node, token, Method::POST, path, body);
    let upstream = post("/upstreams", json!({"name": "keyed", "targets": [{"url": upstream_url}]})).await;
    post("/apis", json!({"name": "Keyed", "slug": "keyed"})).await;
    let version = post(
        "/apis/keyed/versions",
        json!({"label": "v1", "upstream_id": upstream["id"], "policies": {"key_auth": {}}}),
    )
    .await;
    post("/apis/keyed/versions/v1/routes", json!({"path": "/*"})).await;
    post("/apis/keyed/versions/v1/publish", Value::Null).await;
    let plan = post("/plans", json!({"slug": "free", "name": "Free"})).await;
    let developer = post("/developers", json!({"email": "kim@example.com", "name": "Kim"})).await;
    let application = post("/applications", json!({"developer_id": developer["id"], "name": "Kim's app"})).await;
    post(
        "/subscriptions",
        json!({"application_id": application["id"], "version_id": version["id"], "plan_id": plan["id"]}),
    )
    .await;
    Keyed { base: "/keyed/v1".into(), application: application["id"].as_str().unwrap().to_owned() }
}

async fn create_key(node: &Server, token: &str, application: &str, name: &str) -> Key {
    let path = format!("/applications/{application}/keys");
    let key = admin(node, token, reqwest::Method::POST, &path, json!({"name": name})).await;
    Key { key: key["key"].as_str().unwrap().to_owned(), id: key["id"].as_str().unwrap().to_owned() }
}

/// The status the gateway at `gateway_url` answers for `path` with `key` (none: no header).
async fn status_with(gateway_url: &str, path: &str, key: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new().get(format!("{gateway_url}{path}"));
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    request.send().await.unwrap().status().as_u16()
}

/// Waits until the credentials file holds exactly the keys `key_ids` (by key id).
async fn wait_for_saved_keys(file: &turnpike_gateway::LastKnownCredentials, key_ids: &[&str], node: &Server) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let saved = file.load().map(|all| {
            let mut ids: Vec<String> = all.into_iter().map(|(_, c)| c.key_id).collect();
            ids.sort();
            ids
        });
        let mut wanted: Vec<&str> = key_ids.to_vec();
        wanted.sort_unstable();
        if saved.as_ref().is_ok_and(|ids| *ids == wanted) {
            return;
        }
        assert!(Instant::now() < deadline, "the credentials file holds {saved:?}, not {wanted:?}:\n{}", node.output());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_node_checks_keys_against_its_last_known_good_credentials_while_the_database_is_down() {
    let dir = TempDir::new().unwrap();
    let pg = tokio::task::spawn_blocking(Postgres::shared).await.unwrap();
    let url = tokio::task::spawn_blocking(|| Postgres::shared().create_database("gateway_node_keys")).await.unwrap();
    let upstream = Upstream::start("keyed").await;

    // While the control plane is up: a keyed API, a key that works and one revoked.
    let server = Server::start(dir.path(), &["serve"], &[("DATABASE_URL", &url)]).await;
    let token = std::fs::read_to_string(dir.path().join("turnpike-data/admin-token")).unwrap();
    let token = token.trim();
    let keyed = publish_keyed_api(&server, token, &upstream.url).await;
    let good = create_key(&server, token, &keyed.application, "good").await;
    let revoked = create_key(&server, token, &keyed.application, "revoked").await;
    let path = format!("/applications/{}/keys/{}", keyed.application, revoked.id);
    admin(&server, token, reqwest::Method::DELETE, &path, Value::Null).await;
    let hello = format!("{}/hello", keyed.base);
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_with(&server.gateway_url, &hello, Some(&good.key)).await != 200 {
        assert!(Instant::now() < deadline, "the key never opened the API:\n{}", server.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status_with(&server.gateway_url, &hello, Some(&revoked.key)).await, 401);

    // The gateway saved its snapshot and the credentials: hashes, never the keys.
    let version = server.status().await["config_version"].as_u64().unwrap();
    let snapshots = turnpike_gateway::LastKnownGood::new(dir.path().join("turnpike-data/gateway-snapshot.json"));
    let credentials =
        turnpike_gateway::LastKnownCredentials::new(dir.path().join("turnpike-data/gateway-snapshot-credentials.json"));
    assert_eq!(credentials.path(), turnpike_gateway::LastKnownCredentials::beside(snapshots.path()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while snapshots.load().map_or(true, |s| s.version < version) {
        assert!(Instant::now() < deadline, "snapshot {version} was not saved:\n{}", server.output());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    wait_for_saved_keys(&credentials, &[&good.id], &server).await;
    let text = std::fs::read_to_string(credentials.path()).unwrap();
    assert!(!text.contains(&good.key) && !text.contains(&revoked.key), "a key in clear: {text}");
    let mode = std::fs::metadata(credentials.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    drop(server);

    // A fresh gateway node while the database is down: the good key opens the API,
    // the revoked one, an unknown one and none do not.
    let relay = Relay::start(pg.port()).await;
    let relayed = url.replacen(&format!(":{}/", pg.port()), &format!(":{}/", relay.port), 1);
    assert_ne!(relayed, url);
    let mut node = Server::start(dir.path(), &["gateway"], &[("DATABASE_URL", &relayed)]).await;
    let status = node.status().await;
    assert_eq!((status["source"].as_str(), status["degraded"].as_bool()), (Some("last-known-good"), Some(true)));
    assert_eq!(
        status_with(&node.gateway_url, &hello, Some(&good.key)).await,
        200,
        "the saved key does not open the saved API:\n{}",
        node.output()
    );
    assert_eq!(status_with(&node.gateway_url, &hello, Some(&revoked.key)).await, 401);
    let unknown = format!("{}x", &good.key[..good.key.len() - 1]);
    assert_eq!(status_with(&node.gateway_url, &hello, Some(&unknown)).await, 401);
    assert_eq!(status_with(&node.gateway_url, &hello, None).await, 401);
    assert!(node.output().contains("last-known-good credentials"), "{}", node.output());

    // While the node cannot see it, the good key is revoked in the store. Once the
    // database answers, the store's credentials replace the file's.
    let store = turnpike_store::Store::connect(&url, 2).await.unwrap();
    let change = store.change(&turnpike_store::Actor("test".into())).await.unwrap();
    let application = turnpike_store::applications::find(change.txn(), &keyed.application).await.unwrap();
    turnpike_store::keys::revoke(&change, &application, &good.id).await.unwrap();
    change.commit().await.unwrap();
    assert_eq!(status_with(&node.gateway_url, &hello, Some(&good.key)).await, 200, "the node cannot know yet");
    relay.up.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(45);
    while status_with(&node.gateway_url, &hello, Some(&good.key)).await != 401 {
        assert!(Instant::now() < deadline, "the key revoked in the store still works:\n{}", node.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_for_saved_keys(&credentials, &[], &node).await;
    assert!(node.child.try_wait().unwrap().is_none(), "the node exited:\n{}", node.output());
}
