//! JSON Web Token authentication as an API owner configures it, and its checks. The
//! gateway's `jwt` module runs it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// JSON Web Token authentication (RFC 7519). The algorithm is fixed here and never
/// taken from a token; the key comes from `secret` (HS256), or from
/// `public_key_pem` or `jwks_url` (RS256, ES256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JwtPolicy {
    /// The only algorithm a token may be signed with.
    pub algorithm: JwtAlgorithm,
    /// HS256 only: the shared secret, at least 32 bytes once decoded. Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Password))]
    pub secret: Option<JwtSecret>,
    /// How `secret` is written: as text (its UTF-8 bytes) or base64 (standard or URL-safe).
    #[serde(default, skip_serializing_if = "SecretEncoding::is_text")]
    pub secret_encoding: SecretEncoding,
    /// RS256/ES256: the public key, PEM (`PUBLIC KEY`, or `RSA PUBLIC KEY` for RS256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_pem: Option<String>,
    /// RS256/ES256: where the issuer publishes its keys (a JWKS); `https://`, or
    /// `http://` to a loopback address only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// Required `iss` claim, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// When not empty, the token's `aud` must name one of these (and must be present).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "JwtPolicy::default_leeway")]
    pub leeway_seconds: u32,
    /// Request header carrying the token. In `authorization` it must follow the
    /// `Bearer` scheme; in any other header the `Bearer ` prefix is optional.
    #[serde(default = "JwtPolicy::default_header")]
    pub header: String,
    /// Claims forwarded upstream, claim name → request header (`sub` → `x-consumer-subject`).
    /// Clients' own copies of these headers are always removed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims_to_headers: BTreeMap<String, String>,
    /// Remove the token's header before forwarding (many upstreams want the token, so off).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hide_credentials: bool,
}

impl JwtPolicy {
    pub const DEFAULT_LEEWAY_SECONDS: u32 = 30;
    pub const MAX_LEEWAY_SECONDS: u32 = 600;
    pub const MIN_SECRET_BYTES: usize = 32;

    /// A policy for `algorithm` with every other field at its default (no key yet).
    pub fn new(algorithm: JwtAlgorithm) -> Self {
        JwtPolicy {
            algorithm,
            secret: None,
            secret_encoding: SecretEncoding::Text,
            public_key_pem: None,
            jwks_url: None,
            issuer: None,
            audiences: vec![],
            leeway_seconds: Self::DEFAULT_LEEWAY_SECONDS,
            header: Self::default_header(),
            claims_to_headers: BTreeMap::new(),
            hide_credentials: false,
        }
    }

    fn default_leeway() -> u32 {
        Self::DEFAULT_LEEWAY_SECONDS
    }

    fn default_header() -> String {
        "authorization".into()
    }

    /// The HS256 key: the secret's bytes, decoded per `secret_encoding`.
    pub fn secret_bytes(&self) -> Option<Result<Vec<u8>, InvalidSecret>> {
        self.secret.as_ref().map(|s| s.decode(self.secret_encoding))
    }
}

/// The algorithms a [`JwtPolicy`] can require. `none` does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 and a shared secret.
    HS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// ECDSA on P-256 with SHA-256.
    ES256,
}

impl JwtAlgorithm {
    /// The name in a token's `alg` header.
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::HS256 => "HS256",
            JwtAlgorithm::RS256 => "RS256",
            JwtAlgorithm::ES256 => "ES256",
        }
    }
}

/// How a [`JwtPolicy::secret`] is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum SecretEncoding {
    #[default]
    Text,
    Base64,
}

impl SecretEncoding {
    fn is_text(&self) -> bool {
        *self == SecretEncoding::Text
    }
}

/// A shared secret that never shows in `Debug` output (and so in no log line).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JwtSecret(String);

impl JwtSecret {
    pub fn new(secret: impl Into<String>) -> Self {
        JwtSecret(secret.into())
    }

