//! The developer portal. Until the portal's own issue lands it answers every page
//! with a short placeholder that points developers at the admin API's docs.

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

const PLACEHOLDER: &str = "<!doctype html>
<html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">
<title>Turnpike developer portal</title></head>
<body><main><h1>Turnpike developer portal</h1>
<p>The developer portal is not available in this release yet. Sign-up, the API catalogue and self-service keys arrive with it.</p>
</main></body></html>
";

async fn placeholder() -> impl IntoResponse {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], PLACEHOLDER)
}

/// The portal's routes.
pub fn router() -> Router {
    Router::new().fallback(placeholder)
}
