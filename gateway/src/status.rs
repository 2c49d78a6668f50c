//! The status listener, on its own port so that it is never reachable through the
//! proxy: liveness, readiness (a configuration is applied) and the applied version,
//! with where it came from (the bus, or only the last-known-good file).

use std::future::Future;
use std::io;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::config::ConfigStore;

/// Serves `GET /status/live`, `GET /status/ready` and `GET /status` until `shutdown`
/// completes:
/// - `/status/live`: 200 while the process serves at all;
/// - `/status/ready`: 200 once a configuration snapshot is applied, 503 before;
///   a gateway serving its last-known-good file is ready (it routes), and degraded;
/// - `/status`: 200 with `{"ready", "config_version", "config_checksum", "source",
///   "degraded"}`, `source` being `"bus"`, `"last-known-good"` or `null` before the
///   first snapshot, and `degraded` true while only the file has been applied.
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
