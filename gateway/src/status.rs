//! The status listener, on its own port so that it is never reachable through the
//! proxy: liveness, readiness (a configuration is applied) and the applied version,
//! with where it came from (the bus, or only the last-known-good file), the state of
//! upstream targets, and Prometheus metrics (see `metrics` and `docs/metrics.md`).

use std::future::Future;
use std::io;

use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::config::ConfigStore;
use crate::metrics::{self, TargetState};

/// Serves `GET /status/live`, `GET /status/ready`, `GET /status`,
/// `GET /status/upstreams` and `GET /metrics` until `shutdown` completes:
/// - `/status/live`: 200 while the process serves at all;
/// - `/status/ready`: 200 once a configuration snapshot is applied, 503 before;
///   a gateway serving its last-known-good file is ready (it routes), and degraded;
/// - `/status`: 200 with `{"ready", "config_version", "config_checksum", "source",
///   "degraded"}`, `source` being `"bus"`, `"last-known-good"` or `null` before the
///   first snapshot, and `degraded` true while only the file has been applied;
/// - `/status/upstreams`: 200 with `{"upstreams": [{"id", "targets": [{"url", "state",
///   "up", "healthy", "ejected", "circuit", "in_flight"}]}]}` for every upstream some
///   applied (or still pinned) configuration uses, sorted by id then URL;
/// - `/metrics`: Prometheus text exposition format 0.0.4 (`docs/metrics.md`).
///
/// Both `/status/ready` and `/status` answer the same document.
pub async fn serve_status(
    listener: TcpListener,
    store: ConfigStore,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(listener, router(store)).with_graceful_shutdown(shutdown).await
}

fn router(store: ConfigStore) -> Router {
    Router::new()
        .route("/status/live", get(live))
        .route("/status/ready", get(ready))
        .route("/status", get(status))
        .route("/status/upstreams", get(upstreams))
        .route("/metrics", get(prometheus))
        .with_state(store)
}

async fn live() -> &'static str {
    "ok"
}

async fn ready(State(store): State<ConfigStore>) -> Response {
    let status = store.status();
    let code = if status.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(status)).into_response()
}

async fn status(State(store): State<ConfigStore>) -> Json<crate::config::ConfigStatus> {
    Json(store.status())
}

async fn prometheus(State(store): State<ConfigStore>) -> Response {
    let text = store.metrics().render(&store.status(), &store.upstreams().targets());
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

#[derive(Debug, Serialize)]
struct Upstreams {
    upstreams: Vec<UpstreamReport>,
}

#[derive(Debug, Serialize)]
struct UpstreamReport {
    id: String,
    targets: Vec<TargetReport>,
}

#[derive(Debug, Serialize)]
struct TargetReport {
    url: String,
    /// `healthy`, `circuit_half_open`, `circuit_open`, `unhealthy` or `ejected`.
    state: &'static str,
    /// Whether the target takes requests (as `turnpike_upstream_target_up`).
    up: bool,
    healthy: bool,
    ejected: bool,
    circuit: &'static str,
    /// Requests in flight on the target, responses still streaming included.
    in_flight: usize,
}

async fn upstreams(State(store): State<ConfigStore>) -> Json<Upstreams> {
    let mut upstreams: Vec<UpstreamReport> = Vec::new();
    // Sorted by upstream id, then URL: each upstream's targets are adjacent.
    for t in store.upstreams().targets() {
        let state = TargetState::of(&t);
        let target = TargetReport {
            state: state.as_str(),
            up: state.is_up(),
            healthy: t.healthy,
            ejected: t.ejected,
            circuit: t.circuit,
            in_flight: t.in_flight,
            url: t.url,
        };
        match upstreams.last_mut() {
            Some(last) if last.id == t.upstream_id => last.targets.push(target),
            _ => upstreams.push(UpstreamReport { id: t.upstream_id, targets: vec![target] }),
        }
    }
    Json(Upstreams { upstreams })
}
