//! The operator's target policy at connect time (`ConfigStore::with_target_policy`):
//! a snapshot naming a refused address (saved before the policy was tightened, or read
//! from a last-known-good file) gets 502 without a connection being made, JWKS key
//! sets are not fetched from refused addresses, and the allow list lets its blocks
//! through.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use turnpike_domain::network::TargetPolicy;
use turnpike_domain::policy::{JwtAlgorithm, JwtPolicy, Policies};

use super::*;

/// A gateway whose upstream connections follow `policy`.
async fn gateway(policy: TargetPolicy) -> TestGateway {
    let proxy_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let status_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (proxy, status) = (proxy_listener.local_addr().unwrap(), status_listener.local_addr().unwrap());
    let bus = InProcessBus::new();
    let store = ConfigStore::new().with_target_policy(policy);
    tokio::spawn(store.clone().follow(bus.subscribe()));
    let (stop, stopped) = oneshot::channel::<()>();
    let proxy_task = tokio::spawn(serve_proxy(proxy_listener, store.clone(), Settings::default(), async {
        let _ = stopped.await;
    }));
    tokio::spawn(serve_status(status_listener, store.clone(), std::future::pending()));
    TestGateway { proxy, status, bus, store, stop: Some(stop), proxy_task, http: reqwest::Client::new() }
}

/// A loopback port nobody accepts on: whether a connection was made shows in its
/// queue (on loopback a connection is queued by the time the client's connect returns).
struct Watched(std::net::TcpListener);

impl Watched {
    fn bind() -> Watched {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        Watched(listener)
    }

    fn url(&self) -> String {
        format!("http://{}", self.0.local_addr().unwrap())
    }

    fn connected(&self) -> bool {
        match self.0.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn strict() -> TargetPolicy {
    TargetPolicy::public_only(Vec::new())
}

#[tokio::test]
async fn a_refused_literal_target_answers_502_without_a_connection() {
    let watched = Watched::bind();
    let gw = gateway(strict()).await;
    gw.publish(
        1,
        content(
            vec![version("v1", "/pets/v1", VersionState::Published, Some("u"), vec![route("all", "/*")])],
            vec![upstream("u", &[(watched.url(), 1)])],
        ),
    )
    .await;
    let body = problem(gw.get("/pets/v1/x").await, 502, "upstream-unreachable").await;
    assert!(!body.to_string().contains("127.0.0.1"), "internal addresses must not leak: {body}");
    assert!(!watched.connected(), "the gateway connected to a refused address");

    // The operator's allow list lets the same target through.
    let echo = EchoServer::start("a").await;
    let gw = gateway(TargetPolicy::public_only(vec!["127.0.0.0/8".parse().unwrap()])).await;
    gw.publish(1, simple(&echo)).await;
    assert_eq!(echoed(gw.get("/pets/v1/x").await).await["upstream"], "a");
    let gw = gateway(TargetPolicy::allow_all()).await;
    gw.publish(1, simple(&echo)).await;
    assert_eq!(echoed(gw.get("/pets/v1/x").await).await["upstream"], "a");
}

#[tokio::test]
async fn jwks_key_sets_are_not_fetched_from_refused_addresses() {
    let echo = EchoServer::start("a").await;
    let idp = Watched::bind();
    let gw = gateway(strict()).await;
    let jwt = JwtPolicy { jwks_url: Some(format!("{}/jwks.json", idp.url())), ..JwtPolicy::new(JwtAlgorithm::ES256) };
    let mut content = simple(&echo);
    content.versions[0].policies = Policies { jwt: Some(jwt), ..Policies::default() };
    gw.publish(1, content).await;

    let part = |json: &str| URL_SAFE_NO_PAD.encode(json);
    let token = format!("{}.{}.{}", part(r#"{"alg":"ES256","kid":"k"}"#), part("{}"), part("signature"));
    let response = gw.http.get(gw.url("/pets/v1/x")).bearer_auth(token).send().await.unwrap();
    // The first fetch failed (refused), so the request is answered at once.
    problem(response, 503, "jwt-keys-unavailable").await;
    assert!(!idp.connected(), "the key set was fetched from a refused address");
}
