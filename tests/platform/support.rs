//! The test app: a real store (SQLite file or PostgreSQL database), the real admin
//! router and the real gateway, each on its own loopback port, joined by an
//! in-process bus exactly as in all-in-one mode. Every test gets its own app.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::watch;
use turnpike_bus::credentials::InProcessCredentials;
use turnpike_bus::{ConfigBus, InProcessBus};
use turnpike_domain::secrets::{KeyHasher, generate_secret};
use turnpike_store::{Actor, Store, tokens};
use turnpike_testkit::Postgres;

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub admin_url: String,
    pub gateway_url: String,
    pub token: String,
    pub store: Arc<Store>,
    pub gateway: turnpike_gateway::ConfigStore,
    pub client: reqwest::Client,
    pub backend: Backend,
    stop: watch::Sender<bool>,
    _dir: TempDir,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A response read in full.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", self.text());
        if self.body.is_empty() { Value::Null } else { self.json() }
    }

    /// Asserts a problem+json answer with this status and returns it.
    #[track_caller]
    pub fn problem(&self, status: u16) -> Value {
        let body = self.expect(status);
        assert_eq!(
            self.headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/problem+json"),
            "not a problem: {body}"
        );
        assert_eq!(body["status"], status);
        assert!(body["type"].as_str().is_some_and(|t| !t.is_empty()) && body["detail"].is_string(), "{body}");
        body
    }
}

fn shutdown(rx: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

impl TestApp {
    pub async fn start(backend: Backend) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{}/turnpike.db?mode=rwc", dir.path().display()),
            Backend::Postgres => {
                tokio::task::spawn_blocking(|| Postgres::shared().create_database("platform")).await.unwrap()
            }
        };
        let store = Arc::new(Store::connect(&url, 5).await.expect("connect"));
        store.migrate().await.expect("migrate");
        let hasher = KeyHasher::new(&generate_secret()).unwrap();
        let change = store.change(&Actor("test".into())).await.unwrap();
        let token = tokens::bootstrap(&change, &hasher).await.unwrap().expect("fresh store").token;
        change.commit().await.unwrap();

        let bus: Arc<InProcessBus> = Arc::new(InProcessBus::new());
        if let Some(s) = turnpike_store::snapshots::latest(store.db()).await.unwrap() {
            bus.publish(Arc::new(s)).await.unwrap();
        }
        let credentials = Arc::new(InProcessCredentials::new());
        let gateway = turnpike_gateway::ConfigStore::with_consumers(turnpike_gateway::consumer::Consumers {
            credentials: credentials.clone(),
            hasher: Some(hasher.clone()),
            limiter: Arc::new(turnpike_gateway::ratelimit::LocalLimiter::default()),
        });
        tokio::spawn(gateway.clone().follow(bus.subscribe()));

        let (stop, stop_rx) = watch::channel(false);
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_url = format!("http://{}", admin_listener.local_addr().unwrap());
        let gateway_url = format!("http://{}", gateway_listener.local_addr().unwrap());
        let state = turnpike_admin_api::AdminState::new(store.clone(), bus, hasher, credentials);
        let router = turnpike_admin_api::router(state, 1024 * 1024);
        let down = shutdown(&stop_rx);
        tokio::spawn(async move { axum::serve(admin_listener, router).with_graceful_shutdown(down).await });
        tokio::spawn(turnpike_gateway::serve_proxy(
            gateway_listener,
            gateway.clone(),
            turnpike_gateway::Settings::default(),
            shutdown(&stop_rx),
        ));

        TestApp {
            admin_url,
            gateway_url,
            token,
            store,
            gateway,
            client: reqwest::Client::new(),
            backend,
            stop,
            _dir: dir,
        }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<(&str, Vec<u8>)>, token: Option<&str>) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.admin_url));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some((content_type, bytes)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        let res = req.send().await.expect("admin API reachable");
        Reply { status: res.status(), headers: res.headers().clone(), body: res.bytes().await.unwrap().to_vec() }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, None, Some(&self.token)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, None, Some(&self.token)).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, Some(("application/json", body.to_string().into_bytes())), Some(&self.token))
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(
            Method::PATCH,
            path,
            Some(("application/merge-patch+json", body.to_string().into_bytes())),
            Some(&self.token),
        )
        .await
    }

    /// Sends a raw body (an OpenAPI document, malformed JSON…).
    pub async fn put_raw(&self, path: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        self.send(Method::PUT, path, Some((content_type, body.into())), Some(&self.token)).await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        self.send(Method::POST, path, Some((content_type, body.into())), Some(&self.token)).await
    }

    /// Waits until the gateway runs the newest stored snapshot.
    pub async fn settled(&self) {
        let latest = turnpike_store::snapshots::latest(self.store.db()).await.unwrap().expect("a snapshot exists");
        tokio::time::timeout(std::time::Duration::from_secs(5), self.gateway.wait_for_version(latest.version))
            .await
            .expect("gateway applies the newest snapshot");
    }

    /// Calls the gateway once the newest configuration is applied.
    pub async fn call(&self, method: Method, path: &str) -> Reply {
        self.call_with(method, path, &[]).await
    }

    /// Calls the gateway with extra request headers.
    pub async fn call_with(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.settled().await;
        let mut req = self.client.request(method, format!("{}{path}", self.gateway_url));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let res = req.send().await.unwrap();
        Reply { status: res.status(), headers: res.headers().clone(), body: res.bytes().await.unwrap().to_vec() }
    }

    /// Number of rows in the audit log; a refused request must not add one.
    pub async fn audit_count(&self) -> u64 {
        self.get("/admin/v1/audit?per_page=1").await.expect(200)["total"].as_u64().unwrap()
    }

    /// Creates an upstream pointing at `url`, an API and a draft version `v1` with a
    /// catch-all route; returns the API slug.
    pub async fn draft_api(&self, slug: &str, upstream_url: &str) -> String {
        self.post(
            "/admin/v1/upstreams",
            serde_json::json!({"name": format!("{slug}-up"), "targets": [{"url": upstream_url}]}),
        )
        .await
        .expect(201);
        self.post("/admin/v1/apis", serde_json::json!({"name": slug, "slug": slug})).await.expect(201);
        self.post(
            &format!("/admin/v1/apis/{slug}/versions"),
            serde_json::json!({"label": "v1", "upstream_id": format!("{slug}-up")}),
        )
        .await
        .expect(201);
        self.post(&format!("/admin/v1/apis/{slug}/versions/v1/routes"), serde_json::json!({"path": "/*"}))
            .await
            .expect(201);
        slug.to_owned()
    }
}

