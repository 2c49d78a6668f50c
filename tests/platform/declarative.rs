//! Declarative configuration through the store: a state built with the admin API is
//! exported, written as YAML, imported into a fresh app and exported again unchanged;
//! importing twice changes nothing; a document with one bad part is refused whole.
//! Certificates travel with their private keys, are matched to stored ones by host,
//! and are checked as the admin API checks them.

use std::os::unix::fs::PermissionsExt;
use std::process::{Output, Stdio};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use turnpike_domain::model::VersionState;
use turnpike_store::declarative::{self, CertificateDocument, Document, Plan};
use turnpike_store::{Actor, StoreError};

use crate::certificates::{Issued, TestCa, tls_listener};
use crate::support::{Backend, TestApp, Upstream, on_both_stores};

/// The certificates of the rich state, with the CA that issued them.
struct RichCertificates {
    ca: TestCa,
    /// Presented for api.example.com and *.example.com (its subjectAltName).
    api: Issued,
    /// Issued for legacy.test and www.legacy.test, presented for www.legacy.test only.
    legacy: Issued,
}

/// Builds a state that uses every part of the document: two upstreams (weights,
/// algorithms, timeouts, health check), two plans, two APIs with tags and owner, and
/// versions in every state, including a deprecated one with a successor and a draft
/// imported from an OpenAPI document, and two TLS certificates. Upstream targets are
/// the given servers.
async fn build_rich_state(app: &TestApp, a: &Upstream, b: &Upstream) -> RichCertificates {
    app.post(
        "/admin/v1/upstreams",
        json!({
            "name": "orders-up",
            "targets": [{"url": a.url, "weight": 300}, {"url": b.url, "weight": 100}],
            "algorithm": "least_connections",
            "timeouts": {"connect_ms": 1000, "read_ms": 2000, "total_ms": 5000},
        }),
    )
    .await
    .expect(201);
    app.post(
        "/admin/v1/upstreams",
        json!({
            "name": "legacy-up",
            "targets": [{"url": a.url, "weight": 1}],
            "algorithm": "consistent_hash",
            "hash_on": {"kind": "header", "name": "x-user"},
            "health_check": {"enabled": true, "path": "/healthz", "interval_ms": 5000, "timeout_ms": 1000,
                             "healthy_threshold": 1, "unhealthy_threshold": 5},
        }),
    )
    .await
    .expect(201);
    app.post(
        "/admin/v1/plans",
        json!({"slug": "free", "name": "Free", "rate_limit": {"requests": 10, "per_seconds": 1},
               "quota": {"requests": 1000, "period": "day"}}),
    )
    .await
    .expect(201);
    app.post(
        "/admin/v1/plans",
        json!({"slug": "gold", "name": "Gold", "description": "For partners",
               "rate_limit": {"requests": 100, "per_seconds": 60},
               "quota": {"requests": 1_000_000, "period": "month"}, "requires_approval": true}),
    )
    .await
    .expect(201);

    // orders: v1 deprecated in favour of v2 (published), v3 a draft.
    app.post(
        "/admin/v1/apis",
        json!({"slug": "orders", "name": "Orders", "description": "Order management",
               "tags": ["commerce", "internal"], "owner": "team-orders"}),
    )
    .await
    .expect(201);
    for label in ["v1", "v2", "v3"] {
        app.post("/admin/v1/apis/orders/versions", json!({"label": label, "upstream_id": "orders-up"}))
            .await
            .expect(201);
    }
    app.post("/admin/v1/apis/orders/versions/v1/routes", json!({"path": "/*"})).await.expect(201);
    app.post(
        "/admin/v1/apis/orders/versions/v2/routes",
        json!({"name": "list-orders", "methods": ["GET"], "path": "/orders"}),
    )
    .await
    .expect(201);
    app.post(
        "/admin/v1/apis/orders/versions/v2/routes",
        json!({"methods": ["POST", "PUT"], "path": "/orders/{id}", "host": "api.example.com",
               "headers": {"x-tenant": "acme"}}),
    )
    .await
    .expect(201);
    app.post("/admin/v1/apis/orders/versions/v3/routes", json!({"methods": ["DELETE"], "path": "/orders/{id}"}))
        .await
        .expect(201);
    app.post("/admin/v1/apis/orders/versions/v1/publish", json!({})).await.expect(200);
    app.post("/admin/v1/apis/orders/versions/v2/publish", json!({})).await.expect(200);
    let sunset = (chrono::Utc::now() + chrono::Duration::days(90)).to_rfc3339();
    app.post("/admin/v1/apis/orders/versions/v1/deprecate", json!({"sunset_at": sunset, "successor": "v2"}))
        .await
        .expect(200);

    // pets: v1 retired after being live, 2024-01 a draft imported from OpenAPI.
    app.post("/admin/v1/apis", json!({"slug": "pets", "name": "Pets", "tags": ["animals"]})).await.expect(201);
    app.post("/admin/v1/apis/pets/versions", json!({"label": "v1", "upstream_id": "legacy-up"})).await.expect(201);
    app.post("/admin/v1/apis/pets/versions/v1/routes", json!({"path": "/pets/*", "methods": ["GET"]}))
        .await
        .expect(201);
    app.post("/admin/v1/apis/pets/versions/v1/publish", json!({})).await.expect(200);
    app.post("/admin/v1/apis/pets/versions/v1/retire", json!({})).await.expect(200);
    let petstore =
        std::fs::read_to_string(turnpike_testkit::fixtures_dir().join("openapi/oai-v3.0-petstore.yaml")).unwrap();
    app.put_raw("/admin/v1/apis/pets/versions/2024-01/openapi", "application/yaml", petstore).await.expect(201);

    // Two certificates: hosts from the certificate, and hosts chosen at upload.
    let ca = TestCa::new();
    let api = ca.issue(&["api.example.com", "*.example.com"]);
    let legacy = ca.issue(&["legacy.test", "www.legacy.test"]);
    app.post("/admin/v1/certificates", api.body()).await.expect(201);
    let mut body = legacy.body();
    body["hosts"] = json!(["www.legacy.test"]);
    app.post("/admin/v1/certificates", body).await.expect(201);
    RichCertificates { ca, api, legacy }
}

