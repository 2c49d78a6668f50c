//! Browser assets under `/static/`, compiled into the binary so the portal works from
//! any working directory and with no network. Add vendored files to [`ASSETS`].

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::PortalState;
use crate::pages::PageError;

/// Path under `/static/`, content type, contents.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("portal.css", "text/css; charset=utf-8", include_bytes!("../../static/portal/portal.css")),
    ("favicon.svg", "image/svg+xml", include_bytes!("../../static/portal/favicon.svg")),
    ("portal-copy.js", "text/javascript; charset=utf-8", include_bytes!("../../static/portal/portal-copy.js")),
    // The interactive reference docs (catalog.rs): Swagger UI, vendored, and its start-up script.
    ("docs.js", "text/javascript; charset=utf-8", include_bytes!("../../static/portal/docs.js")),
    (
        "vendor/swagger-ui/swagger-ui-bundle.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/vendor/swagger-ui/swagger-ui-bundle.js"),
    ),
    (
        "vendor/swagger-ui/swagger-ui.css",
        "text/css; charset=utf-8",
        include_bytes!("../../static/vendor/swagger-ui/swagger-ui.css"),
    ),
];

pub(crate) fn routes() -> Router<PortalState> {
    Router::new().route("/static/{*path}", get(asset))
}

async fn asset(Path(path): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == path) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
            ],
            *body,
        )
            .into_response(),
        None => PageError::not_found().into_response(),
    }
}