    /// The secret as configured; handle with care.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The key bytes.
    pub fn decode(&self, encoding: SecretEncoding) -> Result<Vec<u8>, InvalidSecret> {
        use base64::Engine;
        use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
        match encoding {
            SecretEncoding::Text => Ok(self.0.as_bytes().to_vec()),
            SecretEncoding::Base64 => {
                let config = GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
                let text = self.0.trim();
                [base64::alphabet::STANDARD, base64::alphabet::URL_SAFE]
                    .iter()
                    .find_map(|alphabet| GeneralPurpose::new(alphabet, config).decode(text).ok())
                    .ok_or(InvalidSecret)
            }
        }
    }
}

impl std::fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtSecret([redacted])")
    }
}

/// A `secret_encoding: base64` secret that is not base64. Says nothing about the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the secret is not valid base64")]
pub struct InvalidSecret;

/// Request headers that `claims_to_headers` may not write: framing and hop-by-hop
/// headers, and the ones the gateway itself sets for upstreams to rely on.
const JWT_RESERVED_HEADERS: [&str; 18] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "forwarded",
    "via",
    "x-request-id",
    "traceparent",
    "tracestate",
    "x-consumer-key-id",
    "x-consumer-application-id",
    "x-consumer-developer-id",
    "x-consumer-plan-id",
];

const MAX_JWT_SECRET_BYTES: usize = 1024;
const MAX_JWT_TEXT: usize = 1024;
const MAX_JWT_AUDIENCES: usize = 20;
const MAX_JWT_CLAIM_HEADERS: usize = 20;
const MAX_JWKS_URL: usize = 2048;
const MIN_RSA_MODULUS_BITS: usize = 2048;

