//! The admin API's OpenAPI document is generated from the handlers; the committed
//! copy at `openapi/admin-api.json` must match it. Regenerate with
//! `UPDATE_OPENAPI=1 cargo test --test platform openapi_document`.

use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("openapi/admin-api.json")
}

#[test]
fn committed_admin_api_document_is_current() {
    let generated = turnpike_admin_api::openapi().to_pretty_json().unwrap() + "\n";
    let path = committed_path();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/admin-api.json is stale; run `UPDATE_OPENAPI=1 cargo test --test platform openapi_document` and commit it"
    );
}

#[test]
fn document_describes_every_resource_with_bearer_security() {
    let doc: serde_json::Value = serde_json::to_value(turnpike_admin_api::openapi()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for expected in [
        "/admin/v1/tokens",
        "/admin/v1/upstreams/{upstream}",
        "/admin/v1/apis/{api}",
        "/admin/v1/apis/{api}/versions/{version}/publish",
        "/admin/v1/apis/{api}/versions/{version}/deprecate",
        "/admin/v1/apis/{api}/versions/{version}/retire",
        "/admin/v1/apis/{api}/versions/{version}/copy",
        "/admin/v1/apis/{api}/versions/{version}/openapi",
        "/admin/v1/apis/{api}/versions/{version}/routes/{route}",
        "/admin/v1/plans/{plan}",
        "/admin/v1/developers/{id}",
        "/admin/v1/applications/{id}/keys",
        "/admin/v1/subscriptions/{id}/approve",
        "/admin/v1/config/snapshot",
        "/admin/v1/audit",
        "/admin/v1/certificates/{id}",
    ] {
        assert!(paths.contains_key(expected), "missing {expected}");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));
}
