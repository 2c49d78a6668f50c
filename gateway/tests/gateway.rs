//! End-to-end tests of the gateway: real echo upstreams, the proxy and status
//! listeners on ephemeral ports, configuration published through an in-process bus.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{TimeZone, Utc};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use turnpike_bus::{BusError, ConfigBus, InProcessBus};
use turnpike_domain::model::{RouteSpec, Target, Timeouts, UpstreamSpec, VersionState};
use turnpike_domain::snapshot::{Snapshot, SnapshotContent, SnapshotRoute, SnapshotUpstream, SnapshotVersion};
use turnpike_gateway::{ApplyError, ConfigStore, Settings, serve_proxy, serve_status};

// ---------------------------------------------------------------------------
// Echo upstream

/// An upstream that answers with what it received. Paths ending in `/hang` never
/// answer; paths ending in `/wait` report their arrival and wait for `release`;
/// `x-echo-stream` streams the request body back; `x-send-hop` adds hop-by-hop
/// headers to the response.
struct EchoServer {
    name: &'static str,
    addr: SocketAddr,
    arrived: Mutex<mpsc::UnboundedReceiver<()>>,
    release: Arc<Semaphore>,
}

#[derive(Clone)]
struct EchoState {
    name: &'static str,
    arrived: mpsc::UnboundedSender<()>,
    release: Arc<Semaphore>,
}

impl EchoServer {
    async fn start(name: &'static str) -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (arrived_tx, arrived_rx) = mpsc::unbounded_channel();
        let release = Arc::new(Semaphore::new(0));
        let state = EchoState { name, arrived: arrived_tx, release: release.clone() };
        let app = axum::Router::new().fallback(echo).with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        EchoServer { name, addr, arrived: Mutex::new(arrived_rx), release }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until a `/wait` request has reached this upstream.
    async fn wait_for_arrival(&self) {
        self.arrived.lock().await.recv().await.unwrap();
    }

    fn release_one(&self) {
        self.release.add_permits(1);
    }
}

async fn echo(State(state): State<EchoState>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    if path.ends_with("/hang") {
        std::future::pending::<()>().await;
    }
    if path.ends_with("/wait") {
        state.arrived.send(()).unwrap();
        state.release.acquire().await.unwrap().forget();
    }
    if req.headers().contains_key("x-echo-stream") {
        return Body::new(req.into_body()).into_response();
    }
    let send_hop = req.headers().contains_key("x-send-hop");
    let mut headers = BTreeMap::<String, String>::new();
    for (name, value) in req.headers() {
        let value = value.to_str().unwrap().to_owned();
        headers.entry(name.to_string()).and_modify(|v| *v = format!("{v}, {value}")).or_insert(value);
    }
    let method = req.method().to_string();
    let query = req.uri().query().map(str::to_owned);
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let body = json!({
        "upstream": state.name,
        "method": method,
        "path": path,
        "query": query,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let mut response = axum::Json(body).into_response();
    if send_hop {
        let h = response.headers_mut();
        h.insert("connection", "x-upstream-secret".parse().unwrap());
        h.insert("x-upstream-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("proxy-authenticate", "Basic".parse().unwrap());
        h.insert("x-upstream-kept", "yes".parse().unwrap());
    }
    response
}

// ---------------------------------------------------------------------------
// Gateway under test

struct TestGateway {
    proxy: SocketAddr,
    status: SocketAddr,
    bus: InProcessBus,
    store: ConfigStore,
    stop: Option<oneshot::Sender<()>>,
    proxy_task: JoinHandle<std::io::Result<()>>,
    http: reqwest::Client,
}

impl TestGateway {
    async fn start() -> TestGateway {
        TestGateway::start_with(Settings::default()).await
    }

    async fn start_with(settings: Settings) -> TestGateway {
        TestGateway::start_on(ConfigStore::new(), settings).await
    }

    /// A gateway serving `store`, built by the test (consumers, docs origins…).
    async fn start_on(store: ConfigStore, settings: Settings) -> TestGateway {
        // Listeners are bound before the servers are spawned, so requests can be
        // sent right away without waiting for anything.
        let proxy_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let status_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = proxy_listener.local_addr().unwrap();
        let status = status_listener.local_addr().unwrap();
        let bus = InProcessBus::new();
        tokio::spawn(store.clone().follow(bus.subscribe()));
        let (stop, stopped) = oneshot::channel::<()>();
        let proxy_task = tokio::spawn(serve_proxy(proxy_listener, store.clone(), settings, async {
            let _ = stopped.await;
        }));
        tokio::spawn(serve_status(status_listener, store.clone(), std::future::pending()));
        TestGateway { proxy, status, bus, store, stop: Some(stop), proxy_task, http: reqwest::Client::new() }
    }

    /// Publishes a snapshot and waits until the gateway has applied it.
    async fn publish(&self, version: u64, content: SnapshotContent) {
        self.bus.publish(Arc::new(Snapshot::compile(version, content, Utc::now()))).await.unwrap();
        self.store.wait_for_version(version).await;
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    async fn status(&self, path: &str) -> (u16, Value) {
        let response = self.http.get(format!("http://{}{path}", self.status)).send().await.unwrap();
        let code = response.status().as_u16();
        (code, response.json().await.unwrap_or(Value::Null))
    }
}

// ---------------------------------------------------------------------------
// Snapshot content

fn route(id: &str, path: &str) -> SnapshotRoute {
    SnapshotRoute {
        id: id.into(),
        spec: RouteSpec { name: None, methods: vec![], path: path.into(), host: None, headers: BTreeMap::new() },
    }
}

fn upstream(id: &str, targets: &[(String, u32)]) -> SnapshotUpstream {
    SnapshotUpstream {
        id: id.into(),
        spec: UpstreamSpec {
            name: id.into(),
            targets: targets.iter().map(|(url, weight)| Target { url: url.clone(), weight: *weight }).collect(),
            algorithm: Default::default(),
            hash_on: None,
            timeouts: Default::default(),
            health_check: Default::default(),
            outlier_detection: Default::default(),
            circuit_breaker: Default::default(),
            retries: Default::default(),
            tls: Default::default(),
        },
    }
}

fn version(
    id: &str,
    base_path: &str,
    state: VersionState,
    upstream_id: Option<&str>,
    routes: Vec<SnapshotRoute>,
) -> SnapshotVersion {
    SnapshotVersion {
        id: id.into(),
        api_id: "api".into(),
        api_slug: "pets".into(),
        label: id.into(),
        state,
        base_path: base_path.into(),
        upstream_id: upstream_id.map(Into::into),
        sunset_at: None,
        deprecated_at: None,
        successor_base_path: None,
        routes,
        policies: Default::default(),
        openapi: None,
        docs_headers: Vec::new(),
    }
}

fn content(versions: Vec<SnapshotVersion>, upstreams: Vec<SnapshotUpstream>) -> SnapshotContent {
    SnapshotContent { versions, upstreams, ..Default::default() }
}

/// One published version at `/pets/v1` taking everything, to `echo`.
fn simple(echo: &EchoServer) -> SnapshotContent {
    content(
        vec![version("v1", "/pets/v1", VersionState::Published, Some("u"), vec![route("all", "/*")])],
        vec![upstream("u", &[(echo.url(), 1)])],
    )
}

// ---------------------------------------------------------------------------
// Assertions

async fn echoed(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200, "expected a proxied response");
    response.json().await.unwrap()
}

/// Asserts a gateway problem document and returns it.
async fn problem(response: reqwest::Response, status: u16, slug: &str) -> Value {
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], format!("urn:turnpike:problem:{slug}"));
    assert_eq!(body["status"], status);
    assert_eq!(body["request_id"], request_id);
    assert!(body["title"].is_string() && body["detail"].is_string());
    body
}

/// A raw HTTP/1.1 exchange, for requests a client library would tidy up.
async fn raw(addr: SocketAddr, head: &str) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).await.unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(buf[..split].to_vec()).unwrap().to_ascii_lowercase();
    let status = head[9..12].parse().unwrap();
    let mut body = buf[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (status, head, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn before_the_first_snapshot_the_proxy_answers_503_and_is_not_ready() {
    let gw = TestGateway::start().await;
    let (code, _) = gw.status("/status/live").await;
    assert_eq!(code, 200);
    assert_eq!(gw.status("/status/ready").await.0, 503);
    assert_eq!(
        gw.status("/status").await,
        (
            200,
            json!({"ready": false, "config_version": null, "config_checksum": null, "source": null, "degraded": false})
        )
    );
    problem(gw.get("/pets/v1/dogs").await, 503, "no-config").await;

    let echo = EchoServer::start("a").await;
    let snapshot = Snapshot::compile(3, simple(&echo), Utc::now());
    gw.bus.publish(Arc::new(snapshot.clone())).await.unwrap();
    gw.store.wait_for_version(3).await;
    assert_eq!(gw.status("/status/ready").await.0, 200);
    assert_eq!(
        gw.status("/status").await,
        (
            200,
            json!({
                "ready": true,
                "config_version": 3,
                "config_checksum": snapshot.checksum,
                "source": "bus",
                "degraded": false,
            })
        )
    );
    echoed(gw.get("/pets/v1/dogs").await).await;
}

#[tokio::test]
async fn requests_reach_the_upstream_with_the_base_path_stripped() {
    let echo = EchoServer::start("a").await;
    let gw = TestGateway::start().await;
    let mut config = simple(&echo);
    config.upstreams[0].spec.targets[0].url = format!("{}/backend/", echo.url());
    gw.publish(1, config).await;

    let body = echoed(gw.get("/pets/v1/dogs/1?color=brown&name=a%20b").await).await;
    assert_eq!(body["path"], "/backend/dogs/1");
    assert_eq!(body["query"], "color=brown&name=a%20b");
    assert_eq!(body["method"], "GET");
    assert_eq!(echoed(gw.get("/pets/v1").await).await["path"], "/backend");
    assert_eq!(echoed(gw.get("/pets/v1/").await).await["path"], "/backend/");

    let posted = gw.http.post(gw.url("/pets/v1/dogs")).body("rex").send().await.unwrap();
    let posted = echoed(posted).await;
    assert_eq!((posted["method"].as_str(), posted["body"].as_str()), (Some("POST"), Some("rex")));

    // The normalized path is the one forwarded.
    let (status, _, body) =
        raw(gw.proxy, "GET /pets/v1/a/./b//c/%7Euser/../d%3F HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["path"], "/backend/a/b/c/d%3F");
}

#[tokio::test]
async fn templates_prefixes_methods_hosts_and_headers_select_routes() {
    let (a, b) = (EchoServer::start("a").await, EchoServer::start("b").await);
    let gw = TestGateway::start().await;
    let mut get_pet = route("get-pet", "/pets/{id}");
    get_pet.spec.methods = vec!["GET".into(), "DELETE".into()];
    let mut admin = route("admin", "/admin/*");
    admin.spec.host = Some("*.example.com".into());
    let mut beta = route("beta", "/beta");
    beta.spec.headers.insert("x-channel".into(), "beta".into());
    gw.publish(
        1,
        content(
            vec![
                version(
                    "shop",
                    "/shop",
                    VersionState::Published,
                    Some("a"),
                    vec![route("files", "/files/*"), get_pet, admin, beta],
                ),
                version("orders", "/shop/orders", VersionState::Published, Some("b"), vec![route("list", "/")]),
            ],
            vec![upstream("a", &[(a.url(), 1)]), upstream("b", &[(b.url(), 1)])],
        ),
    )
    .await;

    assert_eq!(echoed(gw.get("/shop/pets/7").await).await["path"], "/pets/7");
    problem(gw.get("/shop/pets/7/toys").await, 404, "no-route").await;
    let post = gw.http.post(gw.url("/shop/pets/7")).send().await.unwrap();
    assert_eq!(post.headers()["allow"], "DELETE, GET");
    problem(post, 405, "method-not-allowed").await;
    assert_eq!(echoed(gw.get("/shop/files").await).await["path"], "/files");
    assert_eq!(echoed(gw.get("/shop/files/a/b.txt").await).await["path"], "/files/a/b.txt");

    let with_host = |host: &'static str| gw.http.get(gw.url("/shop/admin/users")).header("host", host).send();
    assert_eq!(echoed(with_host("EU.Example.com:8000").await.unwrap()).await["path"], "/admin/users");
    problem(with_host("example.org").await.unwrap(), 404, "no-route").await;

    let beta = gw.http.get(gw.url("/shop/beta")).header("x-channel", "beta").send().await.unwrap();
    assert_eq!(echoed(beta).await["path"], "/beta");
    problem(gw.get("/shop/beta").await, 404, "no-route").await;

    // The longer base path takes its requests, to its own upstream.
    let orders = echoed(gw.get("/shop/orders").await).await;
    assert_eq!((orders["upstream"].as_str(), orders["path"].as_str()), (Some("b"), Some("/")));
}

#[tokio::test]
async fn bad_paths_are_refused_with_400() {
    let echo = EchoServer::start("a").await;
    let gw = TestGateway::start().await;
    gw.publish(1, simple(&echo)).await;
    for target in ["/pets/v1/a%2Fb", "/pets/v1/../../../etc/passwd", "/pets/v1/%zz", "/pets/v1/%2e%2e/%2e%2e/%2e%2e"] {
        let (status, head, body) =
            raw(gw.proxy, &format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")).await;
        assert_eq!(status, 400, "{target}");
        assert!(head.contains("content-type: application/problem+json"), "{head}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["type"], "urn:turnpike:problem:bad-path");
    }
}

#[tokio::test]
async fn retired_versions_answer_410_and_deprecated_ones_announce_it() {
    let echo = EchoServer::start("a").await;
    let gw = TestGateway::start().await;
    let sunset = Utc.with_ymd_and_hms(2030, 1, 31, 12, 0, 0).unwrap();
    let mut v2 = version("v2", "/pets/v2", VersionState::Deprecated, Some("u"), vec![route("all", "/*")]);
    v2.sunset_at = Some(sunset);
    v2.successor_base_path = Some("/pets/v3".into());
    gw.publish(
        1,
        content(
            vec![
                version("v1", "/pets/v1", VersionState::Retired, Some("u"), vec![route("all", "/*")]),
                v2,
                version("v3", "/pets/v3", VersionState::Published, Some("u"), vec![route("all", "/*")]),
            ],
            vec![upstream("u", &[(echo.url(), 1)])],
        ),
    )
    .await;

    problem(gw.get("/pets/v1/dogs").await, 410, "version-retired").await;
    let deprecated = gw.get("/pets/v2/dogs").await;
    assert_eq!(deprecated.headers()["sunset"], "Thu, 31 Jan 2030 12:00:00 GMT");
    assert_eq!(deprecated.headers()["link"], "</pets/v3>; rel=\"successor-version\"");
    echoed(deprecated).await;
    let current = gw.get("/pets/v3/dogs").await;
    assert!(current.headers().get("sunset").is_none() && current.headers().get("link").is_none());
}

#[tokio::test]
async fn upstream_problems_answer_502_503_and_504() {
    let echo = EchoServer::start("a").await;
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let gw = TestGateway::start().await;
    let mut slow = upstream("slow", &[(echo.url(), 1)]);
    slow.spec.timeouts = Timeouts { connect_ms: 1_000, read_ms: 200, total_ms: 5_000 };
    gw.publish(
        1,
        content(
            vec![
                version("none", "/none", VersionState::Published, None, vec![route("all", "/*")]),
                version("empty", "/empty", VersionState::Published, Some("empty"), vec![route("all", "/*")]),
                version("down", "/down", VersionState::Published, Some("down"), vec![route("all", "/*")]),
                version("slow", "/slow", VersionState::Published, Some("slow"), vec![route("all", "/*")]),
            ],
            vec![upstream("empty", &[]), upstream("down", &[(format!("http://{closed}"), 1)]), slow],
        ),
    )
    .await;

    problem(gw.get("/none/x").await, 503, "no-upstream").await;
    problem(gw.get("/empty/x").await, 503, "no-target").await;
    let down = problem(gw.get("/down/x").await, 502, "upstream-unreachable").await;
    assert!(!down.to_string().contains(&closed.to_string()), "internal addresses must not leak: {down}");
    problem(gw.get("/slow/hang").await, 504, "upstream-timeout").await;
    echoed(gw.get("/slow/fine").await).await;
}

#[tokio::test]
async fn forwarded_headers_and_request_ids_are_set() {
    let echo = EchoServer::start("a").await;
    let gw = TestGateway::start().await;
    gw.publish(1, simple(&echo)).await;

    let response = gw.http.get(gw.url("/pets/v1/x")).header("x-forwarded-for", "203.0.113.7").send().await.unwrap();
    let generated = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let body = echoed(response).await;
    let headers = &body["headers"];
    // The test client is no trusted proxy: what it claims is replaced.
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], gw.proxy.to_string());
    assert_eq!(headers["host"], echo.addr.to_string());
    assert_eq!(headers["x-request-id"], generated.as_str());
    assert_eq!(generated.len(), 36, "{generated}");

    let response = gw.http.get(gw.url("/pets/v1/x")).header("x-request-id", "trace-42").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-42");
    assert_eq!(echoed(response).await["headers"]["x-request-id"], "trace-42");

    let other = gw.get("/pets/v1/x").await.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_ne!(other, generated);
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded_either_way() {
    let echo = EchoServer::start("a").await;
    let gw = TestGateway::start().await;
    gw.publish(1, simple(&echo)).await;
    let (status, head, body) = raw(
        gw.proxy,
        "GET /pets/v1/x HTTP/1.1\r\nHost: x\r\nConnection: close, X-Client-Secret\r\nX-Client-Secret: 1\r\n\
         Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic eDp5\r\nUpgrade: websocket\r\n\
         X-Send-Hop: 1\r\nX-Kept: yes\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let body: Value = serde_json::from_slice(&body).unwrap();
    let seen = body["headers"].as_object().unwrap();
    for gone in ["x-client-secret", "keep-alive", "te", "proxy-authorization", "upgrade"] {
        assert!(!seen.contains_key(gone), "{gone} reached the upstream: {seen:?}");
    }
    assert_eq!(seen["x-kept"], "yes");
    for gone in ["x-upstream-secret", "keep-alive", "proxy-authenticate"] {
        assert!(!head.contains(&format!("\r\n{gone}:")), "{gone} reached the client: {head}");
    }
    assert!(head.contains("\r\nx-upstream-kept: yes"), "{head}");
}

#[tokio::test]
async fn weighted_round_robin_spreads_exactly_by_weight() {
    let (a, b) = (EchoServer::start("a").await, EchoServer::start("b").await);
    let gw = TestGateway::start().await;
    let mut config = simple(&a);
    config.upstreams[0].spec.targets = vec![Target { url: a.url(), weight: 300 }, Target { url: b.url(), weight: 100 }];
    gw.publish(1, config).await;
    let mut counts = BTreeMap::new();
    for _ in 0..40 {
        let body = echoed(gw.get("/pets/v1/x").await).await;
        *counts.entry(body["upstream"].as_str().unwrap().to_owned()).or_insert(0) += 1;
    }
    assert_eq!(counts, BTreeMap::from([(a.name.to_owned(), 30), (b.name.to_owned(), 10)]));
}

#[tokio::test]
async fn stale_and_corrupt_snapshots_are_ignored() {
    let (a, b) = (EchoServer::start("a").await, EchoServer::start("b").await);
    let gw = TestGateway::start().await;
    gw.publish(2, simple(&a)).await;

    let stale = Arc::new(Snapshot::compile(1, simple(&b), Utc::now()));
    assert_eq!(gw.bus.publish(stale.clone()).await, Err(BusError::Stale { offered: 1, current: 2 }));
    assert_eq!(gw.store.apply(&stale), Err(ApplyError::Stale { offered: 1, current: 2 }));

    let mut corrupt = Snapshot::compile(3, simple(&a), Utc::now());
    corrupt.content.upstreams[0].spec.targets[0].url = b.url();
    assert!(matches!(gw.bus.publish(Arc::new(corrupt.clone())).await, Err(BusError::Corrupt(_))));
    assert!(matches!(gw.store.apply(&corrupt), Err(ApplyError::Corrupt(_))));

    assert_eq!(gw.status("/status").await.1["config_version"], 2);
    assert_eq!(echoed(gw.get("/pets/v1/x").await).await["upstream"], "a");
}

#[tokio::test]
async fn in_flight_requests_finish_on_the_configuration_they_started_with() {
    let echo = EchoServer::start("a").await;
    let gw = TestGateway::start().await;
    let mut v1 = simple(&echo);
    v1.versions[0].state = VersionState::Deprecated;
    v1.versions[0].sunset_at = Some(Utc.with_ymd_and_hms(2030, 6, 1, 0, 0, 0).unwrap());
    gw.publish(1, v1.clone()).await;

    let in_flight = tokio::spawn(gw.http.get(gw.url("/pets/v1/wait")).send());
    echo.wait_for_arrival().await;
    let mut retired = v1;
    retired.versions[0].state = VersionState::Retired;
    retired.versions[0].sunset_at = Some(Utc.with_ymd_and_hms(2031, 1, 1, 0, 0, 0).unwrap());
    gw.publish(2, retired).await;
    problem(gw.get("/pets/v1/x").await, 410, "version-retired").await;

    echo.release_one();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.headers()["sunset"], "Sat, 01 Jun 2030 00:00:00 GMT", "old configuration's headers");
    echoed(response).await;
}

#[tokio::test]
async fn large_bodies_stream_through_both_ways() {
    let echo = EchoServer::start("a").await;
    let gw = TestGateway::start().await;
    gw.publish(1, simple(&echo)).await;
    let payload: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let response = gw
        .http
        .post(gw.url("/pets/v1/upload"))
        .header("x-echo-stream", "1")
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let returned = response.bytes().await.unwrap();
    assert_eq!(returned.len(), payload.len());
    assert!(returned == payload, "the body came back altered");
}

/// A request body fed from a channel, so the test decides when each chunk is sent.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

async fn read_exactly(body: &mut Incoming, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < n {
        let frame = body.frame().await.expect("body ended early").unwrap();
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
        }
    }
    out
}

#[tokio::test]
async fn bodies_are_streamed_not_buffered() {
    let echo = EchoServer::start("a").await;
    let gw = TestGateway::start().await;
    gw.publish(1, simple(&echo)).await;
    let client = Client::builder(TokioExecutor::new()).build_http::<ChannelBody>();
    let (tx, rx) = mpsc::channel(1);
    let request =
        http::Request::post(gw.url("/pets/v1/duplex")).header("x-echo-stream", "1").body(ChannelBody(rx)).unwrap();
    let sending = tokio::spawn(client.request(request));
    // Each chunk must come back before the next one is sent: a proxy that buffered
    // either body would wait for the end and never answer.
    tx.send(Bytes::from(vec![b'a'; 64 * 1024])).await.unwrap();
    let mut body = sending.await.unwrap().unwrap().into_body();
    for (i, fill) in [b'a', b'b', b'c'].into_iter().enumerate() {
        if i > 0 {
            tx.send(Bytes::from(vec![fill; 64 * 1024])).await.unwrap();
        }
        let chunk = tokio::time::timeout(Duration::from_secs(10), read_exactly(&mut body, 64 * 1024)).await.unwrap();
        assert!(chunk.iter().all(|b| *b == fill), "chunk {i} came back altered");
    }
    drop(tx);
    assert!(body.frame().await.is_none_or(|f| f.unwrap().is_trailers()), "the body ends when the request body ends");
}

#[tokio::test]
async fn cleartext_http2_clients_are_served() {
    let echo = EchoServer::start("a").await;
    let gw = TestGateway::start().await;
    gw.publish(1, simple(&echo)).await;
    let client = Client::builder(TokioExecutor::new()).http2_only(true).build_http::<http_body_util::Empty<Bytes>>();
    let response = client.get(gw.url("/pets/v1/h2?x=1").parse().unwrap()).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body: Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!((body["path"].as_str(), body["query"].as_str()), (Some("/h2"), Some("x=1")));
    assert_eq!(body["headers"]["x-forwarded-host"], gw.proxy.to_string());
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_in_flight_requests_finish() {
    let echo = EchoServer::start("a").await;
    let mut gw = TestGateway::start().await;
    gw.publish(1, simple(&echo)).await;
    let in_flight = tokio::spawn(gw.http.get(gw.url("/pets/v1/wait")).send());
    echo.wait_for_arrival().await;

    gw.stop.take().unwrap().send(()).unwrap();
    let still_serving = tokio::time::timeout(Duration::from_millis(200), &mut gw.proxy_task).await;
    assert!(still_serving.is_err(), "the proxy returned while a request was in flight");

    echo.release_one();
    echoed(in_flight.await.unwrap().unwrap()).await;
    gw.proxy_task.await.unwrap().unwrap();
    assert!(TcpStream::connect(gw.proxy).await.is_err(), "the listener is closed");
}

// ==== tls ====

mod tls {
    use http_body_util::Empty;
    use hyper_util::rt::TokioIo;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, ServerName};
    use rustls::{ClientConfig, RootCertStore};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream;
    use turnpike_domain::snapshot::SnapshotCertificate;
    use turnpike_gateway::serve_tls_proxy;

    use super::*;

    /// A CA made for one test, and certificates it signs.
    struct TestCa {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    /// A server certificate as the gateway gets it and as a client should see it.
    struct Issued {
        der: CertificateDer<'static>,
        snapshot: SnapshotCertificate,
    }

    impl TestCa {
        fn new() -> TestCa {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, "Turnpike test CA");
            TestCa { cert: params.self_signed(&key).unwrap(), key }
        }

        fn issue(&self, id: &str, host: &str) -> Issued {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec![host.to_owned()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, host);
            let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
            Issued {
                der: cert.der().clone(),
                snapshot: SnapshotCertificate {
                    id: id.into(),
                    hosts: vec![host.into()],
                    cert_pem: cert.pem(),
                    key_pem: key.serialize_pem(),
                },
            }
        }

        /// A client trusting only this CA, offering `alpn`, never resuming a session
        /// (so every connection sees the certificate the gateway picks now).
        fn client(&self, alpn: &[&[u8]]) -> TlsConnector {
            let mut roots = RootCertStore::empty();
            roots.add(self.cert.der().clone()).unwrap();
            let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            config.resumption = rustls::client::Resumption::disabled();
            TlsConnector::from(Arc::new(config))
        }
    }

    /// Starts the TLS listener next to the gateway's cleartext one, on the same store.
    async fn tls_listener(gw: &TestGateway) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = turnpike_gateway::Settings::default();
        tokio::spawn(serve_tls_proxy(listener, gw.store.clone(), settings, std::future::pending()));
        addr
    }

    async fn connect(addr: SocketAddr, client: &TlsConnector, sni: &str) -> std::io::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        client.connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp).await
    }

    fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
        stream.get_ref().1.peer_certificates().expect("the server presented a certificate")[0].clone()
    }

