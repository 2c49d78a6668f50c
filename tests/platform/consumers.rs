//! The consumer side of the admin API: plans, developers, applications,
//! subscriptions and API keys, plus the admin tokens that guard every route.
//! Secrets are shown once, at creation, and never again: not in lists, not in the
//! audit log.

use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use turnpike_domain::secrets::generate_admin_token;

use crate::support::{Reply, TestApp, Upstream, accepted, on_both_stores, refused};

/// Publishes API `slug` (version v1 on a real upstream) and returns v1's id.
async fn published_version(app: &TestApp, slug: &str) -> String {
    let upstream = Upstream::start("consumers").await;
    app.draft_api(slug, &upstream.url).await;
    let v1 = app.post(&format!("/admin/v1/apis/{slug}/versions/v1/publish"), json!({})).await.expect(200);
    id(&v1)
}

fn id(record: &Value) -> String {
    record["id"].as_str().unwrap_or_else(|| panic!("no id in {record}")).to_owned()
}

async fn developer(app: &TestApp, email: &str) -> String {
    id(&app.post("/admin/v1/developers", json!({"email": email, "name": email})).await.expect(201))
}

async fn application(app: &TestApp, developer_id: &str, name: &str) -> String {
    id(&app.post("/admin/v1/applications", json!({"developer_id": developer_id, "name": name})).await.expect(201))
}

async fn plan(app: &TestApp, slug: &str, requires_approval: bool) -> String {
    let body = json!({"slug": slug, "name": slug, "requires_approval": requires_approval});
    id(&app.post("/admin/v1/plans", body).await.expect(201))
}

async fn subscribe(app: &TestApp, application_id: &str, version_id: &str, plan: &str) -> Reply {
    app.post(
        "/admin/v1/subscriptions",
        json!({"application_id": application_id, "version_id": version_id, "plan_id": plan}),
    )
    .await
}

/// Approves, rejects or revokes a subscription.
async fn decide(app: &TestApp, subscription: &str, action: &str) -> Reply {
    app.post(&format!("/admin/v1/subscriptions/{subscription}/{action}"), json!({})).await
}

fn ids(page: &Value) -> Vec<String> {
    page["items"].as_array().unwrap_or_else(|| panic!("not a page: {page}")).iter().map(id).collect()
}

/// Whether `text` holds a run of 64 hex digits: the shape of a stored credential hash.
fn has_hex_hash(text: &str) -> bool {
    text.as_bytes().split(|b| !b.is_ascii_hexdigit()).any(|run| run.len() >= 64)
}

/// A GET on the admin API with exactly this `Authorization` header (or none).
async fn get_with_authorization(app: &TestApp, path: &str, authorization: Option<&str>) -> Reply {
    let mut request = app.client.get(format!("{}{path}", app.admin_url));
    if let Some(value) = authorization {
        request = request.header(AUTHORIZATION, value);
    }
    let res = request.send().await.expect("admin API reachable");
    Reply { status: res.status(), headers: res.headers().clone(), body: res.bytes().await.unwrap().to_vec() }
}

#[track_caller]
fn assert_unauthorized(reply: &Reply, what: &str) {
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}: {}", reply.text());
    reply.problem(401);
    assert_eq!(reply.headers.get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()), Some("Bearer"), "{what}");
}

