//! Cross-origin resource sharing, answered by the gateway. Preflights (`OPTIONS` with
//! `Origin` and `Access-Control-Request-Method`) never reach the upstream: they get
//! 204 with the `Access-Control-Allow-*` headers, or 403 when the origin, method or a
//! requested header is not allowed. Other requests from an allowed origin get
//! `Access-Control-Allow-Origin` and friends on their response; from any other origin
//! they are still forwarded, just without CORS headers, so the browser withholds the
//! response from the calling page. When a version has a CORS policy the gateway owns
//! these headers: the upstream's are replaced.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use turnpike_domain::policy::Cors as CorsSpec;

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
        Actual { allow_origin: self.allow_origin(headers) }
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
}
