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
        // Listeners are bound before the servers are spawned, so requests can be
        // sent right away without waiting for anything.
        let proxy_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let status_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = proxy_listener.local_addr().unwrap();
        let status = status_listener.local_addr().unwrap();
        let bus = InProcessBus::new();
        let store = ConfigStore::new();
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
    }
}

fn content(versions: Vec<SnapshotVersion>, upstreams: Vec<SnapshotUpstream>) -> SnapshotContent {
    SnapshotContent { versions, upstreams, plans: vec![], certificates: vec![] }
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
        (200, json!({"ready": false, "config_version": null, "config_checksum": null}))
    );
    problem(gw.get("/pets/v1/dogs").await, 503, "no-config").await;

    let echo = EchoServer::start("a").await;
    let snapshot = Snapshot::compile(3, simple(&echo), Utc::now());
    gw.bus.publish(Arc::new(snapshot.clone())).await.unwrap();
    gw.store.wait_for_version(3).await;
    assert_eq!(gw.status("/status/ready").await.0, 200);
    assert_eq!(
        gw.status("/status").await,
        (200, json!({"ready": true, "config_version": 3, "config_checksum": snapshot.checksum}))
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

    use turnpike_domain::policy::{Cache, Cors, HeaderTransform, IpRules, Policies};

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
