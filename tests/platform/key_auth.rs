//! API keys at the gateway, end to end: an admin requires keys on a version, a
//! developer's application subscribes under a plan and gets a key, and the gateway
//! lets exactly the right calls through, tells the upstream who is calling, and
//! enforces the plan's limits.

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestApp, Upstream, on_both_stores};

/// Publishes `slug` v1 requiring API keys; returns the version id.
async fn keyed_api(app: &TestApp, slug: &str, upstream: &Upstream) -> String {
    app.draft_api(slug, &upstream.url).await;
    let path = format!("/admin/v1/apis/{slug}/versions/v1");
    app.patch(&path, json!({"policies": {"key_auth": {}}})).await.expect(200);
    app.post(&format!("{path}/publish"), json!({})).await.expect(200)["id"].as_str().unwrap().to_owned()
}

struct Caller {
    application: String,
    key: String,
    key_id: String,
}

/// A developer with an application subscribed to `version` under `plan`, holding a key.
async fn caller(app: &TestApp, email: &str, version: &str, plan: &str) -> Caller {
    let dev = app.post("/admin/v1/developers", json!({"email": email, "name": email})).await.expect(201);
    let application = app
        .post("/admin/v1/applications", json!({"developer_id": dev["id"], "name": format!("{email} app")}))
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post("/admin/v1/subscriptions", json!({"application_id": application, "version_id": version, "plan_id": plan}))
        .await
        .expect(201);
    let key = app.post(&format!("/admin/v1/applications/{application}/keys"), json!({"name": "k"})).await.expect(201);
    Caller { application, key: key["key"].as_str().unwrap().to_owned(), key_id: key["id"].as_str().unwrap().to_owned() }
}

async fn plan(app: &TestApp, slug: &str, extra: Value) -> String {
    let mut body = json!({"slug": slug, "name": slug});
    body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    app.post("/admin/v1/plans", body).await.expect(201)["id"].as_str().unwrap().to_owned()
}

