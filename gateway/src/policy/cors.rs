//! Cross-origin resource sharing, answered by the gateway. Preflights (`OPTIONS` with
//! `Origin` and `Access-Control-Request-Method`) never reach the upstream: they get
//! 204 with the `Access-Control-Allow-*` headers, or 403 when the origin, method or a
//! requested header is not allowed. Other requests from an allowed origin get
//! `Access-Control-Allow-Origin` and friends on their response; from any other origin
//! they are still forwarded, just without CORS headers, so the browser withholds the
//! response from the calling page. When a version has a CORS policy the gateway owns
//! these headers: the upstream's are replaced.
//!
//! The developer portal's interactive docs ("try it") call the gateway from the
//! portal's origin, so the gateway setting `docs_origins` ([`Origin`]s) gets CORS on
//! every version, with or without a policy ([`VersionCors`]): a request from a docs
//! origin is decided by the docs rules (the standard methods, the headers the docs
//! send: `accept`, `content-type`, `authorization`, the version's API-key and JWT
//! headers; plus what the version's own policy allows; never credentials, since the
//! docs send keys in headers, not cookies). Other origins get the version's policy,
//! or, without one, nothing: their requests are handled as if CORS did not exist.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use std::fmt;
use std::str::FromStr;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use turnpike_domain::policy::{Cors as CorsSpec, Policies};

/// The method a CORS preflight asks about, if `method` and `headers` make a preflight.
pub fn preflight_method(method: &Method, headers: &HeaderMap) -> Option<Method> {
    if method != Method::OPTIONS || !headers.contains_key(ORIGIN) {
        return None;
    }
    Method::from_bytes(headers.get(ACCESS_CONTROL_REQUEST_METHOD)?.as_bytes()).ok()
}

/// Why a preflight was refused (for the log; the client only sees 403).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("origin not allowed")]
    Origin,
    #[error("method not allowed")]
    Method,
    #[error("request header {0:?} not allowed")]
    Header(String),
}

/// What the CORS phase decided for a request that is not a preflight; applied to its
/// response (whatever produced it) by [`Cors::decorate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actual {
    /// The `Access-Control-Allow-Origin` value, when the origin is allowed.
    allow_origin: Option<HeaderValue>,
    /// Whether the docs rules decided (see [`VersionCors`]), else the version's policy.
    docs: bool,
    /// Neither decided (not a docs origin, no policy): the response only says it
    /// varies by `Origin`, since a docs origin would have had CORS headers.
    vary_only: bool,
}

/// A version's compiled CORS policy.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Lower-cased allowed origins; `None` means any (`*`).
    origins: Option<Vec<String>>,
    methods: Vec<Method>,
    /// Lower-cased allowed request header names.
    headers: Vec<HeaderName>,
    allow_methods: Option<HeaderValue>,
    allow_headers: Option<HeaderValue>,
    expose_headers: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

const WILDCARD: HeaderValue = HeaderValue::from_static("*");
const TRUE: HeaderValue = HeaderValue::from_static("true");

