//! The catalogue, API pages and interactive docs, over APIs seeded through the store:
//! what is listed (never drafts or only-retired APIs), search and tag filters,
//! deprecation notices, plans, and the docs page with its document served through
//! the gateway's URL.

use chrono::{Duration, Utc};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use turnpike_domain::lifecycle::Transition;
use turnpike_domain::model::{Quota, QuotaPeriod, RateLimit, UpstreamSpec};
use turnpike_store::apis::{self, ApiInput};
use turnpike_store::plans::{self, PlanInput};
use turnpike_store::versions::{self, TransitionInput, VersionInput};
use turnpike_store::{Actor, Store, upstreams};

use super::support::{Backend, TestPortal, open_store};

const GATEWAY: &str = "https://api.example.com";

fn document(title: &str) -> String {
    serde_json::json!({
        "openapi": "3.0.3",
        "info": {"title": title, "version": "1"},
        "servers": [{"url": "http://upstream.internal:9000"}],
        "paths": {"/pets": {"get": {"operationId": "listPets", "responses": {"200": {"description": "ok"}}}}}
    })
    .to_string()
}

/// An API with the given tags.
async fn api(store: &Store, slug: &str, name: &str, description: &str, tags: &[&str]) {
    let change = store.change(&Actor("test".into())).await.unwrap();
    let input = ApiInput {
        name: name.into(),
        slug: slug.into(),
        description: description.into(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        owner: None,
        versioning: Default::default(),
    };
    apis::create(&change, input).await.unwrap();
    change.commit().await.unwrap();
}

/// A version of `slug` imported from an OpenAPI document (or created bare), taken
/// through `transitions`.
async fn version(
    store: &Store,
    slug: &str,
    label: &str,
    with_document: bool,
    transitions: &[(Transition, TransitionInput)],
) {
    let change = store.change(&Actor("test".into())).await.unwrap();
    let api = apis::find(change.txn(), slug).await.unwrap();
    let upstream = match upstreams::list(change.txn(), Default::default()).await.unwrap().items.into_iter().next() {
        Some(u) => u.id,
        None => {
            let spec: UpstreamSpec = serde_json::from_value(
                serde_json::json!({"name": "backend", "targets": [{"url": "http://127.0.0.1:9"}]}),
            )
            .unwrap();
            upstreams::create(&change, spec).await.unwrap().id
        }
    };
    if with_document {
        versions::import_openapi(&change, &api, label, &document(&format!("{slug} {label}"))).await.unwrap();
    } else {
        let input =
            VersionInput { label: label.into(), base_path: None, upstream_id: None, policies: Default::default() };
        let created = versions::create(&change, &api, input).await.unwrap();
        let model = versions::find(change.txn(), &api, &created.id).await.unwrap();
        let spec = serde_json::from_value(serde_json::json!({"methods": ["GET"], "path": "/things"})).unwrap();
        turnpike_store::routes::create(&change, &model, spec).await.unwrap();
    }
    versions::patch(&change, &api, label, &serde_json::json!({"upstream_id": upstream})).await.unwrap();
    for (t, input) in transitions {
        versions::transition(&change, &api, label, *t, input.clone()).await.unwrap();
    }
    change.commit().await.unwrap();
}

fn publish() -> (Transition, TransitionInput) {
    (Transition::Publish, TransitionInput::default())
}

fn deprecate(successor: &str) -> (Transition, TransitionInput) {
    let sunset = Utc::now() + Duration::days(90);
    (Transition::Deprecate, TransitionInput { sunset_at: Some(sunset), successor: Some(successor.into()) })
}

fn retire() -> (Transition, TransitionInput) {
    (Transition::Retire, TransitionInput::default())
}

async fn plan(store: &Store, slug: &str, name: &str, approval: bool) {
    let change = store.change(&Actor("test".into())).await.unwrap();
    let input = PlanInput {
        slug: slug.into(),
        name: name.into(),
        description: String::new(),
        rate_limit: Some(RateLimit { requests: 10, per_seconds: 1 }),
        quota: Some(Quota { requests: 10_000, period: QuotaPeriod::Day }),
        requires_approval: approval,
    };
    plans::create(&change, input).await.unwrap();
    change.commit().await.unwrap();
}

async fn transition(store: &Store, slug: &str, label: &str, (t, input): (Transition, TransitionInput)) {
    let change = store.change(&Actor("test".into())).await.unwrap();
    let api = apis::find(change.txn(), slug).await.unwrap();
    versions::transition(&change, &api, label, t, input).await.unwrap();
    change.commit().await.unwrap();
}

/// Pets (v1 deprecated for v2, v2 published, v3 draft), Weather (v1 published without
/// a document, v0 retired), Legacy (only retired), Secret (only a draft), two plans.
async fn seeded() -> TestPortal {
    seeded_on(Backend::Sqlite).await
}

async fn seeded_on(backend: Backend) -> TestPortal {
    let (store, dir) = open_store(backend).await;
    seed(&store).await;
    TestPortal::serve(store, dir, |s| s.gateway_url = GATEWAY.parse().unwrap()).await
}

async fn seed(store: &Store) {
    api(store, "pets", "Pet Store", "Adopt cats and dogs", &["animals", "commerce"]).await;
    version(store, "pets", "v1", true, &[publish()]).await;
    version(store, "pets", "v2", true, &[publish()]).await;
    transition(store, "pets", "v1", deprecate("v2")).await;
    version(store, "pets", "v3", true, &[]).await;
    api(store, "weather", "Weather", "Hourly forecasts for any city", &["geo"]).await;
    version(store, "weather", "v0", false, &[publish(), retire()]).await;
    version(store, "weather", "v1", false, &[publish()]).await;
    api(store, "legacy", "Legacy Billing", "The old invoices API", &["commerce"]).await;
    version(store, "legacy", "v1", true, &[publish(), retire()]).await;
    api(store, "secret", "Secret Project", "Not ready", &["animals"]).await;
    version(store, "secret", "v1", true, &[]).await;
    plan(store, "free", "Free", false).await;
    plan(store, "gold", "Gold", true).await;
}

/// The slugs of the API cards on a catalogue page, in order.
fn cards(body: &str) -> Vec<String> {
    body.split(r#"<li class="panel api-card">"#)
        .skip(1)
        .map(|card| {
            let start = card.find(r#"href="/apis/"#).unwrap() + r#"href="/apis/"#.len();
            card[start..start + card[start..].find('"').unwrap()].to_owned()
        })
        .collect()
}

#[tokio::test]
async fn the_catalog_lists_apis_with_published_or_deprecated_versions() {
    listing(seeded().await).await;
}

#[tokio::test]
async fn the_catalog_lists_the_same_on_postgres() {
    let portal = seeded_on(Backend::Postgres).await;
    let mut browser = portal.browser();
    let page = browser.get("/apis/pets/v1/openapi.json").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let page = browser.get("/apis/pets/v3/docs").await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    listing(portal).await;
}

async fn listing(portal: TestPortal) {
    let mut browser = portal.browser();
    let page = browser.get("/apis").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    // By name: Pet Store, Weather. Never Legacy (only retired) or Secret (only a draft).
    assert_eq!(cards(&page.body), ["pets", "weather"]);
    assert!(!page.body.contains("Secret Project") && !page.body.contains("Legacy Billing"), "{}", page.body);
    // The card shows the newest published version, not the draft v3.
    let pets = page.body.split(r#"<li class="panel api-card">"#).nth(1).unwrap();
    assert!(pets.contains("<strong>v2</strong>") && pets.contains("badge-published"), "{pets}");
    assert!(pets.contains("Adopt cats and dogs"), "{pets}");
    // Tags of listed APIs only, as links of the GET form's filter.
    assert!(page.body.contains(r#"href="/apis?tag=animals""#), "{}", page.body);
    assert!(page.body.contains(r#"href="/apis?tag=geo""#), "{}", page.body);
    assert!(page.body.contains(r#"<form class="catalog-search" method="get" action="/apis""#));
}

#[tokio::test]
async fn search_and_tags_filter_the_catalog() {
    let portal = seeded().await;
    let mut browser = portal.browser();
    let cases: &[(&str, &[&str])] = &[
        ("/apis?q=pet", &["pets"]),
        ("/apis?q=FORECASTS", &["weather"]),
        ("/apis?q=commerce", &["pets"]),
        ("/apis?q=invoices", &[]),
        ("/apis?q=ready", &[]),
        ("/apis?tag=geo", &["weather"]),
        ("/apis?tag=ANIMALS", &["pets"]),
        ("/apis?tag=geo&q=cats", &[]),
        ("/apis?q=+", &["pets", "weather"]),
    ];
    for (path, expected) in cases {
        let page = browser.get(path).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert_eq!(cards(&page.body), *expected, "{path}");
    }
    let page = browser.get("/apis?q=%3Cscript%3E").await;
    assert!(
        page.body.contains("No API matches “&#60;script&#62;”") || page.body.contains("&lt;script&gt;"),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<script>"), "{}", page.body);
}

#[tokio::test]
async fn an_api_page_shows_versions_deprecation_and_plans() {
    let portal = seeded().await;
    let mut browser = portal.browser();
    let page = browser.get("/apis/pets").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let body = &page.body;
    assert!(body.contains(r#"id="version-v1""#) && body.contains(r#"id="version-v2""#), "{body}");
    assert!(!body.contains(r#"id="version-v3""#), "the draft shows: {body}");
    let v1 = body.split(r#"id="version-v1""#).nth(1).unwrap().split("</li>").next().unwrap();
    assert!(v1.contains("badge-deprecated"), "{v1}");
    assert!(v1.contains("This version is deprecated"), "{v1}");
    assert!(v1.contains(r##"Move to <a href="#version-v2">version v2</a>"##), "{v1}");
    assert!(v1.contains(r#"href="/apis/pets/v2/docs""#), "{v1}");
    let sunset = (Utc::now() + Duration::days(90)).format("%Y-%m-%d").to_string();
    assert!(v1.contains(&sunset), "{v1}");
    assert!(v1.contains(&format!("<code>{GATEWAY}/pets/v1</code>")), "{v1}");
    // Plans with limits, approval and the way to subscribe.
    assert!(body.contains("Free") && body.contains("Gold"), "{body}");
    assert!(body.contains("10 requests per second") && body.contains("10000 requests per day"), "{body}");
    assert!(body.contains("Needs approval") && body.contains("Immediate"), "{body}");
    assert!(body.contains(r#"href="/apps""#), "{body}");

    // Retired versions show as retired, without a base URL.
    let page = browser.get("/apis/weather").await;
    let v0 = page.body.split(r#"id="version-v0""#).nth(1).unwrap().split("</li>").next().unwrap();
    assert!(v0.contains("badge-retired") && v0.contains("retired and no longer answers"), "{v0}");
    assert!(!v0.contains("<code>"), "{v0}");
}

#[tokio::test]
async fn drafts_and_unknown_addresses_answer_404() {
    let portal = seeded().await;
    let mut browser = portal.browser();
    for path in [
        "/apis/secret",
        "/apis/nope",
        "/apis/pets/v3/docs",
        "/apis/pets/v3/openapi.json",
        "/apis/secret/v1/docs",
        "/apis/pets/v9/docs",
        "/apis/nope/v1/openapi.json",
        "/apis/weather/v1/openapi.json",
    ] {
        let page = browser.get(path).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}: {}", page.body);
        assert!(page.body.contains("Page not found"), "{path}");
        assert!(!page.body.contains("Secret Project"), "{path}");
    }
}

#[tokio::test]
async fn the_served_document_names_the_gateway_as_its_server() {
    let portal = seeded().await;
    let mut browser = portal.browser();
    let page = browser.get("/apis/pets/v1/openapi.json").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.headers[CONTENT_TYPE].to_str().unwrap().starts_with("application/json"));
    let doc: serde_json::Value = serde_json::from_str(&page.body).unwrap();
    assert_eq!(doc["servers"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc["servers"][0]["url"], format!("{GATEWAY}/pets/v1"));
    assert_eq!(doc["info"]["title"], "pets v1");
    assert!(doc["paths"]["/pets"]["get"].is_object(), "{doc}");
    // An API left with only retired versions is not listed, but its page and documents
    // stay readable for those who follow an old link.
    let page = browser.get("/apis/legacy/v1/openapi.json").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let page = browser.get("/apis/legacy").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("badge-retired"), "{}", page.body);
}

/// Every `src` and `href` of the page.
fn references(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in [r#"src=""#, r#"href=""#] {
        let mut rest = body;
        while let Some(i) = rest.find(attr) {
            rest = &rest[i + attr.len()..];
            out.push(rest[..rest.find('"').unwrap()].to_owned());
        }
    }
    out
}

#[tokio::test]
async fn the_docs_page_uses_only_same_origin_assets_under_its_csp() {
    let portal = seeded().await;
    let mut browser = portal.browser();
    let page = browser.get("/apis/pets/v2/docs").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let csp = page.headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(csp.contains(&format!("connect-src 'self' {GATEWAY};")), "{csp}");
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert!(page.body.contains(r#"data-url="/apis/pets/v2/openapi.json""#), "{}", page.body);
    assert!(!page.body.contains("<script>"), "inline script: {}", page.body);
    let refs = references(&page.body);
    for needed in [
        "/static/vendor/swagger-ui/swagger-ui-bundle.js",
        "/static/vendor/swagger-ui/swagger-ui.css",
        "/static/docs.js",
    ] {
        assert!(refs.iter().any(|r| r == needed), "{needed} missing from {refs:?}");
        let asset = browser.get(needed).await;
        assert_eq!(asset.status, StatusCode::OK, "{needed}");
        assert!(!asset.body.is_empty(), "{needed}");
    }
    for r in &refs {
        assert!(r.starts_with('/') || r.starts_with('#'), "not same-origin: {r}");
        assert!(!r.starts_with("//"), "not same-origin: {r}");
    }
    // The start-up script reads the document's address from the page.
    let script = browser.get("/static/docs.js").await;
    assert!(script.body.contains("dataset.url"), "{}", script.body);

    // A deprecated version's docs carry the notice; one without a document says so kindly.
    let page = browser.get("/apis/pets/v1/docs").await;
    assert!(page.body.contains(r#"Use <a href="/apis/pets/v2/docs">version v2</a> instead"#), "{}", page.body);
    let page = browser.get("/apis/weather/v1/docs").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("No reference documentation yet"), "{}", page.body);
    assert!(!page.body.contains("swagger-ui-bundle.js"), "{}", page.body);
    assert!(page.body.contains(&format!("<code>{GATEWAY}/weather/v1</code>")), "{}", page.body);

    // Other pages keep the portal's default policy.
    let page = browser.get("/apis").await;
    assert!(!page.headers[CONTENT_SECURITY_POLICY].to_str().unwrap().contains(GATEWAY));
}
