//! TLS to `https://` targets: rustls with the ring provider, the Mozilla root
//! certificates compiled in (so verification works in minimal containers) plus the
//! upstream's own `ca_pem`, an optional server name (SNI and verification) instead
//! of the target's host, and ALPN offering HTTP/2 and HTTP/1.1. Verification is on
//! unless the upstream says `verify: false`; then the certificate is accepted as
//! presented (its handshake signature is still checked).
//!
//! Every connection also passes the operator's [`TargetPolicy`] ([`TargetGuard`]): a
//! target naming a refused address literally is not connected to, and a host name is
//! resolved by [`GuardedResolver`], which drops the refused addresses from the
//! answer, so the connection goes only to allowed ones (checked on the very addresses
//! connected to: a DNS answer that changes after a check cannot slip through). A name
//! with no allowed address fails to connect, which the proxy answers 502 like any
//! unreachable upstream, the details only in the log. With every address allowed
//! (the guard is empty) the connector resolves and connects exactly as hyper's own.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Uri;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::{GaiAddrs, GaiFuture, GaiResolver, Name};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tower::Service;
use turnpike_domain::model::UpstreamTls;
use turnpike_domain::network::TargetPolicy;

/// Why an upstream's TLS settings cannot be used as given.
#[derive(Debug, thiserror::Error)]
pub enum TlsSettingsError {
    #[error("tls.ca_pem holds no certificate")]
    NoCertificate,
    #[error("tls.ca_pem is not valid PEM: {0}")]
    Pem(String),
    #[error("tls.ca_pem holds a certificate that cannot be a trust anchor: {0}")]
    Anchor(rustls::Error),
    #[error("tls.server_name {0:?} is not a valid DNS name or IP address")]
    ServerName(String),
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    // Explicit rather than the process default, which is ambiguous when several
    // providers are linked into the binary.
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls configuration for an upstream's `tls` settings.
pub fn client_config(tls: &UpstreamTls) -> Result<ClientConfig, TlsSettingsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let config = if tls.verify {
        let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        if let Some(pem) = &tls.ca_pem {
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                let cert = cert.map_err(|e| TlsSettingsError::Pem(e.to_string()))?;
                roots.add(cert).map_err(TlsSettingsError::Anchor)?;
                added += 1;
            }
            if added == 0 {
                return Err(TlsSettingsError::NoCertificate);
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth()
    };
    Ok(config)
}

/// The connector for `http://` and `https://` targets. Settings that cannot be used
/// are logged and replaced by the safe default (verification on against the
/// built-in roots), so a bad CA makes the targets fail closed with 502 rather than
/// taking the whole snapshot down.
pub fn connector(
    tls: &UpstreamTls,
    connect_timeout: Option<Duration>,
    guard: &TargetGuard,
) -> HttpsConnector<TcpConnector> {
    let mut http = plain_connector(connect_timeout, guard);
    http.http.enforce_http(false);
    let config = client_config(tls).unwrap_or_else(|e| {
        tracing::error!(error = %e, "unusable upstream tls settings; verifying against the built-in roots only");
        client_config(&UpstreamTls::default()).expect("the default tls settings are valid")
    });
    let builder = HttpsConnectorBuilder::new().with_tls_config(config).https_or_http();
    let builder = match tls.server_name.as_deref().map(server_name) {
        Some(Ok(name)) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
        Some(Err(e)) => {
            tracing::error!(error = %e, "ignored the upstream tls server name");
            builder
        }
        None => builder,
    };
    builder.enable_all_versions().wrap_connector(http)
}

/// The TCP connector for cleartext targets (and under TLS for the others).
pub fn plain_connector(connect_timeout: Option<Duration>, guard: &TargetGuard) -> TcpConnector {
    let mut http =
        HttpConnector::new_with_resolver(GuardedResolver { system: GaiResolver::new(), guard: guard.clone() });
    http.set_connect_timeout(connect_timeout);
    http.set_nodelay(true);
    TcpConnector { http, guard: guard.clone() }
}

/// The addresses connections may go to: the operator's [`TargetPolicy`], or empty
/// (the default) when every address is allowed and nothing is checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TargetGuard(Option<Arc<TargetPolicy>>);

impl TargetGuard {
    pub fn new(policy: TargetPolicy) -> TargetGuard {
        TargetGuard((!policy.allows_everything()).then(|| Arc::new(policy)))
    }