on_both_stores! {
    async fn plans_are_created_read_patched_and_deleted(app) {
        let body = json!({
            "slug": "gold",
            "name": "Gold",
            "rate_limit": {"requests": 10, "per_seconds": 60},
            "quota": {"requests": 1000, "period": "day"},
        });
        let created = accepted(&app, app.post("/admin/v1/plans", body)).await.expect(201);
        assert_eq!(created["slug"], "gold");
        assert_eq!(created["requires_approval"], false);

        let fetched = app.get("/admin/v1/plans/gold").await.expect(200);
        assert_eq!(fetched["id"], created["id"]);
        assert_eq!(fetched["rate_limit"], json!({"requests": 10, "per_seconds": 60}));
        refused(&app, app.post("/admin/v1/plans", json!({"slug": "gold", "name": "Again"}))).await.problem(409);

        // A merge patch: `null` removes, absent fields stay.
        let patch = json!({"name": "Gold Plus", "rate_limit": null, "requires_approval": true});
        let patched = accepted(&app, app.patch("/admin/v1/plans/gold", patch)).await.expect(200);
        assert_eq!(patched["name"], "Gold Plus");
        assert_eq!(patched["rate_limit"], Value::Null);
        assert_eq!(patched["quota"], json!({"requests": 1000, "period": "day"}));
        assert_eq!(patched["requires_approval"], true);
        assert_eq!(app.get(&format!("/admin/v1/plans/{}", id(&created))).await.expect(200)["name"], "Gold Plus");

        let problem = refused(&app, app.patch("/admin/v1/plans/gold", json!({"slug": "platinum"}))).await.problem(422);
        assert_eq!(problem["errors"][0]["field"], "slug", "{problem}");
        app.get("/admin/v1/plans/platinum").await.problem(404);
        let problem =
            refused(&app, app.patch("/admin/v1/plans/gold", json!({"rate_limit": {"requests": 0, "per_seconds": 1}})))
                .await
                .problem(422);
        assert_eq!(problem["errors"][0]["field"], "rate_limit.requests", "{problem}");
        assert_eq!(app.get("/admin/v1/plans/gold").await.expect(200)["name"], "Gold Plus");

        accepted(&app, app.delete("/admin/v1/plans/gold")).await.expect(204);
        app.get("/admin/v1/plans/gold").await.problem(404);
        refused(&app, app.delete("/admin/v1/plans/gold")).await.problem(404);
    }

    async fn a_plan_in_use_cannot_be_deleted(app) {
        let version = published_version(&app, "planned").await;
        let dev = developer(&app, "ann@example.com").await;
        let application = application(&app, &dev, "ann-app").await;
        plan(&app, "basic", false).await;
        let subscription = id(&subscribe(&app, &application, &version, "basic").await.expect(201));

        let problem = refused(&app, app.delete("/admin/v1/plans/basic")).await.problem(409);
        assert!(problem["detail"].as_str().unwrap().contains("subscription"), "{problem}");
        app.get("/admin/v1/plans/basic").await.expect(200);

        accepted(&app, app.delete(&format!("/admin/v1/subscriptions/{subscription}"))).await.expect(204);
        accepted(&app, app.delete("/admin/v1/plans/basic")).await.expect(204);
    }

    async fn developer_emails_are_normalized_and_unique(app) {
        let ann = accepted(&app, app.post("/admin/v1/developers", json!({"email": " Ann@Example.COM ", "name": "Ann"})))
            .await
            .expect(201);
        assert_eq!(ann["email"], "ann@example.com");
        let stored = app.get(&format!("/admin/v1/developers/{}", id(&ann))).await.expect(200);
        assert_eq!(stored["email"], "ann@example.com");

        for email in ["ann@example.com", "ANN@EXAMPLE.COM"] {
            let problem = refused(&app, app.post("/admin/v1/developers", json!({"email": email, "name": "Copy"})))
                .await
                .problem(409);
            assert!(problem["detail"].as_str().unwrap().contains("ann@example.com"), "{problem}");
        }
        for email in ["not-an-email", "ann@", "@example.com", "ann@localhost"] {
            let problem = refused(&app, app.post("/admin/v1/developers", json!({"email": email, "name": "Bad"})))
                .await
                .problem(422);
            assert_eq!(problem["errors"][0]["field"], "email", "{email}: {problem}");
        }

        // Changing an email to one already taken, in any case, is refused too.
        let bob = developer(&app, "bob@example.com").await;
        let bob_path = format!("/admin/v1/developers/{bob}");
        refused(&app, app.patch(&bob_path, json!({"email": "Ann@example.com"}))).await.problem(409);
        let patched = accepted(&app, app.patch(&bob_path, json!({"email": "Robert@Example.com"}))).await.expect(200);
        assert_eq!(patched["email"], "robert@example.com");
        assert_eq!(app.get("/admin/v1/developers").await.expect(200)["total"], 2);
    }

    async fn applications_belong_to_one_developer(app) {
        let ann = developer(&app, "ann@example.com").await;
        let bob = developer(&app, "bob@example.com").await;

        let problem =
            refused(&app, app.post("/admin/v1/applications", json!({"developer_id": "no-such-dev", "name": "x"})))
                .await
                .problem(422);
        assert_eq!(problem["errors"][0]["field"], "developer_id", "{problem}");

        let anns = application(&app, &ann, "ann-app").await;
        let bobs = application(&app, &bob, "bob-app").await;

        let only_ann = app.get(&format!("/admin/v1/applications?developer_id={ann}")).await.expect(200);
        assert_eq!(ids(&only_ann), [anns.as_str()]);
        assert_eq!(only_ann["total"], 1);
        let everyone = app.get("/admin/v1/applications").await.expect(200);
        assert_eq!(everyone["total"], 2);
        assert!(ids(&everyone).contains(&bobs));

        let path = format!("/admin/v1/applications/{anns}");
        let problem = refused(&app, app.patch(&path, json!({"developer_id": bob}))).await.problem(422);
        assert_eq!(problem["errors"][0]["field"], "developer_id", "{problem}");
        let renamed = accepted(&app, app.patch(&path, json!({"name": "ann-renamed"}))).await.expect(200);
        assert_eq!(renamed["name"], "ann-renamed");
        assert_eq!(renamed["developer_id"], ann);
        assert_eq!(app.get(&path).await.expect(200)["developer_id"], ann);
    }

    async fn deleting_a_developer_removes_what_they_own(app) {
        let version = published_version(&app, "owned").await;
        plan(&app, "free", false).await;
        let ann = developer(&app, "ann@example.com").await;
        let bob = developer(&app, "bob@example.com").await;
        let anns = application(&app, &ann, "ann-app").await;
        let bobs = application(&app, &bob, "bob-app").await;
        for application in [&anns, &bobs] {
            subscribe(&app, application, &version, "free").await.expect(201);
            app.post(&format!("/admin/v1/applications/{application}/keys"), json!({"name": "k"})).await.expect(201);
        }

        accepted(&app, app.delete(&format!("/admin/v1/developers/{ann}"))).await.expect(204);
        app.get(&format!("/admin/v1/developers/{ann}")).await.problem(404);
        app.get(&format!("/admin/v1/applications/{anns}")).await.problem(404);
        app.get(&format!("/admin/v1/applications/{anns}/keys")).await.problem(404);
        let left = app.get(&format!("/admin/v1/subscriptions?application_id={anns}")).await.expect(200);
        assert_eq!(left["total"], 0, "{left}");

        // Bob's things are untouched.
        let bobs_subscriptions = app.get(&format!("/admin/v1/subscriptions?application_id={bobs}")).await.expect(200);
        assert_eq!(bobs_subscriptions["total"], 1);
        assert_eq!(app.get("/admin/v1/subscriptions").await.expect(200)["total"], 1);
        assert_eq!(app.get(&format!("/admin/v1/applications/{bobs}/keys")).await.expect(200)["total"], 1);
    }

    async fn a_plan_without_approval_approves_at_once(app) {
        let version = published_version(&app, "open").await;
        let dev = developer(&app, "ann@example.com").await;
        let application = application(&app, &dev, "ann-app").await;
        plan(&app, "free", false).await;
        plan(&app, "other", false).await;

        let sub = accepted(&app, subscribe(&app, &application, &version, "free")).await.expect(201);
        assert_eq!(sub["state"], "approved");
        assert_eq!(sub["allowed_actions"], json!(["revoke"]));
        let sub = id(&sub);

        // One subscription per application and version, whatever the plan.
        refused(&app, subscribe(&app, &application, &version, "free")).await.problem(409);
        refused(&app, subscribe(&app, &application, &version, "other")).await.problem(409);

        for action in ["approve", "reject"] {
            let problem = refused(&app, decide(&app, &sub, action)).await.problem(409);
            assert_eq!(problem["current_state"], "approved", "{action}: {problem}");
            assert_eq!(problem["allowed_actions"], json!(["revoke"]), "{action}: {problem}");
        }
        assert_eq!(app.get(&format!("/admin/v1/subscriptions/{sub}")).await.expect(200)["state"], "approved");

        let revoked = accepted(&app, decide(&app, &sub, "revoke")).await.expect(200);
        assert_eq!(revoked["state"], "revoked");
        assert_eq!(revoked["allowed_actions"], json!([]));
        let problem = refused(&app, decide(&app, &sub, "revoke")).await.problem(409);
        assert_eq!(problem["current_state"], "revoked");
        assert_eq!(problem["allowed_actions"], json!([]));
    }

    async fn a_plan_with_approval_waits_for_an_admin(app) {
        let version = published_version(&app, "gated").await;
        let dev = developer(&app, "ann@example.com").await;
        let first = application(&app, &dev, "first").await;
        let second = application(&app, &dev, "second").await;
        let third = application(&app, &dev, "third").await;
        plan(&app, "vetted", true).await;
        plan(&app, "instant", false).await;

        let to_approve = accepted(&app, subscribe(&app, &first, &version, "vetted")).await.expect(201);
        assert_eq!(to_approve["state"], "pending");
        assert_eq!(to_approve["allowed_actions"], json!(["approve", "reject"]));
        let to_approve = id(&to_approve);
        let to_reject = id(&subscribe(&app, &second, &version, "vetted").await.expect(201));
        let instant = id(&subscribe(&app, &third, &version, "instant").await.expect(201));

        let mut pending = ids(&app.get("/admin/v1/subscriptions?state=pending").await.expect(200));
        pending.sort();
        let mut expected = vec![to_approve.clone(), to_reject.clone()];
        expected.sort();
        assert_eq!(pending, expected, "the approved subscription {instant} is not pending");

        let problem = refused(&app, decide(&app, &to_approve, "revoke")).await.problem(409);
        assert_eq!(problem["current_state"], "pending");
        assert_eq!(problem["allowed_actions"], json!(["approve", "reject"]));

        assert_eq!(accepted(&app, decide(&app, &to_approve, "approve")).await.expect(200)["state"], "approved");
        assert_eq!(accepted(&app, decide(&app, &to_reject, "reject")).await.expect(200)["state"], "rejected");

        assert_eq!(app.get("/admin/v1/subscriptions?state=pending").await.expect(200)["total"], 0);
        let rejected = app.get("/admin/v1/subscriptions?state=rejected").await.expect(200);
        assert_eq!(ids(&rejected), [to_reject.as_str()]);

        // Rejection is final.
        for action in ["approve", "revoke"] {
            let problem = refused(&app, decide(&app, &to_reject, action)).await.problem(409);
            assert_eq!(problem["current_state"], "rejected", "{action}: {problem}");
            assert_eq!(problem["allowed_actions"], json!([]), "{action}: {problem}");
        }

        assert_eq!(accepted(&app, decide(&app, &to_approve, "revoke")).await.expect(200)["state"], "revoked");
        assert_eq!(app.get(&format!("/admin/v1/subscriptions/{to_approve}")).await.expect(200)["state"], "revoked");
    }

    async fn only_published_versions_take_subscriptions(app) {
        let upstream = Upstream::start("states").await;
        app.draft_api("states", &upstream.url).await;
        let draft = id(&app.get("/admin/v1/apis/states/versions/v1").await.expect(200));
        let dev = developer(&app, "ann@example.com").await;
        let application = application(&app, &dev, "ann-app").await;
        plan(&app, "free", false).await;

        let problem = refused(&app, subscribe(&app, &application, &draft, "free")).await.problem(409);
        assert!(problem["detail"].as_str().unwrap().contains("draft"), "{problem}");

        app.post("/admin/v1/apis/states/versions/v1/publish", json!({})).await.expect(200);
        let sunset = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
        app.post("/admin/v1/apis/states/versions/v1/deprecate", json!({"sunset_at": sunset})).await.expect(200);
        let problem = refused(&app, subscribe(&app, &application, &draft, "free")).await.problem(409);
        assert!(problem["detail"].as_str().unwrap().contains("deprecated"), "{problem}");

        app.post("/admin/v1/apis/states/versions/v1/retire", json!({})).await.expect(200);
        refused(&app, subscribe(&app, &application, &draft, "free")).await.problem(409);

        let problem = refused(&app, subscribe(&app, &application, "no-such-version", "free")).await.problem(422);
        assert_eq!(problem["errors"][0]["field"], "version_id", "{problem}");
        assert_eq!(app.get("/admin/v1/subscriptions").await.expect(200)["total"], 0);
    }

    async fn an_api_key_is_shown_once(app) {
        let dev = developer(&app, "ann@example.com").await;
        let application = application(&app, &dev, "ann-app").await;
        let keys = format!("/admin/v1/applications/{application}/keys");

        let created = accepted(&app, app.post(&keys, json!({"name": "ci"}))).await.expect(201);
        let key = created["key"].as_str().unwrap().to_owned();
        let prefix = created["prefix"].as_str().unwrap();
        assert!(key.starts_with(&format!("tpk_{prefix}_")), "key {key} with prefix {prefix}");
        assert_eq!(created["revoked_at"], Value::Null);

        let listed = app.get(&keys).await;
        let body = listed.text();
        let page = listed.expect(200);
        assert_eq!(ids(&page), [id(&created)]);
        assert_eq!(page["items"][0]["prefix"], prefix);
        assert!(!body.contains(&key), "the key is listed: {body}");
        assert!(!body.contains("\"key\""), "a key field is listed: {body}");
        assert!(!body.contains("hash") && !has_hex_hash(&body), "a hash is listed: {body}");

        let yesterday = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
        let problem =
            refused(&app, app.post(&keys, json!({"name": "old", "expires_at": yesterday}))).await.problem(422);
        assert_eq!(problem["errors"][0]["field"], "expires_at", "{problem}");

        // One key can be read, renamed and given an expiry; the key itself never comes back.
        let one = format!("{keys}/{}", id(&created));
        let fetched = app.get(&one).await;
        assert!(!fetched.text().contains(&key));
        assert_eq!(fetched.expect(200)["name"], "ci");
        let next_year = (chrono::Utc::now() + chrono::Duration::days(365)).to_rfc3339();
        let renamed =
            accepted(&app, app.patch(&one, json!({"name": "ci-2", "expires_at": next_year}))).await.expect(200);
        assert_eq!(renamed["name"], "ci-2");
        assert!(renamed["expires_at"].is_string(), "{renamed}");
        let problem = refused(&app, app.patch(&one, json!({"expires_at": yesterday.clone()}))).await.problem(422);
        assert_eq!(problem["errors"][0]["field"], "expires_at", "{problem}");
        refused(&app, app.patch(&one, json!({"key": "tpk_x"}))).await.problem(422);

        let revoked = accepted(&app, app.delete(&one)).await.expect(200);
        refused(&app, app.patch(&one, json!({"name": "after"}))).await.problem(409);
        assert!(revoked["revoked_at"].is_string(), "{revoked}");
        assert!(app.get(&keys).await.expect(200)["items"][0]["revoked_at"].is_string());
        assert_eq!(app.get(&keys).await.expect(200)["total"], 1);

        app.get("/admin/v1/applications/no-such-app/keys").await.problem(404);
        refused(&app, app.post("/admin/v1/applications/no-such-app/keys", json!({"name": "x"}))).await.problem(404);
    }

    async fn an_admin_token_works_until_revoked(app) {
        let created = accepted(&app, app.post("/admin/v1/tokens", json!({"name": "ci-deploy"}))).await.expect(201);
        let token = created["token"].as_str().unwrap().to_owned();
        assert!(token.starts_with(&format!("tpa_{}_", created["prefix"].as_str().unwrap())), "{token}");

        let fetched = app.get(&format!("/admin/v1/tokens/{}", id(&created))).await;
        assert!(!fetched.text().contains(&token), "the token is shown again");
        assert_eq!(fetched.expect(200)["name"], "ci-deploy");
        app.get("/admin/v1/tokens/no-such-token").await.problem(404);

        let reply = app.send(Method::GET, "/admin/v1/apis", None, Some(&token)).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        // Its changes are audited under its own id.
        let write = app.send(
            Method::POST,
            "/admin/v1/plans",
            Some(("application/json", json!({"slug": "by-ci", "name": "By CI"}).to_string().into_bytes())),
            Some(&token),
        );
        accepted(&app, write).await.expect(201);
        let newest = app.get("/admin/v1/audit?per_page=1").await.expect(200);
        assert_eq!(newest["items"][0]["actor"], format!("token:{}", id(&created)));

        let listed = app.get("/admin/v1/tokens").await;
        let body = listed.text();
        assert_eq!(listed.expect(200)["total"], 2);
        for secret in [&token, &app.token] {
            assert!(!body.contains(secret.as_str()), "a token is listed: {body}");
        }
        assert!(!body.contains("\"token\"") && !has_hex_hash(&body), "{body}");

        let revoked = accepted(&app, app.delete(&format!("/admin/v1/tokens/{}", id(&created)))).await.expect(200);
        assert!(revoked["revoked_at"].is_string(), "{revoked}");

        let fetched = app.get(&format!("/admin/v1/tokens/{}", id(&created))).await;
        assert!(!fetched.text().contains(&token), "the token is shown again");
        assert_eq!(fetched.expect(200)["name"], "ci-deploy");
        app.get("/admin/v1/tokens/no-such-token").await.problem(404);

        let reply = app.send(Method::GET, "/admin/v1/apis", None, Some(&token)).await;
        assert_unauthorized(&reply, "a revoked token");
        // The bootstrap token is unaffected.
        app.get("/admin/v1/apis").await.expect(200);
    }

    async fn requests_without_a_valid_token_are_refused(app) {
        let unknown = generate_admin_token().plaintext;
        let bearer_unknown = format!("Bearer {unknown}");
        let basic = format!("Basic {}", app.token);
        let other_case_token = format!("Bearer {}", app.token.to_uppercase());
        let attempts = [
            None,
            Some("Bearer"),
            Some("Bearer "),
            Some("Bearer tpa_\u{e9}"),
            Some(basic.as_str()),
            Some(bearer_unknown.as_str()),
            Some(other_case_token.as_str()),
        ];
        for authorization in attempts {
            let reply = get_with_authorization(&app, "/admin/v1/apis", authorization).await;
            assert_unauthorized(&reply, &format!("Authorization: {authorization:?}"));
        }
        // A refused write leaves no trace.
        let write = app.send(
            Method::POST,
            "/admin/v1/plans",
            Some(("application/json", json!({"slug": "sneaky", "name": "Sneaky"}).to_string().into_bytes())),
            Some(&unknown),
        );
        assert_unauthorized(&refused(&app, write).await, "a write with an unknown token");
        app.get("/admin/v1/plans/sneaky").await.problem(404);
        // The same request with the real token passes, so the refusals were about the token.
        let reply = get_with_authorization(&app, "/admin/v1/apis", Some(&format!("Bearer {}", app.token))).await;
        reply.expect(200);
    }

    async fn secrets_never_reach_the_audit_log(app) {
        let dev = developer(&app, "ann@example.com").await;
        let application = application(&app, &dev, "ann-app").await;
        let keys = format!("/admin/v1/applications/{application}/keys");
        let key = app.post(&keys, json!({"name": "ci"})).await.expect(201);
        let token = app.post("/admin/v1/tokens", json!({"name": "ops"})).await.expect(201);

        let audit = app.get("/admin/v1/audit?per_page=200").await;
        let body = audit.text();
        let page = audit.expect(200);
        let actions: Vec<&str> =
            page["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert!(actions.contains(&"key.create") && actions.contains(&"token.create"), "{actions:?}");
        for secret in [key["key"].as_str().unwrap(), token["token"].as_str().unwrap(), app.token.as_str()] {
            assert!(!body.contains(secret), "a secret is in the audit log: {body}");
        }
        assert!(!has_hex_hash(&body), "a credential hash is in the audit log: {body}");
    }
}
