//! Bearer JSON Web Tokens (RFC 7519, RFC 6750): the `jwt` policy's phase.
//!
//! A token is accepted only when signed with the algorithm the policy names — the
//! token's own `alg` is compared with it, never obeyed, so `none`, an HS256 token
//! made with an RSA public key as its secret, or any other algorithm is refused
//! before a key is chosen. Keys come from the policy (a secret or a PEM public key)
//! or from the issuer's JWKS by `kid` (see [`crate::jwks`]); `jku`, `x5u` and `jwk`
//! headers are ignored, and tokens with `crit` headers are refused (we understand no
//! extension). `exp` is required; `exp` and `nbf` are checked with the policy's
//! leeway, `iss` and `aud` when configured.
//!
//! A missing token answers 401 with `WWW-Authenticate: Bearer`, a bad one 401 with
//! `error="invalid_token"`; the reason goes to the debug log only. When the issuer's
//! keys cannot be had, 503. Accepted claims named in `claims_to_headers` are
//! forwarded upstream; clients' own copies of those headers are always removed.
//!
//! With `key_auth` on the same version both credentials are required (this phase
//! runs right after the key check): adding a policy never weakens access.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use turnpike_domain::policy::{JwtAlgorithm, JwtPolicy};

use crate::config::RoutedVersion;
use crate::error::{ErrorKind, GatewayError};
use crate::jwks::{JwksCache, JwksSource, KeyError};

/// Longest token accepted; real ones are a few kilobytes at most.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest claim value forwarded in a header.
const MAX_CLAIM_HEADER_BYTES: usize = 4096;

/// A version's `jwt` policy, compiled once per snapshot.
#[derive(Debug)]
pub(crate) struct JwtAuth {
    algorithm: JwtAlgorithm,
    keys: Keys,
    validation: Validation,
    header: HeaderName,
    /// In `Authorization`, the `Bearer` scheme is required; elsewhere it is optional.
    scheme_required: bool,
    claims_to_headers: Vec<(String, HeaderName)>,
    hide_credentials: bool,
}

#[derive(Debug)]
enum Keys {
    Fixed(Arc<DecodingKey>),
    Jwks {
        source: Arc<JwksSource>,
        first_fetch_wait: Duration,
        refetch_interval: Duration,
    },
    /// The configured key cannot be used: every request is answered 503 (the
    /// control plane validates keys, so only a hand-made snapshot gets here).
    Unusable,
}

/// Why a token was refused; logged, never sent.
#[derive(Debug, thiserror::Error)]
enum TokenError {
    #[error("not three base64url segments")]
    Malformed,
    #[error("the header does not name the configured algorithm")]
    Algorithm,
    #[error("the header has critical extensions")]
    Critical,
    #[error("the header's kid is not a string")]
    Kid,
    #[error(transparent)]
    Key(KeyError),
    #[error("{0}")]
    Rejected(#[from] jsonwebtoken::errors::Error),
}

impl JwtAuth {
    pub fn compile(policy: &JwtPolicy, version_id: &str, jwks: &JwksCache) -> JwtAuth {
        let unusable = |what: &str| {
            tracing::error!(version = version_id, "unusable jwt {what}; the version answers 503");
            Keys::Unusable
        };
        let keys = match (policy.algorithm, &policy.jwks_url, &policy.public_key_pem) {
            (JwtAlgorithm::HS256, _, _) => match policy.secret_bytes() {
                Some(Ok(secret)) if secret.len() >= JwtPolicy::MIN_SECRET_BYTES => {
                    Keys::Fixed(Arc::new(DecodingKey::from_secret(&secret)))
                }
                _ => unusable("secret"),
            },
            (_, Some(url), _) => match jwks.source(url) {
                Some(source) => {
                    let settings = jwks.settings();
                    Keys::Jwks {
                        source,
                        first_fetch_wait: settings.fetch_timeout,
                        refetch_interval: settings.unknown_kid_refetch_interval,
                    }
                }
                None => unusable("jwks url"),
            },
            (algorithm, None, Some(pem)) => {
                let key = match algorithm {
                    JwtAlgorithm::ES256 => DecodingKey::from_ec_pem(pem.as_bytes()),
                    _ => DecodingKey::from_rsa_pem(pem.as_bytes()),
                };
                key.map_or_else(|_| unusable("public key"), |k| Keys::Fixed(Arc::new(k)))
            }
            (_, None, None) => unusable("key (none configured)"),
        };
        let header = HeaderName::try_from(policy.header.as_str()).unwrap_or_else(|_| {
            tracing::error!(version = version_id, "unusable jwt header name; using authorization");
            AUTHORIZATION
        });
        let claims_to_headers = policy
            .claims_to_headers
            .iter()
            .filter_map(|(claim, name)| match HeaderName::try_from(name.as_str()) {
                Ok(name) => Some((claim.clone(), name)),
                Err(_) => {
                    tracing::warn!(version = version_id, claim = %claim, "left out a claim with an unusable header name");
                    None
                }
            })
            .collect();
        JwtAuth {
            algorithm: policy.algorithm,
            keys,
            validation: validation(policy),
            scheme_required: header == AUTHORIZATION,
            header,
            claims_to_headers,
            hide_credentials: policy.hide_credentials,
        }
    }