impl Cors {
    pub fn compile(spec: &CorsSpec, version_id: &str) -> Cors {
        let skip = |what: &str, entry: &str| {
            tracing::warn!(version = version_id, what, entry, "left out an unusable CORS entry");
        };
        let any = spec.origins.iter().any(|o| o == "*");
        let mut credentials = spec.credentials;
        if any && credentials {
            // The control plane refuses this; a wildcard must never carry credentials.
            skip("credentials", "cannot be combined with the origin `*`");
            credentials = false;
        }
        let methods: Vec<Method> = spec
            .methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.as_bytes()).inspect_err(|_| skip("method", m)).ok())
            .collect();
        let names = |list: &[String]| -> Vec<HeaderName> {
            list.iter()
                .filter_map(|h| HeaderName::try_from(h.as_str()).inspect_err(|_| skip("header", h)).ok())
                .collect()
        };
        let headers = names(&spec.headers);
        let expose = names(&spec.expose_headers);
        Cors {
            origins: (!any).then(|| spec.origins.iter().map(|o| o.to_ascii_lowercase()).collect()),
            allow_methods: joined(methods.iter().map(Method::as_str)),
            allow_headers: joined(headers.iter().map(HeaderName::as_str)),
            expose_headers: joined(expose.iter().map(HeaderName::as_str)),
            methods,
            headers,
            credentials,
            max_age: HeaderValue::from(spec.max_age_seconds),
        }
    }

    /// The `Access-Control-Allow-Origin` value for the request's `Origin`, if allowed.
    fn allow_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = headers.get(ORIGIN)?;
        match &self.origins {
            None => Some(WILDCARD),
            Some(list) => {
                let text = origin.to_str().ok()?;
                list.iter().any(|o| o.eq_ignore_ascii_case(text)).then(|| origin.clone())
            }
        }
    }

    /// Whether the request's `Origin` is one of the listed origins (never true for `*`).
    fn lists_origin(&self, headers: &HeaderMap) -> bool {
        let (Some(list), Some(origin)) = (&self.origins, headers.get(ORIGIN)) else { return false };
        let Ok(text) = origin.to_str() else { return false };
        list.iter().any(|o| o.eq_ignore_ascii_case(text))
    }

    /// Answers a preflight: the headers of the 204, or why it is refused.
    pub fn preflight(&self, headers: &HeaderMap) -> Result<HeaderMap, Refusal> {
        let allow_origin = self.allow_origin(headers).ok_or(Refusal::Origin)?;
        let method = preflight_method(&Method::OPTIONS, headers).ok_or(Refusal::Method)?;
        if !self.methods.contains(&method) {
            return Err(Refusal::Method);
        }
        for value in headers.get_all(ACCESS_CONTROL_REQUEST_HEADERS) {
            let list = value.to_str().map_err(|_| Refusal::Header(String::from_utf8_lossy(value.as_bytes()).into()))?;
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if !self.headers.iter().any(|h| h.as_str().eq_ignore_ascii_case(name)) {
                    return Err(Refusal::Header(name.to_owned()));
                }
            }
        }
        let mut out = HeaderMap::new();
        out.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if self.credentials {
            out.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
        }
        if let Some(methods) = &self.allow_methods {
            out.insert(ACCESS_CONTROL_ALLOW_METHODS, methods.clone());
        }
        if let Some(allowed) = &self.allow_headers {
            out.insert(ACCESS_CONTROL_ALLOW_HEADERS, allowed.clone());
        }
        out.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        // The answer depends on all three, so no cache may reuse it for other values.
        out.insert(
            VARY,
            HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        );
        Ok(out)
    }

    /// Decides what the response to a request that is not a preflight will carry.
    pub fn actual(&self, headers: &HeaderMap) -> Actual {
        Actual { allow_origin: self.allow_origin(headers), docs: false, vary_only: false }
    }

    /// Puts the CORS headers `actual` calls for on a response, replacing any the
    /// upstream sent.
    pub fn decorate(&self, actual: &Actual, headers: &mut HeaderMap) {
        for name in [
            ACCESS_CONTROL_ALLOW_ORIGIN,
            ACCESS_CONTROL_ALLOW_CREDENTIALS,
            ACCESS_CONTROL_EXPOSE_HEADERS,
            ACCESS_CONTROL_ALLOW_METHODS,
            ACCESS_CONTROL_ALLOW_HEADERS,
            ACCESS_CONTROL_MAX_AGE,
        ] {
            headers.remove(name);
        }
        if let Some(origin) = &actual.allow_origin {
            headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            if self.credentials {
                headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE);
            }
            if let Some(expose) = &self.expose_headers {
                headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
            }
        }
        // Unless every origin gets `*`, the response depends on `Origin`: say so on
        // every response (allowed or not), so no cache serves one origin's answer to another.
        if self.origins.is_some() && !varies_on(headers, "origin") {
            headers.append(VARY, HeaderValue::from_static("Origin"));
        }
    }
}

/// Methods the docs origins may use on every version (a route must still take the
/// method: a preflight is routed as the request it announces).
const DOCS_METHODS: [&str; 6] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];