    /// Sends one GET over an HTTP/2 connection and returns the echoed request.
    async fn h2_get(stream: TlsStream<TcpStream>, uri: &str) -> Value {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let response = sender.send_request(http::Request::get(uri).body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap()
    }

    /// An HTTP/1.1 connection for several GETs.
    async fn h1(stream: TlsStream<TcpStream>) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        sender
    }

    async fn h1_get(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>, host: &str) -> Value {
        let request = http::Request::get("/pets/v1/dogs").header("host", host).body(Empty::new()).unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap()
    }

    #[tokio::test]
    async fn each_host_gets_its_certificate_by_sni_and_http2_works_over_alpn() {
        let echo = EchoServer::start("a").await;
        let gw = TestGateway::start().await;
        let addr = tls_listener(&gw).await;
        let ca = TestCa::new();
        let (a, b) = (ca.issue("1-a", "a.test"), ca.issue("2-b", "b.test"));
        let mut broken = ca.issue("3-broken", "c.test").snapshot;
        broken.cert_pem = "-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n".into();
        let mut config = simple(&echo);
        config.certificates = vec![a.snapshot.clone(), b.snapshot.clone(), broken];
        gw.publish(1, config).await;

        let h2 = connect(addr, &ca.client(&[b"h2", b"http/1.1"]), "a.test").await.unwrap();
        assert_eq!(presented(&h2), a.der);
        assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let echoed = h2_get(h2, "https://a.test/pets/v1/dogs").await;
        assert_eq!(echoed["path"], "/dogs");
        assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");
        assert_eq!(echoed["headers"]["x-forwarded-host"], "a.test");

        let h1_stream = connect(addr, &ca.client(&[b"http/1.1"]), "b.test").await.unwrap();
        assert_eq!(presented(&h1_stream), b.der);
        assert_eq!(h1_stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let echoed = h1_get(&mut h1(h1_stream).await, "b.test").await;
        assert_eq!(echoed["headers"]["x-forwarded-proto"], "https");

        // The certificate whose PEM is broken was left out; the others are served.
        let unknown = connect(addr, &ca.client(&[b"h2"]), "c.test").await;
        assert!(unknown.is_err(), "a host without a certificate must be refused");
        assert!(connect(addr, &ca.client(&[b"h2"]), "unknown.test").await.is_err());
        // An IP address sends no SNI: refused too (there is no default certificate).
        let tcp = TcpStream::connect(addr).await.unwrap();
        let by_ip = ca.client(&[]).connect(ServerName::IpAddress(addr.ip().into()), tcp).await;
        assert!(by_ip.is_err(), "a client without SNI must be refused");

        // Cleartext stays cleartext.
        assert_eq!(echoed_proto(&gw).await, "http");
    }

    async fn echoed_proto(gw: &TestGateway) -> String {
        let body = echoed(gw.get("/pets/v1/dogs").await).await;
        body["headers"]["x-forwarded-proto"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_snapshot_swap_changes_the_certificate_of_new_handshakes_only() {
        let echo = EchoServer::start("a").await;
        let gw = TestGateway::start().await;
        let addr = tls_listener(&gw).await;
        let ca = TestCa::new();
        let client = ca.client(&[b"http/1.1"]);
        assert!(connect(addr, &client, "a.test").await.is_err(), "no configuration yet, no certificate");

        let (first, second) = (ca.issue("cert-1", "a.test"), ca.issue("cert-2", "a.test"));
        let mut config = simple(&echo);
        config.certificates = vec![first.snapshot.clone()];
        gw.publish(1, config.clone()).await;
        let old = connect(addr, &client, "a.test").await.unwrap();
        assert_eq!(presented(&old), first.der);
        let mut old = h1(old).await;
        h1_get(&mut old, "a.test").await;

        config.certificates = vec![second.snapshot.clone()];
        gw.publish(2, config).await;
        let new = connect(addr, &client, "a.test").await.unwrap();
        assert_eq!(presented(&new), second.der);
        h1_get(&mut h1(new).await, "a.test").await;
        // The connection opened before the swap keeps working on its session.
        h1_get(&mut old, "a.test").await;
    }
}

// ==== policies ====

mod policies {
    //! IP rules, CORS, header transforms and the response cache, against an upstream
    //! that counts the requests it gets.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use turnpike_domain::policy::{Cache, Cors, HeaderTransform, IpRules, KeyAuth, Policies};

    use super::*;

    /// Counts its requests and answers with JSON naming the count, method, path and
    /// request headers. A request header `x-reply-<name>: <value>` makes it send
    /// `<name>: <value>` back; `x-reply-size: N` makes the body N bytes of `x`.
    struct CountingServer {
        addr: SocketAddr,
        count: Arc<AtomicUsize>,
    }

    impl CountingServer {
        async fn start() -> CountingServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let count = Arc::new(AtomicUsize::new(0));
            let app = axum::Router::new().fallback(counting).with_state(count.clone());
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            CountingServer { addr, count }
        }

        fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        fn count(&self) -> usize {
            self.count.load(Ordering::SeqCst)
        }
    }

    async fn counting(State(count): State<Arc<AtomicUsize>>, req: Request) -> Response {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        let mut seen = BTreeMap::<String, String>::new();
        let mut reply = Vec::new();
        for (name, value) in req.headers() {
            let value = value.to_str().unwrap().to_owned();
            if let Some(reply_name) = name.as_str().strip_prefix("x-reply-") {
                reply.push((reply_name.to_owned(), value.clone()));
            }
            seen.entry(name.to_string()).and_modify(|v| *v = format!("{v}, {value}")).or_insert(value);
        }
        let mut response = match reply.iter().find(|(n, _)| n == "size") {
            Some((_, size)) => "x".repeat(size.parse().unwrap()).into_response(),
            None => axum::Json(json!({
                "count": n,
                "method": req.method().as_str(),
                "path": req.uri().path(),
                "headers": seen,
            }))
            .into_response(),
        };
        for (name, value) in reply.into_iter().filter(|(n, _)| n != "size") {
            response
                .headers_mut()
                .append(http::HeaderName::try_from(name).unwrap(), http::HeaderValue::try_from(value).unwrap());
        }
        response
    }

    /// A version at `base` taking every path and method, with `policies`.
    fn with_policies(id: &str, base: &str, policies: Policies) -> SnapshotVersion {
        let mut v = version(id, base, VersionState::Published, Some("u"), vec![route("all", "/*")]);
        v.policies = policies;
        v
    }

    fn one_upstream(upstream_: &CountingServer, versions: Vec<SnapshotVersion>) -> SnapshotContent {
        content(versions, vec![upstream("u", &[(upstream_.url(), 1)])])
    }

    fn header<'a>(response: &'a reqwest::Response, name: &str) -> Option<&'a str> {
        response.headers().get(name).map(|v| v.to_str().unwrap())
    }

    #[tokio::test]
    async fn ip_rules_refuse_by_the_client_address_not_by_forwarding_headers() {
        let up = CountingServer::start().await;
        let gw = TestGateway::start().await;
        let rules = |allow: &[&str], deny: &[&str]| Policies {
            ip: Some(IpRules {
                allow: allow.iter().map(|s| s.to_string()).collect(),
                deny: deny.iter().map(|s| s.to_string()).collect(),
            }),
            ..Default::default()
        };
        gw.publish(
            1,
            one_upstream(
                &up,
                vec![
                    with_policies("denied", "/denied", rules(&["0.0.0.0/0", "::/0"], &["127.0.0.0/8", "::1"])),
                    with_policies("elsewhere", "/elsewhere", rules(&["10.0.0.0/8"], &[])),
                    with_policies("local", "/local", rules(&["127.0.0.1/32", "::1"], &["10.0.0.0/8"])),
                ],
            ),
        )
        .await;

        problem(gw.get("/denied/x").await, 403, "ip-denied").await;
        let spoofed = gw.http.get(gw.url("/elsewhere/x")).header("x-forwarded-for", "10.1.2.3").send().await.unwrap();
        problem(spoofed, 403, "ip-denied").await;
        assert_eq!(up.count(), 0, "refused requests never reach the upstream");
        let allowed = gw.http.get(gw.url("/local/x")).header("x-forwarded-for", "10.1.2.3").send().await.unwrap();
        assert_eq!(echoed(allowed).await["count"], 1, "a denied address in X-Forwarded-For is not the client");
    }

