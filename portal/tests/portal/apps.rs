//! Applications, subscriptions and keys over HTTP, with a real gateway following the
//! portal's bus and credential table as in all-in-one mode: a key made in the portal
//! works at the gateway at once, and a revoked one stops within a second.

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::net::TcpListener;
use turnpike_bus::ConfigBus;
use turnpike_domain::lifecycle::Transition;
use turnpike_store::publish::Publisher;
use turnpike_store::{Actor, Change, StoreError, apis, keys, plans, routes, upstreams, versions};

use crate::support::{Backend, Browser, PASSWORD, Page, TestPortal};

/// A gateway following the portal's bus and credentials; returns its base URL.
pub(crate) async fn start_gateway(portal: &TestPortal) -> (String, turnpike_gateway::ConfigStore) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    start_gateway_on(portal, listener, []).await
}

/// The same on `listener`, answering CORS for `docs_origins` (the portal's "try it").
pub(crate) async fn start_gateway_on(
    portal: &TestPortal,
    listener: TcpListener,
    docs_origins: impl IntoIterator<Item = turnpike_gateway::Origin>,
) -> (String, turnpike_gateway::ConfigStore) {
    let gateway = turnpike_gateway::ConfigStore::with_consumers(turnpike_gateway::consumer::Consumers {
        credentials: portal.credentials.clone(),
        hasher: Some(portal.hasher.clone()),
        limiter: Arc::new(turnpike_gateway::ratelimit::LocalLimiter::default()),
    })
    .with_docs_origins(docs_origins);
    tokio::spawn(gateway.clone().follow(portal.bus.subscribe()));
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(turnpike_gateway::serve_proxy(
        listener,
        gateway.clone(),
        turnpike_gateway::Settings::default(),
        std::future::pending(),
    ));
    (url, gateway)
}

/// Waits until `gateway` serves the portal's newest snapshot.
pub(crate) async fn caught_up(portal: &TestPortal, gateway: &turnpike_gateway::ConfigStore) {
    let latest = turnpike_store::snapshots::latest(portal.store.db()).await.unwrap().unwrap().version;
    tokio::time::timeout(Duration::from_secs(5), gateway.wait_for_version(latest)).await.unwrap();
}

/// Through the forms: a new application named `name`, subscribed to `version` under
/// `plan`, and a key for it; returns the application's id and the key.
pub(crate) async fn subscribed_key(browser: &mut Browser, name: &str, version: &str, plan: &str) -> (String, String) {
    let app = create_app(browser, name).await;
    let app_path = format!("/apps/{app}");
    let subscribe = [("version_id", version), ("plan_id", plan)];
    browser.submit(&app_path, &format!("{app_path}/subscriptions"), &subscribe).await.assert_redirect(&app_path);
    let key = key_on(&browser.submit(&app_path, &format!("{app_path}/keys"), &[("name", "server")]).await);
    (app, key)
}

/// A real upstream on a loopback port answering every request with 200 "weather".
pub(crate) async fn start_upstream() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().fallback(|| async { "weather" });
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

struct Catalog {
    /// Published, keys required, served under `/weather/v1`.
    version: String,
    /// A second published version of another API, for the pending subscription.
    other_version: String,
    free: String,
    gated: String,
}

pub(crate) fn json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).unwrap()
}

/// Publishes `slug` v1 requiring keys.
async fn keyed_api(change: &Change<'_>, slug: &str, upstream: &str) -> Result<String, StoreError> {
    let up = format!("{slug}-up");
    upstreams::create(change, json(serde_json::json!({"name": up, "targets": [{"url": upstream}]}))).await?;
    let api = apis::create(change, json(serde_json::json!({"name": slug, "slug": slug}))).await?;
    let api = apis::find(change.txn(), &api.id).await?;
    let input = json(serde_json::json!({"label": "v1", "upstream_id": up, "policies": {"key_auth": {}}}));
    let version = versions::create(change, &api, input).await?;
    let model = versions::find(change.txn(), &api, &version.id).await?;
    routes::create(change, &model, json(serde_json::json!({"path": "/*"}))).await?;
    versions::transition(change, &api, &version.id, Transition::Publish, Default::default()).await?;
    Ok(version.id)
}

