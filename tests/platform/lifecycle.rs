//! The version lifecycle over HTTP: every transition from every state, the rules on
//! sunset dates, successors, copying and deleting, and what the gateway serves after
//! each change. Every refused request must leave the audit log as it was.

use chrono::{Duration, Utc};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{Reply, TestApp, Upstream, accepted, on_both_stores, refused};

/// A state, and where each action leads from it (`None`: refused).
type Row = (&'static str, [(&'static str, Option<&'static str>); 3]);

/// The lifecycle as the API documents it, written out here rather than read from the product.
const TABLE: [Row; 4] = [
    ("draft", [("publish", Some("published")), ("deprecate", None), ("retire", Some("retired"))]),
    ("published", [("publish", None), ("deprecate", Some("deprecated")), ("retire", Some("retired"))]),
    ("deprecated", [("publish", Some("published")), ("deprecate", None), ("retire", Some("retired"))]),
    ("retired", [("publish", None), ("deprecate", None), ("retire", None)]),
];

/// The actions the table allows from `state`, in the order the API lists them.
fn allowed_from(state: &str) -> Vec<&'static str> {
    let (_, actions) = TABLE.iter().find(|(s, _)| *s == state).expect("a known state");
    actions.iter().filter(|(_, to)| to.is_some()).map(|(action, _)| *action).collect()
}

fn in_days(days: i64) -> String {
    (Utc::now() + Duration::days(days)).to_rfc3339()
}

fn version_path(slug: &str, label: &str) -> String {
    format!("/admin/v1/apis/{slug}/versions/{label}")
}

/// Asks for a lifecycle action on a version; deprecation comes with a sunset a month away.
async fn act(app: &TestApp, slug: &str, label: &str, action: &str) -> Reply {
    let body = if action == "deprecate" { json!({"sunset_at": in_days(30)}) } else { json!({}) };
    app.post(&format!("{}/{action}", version_path(slug, label)), body).await
}

/// Adds version `label` to an API made by [`TestApp::draft_api`] (same upstream, a
/// catch-all route) and walks it to `state` through the API.
async fn add_version(app: &TestApp, slug: &str, label: &str, state: &str) -> Value {
    app.post(&format!("/admin/v1/apis/{slug}/versions"), json!({"label": label, "upstream_id": format!("{slug}-up")}))
        .await
        .expect(201);
    app.post(&format!("{}/routes", version_path(slug, label)), json!({"path": "/*"})).await.expect(201);
    let steps: &[&str] = match state {
        "draft" => &[],
        "published" => &["publish"],
        "deprecated" => &["publish", "deprecate"],
        "retired" => &["publish", "retire"],
        other => panic!("unknown state {other}"),
    };
    for step in steps {
        act(app, slug, label, step).await.expect(200);
    }
    let version = app.get(&version_path(slug, label)).await.expect(200);
    assert_eq!(version["state"], state);
    version
}

async fn route_count(app: &TestApp, slug: &str, label: &str) -> u64 {
    app.get(&format!("{}/routes", version_path(slug, label))).await.expect(200)["total"].as_u64().unwrap()
}