    fn cors_policies() -> Policies {
        Policies {
            cors: Some(Cors {
                origins: vec!["https://app.example".into(), "https://admin.example".into()],
                methods: vec!["GET".into(), "PUT".into()],
                headers: vec!["x-token".into()],
                expose_headers: vec!["x-total".into()],
                credentials: true,
                max_age_seconds: 120,
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn cors_preflights_are_answered_by_the_gateway_and_responses_carry_cors_headers() {
        let up = CountingServer::start().await;
        let gw = TestGateway::start().await;
        // Routes that do not list OPTIONS: preflights are routed as the request they
        // announce (one announcing a method no route takes gets 405, like that request).
        let mut no_options = route("no-options", "/*");
        no_options.spec.methods = vec!["GET".into(), "PUT".into(), "DELETE".into()];
        let mut with_cors = with_policies("cors", "/cors", cors_policies());
        with_cors.routes = vec![no_options.clone()];
        let without = version("plain", "/plain", VersionState::Published, Some("u"), vec![no_options]);
        gw.publish(1, one_upstream(&up, vec![with_cors, without])).await;

        let preflight = |path: &str, origin: &'static str, method: &'static str, headers: &'static str| {
            gw.http
                .request(reqwest::Method::OPTIONS, gw.url(path))
                .header("origin", origin)
                .header("access-control-request-method", method)
                .header("access-control-request-headers", headers)
                .send()
        };
        let ok = preflight("/cors/pets", "https://app.example", "PUT", "X-Token").await.unwrap();
        assert_eq!(ok.status(), 204);
        assert_eq!(header(&ok, "access-control-allow-origin"), Some("https://app.example"));
        assert_eq!(header(&ok, "access-control-allow-credentials"), Some("true"));
        assert_eq!(header(&ok, "access-control-allow-methods"), Some("GET, PUT"));
        assert_eq!(header(&ok, "access-control-allow-headers"), Some("x-token"));
        assert_eq!(header(&ok, "access-control-max-age"), Some("120"));
        assert!(header(&ok, "x-request-id").is_some());
        for (origin, method, headers) in [
            ("https://evil.example", "PUT", ""),
            ("https://app.example", "DELETE", ""),
            ("https://app.example", "GET", "x-token, x-admin"),
        ] {
            let refused = preflight("/cors/pets", origin, method, headers).await.unwrap();
            assert!(header(&refused, "access-control-allow-origin").is_none());
            problem(refused, 403, "cors-refused").await;
        }
        assert_eq!(up.count(), 0, "preflights never reach the upstream");
        // Without a CORS policy a preflight is an ordinary OPTIONS request.
        problem(preflight("/plain/pets", "https://app.example", "PUT", "").await.unwrap(), 405, "method-not-allowed")
            .await;

        let allowed = gw
            .http
            .get(gw.url("/cors/pets"))
            .header("origin", "https://admin.example")
            .header("x-reply-access-control-allow-origin", "*")
            .send()
            .await
            .unwrap();
        assert_eq!(header(&allowed, "access-control-allow-origin"), Some("https://admin.example"));
        assert_eq!(header(&allowed, "access-control-allow-credentials"), Some("true"));
        assert_eq!(header(&allowed, "access-control-expose-headers"), Some("x-total"));
        assert_eq!(header(&allowed, "vary"), Some("Origin"));
        assert_eq!(echoed(allowed).await["count"], 1);

        let foreign = gw
            .http
            .get(gw.url("/cors/pets"))
            .header("origin", "https://evil.example")
            .header("x-reply-access-control-allow-origin", "*")
            .send()
            .await
            .unwrap();
        assert!(header(&foreign, "access-control-allow-origin").is_none(), "the upstream's value is not passed on");
        assert!(header(&foreign, "access-control-allow-credentials").is_none());
        assert_eq!(header(&foreign, "vary"), Some("Origin"));
        assert_eq!(echoed(foreign).await["count"], 2, "a foreign origin's request is still forwarded");
    }

    /// The developer portal's origin in the docs-origin tests.
    const PORTAL: &str = "http://127.0.0.1:8003";

    /// A gateway whose docs origins are `docs_origins`, and whose only API key,
    /// `tpk_docs`, is subscribed to the versions `weather` and `cors`.
    async fn docs_gateway(docs_origins: &[&str]) -> TestGateway {
        use turnpike_bus::credentials::InProcessCredentials;
        use turnpike_domain::credential::Credential;
        use turnpike_domain::secrets::{KeyHasher, generate_secret};
        use turnpike_gateway::consumer::Consumers;

        let hasher = KeyHasher::new(&generate_secret()).unwrap();
        let credentials = Arc::new(InProcessCredentials::new());
        let credential = Credential {
            key_id: "key-1".into(),
            application_id: "app-1".into(),
            developer_id: "dev-1".into(),
            expires_at: None,
            subscriptions: [("weather".to_owned(), "plan-1".to_owned()), ("cors".to_owned(), "plan-1".to_owned())]
                .into(),
        };
        credentials.replace_all([(hasher.hash("tpk_docs"), credential)]);
        let store =
            ConfigStore::with_consumers(Consumers { credentials, hasher: Some(hasher), ..Consumers::default() })
                .with_docs_origins(docs_origins.iter().map(|o| o.parse::<turnpike_gateway::Origin>().unwrap()));
        TestGateway::start_on(store, Settings::default()).await
    }

    /// `weather` at `/weather/v1`: key in `x-weather-key`, no CORS policy, a route
    /// taking GET and POST only (preflights are routed as the request they announce);
    /// `cors` at `/cors`: the same key and route, and the CORS policy of [`cors_policies`].
    fn docs_versions(up: &CountingServer) -> SnapshotContent {
        let mut get_post = route("get-post", "/*");
        get_post.spec.methods = vec!["GET".into(), "POST".into()];
        let key = Some(KeyAuth { header: "x-weather-key".into(), query: None });
        let mut weather =
            with_policies("weather", "/weather/v1", Policies { key_auth: key.clone(), ..Default::default() });
        weather.routes = vec![get_post.clone()];
        let mut cors = with_policies("cors", "/cors", Policies { key_auth: key, ..cors_policies() });
        cors.routes = vec![get_post];
        one_upstream(up, vec![weather, cors])
    }

    fn preflight<'a>(
        gw: &'a TestGateway,
        path: &str,
        origin: &str,
        method: &str,
        headers: &str,
    ) -> impl std::future::Future<Output = reqwest::Response> + 'a {
        let request = gw
            .http
            .request(reqwest::Method::OPTIONS, gw.url(path))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", headers);
        async move { request.send().await.unwrap() }
    }

    /// A GET from `origin` (none: a same-origin or non-browser request) with the key,
    /// the upstream answering with its own `Access-Control-Allow-Origin: *`.
    async fn keyed_get(gw: &TestGateway, path: &str, origin: Option<&str>) -> reqwest::Response {
        let mut request = gw
            .http
            .get(gw.url(path))
            .header("x-weather-key", "tpk_docs")
            .header("x-reply-access-control-allow-origin", "*");
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        request.send().await.unwrap()
    }

    #[tokio::test]
    async fn the_portals_try_it_works_on_versions_without_a_cors_policy() {
        let up = CountingServer::start().await;
        let gw = docs_gateway(&[PORTAL]).await;
        gw.publish(1, docs_versions(&up)).await;

        // The browser's preflight is answered by the gateway, allowing the version's key header.
        let ok = preflight(&gw, "/weather/v1/today", PORTAL, "GET", "x-weather-key").await;
        assert_eq!(ok.status(), 204);
        assert_eq!(header(&ok, "access-control-allow-origin"), Some(PORTAL));
        let allowed = header(&ok, "access-control-allow-headers").unwrap();
        assert_eq!(allowed, "accept, content-type, authorization, x-weather-key");
        assert!(header(&ok, "access-control-allow-methods").unwrap().contains("GET"));
        assert!(header(&ok, "access-control-allow-credentials").is_none(), "never credentials for the docs");
        let post = preflight(&gw, "/weather/v1/today", PORTAL, "POST", "Content-Type, X-Weather-Key").await;
        assert_eq!(post.status(), 204);
        // Headers the docs do not need, and methods no route takes, are refused as by a policy.
        let refused = preflight(&gw, "/weather/v1/today", PORTAL, "GET", "x-weather-key, x-admin").await;
        assert!(header(&refused, "access-control-allow-origin").is_none());
        problem(refused, 403, "cors-refused").await;
        problem(preflight(&gw, "/weather/v1/today", PORTAL, "DELETE", "").await, 405, "method-not-allowed").await;
        assert_eq!(up.count(), 0, "preflights never reach the upstream");

        // The request itself: the docs origin may read the answer, without credentials.
        let answered = keyed_get(&gw, "/weather/v1/today", Some(PORTAL)).await;
        assert_eq!(header(&answered, "access-control-allow-origin"), Some(PORTAL), "the upstream's `*` is replaced");
        assert_eq!(header(&answered, "vary"), Some("Origin"));
        assert!(header(&answered, "access-control-allow-credentials").is_none());
        let seen = echoed(answered).await;
        assert_eq!((seen["count"].as_u64(), seen["method"].as_str()), (Some(1), Some("GET")));
        // So may it read the gateway's own errors (a missing key here).
        let unauthenticated = gw.http.get(gw.url("/weather/v1/today")).header("origin", PORTAL).send().await.unwrap();
        assert_eq!(header(&unauthenticated, "access-control-allow-origin"), Some(PORTAL));
        problem(unauthenticated, 401, "missing-api-key").await;

        // Other origins, and requests without one, are handled as before: a preflight is
        // an ordinary OPTIONS, and responses carry no CORS headers of the gateway's.
        let foreign = preflight(&gw, "/weather/v1/today", "https://evil.example", "GET", "x-weather-key").await;
        assert!(header(&foreign, "access-control-allow-origin").is_none());
        problem(foreign, 405, "method-not-allowed").await;
        let foreign = keyed_get(&gw, "/weather/v1/today", Some("https://evil.example")).await;
        assert_eq!(header(&foreign, "access-control-allow-origin"), Some("*"), "the upstream's own, untouched");
        // But the answer varies by origin (the docs' would carry other headers).
        assert_eq!(header(&foreign, "vary"), Some("Origin"));
        assert_eq!(echoed(foreign).await["count"], 2);
        let plain = keyed_get(&gw, "/weather/v1/today", None).await;
        assert_eq!(header(&plain, "access-control-allow-origin"), Some("*"));
        assert_eq!(header(&plain, "vary"), Some("Origin"));
        assert_eq!(echoed(plain).await["count"], 3);
        // A look-alike of the docs origin is another origin.
        let lookalike = preflight(&gw, "/weather/v1/today", "http://127.0.0.1:80030", "GET", "").await;
        problem(lookalike, 405, "method-not-allowed").await;
    }

    #[tokio::test]
    async fn docs_origins_are_allowed_beside_a_versions_own_cors_policy() {
        let up = CountingServer::start().await;
        let gw = docs_gateway(&[PORTAL]).await;
        let mut content = docs_versions(&up);
        // Deprecated versions are served, so their docs work too.
        content.versions[1].state = VersionState::Deprecated;
        content.versions[1].deprecated_at = Some(Utc::now());
        gw.publish(1, content).await;

        // The policy's origins are served as the policy says (credentials included).
        let app = preflight(&gw, "/cors/pets", "https://app.example", "GET", "x-token").await;
        assert_eq!(app.status(), 204);
        assert_eq!(header(&app, "access-control-allow-credentials"), Some("true"));
        assert_eq!(header(&app, "access-control-allow-headers"), Some("x-token"));
        // The docs origin gets the docs rules, with the policy's headers added.
        let docs = preflight(&gw, "/cors/pets", PORTAL, "POST", "x-weather-key, x-token").await;
        assert_eq!(docs.status(), 204);
        assert_eq!(header(&docs, "access-control-allow-origin"), Some(PORTAL));
        assert!(header(&docs, "access-control-allow-credentials").is_none());
        assert_eq!(
            header(&docs, "access-control-allow-headers"),
            Some("accept, content-type, authorization, x-weather-key, x-token")
        );
        // Anyone else is still refused by the policy.
        problem(preflight(&gw, "/cors/pets", "https://evil.example", "GET", "").await, 403, "cors-refused").await;
        assert_eq!(up.count(), 0);

        let answered = keyed_get(&gw, "/cors/pets", Some(PORTAL)).await;
        assert_eq!(header(&answered, "access-control-allow-origin"), Some(PORTAL));
        // The gateway's own headers (the deprecation notice too), then the policy's.
        let exposed = header(&answered, "access-control-expose-headers").unwrap();
        assert!(exposed.starts_with("x-request-id,") && exposed.contains("deprecation"), "{exposed}");
        assert!(exposed.ends_with(", x-total"), "{exposed}");
        assert!(header(&answered, "access-control-allow-credentials").is_none());
        assert!(header(&answered, "deprecation").is_some());
        echoed(answered).await;
        let app = keyed_get(&gw, "/cors/pets", Some("https://admin.example")).await;
        assert_eq!(header(&app, "access-control-allow-origin"), Some("https://admin.example"));
        assert_eq!(header(&app, "access-control-allow-credentials"), Some("true"));
        let foreign = keyed_get(&gw, "/cors/pets", Some("https://evil.example")).await;
        assert!(header(&foreign, "access-control-allow-origin").is_none(), "the policy replaces the upstream's");
        assert_eq!(header(&foreign, "vary"), Some("Origin"));
    }

    #[tokio::test]
    async fn without_docs_origins_the_portal_gets_no_cors() {
        let up = CountingServer::start().await;
        let gw = docs_gateway(&[]).await;
        gw.publish(1, docs_versions(&up)).await;
        let refused = preflight(&gw, "/weather/v1/today", PORTAL, "GET", "x-weather-key").await;
        assert!(header(&refused, "access-control-allow-origin").is_none());
        problem(refused, 405, "method-not-allowed").await;
        let plain = keyed_get(&gw, "/weather/v1/today", Some(PORTAL)).await;
        assert_eq!(header(&plain, "access-control-allow-origin"), Some("*"), "the upstream's own, untouched");
        assert!(header(&plain, "vary").is_none());
        echoed(plain).await;
        // A version's own policy does not list the portal: it is refused like any origin.
        problem(preflight(&gw, "/cors/pets", PORTAL, "GET", "").await, 403, "cors-refused").await;
    }

    #[tokio::test]
    async fn header_transforms_change_what_the_upstream_and_the_client_see() {
        let up = CountingServer::start().await;
        let gw = TestGateway::start().await;
        let transform = |remove: &[&str], set: &[(&str, &str)], add: &[(&str, &str)]| HeaderTransform {
            remove: remove.iter().map(|s| s.to_string()).collect(),
            set: set.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            add: add.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        let policies = Policies {
            request_headers: transform(
                &["x-secret"],
                &[("x-env", "prod"), ("host", "evil.example"), ("x-forwarded-for", "1.2.3.4")],
                &[("x-tag", "gateway")],
            ),
            response_headers: transform(
                &["x-powered-by"],
                &[("x-frame-options", "DENY")],
                &[("x-served-by", "turnpike")],
            ),
            ..Default::default()
        };
        gw.publish(1, one_upstream(&up, vec![with_policies("t", "/t", policies)])).await;

        let response = gw
            .http
            .get(gw.url("/t/x"))
            .header("x-secret", "s3cret")
            .header("x-env", "dev")
            .header("x-tag", "client")
            .header("x-reply-x-powered-by", "php")
            .header("x-reply-x-frame-options", "SAMEORIGIN")
            .header("x-reply-x-served-by", "upstream")
            .send()
            .await
            .unwrap();
        assert!(header(&response, "x-powered-by").is_none());
        assert_eq!(header(&response, "x-frame-options"), Some("DENY"));
        let served_by: Vec<_> = response.headers().get_all("x-served-by").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(served_by, ["upstream", "turnpike"]);
        let body = echoed(response).await;
        let seen = &body["headers"];
        assert!(seen.get("x-secret").is_none(), "removed before forwarding: {seen}");
        assert_eq!(seen["x-env"], "prod");
        assert_eq!(seen["x-tag"], "client, gateway");
        assert_eq!(seen["host"], up.addr.to_string(), "Host cannot be set by a transform");
        assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "forwarding headers cannot be set by a transform");
    }

    fn cached(ttl_seconds: u32, extra: Policies) -> Policies {
        Policies { cache: Some(Cache { ttl_seconds, max_body_bytes: 1000 }), ..extra }
    }

    /// GETs `path` with `headers` and returns the `X-Cache` value and the upstream's count.
    async fn fetch(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> (String, Value) {
        let mut request = gw.http.get(gw.url(path));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let x_cache = header(&response, "x-cache").unwrap_or("none").to_owned();
        (x_cache, echoed(response).await["count"].clone())
    }

    #[tokio::test]
    async fn cached_responses_are_served_by_the_gateway_per_url_and_vary() {
        let up = CountingServer::start().await;
        let gw = TestGateway::start().await;
        gw.publish(1, one_upstream(&up, vec![with_policies("c", "/c", cached(60, cors_policies()))])).await;

        assert_eq!(fetch(&gw, "/c/a", &[]).await, ("MISS".into(), json!(1)));
        let hit = gw.get("/c/a").await;
        assert_eq!((header(&hit, "x-cache"), header(&hit, "age")), (Some("HIT"), Some("0")));
        assert_eq!(echoed(hit).await["count"], 1, "served from the cache");
        let head = gw.http.head(gw.url("/c/a")).send().await.unwrap();
        assert_eq!((head.status().as_u16(), header(&head, "x-cache")), (200, Some("HIT")));
        let get_length = gw.get("/c/a").await.bytes().await.unwrap().len().to_string();
        assert_eq!(header(&head, "content-length"), Some(get_length.as_str()), "HEAD reports the GET body's length");
        assert_eq!(up.count(), 1, "HEAD is answered from the GET entry");
        assert_eq!(fetch(&gw, "/c/a?page=2", &[]).await, ("MISS".into(), json!(2)), "the query is part of the key");
        assert_eq!(fetch(&gw, "/c/./b/../a", &[]).await, ("HIT".into(), json!(1)), "the normalized path is the key");

        // CORS headers are per request, never stored: a hit gets the caller's origin.
        let from_admin = gw.http.get(gw.url("/c/a")).header("origin", "https://admin.example").send().await.unwrap();
        assert_eq!(header(&from_admin, "x-cache"), Some("HIT"));
        assert_eq!(header(&from_admin, "access-control-allow-origin"), Some("https://admin.example"));

        // Vary: one entry per value of the named request header.
        let lang = |value: &'static str| [("x-reply-vary", "X-Lang"), ("x-lang", value)];
        assert_eq!(fetch(&gw, "/c/v", &lang("en")).await, ("MISS".into(), json!(3)));
        assert_eq!(fetch(&gw, "/c/v", &lang("en")).await, ("HIT".into(), json!(3)));
        assert_eq!(fetch(&gw, "/c/v", &lang("fr")).await, ("MISS".into(), json!(4)));
        assert_eq!(fetch(&gw, "/c/v", &lang("fr")).await, ("HIT".into(), json!(4)));
        assert_eq!(fetch(&gw, "/c/v", &lang("en")).await, ("HIT".into(), json!(3)));

        // What must not be stored is not.
        let no_store = [("x-reply-cache-control", "no-store")];
        assert_eq!(fetch(&gw, "/c/n", &no_store).await, ("MISS".into(), json!(5)));
        assert_eq!(fetch(&gw, "/c/n", &no_store).await, ("MISS".into(), json!(6)));
        assert_eq!(fetch(&gw, "/c/a", &[("cache-control", "no-cache")]).await, ("MISS".into(), json!(7)));
        assert_eq!(fetch(&gw, "/c/a", &[]).await, ("HIT".into(), json!(7)), "no-cache refreshed the entry");
        let big = || gw.http.get(gw.url("/c/big")).header("x-reply-size", "5000").send();
        for _ in 0..2 {
            let response = big().await.unwrap();
            assert_eq!(header(&response, "x-cache"), Some("MISS"));
            assert_eq!(response.bytes().await.unwrap().len(), 5000, "a body over the limit streams through whole");
        }
        assert_eq!(up.count(), 9);
        for n in [10, 11] {
            let posted = gw.http.post(gw.url("/c/a")).send().await.unwrap();
            assert!(header(&posted, "x-cache").is_none());
            assert_eq!(echoed(posted).await["count"], n, "POST is never answered from the cache");
        }
        assert_eq!(fetch(&gw, "/c/a", &[]).await, ("MISS".into(), json!(12)), "the POST made the entry stale");
    }

    #[tokio::test]
    async fn entries_expire_after_max_age_even_under_a_longer_ttl() {
        let up = CountingServer::start().await;
        let gw = TestGateway::start().await;
        gw.publish(1, one_upstream(&up, vec![with_policies("c", "/c", cached(60, Policies::default()))])).await;
        let short = [("x-reply-cache-control", "max-age=1")];
        assert_eq!(fetch(&gw, "/c/e", &short).await, ("MISS".into(), json!(1)));
        let stored = Instant::now();
        assert_eq!(fetch(&gw, "/c/e", &short).await, ("HIT".into(), json!(1)));
        let deadline = stored + Duration::from_secs(10);
        let expired = loop {
            let (x_cache, count) = fetch(&gw, "/c/e", &short).await;
            if x_cache == "MISS" {
                break count;
            }
            assert!(Instant::now() < deadline, "the entry never expired");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(expired, 2);
        assert!(stored.elapsed() >= Duration::from_millis(900), "expired early, after {:?}", stored.elapsed());
    }

    #[tokio::test]
    async fn a_snapshot_that_changes_a_versions_policies_drops_its_entries() {
        let up = CountingServer::start().await;
        let gw = TestGateway::start().await;
        let snapshot = |ttl| one_upstream(&up, vec![with_policies("c", "/c", cached(ttl, Policies::default()))]);
        gw.publish(1, snapshot(60)).await;
        assert_eq!(fetch(&gw, "/c/s", &[]).await, ("MISS".into(), json!(1)));
        assert_eq!(fetch(&gw, "/c/s", &[]).await, ("HIT".into(), json!(1)));
        let mut other = snapshot(60);
        other.versions.push(with_policies("d", "/d", Policies::default()));
        gw.publish(2, other).await;
        assert_eq!(fetch(&gw, "/c/s", &[]).await, ("HIT".into(), json!(1)), "unchanged versions keep their entries");
        gw.publish(3, snapshot(30)).await;
        assert_eq!(fetch(&gw, "/c/s", &[]).await, ("MISS".into(), json!(2)));
    }
}

// ==== upstreams ====

mod upstreams {
    use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
    use std::time::Instant;

    use axum::http::StatusCode;
    use hyper_util::rt::TokioIo;
    use hyper_util::server::conn::auto;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    use rustls::ServerConfig;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    use tokio_rustls::TlsAcceptor;
    use turnpike_domain::model::{
        CircuitBreaker, HashOn, HealthCheck, LoadBalancing, OutlierDetection, Retries, UpstreamTls,
    };
    use turnpike_gateway::{TargetStatus, UpstreamRuntime};

    use super::*;

    /// Plenty for anything that happens on loopback; only reached when a test fails.
    const DEADLINE: Duration = Duration::from_secs(10);

    /// An upstream the test steers: `/health` answers `health`, other paths answer
    /// `status` with `{"upstream": name}`; paths ending in `/hold` wait for `release`.
    struct Backend {
        addr: SocketAddr,
        hits: Arc<AtomicUsize>,
        probes: Arc<AtomicUsize>,
        status: Arc<AtomicU16>,
        health: Arc<AtomicU16>,
        arrived: Mutex<mpsc::UnboundedReceiver<()>>,
        release: Arc<Semaphore>,
    }

    #[derive(Clone)]
    struct BackendState {
        name: &'static str,
        hits: Arc<AtomicUsize>,
        probes: Arc<AtomicUsize>,
        status: Arc<AtomicU16>,
        health: Arc<AtomicU16>,
        arrived: mpsc::UnboundedSender<()>,
        release: Arc<Semaphore>,
    }

    impl Backend {
        async fn start(name: &'static str) -> Backend {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (arrived_tx, arrived_rx) = mpsc::unbounded_channel();
            let state = BackendState {
                name,
                hits: Arc::default(),
                probes: Arc::default(),
                status: Arc::new(AtomicU16::new(200)),
                health: Arc::new(AtomicU16::new(200)),
                arrived: arrived_tx,
                release: Arc::new(Semaphore::new(0)),
            };
            let backend = Backend {
                addr,
                hits: state.hits.clone(),
                probes: state.probes.clone(),
                status: state.status.clone(),
                health: state.health.clone(),
                arrived: Mutex::new(arrived_rx),
                release: state.release.clone(),
            };
            let app = axum::Router::new().fallback(serve_backend).with_state(state);
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            backend
        }

        fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }

        fn answer(&self, status: u16) {
            self.status.store(status, Ordering::SeqCst);
        }
    }

    async fn serve_backend(State(s): State<BackendState>, req: Request) -> Response {
        let path = req.uri().path().to_owned();
        if path == "/health" {
            s.probes.fetch_add(1, Ordering::SeqCst);
            return StatusCode::from_u16(s.health.load(Ordering::SeqCst)).unwrap().into_response();
        }
        s.hits.fetch_add(1, Ordering::SeqCst);
        if path.ends_with("/hold") {
            s.arrived.send(()).unwrap();
            s.release.acquire().await.unwrap().forget();
        }
        let status = StatusCode::from_u16(s.status.load(Ordering::SeqCst)).unwrap();
        (status, axum::Json(json!({"upstream": s.name, "method": req.method().as_str()}))).into_response()
    }

    /// One version at `/api` taking everything, to the upstream `u`.
    fn one(u: SnapshotUpstream) -> SnapshotContent {
        content(vec![version("v1", "/api", VersionState::Published, Some(&u.id), vec![route("all", "/*")])], vec![u])
    }

    fn targets(backends: &[&Backend]) -> Vec<(String, u32)> {
        backends.iter().map(|b| (b.url(), 100)).collect()
    }

    /// Outlier detection, breaker and retries off: each request is one attempt.
    fn plain(id: &str, targets: &[(String, u32)]) -> SnapshotUpstream {
        let mut u = upstream(id, targets);
        u.spec.outlier_detection.enabled = false;
        u.spec.circuit_breaker.enabled = false;
        u.spec.retries = Retries { attempts: 0, budget_percent: 0 };
        u
    }

    /// Sends a request and says who answered: the status and the backend's name
    /// (`None` for the gateway's own answers).
    async fn call(gw: &TestGateway, method: &str, path: &str) -> (u16, Option<String>) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = gw.http.request(method, gw.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (status, body["upstream"].as_str().map(str::to_owned))
    }

    async fn who(gw: &TestGateway) -> String {
        let (status, name) = call(gw, "GET", "/api/x").await;
        assert_eq!(status, 200);
        name.unwrap()
    }

    fn runtime(gw: &TestGateway) -> &UpstreamRuntime {
        gw.store.upstreams()
    }

    fn status_of(gw: &TestGateway, url: &str) -> TargetStatus {
        runtime(gw).target("u", url).expect("the target is in use")
    }

    /// Waits for a change the runtime announces (health, ejection, breaker moves).
    async fn wait_for(gw: &TestGateway, what: &str, condition: impl FnMut(&UpstreamRuntime) -> bool) {
        assert!(runtime(gw).wait_until(DEADLINE, condition).await, "timed out waiting for: {what}");
    }

    /// Polls for a change that only time brings (an open breaker's period ending).
    async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + DEADLINE;
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // ---- load balancing

    #[tokio::test]
    async fn least_connections_sends_new_requests_to_the_idle_target() {
        let (a, b) = (Backend::start("a").await, Backend::start("b").await);
        let gw = TestGateway::start().await;
        let mut u = plain("u", &targets(&[&a, &b]));
        u.spec.algorithm = LoadBalancing::LeastConnections;
        gw.publish(1, one(u)).await;

        let held = tokio::spawn(gw.http.get(gw.url("/api/hold")).send());
        a.arrived.lock().await.recv().await.unwrap();
        assert_eq!(status_of(&gw, &a.url()).in_flight, 1);
        for _ in 0..5 {
            assert_eq!(who(&gw).await, "b", "a is busy");
        }
        a.release.add_permits(1);
        assert_eq!(held.await.unwrap().unwrap().status(), 200);
        eventually("a to be idle", || status_of(&gw, &a.url()).in_flight == 0).await;
        let mut names: Vec<String> = Vec::new();
        for _ in 0..4 {
            names.push(who(&gw).await);
        }
        names.sort();
        assert_eq!(names, ["a", "a", "b", "b"], "idle targets share by weight");
    }

    #[tokio::test]
    async fn consistent_hashing_keeps_each_key_on_one_target() {
        let (a, b, c) = (Backend::start("a").await, Backend::start("b").await, Backend::start("c").await);
        let gw = TestGateway::start().await;
        let mut u = plain("u", &targets(&[&a, &b, &c]));
        u.spec.algorithm = LoadBalancing::ConsistentHash;
        u.spec.hash_on = Some(HashOn::Header("X-User".into()));
        gw.publish(1, one(u)).await;

        let mut owners = BTreeMap::new();
        for user in 0..30 {
            for _ in 0..4 {
                let response = gw.http.get(gw.url("/api/x")).header("x-user", format!("user-{user}")).send().await;
                let name = echoed(response.unwrap()).await["upstream"].as_str().unwrap().to_owned();
                let owner = owners.entry(user).or_insert_with(|| name.clone());
                assert_eq!(*owner, name, "user-{user} moved");
            }
        }
        let used: std::collections::BTreeSet<_> = owners.values().collect();
        assert_eq!(used.len(), 3, "30 keys spread over all targets: {owners:?}");
        // Without the header: round robin, exactly.
        let mut counts = BTreeMap::new();
        for _ in 0..6 {
            *counts.entry(who(&gw).await).or_insert(0) += 1;
        }
        assert_eq!(counts, BTreeMap::from([("a".into(), 2), ("b".into(), 2), ("c".into(), 2)]));
    }

    // ---- health

    #[tokio::test]
    async fn active_health_checks_eject_a_failing_target_and_bring_it_back() {
        let (a, b) = (Backend::start("a").await, Backend::start("b").await);
        let gw = TestGateway::start().await;
        let mut u = plain("u", &targets(&[&a, &b]));
        u.spec.health_check = HealthCheck {
            enabled: true,
            path: "/health".into(),
            interval_ms: 100,
            timeout_ms: 100,
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        };
        gw.publish(1, one(u.clone())).await;
        wait_for(&gw, "the health checker", |r| r.health_checks_running() == 1).await;
        assert!(status_of(&gw, &b.url()).healthy);

        b.health.store(503, Ordering::SeqCst);
        wait_for(&gw, "b to fail its checks", |r| !r.target("u", &b.url()).unwrap().healthy).await;
        let before = b.hits();
        for _ in 0..6 {
            assert_eq!(who(&gw).await, "a");
        }
        assert_eq!(b.hits(), before, "no request reached the unhealthy target");

        // A snapshot that changes something else keeps the target down.
        let mut changed = one(u);
        changed.upstreams[0].spec.timeouts.read_ms = 20_000;
        gw.publish(2, changed.clone()).await;
        assert!(!status_of(&gw, &b.url()).healthy);
        assert_eq!(who(&gw).await, "a");

        b.health.store(200, Ordering::SeqCst);
        wait_for(&gw, "b to recover", |r| r.target("u", &b.url()).unwrap().healthy).await;
        let mut names = Vec::new();
        for _ in 0..4 {
            names.push(who(&gw).await);
        }
        names.sort();
        assert_eq!(names, ["a", "a", "b", "b"]);
        assert!(a.probes.load(Ordering::SeqCst) > 0 && b.probes.load(Ordering::SeqCst) > 0);

        // The checker stops when its upstream leaves the configuration.
        let mut gone = changed;
        gone.versions[0].upstream_id = None;
        gone.upstreams.clear();
        gw.publish(3, gone).await;
        wait_for(&gw, "the checker to stop", |r| r.health_checks_running() == 0).await;
        assert!(runtime(&gw).targets().is_empty(), "state of removed targets is dropped");
    }

    // ---- passive outlier detection and circuit breaker

    #[tokio::test]
    async fn consecutive_failures_eject_a_target_across_snapshot_swaps() {
        let (a, b) = (Backend::start("a").await, Backend::start("b").await);
        let gw = TestGateway::start().await;
        let mut u = plain("u", &targets(&[&a, &b]));
        u.spec.outlier_detection =
            OutlierDetection { enabled: true, consecutive_failures: 2, base_ejection_ms: 60_000 };
        gw.publish(1, one(u.clone())).await;

        b.answer(500);
        let answers = [
            call(&gw, "GET", "/api/x").await,
            call(&gw, "GET", "/api/x").await,
            call(&gw, "GET", "/api/x").await,
            call(&gw, "GET", "/api/x").await,
        ];
        let s = |n: &str| Some(n.to_owned());
        assert_eq!(answers, [(200, s("a")), (500, s("b")), (200, s("a")), (500, s("b"))]);
        assert!(status_of(&gw, &b.url()).ejected);
        for _ in 0..6 {
            assert_eq!(who(&gw).await, "a");
        }
        assert_eq!(b.hits(), 2);

        let mut changed = one(u);
        changed.versions[0].routes.push(route("extra", "/extra"));
        gw.publish(2, changed).await;
        for _ in 0..4 {
            assert_eq!(who(&gw).await, "a", "the ejection survives the new snapshot");
        }
        assert_eq!(b.hits(), 2);

        // With every target ejected, they are tried anyway rather than failing closed.
        a.answer(500);
        assert_eq!(call(&gw, "GET", "/api/x").await, (500, s("a")));
        assert_eq!(call(&gw, "GET", "/api/x").await, (500, s("a")));
        assert!(status_of(&gw, &a.url()).ejected);
        let (status, name) = call(&gw, "GET", "/api/x").await;
        assert_eq!(status, 500, "an upstream's answer, not the gateway's 503");
        assert!(name.is_some());
    }

    #[tokio::test]
    async fn the_circuit_breaker_opens_fails_fast_and_closes_after_a_good_trial() {
        let a = Backend::start("a").await;
        let gw = TestGateway::start().await;
        let mut u = plain("u", &targets(&[&a]));
        u.spec.circuit_breaker =
            CircuitBreaker { enabled: true, failure_threshold: 2, open_ms: 500, half_open_requests: 1 };
        gw.publish(1, one(u)).await;
        let circuit = || status_of(&gw, &a.url()).circuit;

        a.answer(500);
        assert_eq!(call(&gw, "GET", "/api/x").await.0, 500);
        assert_eq!(circuit(), "closed");
        assert_eq!(call(&gw, "GET", "/api/x").await.0, 500);
        assert_eq!(circuit(), "open");
        problem(gw.get("/api/x").await, 503, "no-target").await;
        assert_eq!(a.hits(), 2, "an open breaker sends nothing");

        // Half-open: one trial; it fails, so the breaker opens again.
        eventually("the breaker to half-open", || circuit() == "half_open").await;
        assert_eq!(call(&gw, "GET", "/api/x").await.0, 500);
        assert_eq!(circuit(), "open");
        problem(gw.get("/api/x").await, 503, "no-target").await;
        assert_eq!(a.hits(), 3);

        // Half-open again: while the single trial is in flight, others fail fast;
        // the trial succeeds and the breaker closes.
        a.answer(200);
        eventually("the breaker to half-open again", || circuit() == "half_open").await;
        let trial = tokio::spawn(gw.http.get(gw.url("/api/hold")).send());
        a.arrived.lock().await.recv().await.unwrap();
        problem(gw.get("/api/x").await, 503, "no-target").await;
        a.release.add_permits(1);
        assert_eq!(trial.await.unwrap().unwrap().status(), 200);
        assert_eq!(circuit(), "closed");
        for _ in 0..3 {
            assert_eq!(who(&gw).await, "a");
        }
    }

    // ---- retries

    #[tokio::test]
    async fn idempotent_bodiless_requests_are_retried_elsewhere_and_others_never() {
        let (a, b) = (Backend::start("a").await, Backend::start("b").await);
        let gw = TestGateway::start().await;
        let mut u = plain("u", &targets(&[&a, &b]));
        u.spec.retries = Retries { attempts: 2, budget_percent: 100 };
        gw.publish(1, one(u)).await;

        a.answer(503);
        assert_eq!(call(&gw, "GET", "/api/x").await, (200, Some("b".into())), "retried on the other target");
        assert_eq!((a.hits(), b.hits()), (1, 1));

        b.answer(503);
        let total = |a: &Backend, b: &Backend| a.hits() + b.hits();
        let before = total(&a, &b);
        let post = gw.http.post(gw.url("/api/x")).body("order").send().await.unwrap();
        assert_eq!(post.status(), 503);
        assert_eq!(total(&a, &b), before + 1, "a POST is attempted exactly once");
        assert_eq!(call(&gw, "POST", "/api/x").await.0, 503);
        assert_eq!(total(&a, &b), before + 2, "even without a body");
        let put = gw.http.put(gw.url("/api/x")).body("state").send().await.unwrap();
        assert_eq!(put.status(), 503);
        assert_eq!(total(&a, &b), before + 3, "a request body is never sent twice");
        assert_eq!(call(&gw, "DELETE", "/api/x").await.0, 503);
        assert_eq!(total(&a, &b), before + 6, "an idempotent bodiless request gets two retries");
    }

    #[tokio::test]
    async fn retries_stay_within_the_budget() {
        let a = Backend::start("a").await;
        let gw = TestGateway::start().await;
        let mut u = plain("u", &targets(&[&a]));
        u.spec.retries = Retries { attempts: 1, budget_percent: 50 };
        gw.publish(1, one(u)).await;
        a.answer(503);
        for _ in 0..40 {
            assert_eq!(call(&gw, "GET", "/api/x").await.0, 503);
        }
        // The first ten requests retry on the budget's minimum; after that retries
        // may add 50% of the requests: 20 retries in all.
        assert_eq!(a.hits(), 60);
    }

    // ---- timeouts and misbehaving upstreams

    #[derive(Clone, Copy)]
    enum Misbehavior {
        /// Reads the request and never answers.
        Hang,
        /// Reads the request and resets the connection.
        Reset,
        /// Sends the response head one byte at a time, forever.
        TrickleHead,
        /// Sends a head and part of the body, then nothing.
        StallBody,
    }

    /// A raw TCP upstream that misbehaves; it counts connections and reports each
    /// one that the gateway closes.
    struct RawUpstream {
        addr: SocketAddr,
        accepted: Arc<AtomicUsize>,
        closed: mpsc::UnboundedReceiver<()>,
    }

    impl RawUpstream {
        async fn start(behavior: Misbehavior) -> RawUpstream {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let accepted = Arc::new(AtomicUsize::new(0));
            let (closed_tx, closed) = mpsc::unbounded_channel();
            let count = accepted.clone();
            tokio::spawn(async move {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    count.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(misbehave(stream, behavior, closed_tx.clone()));
                }
            });
            RawUpstream { addr, accepted, closed }
        }

        fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        /// Waits until the gateway has closed `n` connections.
        async fn wait_closed(&mut self, n: usize) {
            for _ in 0..n {
                tokio::time::timeout(DEADLINE, self.closed.recv()).await.expect("a connection was left open").unwrap();
            }
        }
    }

    async fn misbehave(mut stream: TcpStream, behavior: Misbehavior, closed: mpsc::UnboundedSender<()>) {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        match behavior {
            Misbehavior::Hang => {}
            Misbehavior::Reset => {
                stream.set_zero_linger().unwrap();
                return;
            }
            Misbehavior::TrickleHead => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nx-slow: ").await;
                for _ in 0..1_000 {
                    if stream.write_all(b"a").await.is_err() {
                        let _ = closed.send(());
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                return;
            }
            Misbehavior::StallBody => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789").await;
            }
        }
        // Wait for the gateway to close its side.
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        let _ = closed.send(());
    }

    fn timed(url: String, timeouts: Timeouts, retries: u32) -> SnapshotContent {
        let mut u = plain("u", &[(url, 1)]);
        u.spec.timeouts = timeouts;
        u.spec.retries = Retries { attempts: retries, budget_percent: 100 };
        one(u)
    }

    #[tokio::test]
    async fn a_hanging_upstream_gets_504_in_time_and_its_connection_closed() {
        let mut hang = RawUpstream::start(Misbehavior::Hang).await;
        let gw = TestGateway::start().await;
        gw.publish(1, timed(hang.url(), Timeouts { connect_ms: 1_000, read_ms: 300, total_ms: 5_000 }, 0)).await;
        let started = Instant::now();
        problem(gw.get("/api/x").await, 504, "upstream-timeout").await;
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3), "{elapsed:?}");
        hang.wait_closed(1).await;
        assert_eq!(hang.accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_total_timeout_bounds_all_attempts() {
        let mut hang = RawUpstream::start(Misbehavior::Hang).await;
        let gw = TestGateway::start().await;
        gw.publish(1, timed(hang.url(), Timeouts { connect_ms: 1_000, read_ms: 400, total_ms: 900 }, 5)).await;
        let started = Instant::now();
        problem(gw.get("/api/x").await, 504, "upstream-timeout").await;
        let elapsed = started.elapsed();
        // Six tries of 400 ms would take 2.4 s; the total stops them after 900 ms.
        assert!(elapsed >= Duration::from_millis(900) && elapsed < Duration::from_millis(1_800), "{elapsed:?}");
        let tries = hang.accepted.load(Ordering::SeqCst);
        assert!((2..=3).contains(&tries), "{tries} tries");
        hang.wait_closed(tries).await;
    }

    #[tokio::test]
    async fn a_resetting_upstream_gets_502_after_the_retries() {
        let reset = RawUpstream::start(Misbehavior::Reset).await;
        let gw = TestGateway::start().await;
        gw.publish(1, timed(reset.url(), Timeouts::default(), 2)).await;
        problem(gw.get("/api/x").await, 502, "upstream-failed").await;
        assert_eq!(reset.accepted.load(Ordering::SeqCst), 3, "one try and two retries on the only target");
        problem(gw.http.post(gw.url("/api/x")).send().await.unwrap(), 502, "upstream-failed").await;
        assert_eq!(reset.accepted.load(Ordering::SeqCst), 4, "a POST is tried once");
    }

    #[tokio::test]
    async fn a_trickling_head_times_out_and_a_stalled_body_is_cut() {
        let mut trickle = RawUpstream::start(Misbehavior::TrickleHead).await;
        let gw = TestGateway::start().await;
        gw.publish(1, timed(trickle.url(), Timeouts { connect_ms: 1_000, read_ms: 300, total_ms: 5_000 }, 0)).await;
        let started = Instant::now();
        problem(gw.get("/api/x").await, 504, "upstream-timeout").await;
        assert!(started.elapsed() < Duration::from_secs(3));
        trickle.wait_closed(1).await;

        let mut stall = RawUpstream::start(Misbehavior::StallBody).await;
        gw.publish(2, timed(stall.url(), Timeouts { connect_ms: 1_000, read_ms: 300, total_ms: 5_000 }, 0)).await;
        let response = gw.get("/api/x").await;
        assert_eq!(response.status(), 200, "the head came in time");
        let started = Instant::now();
        assert!(response.bytes().await.is_err(), "the body must not end as if complete");
        assert!(started.elapsed() < Duration::from_secs(3));
        stall.wait_closed(1).await;
    }

    #[tokio::test]
    async fn a_target_that_does_not_accept_gets_504_after_the_connect_timeout() {
        // A listener whose accept queue is full: the kernel drops further SYNs, so a
        // connect neither succeeds nor fails until the connect timeout.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        while let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            fillers.push(stream);
            assert!(fillers.len() < 64, "the accept queue never filled up");
        }
        let gw = TestGateway::start().await;
        let timeouts = Timeouts { connect_ms: 300, read_ms: 5_000, total_ms: 10_000 };
        gw.publish(1, timed(format!("http://{addr}"), timeouts, 0)).await;
        let started = Instant::now();
        problem(gw.get("/api/x").await, 504, "upstream-connect-timeout").await;
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3), "{elapsed:?}");
        drop(listener);
    }

    // ---- HTTPS upstreams

    /// A CA for one test and an HTTPS upstream with a certificate it signed.
    struct TlsUpstream {
        addr: SocketAddr,
        ca_pem: String,
    }

    impl TlsUpstream {
        /// Serves over TLS (ALPN h2 and http/1.1) with a certificate for `names`,
        /// answering `{"version": …}`.
        async fn start(names: &[&str]) -> TlsUpstream {
            let ca_key = KeyPair::generate().unwrap();
            let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca.distinguished_name.push(DnType::CommonName, "Turnpike upstream test CA");
            let ca = ca.self_signed(&ca_key).unwrap();
            let key = KeyPair::generate().unwrap();
            let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
            let leaf = CertificateParams::new(names).unwrap().signed_by(&key, &ca, &ca_key).unwrap();

            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(
                    vec![leaf.der().clone()],
                    PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
                )
                .unwrap();
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            let acceptor = TlsAcceptor::from(Arc::new(config));
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                loop {
                    let (tcp, _) = listener.accept().await.unwrap();
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        // Handshakes the gateway refuses end here.
                        let Ok(tls) = acceptor.accept(tcp).await else { return };
                        let service = hyper::service::service_fn(|req: http::Request<Incoming>| async move {
                            let body = json!({"version": format!("{:?}", req.version()), "path": req.uri().path()});
                            Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(Bytes::from(
                                body.to_string(),
                            ))))
                        });
                        let _ =
                            auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tls), service).await;
                    });
                }
            });
            TlsUpstream { addr, ca_pem: ca.pem() }
        }
    }

    fn https(id: &str, url: String, tls: UpstreamTls) -> SnapshotUpstream {
        let mut u = plain(id, &[(url, 1)]);
        u.spec.tls = tls;
        u
    }

    #[tokio::test]
    async fn https_upstreams_are_verified_against_the_configured_ca() {
        let by_ip = TlsUpstream::start(&["127.0.0.1"]).await;
        let by_name = TlsUpstream::start(&["api.internal"]).await;
        let gw = TestGateway::start().await;
        let ca = |pem: &str| UpstreamTls { verify: true, ca_pem: Some(pem.to_owned()), server_name: None };
        let named = |pem: &str| UpstreamTls { server_name: Some("api.internal".into()), ..ca(pem) };
        let cases = [
            ("trusted", https("trusted", format!("https://{}", by_ip.addr), ca(&by_ip.ca_pem))),
            ("untrusted", https("untrusted", format!("https://{}", by_ip.addr), UpstreamTls::default())),
            ("other-ca", https("other-ca", format!("https://{}", by_ip.addr), ca(&by_name.ca_pem))),
            ("named", https("named", format!("https://{}/base", by_name.addr), named(&by_name.ca_pem))),
            ("misnamed", https("misnamed", format!("https://{}", by_name.addr), ca(&by_name.ca_pem))),
            (
                "unverified",
                https(
                    "unverified",
                    format!("https://{}", by_name.addr),
                    UpstreamTls { verify: false, ..Default::default() },
                ),
            ),
        ];
        let versions = cases
            .iter()
            .map(|(id, u)| {
                version(id, &format!("/{id}"), VersionState::Published, Some(&u.id), vec![route("all", "/*")])
            })
            .collect();
        gw.publish(1, content(versions, cases.iter().map(|(_, u)| u.clone()).collect())).await;

        let trusted = echoed(gw.get("/trusted/x").await).await;
        assert_eq!(trusted["version"], "HTTP/2.0", "HTTP/2 negotiated by ALPN: {trusted}");
        assert_eq!(trusted["path"], "/x");
        let body = problem(gw.get("/untrusted/x").await, 502, "upstream-unreachable").await;
        assert!(!body.to_string().contains("certificate"), "no details leak: {body}");
        problem(gw.get("/other-ca/x").await, 502, "upstream-unreachable").await;
        assert_eq!(echoed(gw.get("/named/x").await).await["path"], "/base/x");
        problem(gw.get("/misnamed/x").await, 502, "upstream-unreachable").await;
        echoed(gw.get("/unverified/x").await).await;
    }
}

