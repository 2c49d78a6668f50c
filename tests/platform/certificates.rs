//! TLS certificates through the admin API: checked on the way in, described (never
//! with their key) on the way out, and presented by the gateway's TLS listener by
//! SNI once the change's snapshot is applied.

use std::net::SocketAddr;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use crate::support::{Reply, TestApp, accepted, on_both_stores, refused};

/// A CA made for one test.
pub(crate) struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A certificate with its key, as uploaded.
pub(crate) struct Issued {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    pub(crate) der: CertificateDer<'static>,
}

impl Issued {
    pub(crate) fn body(&self) -> Value {
        json!({"cert_pem": self.cert_pem, "key_pem": self.key_pem})
    }

    /// One line of the key's base64: what a leak of the key would contain.
    pub(crate) fn key_line(&self) -> &str {
        self.key_pem.lines().nth(1).unwrap()
    }
}

impl TestCa {
    pub(crate) fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Turnpike test CA");
        TestCa { cert: params.self_signed(&key).unwrap(), key }
    }

    pub(crate) fn issue(&self, names: &[&str]) -> Issued {
        self.issue_with(names, |_| {})
    }

    /// Issues a certificate for `names` with `adjust` applied to its parameters.
    pub(crate) fn issue_with(&self, names: &[&str], adjust: impl FnOnce(&mut CertificateParams)) -> Issued {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        adjust(&mut params);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Issued { cert_pem: cert.pem(), key_pem: key.serialize_pem(), der: cert.der().clone() }
    }

    /// The certificate the gateway presents for `sni`, or `None` if the handshake fails.
    pub(crate) async fn presented(&self, addr: SocketAddr, sni: &str) -> Option<CertificateDer<'static>> {
        let mut roots = RootCertStore::empty();
        roots.add(self.cert.der().clone()).unwrap();
        let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
            .await
            .ok()?;
        Some(tls.get_ref().1.peer_certificates().unwrap()[0].clone())
    }
}

/// The gateway's TLS listener on the app's gateway configuration.
pub(crate) async fn tls_listener(app: &TestApp) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = turnpike_gateway::Settings::default();
    tokio::spawn(turnpike_gateway::serve_tls_proxy(listener, app.gateway.clone(), settings, std::future::pending()));
    addr
}

/// Asserts that a certificate description carries no key and returns it.
#[track_caller]
fn described(reply: &Reply, status: u16) -> Value {
    let body = reply.expect(status);
    let mut keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["created_at", "fingerprint", "hosts", "id", "names", "not_after", "not_before", "updated_at"],
        "{body}"
    );
    assert_eq!(body["fingerprint"].as_str().unwrap().len(), 64);
    body
}