async fn export(app: &TestApp) -> Document {
    declarative::export(app.store.db()).await.expect("export")
}

fn to_yaml(doc: &Document) -> String {
    yaml_serde::to_string(doc).expect("a document serializes")
}

fn from_yaml(text: &str) -> Document {
    yaml_serde::from_str(text).unwrap_or_else(|e| panic!("exported YAML does not parse back ({e}):\n{text}"))
}

/// Imports `doc` as `turnpike config import` does: plan and apply in one change,
/// which is dropped (rolled back) when planning or applying fails. The new snapshot
/// goes to the app's gateway, as the admin plane would publish it.
async fn import(app: &TestApp, doc: &Document) -> Result<Plan, StoreError> {
    let change = app.store.change(&Actor("declarative-test".into())).await?;
    let plan = declarative::plan(change.txn(), doc, change.target_policy()).await?;
    declarative::apply(&change, &plan).await?;
    if let Some(snapshot) = change.commit().await? {
        app.gateway.apply(&snapshot).expect("the gateway accepts the imported configuration");
    }
    Ok(plan)
}

/// Plans `doc` without applying it.
async fn plan_only(app: &TestApp, doc: &Document) -> Result<Plan, StoreError> {
    let change = app.store.change(&Actor("declarative-test".into())).await?;
    let plan = declarative::plan(change.txn(), doc, change.target_policy()).await;
    drop(change);
    plan
}

fn version<'a>(doc: &'a mut Document, api: &str, label: &str) -> &'a mut declarative::VersionDocument {
    doc.apis
        .iter_mut()
        .find(|a| a.slug == api)
        .and_then(|a| a.versions.iter_mut().find(|v| v.label == label))
        .unwrap_or_else(|| panic!("no version {api}/{label} in the document"))
}

/// Asserts that an import was refused with a validation error on `field`.
#[track_caller]
fn refused_on(result: Result<Plan, StoreError>, field: &str) {
    match result {
        Err(StoreError::Invalid(errors)) => assert!(
            errors.iter().any(|e| e.field == field),
            "expected an error on {field}, got: {:?}",
            errors.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>()
        ),
        Err(other) => panic!("expected a validation error on {field}, got: {other}"),
        Ok(plan) => panic!("expected a refusal on {field}, got a plan: {:?}", plan.steps),
    }
}