    /// Why a connection to the literal address of `uri` is refused, if it is.
    fn refuse_literal(&self, uri: &Uri) -> Option<TargetRefused> {
        let policy = self.0.as_ref()?;
        let host = uri.host()?;
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let ip: IpAddr = bare.parse().ok()?;
        let class = policy.check(ip).err()?;
        Some(TargetRefused { host: host.to_owned(), refused: format!("{ip} is {class}") })
    }
}

/// A connection the target policy does not allow.
#[derive(Debug, thiserror::Error)]
#[error("{host} is refused by the upstream target policy ({refused})")]
pub struct TargetRefused {
    host: String,
    /// Each refused address with its class.
    refused: String,
}

/// hyper's TCP connector, resolving through [`GuardedResolver`] and refusing
/// literal addresses the [`TargetGuard`] does not allow.
#[derive(Debug, Clone)]
pub struct TcpConnector {
    http: HttpConnector<GuardedResolver>,
    guard: TargetGuard,
}

type HttpConnecting = <HttpConnector<GuardedResolver> as Service<Uri>>::Future;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Service<Uri> for TcpConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Connecting {
        // hyper connects to a literal address without asking the resolver.
        match self.guard.refuse_literal(&uri) {
            Some(refused) => Connecting::Refused(Some(refused)),
            None => Connecting::Connecting(self.http.call(uri)),
        }
    }
}

/// The future of [`TcpConnector`].
pub enum Connecting {
    Connecting(HttpConnecting),
    Refused(Option<TargetRefused>),
}

impl Future for Connecting {
    type Output = Result<TokioIo<TcpStream>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Connecting::Connecting(connecting) => Pin::new(connecting).poll(cx).map_err(Into::into),
            Connecting::Refused(refused) => {
                Poll::Ready(Err(refused.take().expect("a refused connection is polled once").into()))
            }
        }
    }
}

/// The system resolver (`getaddrinfo`, as hyper's own connector uses), keeping only
/// the addresses the [`TargetGuard`] allows; none left is an error.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    system: GaiResolver,
    guard: TargetGuard,
}

impl Service<Name> for GuardedResolver {
    type Response = Addrs;
    type Error = io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        self.system.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Resolving {
        let policy = self.guard.0.clone().map(|policy| (policy, name.clone()));
        Resolving { lookup: self.system.call(name), policy }
    }
}

/// The future of [`GuardedResolver`].
pub struct Resolving {
    lookup: GaiFuture,
    /// The policy and the name looked up, when there is a policy.
    policy: Option<(Arc<TargetPolicy>, Name)>,
}

impl Future for Resolving {
    type Output = Result<Addrs, io::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let addrs = ready!(Pin::new(&mut this.lookup).poll(cx))?;
        let Some((policy, name)) = &this.policy else {
            return Poll::Ready(Ok(Addrs::All(addrs)));
        };
        Poll::Ready(allowed(policy, name.as_str(), addrs).map(|allowed| Addrs::Allowed(allowed.into_iter())))
    }
}

/// The addresses of `host` that `policy` allows; an error naming the refused ones
/// when they were all refused.
fn allowed(
    policy: &TargetPolicy,
    host: &str,
    addrs: impl Iterator<Item = SocketAddr>,
) -> Result<Vec<SocketAddr>, io::Error> {
    let mut allowed = Vec::new();
    let mut refused = Vec::new();
    for addr in addrs {
        match policy.check(addr.ip()) {
            Ok(()) => allowed.push(addr),
            Err(class) => refused.push(format!("{} is {class}", addr.ip())),
        }
    }
    if allowed.is_empty() && !refused.is_empty() {
        let refused = TargetRefused { host: host.to_owned(), refused: refused.join(", ") };
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, refused));
    }
    Ok(allowed)
}

