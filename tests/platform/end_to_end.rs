//! Publish an API through the admin API and call it through the gateway.

use reqwest::Method;
use serde_json::json;

use crate::support::{Upstream, on_both_stores};

on_both_stores! {
    async fn publish_then_call_through_the_gateway(app) {
        let upstream = Upstream::start("hello").await;
        let slug = app.draft_api("hello", &upstream.url).await;

        // A draft is not served.
        app.call(Method::GET, "/hello/v1/greeting").await.problem(404);

        let published = app.post(&format!("/admin/v1/apis/{slug}/versions/v1/publish"), json!({})).await.expect(200);
        assert_eq!(published["state"], "published");

        let reply = app.call(Method::GET, "/hello/v1/greeting?name=ann").await;
        let body = reply.expect(200);
        assert_eq!(body["upstream"], "hello");
        assert_eq!(body["path"], "/greeting?name=ann", "base path stripped, query kept");
        assert_eq!(body["forwarded_for"], "127.0.0.1");

        // Deprecate: still served, with lifecycle headers.
        let sunset = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
        app.post(&format!("/admin/v1/apis/{slug}/versions/v1/deprecate"), json!({"sunset_at": sunset})).await.expect(200);
        let reply = app.call(Method::GET, "/hello/v1/greeting").await;
        reply.expect(200);
        assert!(reply.headers.contains_key("sunset"), "{:?}", reply.headers);
        assert!(reply.headers.get("deprecation").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with('@')));

        // Retire: 410 Gone from the gateway.
        app.post(&format!("/admin/v1/apis/{slug}/versions/v1/retire"), json!({})).await.expect(200);
        app.call(Method::GET, "/hello/v1/greeting").await.problem(410);
    }

    async fn every_change_to_live_config_produces_a_newer_snapshot(app) {
        let first = app.get("/admin/v1/config/snapshot").await.expect(200);
        let upstream = Upstream::start("snap").await;
        app.draft_api("snap", &upstream.url).await;
        // Drafts are not in the gateway's view: same snapshot.
        let after_draft = app.get("/admin/v1/config/snapshot").await.expect(200);
        assert_eq!(after_draft["version"], first["version"]);
        app.post("/admin/v1/apis/snap/versions/v1/publish", json!({})).await.expect(200);
        let after_publish = app.get("/admin/v1/config/snapshot").await.expect(200);
        assert!(after_publish["version"].as_u64() > first["version"].as_u64());
        assert_ne!(after_publish["checksum"], first["checksum"]);
        assert_eq!(after_publish["routes"], 1);
        app.settled().await;
        assert_eq!(app.gateway.current().unwrap().version(), after_publish["version"].as_u64().unwrap());
    }
}