on_both_stores! {
    async fn export_round_trips_through_yaml_into_a_fresh_store(app) {
        let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
        let certs = build_rich_state(&app, &a, &b).await;
        let exported = export(&app).await;

        // Everything built is in the document, in a stable order.
        assert_eq!(exported.upstreams.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), ["legacy-up", "orders-up"]);
        assert_eq!(exported.plans.iter().map(|p| p.slug.as_str()).collect::<Vec<_>>(), ["free", "gold"]);
        assert_eq!(exported.apis.iter().map(|a| a.slug.as_str()).collect::<Vec<_>>(), ["orders", "pets"]);
        let states: Vec<(String, &str)> = exported
            .apis
            .iter()
            .flat_map(|a| a.versions.iter().map(move |v| (format!("{}/{}", a.slug, v.label), v.state.as_str())))
            .collect();
        assert_eq!(
            states,
            [
                ("orders/v1".to_owned(), "deprecated"),
                ("orders/v2".to_owned(), "published"),
                ("orders/v3".to_owned(), "draft"),
                ("pets/2024-01".to_owned(), "draft"),
                ("pets/v1".to_owned(), "retired"),
            ]
        );
        let mut probe = exported.clone();
        let v1 = version(&mut probe, "orders", "v1");
        assert!(v1.sunset_at.is_some() && v1.successor.as_deref() == Some("v2"), "{v1:?}");
        let imported = version(&mut probe, "pets", "2024-01");
        assert!(imported.openapi.as_ref().is_some_and(|d| d["info"]["title"] == "Swagger Petstore"), "{imported:?}");
        assert!(!imported.routes.is_empty() && imported.upstream.is_none(), "{imported:?}");
        // Certificates with their keys (a backup must restore them), ordered by hosts.
        assert_eq!(
            exported.certificates,
            [
                CertificateDocument {
                    hosts: Some(vec!["api.example.com".into(), "*.example.com".into()]),
                    cert_pem: certs.api.cert_pem.clone(),
                    key_pem: certs.api.key_pem.clone(),
                },
                CertificateDocument {
                    hosts: Some(vec!["www.legacy.test".into()]),
                    cert_pem: certs.legacy.cert_pem.clone(),
                    key_pem: certs.legacy.key_pem.clone(),
                },
            ]
        );
        assert!(!format!("{exported:?}").contains(certs.api.key_line()), "Debug shows a private key");

        let yaml = to_yaml(&exported);
        let parsed = from_yaml(&yaml);
        assert_eq!(parsed, exported, "YAML round trip changed the document");

        let fresh = TestApp::start(app.backend).await;
        let audit_before = fresh.audit_count().await;
        let plan = import(&fresh, &parsed).await.expect("an export imports into an empty store");
        assert_eq!(plan.unchanged, 0, "nothing exists yet");
        // 2 upstreams + 2 plans + 2 APIs + 5 versions + 2 certificates.
        assert_eq!(plan.steps.len(), 13, "{:#?}", plan.steps.iter().map(ToString::to_string).collect::<Vec<_>>());
        assert!(fresh.audit_count().await > audit_before, "an applied import is audited");

        let again = export(&fresh).await;
        assert_eq!(again, exported);
        assert_eq!(to_yaml(&again), yaml, "the YAML text differs after the round trip");
    }

    async fn importing_the_same_document_again_changes_nothing(app) {
        let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
        build_rich_state(&app, &a, &b).await;
        let doc = export(&app).await;

        // The store the document came from already matches it.
        let plan = plan_only(&app, &doc).await.unwrap();
        assert!(plan.steps.is_empty(), "{:?}", plan.steps.iter().map(ToString::to_string).collect::<Vec<_>>());
        assert_eq!(plan.unchanged, 13);

        let fresh = TestApp::start(app.backend).await;
        import(&fresh, &doc).await.unwrap();
        let audit = fresh.audit_count().await;
        let snapshot = fresh.get("/admin/v1/config/snapshot").await.expect(200)["version"].clone();
        let second = import(&fresh, &doc).await.unwrap();
        assert!(second.steps.is_empty(), "{:?}", second.steps.iter().map(ToString::to_string).collect::<Vec<_>>());
        assert_eq!(second.unchanged, 13);
        assert_eq!(fresh.audit_count().await, audit, "an empty plan writes no audit record");
        assert_eq!(fresh.get("/admin/v1/config/snapshot").await.expect(200)["version"], snapshot);
    }

    async fn a_changed_document_is_planned_and_applied_as_a_diff(app) {
        let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
        build_rich_state(&app, &a, &b).await;
        let mut doc = export(&app).await;
        doc.plans.iter_mut().find(|p| p.slug == "free").unwrap().requires_approval = true;
        version(&mut doc, "orders", "v3").state = VersionState::Published;
        doc.apis[1].tags.push("beta".into());

        let plan = import(&app, &doc).await.unwrap();
        let steps: Vec<String> = plan.steps.iter().map(ToString::to_string).collect();
        assert_eq!(steps, ["~ plan free", "~ version orders/v3: state draft -> published", "~ api pets"]);
        assert_eq!(plan.unchanged, 10);
        assert_eq!(export(&app).await, doc);
        assert_eq!(app.get("/admin/v1/apis/orders/versions/v3").await.expect(200)["state"], "published");
        assert!(plan_only(&app, &doc).await.unwrap().steps.is_empty());
    }

    async fn a_document_with_one_bad_part_is_refused_whole(app) {
        let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
        build_rich_state(&app, &a, &b).await;
        let good = export(&app).await;
        let audit = app.audit_count().await;
        // Every bad document also carries a valid change, which must not be written either.
        let with_good_change = || {
            let mut doc = good.clone();
            let mut extra = doc.upstreams[0].clone();
            extra.name = "extra-up".into();
            doc.upstreams.push(extra);
            doc.apis[0].name = "Orders renamed".into();
            doc
        };

        let mut unknown_upstream = with_good_change();
        version(&mut unknown_upstream, "orders", "v2").upstream = Some("nowhere".into());
        refused_on(import(&app, &unknown_upstream).await, "apis[0].versions[1].upstream");

        let mut duplicate_slug = with_good_change();
        let copy = duplicate_slug.apis[1].clone();
        duplicate_slug.apis.push(copy);
        refused_on(import(&app, &duplicate_slug).await, "apis[2].slug");

        let mut duplicate_upstream = with_good_change();
        duplicate_upstream.upstreams.push(duplicate_upstream.upstreams[0].clone());
        refused_on(import(&app, &duplicate_upstream).await, "upstreams[3].name");

        let mut no_sunset = with_good_change();
        version(&mut no_sunset, "orders", "v1").sunset_at = None;
        refused_on(import(&app, &no_sunset).await, "apis[0].versions[0].sunset_at");

        let mut unretire = with_good_change();
        version(&mut unretire, "pets", "v1").state = VersionState::Published;
        refused_on(import(&app, &unretire).await, "apis[1].versions[1].state");

        let mut back_to_draft = with_good_change();
        version(&mut back_to_draft, "orders", "v2").state = VersionState::Draft;
        refused_on(import(&app, &back_to_draft).await, "apis[0].versions[1].state");

        let mut bad_route = with_good_change();
        version(&mut bad_route, "orders", "v2").routes[0].path = "/a//b".into();
        refused_on(import(&app, &bad_route).await, "apis[0].versions[1].routes[0].path");

        let mut taken_base_path = with_good_change();
        let orders_v1 = version(&mut taken_base_path, "orders", "v1").base_path.clone();
        version(&mut taken_base_path, "pets", "2024-01").base_path = orders_v1;
        refused_on(import(&app, &taken_base_path).await, "apis[1].versions[0].base_path");

        let mut edited_retired = with_good_change();
        version(&mut edited_retired, "pets", "v1").routes.clear();
        refused_on(import(&app, &edited_retired).await, "apis[1].versions[1]");

        let mut bad_pem = with_good_change();
        bad_pem.certificates[1].cert_pem = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n".into();
        refused_on(import(&app, &bad_pem).await, "certificates[1].cert_pem");

        assert_eq!(export(&app).await, good, "a refused document changed the store");
        assert_eq!(app.audit_count().await, audit, "a refused document wrote an audit record");
        // The valid part alone goes through.
        assert_eq!(import(&app, &with_good_change()).await.unwrap().steps.len(), 2);
    }

    async fn the_gateway_serves_what_was_imported_into_a_fresh_app(app) {
        let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
        let certs = build_rich_state(&app, &a, &b).await;
        let doc = from_yaml(&to_yaml(&export(&app).await));
        let fresh = TestApp::start(app.backend).await;
        drop(app);
        import(&fresh, &doc).await.unwrap();

        let body = fresh.call(Method::GET, "/orders/v2/orders").await.expect(200);
        assert!(body["upstream"] == "a" || body["upstream"] == "b", "{body}");
        assert_eq!(body["path"], "/orders");

        // The route limited to a host and a header takes only matching requests.
        let url = format!("{}/orders/v2/orders/42", fresh.gateway_url);
        let matching = fresh.client.post(&url).header("host", "api.example.com").header("x-tenant", "acme");
        assert_eq!(matching.send().await.unwrap().status(), 200);
        let wrong_tenant = fresh.client.post(&url).header("host", "api.example.com").header("x-tenant", "other");
        assert_eq!(wrong_tenant.send().await.unwrap().status(), 404);

        let deprecated = fresh.call(Method::GET, "/orders/v1/anything").await;
        deprecated.expect(200);
        assert!(deprecated.headers.contains_key("sunset") && deprecated.headers.contains_key("deprecation"));
        fresh.call(Method::DELETE, "/orders/v3/orders/1").await.problem(404);
        fresh.call(Method::GET, "/pets/v1/pets/1").await.problem(410);

        // The restored certificates are presented with their restored keys.
        let tls = tls_listener(&fresh).await;
        assert_eq!(certs.ca.presented(tls, "api.example.com").await, Some(certs.api.der.clone()));
        assert_eq!(certs.ca.presented(tls, "www.example.com").await, Some(certs.api.der.clone()));
        assert_eq!(certs.ca.presented(tls, "www.legacy.test").await, Some(certs.legacy.der.clone()));
        assert_eq!(certs.ca.presented(tls, "legacy.test").await, None, "not among the hosts");
    }
}