/// A real HTTP upstream on a loopback port that answers with what it received.
pub struct Upstream {
    pub url: String,
    _stop: watch::Sender<bool>,
}

impl Upstream {
    pub async fn start(name: &'static str) -> Upstream {
        use axum::extract::Request;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(move |req: Request| async move {
            let q = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
            axum::Json(serde_json::json!({
                "upstream": name,
                "method": req.method().as_str(),
                "path": format!("{}{q}", req.uri().path()),
                "forwarded_for": req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok()),
                "headers": req
                    .headers()
                    .iter()
                    .map(|(n, v)| (n.as_str().to_owned(), serde_json::Value::from(v.to_str().unwrap_or_default())))
                    .collect::<serde_json::Map<_, _>>(),
            }))
        });
        let (stop, rx) = watch::channel(false);
        tokio::spawn(async move { axum::serve(listener, app).with_graceful_shutdown(shutdown(&rx)).await });
        Upstream { url, _stop: stop }
    }
}

/// Sends a request that must change nothing, so adds no audit entry.
pub async fn refused(app: &TestApp, request: impl Future<Output = Reply>) -> Reply {
    let before = app.audit_count().await;
    let reply = request.await;
    assert_eq!(app.audit_count().await, before, "a refused request was audited; it answered {}", reply.text());
    reply
}

/// Sends a request that must be recorded as exactly one audit entry.
pub async fn accepted(app: &TestApp, request: impl Future<Output = Reply>) -> Reply {
    let before = app.audit_count().await;
    let reply = request.await;
    assert_eq!(app.audit_count().await, before + 1, "expected one audit entry; the answer was {}", reply.text());
    reply
}

/// Runs each test body once on SQLite and once on PostgreSQL.
macro_rules! on_both_stores {
    ($(async fn $name:ident($app:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let $app = crate::support::TestApp::start(crate::support::Backend::Sqlite).await;
                    $body
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    let $app = crate::support::TestApp::start(crate::support::Backend::Postgres).await;
                    $body
                }
            }
        )*
    };
}
pub(crate) use on_both_stores;
