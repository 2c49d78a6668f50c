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
use turnpike_gateway::{ApplyError, ConfigStore, serve_proxy, serve_status};

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
        let proxy_task = tokio::spawn(serve_proxy(proxy_listener, store.clone(), async {
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
    assert_eq!(headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
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