/// Request headers the interactive docs send besides the version's credential headers.
const DOCS_HEADERS: [&str; 3] = ["accept", "content-type", "authorization"];

/// Response headers of the gateway's own that the docs may show: the request id, rate
/// limits, lifecycle and cache status.
const DOCS_EXPOSED: [&str; 10] = [
    "x-request-id",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "ratelimit-policy",
    "retry-after",
    "deprecation",
    "sunset",
    "link",
    "x-cache",
];

/// A version's CORS: its own policy, and the docs rules for the gateway's
/// `docs_origins`. Compiled once per snapshot; `None` on a version when it has neither.
#[derive(Debug, Clone)]
pub struct VersionCors {
    policy: Option<Cors>,
    docs: Option<Cors>,
}

impl VersionCors {
    /// Compiles a version's CORS; `docs_origins` get the docs rules ([`docs_spec`]),
    /// which also allow `document_headers` (the headers its OpenAPI document names).
    pub fn compile(
        policies: &Policies,
        document_headers: &[String],
        docs_origins: &[Origin],
        version_id: &str,
    ) -> Option<VersionCors> {
        let policy = policies.cors.as_ref().map(|spec| Cors::compile(spec, version_id));
        let docs = (!docs_origins.is_empty())
            .then(|| Cors::compile(&docs_spec(policies, document_headers, docs_origins), version_id));
        (policy.is_some() || docs.is_some()).then_some(VersionCors { policy, docs })
    }

    /// The rules deciding for the request's `Origin`: the docs rules for a docs origin,
    /// else the version's policy, else none. Costs an `Origin` lookup and, with docs
    /// origins, a comparison with each; nothing is allocated.
    fn rules(&self, headers: &HeaderMap) -> Option<(&Cors, bool)> {
        match &self.docs {
            Some(docs) if docs.lists_origin(headers) => Some((docs, true)),
            _ => self.policy.as_ref().map(|policy| (policy, false)),
        }
    }

    /// Whether the gateway answers this request's preflights itself: always with a
    /// policy, else only for a docs origin.
    pub fn answers(&self, headers: &HeaderMap) -> bool {
        self.rules(headers).is_some()
    }

    /// Answers a preflight, or `None` when the gateway does not (no policy, and not a
    /// docs origin): the request is then an ordinary `OPTIONS`.
    pub fn preflight(&self, headers: &HeaderMap) -> Option<Result<HeaderMap, Refusal>> {
        self.rules(headers).map(|(rules, _)| rules.preflight(headers))
    }

    /// What the response of a request that is not a preflight will carry. Without a
    /// policy and from another origin than the docs', the response keeps its own CORS
    /// headers and only gains `Vary: Origin`.
    pub fn actual(&self, headers: &HeaderMap) -> Option<Actual> {
        match self.rules(headers) {
            Some((rules, docs)) => Some(Actual { docs, ..rules.actual(headers) }),
            None => Some(Actual { allow_origin: None, docs: false, vary_only: true }),
        }
    }

    /// Puts the CORS headers `actual` calls for on a response (see [`Cors::decorate`]).
    /// With docs origins every response says it varies by `Origin` (a docs origin gets
    /// other headers than anyone else), so no cache serves one origin's answer to another.
    pub fn decorate(&self, actual: &Actual, headers: &mut HeaderMap) {
        let rules = if actual.docs { &self.docs } else { &self.policy };
        if let (Some(rules), false) = (rules, actual.vary_only) {
            rules.decorate(actual, headers);
        }
        if self.docs.is_some() && !varies_on(headers, "origin") {
            headers.append(VARY, HeaderValue::from_static("Origin"));
        }
    }
}