/// The way from the default SQLite store to PostgreSQL is `config export` then
/// `config import`; after it, importing the same file again must find nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_from_sqlite_imports_into_postgres_once() {
    let sqlite = TestApp::start(Backend::Sqlite).await;
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    build_rich_state(&sqlite, &a, &b).await;
    let doc = from_yaml(&to_yaml(&export(&sqlite).await));

    let postgres = TestApp::start(Backend::Postgres).await;
    import(&postgres, &doc).await.unwrap();
    let again = plan_only(&postgres, &doc).await.unwrap();
    assert!(
        again.steps.is_empty(),
        "re-importing the same file into PostgreSQL plans {:?}; sunset_at in the file: {:?}, stored: {:?}",
        again.steps.iter().map(ToString::to_string).collect::<Vec<_>>(),
        version(&mut doc.clone(), "orders", "v1").sunset_at,
        version(&mut export(&postgres).await, "orders", "v1").sunset_at,
    );
}

on_both_stores! {
    async fn undeprecating_through_a_document_leaves_no_sunset(app) {
        // Publishing a deprecated version clears its sunset (`lifecycle::sunset_after`);
        // a document that un-deprecates one must not leave a published version
        // announcing a sunset (refusing the document would do too).
        let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
        build_rich_state(&app, &a, &b).await;
        let mut doc = export(&app).await;
        // The user's edit: only the state line of the exported file.
        version(&mut doc, "orders", "v1").state = VersionState::Published;
        match import(&app, &doc).await {
            Err(StoreError::Invalid(_)) => {}
            Err(other) => panic!("unexpected failure: {other}"),
            Ok(_) => {
                let v1 = app.get("/admin/v1/apis/orders/versions/v1").await.expect(200);
                assert_eq!(v1["state"], "published");
                let reply = app.call(Method::GET, "/orders/v1/anything").await;
                reply.expect(200);
                assert!(
                    v1["sunset_at"].is_null() && !reply.headers.contains_key("sunset"),
                    "a published version keeps a sunset date ({}) and the gateway sends Sunset: {:?}",
                    v1["sunset_at"],
                    reply.headers.get("sunset"),
                );
            }
        }
    }

    async fn deprecating_through_a_document_needs_a_future_sunset(app) {
        // The admin API refuses to deprecate with a sunset date that has passed; a
        // document that deprecates a published version must follow the same rule.
        let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
        build_rich_state(&app, &a, &b).await;
        let past = (chrono::Utc::now() - chrono::Duration::days(3)).to_rfc3339();
        app.post("/admin/v1/apis/orders/versions/v2/deprecate", json!({"sunset_at": past})).await.expect(422);

        let before = export(&app).await;
        let mut doc = before.clone();
        let v2 = version(&mut doc, "orders", "v2");
        v2.state = VersionState::Deprecated;
        v2.sunset_at = Some(chrono::Utc::now() - chrono::Duration::days(3));
        match import(&app, &doc).await {
            Err(StoreError::Invalid(errors)) if errors.iter().any(|e| e.field.starts_with("apis[0].versions[1]")) => {}
            other => panic!(
                "a deprecation with a past sunset was not refused on apis[0].versions[1]: {:?}",
                other.map(|p| p.steps.iter().map(ToString::to_string).collect::<Vec<_>>())
            ),
        }
        assert_eq!(export(&app).await, before);
    }
}

