//! Policies an API owner attaches to a version: who may call it, from where, how
//! often, and what the gateway does to requests and responses on the way. The
//! gateway runs them in the order documented in its `pipeline.rs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::RateLimit;

mod jwt;
pub use jwt::{InvalidSecret, JwtAlgorithm, JwtPolicy, JwtSecret, SecretEncoding};

/// Every policy of a version; all are off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Policies {
    /// Require an API key belonging to an approved subscription of the version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_auth: Option<KeyAuth>,
    /// Require a signed JSON Web Token. With `key_auth` too, both are required: the
    /// key names the application (plan, limits), the token the user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtPolicy>,
    /// Client IP allow and deny lists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpRules>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
    /// A limit for every caller of the version (per consumer when keys are required,
    /// else per client IP), on top of the limits of the caller's plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// Largest request body accepted, in bytes (413 beyond it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Response caching of GET and HEAD.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<Cache>,
    /// Validate requests against the version's stored OpenAPI document.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub validate_requests: bool,
    #[serde(skip_serializing_if = "HeaderTransform::is_empty")]
    pub request_headers: HeaderTransform,
    #[serde(skip_serializing_if = "HeaderTransform::is_empty")]
    pub response_headers: HeaderTransform,
}

/// Where the gateway looks for an API key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct KeyAuth {
    /// Request header carrying the key.
    pub header: String,
    /// Query parameter carrying the key, if allowed at all (keys in URLs end up in logs).
    pub query: Option<String>,
}

impl Default for KeyAuth {
    fn default() -> Self {
        KeyAuth { header: "x-api-key".into(), query: None }
    }
}

/// CIDR lists (`10.0.0.0/8`, `2001:db8::/32`, or single addresses). Deny wins; a
/// non-empty allow list refuses everything it does not contain.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct IpRules {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// Cross-origin resource sharing, answered by the gateway (including preflights).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Cors {
    /// Allowed origins (`https://app.example.com`), or `*` for any.
    pub origins: Vec<String>,
    pub methods: Vec<String>,
    pub headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub credentials: bool,
    pub max_age_seconds: u32,
}

impl Default for Cors {
    fn default() -> Self {
        Cors {
            origins: vec![],
            methods: vec!["GET".into(), "HEAD".into(), "POST".into(), "PUT".into(), "PATCH".into(), "DELETE".into()],
            headers: vec![],
            expose_headers: vec![],
            credentials: false,
            max_age_seconds: 600,
        }
    }
}

/// Response caching for GET and HEAD, honouring `Cache-Control`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Cache {
    /// Lifetime of an entry when the upstream does not say (`max-age`/`s-maxage` win).
    pub ttl_seconds: u32,
    /// Largest response body kept, in bytes.
    pub max_body_bytes: u64,
}

impl Default for Cache {
    fn default() -> Self {
        Cache { ttl_seconds: 60, max_body_bytes: 1024 * 1024 }
    }
}

/// Header changes applied in order: remove, then set (replace), then add (append).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct HeaderTransform {
    pub remove: Vec<String>,
    pub set: BTreeMap<String, String>,
    pub add: BTreeMap<String, String>,
}

