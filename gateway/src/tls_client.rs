//! TLS to `https://` targets: rustls with the ring provider, the Mozilla root
//! certificates compiled in (so verification works in minimal containers) plus the
//! upstream's own `ca_pem`, an optional server name (SNI and verification) instead
//! of the target's host, and ALPN offering HTTP/2 and HTTP/1.1. Verification is on
//! unless the upstream says `verify: false`; then the certificate is accepted as
//! presented (its handshake signature is still checked).

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use turnpike_domain::model::UpstreamTls;

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
pub fn connector(tls: &UpstreamTls, connect_timeout: Option<Duration>) -> HttpsConnector<HttpConnector> {
    let mut http = plain_connector(connect_timeout);
    http.enforce_http(false);
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
pub fn plain_connector(connect_timeout: Option<Duration>) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(connect_timeout);
    http.set_nodelay(true);
    http
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

    #[test]
    fn defaults_verify_against_built_in_roots_and_a_test_ca_can_be_added() {
        assert!(client_config(&UpstreamTls::default()).is_ok());
        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let tls = UpstreamTls { ca_pem: Some(ca.cert.pem()), ..Default::default() };
        assert!(client_config(&tls).is_ok());
        assert!(client_config(&UpstreamTls { verify: false, ..Default::default() }).is_ok());
    }
}