/// A document's certificate as the file would give it.
fn certificate_doc(issued: &Issued, hosts: Option<&[&str]>) -> CertificateDocument {
    CertificateDocument {
        hosts: hosts.map(|h| h.iter().map(|s| (*s).to_owned()).collect()),
        cert_pem: issued.cert_pem.clone(),
        key_pem: issued.key_pem.clone(),
    }
}

fn steps(plan: &Plan) -> Vec<String> {
    plan.steps.iter().map(ToString::to_string).collect()
}

on_both_stores! {
    async fn certificates_are_matched_by_host_and_planned_as_creates_updates_and_deletes(app) {
        let ca = TestCa::new();
        let tls = tls_listener(&app).await;
        let a = ca.issue(&["a.test", "*.a.test"]);
        let b = ca.issue(&["b.test"]);
        let www_b = ca.issue(&["www.b.test"]);
        let x = ca.issue(&["x.test", "y.test"]);
        let z = ca.issue(&["z.test"]);
        let mut ids = Vec::new();
        for issued in [&a, &b, &www_b, &x, &z] {
            ids.push(app.post("/admin/v1/certificates", issued.body()).await.expect(201)["id"].as_str().unwrap().to_owned());
        }
        let before = export(&app).await;
        let hosts: Vec<_> = before.certificates.iter().map(|c| c.hosts.clone().unwrap().join(",")).collect();
        assert_eq!(hosts, ["a.test,*.a.test", "b.test", "www.b.test", "x.test,y.test", "z.test"]);

        // The file: a.test renewed and given y.test, which x.test's certificate gives
        // up (a host moves between two certificates of one import); b.test and
        // www.b.test under one new certificate, so www.b.test's own one goes; a new
        // c.test; z.test not mentioned, so it stays.
        let a2 = ca.issue(&["a.test", "*.a.test", "y.test"]);
        let both_b = ca.issue(&["b.test", "www.b.test"]);
        let c = ca.issue(&["c.test"]);
        let mut doc = before.clone();
        doc.certificates = vec![
            certificate_doc(&a2, None),
            certificate_doc(&both_b, None),
            certificate_doc(&x, Some(&["x.test"])),
            certificate_doc(&c, Some(&["c.test"])),
        ];

        // A dry run: the plan, and nothing written.
        let audit = app.audit_count().await;
        let planned = plan_only(&app, &doc).await.unwrap();
        assert_eq!(
            steps(&planned),
            [
                "- certificate www.b.test (the file gives its hosts to other certificates)",
                "~ certificate a.test, *.a.test, y.test: hosts [a.test, *.a.test] -> [a.test, *.a.test, y.test], \
                 certificate, key",
                "~ certificate b.test, www.b.test: hosts [b.test] -> [b.test, www.b.test], certificate, key",
                "~ certificate x.test: hosts [x.test, y.test] -> [x.test]",
                "+ certificate c.test",
            ]
        );
        assert_eq!(planned.unchanged, 0);
        assert_eq!(export(&app).await, before, "a dry run wrote something");
        assert_eq!(app.audit_count().await, audit);

        let applied = import(&app, &doc).await.unwrap();
        assert_eq!(applied, planned);
        let after = export(&app).await;
        let hosts: Vec<_> = after.certificates.iter().map(|c| c.hosts.clone().unwrap().join(",")).collect();
        assert_eq!(hosts, ["a.test,*.a.test,y.test", "b.test,www.b.test", "c.test", "x.test", "z.test"]);
        assert_eq!(after.certificates[0].cert_pem, a2.cert_pem);
        assert_eq!(after.certificates[1].key_pem, both_b.key_pem);
        assert_eq!(after.certificates[4], before.certificates[4], "z.test is untouched");
        // Updated in place: the renewed certificate keeps its id; www.b.test's is gone.
        let listed = app.get("/admin/v1/certificates").await.expect(200);
        let listed_ids: Vec<&str> = listed["items"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
        for (id, kept) in ids.iter().zip([true, true, false, true, true]) {
            assert_eq!(listed_ids.contains(&id.as_str()), kept, "{id} in {listed_ids:?}");
        }
        assert_eq!(listed["total"], 5);

        // The gateway presents what was imported.
        app.settled().await;
        assert_eq!(ca.presented(tls, "y.test").await, Some(a2.der.clone()));
        assert_eq!(ca.presented(tls, "www.a.test").await, Some(a2.der.clone()));
        assert_eq!(ca.presented(tls, "www.b.test").await, Some(both_b.der.clone()));
        assert_eq!(ca.presented(tls, "x.test").await, Some(x.der.clone()));
        assert_eq!(ca.presented(tls, "c.test").await, Some(c.der.clone()));
        assert_eq!(ca.presented(tls, "z.test").await, Some(z.der.clone()));

        // Importing the same file again, or the export, changes nothing.
        assert_eq!(steps(&import(&app, &doc).await.unwrap()), Vec::<String>::new());
        let again = plan_only(&app, &after).await.unwrap();
        assert!(again.steps.is_empty() && again.unchanged == 5, "{:?}", steps(&again));

        // No private key in the audit log.
        let audit = app.get("/admin/v1/audit?per_page=200").await.text();
        assert!(audit.contains("certificate.update") && audit.contains("certificate.delete"));
        for issued in [&a, &b, &www_b, &x, &a2, &both_b, &c] {
            assert!(!audit.contains(issued.key_line()), "a private key reached the audit log");
        }
    }

    async fn bad_certificates_in_a_document_are_refused_by_name(app) {
        let ca = TestCa::new();
        let a = ca.issue(&["a.test"]);
        app.post("/admin/v1/certificates", a.body()).await.expect(201);
        let before = export(&app).await;
        let audit = app.audit_count().await;
        let good = ca.issue(&["good.test"]);
        let other = ca.issue(&["m.test"]);
        let n = ca.issue(&["n.test"]);
        let expired = ca.issue_with(&["old.test"], |p| {
            p.not_before = rcgen::date_time_ymd(2001, 1, 1);
            p.not_after = rcgen::date_time_ymd(2002, 1, 1);
        });
        let d1 = ca.issue(&["d.test", "d1.test"]);
        let d2 = ca.issue(&["d.test"]);
        let garbage_key = "-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END PRIVATE KEY-----\n";

        let mut doc = before.clone();
        doc.certificates = vec![
            before.certificates[0].clone(),
            certificate_doc(&good, None),
            CertificateDocument { cert_pem: "not a certificate".into(), ..certificate_doc(&a, Some(&["bad.test"])) },
            CertificateDocument { key_pem: other.key_pem.clone(), ..certificate_doc(&n, Some(&["n.test"])) },
            CertificateDocument { key_pem: garbage_key.into(), ..certificate_doc(&n, None) },
            certificate_doc(&n, Some(&["elsewhere.test"])),
            certificate_doc(&expired, None),
            certificate_doc(&d1, None),
            certificate_doc(&d2, None),
        ];
        let errors = match import(&app, &doc).await {
            Err(StoreError::Invalid(errors)) => errors,
            other => panic!("bad certificates were not refused: {:?}", other.map(|p| steps(&p))),
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "certificates[2].cert_pem",
                "certificates[3].key_pem",
                "certificates[4].key_pem",
                "certificates[5].hosts[0]",
                "certificates[6].cert_pem",
                "certificates[8].hosts",
            ],
            "{errors:?}"
        );
        let message = |i: usize| errors[i].to_string();
        assert!(message(0).contains("not valid PEM") || message(0).contains("no PEM"), "{}", message(0));
        assert!(message(0).contains("bad.test"), "the certificate is named by its hosts: {}", message(0));
        assert!(message(1).contains("does not belong to the certificate") && message(1).contains("n.test"), "{}", message(1));
        assert!(message(4).contains("expired"), "{}", message(4));
        assert!(message(5).contains("'d.test'") && message(5).contains("certificates[7]"), "{}", message(5));
        for e in &errors {
            assert!(!e.to_string().contains("Z2FyYmFnZQ") && !e.to_string().contains(other.key_line()), "{e}");
        }
        assert_eq!(export(&app).await, before, "a refused document changed the store");
        assert_eq!(app.audit_count().await, audit);

        // The good ones alone go through.
        doc.certificates = vec![before.certificates[0].clone(), certificate_doc(&good, None)];
        assert_eq!(steps(&import(&app, &doc).await.unwrap()), ["+ certificate good.test"]);
    }

    async fn a_certificate_that_expired_in_the_store_does_not_block_an_import(app) {
        // The admin API never looks again at a certificate it is not sent; an import of
        // the export must not either, or a backup with one expired certificate could
        // not be imported back.
        let ca = TestCa::new();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let soon = ca.issue_with(&["soon.test"], |p| {
            p.not_after = rcgen::date_time_ymd(1970, 1, 1) + (now + Duration::from_secs(2));
        });
        app.post("/admin/v1/certificates", soon.body()).await.expect(201);
        let doc = export(&app).await;
        let not_after = chrono::DateTime::from_timestamp(now.as_secs() as i64 + 2, 0).unwrap();
        while chrono::Utc::now() <= not_after + chrono::Duration::seconds(1) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let plan = import(&app, &doc).await.unwrap();
        assert!(plan.steps.is_empty(), "{:?}", steps(&plan));
        assert_eq!(plan.unchanged, 1);
        // A changed one is checked again, as a PATCH would be.
        let mut moved = doc.clone();
        moved.certificates[0].hosts = None;
        match plan_only(&app, &moved).await {
            Err(StoreError::Invalid(errors)) => {
                assert!(errors.iter().any(|e| e.field == "certificates[0].cert_pem" && e.message.contains("expired")), "{errors:?}");
            }
            other => panic!("an expired certificate was accepted: {:?}", other.map(|p| steps(&p))),
        }
    }
}

