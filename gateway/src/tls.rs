//! TLS termination: the proxy's TLS listener and the choice of certificate by SNI.
//!
//! The certificates come from the snapshot: [`Certificates`] is compiled with the rest
//! of the configuration, and the listener's resolver reads the applied configuration
//! at every handshake, so a new snapshot changes the certificate of the next
//! handshake without touching the listener. Connections already open keep theirs.
//!
//! Choosing a certificate for the server name the client sent (SNI):
//! 1. a certificate naming the host exactly;
//! 2. else one naming the wildcard of its parent (`*.example.com` for
//!    `api.example.com`; a wildcard stands for one label, as clients check it);
//! 3. else none: the handshake fails with an alert. A client that sends no server
//!    name (one connecting by IP address) is refused the same way: there is no
//!    default certificate, so the gateway never presents a certificate for a host
//!    it was not configured for.
//!
//! ALPN offers `h2` then `http/1.1`; the connection then runs exactly like a
//! cleartext one (same limits, same pipeline), with `X-Forwarded-Proto: https`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use turnpike_domain::certificate;
use turnpike_domain::snapshot::SnapshotCertificate;

use crate::config::ConfigStore;
use crate::server::{self, Handshake, Scheme};
use crate::settings::Settings;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the proxy over TLS on `listener`, like [`serve_proxy`](crate::serve_proxy)
/// does in cleartext: same pipeline, same [`Settings`], same graceful shutdown.
/// Certificates are those of the applied snapshot, chosen by SNI (see the
/// [module docs](self)); before the first snapshot, or for a host without a
/// certificate, handshakes fail.
pub async fn serve_tls_proxy(
    listener: TcpListener,
    store: ConfigStore,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(server_config(store.clone()));
    server::serve_with(listener, store, settings, shutdown, Arc::new(TlsHandshake { acceptor })).await
}

fn server_config(store: ConfigStore) -> Arc<ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { store }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

struct TlsHandshake {
    acceptor: TlsAcceptor,
}

impl Handshake for TlsHandshake {
    type Stream = TlsStream<TcpStream>;
    const SCHEME: Scheme = Scheme::Https;

    async fn handshake(&self, tcp: TcpStream) -> io::Result<Self::Stream> {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
    }
}

/// Picks the certificate of each handshake from the configuration applied right now.
#[derive(Debug)]
struct SniResolver {
    store: ConfigStore,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            tracing::debug!("TLS client sent no server name; refused");
            return None;
        };
        let key = self.store.current().and_then(|config| config.certificates.resolve(name));
        if key.is_none() {
            tracing::debug!(server_name = name, "no certificate for the TLS server name; refused");
        }
        key
    }
}

/// The certificates of one snapshot, by host.
#[derive(Default)]
pub(crate) struct Certificates {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the parent domain: `example.com` for `*.example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut exact: Vec<&String> = self.exact.keys().collect();
        exact.sort();
        let mut wildcard: Vec<&String> = self.wildcard.keys().collect();
        wildcard.sort();
        f.debug_struct("Certificates").field("exact", &exact).field("wildcard", &wildcard).finish()
    }
}

impl Certificates {
    /// Loads the snapshot's certificates. One that cannot be loaded (bad PEM, a key
    /// that does not match) is logged and left out; the others are served. When two
    /// name the same host, the first by id wins.
    pub(crate) fn compile(certificates: &[SnapshotCertificate]) -> Certificates {
        let mut compiled = Certificates::default();
        for c in certificates {
            let key = match certificate::load(&c.cert_pem, &c.key_pem) {
                Ok(loaded) => {
                    if loaded.info.not_after < chrono::Utc::now() {
                        let not_after = loaded.info.not_after;
                        tracing::warn!(certificate = %c.id, %not_after, "serving an expired certificate");
                    }
                    loaded.key
                }
                Err(errors) => {
                    let errors = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
                    tracing::warn!(certificate = %c.id, %errors, "left out a TLS certificate");
                    continue;
                }
            };
            for host in &c.hosts {
                let host = host.to_ascii_lowercase();
                let entry = match host.strip_prefix("*.") {
                    Some(parent) => compiled.wildcard.entry(parent.to_owned()),
                    None => compiled.exact.entry(host.clone()),
                };
                match entry {
                    Entry::Vacant(slot) => {
                        slot.insert(key.clone());
                    }
                    Entry::Occupied(_) => {
                        tracing::warn!(certificate = %c.id, %host, "host already has a certificate; left out");
                    }
                }
            }
        }
        compiled
    }

    /// The certificate for a server name: exact, else the parent's wildcard.
    pub(crate) fn resolve(&self, server_name: &str) -> Option<Arc<CertifiedKey>> {
        let name = server_name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return Some(key.clone());
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(id: &str, sans: &[&str], hosts: &[&str]) -> SnapshotCertificate {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
        SnapshotCertificate {
            id: id.into(),
            hosts: hosts.iter().map(|s| (*s).to_owned()).collect(),
            cert_pem: params.self_signed(&key).unwrap().pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Which input certificate a resolved key came from, by its DER.
    fn which(certs: &[SnapshotCertificate], key: Option<Arc<CertifiedKey>>) -> Option<String> {
        let key = key?;
        certs
            .iter()
            .find(|c| certificate::load(&c.cert_pem, &c.key_pem).unwrap().key.cert[0] == key.cert[0])
            .map(|c| c.id.clone())
    }

    #[test]
    fn exact_hosts_beat_wildcards_which_cover_one_label() {
        let certs = [
            cert("1-wild", &["*.example.com"], &["*.example.com"]),
            cert("2-api", &["api.example.com"], &["api.example.com"]),
        ];
        let compiled = Certificates::compile(&certs);
        let pick = |name: &str| which(&certs, compiled.resolve(name));
        assert_eq!(pick("api.example.com").as_deref(), Some("2-api"));
        assert_eq!(pick("API.Example.com.").as_deref(), Some("2-api"));
        assert_eq!(pick("www.example.com").as_deref(), Some("1-wild"));
        assert_eq!(pick("a.b.example.com"), None);
        assert_eq!(pick("example.com"), None);
        assert_eq!(pick("other.test"), None);
    }

    #[test]
    fn unusable_certificates_are_left_out_and_the_others_kept() {
        let good = cert("1-good", &["a.test"], &["a.test"]);
        let mut bad_pem = cert("2-bad", &["b.test"], &["b.test"]);
        bad_pem.cert_pem = "garbage".into();
        let mut wrong_key = cert("3-wrong", &["c.test"], &["c.test"]);
        wrong_key.key_pem = good.key_pem.clone();
        let duplicate = cert("4-dup", &["a.test"], &["a.test"]);
        let certs = [good, bad_pem, wrong_key, duplicate];
        let compiled = Certificates::compile(&certs);
        assert_eq!(which(&certs, compiled.resolve("a.test")).as_deref(), Some("1-good"), "first by id wins");
        assert!(compiled.resolve("b.test").is_none());
        assert!(compiled.resolve("c.test").is_none());
    }
}