// ==== edge ====

/// The connection edge: malformed and ambiguous HTTP, size limits and timeouts,
/// forwarding headers behind trusted proxies, trace context and WebSocket upgrades.
/// Most requests are written as raw bytes, since client libraries refuse to send
/// them, against an upstream that counts what reaches it.
mod edge {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use turnpike_domain::policy::{IpRules, Policies};

    use super::*;

    /// Counts the requests that reach it (before reading their bodies), then reads
    /// the body and answers with JSON naming the count, headers and body length. A
    /// body that cannot be read is answered with 499.
    struct Counter {
        addr: SocketAddr,
        count: Arc<AtomicUsize>,
        arrived: Mutex<mpsc::UnboundedReceiver<()>>,
    }

    #[derive(Clone)]
    struct CounterState {
        count: Arc<AtomicUsize>,
        arrived: mpsc::UnboundedSender<()>,
    }

    impl Counter {
        async fn start() -> Counter {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let count = Arc::new(AtomicUsize::new(0));
            let (tx, rx) = mpsc::unbounded_channel();
            let state = CounterState { count: count.clone(), arrived: tx };
            let app = axum::Router::new().fallback(counted).with_state(state);
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            Counter { addr, count, arrived: Mutex::new(rx) }
        }

        fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        fn count(&self) -> usize {
            self.count.load(Ordering::SeqCst)
        }

        async fn wait_for_arrival(&self) {
            self.arrived.lock().await.recv().await.unwrap();
        }
    }

