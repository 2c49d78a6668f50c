//! Version selection by header or query parameter, configured per API through the
//! admin API: what is accepted and refused (a selector's base path never overlaps a
//! version's), how it travels through snapshots and declarative documents, and what
//! the gateway then does with requests under the selector's base path.

use reqwest::Method;
use serde_json::{Value, json};
use turnpike_domain::model::Versioning;
use turnpike_store::declarative::{self, Document};
use turnpike_store::{Actor, StoreError};

use crate::support::{TestApp, Upstream, accepted, on_both_stores, refused};

fn header_selector(base_path: &str, default: Option<&str>) -> Value {
    let mut selector = json!({"mode": "header", "name": "api-version", "base_path": base_path});
    if let Some(default) = default {
        selector["default"] = json!(default);
    }
    selector
}

/// Field names of a 422 problem.
fn fields(problem: &Value) -> Vec<String> {
    problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect()
}

/// The pets API with two published versions under their default base paths:
/// `v1` to `one` and `v2` to `two`, each taking everything.
async fn two_versions(app: &TestApp, one: &Upstream, two: &Upstream) {
    app.draft_api("pets", &one.url).await;
    app.post("/admin/v1/upstreams", json!({"name": "two-up", "targets": [{"url": two.url}]})).await.expect(201);
    app.post("/admin/v1/apis/pets/versions", json!({"label": "v2", "upstream_id": "two-up"})).await.expect(201);
    app.post("/admin/v1/apis/pets/versions/v2/routes", json!({"path": "/*"})).await.expect(201);
    for label in ["v1", "v2"] {
        app.post(&format!("/admin/v1/apis/pets/versions/{label}/publish"), json!({})).await.expect(200);
    }
}