/// The addresses [`GuardedResolver`] found.
pub enum Addrs {
    /// Every address, when nothing is refused.
    All(GaiAddrs),
    /// The allowed ones.
    Allowed(std::vec::IntoIter<SocketAddr>),
}

impl Iterator for Addrs {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        match self {
            Addrs::All(addrs) => addrs.next(),
            Addrs::Allowed(addrs) => addrs.next(),
        }
    }
}

fn server_name(name: &str) -> Result<ServerName<'static>, TlsSettingsError> {
    let bare = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
    ServerName::try_from(bare.to_owned()).map_err(|_| TlsSettingsError::ServerName(name.to_owned()))
}

/// `verify: false`: any certificate chain and name, for testing against
/// self-signed upstreams. The handshake signature is still verified, so the peer
/// must hold the key of the certificate it shows.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_reported() {
        let with_ca = |pem: &str| UpstreamTls { ca_pem: Some(pem.into()), ..Default::default() };
        assert!(matches!(client_config(&with_ca("not pem")), Err(TlsSettingsError::NoCertificate)));
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(client_config(&with_ca(garbage)).is_err());
        assert!(matches!(server_name("not a name!"), Err(TlsSettingsError::ServerName(_))));
        assert!(server_name("api.internal").is_ok() && server_name("[::1]").is_ok());
    }

    /// Whether the (non-blocking) `listener` has a connection waiting; on loopback a
    /// connection is queued by the time the client's connect returns.
    fn has_connection(listener: &std::net::TcpListener) -> bool {
        match listener.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept: {e}"),
        }
    }

    fn chain(err: &(dyn std::error::Error + 'static)) -> String {
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(e) = source {
            text.push_str(&format!(": {e}"));
            source = e.source();
        }
        text
    }

    #[tokio::test]
    async fn the_guard_refuses_loopback_before_connecting_by_address_or_by_name() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let uri = |host: &str| format!("http://{host}:{port}").parse::<Uri>().unwrap();
        let timeout = Some(Duration::from_secs(5));

        let strict = TargetGuard::new(TargetPolicy::public_only(Vec::new()));
        let mut plain = plain_connector(timeout, &strict);
        // Literal addresses (hyper would not ask the resolver), a name resolving to
        // loopback, and a numeric form only the system resolver reads as an address.
        for host in ["127.0.0.1", "[::ffff:127.0.0.1]", "localhost", "127.1"] {
            let err = plain.call(uri(host)).await.expect_err(host);
            assert!(chain(err.as_ref()).contains("refused by the upstream target policy"), "{host}: {}", chain(&*err));
        }
        let mut https = connector(&UpstreamTls::default(), timeout, &strict);
        let err = https.call(format!("https://127.0.0.1:{port}").parse().unwrap()).await.unwrap_err();
        assert!(chain(err.as_ref()).contains("127.0.0.1 is a loopback address"), "{}", chain(&*err));
        assert!(!has_connection(&listener), "a refused target was connected to");

        // Allowed by the list (an IPv6 answer for localhost is dropped, the IPv4 one used).
        let listed = TargetGuard::new(TargetPolicy::public_only(vec!["127.0.0.0/8".parse().unwrap()]));
        plain_connector(timeout, &listed).call(uri("localhost")).await.unwrap();
        assert!(has_connection(&listener));
        plain_connector(timeout, &listed).call(uri("127.0.0.1")).await.unwrap();
        assert!(has_connection(&listener));
        // No guard: hyper's own behaviour.
        assert_eq!(TargetGuard::new(TargetPolicy::allow_all()), TargetGuard::default());
        plain_connector(timeout, &TargetGuard::default()).call(uri("127.0.0.1")).await.unwrap();
        assert!(has_connection(&listener));
    }

    #[test]
    fn defaults_verify_against_built_in_roots_and_a_test_ca_can_be_added() {
        assert!(client_config(&UpstreamTls::default()).is_ok());
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let tls = UpstreamTls { ca_pem: Some(ca.cert.pem()), ..Default::default() };
        assert!(client_config(&tls).is_ok());
        assert!(client_config(&UpstreamTls { verify: false, ..Default::default() }).is_ok());
    }
}