/// The docs rules of a version, as a policy: the docs origins, the standard methods
/// and the headers the docs send (the version's API-key and JWT headers included),
/// each with what the version's own policy adds; its exposed headers and preflight
/// lifetime; never credentials.
pub fn docs_spec(policies: &Policies, document_headers: &[String], docs_origins: &[Origin]) -> CorsSpec {
    let own = policies.cors.as_ref();
    let mut methods: Vec<String> = DOCS_METHODS.iter().map(|m| (*m).to_owned()).collect();
    for m in own.map(|c| c.methods.as_slice()).unwrap_or_default() {
        if !methods.iter().any(|known| known.eq_ignore_ascii_case(m)) {
            methods.push(m.clone());
        }
    }
    let credentials = [policies.key_auth.as_ref().map(|k| &k.header), policies.jwt.as_ref().map(|j| &j.header)];
    let mut headers: Vec<String> = Vec::new();
    let named = DOCS_HEADERS.iter().copied().chain(credentials.into_iter().flatten().map(String::as_str));
    let own_headers = own.map(|c| c.headers.as_slice()).unwrap_or_default();
    for name in named.chain(document_headers.iter().chain(own_headers).map(String::as_str)) {
        if !headers.iter().any(|known| known.eq_ignore_ascii_case(name)) {
            headers.push(name.to_ascii_lowercase());
        }
    }
    CorsSpec {
        origins: docs_origins.iter().map(|o| o.as_str().to_owned()).collect(),
        methods,
        headers,
        expose_headers: merged(&DOCS_EXPOSED, own.map(|c| c.expose_headers.as_slice()).unwrap_or_default()),
        credentials: false,
        max_age_seconds: own.map_or(CorsSpec::default().max_age_seconds, |c| c.max_age_seconds),
    }
}

/// `base` then the names of `extra` not in it, lower-cased.
fn merged(base: &[&str], extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = base.iter().map(|n| (*n).to_owned()).collect();
    for name in extra {
        if !names.iter().any(|known| known.eq_ignore_ascii_case(name)) {
            names.push(name.to_ascii_lowercase());
        }
    }
    names
}

/// A web origin as browsers send it in `Origin`: `scheme://host[:port]`, http or
/// https, no path, lower-cased, the scheme's default port left out. Parsed from the
/// gateway setting `docs_origins`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Origin(String);

/// Why a text is not an [`Origin`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not an origin: {reason}; expected scheme://host[:port] such as https://portal.example.com")]
pub struct InvalidOrigin {
    text: String,
    reason: &'static str,
}

impl Origin {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn parse(text: &str) -> Result<Origin, &'static str> {
        if text == "*" {
            return Err("`*` is not allowed, name the origins");
        }
        let (scheme, authority) = text.split_once("://").ok_or("the scheme is missing")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err("the scheme must be http or https"),
        };
        if authority.contains(['/', '?', '#']) {
            return Err("an origin has no path (not even `/`), query or fragment");
        }
        if authority.contains('@') {
            return Err("an origin has no user name or password");
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(rest) => {
                let (inner, after) = rest.split_once(']').ok_or("an IPv6 address lacks its `]`")?;
                if inner.is_empty() || !inner.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') {
                    return Err("invalid IPv6 address");
                }
                let port = match after {
                    "" => None,
                    _ => Some(after.strip_prefix(':').ok_or("invalid characters after the IPv6 address")?),
                };
                (&authority[..inner.len() + 2], port)
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Err("the host is missing");
        }
        if !host.starts_with('[') && !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')) {
            return Err("invalid host");
        }
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n != 0 && p.chars().all(|c| c.is_ascii_digit()) => (n != default_port).then_some(n),
                _ => return Err("invalid port"),
            },
        };
        let host = host.to_ascii_lowercase();
        Ok(Origin(match port {
            Some(port) => format!("{scheme}://{host}:{port}"),
            None => format!("{scheme}://{host}"),
        }))
    }
}

impl FromStr for Origin {
    type Err = InvalidOrigin;

    fn from_str(text: &str) -> Result<Origin, InvalidOrigin> {
        Origin::parse(text).map_err(|reason| InvalidOrigin { text: text.to_owned(), reason })
    }
}

impl TryFrom<String> for Origin {
    type Error = InvalidOrigin;