on_both_stores! {
    async fn every_action_from_every_state_follows_the_lifecycle_table(app) {
        let upstream = Upstream::start("table").await;
        let slug = app.draft_api("table", &upstream.url).await;

        for (state, actions) in TABLE {
            for (action, outcome) in actions {
                // A fresh version per case, so each starts exactly in `state`.
                let label = format!("{state}-{action}");
                add_version(&app, &slug, &label, state).await;
                match outcome {
                    Some(to) => {
                        let moved = accepted(&app, act(&app, &slug, &label, action)).await.expect(200);
                        assert_eq!(moved["state"], to, "{state} --{action}-->");
                        assert_eq!(moved["allowed_transitions"], json!(allowed_from(to)), "{state} --{action}-->");
                        let stored = app.get(&version_path(&slug, &label)).await.expect(200);
                        assert_eq!(stored["state"], to, "{state} --{action}--> is stored");
                    }
                    None => {
                        let problem = refused(&app, act(&app, &slug, &label, action)).await.problem(409);
                        assert_eq!(problem["current_state"], state, "{state} --{action}-->: {problem}");
                        assert_eq!(
                            problem["allowed_transitions"],
                            json!(allowed_from(state)),
                            "{state} --{action}-->: {problem}"
                        );
                        let stored = app.get(&version_path(&slug, &label)).await.expect(200);
                        assert_eq!(stored["state"], state, "{state} --{action}--> left the version alone");
                    }
                }
            }
        }
    }

    async fn deprecating_needs_a_sunset_in_the_future(app) {
        let upstream = Upstream::start("sunset").await;
        let slug = app.draft_api("sunset", &upstream.url).await;
        act(&app, &slug, "v1", "publish").await.expect(200);
        let deprecate = format!("{}/deprecate", version_path(&slug, "v1"));

        let problem = refused(&app, app.post(&deprecate, json!({}))).await.problem(422);
        assert_eq!(problem["errors"][0]["field"], "sunset_at", "{problem}");

        let yesterday = in_days(-1);
        let problem = refused(&app, app.post(&deprecate, json!({"sunset_at": yesterday}))).await.problem(422);
        assert_eq!(problem["errors"][0]["field"], "sunset_at", "{problem}");

        let stored = app.get(&version_path(&slug, "v1")).await.expect(200);
        assert_eq!(stored["state"], "published");
        assert_eq!(stored["sunset_at"], Value::Null);

        let sunset = Utc::now() + Duration::days(30);
        let deprecated =
            accepted(&app, app.post(&deprecate, json!({"sunset_at": sunset.to_rfc3339()}))).await.expect(200);
        assert_eq!(deprecated["state"], "deprecated");
        let stored: chrono::DateTime<Utc> = deprecated["sunset_at"].as_str().unwrap().parse().unwrap();
        assert_eq!(stored.timestamp(), sunset.timestamp());
    }

    async fn a_successor_is_announced_by_the_gateway(app) {
        let upstream = Upstream::start("succ").await;
        let slug = app.draft_api("succ", &upstream.url).await;
        act(&app, &slug, "v1", "publish").await.expect(200);
        let v2 = add_version(&app, &slug, "v2", "published").await;
        let deprecate = format!("{}/deprecate", version_path(&slug, "v1"));

        let other = Upstream::start("other").await;
        app.draft_api("other", &other.url).await;
        let foreign = app.get(&version_path("other", "v1")).await.expect(200)["id"].as_str().unwrap().to_owned();
        for successor in ["v9", "v1", foreign.as_str()] {
            let body = json!({"sunset_at": in_days(30), "successor": successor});
            let problem = refused(&app, app.post(&deprecate, body)).await.problem(422);
            assert_eq!(problem["errors"][0]["field"], "successor", "successor {successor}: {problem}");
        }

        let body = json!({"sunset_at": in_days(30), "successor": "v2"});
        let deprecated = accepted(&app, app.post(&deprecate, body)).await.expect(200);
        assert_eq!(deprecated["successor_id"], v2["id"]);
        assert_eq!(app.get(&version_path(&slug, "v1")).await.expect(200)["successor_id"], v2["id"]);

        let reply = app.call(Method::GET, "/succ/v1/pets").await;
        assert_eq!(reply.expect(200)["path"], "/pets");
        let links: Vec<&str> = reply.headers.get_all("link").iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(links, ["</succ/v2>; rel=\"successor-version\""], "{:?}", reply.headers);

        // The successor itself is not deprecated and links nowhere.
        let reply = app.call(Method::GET, "/succ/v2/pets").await;
        reply.expect(200);
        assert!(!reply.headers.contains_key("link"), "{:?}", reply.headers);

        // Publishing again un-deprecates: sunset, successor and headers are gone.
        let republished = accepted(&app, act(&app, &slug, "v1", "publish")).await.expect(200);
        assert_eq!(republished["state"], "published");
        assert_eq!(republished["sunset_at"], Value::Null);
        assert_eq!(republished["deprecated_at"], Value::Null);
        assert_eq!(republished["successor_id"], Value::Null);
        let reply = app.call(Method::GET, "/succ/v1/pets").await;
        reply.expect(200);
        for header in ["link", "sunset", "deprecation"] {
            assert!(!reply.headers.contains_key(header), "{header} still sent: {:?}", reply.headers);
        }
    }

    async fn a_retired_successor_is_no_longer_announced(app) {
        let upstream = Upstream::start("heir").await;
        let slug = app.draft_api("heir", &upstream.url).await;
        act(&app, &slug, "v1", "publish").await.expect(200);
        add_version(&app, &slug, "v2", "published").await;
        let body = json!({"sunset_at": in_days(30), "successor": "v2"});
        app.post(&format!("{}/deprecate", version_path(&slug, "v1")), body).await.expect(200);
        assert!(app.call(Method::GET, "/heir/v1/pets").await.headers.contains_key("link"));

        act(&app, &slug, "v2", "retire").await.expect(200);
        app.call(Method::GET, "/heir/v2/pets").await.problem(410);

        // v1 is still deprecated, but must not send its clients to a version that is gone.
        let reply = app.call(Method::GET, "/heir/v1/pets").await;
        reply.expect(200);
        assert!(reply.headers.contains_key("sunset"), "{:?}", reply.headers);
        let links: Vec<&str> = reply.headers.get_all("link").iter().map(|v| v.to_str().unwrap()).collect();
        assert!(links.is_empty(), "v1 links to its retired successor: {links:?}");
    }

    async fn publishing_needs_an_upstream_and_a_route(app) {
        let upstream = Upstream::start("bare").await;
        app.post("/admin/v1/upstreams", json!({"name": "bare-up", "targets": [{"url": upstream.url}]}))
            .await
            .expect(201);
        app.post("/admin/v1/apis", json!({"name": "bare", "slug": "bare"})).await.expect(201);

        // No upstream.
        app.post("/admin/v1/apis/bare/versions", json!({"label": "v1"})).await.expect(201);
        app.post("/admin/v1/apis/bare/versions/v1/routes", json!({"path": "/*"})).await.expect(201);
        let problem = refused(&app, act(&app, "bare", "v1", "publish")).await.problem(409);
        assert!(problem["detail"].as_str().unwrap().contains("upstream"), "{problem}");
        assert_eq!(app.get(&version_path("bare", "v1")).await.expect(200)["state"], "draft");

        // An upstream but no route.
        app.post("/admin/v1/apis/bare/versions", json!({"label": "v2", "upstream_id": "bare-up"})).await.expect(201);
        let problem = refused(&app, act(&app, "bare", "v2", "publish")).await.problem(409);
        assert!(problem["detail"].as_str().unwrap().contains("route"), "{problem}");
        assert_eq!(app.get(&version_path("bare", "v2")).await.expect(200)["state"], "draft");
        app.call(Method::GET, "/bare/v2/pets").await.problem(404);

        // With both, the same request succeeds.
        app.post("/admin/v1/apis/bare/versions/v2/routes", json!({"path": "/*"})).await.expect(201);
        assert_eq!(accepted(&app, act(&app, "bare", "v2", "publish")).await.expect(200)["state"], "published");
        app.call(Method::GET, "/bare/v2/pets").await.expect(200);
    }

    async fn a_retired_version_is_final_and_read_only(app) {
        let upstream = Upstream::start("gone").await;
        let slug = app.draft_api("gone", &upstream.url).await;
        act(&app, &slug, "v1", "publish").await.expect(200);
        accepted(&app, act(&app, &slug, "v1", "retire")).await.expect(200);
        let v1 = version_path(&slug, "v1");

        let problem = refused(&app, act(&app, &slug, "v1", "publish")).await.problem(409);
        assert_eq!(problem["current_state"], "retired");
        assert_eq!(problem["allowed_transitions"], json!([]));

        let problem = refused(&app, app.patch(&v1, json!({"base_path": "/gone/again"}))).await.problem(409);
        assert_eq!(problem["current_state"], "retired");

        let routes = format!("{v1}/routes");
        let problem = refused(&app, app.post(&routes, json!({"path": "/more"}))).await.problem(409);
        assert_eq!(problem["current_state"], "retired");
        let route_id = app.get(&routes).await.expect(200)["items"][0]["id"].as_str().unwrap().to_owned();
        refused(&app, app.patch(&format!("{routes}/{route_id}"), json!({"path": "/other"}))).await.problem(409);
        refused(&app, app.delete(&format!("{routes}/{route_id}"))).await.problem(409);

        let stored = app.get(&v1).await.expect(200);
        assert_eq!(stored["state"], "retired");
        assert_eq!(stored["base_path"], "/gone/v1");
        assert_eq!(route_count(&app, &slug, "v1").await, 1);
        app.call(Method::GET, "/gone/v1/pets").await.problem(410);
    }

    async fn copying_a_version_makes_an_independent_draft(app) {
        let upstream = Upstream::start("copy").await;
        let slug = app.draft_api("copy", &upstream.url).await;
        app.post(&format!("{}/routes", version_path(&slug, "v1")), json!({"path": "/pets", "methods": ["GET"]}))
            .await
            .expect(201);
        let v1 = act(&app, &slug, "v1", "publish").await.expect(200);
        let copy = format!("{}/copy", version_path(&slug, "v1"));

        let v2 = accepted(&app, app.post(&copy, json!({"label": "v2"}))).await.expect(201);
        assert_eq!(v2["label"], "v2");
        assert_eq!(v2["state"], "draft");
        assert_eq!(v2["base_path"], "/copy/v2");
        assert_eq!(v2["upstream_id"], v1["upstream_id"]);
        assert_ne!(v2["id"], v1["id"]);
        assert_eq!(route_count(&app, &slug, "v2").await, 2);

        // Labels stay unique within the API, whatever base path is asked for.
        refused(&app, app.post(&copy, json!({"label": "v2"}))).await.problem(409);
        refused(&app, app.post(&copy, json!({"label": "v1"}))).await.problem(409);
        refused(&app, app.post(&copy, json!({"label": "v1", "base_path": "/copy/elsewhere"}))).await.problem(409);

        app.post(&format!("{}/routes", version_path(&slug, "v2")), json!({"path": "/owners"})).await.expect(201);
        assert_eq!(route_count(&app, &slug, "v2").await, 3);
        assert_eq!(route_count(&app, &slug, "v1").await, 2, "the copy does not share routes with v1");

        // The copy is a draft: not served until published; v1 is served as before.
        app.call(Method::GET, "/copy/v2/pets").await.problem(404);
        app.call(Method::GET, "/copy/v1/pets").await.expect(200);
    }

    async fn only_versions_without_traffic_can_be_deleted(app) {
        let upstream = Upstream::start("del").await;
        let slug = app.draft_api("del", &upstream.url).await;
        add_version(&app, &slug, "v2", "draft").await;
        act(&app, &slug, "v1", "publish").await.expect(200);
        let api = format!("/admin/v1/apis/{slug}");

        accepted(&app, app.delete(&version_path(&slug, "v2"))).await.expect(204);
        app.get(&version_path(&slug, "v2")).await.problem(404);

        let problem = refused(&app, app.delete(&version_path(&slug, "v1"))).await.problem(409);
        assert_eq!(problem["current_state"], "published");
        refused(&app, app.delete(&api)).await.problem(409);

        act(&app, &slug, "v1", "deprecate").await.expect(200);
        let problem = refused(&app, app.delete(&version_path(&slug, "v1"))).await.problem(409);
        assert_eq!(problem["current_state"], "deprecated");
        refused(&app, app.delete(&api)).await.problem(409);
        assert_eq!(app.get(&version_path(&slug, "v1")).await.expect(200)["state"], "deprecated");
        app.call(Method::GET, "/del/v1/pets").await.expect(200);

        add_version(&app, &slug, "v3", "retired").await;
        accepted(&app, app.delete(&version_path(&slug, "v3"))).await.expect(204);
        app.get(&version_path(&slug, "v3")).await.problem(404);

        act(&app, &slug, "v1", "retire").await.expect(200);
        accepted(&app, app.delete(&api)).await.expect(204);
        app.get(&api).await.problem(404);
        app.get(&format!("{api}/versions")).await.problem(404);
    }

    async fn versions_list_filters_by_state_and_pages(app) {
        let upstream = Upstream::start("list").await;
        let slug = app.draft_api("list", &upstream.url).await;
        act(&app, &slug, "v1", "publish").await.expect(200);
        add_version(&app, &slug, "v2", "draft").await;
        add_version(&app, &slug, "v3", "published").await;
        let list = format!("/admin/v1/apis/{slug}/versions");
        let labels = |page: &Value| -> Vec<String> {
            page["items"].as_array().unwrap().iter().map(|v| v["label"].as_str().unwrap().to_owned()).collect()
        };

        let published = app.get(&format!("{list}?state=published")).await.expect(200);
        assert_eq!(published["total"], 2);
        let mut got = labels(&published);
        got.sort();
        assert_eq!(got, ["v1", "v3"]);
        assert!(published["items"].as_array().unwrap().iter().all(|v| v["state"] == "published"));

        let drafts = app.get(&format!("{list}?state=draft")).await.expect(200);
        assert_eq!(labels(&drafts), ["v2"]);
        assert_eq!(drafts["total"], 1);

        let mut seen = Vec::new();
        for page in 1..=3 {
            let reply = app.get(&format!("{list}?per_page=1&page={page}")).await.expect(200);
            assert_eq!(reply["total"], 3);
            assert_eq!(reply["page"], page);
            assert_eq!(reply["per_page"], 1);
            assert_eq!(reply["items"].as_array().unwrap().len(), 1, "page {page}: {reply}");
            seen.extend(labels(&reply));
        }
        seen.sort();
        assert_eq!(seen, ["v1", "v2", "v3"], "each version on exactly one page");
        let past_the_end = app.get(&format!("{list}?per_page=1&page=4")).await.expect(200);
        assert_eq!(past_the_end["items"], json!([]));
        assert_eq!(past_the_end["total"], 3);

        let filtered = app.get(&format!("{list}?state=published&per_page=1&page=2")).await.expect(200);
        assert_eq!(filtered["total"], 2);
        assert_eq!(filtered["items"].as_array().unwrap().len(), 1);
        assert_eq!(filtered["items"][0]["state"], "published");
    }

    async fn moving_a_published_base_path_moves_it_in_the_gateway(app) {
        let upstream = Upstream::start("move").await;
        let slug = app.draft_api("move", &upstream.url).await;
        act(&app, &slug, "v1", "publish").await.expect(200);
        assert_eq!(app.call(Method::GET, "/move/v1/pets").await.expect(200)["path"], "/pets");

        // Another version's base path is taken.
        let other = Upstream::start("other").await;
        app.draft_api("other", &other.url).await;
        let taken = json!({"base_path": "/other/v1"});
        refused(&app, app.patch(&version_path(&slug, "v1"), taken)).await.problem(409);
        assert_eq!(app.get(&version_path(&slug, "v1")).await.expect(200)["base_path"], "/move/v1");

        let moved =
            accepted(&app, app.patch(&version_path(&slug, "v1"), json!({"base_path": "/moved/v1"}))).await.expect(200);
        assert_eq!(moved["base_path"], "/moved/v1");
        assert_eq!(moved["state"], "published");

        let body = app.call(Method::GET, "/moved/v1/pets").await.expect(200);
        assert_eq!(body["upstream"], "move");
        assert_eq!(body["path"], "/pets");
        app.call(Method::GET, "/move/v1/pets").await.problem(404);
    }
}