/// The field names of a 422's `errors`.
fn error_fields(reply: &Reply) -> Vec<String> {
    let body = reply.problem(422);
    body["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap().to_owned()).collect()
}

on_both_stores! {
    async fn certificates_are_created_listed_renewed_and_deleted(app) {
        let ca = TestCa::new();
        let tls = tls_listener(&app).await;
        let a = ca.issue(&["a.test", "*.a.test"]);
        let mut seen = Vec::new();

        let created = accepted(&app, app.post("/admin/v1/certificates", a.body())).await;
        let cert = described(&created, 201);
        assert_eq!(cert["hosts"], json!(["a.test", "*.a.test"]), "hosts come from the subjectAltName");
        assert_eq!(cert["names"], json!(["a.test", "*.a.test"]));
        let id = cert["id"].as_str().unwrap().to_owned();
        seen.push(created);

        let b = ca.issue(&["b.test", "www.b.test"]);
        let mut body = b.body();
        body["hosts"] = json!(["www.b.test"]);
        let b_created = app.post("/admin/v1/certificates", body).await;
        assert_eq!(described(&b_created, 201)["hosts"], json!(["www.b.test"]), "explicit hosts are kept");
        seen.push(b_created);

        let list = app.get("/admin/v1/certificates").await;
        let listed = list.expect(200);
        assert_eq!(listed["total"], 2);
        assert_eq!(listed["items"][0]["id"], id.as_str());
        seen.push(list);
        let got = app.get(&format!("/admin/v1/certificates/{id}")).await;
        assert_eq!(described(&got, 200), cert);
        seen.push(got);

        // The gateway presents each host's certificate once the snapshot is applied.
        app.settled().await;
        assert_eq!(ca.presented(tls, "a.test").await, Some(a.der.clone()));
        assert_eq!(ca.presented(tls, "www.a.test").await, Some(a.der.clone()));
        assert_eq!(ca.presented(tls, "www.b.test").await, Some(b.der.clone()));
        assert_eq!(ca.presented(tls, "b.test").await, None, "b.test was not among the hosts");

        // A host has one certificate.
        let clash = ca.issue(&["a.test"]);
        let reply = refused(&app, app.post("/admin/v1/certificates", clash.body())).await;
        assert!(reply.problem(409)["detail"].as_str().unwrap().contains("a.test"));

        // Renewal with a certificate that no longer names *.a.test: the hosts stay
        // unless the patch says otherwise, so it is refused, then accepted with
        // `"hosts": null` (hosts read from the new certificate).
        let renewed = ca.issue(&["a.test"]);
        let reply = refused(&app, app.patch(&format!("/admin/v1/certificates/{id}"), renewed.body())).await;
        assert_eq!(error_fields(&reply), ["hosts[1]"]);
        let mut body = renewed.body();
        body["hosts"] = Value::Null;
        let patched = accepted(&app, app.patch(&format!("/admin/v1/certificates/{id}"), body)).await;
        let cert = described(&patched, 200);
        assert_eq!(cert["hosts"], json!(["a.test"]));
        assert_ne!(cert["fingerprint"], created_fingerprint(&seen[0]));
        seen.push(patched);
        app.settled().await;
        assert_eq!(ca.presented(tls, "a.test").await, Some(renewed.der.clone()));
        assert_eq!(ca.presented(tls, "www.a.test").await, None);

        accepted(&app, app.delete(&format!("/admin/v1/certificates/{id}"))).await.expect(204);
        app.get(&format!("/admin/v1/certificates/{id}")).await.problem(404);
        app.settled().await;
        assert_eq!(ca.presented(tls, "a.test").await, None);
        assert_eq!(ca.presented(tls, "www.b.test").await, Some(b.der.clone()));

        // No key in any answer, in the audit log or in the snapshot summary.
        seen.push(app.get("/admin/v1/audit?per_page=200").await);
        seen.push(app.get("/admin/v1/config/snapshot").await);
        let audit = seen[seen.len() - 2].expect(200);
        let actions: Vec<&str> =
            audit["items"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
        assert!(actions.starts_with(&["certificate.delete", "certificate.update"]), "{actions:?}");
        for reply in &seen {
            for issued in [&a, &b, &renewed] {
                assert!(!reply.text().contains(issued.key_line()), "a private key was sent back: {}", reply.text());
            }
        }
    }

    async fn bad_certificates_are_refused_with_422(app) {
        let ca = TestCa::new();
        let a = ca.issue(&["a.test"]);
        let other = ca.issue(&["a.test"]);
        let post = |body: Value| app.post("/admin/v1/certificates", body);

        let reply = refused(&app, post(json!({"cert_pem": a.cert_pem, "key_pem": other.key_pem}))).await;
        assert_eq!(error_fields(&reply), ["key_pem"], "a key of another certificate");
        let reply = refused(&app, post(json!({"cert_pem": "not a certificate", "key_pem": a.key_pem}))).await;
        assert_eq!(error_fields(&reply), ["cert_pem"]);
        let garbage_key = "-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZQ==\n-----END PRIVATE KEY-----\n";
        let reply = refused(&app, post(json!({"cert_pem": a.cert_pem, "key_pem": garbage_key}))).await;
        assert_eq!(error_fields(&reply), ["key_pem"]);
        assert!(!reply.text().contains("Z2FyYmFnZQ"), "the key is not quoted back: {}", reply.text());
        let mut body = a.body();
        body["hosts"] = json!(["b.test"]);
        let reply = refused(&app, post(body)).await;
        assert_eq!(error_fields(&reply), ["hosts[0]"], "a host the certificate does not cover");
        let reply = refused(&app, post(json!({"cert_pem": a.cert_pem}))).await;
        assert_eq!(error_fields(&reply), ["body"], "key_pem is required");
        let mut body = a.body();
        body["key"] = json!("x");
        let reply = refused(&app, post(body)).await;
        assert_eq!(error_fields(&reply), ["key"], "unknown fields are refused");

        let expired = {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
            params.not_before = rcgen::date_time_ymd(2001, 1, 1);
            params.not_after = rcgen::date_time_ymd(2002, 1, 1);
            json!({"cert_pem": params.self_signed(&key).unwrap().pem(), "key_pem": key.serialize_pem()})
        };
        let reply = refused(&app, post(expired)).await;
        assert!(reply.problem(422)["detail"].as_str().unwrap().contains("expired"), "{}", reply.text());

        let created = described(&app.post("/admin/v1/certificates", a.body()).await, 201);
        let id = created["id"].as_str().unwrap();
        let path = format!("/admin/v1/certificates/{id}");
        let reply = refused(&app, app.patch(&path, json!({"key_pem": other.key_pem}))).await;
        assert_eq!(error_fields(&reply), ["key_pem"], "a renewal must bring its own key");
        refused(&app, app.patch("/admin/v1/certificates/nope", json!({"hosts": null}))).await.problem(404);
        refused(&app, app.delete("/admin/v1/certificates/nope")).await.problem(404);
        assert_eq!(app.get("/admin/v1/certificates").await.expect(200)["total"], 1);
        for key in [&a, &other] {
            assert!(!app.get("/admin/v1/audit?per_page=200").await.text().contains(key.key_line()));
        }
    }
}

fn created_fingerprint(reply: &Reply) -> Value {
    reply.json()["fingerprint"].clone()
}