/// The checks of a [`JwtPolicy`]. No message ever repeats the secret.
pub(super) fn validate(v: &mut crate::validate::Validator, j: &JwtPolicy, key_auth: Option<&super::KeyAuth>) {
    use crate::validate::{self, ValidationError};
    let at = |field: &str, message: String| Err(ValidationError::new(format!("policies.jwt.{field}"), message));
    let algorithm = j.algorithm.as_str();
    match j.algorithm {
        JwtAlgorithm::HS256 => {
            let secret = match j.secret_bytes() {
                None => at("secret", "is required for HS256".into()),
                Some(Err(_)) => at("secret", "is not valid base64 (secret_encoding is base64)".into()),
                Some(Ok(bytes)) if bytes.len() < JwtPolicy::MIN_SECRET_BYTES => at(
                    "secret",
                    format!("must be at least {} bytes (it has {})", JwtPolicy::MIN_SECRET_BYTES, bytes.len()),
                ),
                Some(Ok(bytes)) if bytes.len() > MAX_JWT_SECRET_BYTES => {
                    at("secret", format!("must be at most {MAX_JWT_SECRET_BYTES} bytes"))
                }
                Some(Ok(_)) => Ok(()),
            };
            v.check(secret);
            for (field, set) in [("public_key_pem", j.public_key_pem.is_some()), ("jwks_url", j.jwks_url.is_some())] {
                if set {
                    v.check(at(field, "is for RS256 and ES256; HS256 uses `secret`".into()));
                }
            }
        }
        JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
            if j.secret.is_some() {
                v.check(at("secret", format!("is for HS256; {algorithm} uses `public_key_pem` or `jwks_url`")));
            }
            let source = match (&j.public_key_pem, &j.jwks_url) {
                (None, None) => at("public_key_pem", format!("or `jwks_url` is required for {algorithm}")),
                (Some(_), Some(_)) => at("jwks_url", "cannot be combined with `public_key_pem`".into()),
                (Some(pem), None) => {
                    check_public_key_pem(pem, j.algorithm).or_else(|message| at("public_key_pem", message))
                }
                (None, Some(url)) => check_jwks_url(url).or_else(|message| at("jwks_url", message)),
            };
            v.check(source);
        }
    }
    if let Some(issuer) = &j.issuer
        && (issuer.is_empty() || issuer.len() > MAX_JWT_TEXT)
    {
        v.check(at("issuer", format!("must be 1 to {MAX_JWT_TEXT} characters")));
    }
    if j.audiences.len() > MAX_JWT_AUDIENCES {
        v.check(at("audiences", format!("must have at most {MAX_JWT_AUDIENCES} entries")));
    }
    for (i, audience) in j.audiences.iter().enumerate() {
        if audience.is_empty() || audience.len() > MAX_JWT_TEXT {
            v.check(at(&format!("audiences[{i}]"), format!("must be 1 to {MAX_JWT_TEXT} characters")));
        }
    }
    if j.leeway_seconds > JwtPolicy::MAX_LEEWAY_SECONDS {
        v.check(at("leeway_seconds", format!("must be at most {}", JwtPolicy::MAX_LEEWAY_SECONDS)));
    }
    let header = j.header.to_ascii_lowercase();
    if let Err(e) = validate::header_name("policies.jwt.header", &j.header) {
        v.check(Err(e));
    } else if header.starts_with("x-consumer-") || JWT_RESERVED_HEADERS.contains(&header.as_str()) {
        v.check(Err(ValidationError::new("policies.jwt.header", "is a header the gateway sets or removes itself")));
    }
    if key_auth.is_some_and(|k| k.header.eq_ignore_ascii_case(&j.header)) {
        v.check(Err(ValidationError::new("policies.jwt.header", "is the header key_auth reads the API key from")));
    }
    if j.claims_to_headers.len() > MAX_JWT_CLAIM_HEADERS {
        v.check(Err(ValidationError::new(
            "policies.jwt.claims_to_headers",
            format!("must have at most {MAX_JWT_CLAIM_HEADERS} entries"),
        )));
    }
    let mut targets = std::collections::HashSet::new();
    for (claim, target) in &j.claims_to_headers {
        let field = format!("policies.jwt.claims_to_headers.{claim}");
        if claim.is_empty() || claim.len() > 256 {
            v.check(Err(ValidationError::new(
                "policies.jwt.claims_to_headers",
                "claim names must be 1 to 256 characters",
            )));
            continue;
        }
        if let Err(e) = validate::header_name(&field, target) {
            v.check(Err(e));
            continue;
        }
        let target = target.to_ascii_lowercase();
        let refused = if JWT_RESERVED_HEADERS.contains(&target.as_str())
            || target.starts_with("x-forwarded-")
            || target.starts_with("proxy-")
        {
            Some("is a header the gateway sets or removes itself")
        } else if target == header {
            Some("is the header carrying the token")
        } else if !targets.insert(target) {
            Some("is already the target of another claim")
        } else {
            None
        };
        if let Some(message) = refused {
            v.check(Err(ValidationError::new(field, message)));
        }
    }
}

/// A JWKS location: `https://`, or `http://` only to a loopback host (a sidecar or a
/// test), since keys fetched in clear text could be swapped by anyone on the path.
fn check_jwks_url(url: &str) -> Result<(), String> {
    if url.len() > MAX_JWKS_URL {
        return Err(format!("must be at most {MAX_JWKS_URL} characters"));
    }
    if url.chars().any(|c| !c.is_ascii_graphic()) {
        return Err("must be a URL without spaces or control characters".into());
    }
    let (rest, secure) = match (url.strip_prefix("https://"), url.strip_prefix("http://")) {
        (Some(rest), _) => (rest, true),
        (None, Some(rest)) => (rest, false),
        _ => return Err("must start with https://".into()),
    };
    if url.contains('#') {
        return Err("must not contain a fragment ('#')".into());
    }
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("must not contain user info ('user:password@')".into());
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(h, _)| h).ok_or("has an unterminated IPv6 address")?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    if host.is_empty() {
        return Err("must include a host".into());
    }
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !secure && !loopback {
        return Err("must use https:// (http:// is allowed for loopback hosts only)".into());
    }
    Ok(())
}