/// Which upstream answered a gateway call, and the path it saw.
async fn reached(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> (String, String) {
    let body = app.call_with(Method::GET, path, headers).await.expect(200);
    (body["upstream"].as_str().unwrap().to_owned(), body["path"].as_str().unwrap().to_owned())
}

fn pair(upstream: &str, path: &str) -> (String, String) {
    (upstream.to_owned(), path.to_owned())
}

on_both_stores! {
    async fn selectors_are_validated_and_never_share_a_version_base_path(app) {
        let upstream = Upstream::start("one").await;
        app.draft_api("pets", &upstream.url).await;
        assert_eq!(app.get("/admin/v1/apis/pets").await.expect(200)["versioning"], json!({"mode": "path"}));

        let bad = json!({"versioning": {"mode": "query", "name": "a b", "base_path": "/pets/", "default": "-x"}});
        let problem = refused(&app, app.patch("/admin/v1/apis/pets", bad)).await.problem(422);
        assert_eq!(fields(&problem), ["versioning.name", "versioning.base_path", "versioning.default"]);
        let unknown = json!({"versioning": {"mode": "header", "name": "v", "base_path": "/p", "extra": true}});
        refused(&app, app.patch("/admin/v1/apis/pets", unknown)).await.problem(422);
        let cookie = json!({"versioning": {"mode": "cookie", "name": "v", "base_path": "/p"}});
        refused(&app, app.patch("/admin/v1/apis/pets", cookie)).await.problem(422);
        // The default version v1 lives at /pets/v1.
        let taken = json!({"versioning": header_selector("/pets/v1", None)});
        let problem = refused(&app, app.patch("/admin/v1/apis/pets", taken)).await.problem(409);
        assert!(problem["detail"].as_str().unwrap().contains("/pets/v1"), "{problem}");

        let ok = json!({"versioning": header_selector("/pets", Some("v1"))});
        let api = accepted(&app, app.patch("/admin/v1/apis/pets", ok)).await.expect(200);
        assert_eq!(api["versioning"], header_selector("/pets", Some("v1")));
        assert_eq!(app.get("/admin/v1/apis/pets").await.expect(200)["versioning"], api["versioning"]);

        // Another API cannot take the selector's base path, for a selector or a version.
        let cats = json!({"name": "Cats", "slug": "cats", "versioning": header_selector("/pets", None)});
        refused(&app, app.post("/admin/v1/apis", cats)).await.problem(409);
        app.post("/admin/v1/apis", json!({"name": "Cats", "slug": "cats"})).await.expect(201);
        let version = json!({"label": "v1", "base_path": "/pets"});
        refused(&app, app.post("/admin/v1/apis/cats/versions", version)).await.problem(409);
        // Nor can a version of the same API, created or moved there.
        refused(&app, app.post("/admin/v1/apis/pets/versions", json!({"label": "v2", "base_path": "/pets"})))
            .await
            .problem(409);
        refused(&app, app.patch("/admin/v1/apis/pets/versions/v1", json!({"base_path": "/pets"}))).await.problem(409);

        // A merge patch changes the mode and keeps the rest; `null` goes back to path.
        let api = app.patch("/admin/v1/apis/pets", json!({"versioning": {"mode": "query", "name": "version"}})).await;
        assert_eq!(
            api.expect(200)["versioning"],
            json!({"mode": "query", "name": "version", "base_path": "/pets", "default": "v1"})
        );
        let api = app.patch("/admin/v1/apis/pets", json!({"versioning": null})).await.expect(200);
        assert_eq!(api["versioning"], json!({"mode": "path"}));
        // Once released, the base path is free for a version.
        app.post("/admin/v1/apis/pets/versions", json!({"label": "v2", "base_path": "/pets"})).await.expect(201);
    }

    async fn the_gateway_routes_by_header_or_query_and_keeps_base_paths(app) {
        let (one, two) = (Upstream::start("one").await, Upstream::start("two").await);
        two_versions(&app, &one, &two).await;
        app.patch("/admin/v1/apis/pets", json!({"versioning": header_selector("/pets", Some("v2"))})).await.expect(200);

        assert_eq!(reached(&app, "/pets/dogs/1", &[("api-version", "v1")]).await, pair("one", "/dogs/1"));
        assert_eq!(reached(&app, "/pets/dogs/1", &[("api-version", "v2")]).await, pair("two", "/dogs/1"));
        assert_eq!(reached(&app, "/pets/dogs/1", &[]).await, pair("two", "/dogs/1"));
        assert_eq!(reached(&app, "/pets/v1/dogs", &[("api-version", "v2")]).await, pair("one", "/dogs"));
        app.call_with(Method::GET, "/pets/dogs", &[("api-version", "v3")]).await.problem(404);

        // The snapshot carries the selector.
        let snapshot = turnpike_store::snapshots::latest(app.store.db()).await.unwrap().unwrap();
        let selectors = &snapshot.content.selectors;
        assert_eq!(selectors.len(), 1);
        assert_eq!(selectors[0].api_slug, "pets");
        assert_eq!(selectors[0].versioning.selector().unwrap().name, "api-version");

        // A retired version named by the header answers 410.
        app.post("/admin/v1/apis/pets/versions/v1/retire", json!({})).await.expect(200);
        app.call_with(Method::GET, "/pets/dogs", &[("api-version", "v1")]).await.problem(410);

        let query = json!({"versioning": {"mode": "query", "name": "version", "default": null}});
        app.patch("/admin/v1/apis/pets", query).await.expect(200);
        assert_eq!(reached(&app, "/pets/cats?version=v2", &[]).await, pair("two", "/cats?version=v2"));
        app.call(Method::GET, "/pets/cats").await.problem(404);
        app.call(Method::GET, "/pets/cats?version=v1").await.problem(410);
    }

    async fn declarative_documents_carry_the_selector(app) {
        let (one, two) = (Upstream::start("one").await, Upstream::start("two").await);
        two_versions(&app, &one, &two).await;
        app.patch("/admin/v1/apis/pets", json!({"versioning": header_selector("/pets", None)})).await.expect(200);

        let doc = declarative::export(app.store.db()).await.unwrap();
        let yaml = yaml_serde::to_string(&doc).unwrap();
        assert!(yaml.contains("mode: header") && yaml.contains("base_path: /pets\n"), "{yaml}");
        let parsed: Document = yaml_serde::from_str(&yaml).unwrap();
        assert_eq!(parsed, doc);
        let change = app.store.change(&Actor("test".into())).await.unwrap();
        let plan = declarative::plan(change.txn(), &parsed, change.target_policy()).await.unwrap();
        assert!(plan.steps.is_empty(), "{:?}", plan.steps);

        // Dropping the selector from the file is a change of the API.
        let mut path_only = doc.clone();
        path_only.apis[0].versioning = Versioning::Path;
        let plan = declarative::plan(change.txn(), &path_only, change.target_policy()).await.unwrap();
        assert_eq!(plan.steps.iter().map(ToString::to_string).collect::<Vec<_>>(), ["~ api pets"]);
        assert!(!yaml_serde::to_string(&path_only).unwrap().contains("versioning"), "path is the default, left out");

        // A selector on a version's base path is refused before anything is written.
        let mut clash = doc.clone();
        let Versioning::Header(selector) = &mut clash.apis[0].versioning else { panic!("a header selector") };
        selector.base_path = "/pets/v2".into();
        match declarative::plan(change.txn(), &clash, change.target_policy()).await {
            Err(StoreError::Invalid(errors)) => {
                assert!(errors.iter().any(|e| e.field == "apis[0].versioning.base_path"), "{errors:?}")
            }
            other => panic!("expected a refusal, got {:?}", other.map(|p| p.steps)),
        }
    }
}

on_both_stores! {
    async fn pollers_load_a_snapshot_only_when_a_newer_one_is_stored(app) {
        use turnpike_store::snapshots::{latest, newer_than};
        let db = app.store.db();
        let first = latest(db).await.unwrap().expect("a snapshot exists");
        assert!(newer_than(db, first.version).await.unwrap().is_none(), "nothing is newer than the newest");
        assert!(newer_than(db, first.version + 5).await.unwrap().is_none());
        assert_eq!(newer_than(db, 0).await.unwrap().expect("the newest").version, first.version);

        let upstream = Upstream::start("poll").await;
        app.draft_api("poll", &upstream.url).await;
        accepted(&app, app.post("/admin/v1/apis/poll/versions/v1/publish", serde_json::json!({}))).await.expect(200);
        let newer = newer_than(db, first.version).await.unwrap().expect("publishing stored a newer snapshot");
        assert!(newer.version > first.version);
        assert_eq!(newer.version, latest(db).await.unwrap().unwrap().version, "the newest, not just any newer one");
        assert_eq!(newer.checksum, newer.content.checksum(), "read whole");
    }
}
