//! JSON Web Key Sets: the public keys an identity provider publishes at a
//! `jwks_url`, fetched and kept fresh in the background for the `jwt` phase.
//!
//! - One [`JwksSource`] per URL and [`ConfigStore`](crate::ConfigStore), held weakly
//!   by the [`JwksCache`] like upstream state in [`crate::registry`]: a snapshot
//!   naming a URL that a live configuration already uses shares its keys and task, so
//!   a configuration change does not refetch. The task stops with the last
//!   configuration that names the URL.
//! - The first fetch starts when a snapshot naming the URL is compiled. A request
//!   that arrives before it finished waits for it (at most the fetch timeout); once
//!   it failed, requests answer 503 at once until a retry succeeds. After that, the
//!   request path never waits on the network.
//! - A key set lives for the response's `Cache-Control: max-age`, within bounds
//!   ([`JwksSettings`]), else for a default, and is refreshed in the background
//!   before it runs out. When a refresh fails the previous keys stay in use (an
//!   issuer rarely rotates while unreachable) and the fetch is retried with backoff.
//! - A token naming a `kid` that is not in the set asks for a refetch, honoured at
//!   most once per `unknown_kid_refetch_interval`, so that made-up `kid`s cannot make
//!   the gateway hammer the issuer. The token itself is refused; the next one finds
//!   the new key.
//! - Only signature keys that can serve RS256 (RSA of at least 2048 bits) or ES256
//!   (EC P-256) are kept; symmetric (`oct`) keys and encryption keys are ignored.
//!   Keys are never taken from tokens (`jku`, `x5u`, `jwk` headers).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, CACHE_CONTROL, USER_AGENT};
use http::{HeaderMap, HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use tokio::sync::{Notify, oneshot, watch};
use turnpike_domain::model::UpstreamTls;
use turnpike_domain::policy::JwtAlgorithm;

use crate::tls_client;

const FETCH_USER_AGENT: HeaderValue = HeaderValue::from_static("turnpike-jwks");
const MIN_RSA_MODULUS_BYTES: usize = 256;
/// Least time between two scheduled fetches of a URL.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_millis(500);

/// How key sets are fetched and kept; one set for a whole `ConfigStore`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksSettings {
    /// Lifetime of a key set whose response gives no `max-age`.
    pub default_ttl: Duration,
    /// Least lifetime, whatever `max-age` says (`no-cache` and `max-age=0` too).
    pub min_ttl: Duration,
    /// Longest lifetime, whatever `max-age` says.
    pub max_ttl: Duration,
    /// Least time between two fetches asked for by tokens with unknown `kid`s.
    pub unknown_kid_refetch_interval: Duration,
    /// Time allowed for one fetch, connection included.
    pub fetch_timeout: Duration,
    /// Longest wait between retries of a failing fetch.
    pub max_retry_interval: Duration,
    /// Largest JWKS document accepted.
    pub max_document_bytes: usize,
}

impl Default for JwksSettings {
    fn default() -> Self {
        JwksSettings {
            default_ttl: Duration::from_secs(300),
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(24 * 3600),
            unknown_kid_refetch_interval: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(5),
            max_retry_interval: Duration::from_secs(60),
            max_document_bytes: 512 * 1024,
        }
    }
}

type FetchClient = Client<HttpsConnector<tls_client::TcpConnector>, Empty<Bytes>>;

/// Every key set in use, by URL; one per `ConfigStore`.
#[derive(Debug, Default)]
pub struct JwksCache {
    shared: Arc<CacheShared>,
}

#[derive(Debug, Default)]
struct CacheShared {
    settings: Mutex<JwksSettings>,
    /// The addresses fetches may go to: upstream targets' policy.
    guard: Mutex<tls_client::TargetGuard>,
    /// Built on first use, so that a gateway without JWKS never builds it.
    client: OnceLock<FetchClient>,
    sources: Mutex<HashMap<String, Weak<JwksSource>>>,
}

impl CacheShared {
    fn settings(&self) -> JwksSettings {
        lock(&self.settings).clone()
    }

