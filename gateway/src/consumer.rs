//! Who is calling: API-key authentication and the limits that follow from it.
//!
//! A key is looked up by its keyed hash (HMAC under the server secret, as the
//! control plane stores it) and must belong to an approved subscription of the
//! called version. The caller then becomes the
//! request's consumer, forwarded upstream in `X-Consumer-*` headers that clients can
//! never set themselves. Limits apply per consumer (or per client IP without one):
//! the version's own rate limit, then the plan's rate limit and quota.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::WWW_AUTHENTICATE;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Uri};
use turnpike_bus::credentials::{CredentialStore, InProcessCredentials};
use turnpike_domain::policy::KeyAuth;
use turnpike_domain::secrets::KeyHasher;

use crate::config::{CompiledConfig, RoutedVersion};
use crate::error::{ErrorKind, GatewayError};
use crate::ratelimit::{Decision, Limiter, LocalLimiter};

/// The gateway's access to credentials and counters; shared by every request.
pub struct Consumers {
    pub credentials: Arc<dyn CredentialStore>,
    /// The server secret's hasher; without it no key can be checked (401 for all).
    pub hasher: Option<KeyHasher>,
    pub limiter: Arc<dyn Limiter>,
}

impl Default for Consumers {
    fn default() -> Self {
        Consumers {
            credentials: Arc::new(InProcessCredentials::new()),
            hasher: None,
            limiter: Arc::new(LocalLimiter::default()),
        }
    }
}

impl std::fmt::Debug for Consumers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumers").field("has_secret", &self.hasher.is_some()).finish_non_exhaustive()
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub key_id: String,
    pub application_id: String,
    pub developer_id: String,
    pub plan_id: String,
}

pub const CONSUMER_KEY_ID: HeaderName = HeaderName::from_static("x-consumer-key-id");
pub const CONSUMER_APPLICATION_ID: HeaderName = HeaderName::from_static("x-consumer-application-id");
pub const CONSUMER_DEVELOPER_ID: HeaderName = HeaderName::from_static("x-consumer-developer-id");
pub const CONSUMER_PLAN_ID: HeaderName = HeaderName::from_static("x-consumer-plan-id");

/// Removes every `X-Consumer-*` header a client sent: upstreams may trust them only
/// because the gateway alone sets them.
pub fn strip_consumer_headers(headers: &mut HeaderMap) {
    let spoofed: Vec<HeaderName> = headers.keys().filter(|n| n.as_str().starts_with("x-consumer-")).cloned().collect();
    for name in spoofed {
        headers.remove(name);
    }
}

/// Takes the key out of the request (header, or query parameter when allowed), so
/// that it never reaches the upstream or its logs.
fn take_key<B>(req: &mut Request<B>, auth: &KeyAuth) -> Option<String> {
    if let Some(value) = req.headers_mut().remove(auth.header.as_str()) {
        return value.to_str().ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    }
    let param = auth.query.as_deref()?;
    let query = req.uri().query()?;
    let mut key = None;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or_default();
            if name == param && key.is_none() {
                key = pair.split_once('=').map(|(_, v)| v.to_owned());
                return false;
            }
            true
        })
        .collect();
    let key = key.filter(|k| !k.is_empty())?;
    let path = req.uri().path();
    let rebuilt = if kept.is_empty() { path.to_owned() } else { format!("{path}?{}", kept.join("&")) };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = rebuilt.parse().ok();
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    Some(key)
}

fn challenge(auth: &KeyAuth) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::try_from(format!("ApiKey header=\"{}\"", auth.header)) {
        h.insert(WWW_AUTHENTICATE, v);
    }
    h
}