    /// The token of the request; `None` when missing or not in the expected form.
    fn token<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        let mut values = headers.get_all(&self.header).iter();
        // Two credentials are one too many: which one would the upstream believe?
        let (Some(value), None) = (values.next(), values.next()) else { return None };
        let value = value.to_str().ok()?.trim();
        let token = match value.split_once(' ') {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim_start(),
            _ if self.scheme_required => return None,
            _ => value,
        };
        let well_formed = !token.is_empty()
            && token.len() <= MAX_TOKEN_BYTES
            && token.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        well_formed.then_some(token)
    }

    /// Checks the token and returns its claims.
    async fn verify(&self, token: &str) -> Result<Map<String, Value>, TokenError> {
        let kid = self.check_header(token)?;
        let key = match &self.keys {
            Keys::Fixed(key) => key.clone(),
            Keys::Jwks { source, first_fetch_wait, refetch_interval } => source
                .key(kid.as_deref(), self.algorithm, *first_fetch_wait, *refetch_interval)
                .await
                .map_err(TokenError::Key)?,
            Keys::Unusable => return Err(TokenError::Key(KeyError::Unavailable)),
        };
        Ok(jsonwebtoken::decode::<Map<String, Value>>(token, &key, &self.validation)?.claims)
    }

    /// Reads the token's header: the algorithm must be the configured one, no
    /// critical extension may be asked for. Returns the `kid`.
    fn check_header(&self, token: &str) -> Result<Option<String>, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        if header.is_empty() || payload.is_empty() || signature.is_empty() {
            return Err(TokenError::Malformed);
        }
        let header = URL_SAFE_NO_PAD.decode(header).map_err(|_| TokenError::Malformed)?;
        let header: Map<String, Value> = serde_json::from_slice(&header).map_err(|_| TokenError::Malformed)?;
        if header.get("alg").and_then(Value::as_str) != Some(self.algorithm.as_str()) {
            return Err(TokenError::Algorithm);
        }
        if header.contains_key("crit") {
            return Err(TokenError::Critical);
        }
        match header.get("kid") {
            None => Ok(None),
            Some(Value::String(kid)) => Ok(Some(kid.clone())),
            Some(_) => Err(TokenError::Kid),
        }
    }

    /// Forwards the configured claims as request headers.
    fn expose(&self, claims: &Map<String, Value>, headers: &mut HeaderMap) {
        for (claim, name) in &self.claims_to_headers {
            let Some(value) = claims.get(claim).and_then(header_value) else { continue };
            headers.insert(name.clone(), value);
        }
    }
}