    fn try_from(text: String) -> Result<Origin, InvalidOrigin> {
        text.parse()
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `a, b, c`, or `None` for an empty list.
fn joined<'a>(items: impl Iterator<Item = &'a str>) -> Option<HeaderValue> {
    let text = items.collect::<Vec<_>>().join(", ");
    if text.is_empty() { None } else { HeaderValue::try_from(text).ok() }
}

/// Whether the `Vary` headers already name `name` (or `*`).
fn varies_on(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all(VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|t| t == "*" || t.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        Cors::compile(
            &CorsSpec {
                origins: origins.iter().map(|s| s.to_string()).collect(),
                methods: vec!["GET".into(), "PUT".into()],
                headers: vec!["X-Token".into(), "content-type".into()],
                expose_headers: vec!["x-total".into(), "etag".into()],
                credentials,
                max_age_seconds: 300,
            },
            "v",
        )
    }

    fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn preflights_are_recognized_only_with_origin_and_requested_method() {
        let h = request(&[("origin", "https://app.example"), ("access-control-request-method", "PUT")]);
        assert_eq!(preflight_method(&Method::OPTIONS, &h), Some(Method::PUT));
        assert_eq!(preflight_method(&Method::GET, &h), None);
        assert_eq!(preflight_method(&Method::OPTIONS, &request(&[("origin", "https://app.example")])), None);
        assert_eq!(preflight_method(&Method::OPTIONS, &request(&[("access-control-request-method", "PUT")])), None);
    }

    #[test]
    fn allowed_preflights_get_the_allow_headers() {
        let c = cors(&["https://App.example"], true);
        let h = c
            .preflight(&request(&[
                ("origin", "https://app.example"),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-token, Content-Type"),
            ]))
            .unwrap();
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "GET, PUT");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], "x-token, content-type");
        assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "300");
        assert!(h[VARY].to_str().unwrap().starts_with("Origin"));
    }

    #[test]
    fn preflights_with_a_foreign_origin_method_or_header_are_refused() {
        let c = cors(&["https://app.example"], false);
        let ask = |origin: &'static str, method: &'static str, headers: &'static str| {
            c.preflight(&request(&[
                ("origin", origin),
                ("access-control-request-method", method),
                ("access-control-request-headers", headers),
            ]))
        };
        assert_eq!(ask("https://evil.example", "GET", ""), Err(Refusal::Origin));
        assert_eq!(ask("https://app.example.evil", "GET", ""), Err(Refusal::Origin));
        assert_eq!(ask("https://app.example", "DELETE", ""), Err(Refusal::Method));
        assert_eq!(ask("https://app.example", "GET", "x-token, x-admin"), Err(Refusal::Header("x-admin".into())));
        assert!(ask("https://app.example", "GET", " , ").is_ok());
    }

    #[test]
    fn allowed_origins_get_cors_headers_and_others_only_vary() {
        let c = cors(&["https://app.example"], true);
        let mut upstream = request(&[("access-control-allow-origin", "*"), ("vary", "Accept-Encoding")]);
        c.decorate(&c.actual(&request(&[("origin", "https://app.example")])), &mut upstream);
        assert_eq!(upstream[ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example", "the upstream's value is replaced");
        assert_eq!(upstream[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(upstream[ACCESS_CONTROL_EXPOSE_HEADERS], "x-total, etag");
        let vary: Vec<_> = upstream.get_all(VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"]);

        let mut foreign = request(&[("access-control-allow-origin", "https://evil.example"), ("vary", "origin")]);
        c.decorate(&c.actual(&request(&[("origin", "https://evil.example")])), &mut foreign);
        assert!(foreign.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert!(foreign.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
        assert_eq!(foreign.get_all(VARY).iter().count(), 1, "Origin is not listed twice");
    }

    #[test]
    fn a_wildcard_answers_star_without_vary_and_never_with_credentials() {
        let c = cors(&["*"], true);
        let mut h = HeaderMap::new();
        c.decorate(&c.actual(&request(&[("origin", "https://any.example")])), &mut h);
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(h.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
        assert!(h.get(VARY).is_none());
        let mut no_origin = HeaderMap::new();
        c.decorate(&c.actual(&HeaderMap::new()), &mut no_origin);
        assert!(no_origin.is_empty(), "requests without Origin are not cross-origin");
    }

    fn origins(list: &[&str]) -> Vec<Origin> {
        list.iter().map(|o| o.parse().unwrap()).collect()
    }

    fn keyed(header: &str) -> Policies {
        Policies {
            key_auth: Some(turnpike_domain::policy::KeyAuth { header: header.into(), query: None }),
            ..Policies::default()
        }
    }

    #[test]
    fn origins_are_parsed_as_browsers_send_them() {
        let ok = |text: &str| text.parse::<Origin>().map(|o| o.to_string());
        assert_eq!(ok("http://127.0.0.1:8003").unwrap(), "http://127.0.0.1:8003");
        assert_eq!(ok("HTTPS://Portal.Example.com").unwrap(), "https://portal.example.com");
        assert_eq!(ok("https://portal.example.com:443").unwrap(), "https://portal.example.com");
        assert_eq!(ok("http://portal.example.com:80").unwrap(), "http://portal.example.com");
        assert_eq!(ok("http://portal.example.com:443").unwrap(), "http://portal.example.com:443");
        assert_eq!(ok("http://[::1]:8003").unwrap(), "http://[::1]:8003");
        assert_eq!(ok("https://[2001:DB8::1]").unwrap(), "https://[2001:db8::1]");
        for bad in [
            "*",
            "null",
            "portal.example.com",
            "ftp://portal.example.com",
            "https://portal.example.com/",
            "https://portal.example.com/docs",
            "https://portal.example.com?x",
            "https://user@portal.example.com",
            "https://",
            "https://:8003",
            "https://portal.example.com:",
            "https://portal.example.com:0",
            "https://portal.example.com:99999",
            "https://portal.example.com:+80",
            "https://portal example.com",
            "https://[::1",
            "https://[::1]x",
        ] {
            let err = bad.parse::<Origin>().expect_err(bad);
            assert!(err.to_string().contains("expected scheme://host[:port]"), "{err}");
        }
        assert!(Origin::try_from("*".to_owned()).unwrap_err().to_string().contains("`*` is not allowed"));
    }

    #[test]
    fn without_docs_origins_or_a_policy_a_version_has_no_cors() {
        assert!(VersionCors::compile(&keyed("x-api-key"), &[], &[], "v").is_none());
        assert!(VersionCors::compile(&Policies::default(), &[], &origins(&["http://127.0.0.1:8003"]), "v").is_some());
    }

    #[test]
    fn docs_origins_get_the_docs_rules_on_a_version_without_a_policy() {
        let c = VersionCors::compile(&keyed("X-Key"), &[], &origins(&["http://127.0.0.1:8003"]), "v").unwrap();
        let h = c
            .preflight(&request(&[
                ("origin", "http://127.0.0.1:8003"),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "x-key,content-type,Accept,authorization"),
            ]))
            .expect("a docs origin's preflight is the gateway's")
            .unwrap();
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "http://127.0.0.1:8003");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "GET, HEAD, POST, PUT, PATCH, DELETE");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], "accept, content-type, authorization, x-key");
        assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "600");
        assert!(h.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none(), "never credentials for the docs");
        let refused = c.preflight(&request(&[
            ("origin", "http://127.0.0.1:8003"),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "x-key, x-admin"),
        ]));
        assert_eq!(refused, Some(Err(Refusal::Header("x-admin".into()))));
        let method =
            c.preflight(&request(&[("origin", "http://127.0.0.1:8003"), ("access-control-request-method", "TRACE")]));
        assert_eq!(method, Some(Err(Refusal::Method)));

        let mut upstream =
            request(&[("access-control-allow-origin", "*"), ("access-control-allow-credentials", "true")]);
        let actual = c.actual(&request(&[("origin", "http://127.0.0.1:8003")])).unwrap();
        c.decorate(&actual, &mut upstream);
        assert_eq!(upstream[ACCESS_CONTROL_ALLOW_ORIGIN], "http://127.0.0.1:8003");
        assert!(upstream.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none(), "the upstream's is removed");
        assert_eq!(upstream[VARY], "Origin");
        // The docs may show the gateway's own headers (rate limits, request id…).
        assert_eq!(
            upstream[ACCESS_CONTROL_EXPOSE_HEADERS],
            "x-request-id, ratelimit-limit, ratelimit-remaining, ratelimit-reset, ratelimit-policy, retry-after, \
             deprecation, sunset, link, x-cache"
        );

        // Other origins, and requests without one, keep the upstream's CORS headers and
        // only learn that the answer varies by origin (a cache must not serve it to the docs).
        let foreign = request(&[("origin", "https://evil.example"), ("access-control-request-method", "GET")]);
        assert!(!c.answers(&foreign) && c.preflight(&foreign).is_none());
        for origin in [Some("https://evil.example"), Some("http://127.0.0.1:8003.evil"), None] {
            let asked = origin.map_or_else(HeaderMap::new, |o| request(&[("origin", o)]));
            let mut upstream = request(&[("access-control-allow-origin", "*"), ("vary", "accept-encoding")]);
            c.decorate(&c.actual(&asked).unwrap(), &mut upstream);
            assert_eq!(upstream[ACCESS_CONTROL_ALLOW_ORIGIN], "*", "{origin:?}: the upstream's own");
            let vary: Vec<_> = upstream.get_all(VARY).iter().collect();
            assert_eq!(vary, ["accept-encoding", "Origin"], "{origin:?}");
        }
    }

    #[test]
    fn docs_origins_are_allowed_beside_a_policy_which_keeps_its_own_origins() {
        let mut policies = keyed("x-api-key");
        policies.jwt = Some(turnpike_domain::policy::JwtPolicy {
            header: "x-token".into(),
            ..turnpike_domain::policy::JwtPolicy::new(turnpike_domain::policy::JwtAlgorithm::HS256)
        });
        policies.cors = Some(CorsSpec {
            origins: vec!["https://app.example".into()],
            methods: vec!["GET".into(), "PURGE".into()],
            headers: vec!["X-Tenant".into(), "accept".into()],
            expose_headers: vec!["x-total".into()],
            credentials: true,
            max_age_seconds: 60,
        });
        let c = VersionCors::compile(&policies, &["x-trace-id".to_owned()], &origins(&["https://portal.example"]), "v")
            .unwrap();
        let ask = |origin: &'static str| {
            c.preflight(&request(&[
                ("origin", origin),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-tenant"),
            ]))
            .unwrap()
        };
        let app = ask("https://app.example").unwrap();
        assert_eq!(app[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(app[ACCESS_CONTROL_ALLOW_HEADERS], "x-tenant, accept");
        let docs = ask("https://portal.example").unwrap();
        assert!(docs.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
        assert_eq!(docs[ACCESS_CONTROL_ALLOW_METHODS], "GET, HEAD, POST, PUT, PATCH, DELETE, PURGE");
        assert_eq!(
            docs[ACCESS_CONTROL_ALLOW_HEADERS],
            "accept, content-type, authorization, x-api-key, x-token, x-trace-id, x-tenant"
        );
        assert_eq!(docs[ACCESS_CONTROL_MAX_AGE], "60");
        assert_eq!(ask("https://evil.example"), Err(Refusal::Origin), "the policy still answers other origins");

        let mut response = HeaderMap::new();
        c.decorate(&c.actual(&request(&[("origin", "https://portal.example")])).unwrap(), &mut response);
        assert_eq!(response[ACCESS_CONTROL_ALLOW_ORIGIN], "https://portal.example");
        let exposed = response[ACCESS_CONTROL_EXPOSE_HEADERS].to_str().unwrap();
        assert!(exposed.starts_with("x-request-id, ratelimit-limit") && exposed.ends_with(", x-cache, x-total"));
        assert!(response.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
        let mut response = HeaderMap::new();
        c.decorate(&c.actual(&request(&[("origin", "https://app.example")])).unwrap(), &mut response);
        assert_eq!(response[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        let mut response = HeaderMap::new();
        c.decorate(&c.actual(&request(&[("origin", "https://evil.example")])).unwrap(), &mut response);
        assert!(response.get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert_eq!(response[VARY], "Origin");
    }
}
