//! Request validation end to end: a version imported from an OpenAPI document, its
//! policies set to validate requests, and the gateway refusing what the document
//! does not describe before the upstream sees it. The snapshot carries the document
//! only while the policy is on.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Reply, TestApp, Upstream, on_both_stores};

/// Publishes the expanded petstore as `pets` v1, validating requests, in front of `upstream`.
async fn validated_petstore(app: &TestApp, upstream: &Upstream) {
    let fixture = turnpike_testkit::fixtures_dir().join("openapi/oai-v3.0-petstore-expanded.yaml");
    let text = std::fs::read_to_string(&fixture).unwrap_or_else(|e| panic!("reading {}: {e}", fixture.display()));
    app.post("/admin/v1/apis", json!({"name": "pets", "slug": "pets"})).await.expect(201);
    app.put_raw("/admin/v1/apis/pets/versions/v1/openapi", "application/yaml", text).await.expect(201);
    let up = app.post("/admin/v1/upstreams", json!({"name": "pets-up", "targets": [{"url": upstream.url}]})).await;
    let patch = json!({"upstream_id": up.expect(201)["id"], "policies": {"validate_requests": true}});
    let version = app.patch("/admin/v1/apis/pets/versions/v1", patch).await.expect(200);
    assert_eq!(version["policies"]["validate_requests"], true, "{version}");
    app.post("/admin/v1/apis/pets/versions/v1/publish", json!({})).await.expect(200);
}

/// Posts a JSON body through the gateway once the newest configuration is applied.
async fn post_json(app: &TestApp, path: &str, body: Value) -> Reply {
    app.settled().await;
    let res = app
        .client
        .post(format!("{}{path}", app.gateway_url))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    Reply { status: res.status(), headers: res.headers().clone(), body: res.bytes().await.unwrap().to_vec() }
}

/// Asserts a 400 from request validation whose first error is at `location`.
#[track_caller]
fn invalid_at(reply: &Reply, location: &str) -> Value {
    let problem = reply.problem(400);
    assert_eq!(problem["type"], "urn:turnpike:problem:invalid-request", "{problem}");
    assert_eq!(problem["errors"][0]["location"], location, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains(location), "{problem}");
    problem
}

/// Whether the newest snapshot carries the version's OpenAPI document.
async fn snapshot_carries_document(app: &TestApp) -> bool {
    let latest = turnpike_store::snapshots::latest(app.store.db()).await.unwrap().expect("a snapshot");
    let version = latest.content.versions.iter().find(|v| v.api_slug == "pets").expect("pets is published");
    version.openapi.is_some()
}

on_both_stores! {
    async fn an_imported_document_validates_requests_at_the_gateway(app) {
        let upstream = Upstream::start("pets").await;
        validated_petstore(&app, &upstream).await;
        assert!(snapshot_carries_document(&app).await);

        let problem = invalid_at(&post_json(&app, "/pets/v1/pets", json!({"tag": "cat"})).await, "body.name");
        assert_eq!(problem["errors"][0]["reason"], "is required", "{problem}");
        let ok = post_json(&app, "/pets/v1/pets", json!({"name": "rex", "tag": "dog"})).await.expect(200);
        assert_eq!((ok["upstream"].as_str(), ok["method"].as_str(), ok["path"].as_str()), (Some("pets"), Some("POST"), Some("/pets")));

        let problem = invalid_at(&app.call(Method::GET, "/pets/v1/pets?limit=abc").await, "query.limit");
        assert_eq!(problem["errors"][0]["reason"], "must be an integer", "{problem}");
        let listed = app.call(Method::GET, "/pets/v1/pets?limit=5&tags=a&tags=b").await.expect(200);
        assert_eq!(listed["path"], "/pets?limit=5&tags=a&tags=b");
        invalid_at(&app.call(Method::GET, "/pets/v1/pets/abc").await, "path.id");
        app.call(Method::DELETE, "/pets/v1/pets/12").await.expect(200);
    }

    async fn the_document_travels_in_snapshots_only_while_requests_are_validated(app) {
        let upstream = Upstream::start("pets").await;
        validated_petstore(&app, &upstream).await;
        invalid_at(&app.call(Method::GET, "/pets/v1/pets?limit=abc").await, "query.limit");

        let patch = json!({"policies": {"validate_requests": false}});
        app.patch("/admin/v1/apis/pets/versions/v1", patch).await.expect(200);
        assert!(!snapshot_carries_document(&app).await, "the snapshot stays small without validation");
        app.call(Method::GET, "/pets/v1/pets?limit=abc").await.expect(200);
        post_json(&app, "/pets/v1/pets", json!({"tag": "cat"})).await.expect(200);
    }
}