/// A public key in PEM that suits `algorithm`: RSA of at least 2048 bits for RS256,
/// P-256 for ES256. Never echoes the input (someone may paste a private key).
fn check_public_key_pem(pem: &str, algorithm: JwtAlgorithm) -> Result<(), String> {
    use x509_cert::der::Decode;
    use x509_cert::der::asn1::ObjectIdentifier;
    use x509_cert::spki::SubjectPublicKeyInfoRef;
    const RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
    const EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

    let (label, der) = read_single_pem(pem)?;
    if label.contains("PRIVATE KEY") {
        return Err("holds a private key; give the public key only (and replace the exposed key)".into());
    }
    let rsa_modulus = match label.as_str() {
        "RSA PUBLIC KEY" => Some(rsa_modulus_bits(&der)?),
        "PUBLIC KEY" => {
            let spki = SubjectPublicKeyInfoRef::from_der(&der).map_err(|_| "is not a valid public key".to_owned())?;
            if spki.algorithm.oid == RSA {
                let key = spki.subject_public_key.as_bytes().ok_or("is not a valid RSA public key")?;
                Some(rsa_modulus_bits(key)?)
            } else if spki.algorithm.oid == EC {
                let curve = spki.algorithm.parameters.and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
                if curve != Some(P256) {
                    return Err("is an EC key on another curve than P-256".into());
                }
                None
            } else {
                return Err("is neither an RSA nor an EC public key".into());
            }
        }
        _ => return Err("must be a PEM block labelled PUBLIC KEY (or RSA PUBLIC KEY)".into()),
    };
    match (algorithm, rsa_modulus) {
        (JwtAlgorithm::RS256, Some(bits)) if bits < MIN_RSA_MODULUS_BITS => {
            Err(format!("is an RSA key of {bits} bits; at least {MIN_RSA_MODULUS_BITS} are required"))
        }
        (JwtAlgorithm::RS256, Some(_)) | (JwtAlgorithm::ES256, None) => Ok(()),
        (JwtAlgorithm::RS256, None) => Err("is an EC key; RS256 needs an RSA key".into()),
        (_, Some(_)) => Err(format!("is an RSA key; {} needs an EC P-256 key", algorithm.as_str())),
        (JwtAlgorithm::HS256, None) => Err("is not used by HS256".into()),
    }
}

/// The label and contents of the one PEM block in `text`.
fn read_single_pem(text: &str) -> Result<(String, Vec<u8>), String> {
    use base64::Engine;
    let not_pem = || "is not a PEM block (-----BEGIN PUBLIC KEY----- …)".to_owned();
    let text = text.trim();
    let rest = text.strip_prefix("-----BEGIN ").ok_or_else(not_pem)?;
    let (label, rest) = rest.split_once("-----").ok_or_else(not_pem)?;
    let end = format!("-----END {label}-----");
    let (body, after) = rest.split_once(&end).ok_or_else(not_pem)?;
    if !after.trim().is_empty() {
        return Err("must hold exactly one PEM block".into());
    }
    let body: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(body).map_err(|_| not_pem())?;
    Ok((label.to_owned(), der))
}

