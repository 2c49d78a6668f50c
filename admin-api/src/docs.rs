//! Interactive documentation: the generated OpenAPI document and a Swagger UI page
//! whose assets are vendored in `static/` and compiled into the binary, so the docs
//! work with no network and from any working directory.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AdminState;

const ASSETS: &[(&str, &str, &[u8])] = &[
    ("admin-docs.js", "text/javascript", include_bytes!("../../static/admin-docs.js")),
    (
        "vendor/swagger-ui/swagger-ui-bundle.js",
        "text/javascript",
        include_bytes!("../../static/vendor/swagger-ui/swagger-ui-bundle.js"),
    ),
    ("vendor/swagger-ui/swagger-ui.css", "text/css", include_bytes!("../../static/vendor/swagger-ui/swagger-ui.css")),
];

const DOCS_PAGE: &str = include_str!("../../static/admin-docs.html");

fn asset(content_type: &'static str, body: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
        ],
        body,
    )
        .into_response()
}

async fn static_asset(axum::extract::Path(path): axum::extract::Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == path) {
        Some((_, content_type, body)) => asset(content_type, body),
        None => crate::problem::Problem::new(StatusCode::NOT_FOUND, "not-found", "no such asset").into_response(),
    }
}

pub fn router(doc: utoipa::openapi::OpenApi) -> Router<AdminState> {
    let json = doc.to_pretty_json().expect("the OpenAPI document serializes");
    Router::new()
        .route("/admin/openapi.json", get(move || async move { ([(header::CONTENT_TYPE, "application/json")], json) }))
        .route(
            "/admin/docs",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                        (
                            header::CONTENT_SECURITY_POLICY,
                            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
                        ),
                    ],
                    DOCS_PAGE,
                )
            }),
        )
        .route("/admin/static/{*path}", get(static_asset))
}
