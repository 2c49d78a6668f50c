//! Importing OpenAPI documents through the admin API: every fixture becomes a draft
//! with one route per operation, re-imports replace, broken documents are refused
//! saying where and write nothing, and an imported API is served by the gateway.

use std::path::PathBuf;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{TestApp, Upstream, on_both_stores};

const OPERATION_KEYS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// The OpenAPI fixtures, in a stable order.
fn fixtures() -> Vec<PathBuf> {
    let dir = turnpike_testkit::fixtures_dir().join("openapi");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

fn read(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn petstore() -> String {
    read(&turnpike_testkit::fixtures_dir().join("openapi").join("oai-v3.0-petstore.yaml"))
}

/// Parses a fixture (YAML or JSON) into a JSON value.
fn parse(text: &str) -> Value {
    yaml_serde::from_str(text).expect("fixtures are valid YAML")
}

/// The number of operations of a document, counted from its `paths`.
fn operations(doc: &Value) -> usize {
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else { return 0 };
    paths
        .values()
        .map(|item| {
            item.as_object().map_or(0, |ops| ops.keys().filter(|k| OPERATION_KEYS.contains(&k.as_str())).count())
        })
        .sum()
}

fn openapi_path(slug: &str, label: &str) -> String {
    format!("/admin/v1/apis/{slug}/versions/{label}/openapi")
}

fn routes_path(slug: &str, label: &str) -> String {
    format!("/admin/v1/apis/{slug}/versions/{label}/routes?per_page=200")
}

async fn create_api(app: &TestApp, slug: &str) {
    app.post("/admin/v1/apis", json!({"name": slug, "slug": slug})).await.expect(201);
}

async fn route_total(app: &TestApp, slug: &str, label: &str) -> u64 {
    let page = app.get(&routes_path(slug, label)).await.expect(200);
    let total = page["total"].as_u64().unwrap();
    assert_eq!(page["items"].as_array().unwrap().len() as u64, total);
    total
}

async fn version_total(app: &TestApp, slug: &str) -> u64 {
    app.get(&format!("/admin/v1/apis/{slug}/versions")).await.expect(200)["total"].as_u64().unwrap()
}

/// Imports the document and asserts its outcome; returns the route count.
async fn import(app: &TestApp, slug: &str, content_type: &str, text: &str, created: bool) -> u64 {
    let reply = app.put_raw(&openapi_path(slug, "v1"), content_type, text).await;
    let outcome = reply.expect(if created { 201 } else { 200 });
    assert_eq!(outcome["created"], created, "{outcome}");
    assert_eq!(outcome["version"]["state"], "draft", "{outcome}");
    assert_eq!(outcome["version"]["label"], "v1");
    assert_eq!(outcome["version"]["has_openapi_document"], true);
    outcome["routes"].as_u64().unwrap()
}

/// The 1-based number of the last line of `text` that is exactly `line`.
fn last_line_number(text: &str, line: &str) -> usize {
    text.lines().enumerate().filter(|(_, l)| *l == line).last().expect("the line is there").0 + 1
}

/// A small document: `head` is its version line, `paths` the YAML value of `paths`.
fn document(head: &str, paths: &str) -> String {
    format!("{head}\ninfo:\n  title: Small\n  version: '1'\npaths: {paths}\n")
}

/// Asserts a 422 `invalid-openapi-document` problem with a `location`.
#[track_caller]
fn refused(reply: &crate::support::Reply, what: &str) -> Value {
    let problem = reply.problem(422);
    assert_eq!(problem["type"], "urn:turnpike:problem:invalid-openapi-document", "{what}: {problem}");
    assert!(problem["location"].as_str().is_some_and(|l| !l.is_empty()), "{what}: no location in {problem}");
    problem
}

on_both_stores! {
    async fn every_fixture_imports_as_a_draft_with_one_route_per_operation(app) {
        let mut all_routes = 0;
        for (i, path) in fixtures().iter().enumerate() {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = read(path);
            let doc = parse(&text);
            let expected = operations(&doc) as u64;
            let slug = format!("fixture-{i}");
            create_api(&app, &slug).await;

            assert_eq!(import(&app, &slug, "application/yaml", &text, true).await, expected, "{name}");
            assert_eq!(route_total(&app, &slug, "v1").await, expected, "{name}");
            let stored = app.get(&openapi_path(&slug, "v1")).await.expect(200);
            assert_eq!(stored["info"]["title"], doc["info"]["title"], "{name}");
            assert_eq!(stored, doc, "{name}: the stored document is the one given");

            // Again: the same draft, its routes replaced rather than added to.
            assert_eq!(import(&app, &slug, "application/yaml", &text, false).await, expected, "{name}");
            assert_eq!(route_total(&app, &slug, "v1").await, expected, "{name}");
            assert_eq!(version_total(&app, &slug).await, 1, "{name}");
            all_routes += expected;
        }
        assert!(all_routes > 0, "the fixtures describe no operation at all");
    }

    async fn a_json_document_imports_too(app) {
        let doc = parse(&petstore());
        let text = serde_json::to_string_pretty(&doc).unwrap();
        create_api(&app, "pets").await;
        let reply = app.put_raw(&openapi_path("pets", "v1"), "application/json", text).await;
        let outcome = reply.expect(201);
        assert_eq!(outcome["created"], true);
        assert_eq!(outcome["title"], "Swagger Petstore");
        assert_eq!(outcome["routes"], operations(&doc) as u64);
        assert_eq!(route_total(&app, "pets", "v1").await, 3);
        let stored = app.get(&openapi_path("pets", "v1")).await.expect(200);
        assert_eq!(stored["info"]["title"], "Swagger Petstore");

        let routes = app.get(&routes_path("pets", "v1")).await.expect(200);
        let mut seen: Vec<(String, String)> = routes["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["methods"].to_string(), r["path"].as_str().unwrap().to_owned()))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            [
                (r#"["GET"]"#.to_owned(), "/pets".to_owned()),
                (r#"["GET"]"#.to_owned(), "/pets/{petId}".to_owned()),
                (r#"["POST"]"#.to_owned(), "/pets".to_owned()),
            ]
        );
    }

    async fn broken_documents_are_refused_saying_where_and_write_nothing(app) {
        create_api(&app, "pets").await;
        let audit = app.audit_count().await;
        let path = openapi_path("pets", "v1");
        let put = |text: String| app.put_raw(&path, "application/yaml", text);

        let indentation = "openapi: 3.0.0\ninfo:\n  title: Broken\n   version: '1'\npaths: {}\n";
        let problem = refused(&put(indentation.into()).await, "bad indentation");
        assert_eq!(problem["line"], 4, "{problem}");

        let json_syntax = r#"{"openapi": "3.1.0",
            "info": {"title": "x", "version": "1"},
            "paths": {,}}"#;
        let problem = refused(&put(json_syntax.into()).await, "broken JSON");
        assert_eq!(problem["line"], 3, "{problem}");

        let twice = "\n  /pets:\n    get: {responses: {}}\n  /pets:\n    post: {responses: {}}";
        let problem = refused(&put(document("openapi: 3.0.0", twice)).await, "duplicate key");
        assert!(problem["line"].is_u64(), "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains("/pets"), "{problem}");

        let problem = refused(&put(document("openapi: 2.0", "{}")).await, "openapi 2.0");
        assert_eq!(problem["location"], "openapi");
        let problem = refused(&put(document("swagger: \"2.0\"", "{}")).await, "swagger 2.0");
        assert_eq!(problem["location"], "swagger");
        let problem = refused(&put(document("openapi: \"4.0.0\"", "{}")).await, "openapi 4");
        assert_eq!(problem["location"], "openapi");

        let problem = refused(&put(document("openapi: 3.1.0", "5")).await, "paths: 5");
        assert!(problem["location"].as_str().unwrap().starts_with("paths"), "{problem}");
        let problem = refused(&put("openapi: 3.1.0\ninfo:\n  version: '1'\npaths: {}\n".into()).await, "no title");
        assert!(problem["location"].as_str().unwrap().starts_with("info"), "{problem}");
        let dots = document("openapi: 3.1.0", "\n  /a/../b:\n    get: {responses: {}}");
        let problem = refused(&put(dots.clone()).await, "dot segments");
        assert!(problem["location"].as_str().unwrap().starts_with("paths./a/../b"), "{problem}");

        for text in ["", "   \n", "- a list\n- not an object\n", "just a string"] {
            let problem = put(text.into()).await.problem(422);
            assert_eq!(problem["type"], "urn:turnpike:problem:invalid-openapi-document", "{text:?}: {problem}");
        }

        assert_eq!(version_total(&app, "pets").await, 0);
        app.get("/admin/v1/apis/pets/versions/v1").await.problem(404);
        assert_eq!(app.audit_count().await, audit);

        // A broken document also leaves an existing draft as it was.
        assert_eq!(import(&app, "pets", "application/yaml", &petstore(), true).await, 3);
        let audit = app.audit_count().await;
        let version = app.get("/admin/v1/apis/pets/versions/v1").await.expect(200);
        refused(&put(document("openapi: 3.1.0", "5")).await, "over a draft");
        refused(&put(dots).await, "over a draft");
        assert_eq!(route_total(&app, "pets", "v1").await, 3);
        assert_eq!(app.get(&openapi_path("pets", "v1")).await.expect(200)["info"]["title"], "Swagger Petstore");
        assert_eq!(app.get("/admin/v1/apis/pets/versions/v1").await.expect(200), version);
        assert_eq!(app.audit_count().await, audit);
    }

    async fn importing_into_a_published_version_is_a_state_conflict(app) {
        let upstream = Upstream::start("pets").await;
        create_api(&app, "pets").await;
        import(&app, "pets", "application/yaml", &petstore(), true).await;
        let up = app.post("/admin/v1/upstreams", json!({"name": "pets-up", "targets": [{"url": upstream.url}]})).await;
        let up = up.expect(201);
        app.patch("/admin/v1/apis/pets/versions/v1", json!({"upstream_id": up["id"]})).await.expect(200);
        app.post("/admin/v1/apis/pets/versions/v1/publish", json!({})).await.expect(200);
        let audit = app.audit_count().await;

        let expanded = read(&turnpike_testkit::fixtures_dir().join("openapi").join("oai-v3.0-petstore-expanded.yaml"));
        let problem = app.put_raw(&openapi_path("pets", "v1"), "application/yaml", expanded).await.problem(409);
        assert_eq!(problem["type"], "urn:turnpike:problem:state-conflict", "{problem}");
        assert_eq!(problem["current_state"], "published", "{problem}");

        assert_eq!(route_total(&app, "pets", "v1").await, 3);
        assert_eq!(app.get(&openapi_path("pets", "v1")).await.expect(200)["info"]["title"], "Swagger Petstore");
        assert_eq!(app.audit_count().await, audit);
    }

    async fn an_imported_petstore_is_served_through_the_gateway(app) {
        let upstream = Upstream::start("pets").await;
        create_api(&app, "pets").await;
        import(&app, "pets", "application/yaml", &petstore(), true).await;
        let up = app.post("/admin/v1/upstreams", json!({"name": "pets-up", "targets": [{"url": upstream.url}]})).await;
        let up = up.expect(201);
        let version = app.patch("/admin/v1/apis/pets/versions/v1", json!({"upstream_id": up["id"]})).await.expect(200);
        assert_eq!(version["upstream_id"], up["id"]);
        app.post("/admin/v1/apis/pets/versions/v1/publish", json!({})).await.expect(200);

        let body = app.call(Method::GET, "/pets/v1/pets/123").await.expect(200);
        assert_eq!(body["upstream"], "pets");
        assert_eq!(body["path"], "/pets/123");
        assert_eq!(body["method"], "GET");
        let body = app.call(Method::POST, "/pets/v1/pets").await.expect(200);
        assert_eq!(body["path"], "/pets");
        assert_eq!(body["method"], "POST");

        // Only what the document describes is served.
        app.call(Method::GET, "/pets/v1/nope").await.problem(404);
        app.call(Method::GET, "/pets/v1/pets/123/toys").await.problem(404);
        let wrong_method = app.call(Method::DELETE, "/pets/v1/pets/123").await;
        wrong_method.problem(405);
        let allow = wrong_method.headers.get("allow").and_then(|v| v.to_str().ok()).unwrap_or_default();
        assert!(allow.contains("GET"), "allow: {allow:?}");
    }
    async fn an_import_that_cannot_create_its_version_writes_nothing(app) {
        create_api(&app, "pets").await;
        create_api(&app, "other").await;
        app.post("/admin/v1/apis/other/versions", json!({"label": "v9", "base_path": "/pets/v1"})).await.expect(201);
        let audit = app.audit_count().await;

        // The draft it would create takes the default base path, which another API holds.
        let problem = app.put_raw(&openapi_path("pets", "v1"), "application/yaml", petstore()).await.problem(409);
        assert_eq!(problem["type"], "urn:turnpike:problem:conflict", "{problem}");
        let reply = app.put_raw(&openapi_path("pets", "-v1"), "application/yaml", petstore()).await;
        let problem = reply.problem(422);
        assert_eq!(problem["errors"][0]["field"], "label", "{problem}");
        app.put_raw(&openapi_path("nobody", "v1"), "application/yaml", petstore()).await.problem(404);

        assert_eq!(version_total(&app, "pets").await, 0);
        assert_eq!(app.audit_count().await, audit);
    }

    // The fuzz targets' seed corpus holds the known nasty documents (alias bombs,
    // deep nesting, reference cycles, bytes that are not UTF-8); over HTTP each must
    // be a clean 4xx problem that writes nothing, and the server stays up.
    async fn the_fuzz_seed_corpus_is_refused_over_http(app) {
        create_api(&app, "fuzz").await;
        let audit = app.audit_count().await;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/openapi");
        let mut seeds: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        seeds.sort();
        assert!(seeds.len() >= 5, "the corpus went missing from {}", dir.display());
        for seed in &seeds {
            let bytes = std::fs::read(seed).unwrap();
            let reply = app.put_raw(&openapi_path("fuzz", "v1"), "application/yaml", bytes).await;
            let status = reply.status.as_u16();
            assert!(matches!(status, 400 | 422), "{}: {status} {}", seed.display(), reply.text());
            reply.problem(status);
        }
        assert_eq!(version_total(&app, "fuzz").await, 0);
        assert_eq!(app.audit_count().await, audit);
    }

    // Two equal keys would make an operation or a whole path vanish silently, so the
    // importer refuses them; the answer must point at the second one, where the
    // author has to look, not at the start of the enclosing mapping.
    async fn a_duplicate_key_is_reported_where_it_is(app) {
        create_api(&app, "pets").await;
        let path = openapi_path("pets", "v1");

        let json = "{\"openapi\": \"3.1.0\",\n\"info\": {\"title\": \"x\", \"version\": \"1\"},\n\"paths\": {\n\
                    \"/a\": {},\n\"/b\": {},\n\"/a\": {}}}";
        let problem = refused(&app.put_raw(&path, "application/json", json).await, "JSON duplicate");
        assert_eq!(problem["line"], last_line_number(json, "\"/a\": {}}}"), "{problem}");

        let paths = "\n  /a:\n    get: {responses: {}}\n  /b:\n    get: {responses: {}}\n\
                     \x20 /a:\n    post: {responses: {}}";
        let yaml = document("openapi: 3.0.0", paths);
        let duplicate = last_line_number(&yaml, "  /a:");
        let problem = refused(&app.put_raw(&path, "application/yaml", yaml).await, "YAML duplicate");
        assert_eq!(problem["line"], duplicate, "{problem}");
    }
}