on_both_stores! {
    async fn a_deprecated_versions_sunset_can_be_moved_but_not_into_the_past(app) {
        let upstream = Upstream::start("sunset").await;
        let slug = app.draft_api("sunset", &upstream.url).await;
        let path = format!("/admin/v1/apis/{slug}/versions/v1");
        // Not deprecated yet: there is no sunset to move.
        refused(&app, app.patch(&path, json!({"sunset_at": in_days(10)}))).await.problem(422);
        app.post(&format!("{path}/publish"), json!({})).await.expect(200);
        app.post(&format!("{path}/deprecate"), json!({"sunset_at": in_days(10)})).await.expect(200);

        refused(&app, app.patch(&path, json!({"sunset_at": in_days(-1)}))).await.problem(422);
        refused(&app, app.patch(&path, json!({"sunset_at": "soon"}))).await.problem(422);
        let later = in_days(60);
        let moved = accepted(&app, app.patch(&path, json!({"sunset_at": later}))).await.expect(200);
        let stored: chrono::DateTime<Utc> = moved["sunset_at"].as_str().unwrap().parse().unwrap();
        let wanted: chrono::DateTime<Utc> = later.parse().unwrap();
        assert!((stored - wanted).num_milliseconds().abs() < 1, "{stored} vs {wanted}");
        assert_eq!(moved["state"], "deprecated");

        let reply = app.call(Method::GET, "/sunset/v1/anything").await;
        reply.expect(200);
        let header = reply.headers.get("sunset").unwrap().to_str().unwrap().to_owned();
        assert_eq!(header, wanted.format("%a, %d %b %Y %H:%M:%S GMT").to_string());
    }
}