/// The size in bits of the modulus of a PKCS#1 `RSAPublicKey`.
fn rsa_modulus_bits(der: &[u8]) -> Result<usize, String> {
    use x509_cert::der::asn1::UintRef;
    use x509_cert::der::{Decode, Reader, SliceReader};
    let invalid = || "is not a valid RSA public key".to_owned();
    let mut reader = SliceReader::new(der).map_err(|_| invalid())?;
    let modulus = reader
        .sequence(|r| {
            let n = UintRef::decode(r)?;
            UintRef::decode(r)?;
            Ok(n.as_bytes().to_vec())
        })
        .map_err(|_| invalid())?;
    let leading = modulus.first().map_or(0, |b| b.leading_zeros() as usize);
    Ok((modulus.len() * 8).saturating_sub(leading))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{KeyAuth, Policies, validate};

    const RSA_2048_SPKI: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA4GGOf6tJrm1VPRSaax2P
996Toc2SYBaW+sQLUQoN0sL6lYq48zPcdToKh4s5rCThbeboLwtozixkZP6z3Flm
MWClu5TRfXxx6mxfDIfeeuDFIXSJh5oEDHHOVL9vAdzsuh+o2gQJ5uvsRefSmucU
O5SXkY3YFtsNiqFxu/SmT8uj3puyp2BidCbz8rmO4WMuY9dVrz03Ir3SX0wem+kA
fUBaM6LAFC9AsQWdIEoDItUrC69NSPii066Y0nNJQMRghz0PPCJB+hK3FC8i6BJV
ZVV1BjSClq4nnndlmW/uOcqDQAub1Thftefw7L+aQTarOh7UWtbEUo2aZ+AxpipT
kQIDAQAB
-----END PUBLIC KEY-----
";
    const RSA_2048_PKCS1: &str = "-----BEGIN RSA PUBLIC KEY-----
MIIBCgKCAQEA4GGOf6tJrm1VPRSaax2P996Toc2SYBaW+sQLUQoN0sL6lYq48zPc
dToKh4s5rCThbeboLwtozixkZP6z3FlmMWClu5TRfXxx6mxfDIfeeuDFIXSJh5oE
DHHOVL9vAdzsuh+o2gQJ5uvsRefSmucUO5SXkY3YFtsNiqFxu/SmT8uj3puyp2Bi
dCbz8rmO4WMuY9dVrz03Ir3SX0wem+kAfUBaM6LAFC9AsQWdIEoDItUrC69NSPii
066Y0nNJQMRghz0PPCJB+hK3FC8i6BJVZVV1BjSClq4nnndlmW/uOcqDQAub1Thf
tefw7L+aQTarOh7UWtbEUo2aZ+AxpipTkQIDAQAB
-----END RSA PUBLIC KEY-----
";
    const RSA_1024_SPKI: &str = "-----BEGIN PUBLIC KEY-----
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCweZqPcRjoAH5n16NcklJlErjf
lDrVZAIUpsIC76XHdn53ldj6R98U4Ps1HvdvDDh78LgvNJxxoFKCUo/9/LIAg28Q
xBHlxuxPsKy8PEGjuS8MfOf77+OcgeVjYDwCmJjudMlrw0NNUQf+BaWMb2EuLRwV
LTvc+ciEsuuuqxIEvQIDAQAB
-----END PUBLIC KEY-----
";
    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn errors(jwt: JwtPolicy) -> Vec<(String, String)> {
        let p = Policies { jwt: Some(jwt), ..Default::default() };
        match validate(&p) {
            Ok(()) => vec![],
            Err(errors) => errors.into_iter().map(|e| (e.field, e.message)).collect(),
        }
    }

    fn fields(jwt: JwtPolicy) -> Vec<String> {
        errors(jwt).into_iter().map(|(field, _)| field).collect()
    }

    fn hs256(secret: &str) -> JwtPolicy {
        JwtPolicy { secret: Some(JwtSecret::new(secret)), ..JwtPolicy::new(JwtAlgorithm::HS256) }
    }

    fn with_pem(algorithm: JwtAlgorithm, pem: &str) -> JwtPolicy {
        JwtPolicy { public_key_pem: Some(pem.into()), ..JwtPolicy::new(algorithm) }
    }

    fn with_jwks(url: &str) -> JwtPolicy {
        JwtPolicy { jwks_url: Some(url.into()), ..JwtPolicy::new(JwtAlgorithm::RS256) }
    }

    #[test]
    fn the_json_form_has_defaults_and_refuses_unknown_algorithms() {
        let p: JwtPolicy = serde_json::from_str(r#"{"algorithm": "RS256", "jwks_url": "https://idp/keys"}"#).unwrap();
        assert_eq!(p.leeway_seconds, 30);
        assert_eq!(p.header, "authorization");
        assert!(!p.hide_credentials && p.claims_to_headers.is_empty() && p.audiences.is_empty());
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({
                "algorithm": "RS256", "jwks_url": "https://idp/keys", "leeway_seconds": 30, "header": "authorization",
            })
        );
        for bad in ["none", "None", "HS512", "hs256", ""] {
            let json = format!(r#"{{"algorithm": "{bad}", "secret": "{SECRET}"}}"#);
            assert!(serde_json::from_str::<JwtPolicy>(&json).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<JwtPolicy>(r#"{"secret": "x"}"#).is_err(), "the algorithm is required");
        assert!(serde_json::from_str::<JwtPolicy>(r#"{"algorithm": "HS256", "alg": "x"}"#).is_err());
    }

    #[test]
    fn hs256_needs_a_secret_of_at_least_32_bytes_that_no_message_or_debug_output_repeats() {
        assert_eq!(errors(hs256(SECRET)), vec![]);
        let short = "s3cr3t-but-too-short";
        let e = errors(hs256(short));
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].0, "policies.jwt.secret");
        assert!(e[0].1.contains("at least 32 bytes") && !e[0].1.contains(short), "{}", e[0].1);
        assert!(!format!("{:?}", hs256(short)).contains(short), "Debug redacts the secret");
        assert_eq!(fields(JwtPolicy::new(JwtAlgorithm::HS256)), ["policies.jwt.secret"]);
        let b64 = |s: &str| JwtPolicy { secret_encoding: SecretEncoding::Base64, ..hs256(s) };
        // 32 random bytes in standard and URL-safe base64, padded or not.
        assert_eq!(errors(b64("q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=")), vec![]);
        assert_eq!(errors(b64("q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80")), vec![]);
        assert_eq!(errors(b64("-_-_EjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80")), vec![]);
        assert_eq!(b64("AAEC").secret_bytes().unwrap().unwrap(), [0, 1, 2]);
        assert_eq!(fields(b64("not base64 at all!")), ["policies.jwt.secret"]);
        assert_eq!(fields(b64("AAAA")), ["policies.jwt.secret"], "3 bytes is too short");
        let mixed = JwtPolicy { jwks_url: Some("https://idp/keys".into()), ..hs256(SECRET) };
        assert_eq!(fields(mixed), ["policies.jwt.jwks_url"]);
    }

    #[test]
    fn public_keys_must_suit_the_algorithm() {
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert_eq!(errors(with_pem(JwtAlgorithm::RS256, RSA_2048_SPKI)), vec![]);
        assert_eq!(errors(with_pem(JwtAlgorithm::RS256, RSA_2048_PKCS1)), vec![]);
        assert_eq!(errors(with_pem(JwtAlgorithm::ES256, &ec.public_key_pem())), vec![]);
        let refused = |algorithm, pem: &str, expected: &str| {
            let e = errors(with_pem(algorithm, pem));
            assert_eq!(e.len(), 1, "{e:?}");
            assert_eq!(e[0].0, "policies.jwt.public_key_pem");
            assert!(e[0].1.contains(expected), "{} does not say {expected:?}", e[0].1);
        };
        refused(JwtAlgorithm::RS256, RSA_1024_SPKI, "1024 bits");
        refused(JwtAlgorithm::ES256, RSA_2048_SPKI, "needs an EC P-256 key");
        refused(JwtAlgorithm::RS256, &ec.public_key_pem(), "RS256 needs an RSA key");
        refused(JwtAlgorithm::ES256, &p384.public_key_pem(), "another curve");
        refused(JwtAlgorithm::ES256, "not a key", "not a PEM block");
        let private = ec.serialize_pem();
        let e = errors(with_pem(JwtAlgorithm::ES256, &private));
        assert!(e[0].1.contains("private key") && !e[0].1.contains(&private[40..80]), "{e:?}");
        let two = format!("{RSA_2048_SPKI}{RSA_2048_SPKI}");
        refused(JwtAlgorithm::RS256, &two, "exactly one");
        let both =
            JwtPolicy { jwks_url: Some("https://idp/keys".into()), ..with_pem(JwtAlgorithm::RS256, RSA_2048_SPKI) };
        assert_eq!(fields(both), ["policies.jwt.jwks_url"]);
        assert_eq!(fields(JwtPolicy::new(JwtAlgorithm::ES256)), ["policies.jwt.public_key_pem"]);
        let with_secret = JwtPolicy { secret: Some(JwtSecret::new(SECRET)), ..with_jwks("https://idp/keys") };
        assert_eq!(fields(with_secret), ["policies.jwt.secret"]);
    }

    #[test]
    fn jwks_urls_must_be_https_unless_loopback() {
        for ok in [
            "https://idp.example.com/.well-known/jwks.json",
            "https://idp.example.com:8443/keys?tenant=a",
            "http://127.0.0.1:9000/jwks",
            "http://localhost/jwks",
            "http://[::1]:9000/jwks",
        ] {
            assert_eq!(errors(with_jwks(ok)), vec![], "{ok}");
        }
        for bad in [
            "http://idp.example.com/jwks",
            "http://10.0.0.1/jwks",
            "ftp://idp/jwks",
            "https://user:pw@idp/jwks",
            "https:///jwks",
            "https://idp/jw ks",
            "https://idp/jwks#frag",
            "idp/jwks",
        ] {
            assert_eq!(fields(with_jwks(bad)), ["policies.jwt.jwks_url"], "{bad}");
        }
    }

    #[test]
    fn claims_headers_issuer_audiences_and_leeway_are_checked() {
        let base = || with_jwks("https://idp/keys");
        let claims = |pairs: &[(&str, &str)]| JwtPolicy {
            claims_to_headers: pairs.iter().map(|(c, h)| ((*c).into(), (*h).into())).collect(),
            ..base()
        };
        assert_eq!(errors(claims(&[("sub", "x-consumer-subject"), ("email", "X-User-Email")])), vec![]);
        for target in ["x-consumer-key-id", "Host", "x-forwarded-for", "x-request-id", "authorization", "bad header"] {
            assert_eq!(fields(claims(&[("sub", target)])), ["policies.jwt.claims_to_headers.sub"], "{target}");
        }
        assert_eq!(fields(claims(&[("a", "x-user"), ("b", "X-User")])), ["policies.jwt.claims_to_headers.b"]);
        assert_eq!(fields(JwtPolicy { header: "x-consumer-token".into(), ..base() }), ["policies.jwt.header"]);
        assert_eq!(fields(JwtPolicy { header: "bad header".into(), ..base() }), ["policies.jwt.header"]);
        assert_eq!(errors(JwtPolicy { header: "x-id-token".into(), ..base() }), vec![]);
        assert_eq!(fields(JwtPolicy { issuer: Some(String::new()), ..base() }), ["policies.jwt.issuer"]);
        assert_eq!(
            fields(JwtPolicy { audiences: vec!["api".into(), String::new()], ..base() }),
            ["policies.jwt.audiences[1]"]
        );
        assert_eq!(fields(JwtPolicy { leeway_seconds: 601, ..base() }), ["policies.jwt.leeway_seconds"]);
    }

    #[test]
    fn key_auth_and_jwt_may_be_combined() {
        let p = Policies {
            key_auth: Some(KeyAuth::default()),
            jwt: Some(with_jwks("https://idp/keys")),
            ..Default::default()
        };
        assert_eq!(validate(&p), Ok(()));
        let clash = Policies {
            key_auth: Some(KeyAuth { header: "X-Token".into(), query: None }),
            jwt: Some(JwtPolicy { header: "x-token".into(), ..with_jwks("https://idp/keys") }),
            ..Default::default()
        };
        assert_eq!(validate(&clash).unwrap_err()[0].field, "policies.jwt.header");
    }
}
