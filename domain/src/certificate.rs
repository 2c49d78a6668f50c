//! TLS certificates for the gateway's listener: reading a PEM certificate chain and
//! private key, checking that they belong together, and the facts shown about a
//! certificate (hosts, validity, fingerprint). The admin API accepts a certificate and
//! the gateway loads one through the same [`load`], so the gateway serves exactly what
//! the control plane accepted. No message here ever quotes the private key.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_cert::Certificate;
use x509_cert::der::Decode;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use crate::validate::{self, ValidationError, Validator};

/// A certificate as an admin uploads it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CertificateInput {
    /// PEM: the server certificate first, then any intermediates, in order.
    pub cert_pem: String,
    /// PEM private key of the certificate (PKCS#8, PKCS#1 RSA or SEC1 EC). Never returned.
    pub key_pem: String,
    /// Host names (`api.example.com`, `*.example.com`) to present the certificate for,
    /// chosen by SNI. Each must be covered by the certificate. Left out, they are the
    /// DNS names of the certificate's subjectAltName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<Vec<String>>,
}

// The private key must never reach a log line.
impl std::fmt::Debug for CertificateInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateInput").field("hosts", &self.hosts).finish_non_exhaustive()
    }
}

/// What can be said about a certificate without its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    /// DNS names of the subjectAltName, lower-cased, in the certificate's order.
    pub names: Vec<String>,
    pub not_before: DateTime<Utc>,
    pub not_after: DateTime<Utc>,
    /// Hex SHA-256 of the server certificate's DER encoding.
    pub fingerprint: String,
}

/// A certificate chain with its key, ready to be presented in a TLS handshake.
#[derive(Debug)]
pub struct LoadedCertificate {
    pub key: Arc<CertifiedKey>,
    pub info: CertificateInfo,
}

fn invalid(field: &str, message: impl Into<String>) -> ValidationError {
    ValidationError::new(field, message)
}

/// Reads the certificate chain of `cert_pem` and the facts about its first (server)
/// certificate.
pub fn inspect(cert_pem: &str) -> Result<CertificateInfo, ValidationError> {
    let chain = read_chain(cert_pem)?;
    info(&chain[0])
}

fn read_chain(cert_pem: &str) -> Result<Vec<CertificateDer<'static>>, ValidationError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("cert_pem", format!("is not valid PEM ({e})")))?;
    if chain.is_empty() {
        return Err(invalid("cert_pem", "holds no PEM 'CERTIFICATE' block"));
    }
    for (i, der) in chain.iter().enumerate() {
        Certificate::from_der(der)
            .map_err(|e| invalid("cert_pem", format!("certificate {} is not X.509 ({e})", i + 1)))?;
    }
    Ok(chain)
}

fn info(der: &CertificateDer<'_>) -> Result<CertificateInfo, ValidationError> {
    let cert = Certificate::from_der(der).map_err(|e| invalid("cert_pem", format!("is not X.509 ({e})")))?;
    let tbs = &cert.tbs_certificate;
    let time = |t: x509_cert::time::Time| {
        let secs = i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
        DateTime::from_timestamp(secs, 0).unwrap_or(DateTime::<Utc>::MAX_UTC)
    };
    let san = tbs
        .get::<SubjectAltName>()
        .map_err(|e| invalid("cert_pem", format!("has an unreadable subjectAltName ({e})")))?;
    let names = san
        .map(|(_, san)| san.0)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|name| match name {
            GeneralName::DnsName(dns) => Some(dns.to_string().to_ascii_lowercase()),
            _ => None,
        })
        .collect();
    Ok(CertificateInfo {
        names,
        not_before: time(tbs.validity.not_before),
        not_after: time(tbs.validity.not_after),
        fingerprint: hex::encode(Sha256::digest(der.as_ref())),
    })
}

/// Reads a certificate chain and its private key and checks that the key is the
/// certificate's. Expiry is not checked here: see [`validate`].
pub fn load(cert_pem: &str, key_pem: &str) -> Result<LoadedCertificate, Vec<ValidationError>> {
    let chain = read_chain(cert_pem);
    // The key's own parse errors are not shown: they could quote part of the key.
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| invalid("key_pem", "holds no readable PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC)"))
        .and_then(|der| {
            any_supported_type(&der)
                .map_err(|_| invalid("key_pem", "is not a supported key (RSA, ECDSA P-256/P-384 or Ed25519)"))
        });
    let (chain, key) = match (chain, key) {
        (Ok(chain), Ok(key)) => (chain, key),
        (chain, key) => return Err([chain.err(), key.err()].into_iter().flatten().collect()),
    };
    let info = info(&chain[0]).map_err(|e| vec![e])?;
    let key = CertifiedKey::new(chain, key);
    match key.keys_match() {
        // Every key type `any_supported_type` loads can name its public key; an
        // unknown answer is left to the client's verification like rustls does.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(vec![invalid("key_pem", "does not belong to the certificate")]);
        }
        Err(e) => return Err(vec![invalid("cert_pem", format!("cannot be used ({e})"))]),
    }
    Ok(LoadedCertificate { key: Arc::new(key), info })
}

/// Whether a certificate naming `names` is valid for `host`. A wildcard name stands
/// for exactly one label (RFC 6125), as clients check it; a wildcard host is covered
/// only by the same wildcard name.
pub fn covers(names: &[String], host: &str) -> bool {
    names.iter().any(|name| {
        name == host
            || name.strip_prefix("*.").is_some_and(|parent| {
                host.split_once('.').is_some_and(|(label, rest)| label != "*" && !label.is_empty() && rest == parent)
            })
    })
}