async fn try_catalog(portal: &TestPortal, upstream: &str) -> Result<Catalog, StoreError> {
    // Through the same commit path as the admin API: the gateway gets the snapshot.
    let publisher = Publisher::new(portal.store.clone(), portal.bus.clone(), portal.credentials.clone());
    let change = portal.store.change(&Actor("admin".into())).await?;
    let version = keyed_api(&change, "weather", upstream).await?;
    let other_version = keyed_api(&change, "tides", upstream).await?;
    let free = plans::create(&change, json(serde_json::json!({"slug": "free", "name": "Free"}))).await?;
    let gated = json(serde_json::json!({"slug": "partner", "name": "Partner", "requires_approval": true}));
    let gated = plans::create(&change, gated).await?;
    publisher.commit(change).await?;
    Ok(Catalog { version, other_version, free: free.id, gated: gated.id })
}

/// Two published keyed APIs and two plans.
async fn catalog(portal: &TestPortal, upstream: &str) -> Catalog {
    try_catalog(portal, upstream).await.unwrap_or_else(|e| panic!("catalog setup failed: {e}"))
}

/// Calls the weather API through the gateway with `key`.
pub(crate) async fn call(gateway: &str, key: &str) -> StatusCode {
    reqwest::Client::new()
        .get(format!("{gateway}/weather/v1/today"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap()
        .status()
}

/// Polls until the gateway answers `want` for `key`, for at most `within`.
pub(crate) async fn eventually(gateway: &str, key: &str, want: StatusCode, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let got = call(gateway, key).await;
        if got == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the gateway answered {got}, not {want}, after {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Creates an application through the form; returns its id.
pub(crate) async fn create_app(browser: &mut Browser, name: &str) -> String {
    let page = browser.submit("/apps", "/apps", &[("name", name), ("description", "Forecasts")]).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    page.location().strip_prefix("/apps/").unwrap().to_owned()
}

/// The full key on a "key created" page.
pub(crate) fn key_on(page: &Page) -> String {
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let start = page.body.find(r#"value="tpk_"#).unwrap_or_else(|| panic!("no key in:\n{}", page.body)) + 7;
    page.body[start..start + page.body[start..].find('"').unwrap()].to_owned()
}

/// A browser signed in as the existing developer `email`.
async fn signed_in(portal: &TestPortal, email: &str) -> Browser {
    let mut browser = portal.browser();
    let page = browser.sign_in(email, PASSWORD, "").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    browser
}

async fn key_ids(portal: &TestPortal, app: &str) -> Vec<(String, String)> {
    let app = turnpike_store::applications::find(portal.store.db(), app).await.unwrap();
    let page = keys::list(portal.store.db(), &app, turnpike_store::PageParams { page: 1, per_page: 50 }).await.unwrap();
    page.items.into_iter().map(|k| (k.id, k.prefix)).collect()
}

#[tokio::test]
async fn a_developer_subscribes_and_manages_keys_that_work_at_the_gateway_sqlite() {
    keys_at_the_gateway(TestPortal::start_with(Backend::Sqlite, |_| {}).await).await;
}

#[tokio::test]
async fn a_developer_subscribes_and_manages_keys_that_work_at_the_gateway_postgres() {
    keys_at_the_gateway(TestPortal::start_with(Backend::Postgres, |_| {}).await).await;
}

async fn keys_at_the_gateway(portal: TestPortal) {
    let (gateway, config) = start_gateway(&portal).await;
    let upstream = start_upstream().await;
    let catalog = catalog(&portal, &upstream).await;
    caught_up(&portal, &config).await;

    // Signed out: sent to sign in, and back afterwards.
    portal.browser().get("/apps").await.assert_redirect("/sign-in?next=/apps");

    let mut ann = portal.signed_in("ann@example.com").await;
    let empty = ann.get("/apps").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.body.contains("no applications yet"), "{}", empty.body);

    // A form with an error keeps what was typed.
    let refused = ann.submit("/apps", "/apps", &[("name", ""), ("description", "Kept text")]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains("field-error"), "{}", refused.body);
    assert!(refused.body.contains("Kept text"), "{}", refused.body);

    let app = create_app(&mut ann, "Weather station").await;
    let app_path = format!("/apps/{app}");
    let listed = ann.get("/apps").await;
    assert!(listed.body.contains("Weather station") && listed.body.contains(&app_path), "{}", listed.body);

    // Subscribe under a plan without approval: approved at once.
    let subscribed = ann
        .submit(
            &app_path,
            &format!("{app_path}/subscriptions"),
            &[("version_id", &catalog.version), ("plan_id", &catalog.free)],
        )
        .await;
    subscribed.assert_redirect(&app_path);
    let page = ann.follow(&subscribed).await;
    assert!(page.body.contains("weather v1") && page.body.contains("state-approved"), "{}", page.body);

    // A plan needing approval leaves the subscription pending.
    let pending = ann
        .submit(
            &app_path,
            &format!("{app_path}/subscriptions"),
            &[("version_id", &catalog.other_version), ("plan_id", &catalog.gated)],
        )
        .await;
    let page = ann.follow(&pending).await;
    assert!(page.body.contains("tides v1") && page.body.contains("state-pending"), "{}", page.body);
    assert!(page.body.contains("pending until"), "the flash explains it: {}", page.body);

    // A key: shown once in full, afterwards only its prefix.
    let keys_path = format!("{app_path}/keys");
    let bad = ann.submit(&app_path, &keys_path, &[("name", "server"), ("expires_on", "2001-01-01")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("The date must be after today."), "{}", bad.body);
    assert!(bad.body.contains(r#"value="server""#), "the name is kept: {}", bad.body);
    let created = ann.submit(&app_path, &keys_path, &[("name", "server"), ("expires_on", "")]).await;
    let key = key_on(&created);
    assert!(created.body.contains("shown only once"), "{}", created.body);
    let later = ann.get(&app_path).await;
    assert!(!later.body.contains(&key), "the full key must not be shown again");
    let [(key_id, prefix)] = &key_ids(&portal, &app).await[..] else { panic!("one key expected") };
    let shown = format!("tpk_{prefix}");
    assert!(key.starts_with(&shown) && later.body.contains(&shown), "{}", later.body);

    // It works at the gateway at once: the portal's commit reloaded the credentials.
    assert_eq!(call(&gateway, &key).await, StatusCode::OK);

    // Revoking needs the confirmation box.
    let revoke_path = format!("{keys_path}/{key_id}/revoke");
    let unconfirmed = ann.submit(&app_path, &revoke_path, &[]).await;
    unconfirmed.assert_redirect(&app_path);
    assert!(ann.follow(&unconfirmed).await.body.contains("Tick the box"));
    assert_eq!(call(&gateway, &key).await, StatusCode::OK);
    let revoked = ann.submit(&app_path, &revoke_path, &[("confirm", "yes")]).await;
    revoked.assert_redirect(&app_path);
    eventually(&gateway, &key, StatusCode::UNAUTHORIZED, Duration::from_secs(1)).await;
    assert!(ann.get(&app_path).await.body.contains("state-revoked"));

    // Rotation with grace: old and new both work.
    let first = key_on(&ann.submit(&app_path, &keys_path, &[("name", "worker"), ("expires_on", "")]).await);
    let first_id =
        key_ids(&portal, &app).await.into_iter().find(|(_, p)| first.starts_with(&format!("tpk_{p}"))).unwrap().0;
    let rotated = ann.submit(&app_path, &format!("{keys_path}/{first_id}/rotate"), &[("grace", "3600")]).await;
    let second = key_on(&rotated);
    assert_ne!(first, second);
    assert!(rotated.body.contains("keeps working until"), "{}", rotated.body);
    assert_eq!(call(&gateway, &first).await, StatusCode::OK);
    assert_eq!(call(&gateway, &second).await, StatusCode::OK);
    // An unknown grace period changes nothing.
    let odd = ann.submit(&app_path, &format!("{keys_path}/{first_id}/rotate"), &[("grace", "5")]).await;
    assert_eq!(odd.status, StatusCode::BAD_REQUEST);

    // Without grace the old key stops at once.
    let second_id =
        key_ids(&portal, &app).await.into_iter().find(|(_, p)| second.starts_with(&format!("tpk_{p}"))).unwrap().0;
    let third = key_on(&ann.submit(&app_path, &format!("{keys_path}/{second_id}/rotate"), &[("grace", "0")]).await);
    eventually(&gateway, &second, StatusCode::UNAUTHORIZED, Duration::from_secs(1)).await;
    assert_eq!(call(&gateway, &third).await, StatusCode::OK);
    assert_eq!(call(&gateway, &first).await, StatusCode::OK, "the first key's grace is untouched");
}

#[tokio::test]
async fn another_developers_ids_answer_404_and_forms_need_the_csrf_token_sqlite() {
    isolation(TestPortal::start_with(Backend::Sqlite, |_| {}).await).await;
}

#[tokio::test]
async fn another_developers_ids_answer_404_and_forms_need_the_csrf_token_postgres() {
    isolation(TestPortal::start_with(Backend::Postgres, |_| {}).await).await;
}

async fn isolation(portal: TestPortal) {
    let upstream = start_upstream().await;
    let catalog = catalog(&portal, &upstream).await;

    // Both accounts first: the test's own writes must not race the portal's after a sign-in.
    portal.developer("ann@example.com", "Ann").await;
    portal.developer("bob@example.com", "Bob").await;
    let mut ann = signed_in(&portal, "ann@example.com").await;
    let app = create_app(&mut ann, "Ann's app").await;
    let app_path = format!("/apps/{app}");
    ann.submit(&app_path, &format!("{app_path}/keys"), &[("name", "server")]).await;
    let [(key_id, _)] = &key_ids(&portal, &app).await[..] else { panic!("one key expected") };

    let mut bob = signed_in(&portal, "bob@example.com").await;
    let bob_app = create_app(&mut bob, "Bob's app").await;
    let listed = bob.get("/apps").await;
    assert!(!listed.body.contains("Ann's app"), "{}", listed.body);
    assert_eq!(bob.get(&app_path).await.status, StatusCode::NOT_FOUND);
    assert_eq!(bob.get("/apps/no-such-app").await.status, StatusCode::NOT_FOUND);

    let csrf = bob.get("/apps").await.csrf();
    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (format!("{app_path}/keys"), vec![("name", "stolen")]),
        (format!("{app_path}/subscriptions"), vec![("version_id", &catalog.version), ("plan_id", &catalog.free)]),
        (format!("{app_path}/keys/{key_id}/revoke"), vec![("confirm", "yes")]),
        (format!("{app_path}/keys/{key_id}/rotate"), vec![("grace", "0")]),
        (format!("{app_path}/edit"), vec![("app-name", "Renamed by Bob")]),
        (format!("{app_path}/delete"), vec![("confirm", "yes")]),
        // Ann's key under Bob's own application.
        (format!("/apps/{bob_app}/keys/{key_id}/revoke"), vec![("confirm", "yes")]),
        (format!("/apps/{bob_app}/keys/{key_id}/rotate"), vec![("grace", "0")]),
    ];
    for (path, fields) in &posts {
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        let page = bob.post(path, &all).await;
        assert_eq!(page.status, StatusCode::NOT_FOUND, "{path}: {}", page.body);
    }
    // Nothing changed: Ann's only key is live, and Bob's app got nothing.
    let ann_app = turnpike_store::applications::find(portal.store.db(), &app).await.unwrap();
    let all = turnpike_store::PageParams { page: 1, per_page: 50 };
    let ann_keys = keys::list(portal.store.db(), &ann_app, all).await.unwrap().items;
    assert_eq!(ann_keys.len(), 1);
    assert!(ann_keys[0].revoked_at.is_none() && ann_keys[0].expires_at.is_none());
    assert!(key_ids(&portal, &bob_app).await.is_empty());
    assert_eq!(turnpike_store::applications::get(portal.store.db(), &app).await.unwrap().input.name, "Ann's app");

    // A form without the session's token is refused and changes nothing.
    for fields in [vec![("name", "no token")], vec![("csrf", "forged"), ("name", "bad token")]] {
        let page = bob.post(&format!("/apps/{bob_app}/keys"), &fields).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
        let page = bob.post("/apps", &fields).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
        for action in ["edit", "delete"] {
            let mut fields = fields.clone();
            fields.extend([("app-name", "Renamed"), ("confirm", "yes")]);
            let page = bob.post(&format!("/apps/{bob_app}/{action}"), &fields).await;
            assert_eq!(page.status, StatusCode::FORBIDDEN, "{action}: {}", page.body);
        }
    }
    assert_eq!(turnpike_store::applications::get(portal.store.db(), &bob_app).await.unwrap().input.name, "Bob's app");
    assert!(key_ids(&portal, &bob_app).await.is_empty());
    let bob_apps = turnpike_store::applications::list(portal.store.db(), None, all).await.unwrap();
    assert_eq!(bob_apps.items.len(), 2, "no application was created without a token");
}

#[tokio::test]
async fn applications_are_renamed_and_deleted_with_their_keys() {
    let portal = TestPortal::start().await;
    let (gateway, config) = start_gateway(&portal).await;
    let upstream = start_upstream().await;
    let catalog = catalog(&portal, &upstream).await;
    caught_up(&portal, &config).await;
    let mut ann = portal.signed_in("ann@example.com").await;
    let (app, key) = subscribed_key(&mut ann, "Weather station", &catalog.version, &catalog.free).await;
    let app_path = format!("/apps/{app}");
    assert_eq!(call(&gateway, &key).await, StatusCode::OK);

    // Rename: a bad name is refused with the typed values kept, and nothing changes.
    let edit = format!("{app_path}/edit");
    let refused = ann.submit(&app_path, &edit, &[("app-name", " "), ("app-description", "Kept text")]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains(r#"id="app-name-error""#), "{}", refused.body);
    assert!(refused.body.contains("Kept text"), "{}", refused.body);
    let db = portal.store.db();
    assert_eq!(turnpike_store::applications::get(db, &app).await.unwrap().input.name, "Weather station");
    let saved = ann.submit(&app_path, &edit, &[("app-name", "Tide gauge"), ("app-description", "Sea levels")]).await;
    saved.assert_redirect(&app_path);
    let page = ann.follow(&saved).await;
    assert!(page.body.contains("<h1>Tide gauge</h1>") && page.body.contains("Sea levels"), "{}", page.body);
    assert!(page.body.contains("Application settings saved."), "{}", page.body);
    assert_eq!(call(&gateway, &key).await, StatusCode::OK, "a rename leaves the keys working");

    // Delete: needs the box ticked; then the application, its subscription and keys go.
    let delete = format!("{app_path}/delete");
    let unconfirmed = ann.submit(&app_path, &delete, &[]).await;
    unconfirmed.assert_redirect(&app_path);
    assert!(ann.follow(&unconfirmed).await.body.contains("Tick the box to confirm deleting"));
    assert_eq!(call(&gateway, &key).await, StatusCode::OK);
    let deleted = ann.submit(&app_path, &delete, &[("confirm", "yes")]).await;
    deleted.assert_redirect("/apps");
    let page = ann.follow(&deleted).await;
    assert!(page.body.contains("Application “Tide gauge” deleted"), "{}", page.body);
    assert!(page.body.contains("no applications yet"), "{}", page.body);
    assert_eq!(ann.get(&app_path).await.status, StatusCode::NOT_FOUND);
    eventually(&gateway, &key, StatusCode::UNAUTHORIZED, Duration::from_secs(1)).await;
    let filter =
        turnpike_store::subscriptions::SubscriptionFilter { application_id: Some(app.clone()), ..Default::default() };
    let all = turnpike_store::PageParams { page: 1, per_page: 50 };
    assert!(turnpike_store::subscriptions::list(db, &filter, all).await.unwrap().items.is_empty());
}