    fn client(&self) -> FetchClient {
        self.client
            .get_or_init(|| {
                let guard = lock(&self.guard).clone();
                let connector =
                    tls_client::connector(&UpstreamTls::default(), Some(self.settings().fetch_timeout), &guard);
                Client::builder(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    .pool_idle_timeout(Duration::from_secs(90))
                    .build(connector)
            })
            .clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl JwksCache {
    /// Replaces the settings; sources started afterwards and every later decision of
    /// running ones follow them.
    pub fn set_settings(&self, settings: JwksSettings) {
        *lock(&self.shared.settings) = settings;
    }

    /// Limits the addresses key sets are fetched from, as upstream targets' are; call
    /// before the first fetch.
    pub(crate) fn set_target_guard(&self, guard: tls_client::TargetGuard) {
        *lock(&self.shared.guard) = guard;
    }

    /// The source of `url`: the live one, or a new one whose first fetch starts now.
    /// `None` outside a Tokio runtime (nothing could fetch).
    pub fn source(&self, url: &str) -> Option<Arc<JwksSource>> {
        let mut sources = lock(&self.shared.sources);
        if let Some(live) = sources.get(url).and_then(Weak::upgrade) {
            return Some(live);
        }
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let Ok(uri) = url.parse::<Uri>() else {
            tracing::warn!(jwks_url = url, "unusable jwks url");
            return None;
        };
        let state = Arc::new(SourceState::default());
        let (stop, stopped) = oneshot::channel();
        let task = Refresher { url: url.to_owned(), uri, state: state.clone(), cache: self.shared.clone() };
        runtime.spawn(task.run(stopped));
        let source = Arc::new(JwksSource { url: url.to_owned(), state, _stop: stop });
        sources.retain(|_, s| s.strong_count() > 0);
        sources.insert(url.to_owned(), Arc::downgrade(&source));
        Some(source)
    }

    pub(crate) fn settings(&self) -> JwksSettings {
        self.shared.settings()
    }
}

/// The keys of one URL, kept fresh by a background task that stops when this is
/// dropped.
#[derive(Debug)]
pub struct JwksSource {
    url: String,
    state: Arc<SourceState>,
    _stop: oneshot::Sender<()>,
}

#[derive(Debug)]
struct SourceState {
    keys: watch::Sender<Loaded>,
    /// Wakes the task for a refetch.
    refetch: Notify,
    /// When the last fetch started (or a refetch was granted).
    last_fetch: Mutex<Option<Instant>>,
}

impl Default for SourceState {
    fn default() -> Self {
        SourceState {
            keys: watch::Sender::new(Loaded::default()),
            refetch: Notify::new(),
            last_fetch: Mutex::new(None),
        }
    }
}

/// What the task has to offer.
#[derive(Debug, Clone, Default)]
struct Loaded {
    keys: Option<Arc<KeySet>>,
    /// Whether a first fetch has finished, successfully or not.
    attempted: bool,
}

/// Why no key could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the token's key is not in the issuer's key set")]
    UnknownKey,
    #[error("the issuer's key set could not be fetched")]
    Unavailable,
}

impl JwksSource {
    /// The key for a token signed with `algorithm` naming `kid` (or, without a
    /// `kid`, the set's only key for that algorithm). Waits only for the first
    /// fetch of the URL, at most `first_fetch_wait`. An unknown `kid` asks for a
    /// refetch, granted at most once per `refetch_interval`.
    pub async fn key(
        &self,
        kid: Option<&str>,
        algorithm: JwtAlgorithm,
        first_fetch_wait: Duration,
        refetch_interval: Duration,
    ) -> Result<Arc<DecodingKey>, KeyError> {
        let mut loaded = self.state.keys.borrow().clone();
        if !loaded.attempted {
            let mut rx = self.state.keys.subscribe();
            if let Ok(Ok(first)) = tokio::time::timeout(first_fetch_wait, rx.wait_for(|l| l.attempted)).await {
                loaded = first.clone();
            }
        }
        let keys = loaded.keys.ok_or(KeyError::Unavailable)?;
        match keys.find(kid, algorithm) {
            Some(key) => Ok(key),
            None => {
                if kid.is_some() {
                    self.request_refetch(refetch_interval);
                }
                Err(KeyError::UnknownKey)
            }
        }
    }

    /// Wakes the task for a fetch unless one started less than `interval` ago.
    fn request_refetch(&self, interval: Duration) {
        let now = Instant::now();
        {
            let mut last = lock(&self.state.last_fetch);
            if last.is_some_and(|at| now.duration_since(at) < interval) {
                return;
            }
            // Reserved here, so concurrent requests do not all ask.
            *last = Some(now);
        }
        tracing::debug!(jwks_url = %self.url, "unknown key id; refetching the key set");
        self.state.refetch.notify_one();
    }
}

/// The usable keys of one document.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    keys: Vec<UsableKey>,
}

#[derive(Debug)]
struct UsableKey {
    kid: Option<String>,
    algorithm: JwtAlgorithm,
    key: Arc<DecodingKey>,
}

impl KeySet {
    /// Reads a JWKS document, keeping the keys that can verify RS256 or ES256
    /// signatures. Keys it cannot use are skipped (and counted in the log), so one
    /// odd key does not take the issuer's other keys down.
    pub fn parse(document: &[u8]) -> Result<KeySet, serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let document: Document = serde_json::from_slice(document)?;
        let mut set = KeySet::default();
        let mut skipped = 0;
        for value in document.keys {
            match serde_json::from_value::<Jwk>(value).ok().and_then(|jwk| usable(&jwk)) {
                Some(key) if key.kid.is_some() && set.keys.iter().any(|k| k.kid == key.kid) => skipped += 1,
                Some(key) => set.keys.push(key),
                None => skipped += 1,
            }
        }
        if skipped > 0 {
            tracing::debug!(kept = set.keys.len(), skipped, "skipped unusable or duplicate keys of a key set");
        }
        Ok(set)
    }