on_both_stores! {
    async fn a_key_opens_its_subscribed_version_and_names_the_consumer(app) {
        let upstream = Upstream::start("keyed").await;
        let version = keyed_api(&app, "keyed", &upstream).await;
        let free = plan(&app, "free", json!({})).await;
        let ann = caller(&app, "ann@example.com", &version, &free).await;

        let missing = app.call(Method::GET, "/keyed/v1/things").await;
        let problem = missing.problem(401);
        assert!(problem["type"].as_str().unwrap().ends_with("missing-api-key"), "{problem}");
        assert_eq!(missing.headers["www-authenticate"], "ApiKey header=\"x-api-key\"");
        let wrong = app.call_with(Method::GET, "/keyed/v1/things", &[("x-api-key", "tpk_aaaaaaaa_nope")]).await;
        assert!(wrong.problem(401)["type"].as_str().unwrap().ends_with("invalid-api-key"));

        let ok = app
            .call_with(
                Method::GET,
                "/keyed/v1/things",
                &[("x-api-key", &ann.key), ("x-consumer-application-id", "forged")],
            )
            .await
            .expect(200);
        let seen = &ok["headers"];
        assert_eq!(seen["x-consumer-application-id"], ann.application.as_str(), "{seen}");
        assert_eq!(seen["x-consumer-key-id"], ann.key_id.as_str());
        assert_eq!(seen["x-consumer-plan-id"], free.as_str());
        assert!(seen.get("x-api-key").is_none(), "the key reached the upstream: {seen}");
    }

    async fn a_key_without_an_approved_subscription_is_forbidden_until_approved(app) {
        let upstream = Upstream::start("gated").await;
        let version = keyed_api(&app, "gated", &upstream).await;
        let gated = plan(&app, "gated", json!({"requires_approval": true})).await;
        let bob = caller(&app, "bob@example.com", &version, &gated).await;
        let headers = [("x-api-key", bob.key.as_str())];
        let refused = app.call_with(Method::GET, "/gated/v1/x", &headers).await;
        assert!(refused.problem(403)["type"].as_str().unwrap().ends_with("not-subscribed"));

        let pending = app.get(&format!("/admin/v1/subscriptions?application_id={}", bob.application)).await.expect(200);
        let id = pending["items"][0]["id"].as_str().unwrap().to_owned();
        app.post(&format!("/admin/v1/subscriptions/{id}/approve"), json!({})).await.expect(200);
        app.call_with(Method::GET, "/gated/v1/x", &headers).await.expect(200);

        // Revoking the subscription closes the door again at once.
        app.post(&format!("/admin/v1/subscriptions/{id}/revoke"), json!({})).await.expect(200);
        app.call_with(Method::GET, "/gated/v1/x", &headers).await.problem(403);
    }

    async fn a_revoked_or_expired_key_stops_working_at_once(app) {
        let upstream = Upstream::start("revoke").await;
        let version = keyed_api(&app, "revoke", &upstream).await;
        let free = plan(&app, "free", json!({})).await;
        let cat = caller(&app, "cat@example.com", &version, &free).await;
        let headers = [("x-api-key", cat.key.as_str())];
        app.call_with(Method::GET, "/revoke/v1/x", &headers).await.expect(200);
        app.delete(&format!("/admin/v1/applications/{}/keys/{}", cat.application, cat.key_id)).await.expect(200);
        app.call_with(Method::GET, "/revoke/v1/x", &headers).await.problem(401);

        // A key of another application still works, until its expiry passes.
        let dan = caller(&app, "dan@example.com", &version, &free).await;
        let soon = (chrono::Utc::now() + chrono::Duration::milliseconds(300)).to_rfc3339();
        app.patch(&format!("/admin/v1/applications/{}/keys/{}", dan.application, dan.key_id), json!({"expires_at": soon}))
            .await
            .expect(200);
        let dan_headers = [("x-api-key", dan.key.as_str())];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let status = app.call_with(Method::GET, "/revoke/v1/x", &dan_headers).await.status.as_u16();
            if status == 401 {
                break;
            }
            assert_eq!(status, 200);
            assert!(std::time::Instant::now() < deadline, "the expired key kept working");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    async fn a_plans_rate_limit_answers_429_with_retry_after(app) {
        let upstream = Upstream::start("limited").await;
        let version = keyed_api(&app, "limited", &upstream).await;
        let small = plan(&app, "small", json!({"rate_limit": {"requests": 2, "per_seconds": 60}})).await;
        let eve = caller(&app, "eve@example.com", &version, &small).await;
        let headers = [("x-api-key", eve.key.as_str())];
        let first = app.call_with(Method::GET, "/limited/v1/x", &headers).await;
        first.expect(200);
        assert_eq!(first.headers["ratelimit-limit"], "2");
        assert_eq!(first.headers["ratelimit-remaining"], "1");
        assert_eq!(first.headers["ratelimit-policy"], "2;w=60");
        let second = app.call_with(Method::GET, "/limited/v1/x", &headers).await;
        second.expect(200);
        assert_eq!(second.headers["ratelimit-remaining"], "0");
        let third = app.call_with(Method::GET, "/limited/v1/x", &headers).await;
        assert!(third.problem(429)["type"].as_str().unwrap().ends_with("rate-limited"));
        let retry: u64 = third.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=30).contains(&retry), "retry after {retry}");

        // Another consumer on the same plan has its own allowance.
        let fay = caller(&app, "fay@example.com", &version, &small).await;
        app.call_with(Method::GET, "/limited/v1/x", &[("x-api-key", fay.key.as_str())]).await.expect(200);
    }

    async fn a_plans_quota_is_counted_per_application(app) {
        let upstream = Upstream::start("quota").await;
        let version = keyed_api(&app, "quota", &upstream).await;
        let daily = plan(&app, "daily", json!({"quota": {"requests": 1, "period": "day"}})).await;
        let gus = caller(&app, "gus@example.com", &version, &daily).await;
        let headers = [("x-api-key", gus.key.as_str())];
        app.call_with(Method::GET, "/quota/v1/x", &headers).await.expect(200);
        let refused = app.call_with(Method::GET, "/quota/v1/x", &headers).await;
        assert!(refused.problem(429)["type"].as_str().unwrap().ends_with("quota-exceeded"));
        assert!(refused.headers.contains_key("retry-after"));
    }

    async fn a_versions_rate_limit_applies_per_client_ip_without_keys(app) {
        let upstream = Upstream::start("open").await;
        app.draft_api("open", &upstream.url).await;
        let path = "/admin/v1/apis/open/versions/v1";
        app.patch(path, json!({"policies": {"rate_limit": {"requests": 1, "per_seconds": 3600}}})).await.expect(200);
        app.post(&format!("{path}/publish"), json!({})).await.expect(200);
        app.call(Method::GET, "/open/v1/x").await.expect(200);
        app.call(Method::GET, "/open/v1/x").await.problem(429);
    }
}

on_both_stores! {
    async fn a_jwt_secret_is_write_only(app) {
        let upstream = Upstream::start("jwt").await;
        app.draft_api("jwt", &upstream.url).await;
        let path = "/admin/v1/apis/jwt/versions/v1";
        let secret = "an-hs256-secret-that-is-long-enough-1234";
        let policies = json!({"jwt": {"algorithm": "HS256", "secret": secret, "issuer": "me"}});
        let saved = app.patch(path, json!({"policies": policies})).await;
        assert!(!saved.text().contains(secret), "the secret was echoed: {}", saved.text());
        let read = app.get(path).await;
        assert!(!read.text().contains(secret), "the secret can be read back: {}", read.text());
        let mut record = read.expect(200);
        assert_eq!(record["policies"]["jwt"]["secret"], "<redacted>");

        // Sending the record's policies back (with a change) keeps the real secret.
        record["policies"]["jwt"]["issuer"] = json!("you");
        app.patch(path, json!({"policies": record["policies"]})).await.expect(200);
        let stored = turnpike_store::declarative::export(app.store.db()).await.unwrap();
        let jwt = stored.apis[0].versions[0].policies.jwt.as_ref().unwrap();
        assert_eq!(jwt.secret.as_ref().unwrap().expose(), secret);
        assert_eq!(jwt.issuer.as_deref(), Some("you"));
        let audit = app.get("/admin/v1/audit?per_page=200").await;
        assert!(!audit.text().contains(secret), "the secret reached the audit log");
    }
}