    async fn counted(State(state): State<CounterState>, req: Request) -> Response {
        let n = state.count.fetch_add(1, Ordering::SeqCst) + 1;
        let _ = state.arrived.send(());
        let headers: BTreeMap<String, String> =
            req.headers().iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned())).collect();
        match req.into_body().collect().await {
            Ok(body) => {
                axum::Json(json!({"count": n, "headers": headers, "body_len": body.to_bytes().len()})).into_response()
            }
            Err(_) => (http::StatusCode::from_u16(499).unwrap(), "body failed").into_response(),
        }
    }

    fn with_policies(id: &str, base: &str, policies: Policies) -> SnapshotVersion {
        let mut v = version(id, base, VersionState::Published, Some("u"), vec![route("all", "/*")]);
        v.policies = policies;
        v
    }

    async fn gateway(settings: Settings, upstream_url: String, versions: Vec<SnapshotVersion>) -> TestGateway {
        let gw = TestGateway::start_with(settings).await;
        gw.publish(1, content(versions, vec![upstream("u", &[(upstream_url, 1)])])).await;
        gw
    }

    fn plain(id: &str, base: &str) -> SnapshotVersion {
        with_policies(id, base, Policies::default())
    }

    /// One HTTP/1.1 response read off a stream.
    #[derive(Debug)]
    struct Answer {
        status: u16,
        /// Lower-cased.
        head: String,
        body: Vec<u8>,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.head.lines().find_map(|line| line.strip_prefix(&format!("{name}: ")))
        }

        fn problem_type(&self) -> String {
            let body: Value = serde_json::from_slice(&self.body).unwrap();
            body["type"].as_str().unwrap().trim_start_matches("urn:turnpike:problem:").to_owned()
        }
    }

    /// Reads one response (with a `Content-Length` body) from the front of `buf`.
    fn parse_answer(buf: &mut Vec<u8>) -> Option<Answer> {
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let head = String::from_utf8(buf[..end].to_vec()).unwrap().to_ascii_lowercase();
        let len: usize =
            head.lines().find_map(|l| l.strip_prefix("content-length: ")).map_or(0, |v| v.trim().parse().unwrap());
        if buf.len() < end + len {
            return None;
        }
        let status = head[9..12].parse().unwrap();
        let body = buf[end..end + len].to_vec();
        buf.drain(..end + len);
        Some(Answer { status, head, body })
    }

    /// Writes `bytes`, then reads until the gateway closes the connection (which it
    /// must do within a few seconds) and returns every response it sent.
    async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<Answer> {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        read_until_closed(&mut stream).await
    }

    async fn read_until_closed(stream: &mut TcpStream) -> Vec<Answer> {
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf))
            .await
            .expect("the gateway kept the connection open")
            .unwrap();
        let mut answers = Vec::new();
        while let Some(answer) = parse_answer(&mut buf) {
            answers.push(answer);
        }
        assert!(buf.is_empty(), "trailing bytes: {:?}", String::from_utf8_lossy(&buf));
        answers
    }

    /// Reads one response from a connection that stays open.
    async fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Answer {
        loop {
            if let Some(answer) = parse_answer(buf) {
                return answer;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await.unwrap().unwrap();
            assert!(n > 0, "closed before a full response");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    #[tokio::test]
    async fn malformed_and_ambiguous_requests_get_400_and_a_closed_connection_and_never_reach_the_upstream() {
        let up = Counter::start().await;
        let gw = gateway(Settings::default(), up.url(), vec![plain("v1", "/api")]).await;
        let cases: &[(&str, &[u8])] = &[
            ("content-length with transfer-encoding", b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            ("transfer-encoding with content-length", b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
            ("duplicate content-length", b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"),
            ("conflicting content-length", b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 3\r\n\r\nhello"),
            ("listed content-length", b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello"),
            ("empty content-length", b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\nhello"),
            ("signed content-length", b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello"),
            ("negative content-length", b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nhello"),
            ("non-hex chunk size", b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
            ("signed chunk size", b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n"),
            ("chunk size with space", b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"),
            ("chunk longer than its size", b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n"),
            ("overflowing chunk size", b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nhello\r\n0\r\n\r\n"),
            ("obs-fold", b"GET /api/x HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n"),
            ("nul in a header", b"GET /api/x HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n"),
            ("cr in a header", b"GET /api/x HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n"),
            ("bare lf", b"GET /api/x HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n"),
            ("space before colon", b"GET /api/x HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n"),
            ("unknown coding", b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
            ("duplicate host", b"GET /api/x HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"),
        ];
        for (name, bytes) in cases {
            let answers = exchange(gw.proxy, bytes).await;
            assert_eq!(answers.len(), 1, "{name}: {answers:?}");
            let answer = &answers[0];
            assert_eq!(answer.status, 400, "{name}: {answer:?}");
            assert_eq!(answer.header("connection"), Some("close"), "{name}");
            assert_eq!(answer.header("content-type"), Some("application/problem+json"), "{name}");
            assert_eq!(answer.problem_type(), "malformed-request", "{name}");
            assert!(answer.header("x-request-id").is_some(), "{name}");
        }
        assert_eq!(up.count(), 0, "the upstream saw a request the gateway refused");

        // The same requests, well-formed, do reach it.
        let answers = exchange(
            gw.proxy,
            b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(answers[0].status, 200, "{answers:?}");
        assert_eq!(up.count(), 1);
    }

    #[tokio::test]
    async fn pipelined_requests_are_answered_in_order_up_to_the_malformed_one() {
        let up = Counter::start().await;
        let gw = gateway(Settings::default(), up.url(), vec![plain("v1", "/api")]).await;
        let answers = exchange(
            gw.proxy,
            b"GET /api/one HTTP/1.1\r\nHost: x\r\n\r\n\
              POST /api/two HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
              GET /api/three HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .await;
        let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
        assert_eq!(statuses, [200, 400], "{answers:?}");
        assert_eq!(up.count(), 1, "only the request before the malformed one was forwarded");
    }

    #[tokio::test]
    async fn a_bad_chunk_after_the_head_was_forwarded_still_gets_400_and_closes() {
        let up = Counter::start().await;
        let gw = gateway(Settings::default(), up.url(), vec![plain("v1", "/api")]).await;
        let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
        stream
            .write_all(b"POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            .await
            .unwrap();
        up.wait_for_arrival().await;
        stream.write_all(b"zz\r\nmore\r\n0\r\n\r\n").await.unwrap();
        let answers = read_until_closed(&mut stream).await;
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert_eq!((answers[0].status, answers[0].problem_type().as_str()), (400, "malformed-request"));
    }

    #[tokio::test]
    async fn oversized_heads_answer_414_and_431() {
        let up = Counter::start().await;
        let gw = gateway(Settings::default(), up.url(), vec![plain("v1", "/api")]).await;
        let long_uri = format!("GET /api/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(8 * 1024));
        let big_header = format!("GET /api/x HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(16 * 1024));
        let many_headers = format!("GET /api/x HTTP/1.1\r\nHost: x\r\n{}\r\n", "X-A: 1\r\n".repeat(100));
        for (request, status, slug) in [
            (long_uri, 414, "uri-too-long"),
            (big_header, 431, "headers-too-large"),
            (many_headers, 431, "headers-too-large"),
        ] {
            let answers = exchange(gw.proxy, request.as_bytes()).await;
            assert_eq!(answers.len(), 1, "{answers:?}");
            assert_eq!((answers[0].status, answers[0].problem_type().as_str()), (status, slug));
            assert_eq!(answers[0].header("connection"), Some("close"));
        }
        assert_eq!(up.count(), 0);

        // Just within the limits: a URI of 8 KiB and many headers (fewer than 100, since
        // the upstream has that limit too and the gateway adds its own).
        let target = format!("/api/{}", "a".repeat(8 * 1024 - 5));
        let ok = format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}\r\n", "X-A: 1\r\n".repeat(80));
        let answers = exchange(gw.proxy, ok.as_bytes()).await;
        assert_eq!(answers[0].status, 200, "{:?}", answers[0]);
        assert_eq!(up.count(), 1);
    }

    #[tokio::test]
    async fn http2_requests_keep_to_the_same_limits() {
        let up = Counter::start().await;
        let settings = Settings { max_uri_bytes: 100, max_headers: 5, ..Settings::default() };
        let gw = gateway(settings, up.url(), vec![plain("v1", "/api")]).await;
        let client =
            Client::builder(TokioExecutor::new()).http2_only(true).build_http::<http_body_util::Empty<Bytes>>();
        let get = |path: String, headers: usize| {
            let mut req = http::Request::get(gw.url(&path));
            for i in 0..headers {
                req = req.header(format!("x-h{i}"), "1");
            }
            client.request(req.body(http_body_util::Empty::new()).unwrap())
        };
        let response = get(format!("/api/{}", "a".repeat(100)), 0).await.unwrap();
        assert_eq!(response.status(), 414);
        let response = get("/api/x".into(), 6).await.unwrap();
        assert_eq!(response.status(), 431);
        let response = get("/api/x".into(), 2).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(up.count(), 1);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_get_413_without_being_read() {
        let up = Counter::start().await;
        let limited = Policies { max_body_bytes: Some(1000), ..Default::default() };
        let settings = Settings { max_body_bytes: Some(100), ..Settings::default() };
        let gw = gateway(settings, up.url(), vec![with_policies("v1", "/api", limited), plain("v2", "/default")]).await;

        // Only the head is sent: the answer cannot have waited for the body.
        let answers = exchange(gw.proxy, b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n").await;
        assert_eq!((answers[0].status, answers[0].problem_type().as_str()), (413, "body-too-large"));
        assert_eq!(answers[0].header("connection"), Some("close"));
        // Nor is the client asked to send it.
        let answers = exchange(
            gw.proxy,
            b"POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
        )
        .await;
        assert_eq!(answers.iter().map(|a| a.status).collect::<Vec<_>>(), [413], "no 100 Continue first");
        // The listener's default applies to versions without a limit of their own.
        let answers = exchange(gw.proxy, b"POST /default/x HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n").await;
        assert_eq!(answers[0].status, 413);
        assert_eq!(up.count(), 0);

        let within = format!(
            "POST /api/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{}",
            "a".repeat(1000)
        );
        let answers = exchange(gw.proxy, within.as_bytes()).await;
        assert_eq!(answers[0].status, 200);
        let seen: Value = serde_json::from_slice(&answers[0].body).unwrap();
        assert_eq!(seen["body_len"], 1000);
    }

    #[tokio::test]
    async fn chunked_bodies_are_cut_off_at_the_limit_with_413() {
        let up = Counter::start().await;
        let limited = Policies { max_body_bytes: Some(1000), ..Default::default() };
        let gw = gateway(Settings::default(), up.url(), vec![with_policies("v1", "/api", limited)]).await;
        let chunk = format!("258\r\n{}\r\n", "c".repeat(600));
        let request =
            format!("POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n");
        let answers = exchange(gw.proxy, request.as_bytes()).await;
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert_eq!((answers[0].status, answers[0].problem_type().as_str()), (413, "body-too-large"));

        // A chunked body within the limit streams through whole.
        let request = format!(
            "POST /api/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{chunk}0\r\n\r\n"
        );
        let answers = exchange(gw.proxy, request.as_bytes()).await;
        assert_eq!(answers[0].status, 200);
        let seen: Value = serde_json::from_slice(&answers[0].body).unwrap();
        assert_eq!(seen["body_len"], 600);
    }

    fn quick_timeouts() -> Settings {
        Settings {
            header_read_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(600),
            ..Settings::default()
        }
    }

    #[tokio::test]
    async fn slow_heads_get_408_and_silent_connections_are_closed() {
        let up = Counter::start().await;
        let gw = gateway(quick_timeouts(), up.url(), vec![plain("v1", "/api")]).await;
        let started = Instant::now();
        let answers = exchange(gw.proxy, b"GET /api/x HTTP/1.1\r\nHost: x\r\nX-Slow: 1").await;
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert_eq!((answers[0].status, answers[0].problem_type().as_str()), (408, "request-timeout"));
        assert!(started.elapsed() >= Duration::from_millis(250), "answered before the timeout");

        // A connection that never says anything is closed without an answer.
        let answers = exchange(gw.proxy, b"").await;
        assert!(answers.is_empty(), "{answers:?}");
        assert_eq!(up.count(), 0);

        // Others are served meanwhile.
        let mut slow = TcpStream::connect(gw.proxy).await.unwrap();
        slow.write_all(b"GET /api/x HTTP/1.1\r\n").await.unwrap();
        let answers = exchange(gw.proxy, b"GET /api/y HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert_eq!(answers[0].status, 200);
        assert_eq!(read_until_closed(&mut slow).await[0].status, 408);
    }

    #[tokio::test]
    async fn idle_keep_alive_connections_are_closed_but_busy_ones_are_not() {
        let echo = EchoServer::start("a").await;
        let gw = TestGateway::start_with(quick_timeouts()).await;
        gw.publish(1, simple(&echo)).await;

        let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
        let mut buf = Vec::new();
        stream.write_all(b"GET /pets/v1/a HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        assert_eq!(read_answer(&mut stream, &mut buf).await.status, 200);
        // The connection stays usable while it is not idle for long…
        stream.write_all(b"GET /pets/v1/b HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        assert_eq!(read_answer(&mut stream, &mut buf).await.status, 200);
        // …and is closed, without an answer, once it is.
        let idle_from = Instant::now();
        assert!(read_until_closed(&mut stream).await.is_empty());
        assert!(idle_from.elapsed() >= Duration::from_millis(500), "closed after {:?}", idle_from.elapsed());

        // A request in flight for longer than the idle timeout keeps its connection.
        let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
        stream.write_all(b"GET /pets/v1/wait HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        echo.wait_for_arrival().await;
        tokio::time::sleep(Duration::from_millis(900)).await;
        echo.release_one();
        let mut buf = Vec::new();
        assert_eq!(read_answer(&mut stream, &mut buf).await.status, 200);
    }

    #[tokio::test]
    async fn idle_http2_connections_are_sent_away() {
        let echo = EchoServer::start("a").await;
        let gw = TestGateway::start_with(quick_timeouts()).await;
        gw.publish(1, simple(&echo)).await;
        let stream = TcpStream::connect(gw.proxy).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        let conn = tokio::spawn(conn);
        let request = http::Request::get(gw.url("/pets/v1/x")).body(http_body_util::Empty::<Bytes>::new()).unwrap();
        assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
        // The server ends the connection (GOAWAY) once it has been idle.
        tokio::time::timeout(Duration::from_secs(5), conn).await.expect("the connection stayed open").unwrap().unwrap();
    }

    #[tokio::test]
    async fn forwarding_headers_are_believed_only_from_trusted_proxies() {
        let up = Counter::start().await;
        let deny =
            Policies { ip: Some(IpRules { allow: vec![], deny: vec!["203.0.113.0/24".into()] }), ..Default::default() };
        let trusted = Settings { trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()], ..Settings::default() };
        let gw = gateway(trusted, up.url(), vec![with_policies("v1", "/api", deny)]).await;
        let send = |xff: &'static str| {
            gw.http
                .get(gw.url("/api/x"))
                .header("x-forwarded-for", xff)
                .header("x-forwarded-proto", "https")
                .header("forwarded", format!("for={xff};proto=https"))
                .send()
        };
        let seen = echoed(send("198.51.100.1").await.unwrap()).await;
        let h = &seen["headers"];
        assert_eq!(h["x-forwarded-for"], "198.51.100.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https", "as the trusted proxy saw it");
        assert_eq!(
            h["forwarded"],
            format!("for=198.51.100.1;proto=https, for=127.0.0.1;host=\"{}\";proto=http", gw.proxy)
        );
        // The client behind the trusted proxy is the one the IP rules judge.
        problem(send("203.0.113.9").await.unwrap(), 403, "ip-denied").await;

        // From an untrusted peer the same headers are replaced, and cannot dodge a rule.
        let untrusted = gateway(Settings::default(), up.url(), vec![plain("v1", "/api")]).await;
        let response = untrusted
            .http
            .get(untrusted.url("/api/x"))
            .header("x-forwarded-for", "198.51.100.1")
            .header("x-forwarded-proto", "https")
            .header("x-real-ip", "198.51.100.1")
            .header("forwarded", "for=198.51.100.1")
            .send()
            .await
            .unwrap();
        let seen = echoed(response).await;
        let h = &seen["headers"];
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["forwarded"], format!("for=127.0.0.1;host=\"{}\";proto=http", untrusted.proxy));
        assert!(h.get("x-real-ip").is_none());
    }

    #[tokio::test]
    async fn trace_context_is_propagated_or_started() {
        let up = Counter::start().await;
        let gw = gateway(Settings::default(), up.url(), vec![plain("v1", "/api")]).await;
        let valid = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let traced = |value: Option<&'static str>| {
            let mut req = gw.http.get(gw.url("/api/x")).header("tracestate", "vendor=1");
            if let Some(value) = value {
                req = req.header("traceparent", value);
            }
            req.send()
        };
        let seen = echoed(traced(Some(valid)).await.unwrap()).await;
        assert_eq!(
            (seen["headers"]["traceparent"].as_str(), seen["headers"]["tracestate"].as_str()),
            (Some(valid), Some("vendor=1"))
        );
        let mut started = Vec::new();
        for value in [None, Some("00-00000000000000000000000000000000-b7ad6b7169203331-01"), Some("nonsense")] {
            let seen = echoed(traced(value).await.unwrap()).await;
            let traceparent = seen["headers"]["traceparent"].as_str().unwrap().to_owned();
            let parts: Vec<&str> = traceparent.split('-').collect();
            assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [2, 32, 16, 2], "{traceparent}");
            assert!(parts[1].bytes().any(|b| b != b'0') && parts[2].bytes().any(|b| b != b'0'), "{traceparent}");
            assert!(seen["headers"].get("tracestate").is_none(), "tracestate of another trace is dropped");
            started.push(parts[1].to_owned());
        }
        started.dedup();
        assert_eq!(started.len(), 3, "every new trace has its own id");
    }

    /// The key and answer of RFC 6455's sample handshake.
    const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

    /// A WebSocket echo server speaking raw bytes: it completes the handshake (for
    /// the sample key only), then sends every text frame back. The request heads it
    /// received are sent on the channel.
    async fn websocket_echo() -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let mut byte = [0u8; 1];
                        if stream.read_exact(&mut byte).await.is_err() {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
                    let _ = tx.send(head.clone());
                    if !head.contains(&format!("sec-websocket-key: {}", WS_KEY.to_ascii_lowercase())) {
                        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
                        return;
                    }
                    let answer = format!(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                         Sec-WebSocket-Accept: {WS_ACCEPT}\r\n\r\n"
                    );
                    stream.write_all(answer.as_bytes()).await.unwrap();
                    loop {
                        let mut frame = [0u8; 2];
                        if stream.read_exact(&mut frame).await.is_err() {
                            return;
                        }
                        let len = usize::from(frame[1] & 0x7f);
                        let mut mask = [0u8; 4];
                        stream.read_exact(&mut mask).await.unwrap();
                        let mut payload = vec![0u8; len];
                        stream.read_exact(&mut payload).await.unwrap();
                        for (i, b) in payload.iter_mut().enumerate() {
                            *b ^= mask[i % 4];
                        }
                        let mut echo = vec![frame[0], len as u8];
                        echo.extend_from_slice(&payload);
                        stream.write_all(&echo).await.unwrap();
                        if frame[0] & 0x0f == 0x8 {
                            return;
                        }
                    }
                });
            }
        });
        (addr, rx)
    }

    /// A masked client frame (RFC 6455 §5.2) with a short payload.
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        let mut frame = vec![0x80 | opcode, 0x80 | payload.len() as u8];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        frame
    }

    #[tokio::test]
    async fn websocket_messages_round_trip_through_the_gateway() {
        let (ws, mut heads) = websocket_echo().await;
        let gw = TestGateway::start().await;
        gw.publish(
            1,
            content(
                vec![version("ws", "/chat", VersionState::Published, Some("u"), vec![route("all", "/*")])],
                vec![upstream("u", &[(format!("http://{ws}"), 1)])],
            ),
        )
        .await;
        let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
        let handshake = format!(
            "GET /chat/room?x=1 HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(handshake.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        let switched = read_answer(&mut stream, &mut buf).await;
        assert_eq!(switched.status, 101, "{switched:?}");
        assert_eq!(switched.header("upgrade"), Some("websocket"));
        assert_eq!(switched.header("connection"), Some("upgrade"));
        assert_eq!(switched.header("sec-websocket-accept"), Some(WS_ACCEPT.to_ascii_lowercase().as_str()));
        let upstream_head = heads.recv().await.unwrap();
        assert!(upstream_head.starts_with("get /room?x=1 http/1.1\r\n"), "{upstream_head}");
        for expected in
            ["upgrade: websocket", "connection: upgrade", "sec-websocket-version: 13", "x-forwarded-for: 127.0.0.1"]
        {
            assert!(upstream_head.contains(expected), "{expected} missing: {upstream_head}");
        }

        for message in [&b"hello"[..], b"through the gateway"] {
            stream.write_all(&client_frame(0x1, message)).await.unwrap();
            let mut echo = vec![0u8; 2 + message.len()];
            tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echo)).await.unwrap().unwrap();
            assert_eq!(echo[0], 0x81);
            assert_eq!(&echo[2..], message);
        }
        stream.write_all(&client_frame(0x8, b"")).await.unwrap();
        let mut close = [0u8; 2];
        stream.read_exact(&mut close).await.unwrap();
        assert_eq!(close, [0x88, 0]);
    }

    #[tokio::test]
    async fn refused_upgrades_close_the_connection() {
        let (ws, _heads) = websocket_echo().await;
        let gw = TestGateway::start().await;
        gw.publish(
            1,
            content(
                vec![version("ws", "/chat", VersionState::Published, Some("u"), vec![route("all", "/*")])],
                vec![upstream("u", &[(format!("http://{ws}"), 1)])],
            ),
        )
        .await;
        // A wrong key: the upstream answers 400, and no bytes after it are read as HTTP.
        let answers = exchange(
            gw.proxy,
            b"GET /chat/room HTTP/1.1\r\nHost: gw\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: d3Jvbmc=\r\nSec-WebSocket-Version: 13\r\n\r\nGET /chat/again HTTP/1.1\r\nHost: gw\r\n\r\n",
        )
        .await;
        assert_eq!(answers.iter().map(|a| a.status).collect::<Vec<_>>(), [400], "{answers:?}");
        assert_eq!(answers[0].header("connection"), Some("close"));
    }
}

// ==== reliability ====

/// Surviving trouble: the last-known-good snapshot file, slow clients, snapshot
/// swaps under load, streaming with flat memory, and draining on shutdown.
mod reliability {
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use turnpike_gateway::LastKnownGood;

    use super::*;

    /// A gateway serving `store` (built by the test, e.g. with a last-known-good
    /// file); its bus has delivered nothing yet.
    async fn start_on(store: ConfigStore, settings: Settings) -> TestGateway {
        let proxy_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let status_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = proxy_listener.local_addr().unwrap();
        let status = status_listener.local_addr().unwrap();
        let bus = InProcessBus::new();
        tokio::spawn(store.clone().follow(bus.subscribe()));
        let (stop, stopped) = oneshot::channel::<()>();
        let proxy_task = tokio::spawn(serve_proxy(proxy_listener, store.clone(), settings, async {
            let _ = stopped.await;
        }));
        tokio::spawn(serve_status(status_listener, store.clone(), std::future::pending()));
        TestGateway { proxy, status, bus, store, stop: Some(stop), proxy_task, http: reqwest::Client::new() }
    }

    fn status_doc(version: u64, checksum: &str, source: &str) -> Value {
        json!({
            "ready": true,
            "config_version": version,
            "config_checksum": checksum,
            "source": source,
            "degraded": source == "last-known-good",
        })
    }

    async fn saved(lkg: &LastKnownGood, version: u64) {
        tokio::time::timeout(Duration::from_secs(10), lkg.wait_saved(version))
            .await
            .unwrap_or_else(|_| panic!("snapshot {version} was not saved within 10 s"));
    }

    // ---- last-known-good snapshot

    #[tokio::test]
    async fn a_gateway_serves_its_last_known_good_file_before_the_bus_speaks() {
        let (a, b) = (EchoServer::start("a").await, EchoServer::start("b").await);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway-snapshot.json");
        // What an earlier run of the gateway saved.
        let earlier = Snapshot::compile(4, simple(&a), Utc::now());
        LastKnownGood::new(&path).save(&earlier).unwrap();

        let lkg = LastKnownGood::new(&path);
        let gw = start_on(ConfigStore::new().with_last_known_good(lkg.clone()), Settings::default()).await;
        assert_eq!(gw.status("/status/ready").await.0, 200, "the file alone makes the gateway ready");
        assert_eq!(gw.status("/status").await, (200, status_doc(4, &earlier.checksum, "last-known-good")));
        assert_eq!(echoed(gw.get("/pets/v1/x").await).await["upstream"], "a");

        // The control plane comes back with the same snapshot: confirmed, not degraded.
        assert_eq!(gw.store.apply(&earlier), Ok(()));
        assert_eq!(gw.status("/status").await, (200, status_doc(4, &earlier.checksum, "bus")));

        // Newer snapshots from the bus are applied and become the file.
        gw.publish(5, simple(&b)).await;
        saved(&lkg, 5).await;
        let on_disk = lkg.load().unwrap();
        assert_eq!((on_disk.version, &on_disk.content), (5, &simple(&b)));
        assert_eq!(echoed(gw.get("/pets/v1/x").await).await["upstream"], "b");
        assert_eq!(gw.status("/status").await.1["source"], "bus");
    }

    #[tokio::test]
    async fn a_damaged_file_is_ignored_and_the_gateway_waits_for_the_bus() {
        let echo = EchoServer::start("a").await;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway-snapshot.json");
        LastKnownGood::new(&path).save(&Snapshot::compile(9, simple(&echo), Utc::now())).unwrap();
        let lkg = LastKnownGood::new(&path);
        let whole = std::fs::read(lkg.path()).unwrap();
        // Cut short, as by a disk filling up under a writer that did not sync.
        std::fs::write(lkg.path(), &whole[..whole.len() / 2]).unwrap();

        let gw = start_on(ConfigStore::new().with_last_known_good(lkg.clone()), Settings::default()).await;
        assert_eq!(gw.status("/status/ready").await.0, 503, "a damaged file does not make the gateway ready");
        assert_eq!(
            gw.status("/status").await.1,
            json!({"ready": false, "config_version": null, "config_checksum": null, "source": null, "degraded": false})
        );
        problem(gw.get("/pets/v1/x").await, 503, "no-config").await;

        gw.publish(2, simple(&echo)).await;
        echoed(gw.get("/pets/v1/x").await).await;
        saved(&lkg, 2).await;
        assert_eq!(lkg.load().unwrap().version, 2, "the damaged file was replaced");
    }

    #[tokio::test]
    async fn the_bus_overrules_the_file_unless_it_offers_an_empty_older_snapshot() {
        let (a, b) = (EchoServer::start("a").await, EchoServer::start("b").await);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway-snapshot.json");
        let good = Snapshot::compile(7, simple(&a), Utc::now());
        LastKnownGood::new(&path).save(&good).unwrap();
        let lkg = LastKnownGood::new(&path);
        let gw = start_on(ConfigStore::new().with_last_known_good(lkg.clone()), Settings::default()).await;

        // An emptied bus, or a control plane on a fresh database: refused, the
        // file's configuration stays and the gateway stays degraded.
        let empty = |version| Snapshot::compile(version, SnapshotContent::default(), Utc::now());
        assert_eq!(gw.store.apply(&empty(1)), Err(ApplyError::EmptyBehindFile { offered: 1, current: 7 }));
        assert_eq!(gw.store.apply(&empty(7)), Err(ApplyError::EmptyBehindFile { offered: 7, current: 7 }));
        assert_eq!(gw.status("/status").await.1, status_doc(7, &good.checksum, "last-known-good"));
        assert_eq!(echoed(gw.get("/pets/v1/x").await).await["upstream"], "a");

        // A control plane restored from an older backup is the authority: followed.
        let restored = Snapshot::compile(3, simple(&b), Utc::now());
        assert_eq!(gw.store.apply(&restored), Ok(()));
        assert_eq!(gw.status("/status").await.1, status_doc(3, &restored.checksum, "bus"));
        assert_eq!(echoed(gw.get("/pets/v1/x").await).await["upstream"], "b");
        saved(&lkg, 3).await;
        assert_eq!(lkg.load().unwrap().version, 3);

        // From then on only newer snapshots apply, empty or not.
        let older = Snapshot::compile(2, simple(&a), Utc::now());
        assert_eq!(gw.store.apply(&older), Err(ApplyError::Stale { offered: 2, current: 3 }));
        assert_eq!(gw.store.apply(&empty(2)), Err(ApplyError::Stale { offered: 2, current: 3 }));
        // Removing the last API is a legitimate change: a newer empty snapshot applies.
        assert_eq!(gw.store.apply(&empty(4)), Ok(()));
        problem(gw.get("/pets/v1/x").await, 404, "no-route").await;
        saved(&lkg, 4).await;
        assert!(lkg.load().unwrap().content.versions.is_empty());
    }

    // ---- slow clients

    /// Reads one HTTP/1.1 response until the gateway closes the connection.
    async fn read_closing_response(stream: &mut TcpStream) -> (u16, String, Vec<u8>) {
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf))
            .await
            .expect("the gateway kept the connection open")
            .unwrap();
        let split = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
        let head = String::from_utf8(buf[..split].to_vec()).unwrap().to_ascii_lowercase();
        let mut body = buf[split + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        (head[9..12].parse().unwrap(), head, body)
    }

    #[tokio::test]
    async fn a_request_body_that_stalls_is_cut_off_with_408() {
        let echo = EchoServer::start("a").await;
        let timeout = Duration::from_millis(400);
        let gw = start_on(ConfigStore::new(), Settings { body_read_timeout: timeout, ..Settings::default() }).await;
        gw.publish(1, simple(&echo)).await;

        for framing in ["Content-Length: 100", "Transfer-Encoding: chunked"] {
            let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
            let first = if framing.starts_with("Content") { "0123456789" } else { "a\r\n0123456789\r\n" };
            let request = format!("POST /pets/v1/upload HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n{first}");
            stream.write_all(request.as_bytes()).await.unwrap();
            let started = Instant::now();
            let (status, head, body) = read_closing_response(&mut stream).await;
            let waited = started.elapsed();
            assert_eq!(status, 408, "{framing}: {head}");
            assert!(head.contains("connection: close"), "{head}");
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["type"], "urn:turnpike:problem:body-timeout");
            assert!(waited >= timeout && waited < Duration::from_secs(5), "{framing}: cut off after {waited:?}");
        }
        // Other clients were served all along.
        echoed(gw.get("/pets/v1/x").await).await;
    }

    #[tokio::test]
    async fn a_slow_but_steady_request_body_is_not_cut_off() {
        let echo = EchoServer::start("a").await;
        let timeout = Duration::from_millis(400);
        let gw = start_on(ConfigStore::new(), Settings { body_read_timeout: timeout, ..Settings::default() }).await;
        gw.publish(1, simple(&echo)).await;

        let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
        stream
            .write_all(
                b"POST /pets/v1/upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
            )
            .await
            .unwrap();
        let started = Instant::now();
        // Six pieces, each well within the timeout, together well beyond it.
        for piece in ["one ", "two ", "three ", "four ", "five ", "six"] {
            tokio::time::sleep(Duration::from_millis(150)).await;
            stream.write_all(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes()).await.unwrap();
        }
        stream.write_all(b"0\r\n\r\n").await.unwrap();
        let (status, head, body) = read_closing_response(&mut stream).await;
        assert!(started.elapsed() > timeout);
        assert_eq!(status, 200, "{head}");
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["body"], "one two three four five six");
    }

    /// A response body of `limit` bytes made on demand; when dropped (the exchange
    /// ended or was abandoned) it reports how much of it was produced.
    struct Endless {
        chunk: Bytes,
        produced: u64,
        limit: u64,
        dropped: Option<oneshot::Sender<u64>>,
    }

    impl hyper::body::Body for Endless {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if self.produced >= self.limit {
                return Poll::Ready(None);
            }
            self.produced += self.chunk.len() as u64;
            Poll::Ready(Some(Ok(Frame::data(self.chunk.clone()))))
        }
    }

    impl Drop for Endless {
        fn drop(&mut self) {
            if let Some(tx) = self.dropped.take() {
                let _ = tx.send(self.produced);
            }
        }
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_disconnected_and_the_upstream_released() {
        const LIMIT: u64 = 1 << 30;
        let (dropped_tx, dropped_rx) = oneshot::channel();
        let dropped_tx = Arc::new(std::sync::Mutex::new(Some(dropped_tx)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream_url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(move || {
            let dropped = dropped_tx.lock().unwrap().take();
            async move {
                let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                Body::new(Endless { chunk, produced: 0, limit: LIMIT, dropped })
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let timeout = Duration::from_millis(400);
        let gw = start_on(ConfigStore::new(), Settings { send_timeout: timeout, ..Settings::default() }).await;
        gw.publish(
            1,
            content(
                vec![version("v1", "/big", VersionState::Published, Some("u"), vec![route("all", "/*")])],
                vec![upstream("u", &[(upstream_url, 1)])],
            ),
        )
        .await;

        // A client with a small window that asks for a gibibyte and reads none of it.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut client = socket.connect(gw.proxy).await.unwrap();
        client.write_all(b"GET /big/download HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let produced = tokio::time::timeout(Duration::from_secs(20), dropped_rx)
            .await
            .expect("the upstream's response was still held 20 s after the client stopped reading")
            .unwrap();
        assert!(produced < LIMIT / 8, "the gateway kept reading the upstream: {produced} bytes");
        // And the client's connection is gone: what was buffered, then the end.
        let mut sink = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut sink)).await;
        assert!(end.is_ok(), "the connection to the slow reader stayed open");
        assert!((sink.len() as u64) < produced + 4096, "more arrived than the upstream produced");
    }

    // ---- snapshot swaps under load

    /// Version `n` of a configuration that keeps `/pets/v1/items/7` valid while
    /// changing everything else: even versions go to `a`, odd ones to `b`; the route
    /// alternates between a template and a catch-all; every request is stamped with
    /// the version it ran on.
    fn swapping(n: u64, a: &EchoServer, b: &EchoServer) -> SnapshotContent {
        let target = if n.is_multiple_of(2) { a.url() } else { b.url() };
        let route = if n.is_multiple_of(3) { route("item", "/items/{id}") } else { route("all", "/*") };
        let mut v = version("v1", "/pets/v1", VersionState::Published, Some("u"), vec![route]);
        v.policies.request_headers.set.insert("x-config-version".into(), n.to_string());
        content(vec![v], vec![upstream("u", &[(target, 1)])])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshot_swaps_under_load_fail_no_request_and_each_runs_on_one_configuration() {
        const CLIENTS: usize = 8;
        const REQUESTS: usize = 200;
        let (a, b) = (Arc::new(EchoServer::start("a").await), Arc::new(EchoServer::start("b").await));
        let gw = Arc::new(TestGateway::start().await);
        gw.publish(1, swapping(1, &a, &b)).await;

        let done = Arc::new(AtomicBool::new(false));
        let publisher = {
            let (gw, a, b, done) = (gw.clone(), a.clone(), b.clone(), done.clone());
            tokio::spawn(async move {
                let mut n = 2;
                while !done.load(Ordering::SeqCst) && n < 20_000 {
                    gw.bus.publish(Arc::new(Snapshot::compile(n, swapping(n, &a, &b), Utc::now()))).await.unwrap();
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                n - 2
            })
        };
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (http, url) = (gw.http.clone(), gw.url("/pets/v1/items/7"));
                tokio::spawn(async move {
                    let mut seen = Vec::with_capacity(REQUESTS);
                    for _ in 0..REQUESTS {
                        let response = http.get(&url).send().await.expect("the gateway answers");
                        assert_eq!(response.status(), 200, "a request failed during a swap");
                        let body: Value = response.json().await.unwrap();
                        let n: u64 = body["headers"]["x-config-version"].as_str().unwrap().parse().unwrap();
                        let expected = if n.is_multiple_of(2) { "a" } else { "b" };
                        assert_eq!(body["upstream"], expected, "version {n}'s header with another's upstream");
                        assert_eq!(body["path"], "/items/7");
                        seen.push(n);
                    }
                    seen
                })
            })
            .collect();
        let mut versions = BTreeSet::new();
        let mut answered = 0;
        for client in clients {
            let seen = client.await.unwrap();
            answered += seen.len();
            versions.extend(seen);
        }
        done.store(true, Ordering::SeqCst);
        let swaps = publisher.await.unwrap();
        assert_eq!(answered, CLIENTS * REQUESTS);
        assert!(swaps >= 20, "only {swaps} swaps happened during the load");
        assert!(versions.len() >= 10, "requests ran on only {} configurations", versions.len());
    }

    // ---- streaming with flat memory

    const FLAT_MEMORY_CHILD: &str = "reliability::flat_memory_stream_in_own_process";
    /// Streamed each way.
    const STREAM_BYTES: u64 = 256 << 20;
    /// How much the process may grow while streaming.
    const MAX_GROWTH: u64 = 64 << 20;

    /// Runs [`flat_memory_stream_in_own_process`] alone in a fresh process, so that no
    /// other test's memory counts.
    #[tokio::test]
    async fn a_quarter_gibibyte_each_way_streams_through_with_flat_memory() {
        let mut command = tokio::process::Command::new(std::env::current_exe().unwrap());
        command
            .args([FLAT_MEMORY_CHILD, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        let output = tokio::time::timeout(Duration::from_secs(180), command.output())
            .await
            .expect("streaming took longer than 180 s")
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert!(output.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
        assert!(stdout.contains("streamed 268435456 bytes each way"), "the child did not run:\n{stdout}");
    }

    /// Word-wise digest of a byte stream, whatever its pieces.
    #[derive(Default)]
    struct Digest {
        len: u64,
        state: u64,
        carry: [u8; 8],
        carried: usize,
    }

    impl Digest {
        fn update(&mut self, mut data: &[u8]) {
            self.len += data.len() as u64;
            if self.carried > 0 {
                let take = (8 - self.carried).min(data.len());
                self.carry[self.carried..self.carried + take].copy_from_slice(&data[..take]);
                self.carried += take;
                data = &data[take..];
                if self.carried < 8 {
                    return;
                }
                self.word(u64::from_le_bytes(self.carry));
                self.carried = 0;
            }
            let mut words = data.chunks_exact(8);
            for word in &mut words {
                self.word(u64::from_le_bytes(word.try_into().unwrap()));
            }
            let rest = words.remainder();
            self.carry[..rest.len()].copy_from_slice(rest);
            self.carried = rest.len();
        }

        fn word(&mut self, word: u64) {
            self.state = (self.state.rotate_left(7) ^ word).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }

        fn finish(mut self) -> (u64, u64) {
            let mut last = [0u8; 8];
            last[..self.carried].copy_from_slice(&self.carry[..self.carried]);
            self.word(u64::from_le_bytes(last) ^ self.carried as u64);
            (self.len, self.state)
        }
    }

    /// An upload of `left` bytes made of shifting windows over a pseudo-random
    /// pattern, digested as it is sent.
    struct Generated {
        pattern: Bytes,
        left: u64,
        piece: u64,
        sent: Arc<std::sync::Mutex<Digest>>,
    }

    impl hyper::body::Body for Generated {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            let size = self.left.min(64 * 1024) as usize;
            let start = (self.piece * 4099 % (1 << 20)) as usize;
            let chunk = self.pattern.slice(start..start + size);
            self.sent.lock().unwrap().update(&chunk);
            self.left -= size as u64;
            self.piece += 1;
            Poll::Ready(Some(Ok(Frame::data(chunk))))
        }

        fn size_hint(&self) -> hyper::body::SizeHint {
            hyper::body::SizeHint::with_exact(self.left)
        }
    }

    /// A `kB` figure of this process from `/proc/self/status`, in bytes.
    fn proc_status(field: &str) -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "run in its own process by a_quarter_gibibyte_each_way_streams_through_with_flat_memory"]
    async fn flat_memory_stream_in_own_process() {
        let echo = EchoServer::start("a").await;
        let gw = TestGateway::start().await;
        gw.publish(1, simple(&echo)).await;
        let client = Client::builder(TokioExecutor::new()).build_http::<Generated>();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let pattern: Vec<u8> = (0..(1 << 20) + 64 * 1024)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let pattern = Bytes::from(pattern);

        // Warm up (connections, pools, buffers), then take the baseline.
        let upload = |bytes: u64| {
            let sent = Arc::new(std::sync::Mutex::new(Digest::default()));
            let body = Generated { pattern: pattern.clone(), left: bytes, piece: 0, sent: sent.clone() };
            let request = http::Request::post(gw.url("/pets/v1/stream")).header("x-echo-stream", "1").body(body);
            (client.request(request.unwrap()), sent)
        };
        for _ in 0..2 {
            let (response, _) = upload(8 << 20);
            response.await.unwrap().into_body().collect().await.unwrap();
        }
        let baseline = proc_status("VmRSS:");

        let started = Instant::now();
        let (response, sent) = upload(STREAM_BYTES);
        let response = response.await.unwrap();
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let mut received = Digest::default();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                received.update(&data);
            }
        }
        let elapsed = started.elapsed();
        let peak = proc_status("VmHWM:");
        let sent = std::mem::take(&mut *sent.lock().unwrap()).finish();
        let received = received.finish();
        assert_eq!(sent.0, STREAM_BYTES, "the whole upload was sent");
        assert_eq!(received, sent, "the download differs from the upload (length, digest)");
        // The peak since start: at least the largest size reached while streaming.
        let growth = peak.saturating_sub(baseline);
        println!(
            "streamed {STREAM_BYTES} bytes each way in {elapsed:?}; RSS {} MiB before, peak {} MiB",
            baseline >> 20,
            peak >> 20
        );
        assert!(growth < MAX_GROWTH, "memory grew by {} MiB while streaming", growth >> 20);
    }

    // ---- graceful shutdown

    /// Reads one response with a `Content-Length` body off a kept-alive connection.
    async fn read_one(stream: &mut TcpStream) -> u16 {
        let mut buf = Vec::new();
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if buf.len() >= end + 4 + len {
                    return head[9..12].parse().unwrap();
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await.unwrap().unwrap();
            assert!(n > 0, "closed before a full response");
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    #[tokio::test]
    async fn shutdown_drains_a_request_still_streaming_closes_idle_connections_and_refuses_new_ones() {
        let echo = EchoServer::start("a").await;
        let mut gw = TestGateway::start().await;
        gw.publish(1, simple(&echo)).await;
        let mut idle = TcpStream::connect(gw.proxy).await.unwrap();
        idle.write_all(b"GET /pets/v1/x HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        assert_eq!(read_one(&mut idle).await, 200);

        // A request whose body is still being sent, echoed back piece by piece.
        let client = Client::builder(TokioExecutor::new()).build_http::<ChannelBody>();
        let (tx, rx) = mpsc::channel(1);
        let request =
            http::Request::post(gw.url("/pets/v1/duplex")).header("x-echo-stream", "1").body(ChannelBody(rx)).unwrap();
        let sending = tokio::spawn(client.request(request));
        tx.send(Bytes::from(vec![b'a'; 16 * 1024])).await.unwrap();
        let mut body = sending.await.unwrap().unwrap().into_body();
        assert!(read_exactly(&mut body, 16 * 1024).await.iter().all(|b| *b == b'a'));

        gw.stop.take().unwrap().send(()).unwrap();
        // The idle connection is closed at once: shutdown does not wait for it.
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
        assert!(closed.is_ok_and(|r| r.is_ok()) && rest.is_empty(), "the idle connection stayed open");
        // The listener was closed before that: new connections are refused.
        assert!(TcpStream::connect(gw.proxy).await.is_err(), "a new connection was accepted while draining");
        assert!(!gw.proxy_task.is_finished(), "the proxy stopped with a request in flight");

        // The request in flight goes on to its end.
        for fill in [b'b', b'c'] {
            tx.send(Bytes::from(vec![fill; 16 * 1024])).await.unwrap();
            let piece = tokio::time::timeout(Duration::from_secs(5), read_exactly(&mut body, 16 * 1024)).await.unwrap();
            assert!(piece.iter().all(|b| *b == fill), "piece {} came back altered", fill as char);
        }
        drop(tx);
        assert!(body.frame().await.is_none_or(|f| f.unwrap().is_trailers()), "the response ends normally");
        tokio::time::timeout(Duration::from_secs(5), &mut gw.proxy_task)
            .await
            .expect("the proxy did not return once the last request ended")
            .unwrap()
            .unwrap();
    }
}

// ==== versioning ====

mod versioning {
    //! Version selection by header and query parameter, and gRPC-style calls passed
    //! through to `h2c://` upstreams with their HTTP/2 trailers.

    use std::collections::VecDeque;

    use http::{HeaderMap, HeaderValue, Request, StatusCode};
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    use turnpike_domain::model::{VersionSelector, Versioning};
    use turnpike_domain::snapshot::SnapshotSelector;

    use super::*;

    fn selector(versioning: Versioning) -> SnapshotSelector {
        SnapshotSelector { api_id: "api".into(), api_slug: "pets".into(), versioning }
    }

    fn select(name: &str, default: Option<&str>) -> VersionSelector {
        VersionSelector { name: name.into(), base_path: "/pets".into(), default: default.map(Into::into) }
    }

    /// The pets API: v1 (published) to upstream `one`, v2 (published) to `two`, v0
    /// retired, each under its own base path, plus the given selector.
    fn pets(one: &EchoServer, two: &EchoServer, versioning: Versioning) -> SnapshotContent {
        let mut content = content(
            vec![
                version("v0", "/pets/v0", VersionState::Retired, Some("one"), vec![route("all", "/*")]),
                version("v1", "/pets/v1", VersionState::Published, Some("one"), vec![route("all", "/*")]),
                version("v2", "/pets/v2", VersionState::Published, Some("two"), vec![route("dogs", "/dogs/{id}")]),
            ],
            vec![upstream("one", &[(one.url(), 1)]), upstream("two", &[(two.url(), 1)])],
        );
        content.selectors = vec![selector(versioning)];
        content
    }

    async fn get_with(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let mut req = gw.http.get(gw.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.send().await.unwrap()
    }

    #[tokio::test]
    async fn a_header_picks_the_version_and_its_absence_the_default() {
        let (one, two) = (EchoServer::start("one").await, EchoServer::start("two").await);
        let gw = TestGateway::start().await;
        gw.publish(1, pets(&one, &two, Versioning::Header(select("API-Version", Some("v2"))))).await;

        let body = echoed(get_with(&gw, "/pets/dogs/7?x=1", &[("api-version", "v1")]).await).await;
        assert_eq!((body["upstream"].as_str(), body["path"].as_str()), (Some("one"), Some("/dogs/7")));
        assert_eq!(body["query"], "x=1");
        assert_eq!(body["headers"]["api-version"], "v1", "the selector header is passed on");
        let body = echoed(get_with(&gw, "/pets/dogs/7", &[("api-version", "v2")]).await).await;
        assert_eq!((body["upstream"].as_str(), body["path"].as_str()), (Some("two"), Some("/dogs/7")));
        let body = echoed(gw.get("/pets/dogs/8").await).await;
        assert_eq!((body["upstream"].as_str(), body["path"].as_str()), (Some("two"), Some("/dogs/8")), "default");

        // The chosen version's routes apply as under its own base path.
        problem(get_with(&gw, "/pets/cats", &[("api-version", "v2")]).await, 404, "no-route").await;
        // Each version's own base path keeps working, whatever the header says.
        let body = echoed(get_with(&gw, "/pets/v1/anything", &[("api-version", "v2")]).await).await;
        assert_eq!((body["upstream"].as_str(), body["path"].as_str()), (Some("one"), Some("/anything")));
    }

    #[tokio::test]
    async fn unknown_retired_and_ambiguous_labels_are_refused() {
        let (one, two) = (EchoServer::start("one").await, EchoServer::start("two").await);
        let gw = TestGateway::start().await;
        gw.publish(1, pets(&one, &two, Versioning::Header(select("api-version", None)))).await;

        problem(get_with(&gw, "/pets/dogs/7", &[("api-version", "v9")]).await, 404, "no-route").await;
        problem(gw.get("/pets/dogs/7").await, 404, "no-route").await;
        problem(get_with(&gw, "/pets/dogs/7", &[("api-version", "v0")]).await, 410, "version-retired").await;
        let ambiguous = gw.http.get(gw.url("/pets/dogs/7")).header("api-version", "v1").header("api-version", "v2");
        problem(ambiguous.send().await.unwrap(), 400, "malformed-request").await;
    }

    #[tokio::test]
    async fn a_query_parameter_picks_the_version_and_a_swap_changes_the_mode() {
        let (one, two) = (EchoServer::start("one").await, EchoServer::start("two").await);
        let gw = TestGateway::start().await;
        gw.publish(1, pets(&one, &two, Versioning::Query(select("version", Some("v1"))))).await;

        let body = echoed(gw.get("/pets/dogs/7?version=v2&a=b").await).await;
        assert_eq!((body["upstream"].as_str(), body["path"].as_str()), (Some("two"), Some("/dogs/7")));
        assert_eq!(body["query"], "version=v2&a=b", "the query is passed on as sent");
        let body = echoed(gw.get("/pets/x").await).await;
        assert_eq!((body["upstream"].as_str(), body["path"].as_str()), (Some("one"), Some("/x")), "default");
        let body = echoed(get_with(&gw, "/pets/x", &[("version", "v2")]).await).await;
        assert_eq!(body["upstream"], "one", "a header of that name is not the query parameter");
        problem(gw.get("/pets/x?version=v0").await, 410, "version-retired").await;
        problem(gw.get("/pets/x?version=v3").await, 404, "no-route").await;

        // Back to path versioning: the selector's base path is gone.
        gw.publish(2, pets(&one, &two, Versioning::Path)).await;
        problem(gw.get("/pets/x?version=v1").await, 404, "no-route").await;
        echoed(gw.get("/pets/v1/x").await).await;
    }

    // ---- gRPC-style calls to an h2c upstream

    /// A response body of frames given up front.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl hyper::body::Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    /// A response body whose frames the test sends one by one.
    struct FrameChannel(mpsc::Receiver<Frame<Bytes>>);

    impl hyper::body::Body for FrameChannel {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.0.poll_recv(cx).map(|frame| frame.map(Ok))
        }
    }

    type GrpcBody = http_body_util::Either<Frames, FrameChannel>;

    /// A gRPC-style server speaking only HTTP/2 (prior knowledge): `/echo.Echo/Say`
    /// answers the request's message back followed by trailers `grpc-status: 0`;
    /// `/echo.Echo/Fail` answers trailers-only with `grpc-status: 13`;
    /// `/echo.Echo/Stream` hands the test a sender for the response frames; calls to
    /// `.../Check` are announced. Every answer carries what the server saw of `te`
    /// and the path.
    struct GrpcServer {
        addr: SocketAddr,
        streams: Mutex<mpsc::UnboundedReceiver<mpsc::Sender<Frame<Bytes>>>>,
        checks: Mutex<mpsc::UnboundedReceiver<()>>,
    }

    #[derive(Clone)]
    struct GrpcState {
        streams: mpsc::UnboundedSender<mpsc::Sender<Frame<Bytes>>>,
        checks: mpsc::UnboundedSender<()>,
    }

    impl GrpcServer {
        async fn start() -> GrpcServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (streams_tx, streams) = mpsc::unbounded_channel();
            let (checks_tx, checks) = mpsc::unbounded_channel();
            let state = GrpcState { streams: streams_tx, checks: checks_tx };
            tokio::spawn(async move {
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let state = state.clone();
                    let service = hyper::service::service_fn(move |req| grpc_call(req, state.clone()));
                    tokio::spawn(
                        hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service),
                    );
                }
            });
            GrpcServer { addr, streams: Mutex::new(streams), checks: Mutex::new(checks) }
        }

        fn url(&self) -> String {
            format!("h2c://{}", self.addr)
        }
    }

    async fn grpc_call(req: Request<Incoming>, state: GrpcState) -> Result<http::Response<GrpcBody>, Infallible> {
        let seen_te = req.headers().get("te").cloned().unwrap_or(HeaderValue::from_static("none"));
        let path = HeaderValue::try_from(req.uri().path()).unwrap();
        let grpc = req.headers().get("content-type").is_some_and(|v| v == "application/grpc");
        let method = req.uri().path().rsplit('/').next().unwrap_or_default().to_owned();
        let message = req.into_body().collect().await.unwrap().to_bytes();
        let mut response = http::Response::builder()
            .header("content-type", "application/grpc")
            .header("x-seen-te", seen_te)
            .header("x-seen-path", path);
        let body = match (grpc, method.as_str()) {
            (true, "Say") => {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                trailers.insert("grpc-message", HeaderValue::from_static("ok"));
                GrpcBody::Left(Frames(VecDeque::from([Frame::data(message), Frame::trailers(trailers)])))
            }
            (true, "Stream") => {
                let (tx, rx) = mpsc::channel(1);
                state.streams.send(tx).unwrap();
                GrpcBody::Right(FrameChannel(rx))
            }
            (_, "Check") => {
                let _ = state.checks.send(());
                GrpcBody::Left(Frames(VecDeque::new()))
            }
            _ => {
                // Trailers-only: the status travels in the response head, which ends the stream.
                response = response.header("grpc-status", "13").header("grpc-message", "internal%20failure");
                GrpcBody::Left(Frames(VecDeque::new()))
            }
        };
        Ok(response.body(body).unwrap())
    }

    /// A length-prefixed gRPC message (uncompressed).
    fn grpc_message(payload: &[u8]) -> Bytes {
        let mut framed = vec![0];
        framed.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        framed.extend_from_slice(payload);
        Bytes::from(framed)
    }

    /// The gRPC server behind the gateway as the version `/rpc/v1`.
    async fn grpc_gateway(server: &GrpcServer) -> TestGateway {
        let gw = TestGateway::start().await;
        let content = content(
            vec![version("v1", "/rpc/v1", VersionState::Published, Some("g"), vec![route("all", "/*")])],
            vec![upstream("g", &[(server.url(), 1)])],
        );
        gw.publish(1, content).await;
        gw
    }

    /// An HTTP/2 (prior knowledge) client connection to the gateway.
    async fn h2_client(gw: &TestGateway) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
        let tcp = TcpStream::connect(gw.proxy).await.unwrap();
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(conn);
        send
    }

    fn grpc_request(gw: &TestGateway, method: &str, message: Bytes) -> Request<Full<Bytes>> {
        Request::post(format!("http://{}/rpc/v1/echo.Echo/{method}", gw.proxy))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(message))
            .unwrap()
    }

    #[tokio::test]
    async fn grpc_calls_reach_h2c_upstreams_and_their_trailers_come_back() {
        let server = GrpcServer::start().await;
        let gw = grpc_gateway(&server).await;
        let mut client = h2_client(&gw).await;
        let message = grpc_message(b"hello");
        let response = client.send_request(grpc_request(&gw, "Say", message.clone())).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.headers()["content-type"], "application/grpc");
        assert_eq!(response.headers()["x-seen-te"], "trailers", "gRPC servers require te: trailers");
        assert_eq!(response.headers()["x-seen-path"], "/echo.Echo/Say");
        assert!(response.headers().contains_key("x-request-id"));
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("the upstream's trailers arrive");
        assert_eq!(collected.to_bytes(), message);
        assert_eq!(trailers["grpc-status"], "0");
        assert_eq!(trailers["grpc-message"], "ok");

        // The same connection carries further calls.
        let again = client.send_request(grpc_request(&gw, "Say", grpc_message(b"again"))).await.unwrap();
        let collected = again.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    }

    #[tokio::test]
    async fn trailers_only_grpc_failures_pass_through_as_sent() {
        let server = GrpcServer::start().await;
        let gw = grpc_gateway(&server).await;
        let mut client = h2_client(&gw).await;
        let response = client.send_request(grpc_request(&gw, "Fail", grpc_message(b"x"))).await.unwrap();
        // A gRPC failure is an HTTP success: the gateway neither rewrites it nor counts it as an upstream error.
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "13");
        assert_eq!(response.headers()["grpc-message"], "internal%20failure");
        assert!(hyper::body::Body::is_end_stream(response.body()), "trailers-only: the head ends the stream");
        let collected = response.into_body().collect().await.unwrap();
        assert!(collected.trailers().is_none());
        assert!(collected.to_bytes().is_empty());
        let targets = gw.store.upstreams().targets();
        assert!(targets.iter().all(|t| t.circuit == "closed" && !t.ejected), "{targets:?}");
    }

    #[tokio::test]
    async fn grpc_responses_stream_frame_by_frame_before_their_trailers() {
        let server = GrpcServer::start().await;
        let gw = grpc_gateway(&server).await;
        let mut client = h2_client(&gw).await;
        let call = tokio::spawn(client.send_request(grpc_request(&gw, "Stream", grpc_message(b"start"))));
        let frames = server.streams.lock().await.recv().await.unwrap();
        let first = grpc_message(b"first");
        frames.send(Frame::data(first.clone())).await.unwrap();
        let mut body = call.await.unwrap().unwrap().into_body();
        // The first message arrives while the upstream has not finished its answer.
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await;
        let frame = frame.expect("the first message is not held back").unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), first);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        frames.send(Frame::data(grpc_message(b"second"))).await.unwrap();
        frames.send(Frame::trailers(trailers)).await.unwrap();
        drop(frames);
        let rest = body.collect().await.unwrap();
        assert_eq!(rest.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(rest.to_bytes(), grpc_message(b"second"));
    }

    #[tokio::test]
    async fn h2c_targets_are_health_checked_over_http2() {
        let server = GrpcServer::start().await;
        let gw = TestGateway::start().await;
        let mut up = upstream("g", &[(server.url(), 1)]);
        up.spec.health_check = turnpike_domain::model::HealthCheck {
            enabled: true,
            path: "/grpc.health.v1.Health/Check".into(),
            interval_ms: 10,
            timeout_ms: 1_000,
            healthy_threshold: 1,
            unhealthy_threshold: 1,
        };
        let content = content(
            vec![version("v1", "/rpc/v1", VersionState::Published, Some("g"), vec![route("all", "/*")])],
            vec![up],
        );
        gw.publish(1, content).await;
        // An HTTP/1.1 probe would never reach this HTTP/2-only server. Once the second
        // probe arrives, the first one's answer (200) has been counted.
        let mut checks = server.checks.lock().await;
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(5), checks.recv()).await.expect("a probe over HTTP/2").unwrap();
        }
        let targets = gw.store.upstreams().targets();
        assert!(targets.len() == 1 && targets[0].healthy, "{targets:?}");
        assert_eq!(gw.get("/rpc/v1/echo.Echo/Check").await.status(), 200, "an HTTP/1.1 client reaches it too");
    }
}

// ==== validation ====

/// Request validation against the version's OpenAPI document: what matches reaches
/// the upstream unchanged, what does not is refused naming where and why.
mod validation {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use turnpike_domain::policy::Policies;

    use super::*;

    /// An upstream that counts the requests reaching it and echoes what it got.
    struct Counted {
        url: String,
        hits: Arc<AtomicUsize>,
    }

    impl Counted {
        async fn start() -> Counted {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let hits = Arc::new(AtomicUsize::new(0));
            let counter = hits.clone();
            let app = axum::Router::new().fallback(move |req: Request| {
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let (content_type, length) = {
                        let header = |name: &str| req.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
                        (header("content-type"), header("content-length"))
                    };
                    let (path, query) = (req.uri().path().to_owned(), req.uri().query().map(str::to_owned));
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    axum::Json(json!({
                        "path": path,
                        "query": query,
                        "content_type": content_type,
                        "content_length": length,
                        "body": String::from_utf8_lossy(&body),
                    }))
                }
            });
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            Counted { url, hits }
        }

        fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }
    }

    /// A small petstore in OpenAPI 3.0, with a path-item parameter, a required header,
    /// nested references and an operation without a request body.
    fn petstore() -> Value {
        json!({
            "openapi": "3.0.3",
            "info": {"title": "Pets", "version": "1"},
            "paths": {
                "/pets": {
                    "get": {
                        "operationId": "listPets",
                        "parameters": [
                            {"name": "limit", "in": "query",
                             "schema": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 100}},
                            {"name": "tags", "in": "query", "schema": {"type": "array", "items": {"type": "string"}}},
                            {"$ref": "#/components/parameters/Tenant"},
                        ],
                    },
                    "post": {
                        "operationId": "addPet",
                        "requestBody": {"required": true, "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/NewPet"}},
                            "text/plain": {"schema": {"type": "string"}},
                        }},
                    },
                },
                "/pets/{petId}": {
                    "parameters": [{"name": "petId", "in": "path", "required": true,
                                    "schema": {"type": "integer", "format": "int64"}}],
                    "get": {"operationId": "getPet"},
                    "put": {"operationId": "updatePet", "requestBody": {"$ref": "#/components/requestBodies/Pet"}},
                },
                "/upload": {"post": {"operationId": "upload"}},
            },
            "components": {
                "parameters": {"Tenant": {"name": "x-tenant", "in": "header", "required": true,
                                          "schema": {"type": "string", "pattern": "^t-[0-9]+$"}}},
                "requestBodies": {"Pet": {"content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/NewPet"}}}}},
                "schemas": {
                    "NewPet": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "tag": {"type": "string", "nullable": true},
                            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Item"}},
                        },
                        "additionalProperties": false,
                    },
                    "Item": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
                },
            },
        })
    }

    /// Routes as an import makes them: one per operation, named by its operationId.
    fn routes(document: &Value) -> Vec<SnapshotRoute> {
        let mut routes = Vec::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap().iter().filter(|(k, _)| *k != "parameters") {
                let id = operation["operationId"].as_str().unwrap();
                routes.push(SnapshotRoute {
                    id: id.into(),
                    spec: RouteSpec {
                        name: Some(id.into()),
                        methods: vec![method.to_ascii_uppercase()],
                        path: path.clone(),
                        host: None,
                        headers: BTreeMap::new(),
                    },
                });
            }
        }
        routes
    }

    /// A version at `base` serving `document`'s operations, validating when `validate`.
    fn described(id: &str, base: &str, document: Value, policies: Policies) -> SnapshotVersion {
        let mut v = version(id, base, VersionState::Published, Some("u"), routes(&document));
        v.policies = policies;
        v.openapi = Some(document);
        v
    }

    fn validating() -> Policies {
        Policies { validate_requests: true, ..Default::default() }
    }

    async fn gateway(settings: Settings, target: &Counted, versions: Vec<SnapshotVersion>) -> TestGateway {
        let gw = TestGateway::start_with(settings).await;
        gw.publish(1, content(versions, vec![upstream("u", &[(target.url.clone(), 1)])])).await;
        gw
    }

    /// Asserts a 400 whose first error is `location` failing for `reason`, also named
    /// in the detail; returns the problem.
    async fn invalid(response: reqwest::Response, location: &str, reason: &str) -> Value {
        let body = problem(response, 400, "invalid-request").await;
        assert_eq!(body["errors"][0], json!({"location": location, "reason": reason}), "{body}");
        assert!(body["detail"].as_str().unwrap().contains(&format!("{location}: {reason}")), "{body}");
        body
    }

    fn pets(gw: &TestGateway, path: &str) -> reqwest::RequestBuilder {
        gw.http.get(gw.url(&format!("/pets/v1{path}"))).header("x-tenant", "t-7")
    }

    fn post_json(gw: &TestGateway, path: &str, body: &str) -> reqwest::RequestBuilder {
        gw.http
            .post(gw.url(&format!("/pets/v1{path}")))
            .header("content-type", "application/json")
            .body(body.to_owned())
    }

    #[tokio::test]
    async fn requests_that_match_the_document_reach_the_upstream_unchanged() {
        let up = Counted::start().await;
        let gw = gateway(Settings::default(), &up, vec![described("v1", "/pets/v1", petstore(), validating())]).await;

        let seen = echoed(pets(&gw, "/pets?limit=10&tags=a&tags=b%20c").send().await.unwrap()).await;
        assert_eq!(seen["query"], "limit=10&tags=a&tags=b%20c");
        let pet = r#"{"name": "rex", "tag": null, "items": [{"name": "ball"}]}"#;
        let post = gw.http.post(gw.url("/pets/v1/pets")).header("content-type", "application/json; charset=utf-8");
        let seen = echoed(post.body(pet).send().await.unwrap()).await;
        assert_eq!(seen["body"], pet, "the buffered body is forwarded as sent");
        assert_eq!(seen["content_length"], pet.len().to_string());
        assert_eq!(seen["content_type"], "application/json; charset=utf-8");
        echoed(pets(&gw, "/pets/42").send().await.unwrap()).await;
        assert_eq!(up.hits(), 3);
    }

    #[tokio::test]
    async fn each_failing_location_is_named_and_nothing_reaches_the_upstream() {
        let up = Counted::start().await;
        let gw = gateway(Settings::default(), &up, vec![described("v1", "/pets/v1", petstore(), validating())]).await;

        invalid(pets(&gw, "/pets?limit=abc").send().await.unwrap(), "query.limit", "must be an integer").await;
        invalid(pets(&gw, "/pets?limit=0").send().await.unwrap(), "query.limit", "must be at least 1").await;
        let unnamed = gw.http.get(gw.url("/pets/v1/pets?limit=5")).send().await.unwrap();
        invalid(unnamed, "header.x-tenant", "is required").await;
        let wrong = gw.http.get(gw.url("/pets/v1/pets")).header("x-tenant", "acme").send().await.unwrap();
        invalid(wrong, "header.x-tenant", "must match the pattern \"^t-[0-9]+$\"").await;
        invalid(pets(&gw, "/pets/abc").send().await.unwrap(), "path.petId", "must be an integer").await;

        let items = r#"{"name": "rex", "items": [{"name": "a"}, {"name": "b"}, {"label": "c"}]}"#;
        invalid(post_json(&gw, "/pets", items).send().await.unwrap(), "body.items[2].name", "is required").await;
        invalid(post_json(&gw, "/pets", r#"{"tag": "x"}"#).send().await.unwrap(), "body.name", "is required").await;
        let extra = r#"{"name": "rex", "color": "red"}"#;
        invalid(post_json(&gw, "/pets", extra).send().await.unwrap(), "body.color", "is not a known property").await;
        let broken =
            problem(post_json(&gw, "/pets", r#"{"name":"#).send().await.unwrap(), 400, "invalid-request").await;
        assert_eq!(broken["errors"][0]["location"], "body");
        assert!(broken["errors"][0]["reason"].as_str().unwrap().starts_with("must be JSON"), "{broken}");
        let empty = gw.http.post(gw.url("/pets/v1/pets")).header("content-type", "application/json").send();
        invalid(empty.await.unwrap(), "body", "is required").await;

        // Every failure is listed, in order.
        let both = gw.http.get(gw.url("/pets/v1/pets?limit=abc")).send().await.unwrap();
        let both = invalid(both, "query.limit", "must be an integer").await;
        assert_eq!(both["errors"][1], json!({"location": "header.x-tenant", "reason": "is required"}));
        assert!(both["detail"].as_str().unwrap().ends_with("(and 1 more)"), "{both}");
        assert_eq!(up.hits(), 0, "no invalid request reached the upstream");
    }

    #[tokio::test]
    async fn content_types_are_those_the_operation_declares() {
        let up = Counted::start().await;
        let gw = gateway(Settings::default(), &up, vec![described("v1", "/pets/v1", petstore(), validating())]).await;
        let post = |path: &str, content_type: Option<&str>, body: &str| {
            let mut req = gw.http.post(gw.url(&format!("/pets/v1{path}"))).body(body.to_owned());
            if let Some(content_type) = content_type {
                req = req.header("content-type", content_type);
            }
            req.send()
        };

        let refused =
            problem(post("/pets", Some("application/xml"), "<pet/>").await.unwrap(), 415, "unsupported-media-type");
        let refused = refused.await;
        assert!(refused["detail"].as_str().unwrap().contains("application/json, text/plain"), "{refused}");
        problem(post("/pets", None, "{}").await.unwrap(), 415, "unsupported-media-type").await;
        // Two content types could be read two ways (the upstream might take the other).
        let twice = post_json(&gw, "/pets", "{}").header("content-type", "text/plain").send().await.unwrap();
        problem(twice, 400, "malformed-request").await;
        assert_eq!(up.hits(), 0);

        // Declared but not JSON: passed on unchecked.
        let seen = echoed(post("/pets", Some("text/plain"), "not json").await.unwrap()).await;
        assert_eq!(seen["body"], "not json");
        // Without a requestBody, any body goes.
        echoed(post("/upload", Some("application/octet-stream"), "\u{1}\u{2}").await.unwrap()).await;
        // An optional body may be left out.
        echoed(gw.http.put(gw.url("/pets/v1/pets/1")).send().await.unwrap()).await;
        assert_eq!(up.hits(), 3);
    }

    #[tokio::test]
    async fn json_bodies_are_read_only_up_to_the_body_limit() {
        let up = Counted::start().await;
        let policies = Policies { max_body_bytes: Some(64), ..validating() };
        let gw = gateway(Settings::default(), &up, vec![described("v1", "/pets/v1", petstore(), policies)]).await;
        let large = format!(r#"{{"name": "{}"}}"#, "x".repeat(80));
        let response = post_json(&gw, "/pets", &large).send().await.unwrap();
        assert_eq!(response.headers()["connection"], "close", "the unread body is left on the connection");
        problem(response, 413, "body-too-large").await;

        // Without a declared length, the body is cut off once it passes the limit.
        let (status, _, _) = raw(gw.proxy, &chunked_post(&[&large[..40], &large[40..]])).await;
        assert_eq!(status, 413);

        let small = r#"{"name": "rex"}"#;
        let (status, _, body) = raw(gw.proxy, &chunked_post(&[&small[..5], &small[5..]])).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let seen: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen["body"], small, "a chunked body is forwarded whole");
        assert_eq!(up.hits(), 1);
    }

    /// A JSON POST to /pets with a chunked body, closing the connection after.
    fn chunked_post(chunks: &[&str]) -> String {
        let mut request = "POST /pets/v1/pets HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n\
                           transfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            .to_owned();
        for chunk in chunks {
            request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
        }
        request + "0\r\n\r\n"
    }

    #[tokio::test]
    async fn a_json_body_the_client_stalls_is_refused_with_408() {
        let up = Counted::start().await;
        let settings = Settings { body_read_timeout: Duration::from_millis(100), ..Settings::default() };
        let gw = gateway(settings, &up, vec![described("v1", "/pets/v1", petstore(), validating())]).await;
        let mut stream = TcpStream::connect(gw.proxy).await.unwrap();
        let head = "POST /pets/v1/pets HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n\
                    content-length: 20\r\n\r\n{\"name\"";
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
        let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(answer.starts_with("http/1.1 408"), "{answer}");
        assert!(answer.contains("urn:turnpike:problem:body-timeout"), "{answer}");
        assert_eq!(up.hits(), 0);
    }

    #[tokio::test]
    async fn only_versions_asking_for_it_and_described_routes_are_validated() {
        let up = Counted::start().await;
        let mut open = described("v2", "/pets/v2", petstore(), Policies::default());
        open.routes.push(route("legacy", "/legacy/*"));
        let mut strict = described("v1", "/pets/v1", petstore(), validating());
        strict.routes.push(route("legacy", "/legacy/*"));
        let gw = gateway(Settings::default(), &up, vec![strict, open]).await;

        echoed(gw.get("/pets/v2/pets?limit=abc").await).await;
        echoed(gw.get("/pets/v1/legacy/pets?limit=abc").await).await;
        invalid(gw.get("/pets/v1/pets?limit=abc").await, "query.limit", "must be an integer").await;
        assert_eq!(up.hits(), 2);
    }

    #[tokio::test]
    async fn openapi_31_documents_are_validated_too() {
        let document = json!({
            "openapi": "3.1.0",
            "info": {"title": "Dogs", "version": "1"},
            "paths": {"/dogs/{id}": {"put": {
                "operationId": "putDog",
                "parameters": [{"$ref": "#/components/parameters/Id"}],
                "requestBody": {"required": true, "content": {"application/merge-patch+json": {"schema": {
                    "$ref": "#/components/schemas/Dog", "required": ["kind"]}}}},
            }}},
            "components": {
                "parameters": {"Id": {"name": "id", "in": "path", "required": true,
                                      "schema": {"type": "string", "format": "uuid"}}},
                "schemas": {"Dog": {"type": "object", "properties": {
                    "kind": {"const": "dog"},
                    "age": {"type": ["integer", "null"], "exclusiveMinimum": 0},
                    "tags": {"type": "array", "uniqueItems": true, "prefixItems": [{"type": "string"}]},
                    "walks": {"oneOf": [{"type": "string", "enum": ["daily"]}, {"type": "integer", "minimum": 1}]},
                }}},
            },
        });
        let up = Counted::start().await;
        let gw = gateway(Settings::default(), &up, vec![described("v1", "/pets/v1", document, validating())]).await;
        let id = "0191c4a2-8a36-7cc2-9b1e-5f2f7f6e7a10";
        let put = |path: String, body: &str| {
            gw.http
                .put(gw.url(&format!("/pets/v1{path}")))
                .header("content-type", "application/merge-patch+json")
                .body(body.to_owned())
                .send()
        };

        let ok = r#"{"kind": "dog", "age": null, "tags": ["a", 1], "walks": 2}"#;
        assert_eq!(echoed(put(format!("/dogs/{id}"), ok).await.unwrap()).await["body"], ok);
        invalid(put("/dogs/7".into(), ok).await.unwrap(), "path.id", "must be a UUID").await;
        invalid(put(format!("/dogs/{id}"), "{}").await.unwrap(), "body.kind", "is required").await;
        invalid(put(format!("/dogs/{id}"), r#"{"kind": "cat"}"#).await.unwrap(), "body.kind", "must be \"dog\"").await;
        let young = r#"{"kind": "dog", "age": 0}"#;
        invalid(put(format!("/dogs/{id}"), young).await.unwrap(), "body.age", "must be greater than 0").await;
        let tags = r#"{"kind": "dog", "tags": [1, 1]}"#;
        let problem = invalid(
            put(format!("/dogs/{id}"), tags).await.unwrap(),
            "body.tags",
            "must not contain duplicates (items 0 and 1 are equal)",
        )
        .await;
        assert_eq!(problem["errors"][1]["location"], "body.tags[0]", "{problem}");
        let walks = r#"{"kind": "dog", "walks": "weekly"}"#;
        invalid(put(format!("/dogs/{id}"), walks).await.unwrap(), "body.walks", "must be one of [\"daily\"]").await;
        assert_eq!(up.hits(), 1);
    }
}

// ==== jwt ====

/// Bearer JWT authentication: fixed algorithms, keys from the policy or a JWKS
/// served on loopback (rotation, background refresh, rate-limited refetches), claims
/// forwarded upstream. Keys are made in the test (EC) or read from `tests/data` (RSA).
mod jwt {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use tokio::sync::watch;
    use turnpike_bus::credentials::InProcessCredentials;
    use turnpike_domain::credential::Credential;
    use turnpike_domain::policy::{Cache, JwtAlgorithm, JwtPolicy, JwtSecret, KeyAuth, Policies};
    use turnpike_domain::secrets::{KeyHasher, generate_secret};
    use turnpike_gateway::JwksSettings;
    use turnpike_gateway::consumer::Consumers;

    use super::*;

    const SECRET: &str = "a-shared-secret-of-at-least-32-bytes";
    const RSA_A: &str = include_str!("data/jwt_rsa_a.pem");
    const RSA_A_PUBLIC: &str = include_str!("data/jwt_rsa_a.pub.pem");
    const RSA_B: &str = include_str!("data/jwt_rsa_b.pem");

    /// A signing key and the JWK that publishes it.
    struct SigningKey {
        kid: String,
        algorithm: Algorithm,
        encoding: EncodingKey,
        jwk: Value,
    }

    impl SigningKey {
        fn rsa(kid: &str, pem: &str) -> SigningKey {
            let encoding = EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
            SigningKey::new(kid, Algorithm::RS256, encoding)
        }

        /// A fresh P-256 key.
        fn ec(kid: &str) -> SigningKey {
            let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            SigningKey::new(kid, Algorithm::ES256, EncodingKey::from_ec_der(&pair.serialize_der()))
        }

        fn new(kid: &str, algorithm: Algorithm, encoding: EncodingKey) -> SigningKey {
            let mut jwk = Jwk::from_encoding_key(&encoding, algorithm).unwrap();
            jwk.common.key_id = Some(kid.into());
            SigningKey { kid: kid.into(), algorithm, encoding, jwk: serde_json::to_value(jwk).unwrap() }
        }

        fn sign(&self, claims: &Value) -> String {
            let mut header = Header::new(self.algorithm);
            header.kid = Some(self.kid.clone());
            jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
        }

        /// Signed by this key but naming another `kid`.
        fn sign_as(&self, kid: &str, claims: &Value) -> String {
            let mut header = Header::new(self.algorithm);
            header.kid = Some(kid.into());
            jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
        }
    }

    /// Serves a JWKS at `/jwks` from a key list the test changes, with a
    /// `Cache-Control` it chooses; counts the fetches and announces each. `/fail`
    /// answers 500 while `failing` is set.
    struct JwksServer {
        addr: SocketAddr,
        keys: Arc<std::sync::Mutex<Vec<Value>>>,
        failing: Arc<AtomicBool>,
        fetches: watch::Receiver<usize>,
    }

    #[derive(Clone)]
    struct JwksState {
        keys: Arc<std::sync::Mutex<Vec<Value>>>,
        cache_control: &'static str,
        failing: Arc<AtomicBool>,
        fetches: Arc<watch::Sender<usize>>,
    }

    impl JwksServer {
        async fn start(keys: &[&SigningKey], cache_control: &'static str) -> JwksServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, fetches) = watch::channel(0);
            let state = JwksState {
                keys: Arc::new(std::sync::Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect())),
                cache_control,
                failing: Arc::default(),
                fetches: Arc::new(tx),
            };
            let (keys, failing) = (state.keys.clone(), state.failing.clone());
            let app = axum::Router::new().fallback(serve_jwks).with_state(state);
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            JwksServer { addr, keys, failing, fetches }
        }

        fn url(&self) -> String {
            format!("http://{}/jwks", self.addr)
        }

        fn publish(&self, keys: &[&SigningKey]) {
            *self.keys.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
        }

        fn fetches(&self) -> usize {
            *self.fetches.borrow()
        }

        /// Waits until the server has been fetched from `n` times in all.
        async fn fetched(&mut self, n: usize) {
            let wait = self.fetches.wait_for(|f| *f >= n);
            tokio::time::timeout(Duration::from_secs(10), wait)
                .await
                .expect("the gateway fetched the key set")
                .unwrap();
        }
    }

    async fn serve_jwks(State(s): State<JwksState>) -> Response {
        s.fetches.send_modify(|n| *n += 1);
        if s.failing.load(Ordering::SeqCst) {
            return (http::StatusCode::INTERNAL_SERVER_ERROR, "down").into_response();
        }
        let body = json!({ "keys": *s.keys.lock().unwrap() });
        ([("cache-control", s.cache_control)], axum::Json(body)).into_response()
    }

    /// A gateway whose JWKS cache follows `jwks`.
    async fn gateway(jwks: JwksSettings, consumers: Consumers) -> TestGateway {
        let proxy_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let status_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = proxy_listener.local_addr().unwrap();
        let status = status_listener.local_addr().unwrap();
        let bus = InProcessBus::new();
        let store = ConfigStore::with_consumers(consumers).with_jwks_settings(jwks);
        tokio::spawn(store.clone().follow(bus.subscribe()));
        let (stop, stopped) = oneshot::channel::<()>();
        let proxy_task = tokio::spawn(serve_proxy(proxy_listener, store.clone(), Settings::default(), async {
            let _ = stopped.await;
        }));
        tokio::spawn(serve_status(status_listener, store.clone(), std::future::pending()));
        TestGateway { proxy, status, bus, store, stop: Some(stop), proxy_task, http: reqwest::Client::new() }
    }

    /// Settings for tests: no lower bound on lifetimes, quick retries.
    fn quick(refetch_interval: Duration) -> JwksSettings {
        JwksSettings {
            min_ttl: Duration::ZERO,
            unknown_kid_refetch_interval: refetch_interval,
            max_retry_interval: Duration::from_millis(100),
            ..JwksSettings::default()
        }
    }

    /// `/pets/v1` to `echo`, guarded by `jwt` (and `extra` policies).
    fn guarded(echo: &EchoServer, jwt: JwtPolicy, extra: Policies) -> SnapshotContent {
        let mut c = simple(echo);
        c.versions[0].policies = Policies { jwt: Some(jwt), ..extra };
        c
    }

    fn now() -> i64 {
        Utc::now().timestamp()
    }

    fn claims(extra: Value) -> Value {
        let mut c = json!({"sub": "alice", "exp": now() + 600});
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c
    }

    fn hs256(claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(SECRET.as_bytes()))
            .unwrap()
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    /// A token with any header, HMAC-SHA256-signed under `secret`.
    fn forged(header: &Value, claims: &Value, secret: &[u8]) -> String {
        let message = format!("{}.{}", b64(header), b64(claims));
        let key = EncodingKey::from_secret(secret);
        format!("{message}.{}", jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap())
    }

    async fn call(gw: &TestGateway, token: &str) -> reqwest::Response {
        gw.http.get(gw.url("/pets/v1/x")).bearer_auth(token).send().await.unwrap()
    }

    /// Asserts a 401 for a bad token and its challenge.
    async fn refused(response: reqwest::Response) {
        let challenge = response.headers()["www-authenticate"].to_str().unwrap().to_owned();
        assert_eq!(challenge, r#"Bearer error="invalid_token""#);
        problem(response, 401, "invalid-token").await;
    }

    /// Sends `token` until it is answered `status` (the key set refreshes in the
    /// background), at most 10 s.
    async fn until_answered(gw: &TestGateway, token: &str, status: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if call(gw, token).await.status().as_u16() == status {
                return;
            }
            assert!(Instant::now() < deadline, "never answered {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn tokens_are_required_checked_and_their_claims_forwarded() {
        let echo = EchoServer::start("a").await;
        let gw = gateway(JwksSettings::default(), Consumers::default()).await;
        let policy = JwtPolicy {
            secret: Some(JwtSecret::new(SECRET)),
            claims_to_headers: [("sub", "x-consumer-subject"), ("email", "x-user-email"), ("roles", "x-user-roles")]
                .into_iter()
                .map(|(c, h)| (c.to_owned(), h.to_owned()))
                .collect(),
            ..JwtPolicy::new(JwtAlgorithm::HS256)
        };
        gw.publish(1, guarded(&echo, policy, Policies::default())).await;

        let missing = gw.get("/pets/v1/x").await;
        assert_eq!(missing.headers()["www-authenticate"], "Bearer");
        problem(missing, 401, "missing-token").await;
        let basic = gw.http.get(gw.url("/pets/v1/x")).basic_auth("u", Some("p")).send().await.unwrap();
        problem(basic, 401, "missing-token").await;
        refused(call(&gw, "not-a-jwt").await).await;

        let token = hs256(&claims(json!({"roles": ["admin", "ops"]})));
        let response = gw
            .http
            .get(gw.url("/pets/v1/x"))
            .bearer_auth(&token)
            .header("x-consumer-subject", "mallory")
            .header("x-user-email", "mallory@evil.test")
            .send()
            .await
            .unwrap();
        let seen = echoed(response).await;
        assert_eq!(seen["headers"]["x-consumer-subject"], "alice", "the claim, not the client's copy");
        assert_eq!(seen["headers"]["x-user-roles"], "admin, ops");
        assert!(seen["headers"].get("x-user-email").is_none(), "no claim, and the client's copy is gone");
        assert_eq!(seen["headers"]["authorization"], format!("Bearer {token}"), "kept unless hide_credentials");

        let body = problem(call(&gw, &hs256(&claims(json!({"exp": now() - 3600})))).await, 401, "invalid-token").await;
        assert_eq!(body["detail"], "the bearer token is not valid", "no reason given to the client");
    }

    #[tokio::test]
    async fn forged_and_out_of_policy_tokens_are_refused() {
        let echo = EchoServer::start("a").await;
        // An attacker's key server: tokens may point at it, the gateway never calls it.
        let attacker_key = SigningKey::rsa("evil", RSA_B);
        let attacker = JwksServer::start(&[&attacker_key], "max-age=60").await;
        let gw = gateway(JwksSettings::default(), Consumers::default()).await;
        let policy = JwtPolicy {
            public_key_pem: Some(RSA_A_PUBLIC.into()),
            issuer: Some("https://idp.test".into()),
            audiences: vec!["pets".into()],
            ..JwtPolicy::new(JwtAlgorithm::RS256)
        };
        gw.publish(1, guarded(&echo, policy, Policies::default())).await;
        let key_a = SigningKey::rsa("a", RSA_A);
        let good = json!({"iss": "https://idp.test", "aud": "pets"});
        let with = |extra: Value| {
            let mut c = claims(good.clone());
            c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            c
        };
        echoed(call(&gw, &key_a.sign(&with(json!({})))).await).await;

        let c = with(json!({}));
        let mut forgeries = vec![
            ("alg none", format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&c))),
            ("alg none, signed", format!("{}.{}.c2ln", b64(&json!({"alg": "none"})), b64(&c))),
            ("HS256 keyed with the public key", forged(&json!({"alg": "HS256"}), &c, RSA_A_PUBLIC.as_bytes())),
            ("alg differs from the configured one", forged(&json!({"alg": "RS512"}), &c, b"x")),
            ("signed by another key", attacker_key.sign(&c)),
        ];
        for header in [
            json!({"alg": "RS256", "kid": "evil", "jku": attacker.url()}),
            json!({"alg": "RS256", "kid": "evil", "x5u": attacker.url()}),
        ] {
            let message = format!("{}.{}", b64(&header), b64(&c));
            let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &attacker_key.encoding, Algorithm::RS256);
            forgeries.push(("key url in the token", format!("{message}.{}", signature.unwrap())));
        }
        let (head, _) = key_a.sign(&c).rsplit_once('.').map(|(h, s)| (h.to_owned(), s.to_owned())).unwrap();
        forgeries.push(("bad signature", format!("{head}.{}", URL_SAFE_NO_PAD.encode([7u8; 256]))));
        forgeries.push(("expired", key_a.sign(&with(json!({"exp": now() - 3600})))));
        forgeries.push(("not yet valid", key_a.sign(&with(json!({"nbf": now() + 3600})))));
        forgeries.push(("wrong issuer", key_a.sign(&with(json!({"iss": "https://evil.test"})))));
        forgeries.push(("wrong audience", key_a.sign(&with(json!({"aud": ["other"]})))));
        forgeries.push(("no audience", key_a.sign(&claims(json!({"iss": "https://idp.test"})))));
        for (what, token) in forgeries {
            let response = call(&gw, &token).await;
            assert_eq!(response.status(), 401, "{what}");
            refused(response).await;
        }
        assert_eq!(attacker.fetches(), 0, "keys are never fetched from token-supplied urls");
    }

    #[tokio::test]
    async fn a_custom_header_works_and_hide_credentials_removes_it() {
        let echo = EchoServer::start("a").await;
        let gw = gateway(JwksSettings::default(), Consumers::default()).await;
        let policy = JwtPolicy {
            secret: Some(JwtSecret::new(SECRET)),
            header: "x-id-token".into(),
            hide_credentials: true,
            ..JwtPolicy::new(JwtAlgorithm::HS256)
        };
        gw.publish(1, guarded(&echo, policy, Policies::default())).await;
        let token = hs256(&claims(json!({})));
        problem(call(&gw, &token).await, 401, "missing-token").await;
        let response = gw.http.get(gw.url("/pets/v1/x")).header("x-id-token", &token).send().await.unwrap();
        let seen = echoed(response).await;
        assert!(seen["headers"].get("x-id-token").is_none(), "the token was hidden from the upstream");
    }

    #[tokio::test]
    async fn with_key_auth_too_both_credentials_are_required() {
        let echo = EchoServer::start("a").await;
        let hasher = KeyHasher::new(&generate_secret()).unwrap();
        let credentials = Arc::new(InProcessCredentials::new());
        let credential = Credential {
            key_id: "key-1".into(),
            application_id: "app-1".into(),
            developer_id: "dev-1".into(),
            expires_at: None,
            subscriptions: [("v1".to_owned(), "plan-1".to_owned())].into(),
        };
        credentials.replace_all([(hasher.hash("tpk_key"), credential)]);
        let consumers = Consumers { credentials, hasher: Some(hasher), ..Consumers::default() };
        let gw = gateway(JwksSettings::default(), consumers).await;
        let policy = JwtPolicy {
            secret: Some(JwtSecret::new(SECRET)),
            claims_to_headers: [("sub".to_owned(), "x-consumer-subject".to_owned())].into(),
            ..JwtPolicy::new(JwtAlgorithm::HS256)
        };
        gw.publish(1, guarded(&echo, policy, Policies { key_auth: Some(KeyAuth::default()), ..Default::default() }))
            .await;
        let token = hs256(&claims(json!({})));
        let send = |key: Option<&str>, token: Option<&str>| {
            let mut request = gw.http.get(gw.url("/pets/v1/x"));
            if let Some(key) = key {
                request = request.header("x-api-key", key);
            }
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            request.send()
        };
        problem(send(Some("tpk_key"), None).await.unwrap(), 401, "missing-token").await;
        problem(send(None, Some(&token)).await.unwrap(), 401, "missing-api-key").await;
        refused(send(Some("tpk_key"), Some(&hs256(&claims(json!({"exp": 1}))))).await.unwrap()).await;
        let seen = echoed(send(Some("tpk_key"), Some(&token)).await.unwrap()).await;
        assert_eq!(seen["headers"]["x-consumer-application-id"], "app-1");
        assert_eq!(seen["headers"]["x-consumer-subject"], "alice", "the key's strip does not remove claim headers");
    }

    #[tokio::test]
    async fn one_token_holders_answer_is_never_served_to_another_from_the_cache() {
        let echo = EchoServer::start("a").await;
        let gw = gateway(JwksSettings::default(), Consumers::default()).await;
        let policy = JwtPolicy {
            secret: Some(JwtSecret::new(SECRET)),
            hide_credentials: true,
            claims_to_headers: [("sub".to_owned(), "x-consumer-subject".to_owned())].into(),
            ..JwtPolicy::new(JwtAlgorithm::HS256)
        };
        let cache = Policies { cache: Some(Cache { ttl_seconds: 60, max_body_bytes: 10_000 }), ..Default::default() };
        gw.publish(1, guarded(&echo, policy, cache)).await;
        for who in ["alice", "bob"] {
            let seen = echoed(call(&gw, &hs256(&claims(json!({"sub": who})))).await).await;
            assert_eq!(seen["headers"]["x-consumer-subject"], who);
        }
    }

    #[tokio::test]
    async fn jwks_rotation_is_picked_up_by_refetching_on_an_unknown_kid() {
        let echo = EchoServer::start("a").await;
        let (a, b) = (SigningKey::rsa("a", RSA_A), SigningKey::rsa("b", RSA_B));
        // A long max-age: only unknown kids make the gateway look again.
        let mut idp = JwksServer::start(&[&a], "public, max-age=3600").await;
        let gw = gateway(quick(Duration::ZERO), Consumers::default()).await;
        let policy = JwtPolicy { jwks_url: Some(idp.url()), ..JwtPolicy::new(JwtAlgorithm::RS256) };
        gw.publish(1, guarded(&echo, policy, Policies::default())).await;

        // The first request waits for the first fetch, started when the snapshot was compiled.
        echoed(call(&gw, &a.sign(&claims(json!({})))).await).await;
        assert_eq!(idp.fetches(), 1);
        // B is not published yet: refused, and the set is fetched again (still only A).
        refused(call(&gw, &b.sign(&claims(json!({})))).await).await;
        idp.fetched(2).await;
        // B is published: after the refetch its tokens work, and A's still do.
        idp.publish(&[&a, &b]);
        until_answered(&gw, &b.sign(&claims(json!({}))), 200).await;
        echoed(call(&gw, &a.sign(&claims(json!({})))).await).await;
        // A is withdrawn: once the set is refreshed (any unknown kid asks), A fails.
        idp.publish(&[&b]);
        refused(call(&gw, &a.sign_as("c", &claims(json!({})))).await).await;
        until_answered(&gw, &a.sign(&claims(json!({}))), 401).await;
        refused(call(&gw, &a.sign(&claims(json!({})))).await).await;
        echoed(call(&gw, &b.sign(&claims(json!({})))).await).await;
    }

    #[tokio::test]
    async fn jwks_key_sets_are_refreshed_in_the_background_per_max_age() {
        let echo = EchoServer::start("a").await;
        let (a, b) = (SigningKey::ec("a"), SigningKey::ec("b"));
        let mut idp = JwksServer::start(&[&a], "max-age=1").await;
        // Unknown kids never refetch here: only the lifetime does.
        let gw = gateway(quick(Duration::from_secs(3600)), Consumers::default()).await;
        let policy = JwtPolicy { jwks_url: Some(idp.url()), ..JwtPolicy::new(JwtAlgorithm::ES256) };
        gw.publish(1, guarded(&echo, policy, Policies::default())).await;
        echoed(call(&gw, &a.sign(&claims(json!({})))).await).await;
        idp.publish(&[&b]);
        idp.fetched(2).await;
        until_answered(&gw, &b.sign(&claims(json!({}))), 200).await;
        refused(call(&gw, &a.sign(&claims(json!({})))).await).await;
    }

    #[tokio::test]
    async fn unknown_kids_refetch_at_most_once_per_interval_and_a_config_swap_does_not_refetch() {
        let echo = EchoServer::start("a").await;
        let a = SigningKey::rsa("a", RSA_A);
        let idp = JwksServer::start(&[&a], "max-age=3600").await;
        let gw = gateway(quick(Duration::from_secs(3600)), Consumers::default()).await;
        let policy = JwtPolicy { jwks_url: Some(idp.url()), ..JwtPolicy::new(JwtAlgorithm::RS256) };
        gw.publish(1, guarded(&echo, policy.clone(), Policies::default())).await;
        echoed(call(&gw, &a.sign(&claims(json!({})))).await).await;
        for i in 0..20 {
            refused(call(&gw, &a.sign_as(&format!("made-up-{i}"), &claims(json!({})))).await).await;
        }
        // Keys are never fetched from a URL the token names.
        let attacker = JwksServer::start(&[&a], "max-age=60").await;
        for header in [
            json!({"alg": "RS256", "kid": "x", "jku": attacker.url()}),
            json!({"alg": "RS256", "kid": "x", "x5u": attacker.url()}),
        ] {
            let message = format!("{}.{}", b64(&header), b64(&claims(json!({}))));
            let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &a.encoding, Algorithm::RS256).unwrap();
            refused(call(&gw, &format!("{message}.{signature}")).await).await;
        }
        assert_eq!(attacker.fetches(), 0);
        // A new snapshot naming the same URL shares the fetched keys.
        gw.publish(2, guarded(&echo, policy, Policies::default())).await;
        echoed(call(&gw, &a.sign(&claims(json!({})))).await).await;
        assert_eq!(idp.fetches(), 1, "made-up kids and the swap caused no fetch");
    }

    #[tokio::test]
    async fn until_the_first_fetch_succeeds_requests_get_503() {
        let echo = EchoServer::start("a").await;
        let a = SigningKey::ec("a");
        let mut idp = JwksServer::start(&[&a], "max-age=3600").await;
        idp.failing.store(true, Ordering::SeqCst);
        let gw = gateway(quick(Duration::from_secs(3600)), Consumers::default()).await;
        let policy = JwtPolicy { jwks_url: Some(idp.url()), ..JwtPolicy::new(JwtAlgorithm::ES256) };
        gw.publish(1, guarded(&echo, policy, Policies::default())).await;
        let token = a.sign(&claims(json!({})));
        problem(call(&gw, &token).await, 503, "jwt-keys-unavailable").await;
        idp.fetched(1).await;
        idp.failing.store(false, Ordering::SeqCst);
        until_answered(&gw, &token, 200).await;
        assert!(idp.fetches() >= 2, "retried after the failure");
    }
}

#[path = "gateway/h2_abuse.rs"]
mod h2_abuse;

#[path = "gateway/metrics.rs"]
mod metrics;

#[path = "gateway/ssrf.rs"]
mod ssrf;