    fn find(&self, kid: Option<&str>, algorithm: JwtAlgorithm) -> Option<Arc<DecodingKey>> {
        let mut candidates = self.keys.iter().filter(|k| k.algorithm == algorithm);
        match kid {
            Some(kid) => candidates.find(|k| k.kid.as_deref() == Some(kid)).map(|k| k.key.clone()),
            None => match (candidates.next(), candidates.next()) {
                (Some(only), None) => Some(only.key.clone()),
                _ => None,
            },
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }
}

/// The key a JWK stands for, if it is a signature key for RS256 or ES256.
fn usable(jwk: &Jwk) -> Option<UsableKey> {
    if jwk.common.public_key_use.as_ref().is_some_and(|u| *u != PublicKeyUse::Signature) {
        return None;
    }
    let (algorithm, key) = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let key = DecodingKey::from_rsa_components(&rsa.n, &rsa.e).ok()?;
            let jsonwebtoken::DecodingKeyKind::RsaModulusExponent { n, .. } = key.kind() else { return None };
            let significant = n.iter().skip_while(|b| **b == 0).count();
            (significant >= MIN_RSA_MODULUS_BYTES).then_some((JwtAlgorithm::RS256, key))?
        }
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            let key = DecodingKey::from_ec_components(&ec.x, &ec.y).ok()?;
            // An uncompressed P-256 point: 0x04, then 32 bytes each of x and y.
            (key.try_get_as_bytes().ok()?.len() == 65).then_some((JwtAlgorithm::ES256, key))?
        }
        _ => return None,
    };
    let declared = jwk.common.key_algorithm;
    let fits = match algorithm {
        JwtAlgorithm::RS256 => matches!(declared, None | Some(KeyAlgorithm::RS256)),
        JwtAlgorithm::ES256 => matches!(declared, None | Some(KeyAlgorithm::ES256)),
        JwtAlgorithm::HS256 => false,
    };
    fits.then(|| UsableKey { kid: jwk.common.key_id.clone(), algorithm, key: Arc::new(key) })
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("request failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("timed out")]
    Timeout,
    #[error("answered {0}")]
    Status(http::StatusCode),
    #[error("body could not be read or is too large")]
    Body,
    #[error("not a JWKS document: {0}")]
    Document(#[from] serde_json::Error),
}

/// The background task of one source.
struct Refresher {
    url: String,
    uri: Uri,
    state: Arc<SourceState>,
    cache: Arc<CacheShared>,
}

impl Refresher {
    async fn run(self, mut stopped: oneshot::Receiver<()>) {
        let mut failures: u32 = 0;
        loop {
            let settings = self.cache.settings();
            *lock(&self.state.last_fetch) = Some(Instant::now());
            let outcome = tokio::select! {
                _ = &mut stopped => return,
                outcome = self.fetch(&settings) => outcome,
            };
            let wait = match outcome {
                Ok((keys, ttl)) => {
                    failures = 0;
                    tracing::debug!(jwks_url = %self.url, keys = keys.len(), ttl_s = ttl.as_secs(), "fetched a key set");
                    self.state.keys.send_replace(Loaded { keys: Some(Arc::new(keys)), attempted: true });
                    // Refreshed before it runs out, so requests never see it expire; never
                    // in a tight loop, whatever the settings and the issuer say.
                    ttl.mul_f64(0.8).max(MIN_REFRESH_INTERVAL)
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let keeping = self.state.keys.borrow().keys.is_some();
                    tracing::warn!(jwks_url = %self.url, error = %e, failures, keeping_previous_keys = keeping, "key set fetch failed");
                    self.state.keys.send_modify(|l| l.attempted = true);
                    let backoff = Duration::from_secs(1u64 << failures.min(16).saturating_sub(1));
                    backoff.min(settings.max_retry_interval)
                }
            };
            tokio::select! {
                _ = &mut stopped => return,
                () = tokio::time::sleep(wait) => {}
                () = self.state.refetch.notified() => {}
            }
        }
    }

    async fn fetch(&self, settings: &JwksSettings) -> Result<(KeySet, Duration), FetchError> {
        let client = self.cache.client();
        let request = Request::get(self.uri.clone())
            .header(ACCEPT, "application/json, application/jwk-set+json")
            .header(USER_AGENT, FETCH_USER_AGENT)
            .body(Empty::new())
            .expect("a GET with valid headers");
        let exchange = async {
            let response = client.request(request).await?;
            if !response.status().is_success() {
                return Err(FetchError::Status(response.status()));
            }
            let ttl = lifetime(response.headers(), settings);
            let body = Limited::new(response.into_body(), settings.max_document_bytes);
            let bytes = body.collect().await.map_err(|_| FetchError::Body)?.to_bytes();
            Ok((KeySet::parse(&bytes)?, ttl))
        };
        tokio::time::timeout(settings.fetch_timeout, exchange).await.map_err(|_| FetchError::Timeout)?
    }
}

/// How long a fetched key set lives: `max-age` within the bounds, else the default.
fn lifetime(headers: &HeaderMap, settings: &JwksSettings) -> Duration {
    let mut max_age = None;
    for value in headers.get_all(CACHE_CONTROL) {
        for directive in value.to_str().unwrap_or_default().split(',') {
            let directive = directive.trim();
            let (name, arg) = directive.split_once('=').unwrap_or((directive, ""));
            match name.trim().to_ascii_lowercase().as_str() {
                "max-age" => max_age = arg.trim().trim_matches('"').parse::<u64>().ok().or(max_age),
                "no-cache" | "no-store" => max_age = Some(0),
                _ => {}
            }
        }
    }
    max_age
        .map_or(settings.default_ttl, Duration::from_secs)
        .clamp(settings.min_ttl, settings.max_ttl.max(settings.min_ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> JwksSettings {
        JwksSettings { min_ttl: Duration::from_secs(30), ..Default::default() }
    }

    fn cache_control(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CACHE_CONTROL, HeaderValue::try_from(value).unwrap());
        h
    }

    #[test]
    fn max_age_is_respected_within_bounds() {
        let s = settings();
        assert_eq!(lifetime(&HeaderMap::new(), &s), Duration::from_secs(300));
        assert_eq!(lifetime(&cache_control("public, max-age=3600"), &s), Duration::from_secs(3600));
        assert_eq!(lifetime(&cache_control("max-age=1"), &s), Duration::from_secs(30), "at least min_ttl");
        assert_eq!(lifetime(&cache_control("no-cache"), &s), Duration::from_secs(30));
        assert_eq!(lifetime(&cache_control("max-age=99999999"), &s), Duration::from_secs(24 * 3600));
        assert_eq!(lifetime(&cache_control("max-age=junk"), &s), Duration::from_secs(300));
    }

    fn ec_jwk(kid: &str) -> serde_json::Value {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let raw = key.public_key_raw();
        let b64 = |b: &[u8]| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
        };
        serde_json::json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": b64(&raw[1..33]), "y": b64(&raw[33..])})
    }

    #[test]
    fn only_signature_keys_for_the_supported_algorithms_are_kept() {
        // A 1024-bit modulus: too short to trust.
        let short_n = "sHmaj3EY6AB-Z9ejXJJSZRK435Q61WQCFKbCAu-lx3Z-d5XY-kffFOD7NR73bww4e_C4LzSccaBSglKP_fyyAINvEMQR5cbsT7CsvDxBo7kvDHzn--_jnIHlY2A8ApiY7nTJa8NDTVEH_gWljG9hLi0cFS073PnIhLLrrqsSBL0";
        let short_rsa = serde_json::json!({"kty": "RSA", "kid": "short", "n": short_n, "e": "AQAB"});
        let rsa = jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!("../tests/data/jwt_rsa_a.pem")).unwrap();
        let mut rsa = Jwk::from_encoding_key(&rsa, jsonwebtoken::Algorithm::RS256).unwrap();
        rsa.common.key_id = Some("rsa-1".into());
        let doc = serde_json::json!({"keys": [
            ec_jwk("ec-1"),
            rsa,
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            short_rsa,
            {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc", "x": ec_jwk("x")["x"], "y": ec_jwk("x")["y"]},
            {"kty": "EC", "crv": "P-256", "kid": "es384", "alg": "ES384", "x": ec_jwk("x")["x"], "y": ec_jwk("x")["y"]},
            {"kty": "whatever"},
            ec_jwk("ec-1"),
        ]});
        let set = KeySet::parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 2, "{set:?}");
        assert!(set.find(Some("rsa-1"), JwtAlgorithm::RS256).is_some());
        assert!(set.find(Some("ec-1"), JwtAlgorithm::ES256).is_some());
        assert!(set.find(Some("ec-1"), JwtAlgorithm::RS256).is_none(), "keys serve their own algorithm only");
        assert!(set.find(None, JwtAlgorithm::ES256).is_some(), "without a kid, the only key");
        assert!(set.find(Some("hmac"), JwtAlgorithm::HS256).is_none());
        assert!(KeySet::parse(b"{\"keys\": 1}").is_err());
        assert!(KeySet::parse(b"<html>").is_err());
    }

    #[test]
    fn without_a_kid_only_a_sole_key_is_chosen() {
        let doc = serde_json::json!({"keys": [ec_jwk("a"), ec_jwk("b")]});
        let set = KeySet::parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(set.len(), 2);
        assert!(set.find(None, JwtAlgorithm::ES256).is_none());
        assert!(set.find(Some("b"), JwtAlgorithm::ES256).is_some());
    }

    /// A loopback URL where nothing listens.
    async fn refused_url() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        format!("http://{}/jwks", listener.local_addr().unwrap())
    }

    #[tokio::test]
    async fn sources_are_shared_by_url_and_stop_with_their_last_holder() {
        let cache = JwksCache::default();
        let url = refused_url().await;
        let a = cache.source(&url).unwrap();
        let again = cache.source(&url).unwrap();
        assert!(Arc::ptr_eq(&a, &again));
        let state = Arc::downgrade(&a.state);
        drop((a, again));
        // The task holds the state until it sees the stop; it then ends and lets go.
        for _ in 0..200 {
            if state.strong_count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(state.strong_count(), 0, "the refresher stopped");
        // A later configuration naming the URL gets a new source, then shares it.
        let fresh = cache.source(&url).unwrap();
        assert!(Arc::ptr_eq(&fresh, &cache.source(&url).unwrap()));
    }

    #[tokio::test]
    async fn an_unreachable_issuer_answers_unavailable_after_the_first_attempt() {
        let cache = JwksCache::default();
        cache.set_settings(JwksSettings { fetch_timeout: Duration::from_millis(500), ..cache.settings() });
        let source = cache.source(&refused_url().await).unwrap();
        let wait = Duration::from_secs(5);
        let err = source.key(Some("k"), JwtAlgorithm::RS256, wait, Duration::from_secs(30)).await.unwrap_err();
        assert_eq!(err, KeyError::Unavailable);
        let started = Instant::now();
        let err = source.key(Some("k"), JwtAlgorithm::RS256, wait, Duration::from_secs(30)).await.unwrap_err();
        assert_eq!(err, KeyError::Unavailable);
        assert!(started.elapsed() < Duration::from_millis(100), "no waiting once the first fetch failed");
    }
}