/// Runs `turnpike config …` in `dir` to completion.
async fn config(dir: &std::path::Path, args: &[&str]) -> Output {
    let mut command = crate::server::turnpike(dir, &[&["config"], args].concat());
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    tokio::time::timeout(crate::server::STARTUP, command.output()).await.expect("turnpike config finishes").unwrap()
}

fn out(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// From the command line: a dry run writes nothing, an export file is private (it
/// holds private keys), and a bad certificate is refused by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_through_config_export_and_import() {
    let dir = tempfile::TempDir::new().unwrap();
    let ca = TestCa::new();
    let c = ca.issue(&["c.test"]);
    let doc = Document { certificates: vec![certificate_doc(&c, None)], ..Document::default() };
    let file = dir.path().join("in.yaml");
    std::fs::write(&file, to_yaml(&doc)).unwrap();
    let file_arg = file.to_str().unwrap();

    let dry = config(dir.path(), &["import", file_arg, "--dry-run"]).await;
    let (stdout, stderr) = out(&dry);
    assert!(dry.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("+ certificate c.test") && stdout.contains("dry run: nothing written"), "{stdout}");
    let (exported, _) = out(&config(dir.path(), &["export"]).await);
    assert!(!exported.contains("certificates:"), "a dry run wrote a certificate:\n{exported}");

    let applied = config(dir.path(), &["import", file_arg]).await;
    assert!(out(&applied).0.contains("+ certificate c.test"), "{:?}", out(&applied));

    // An export over an existing world-readable file leaves it private.
    let backup = dir.path().join("backup.yaml");
    std::fs::write(&backup, "old").unwrap();
    std::fs::set_permissions(&backup, std::fs::Permissions::from_mode(0o644)).unwrap();
    let written = config(dir.path(), &["export", "--output", backup.to_str().unwrap()]).await;
    assert!(written.status.success(), "{:?}", out(&written));
    assert_eq!(std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777, 0o600);
    let new_file = dir.path().join("new-backup.yaml");
    config(dir.path(), &["export", "-o", new_file.to_str().unwrap()]).await;
    assert_eq!(std::fs::metadata(&new_file).unwrap().permissions().mode() & 0o777, 0o600);
    let restored = from_yaml(&std::fs::read_to_string(&backup).unwrap());
    assert_eq!(restored.certificates, [certificate_doc(&c, Some(&["c.test"]))], "the key is in the backup");
    let again = config(dir.path(), &["import", backup.to_str().unwrap()]).await;
    assert!(out(&again).0.contains("0 change(s)"), "{:?}", out(&again));

    // A bad certificate: named, nothing written.
    let mut bad = restored.clone();
    bad.certificates[0].cert_pem = "-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n".into();
    bad.upstreams
        .push(from_yaml("upstreams: [{name: extra, targets: [{url: 'http://127.0.0.1:9'}]}]").upstreams.remove(0));
    std::fs::write(&file, to_yaml(&bad)).unwrap();
    let refused = config(dir.path(), &["import", file_arg]).await;
    let (_, stderr) = out(&refused);
    assert!(!refused.status.success());
    assert!(
        stderr.contains("nothing was written")
            && stderr.contains("certificates[0].cert_pem")
            && stderr.contains("c.test"),
        "{stderr}"
    );
    assert!(!stderr.contains(c.key_line()));
    assert_eq!(from_yaml(&out(&config(dir.path(), &["export"]).await).0), restored);
}