impl HeaderTransform {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

/// Checks every policy, naming each bad field (`policies.ip.allow[0]`…).
pub fn validate(p: &Policies) -> Result<(), Vec<crate::validate::ValidationError>> {
    use crate::validate::{self, ValidationError, Validator};
    let mut v = Validator::new();
    if let Some(k) = &p.key_auth {
        v.check(validate::header_name("policies.key_auth.header", &k.header));
        if let Some(q) = &k.query
            && (q.is_empty() || q.len() > 64 || !q.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        {
            v.check(Err(ValidationError::new(
                "policies.key_auth.query",
                "must be 1-64 letters, digits, '-', '_' or '.'",
            )));
        }
    }
    if let Some(jwt) = &p.jwt {
        jwt::validate(&mut v, jwt, p.key_auth.as_ref());
    }
    if let Some(ip) = &p.ip {
        for (list, entries) in [("allow", &ip.allow), ("deny", &ip.deny)] {
            for (i, cidr) in entries.iter().enumerate() {
                if parse_cidr(cidr).is_none() {
                    v.check(Err(ValidationError::new(
                        format!("policies.ip.{list}[{i}]"),
                        format!("{cidr:?} is not an IP address or CIDR block"),
                    )));
                }
            }
        }
    }
    if let Some(cors) = &p.cors {
        for (i, origin) in cors.origins.iter().enumerate() {
            let ok = origin == "*"
                || ((origin.starts_with("https://") || origin.starts_with("http://"))
                    && !origin.ends_with('/')
                    && !origin.contains(char::is_whitespace));
            if !ok {
                v.check(Err(ValidationError::new(
                    format!("policies.cors.origins[{i}]"),
                    "must be `*` or a scheme and host like https://app.example.com",
                )));
            }
        }
        v.check(validate::methods("policies.cors.methods", &cors.methods));
        for (i, h) in cors.headers.iter().chain(&cors.expose_headers).enumerate() {
            v.check(validate::header_name(&format!("policies.cors.headers[{i}]"), h));
        }
        if cors.credentials && cors.origins.iter().any(|o| o == "*") {
            v.check(Err(ValidationError::new("policies.cors.credentials", "cannot be combined with the origin `*`")));
        }
    }
    if let Some(r) = &p.rate_limit {
        v.check(validate::rate_limit("policies.rate_limit", r));
    }
    if p.max_body_bytes == Some(0) {
        v.check(Err(ValidationError::new("policies.max_body_bytes", "must be at least 1")));
    }
    if let Some(c) = &p.cache
        && c.ttl_seconds == 0
    {
        v.check(Err(ValidationError::new("policies.cache.ttl_seconds", "must be at least 1")));
    }
    for (side, t) in [("request_headers", &p.request_headers), ("response_headers", &p.response_headers)] {
        for name in t.remove.iter().chain(t.set.keys()).chain(t.add.keys()) {
            v.check(validate::header_name(&format!("policies.{side}"), name));
        }
        for value in t.set.values().chain(t.add.values()) {
            v.check(validate::header_value(&format!("policies.{side}"), value));
        }
    }
    v.finish()
}

/// Parses `addr` or `addr/len` into the network address and prefix length.
pub fn parse_cidr(text: &str) -> Option<(std::net::IpAddr, u8)> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: std::net::IpAddr = addr.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) if !l.is_empty() && l.chars().all(|c| c.is_ascii_digit()) => l.parse::<u8>().ok()?,
        Some(_) => return None,
        None => max,
    };
    (len <= max).then_some((addr, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policies_are_valid_and_serialize_to_nothing() {
        assert_eq!(validate(&Policies::default()), Ok(()));
        assert_eq!(serde_json::to_string(&Policies::default()).unwrap(), "{}");
    }

    #[test]
    fn cidrs_parse_and_bad_ones_are_named() {
        assert_eq!(parse_cidr("10.0.0.0/8"), Some(("10.0.0.0".parse().unwrap(), 8)));
        assert_eq!(parse_cidr("::1"), Some(("::1".parse().unwrap(), 128)));
        for bad in ["10.0.0.0/33", "10.0.0/8", "x", "1.2.3.4/", "1.2.3.4/-1"] {
            assert_eq!(parse_cidr(bad), None, "{bad}");
        }
        let p = Policies {
            ip: Some(IpRules { allow: vec!["10.0.0.0/8".into(), "nope".into()], deny: vec![] }),
            ..Default::default()
        };
        let errors = validate(&p).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "policies.ip.allow[1]");
    }

    #[test]
    fn cors_credentials_with_any_origin_is_refused() {
        let p = Policies {
            cors: Some(Cors { origins: vec!["*".into()], credentials: true, ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(validate(&p).unwrap_err()[0].field, "policies.cors.credentials");
    }
}