fn validation(policy: &JwtPolicy) -> Validation {
    let algorithm = match policy.algorithm {
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::ES256 => Algorithm::ES256,
    };
    let mut v = Validation::new(algorithm);
    v.leeway = u64::from(policy.leeway_seconds);
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required = vec!["exp"];
    if let Some(issuer) = &policy.issuer {
        v.set_issuer(&[issuer]);
        required.push("iss");
    }
    if policy.audiences.is_empty() {
        // No audience configured: the API owner accepts the issuer's tokens for any.
        v.validate_aud = false;
    } else {
        v.set_audience(&policy.audiences);
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    v
}

/// A claim as a header value: strings as they are, numbers and booleans as JSON,
/// arrays of those joined with `, `; nothing for objects, nulls, or values a
/// header cannot carry.
fn header_value(claim: &Value) -> Option<HeaderValue> {
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    let text = match claim {
        Value::Array(items) => items.iter().map(scalar).collect::<Option<Vec<_>>>()?.join(", "),
        other => scalar(other)?,
    };
    if text.len() > MAX_CLAIM_HEADER_BYTES {
        return None;
    }
    HeaderValue::try_from(text).ok()
}

fn challenge(invalid: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    let value = if invalid { r#"Bearer error="invalid_token""# } else { "Bearer" };
    h.insert(WWW_AUTHENTICATE, HeaderValue::from_static(value));
    h
}

/// The JWT phase (4c, after the API key): nothing to do without a `jwt` policy.
pub(crate) async fn authenticate<B>(req: &mut Request<B>, version: &RoutedVersion) -> Result<(), GatewayError> {
    let Some(auth) = &version.jwt else { return Ok(()) };
    for (_, name) in &auth.claims_to_headers {
        req.headers_mut().remove(name);
    }
    let token = auth
        .token(req.headers())
        .ok_or_else(|| GatewayError::from(ErrorKind::MissingToken).with_headers(challenge(false)))?
        .to_owned();
    let claims = auth.verify(&token).await.map_err(|e| {
        tracing::debug!(version = %version.id, reason = %e, "refused a bearer token");
        match e {
            TokenError::Key(KeyError::Unavailable) => GatewayError::with_cause(ErrorKind::JwtKeysUnavailable, e),
            e => GatewayError::with_cause(ErrorKind::InvalidToken, e).with_headers(challenge(true)),
        }
    })?;
    auth.expose(&claims, req.headers_mut());
    if auth.hide_credentials {
        req.headers_mut().remove(&auth.header);
    }
    Ok(())
}

/// The `jwt` fuzz target and the replay of its seed corpus (`fuzz/`,
/// `gateway/tests/corpus.rs`); not an API.
#[doc(hidden)]
pub mod fuzzing {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use turnpike_domain::policy::JwtSecret;

    use super::*;

    /// Two fixed policies, compiled once: HS256 with an issuer, audiences and leeway,
    /// and RS256 with a PEM public key and no claim checks beyond `exp`.
    #[derive(Debug)]
    pub struct Verifiers {
        policies: [JwtAuth; 2],
    }

    /// The issuer and audience the HS256 policy requires.
    pub const ISSUER: &str = "https://idp.test";
    pub const AUDIENCE: &str = "orders";

    impl Verifiers {
        pub fn new(hs256_secret: &str, rs256_public_pem: &str) -> Verifiers {
            let hs = JwtPolicy {
                secret: Some(JwtSecret::new(hs256_secret)),
                issuer: Some(ISSUER.into()),
                audiences: vec![AUDIENCE.into()],
                leeway_seconds: 30,
                ..JwtPolicy::new(JwtAlgorithm::HS256)
            };
            let rs = JwtPolicy { public_key_pem: Some(rs256_public_pem.into()), ..JwtPolicy::new(JwtAlgorithm::RS256) };
            let jwks = JwksCache::default();
            let policies = [JwtAuth::compile(&hs, "fuzz-hs256", &jwks), JwtAuth::compile(&rs, "fuzz-rs256", &jwks)];
            for auth in &policies {
                assert!(matches!(auth.keys, Keys::Fixed(_)), "an unusable key would refuse everything untested");
            }
            Verifiers { policies }
        }

        /// Verifies `token` under each policy as it stands, and as the value of an
        /// `Authorization: Bearer` header would reach verification (when it can be a
        /// header value and the header is read as a token). Returns each outcome:
        /// the claims' count when accepted, the reason when refused.
        pub fn verify(&self, token: &[u8]) -> Vec<Result<usize, String>> {
            let mut outcomes = Vec::new();
            let text = String::from_utf8_lossy(token);
            let header = HeaderValue::from_bytes(&[b"Bearer ", token].concat()).ok();
            for auth in &self.policies {
                outcomes.push(now(auth.verify(&text)));
                let mut headers = HeaderMap::new();
                if let Some(value) = &header {
                    headers.insert(AUTHORIZATION, value.clone());
                }
                if let Some(token) = auth.token(&headers) {
                    outcomes.push(now(auth.verify(token)));
                }
            }
            outcomes
        }
    }

    /// Verification with a fixed key never waits: its future is ready when first polled.
    fn now(verify: impl Future<Output = Result<Map<String, Value>, TokenError>>) -> Result<usize, String> {
        match pin!(verify).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(outcome) => outcome.map(|claims| claims.len()).map_err(|e| e.to_string()),
            Poll::Pending => panic!("verification with a fixed key waited"),
        }
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;
    use turnpike_domain::policy::JwtSecret;

    use super::*;

    const SECRET: &str = "an-hs256-secret-of-at-least-32-bytes!";
    const RSA_A: &str = include_str!("../tests/data/jwt_rsa_a.pem");
    const RSA_A_PUBLIC: &str = include_str!("../tests/data/jwt_rsa_a.pub.pem");

    fn hs256() -> JwtPolicy {
        JwtPolicy { secret: Some(JwtSecret::new(SECRET)), ..JwtPolicy::new(JwtAlgorithm::HS256) }
    }

    fn rs256() -> JwtPolicy {
        JwtPolicy { public_key_pem: Some(RSA_A_PUBLIC.into()), ..JwtPolicy::new(JwtAlgorithm::RS256) }
    }

    fn compile(policy: &JwtPolicy) -> JwtAuth {
        JwtAuth::compile(policy, "v1", &JwksCache::default())
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn claims(extra: Value) -> Value {
        let mut c = json!({"sub": "alice", "exp": now() + 600});
        c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        c
    }

    fn hs(claims: &Value) -> String {
        encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
    }

    fn rs(claims: &Value) -> String {
        let key = EncodingKey::from_rsa_pem(RSA_A.as_bytes()).unwrap();
        encode(&Header::new(Algorithm::RS256), claims, &key).unwrap()
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    /// A token with any header, signed with HMAC-SHA256 under `secret`.
    fn forged(header: &Value, claims: &Value, secret: &[u8]) -> String {
        let message = format!("{}.{}", b64(header), b64(claims));
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), &EncodingKey::from_secret(secret), Algorithm::HS256)
                .unwrap();
        format!("{message}.{signature}")
    }

    async fn verdict(auth: &JwtAuth, token: &str) -> Result<Map<String, Value>, String> {
        auth.verify(token).await.map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn valid_tokens_pass_and_their_claims_come_back() {
        let got = verdict(&compile(&hs256()), &hs(&claims(json!({})))).await.unwrap();
        assert_eq!(got["sub"], "alice");
        let got = verdict(&compile(&rs256()), &rs(&claims(json!({"scope": "read"})))).await.unwrap();
        assert_eq!(got["scope"], "read");
        let b64_policy = JwtPolicy {
            secret: Some(JwtSecret::new(base64::engine::general_purpose::STANDARD.encode(SECRET))),
            secret_encoding: turnpike_domain::policy::SecretEncoding::Base64,
            ..hs256()
        };
        assert!(verdict(&compile(&b64_policy), &hs(&claims(json!({})))).await.is_ok());
    }

    #[tokio::test]
    async fn the_algorithm_is_the_configured_one_never_the_tokens() {
        let rs_auth = compile(&rs256());
        let c = claims(json!({}));
        // alg none, with and without a signature.
        let none = format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&c));
        assert!(verdict(&rs_auth, &none).await.is_err());
        let none_signed = format!("{}.{}.AAAA", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&c));
        assert_eq!(verdict(&rs_auth, &none_signed).await.unwrap_err(), TokenError::Algorithm.to_string());
        // The classic confusion: HS256 keyed with the RSA public key the gateway holds.
        let confused = forged(&json!({"alg": "HS256", "typ": "JWT"}), &c, RSA_A_PUBLIC.as_bytes());
        assert_eq!(verdict(&rs_auth, &confused).await.unwrap_err(), TokenError::Algorithm.to_string());
        // Another algorithm of the right family, or the right name in another case.
        for alg in ["RS512", "PS256", "rs256", "ES256"] {
            let token = forged(&json!({"alg": alg}), &c, b"x");
            assert_eq!(verdict(&rs_auth, &token).await.unwrap_err(), TokenError::Algorithm.to_string(), "{alg}");
        }
        // And the other way round: an HS256 policy never takes an RS256 token.
        assert_eq!(verdict(&compile(&hs256()), &rs(&c)).await.unwrap_err(), TokenError::Algorithm.to_string());
    }

    #[tokio::test]
    async fn signatures_headers_and_shapes_are_checked() {
        let auth = compile(&hs256());
        let c = claims(json!({}));
        let good = hs(&c);
        let other_secret = forged(&json!({"alg": "HS256"}), &c, b"another-secret-of-at-least-32-bytes!!");
        assert!(verdict(&auth, &other_secret).await.unwrap_err().contains("InvalidSignature"));
        let (head, _) = good.rsplit_once('.').unwrap();
        let tampered = format!("{head}.{}", URL_SAFE_NO_PAD.encode([0u8; 32]));
        assert!(verdict(&auth, &tampered).await.is_err());
        let swapped_claims = format!(
            "{}.{}.{}",
            b64(&json!({"alg": "HS256"})),
            b64(&claims(json!({"sub": "root"}))),
            good.rsplit('.').next().unwrap()
        );
        assert!(verdict(&auth, &swapped_claims).await.is_err());
        let critical = forged(&json!({"alg": "HS256", "crit": ["exp"], "exp": 1}), &c, SECRET.as_bytes());
        assert_eq!(verdict(&auth, &critical).await.unwrap_err(), TokenError::Critical.to_string());
        for malformed in ["", "a.b", "a.b.c.d", "..", "e30.e30.", "!!!.e30.AAAA"] {
            assert!(verdict(&auth, malformed).await.is_err(), "{malformed:?}");
        }
        // A jku or x5u pointing elsewhere changes nothing: the configured key decides.
        let jku = forged(
            &json!({"alg": "HS256", "jku": "http://127.0.0.1:1/keys", "x5u": "http://127.0.0.1:1/x"}),
            &c,
            SECRET.as_bytes(),
        );
        assert!(verdict(&auth, &jku).await.is_ok());
    }

    #[tokio::test]
    async fn time_issuer_and_audience_are_checked() {
        let strict = JwtPolicy {
            issuer: Some("https://idp.test".into()),
            audiences: vec!["orders".into(), "billing".into()],
            leeway_seconds: 30,
            ..hs256()
        };
        let auth = compile(&strict);
        let ok = |extra: Value| {
            let mut c = claims(json!({"iss": "https://idp.test", "aud": "orders"}));
            c.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            hs(&c)
        };
        assert!(verdict(&auth, &ok(json!({}))).await.is_ok());
        assert!(verdict(&auth, &ok(json!({"aud": ["x", "billing"]}))).await.is_ok());
        assert!(verdict(&auth, &ok(json!({"exp": now() - 20}))).await.is_ok(), "within the leeway");
        let refused = [
            ok(json!({"exp": now() - 120})),
            ok(json!({"nbf": now() + 120})),
            ok(json!({"iss": "https://evil.test"})),
            ok(json!({"aud": "other"})),
            ok(json!({"aud": ["x", "y"]})),
            ok(json!({"exp": "tomorrow"})),
            hs(&json!({"sub": "alice", "iss": "https://idp.test", "aud": "orders"})),
            hs(&json!({"sub": "alice", "exp": now() + 60, "aud": "orders"})),
            hs(&json!({"sub": "alice", "exp": now() + 60, "iss": "https://idp.test"})),
        ];
        for (i, token) in refused.iter().enumerate() {
            assert!(verdict(&auth, token).await.is_err(), "case {i}");
        }
        // Without configured audiences, any `aud` is accepted.
        assert!(verdict(&compile(&hs256()), &hs(&claims(json!({"aud": "anything"})))).await.is_ok());
    }

    #[test]
    fn tokens_are_read_from_the_configured_header() {
        let auth = compile(&hs256());
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.append(HeaderName::try_from(*n).unwrap(), HeaderValue::try_from(*v).unwrap());
            }
            h
        };
        assert_eq!(auth.token(&headers(&[("authorization", "Bearer a.b.c")])), Some("a.b.c"));
        assert_eq!(auth.token(&headers(&[("authorization", "bearer   a.b.c ")])), Some("a.b.c"));
        assert_eq!(auth.token(&headers(&[("authorization", "a.b.c")])), None, "the scheme is required");
        assert_eq!(auth.token(&headers(&[("authorization", "Basic dXNlcjpwdw==")])), None);
        assert_eq!(auth.token(&headers(&[("authorization", "Bearer ")])), None);
        assert_eq!(auth.token(&headers(&[("authorization", "Bearer a b")])), None);
        assert_eq!(auth.token(&headers(&[("authorization", "Bearer a.b.c"), ("authorization", "Bearer d.e.f")])), None);
        let custom = compile(&JwtPolicy { header: "x-id-token".into(), ..hs256() });
        assert_eq!(custom.token(&headers(&[("x-id-token", "a.b.c")])), Some("a.b.c"));
        assert_eq!(custom.token(&headers(&[("x-id-token", "Bearer a.b.c")])), Some("a.b.c"));
        assert_eq!(custom.token(&headers(&[("authorization", "Bearer a.b.c")])), None);
    }

    #[test]
    fn claims_become_header_values_when_they_can() {
        assert_eq!(header_value(&json!("alice")).unwrap(), "alice");
        assert_eq!(header_value(&json!(42)).unwrap(), "42");
        assert_eq!(header_value(&json!(true)).unwrap(), "true");
        assert_eq!(header_value(&json!(["read", "write"])).unwrap(), "read, write");
        assert_eq!(header_value(&json!({"a": 1})), None);
        assert_eq!(header_value(&json!(null)), None);
        assert_eq!(header_value(&json!("line\r\nbreak")), None);
        assert_eq!(header_value(&json!("x".repeat(MAX_CLAIM_HEADER_BYTES + 1))), None);
    }

    #[tokio::test]
    async fn an_unusable_key_refuses_everything_as_unavailable() {
        let broken = JwtPolicy { public_key_pem: Some("not a key".into()), ..JwtPolicy::new(JwtAlgorithm::ES256) };
        let auth = compile(&broken);
        let token = forged(&json!({"alg": "ES256"}), &claims(json!({})), b"x");
        assert!(matches!(auth.verify(&token).await, Err(TokenError::Key(KeyError::Unavailable))));
    }

    /// A small deterministic fuzz: every one-character change, every truncation and a
    /// few hostile headers are refused, and nothing panics.
    #[tokio::test]
    async fn mangled_tokens_are_all_refused() {
        let auth = compile(&hs256());
        let good = hs(&claims(json!({})));
        assert!(auth.verify(&good).await.is_ok());
        let mut mangled: Vec<String> = (0..good.len()).map(|n| good[..n].to_owned()).collect();
        for (i, c) in good.char_indices() {
            for replacement in ['A', '_', '.', '-'] {
                if replacement != c {
                    mangled.push(format!("{}{replacement}{}", &good[..i], &good[i + 1..]));
                }
            }
        }
        let c = claims(json!({}));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        for header in [
            json!({"alg": null}),
            json!({"alg": ["HS256"]}),
            json!({"alg": "HS256", "kid": {"$ref": "x"}}),
            json!({"alg": "HS256", "b64": false, "crit": ["b64"]}),
            json!(["HS256"]),
            json!(deep),
        ] {
            let valid_but_for_the_header = forged(&header, &c, SECRET.as_bytes());
            mangled.push(valid_but_for_the_header);
        }
        // Signed with the key the token carries itself: that key is never used.
        mangled.push(forged(&json!({"alg": "HS256", "jwk": {"kty": "oct", "k": "AAAA"}}), &c, &[0, 0, 0]));
        mangled.push(format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(deep.as_bytes()), b64(&c), "AAAA"));
        mangled.push(format!("{}.{}", URL_SAFE_NO_PAD.encode([0xff, 0xfe]), good));
        for token in &mangled {
            assert!(auth.verify(token).await.is_err(), "accepted {token:?}");
        }
        assert!(mangled.len() > 400);
    }

    #[test]
    fn debug_output_shows_no_secret() {
        assert!(!format!("{:?}", compile(&hs256())).contains(SECRET));
        assert!(!format!("{:?}", hs256()).contains(SECRET));
    }
}