/// The authentication phase: `None` when the version does not require keys.
pub(crate) fn authenticate<B>(
    req: &mut Request<B>,
    version: &RoutedVersion,
    consumers: &Consumers,
) -> Result<Option<Consumer>, GatewayError> {
    strip_consumer_headers(req.headers_mut());
    let Some(auth) = &version.policies.key_auth else { return Ok(None) };
    let key =
        take_key(req, auth).ok_or_else(|| GatewayError::from(ErrorKind::MissingKey).with_headers(challenge(auth)))?;
    let invalid = || GatewayError::from(ErrorKind::InvalidKey).with_headers(challenge(auth));
    let hasher = consumers.hasher.as_ref().ok_or_else(invalid)?;
    let hash = hasher.hash(&key);
    // The lookup compares keyed hashes, never keys: what its timing could reveal is
    // an HMAC output, which says nothing about any stored key.
    let credential = consumers.credentials.get(&hash).ok_or_else(invalid)?;
    if credential.is_expired(chrono::Utc::now()) {
        return Err(invalid());
    }
    let plan_id = credential.plan_for(&version.id).ok_or(ErrorKind::NotSubscribed)?;
    let consumer = Consumer {
        key_id: credential.key_id.clone(),
        application_id: credential.application_id.clone(),
        developer_id: credential.developer_id.clone(),
        plan_id: plan_id.to_owned(),
    };
    let headers = req.headers_mut();
    for (name, value) in [
        (CONSUMER_KEY_ID, &consumer.key_id),
        (CONSUMER_APPLICATION_ID, &consumer.application_id),
        (CONSUMER_DEVELOPER_ID, &consumer.developer_id),
        (CONSUMER_PLAN_ID, &consumer.plan_id),
    ] {
        if let Ok(v) = HeaderValue::try_from(value.as_str()) {
            headers.insert(name, v);
        }
    }
    Ok(Some(consumer))
}

/// The limits phase. Returns the decision to report in `RateLimit-*` headers (the
/// one with the least room left), or the refusal.
pub(crate) fn limit(
    config: &CompiledConfig,
    version: &RoutedVersion,
    consumer: Option<&Consumer>,
    client_ip: IpAddr,
    limiter: &dyn Limiter,
) -> Result<Option<Decision>, GatewayError> {
    let now = Instant::now();
    let caller = match consumer {
        Some(c) => format!("app:{}", c.application_id),
        None => format!("ip:{client_ip}"),
    };
    let mut tightest: Option<Decision> = None;
    let mut check = |decision: Decision, refusal: ErrorKind| -> Result<(), GatewayError> {
        if !decision.allowed {
            return Err(GatewayError::from(refusal).with_headers(decision.headers()));
        }
        if tightest.is_none_or(|t| decision.remaining < t.remaining) {
            tightest = Some(decision);
        }
        Ok(())
    };
    if let Some(rate) = version.policies.rate_limit {
        check(limiter.rate(&format!("version:{}:{caller}", version.id), rate, now), ErrorKind::RateLimited)?;
    }
    if let Some(plan) = consumer.and_then(|c| config.plans.get(&c.plan_id)) {
        if let Some(rate) = plan.rate_limit {
            check(limiter.rate(&format!("plan:{}:{caller}", plan.id), rate, now), ErrorKind::RateLimited)?;
        }
        if let Some(quota) = plan.quota {
            check(
                limiter.quota(&format!("quota:{}:{caller}", plan.id), quota, chrono::Utc::now()),
                ErrorKind::QuotaExceeded,
            )?;
        }
    }
    Ok(tightest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn the_key_is_taken_from_the_header_and_removed() {
        let auth = KeyAuth::default();
        let mut req = request("/p?a=1", &[("x-api-key", " tpk_k ")]);
        assert_eq!(take_key(&mut req, &auth).as_deref(), Some("tpk_k"));
        assert!(req.headers().get("x-api-key").is_none());
        assert_eq!(req.uri().query(), Some("a=1"));
    }

    #[test]
    fn a_query_key_is_accepted_only_when_configured_and_removed_from_the_uri() {
        let mut req = request("/p?apikey=tpk_q&a=1", &[]);
        assert_eq!(take_key(&mut req, &KeyAuth::default()), None);
        let auth = KeyAuth { query: Some("apikey".into()), ..Default::default() };
        assert_eq!(take_key(&mut req, &auth).as_deref(), Some("tpk_q"));
        assert_eq!(req.uri().to_string(), "/p?a=1");
        let mut only = request("/p?apikey=tpk_q", &[]);
        assert_eq!(take_key(&mut only, &auth).as_deref(), Some("tpk_q"));
        assert_eq!(only.uri().to_string(), "/p");
    }

    #[test]
    fn spoofed_consumer_headers_are_stripped() {
        let mut req = request("/", &[("x-consumer-application-id", "someone-else"), ("x-consumerish", "kept")]);
        strip_consumer_headers(req.headers_mut());
        assert!(req.headers().get("x-consumer-application-id").is_none());
        assert!(req.headers().get("x-consumerish").is_some());
    }
}