/// A certificate accepted for upload: the facts about it and the hosts it is served for.
#[derive(Debug)]
pub struct Accepted {
    pub info: CertificateInfo,
    pub hosts: Vec<String>,
}

/// Checks an uploaded certificate: PEM that parses, a key that matches, not expired at
/// `now`, and hosts that are well-formed and covered by the certificate.
pub fn validate(input: &CertificateInput, now: DateTime<Utc>) -> Result<Accepted, Vec<ValidationError>> {
    let loaded = load(&input.cert_pem, &input.key_pem)?;
    let info = loaded.info;
    let mut v = Validator::new();
    if info.not_after < now {
        v.check(Err(invalid("cert_pem", format!("expired at {}", info.not_after.to_rfc3339()))));
    }
    let hosts = match &input.hosts {
        Some(hosts) => {
            if hosts.is_empty() {
                v.check(Err(invalid("hosts", "must name at least one host; leave it out to use the certificate's")));
            }
            for (i, host) in hosts.iter().enumerate() {
                let field = format!("hosts[{i}]");
                if let Err(e) = validate::host(&field, host) {
                    v.check(Err(e));
                } else if hosts[..i].contains(host) {
                    v.check(Err(invalid(&field, format!("'{host}' is listed twice"))));
                } else if !covers(&info.names, host) {
                    v.check(Err(invalid(
                        &field,
                        format!("the certificate is not valid for '{host}' (it names {})", info.names.join(", ")),
                    )));
                }
            }
            hosts.clone()
        }
        None => {
            let mut hosts: Vec<String> = Vec::new();
            for name in &info.names {
                if validate::host("hosts", name).is_ok() && !hosts.contains(name) {
                    hosts.push(name.clone());
                }
            }
            if hosts.is_empty() {
                v.check(Err(invalid("cert_pem", "names no DNS host in its subjectAltName; give `hosts` explicitly")));
            }
            hosts
        }
    };
    v.finish()?;
    Ok(Accepted { info, hosts })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn wildcards_cover_exactly_one_label() {
        let n = names(&["api.example.com", "*.example.com"]);
        assert!(covers(&n, "api.example.com"));
        assert!(covers(&n, "www.example.com"));
        assert!(covers(&n, "*.example.com"));
        assert!(!covers(&n, "example.com"));
        assert!(!covers(&n, "a.b.example.com"));
        assert!(!covers(&names(&["api.example.com"]), "*.example.com"));
        assert!(!covers(&names(&["api.example.com"]), "www.example.com"));
    }

    /// A self-signed certificate for `hosts` and its key, both PEM.
    fn self_signed(hosts: &[&str], expired: bool) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(names(hosts)).unwrap();
        if expired {
            params.not_before = rcgen::date_time_ymd(2001, 1, 1);
            params.not_after = rcgen::date_time_ymd(2002, 1, 1);
        }
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn input(cert: &str, key: &str, hosts: Option<&[&str]>) -> CertificateInput {
        CertificateInput { cert_pem: cert.into(), key_pem: key.into(), hosts: hosts.map(names) }
    }

    #[test]
    fn hosts_come_from_the_certificate_unless_given() {
        let (cert, key) = self_signed(&["API.example.com", "*.example.com"], false);
        let accepted = validate(&input(&cert, &key, None), Utc::now()).unwrap();
        assert_eq!(accepted.hosts, ["api.example.com", "*.example.com"]);
        assert_eq!(accepted.info.fingerprint.len(), 64);
        assert!(accepted.info.not_after > Utc::now());
        let accepted = validate(&input(&cert, &key, Some(&["www.example.com"])), Utc::now()).unwrap();
        assert_eq!(accepted.hosts, ["www.example.com"]);

        let errors = validate(&input(&cert, &key, Some(&["other.test", "Bad Host", "a.b.example.com"])), Utc::now())
            .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["hosts[0]", "hosts[1]", "hosts[2]"], "{errors:?}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (cert, _) = self_signed(&["a.test"], false);
        let (_, other_key) = self_signed(&["a.test"], false);
        let errors = validate(&input(&cert, &other_key, None), Utc::now()).unwrap_err();
        assert_eq!(errors, [ValidationError::new("key_pem", "does not belong to the certificate")]);
    }

    #[test]
    fn expired_certificates_are_refused_but_still_load() {
        let (cert, key) = self_signed(&["a.test"], true);
        let errors = validate(&input(&cert, &key, None), Utc::now()).unwrap_err();
        assert_eq!(errors[0].field, "cert_pem");
        assert!(errors[0].message.starts_with("expired at 2002-01-01"), "{errors:?}");
        assert!(load(&cert, &key).is_ok(), "the gateway keeps serving a certificate that expired after upload");
    }

    #[test]
    fn garbage_is_refused_without_quoting_the_key() {
        let secret = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n";
        let errors = load("not a certificate", secret).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["cert_pem", "key_pem"]);
        assert!(errors.iter().all(|e| !e.message.contains("c2VjcmV0")), "{errors:?}");
        let input = CertificateInput { cert_pem: "x".into(), key_pem: secret.into(), hosts: None };
        assert!(!format!("{input:?}").contains("c2VjcmV0"));
    }
}
