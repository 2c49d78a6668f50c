//! Input rules for everything an admin or developer can name or configure.
//! Each check returns a [`ValidationError`] naming the offending field, so the admin
//! API can report every problem of a request at once through [`Validator`].

use std::collections::HashSet;
use std::net::{IpAddr, Ipv6Addr};

use serde::Serialize;

use crate::model::{
    HashOn, HealthCheck, LoadBalancing, Quota, RateLimit, RouteSpec, Timeouts, UpstreamSpec, Versioning,
};
use crate::network::{TargetPolicy, numeric_ipv4};

/// One rejected input: which field, and why, in words meant for the person who sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError { field: field.into(), message: message.into() }
    }
}

type Check = Result<(), ValidationError>;

fn fail(field: &str, message: impl Into<String>) -> Check {
    Err(ValidationError::new(field, message))
}

/// Collects the outcome of several checks so that a request is rejected with all of
/// its problems, not just the first one found.
#[derive(Debug, Default)]
pub struct Validator {
    errors: Vec<ValidationError>,
}

impl Validator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the error of a single check, if any.
    pub fn check(&mut self, result: Result<(), ValidationError>) -> &mut Self {
        if let Err(e) = result {
            self.errors.push(e);
        }
        self
    }

    /// Records the errors of a composite check such as [`upstream`].
    pub fn check_all(&mut self, result: Result<(), Vec<ValidationError>>) -> &mut Self {
        if let Err(mut e) = result {
            self.errors.append(&mut e);
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// `Ok` when every recorded check passed, else every error in the order found.
    pub fn finish(self) -> Result<(), Vec<ValidationError>> {
        if self.errors.is_empty() { Ok(()) } else { Err(self.errors) }
    }
}

const MAX_SLUG: usize = 63;
const MAX_NAME: usize = 200;
const MAX_BASE_PATH: usize = 200;
const MAX_ROUTE_PATH: usize = 1024;
const MAX_HOST: usize = 253;
const MAX_HEADER_NAME: usize = 256;
const MAX_HEADER_VALUE: usize = 1024;
const MAX_URL: usize = 2048;
const MAX_TAGS: usize = 20;
const MAX_TAG: usize = 50;

/// HTTP methods a route may restrict itself to.
pub const METHODS: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"];

fn is_unreserved(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

/// Lower-case letters, digits and single inner hyphens, up to `max` characters.
fn slug_like(field: &str, value: &str, max: usize) -> Check {
    if value.is_empty() {
        return fail(field, "must not be empty");
    }
    if value.len() > max {
        return fail(field, format!("must be at most {max} characters"));
    }
    if let Some(c) = value.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return fail(field, format!("may only contain lower-case letters, digits and '-' (found {c:?})"));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return fail(field, "must not start or end with '-'");
    }
    if value.contains("--") {
        return fail(field, "must not contain consecutive '-'");
    }
    Ok(())
}

/// An identifier used in URLs and lookups: `petstore`, `billing-v2`.
pub fn slug(field: &str, value: &str) -> Check {
    slug_like(field, value, MAX_SLUG)
}

/// A version label: `v1`, `2024-01`, `v2.1-beta`.
pub fn label(field: &str, value: &str) -> Check {
    let mut chars = value.chars();
    match chars.next() {
        None => return fail(field, "must not be empty"),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return fail(field, "must start with a letter or digit");
        }
        Some(_) => {}
    }
    if value.len() > 32 {
        return fail(field, "must be at most 32 characters");
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return fail(field, format!("may only contain letters, digits, '.', '_' and '-' (found {c:?})"));
    }
    Ok(())
}

/// A human-readable name: any text of 1 to 200 characters that is not all blank.
pub fn name(field: &str, value: &str) -> Check {
    if value.trim().is_empty() {
        return fail(field, "must not be blank");
    }
    if value.chars().count() > MAX_NAME {
        return fail(field, format!("must be at most {MAX_NAME} characters"));
    }
    if value.chars().any(char::is_control) {
        return fail(field, "must not contain control characters");
    }
    Ok(())
}

fn dot_segment(segment: &str) -> bool {
    segment == "." || segment == ".."
}

/// The path prefix of an API version, e.g. `/petstore/v1`. `/` alone is refused:
/// each version needs a prefix of its own so that versions never overlap entirely.
pub fn base_path(field: &str, value: &str) -> Check {
    let Some(rest) = value.strip_prefix('/') else {
        return fail(field, "must start with '/'");
    };
    if rest.is_empty() {
        return fail(field, "must not be '/' alone; use a prefix such as /petstore/v1");
    }
    if value.len() > MAX_BASE_PATH {
        return fail(field, format!("must be at most {MAX_BASE_PATH} characters"));
    }
    if value.ends_with('/') {
        return fail(field, "must not end with '/'");
    }
    for segment in rest.split('/') {
        if segment.is_empty() {
            return fail(field, "must not contain empty segments ('//')");
        }
        if dot_segment(segment) {
            return fail(field, "must not contain '.' or '..' segments");
        }
        if let Some(c) = segment.chars().find(|c| !is_unreserved(*c)) {
            return fail(
                field,
                format!("segments may only contain letters, digits, '-', '.', '_' and '~' (found {c:?})"),
            );
        }
    }
    Ok(())
}

/// Characters allowed in a literal route segment: RFC 3986 `pchar` without
/// percent-encoding (routes are matched on decoded-free raw paths, so an escape would
/// never match as written) and without `*`, which only means "prefix" at the end.
fn is_route_char(c: char) -> bool {
    is_unreserved(c) || matches!(c, '!' | '$' | '&' | '\'' | '(' | ')' | '+' | ',' | ';' | '=' | ':' | '@')
}

/// A route path relative to the version's base path: `/`, `/pets`, `/pets/{id}`, or a
/// prefix ending in `/*` (`/*` alone takes everything). Templates fill whole segments;
/// their names are letters, digits, `_` and `-` (the hyphen because OpenAPI documents
/// commonly use it, e.g. `{user-id}`), and must not repeat. A trailing `/` is kept
/// significant, as the upstream may distinguish `/pets/` from `/pets`.
pub fn route_path(field: &str, value: &str) -> Check {
    let Some(rest) = value.strip_prefix('/') else {
        return fail(field, "must start with '/'");
    };
    if value.len() > MAX_ROUTE_PATH {
        return fail(field, format!("must be at most {MAX_ROUTE_PATH} characters"));
    }
    if value.contains('?') || value.contains('#') {
        return fail(field, "must not contain a query ('?') or fragment ('#')");
    }
    if rest.is_empty() {
        return Ok(());
    }
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    let mut params = HashSet::new();
    for (i, segment) in segments.iter().enumerate() {
        if segment.is_empty() {
            if i == last {
                continue; // trailing slash
            }
            return fail(field, "must not contain empty segments ('//')");
        }
        if dot_segment(segment) {
            return fail(field, "must not contain '.' or '..' segments");
        }
        if *segment == "*" {
            if i != last {
                return fail(field, "'*' is only allowed as the last segment ('/prefix/*')");
            }
            continue;
        }
        if let Some(inner) = segment.strip_prefix('{') {
            let Some(param) = inner.strip_suffix('}') else {
                return fail(field, format!("template segment {segment:?} must be a whole segment like {{id}}"));
            };
            if param.is_empty() || !param.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                return fail(field, format!("template name {param:?} may only contain letters, digits, '_' and '-'"));
            }
            if !params.insert(param) {
                return fail(field, format!("template name {param:?} is used twice"));
            }
            continue;
        }
        if segment.contains(['{', '}']) {
            return fail(field, format!("templates must fill a whole segment; {segment:?} mixes text and a template"));
        }
        if segment.contains('*') {
            return fail(field, "'*' is only allowed as the whole last segment ('/prefix/*')");
        }
        if let Some(c) = segment.chars().find(|c| !is_route_char(*c)) {
            return fail(field, format!("contains a character that is not allowed in a path: {c:?}"));
        }
    }
    Ok(())
}

/// A list of upper-case HTTP methods without repeats. Empty means any method.
pub fn methods(field: &str, values: &[String]) -> Check {
    let mut seen = HashSet::new();
    for m in values {
        if !METHODS.contains(&m.as_str()) {
            let hint =
                if METHODS.contains(&m.to_ascii_uppercase().as_str()) { " (methods are upper case)" } else { "" };
            return fail(field, format!("unknown method {m:?}{hint}; expected one of {}", METHODS.join(", ")));
        }
        if !seen.insert(m) {
            return fail(field, format!("method {m} is listed twice"));
        }
    }
    Ok(())
}

fn hostname(field: &str, value: &str) -> Check {
    if value.is_empty() {
        return fail(field, "must not be empty");
    }
    if value.len() > MAX_HOST {
        return fail(field, format!("must be at most {MAX_HOST} characters"));
    }
    for label in value.split('.') {
        if label.is_empty() {
            return fail(field, "must not contain empty labels ('..' or a leading or trailing '.')");
        }
        if label.len() > 63 {
            return fail(field, "each label must be at most 63 characters");
        }
        if let Some(c) = label.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
            let hint = if c.is_ascii_uppercase() { " (use lower case)" } else { "" };
            return fail(
                field,
                format!("may only contain lower-case letters, digits, '-' and '.' (found {c:?}){hint}"),
            );
        }
        if label.starts_with('-') || label.ends_with('-') {
            return fail(field, "labels must not start or end with '-'");
        }
    }
    Ok(())
}

/// A host a route matches: `api.example.com`, or `*.example.com` for any one or more
/// labels in front of `example.com`. Lower case, no port.
pub fn host(field: &str, value: &str) -> Check {
    match value.strip_prefix("*.") {
        Some(rest) => {
            hostname(field, rest)?;
            if !rest.contains('.') {
                return fail(field, "a wildcard must be followed by at least two labels, like *.example.com");
            }
            Ok(())
        }
        None if value.contains('*') => fail(field, "a wildcard is only allowed as a leading '*.'"),
        None if value.contains(':') => fail(field, "must not include a port"),
        None => hostname(field, value),
    }
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '!' | '#' | '$' | '%' | '&' | '\'' | '*' | '+' | '-' | '.' | '^' | '_' | '`' | '|' | '~')
}

/// An HTTP header name (an RFC 9110 token).
pub fn header_name(field: &str, value: &str) -> Check {
    if value.is_empty() {
        return fail(field, "must not be empty");
    }
    if value.len() > MAX_HEADER_NAME {
        return fail(field, format!("must be at most {MAX_HEADER_NAME} characters"));
    }
    if let Some(c) = value.chars().find(|c| !is_tchar(*c)) {
        return fail(field, format!("is not a valid header name (found {c:?})"));
    }
    Ok(())
}

/// A header value: visible ASCII, spaces and tabs, no line breaks.
pub fn header_value(field: &str, value: &str) -> Check {
    if value.len() > MAX_HEADER_VALUE {
        return fail(field, format!("must be at most {MAX_HEADER_VALUE} characters"));
    }
    if let Some(c) = value.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ' || *c == '\t')) {
        return fail(field, format!("may only contain visible ASCII characters, spaces and tabs (found {c:?})"));
    }
    Ok(())
}

/// Where an upstream target lives: `http(s)://host[:port][/path-prefix]`, or
/// `h2c://host[:port][/path-prefix]` for HTTP/2 over cleartext with prior knowledge
/// (the gateway speaks HTTP/2 to it from the first byte; gRPC without TLS).
///
/// Parsed by hand rather than with the `url` crate because we want to refuse, not
/// normalize, anything unusual: no user info, query, fragment, or trailing `/`
/// (the gateway appends the route path, which starts with `/`).
pub fn target_url(field: &str, value: &str) -> Check {
    if value.len() > MAX_URL {
        return fail(field, format!("must be at most {MAX_URL} characters"));
    }
    let Some(rest) = ["http://", "https://", "h2c://"].into_iter().find_map(|scheme| value.strip_prefix(scheme)) else {
        return fail(field, "must start with http://, https:// or h2c://");
    };
    if value.contains('?') || value.contains('#') {
        return fail(field, "must not contain a query ('?') or fragment ('#')");
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return fail(field, "must not contain user info ('user:password@')");
    }
    if authority.is_empty() {
        return fail(field, "must include a host");
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return fail(field, "has an unterminated IPv6 address");
        };
        if addr.is_empty()
            || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
            || addr.parse::<Ipv6Addr>().is_err()
        {
            return fail(field, "has an invalid IPv6 address");
        }
        match after {
            "" => (None, None),
            p if p.starts_with(':') => (None, Some(&p[1..])),
            _ => return fail(field, "has unexpected characters after the IPv6 address"),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(authority), None),
        }
    };
    if let Some(h) = host {
        hostname(field, h)?;
    }
    if let Some(p) = port {
        match p.parse::<u16>() {
            Ok(n) if n > 0 && p.chars().all(|c| c.is_ascii_digit()) => {}
            _ => {
                return fail(field, format!("has an invalid port {p:?} (expected 1 to 65535)"));
            }
        }
    }
    if !path.is_empty() {
        if path.ends_with('/') {
            return fail(field, "must not end with '/' (the route path is appended to it)");
        }
        for segment in path[1..].split('/') {
            if segment.is_empty() {
                return fail(field, "path must not contain empty segments ('//')");
            }
            if dot_segment(segment) {
                return fail(field, "path must not contain '.' or '..' segments");
            }
            if let Some(c) = segment.chars().find(|c| !(is_route_char(*c) || *c == '%')) {
                return fail(field, format!("path contains a character that is not allowed: {c:?}"));
            }
        }
    }
    Ok(())
}

/// The IP address a target URL that [`target_url`] accepted names literally, in any
/// form the system resolver would read as one (`127.1` and `2130706433` are
/// `127.0.0.1`); `None` for a host name.
pub fn target_address(url: &str) -> Option<IpAddr> {
    let rest = ["http://", "https://", "h2c://"].into_iter().find_map(|scheme| url.strip_prefix(scheme))?;
    let authority = rest.split('/').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.split_once(']')?.0.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let host = authority.rsplit_once(':').map_or(authority, |(host, _port)| host);
    numeric_ipv4(host).map(IpAddr::V4)
}

/// The operator's [`TargetPolicy`] applied to the targets of an upstream whose URLs
/// name an IP address. Host names are left to the gateway, which checks every address
/// they resolve to when it connects (a DNS answer can change after saving). Targets
/// whose URL is invalid are left to [`upstream`].
pub fn upstream_targets(spec: &UpstreamSpec, policy: &TargetPolicy) -> Result<(), Vec<ValidationError>> {
    let mut v = Validator::new();
    if policy.allows_everything() {
        return v.finish();
    }
    for (i, target) in spec.targets.iter().enumerate() {
        let Some(ip) = target_address(&target.url) else { continue };
        if let Err(class) = policy.check(ip) {
            v.check(fail(
                &format!("targets[{i}].url"),
                format!(
                    "points at {ip}, {class}; this server connects to non-public addresses only when its \
                     operator allows them (the upstreams.* configuration options)"
                ),
            ));
        }
    }
    v.finish()
}

const MAX_QUERY_NAME: usize = 100;

/// How an API's versions are chosen (see [`Versioning`]): a header name, or a query
/// parameter name of unreserved characters (so that it needs no percent-encoding),
/// a base path like a version's, and a default that is a label.
pub fn versioning(value: &Versioning) -> Result<(), Vec<ValidationError>> {
    let mut v = Validator::new();
    let Some(selector) = value.selector() else { return Ok(()) };
    match value {
        Versioning::Header(_) => {
            v.check(header_name("versioning.name", &selector.name));
        }
        _ => {
            let name = &selector.name;
            if name.is_empty() {
                v.check(fail("versioning.name", "must not be empty"));
            } else if name.len() > MAX_QUERY_NAME {
                v.check(fail("versioning.name", format!("must be at most {MAX_QUERY_NAME} characters")));
            } else if let Some(c) = name.chars().find(|c| !is_unreserved(*c)) {
                v.check(fail(
                    "versioning.name",
                    format!("may only contain letters, digits, '-', '.', '_' and '~' (found {c:?})"),
                ));
            }
        }
    }
    v.check(base_path("versioning.base_path", &selector.base_path));
    if let Some(default) = &selector.default {
        v.check(label("versioning.default", default));
    }
    v.finish()
}

/// Tags on an API: at most 20, each slug-like and at most 50 characters, no repeats.
pub fn tags(field: &str, values: &[String]) -> Check {
    if values.len() > MAX_TAGS {
        return fail(field, format!("must have at most {MAX_TAGS} tags"));
    }
    let mut seen = HashSet::new();
    for (i, tag) in values.iter().enumerate() {
        slug_like(&format!("{field}[{i}]"), tag, MAX_TAG)?;
        if !seen.insert(tag) {
            return fail(&format!("{field}[{i}]"), format!("tag {tag:?} is listed twice"));
        }
    }
    Ok(())
}

/// A rate limit: at least one request per window of 1 second to 1 day.
pub fn rate_limit(field: &str, value: &RateLimit) -> Check {
    if value.requests == 0 {
        return fail(&format!("{field}.requests"), "must be at least 1");
    }
    if !(1..=86_400).contains(&value.per_seconds) {
        return fail(&format!("{field}.per_seconds"), "must be between 1 and 86400 (one day)");
    }
    Ok(())
}

/// A quota: at least one request per period.
pub fn quota(field: &str, value: &Quota) -> Check {
    if value.requests == 0 {
        return fail(&format!("{field}.requests"), "must be at least 1");
    }
    Ok(())
}

fn timeouts(v: &mut Validator, t: &Timeouts) {
    for (name, ms) in [("connect_ms", t.connect_ms), ("read_ms", t.read_ms), ("total_ms", t.total_ms)] {
        if ms == 0 {
            v.check(fail(&format!("timeouts.{name}"), "must be greater than 0"));
        }
    }
    if t.read_ms > t.total_ms {
        v.check(fail("timeouts.read_ms", "must not exceed timeouts.total_ms"));
    }
    if t.connect_ms > t.total_ms {
        v.check(fail("timeouts.connect_ms", "must not exceed timeouts.total_ms"));
    }
}

/// Checked even when disabled, so that enabling it later cannot surprise anyone.
fn health_check(v: &mut Validator, h: &HealthCheck) {
    if !h.path.starts_with('/') {
        v.check(fail("health_check.path", "must start with '/'"));
    } else if let Some(c) = h.path.chars().find(|c| !c.is_ascii_graphic() || *c == '#') {
        v.check(fail("health_check.path", format!("contains a character that is not allowed: {c:?}")));
    }
    if h.interval_ms == 0 {
        v.check(fail("health_check.interval_ms", "must be greater than 0"));
    }
    if h.timeout_ms == 0 {
        v.check(fail("health_check.timeout_ms", "must be greater than 0"));
    } else if h.timeout_ms > h.interval_ms {
        v.check(fail("health_check.timeout_ms", "must not exceed health_check.interval_ms"));
    }
    for (name, n) in [("healthy_threshold", h.healthy_threshold), ("unhealthy_threshold", h.unhealthy_threshold)] {
        if !(1..=100).contains(&n) {
            v.check(fail(&format!("health_check.{name}"), "must be between 1 and 100"));
        }
    }
}

/// Every rule of an upstream, reporting all problems found.
pub fn upstream(spec: &UpstreamSpec) -> Result<(), Vec<ValidationError>> {
    let mut v = Validator::new();
    v.check(slug("name", &spec.name));
    if spec.targets.is_empty() {
        v.check(fail("targets", "must have at least one target"));
    }
    let mut urls = HashSet::new();
    for (i, target) in spec.targets.iter().enumerate() {
        let field = format!("targets[{i}].url");
        v.check(target_url(&field, &target.url));
        if !urls.insert(&target.url) {
            v.check(fail(&field, "duplicates another target"));
        }
        if !(1..=1000).contains(&target.weight) {
            v.check(fail(&format!("targets[{i}].weight"), "must be between 1 and 1000"));
        }
    }
    match (spec.algorithm, &spec.hash_on) {
        (LoadBalancing::ConsistentHash, None) => {
            v.check(fail("hash_on", "is required when algorithm is consistent_hash"));
        }
        (LoadBalancing::ConsistentHash, Some(HashOn::Header(h))) => {
            v.check(header_name("hash_on.name", h));
        }
        (LoadBalancing::ConsistentHash, Some(HashOn::ClientIp)) => {}
        (_, Some(_)) => {
            v.check(fail("hash_on", "only applies when algorithm is consistent_hash"));
        }
        (_, None) => {}
    }
    timeouts(&mut v, &spec.timeouts);
    health_check(&mut v, &spec.health_check);
    v.finish()
}

/// Every rule of a route, reporting all problems found.
pub fn route(spec: &RouteSpec) -> Result<(), Vec<ValidationError>> {
    let mut v = Validator::new();
    if let Some(n) = &spec.name {
        v.check(name("name", n));
    }
    v.check(methods("methods", &spec.methods));
    v.check(route_path("path", &spec.path));
    if let Some(h) = &spec.host {
        v.check(host("host", h));
    }
    for (k, val) in &spec.headers {
        let field = format!("headers.{k}");
        v.check(header_name(&field, k));
        v.check(header_value(&field, val));
    }
    v.finish()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{QuotaPeriod, Target};

    #[track_caller]
    fn accepts(check: fn(&str, &str) -> Check, values: &[&str]) {
        for v in values {
            assert_eq!(check("f", v), Ok(()), "{v:?} should be accepted");
        }
    }

    #[track_caller]
    fn rejects(check: fn(&str, &str) -> Check, values: &[&str]) {
        for v in values {
            let err = check("f", v).expect_err(&format!("{v:?} should be rejected"));
            assert_eq!(err.field, "f");
            assert!(!err.message.is_empty());
        }
    }

    #[test]
    fn slugs() {
        accepts(slug, &["a", "petstore", "billing-v2", "a1-b2-c3", "0", &"a".repeat(63)]);
        rejects(slug, &["", "-a", "a-", "a--b", "Pets", "pet_store", "pet store", "pét", &"a".repeat(64)]);
    }

    #[test]
    fn labels() {
        accepts(label, &["v1", "2024-01", "v2.1-beta", "V3", "1", "a_b", &"v".repeat(32)]);
        rejects(label, &["", "-v1", ".v1", "_v", "v 1", "v1/2", "v1+", &"v".repeat(33)]);
    }

    #[test]
    fn names() {
        accepts(name, &["Pet Store", "x", "Ünïcödé API", &"é".repeat(200)]);
        rejects(name, &["", "   ", "\t", "bad\nname", &"a".repeat(201)]);
    }

    #[test]
    fn base_paths() {
        accepts(base_path, &["/petstore/v1", "/a", "/a.b/c_d/e~f", "/v1-beta"]);
        rejects(
            base_path,
            &[
                "",
                "/",
                "petstore",
                "/petstore/",
                "//a",
                "/a//b",
                "/a/./b",
                "/a/..",
                "/a%20b",
                "/a?b",
                "/a#b",
                "/{id}",
                "/a b",
                &format!("/{}", "a".repeat(200)),
            ],
        );
    }

    #[test]
    fn route_paths() {
        accepts(
            route_path,
            &[
                "/",
                "/*",
                "/pets",
                "/pets/",
                "/pets/{id}",
                "/pets/{pet_id}/toys/{toyId}",
                "/users/{user-id}",
                "/files/*",
                "/{dataset}/{version}/fields",
                "/2.0/users/{username}",
                "/a:b@c",
            ],
        );
        rejects(
            route_path,
            &[
                "",
                "pets",
                "/pets?x=1",
                "/pets#a",
                "//pets",
                "/a//b",
                "/./a",
                "/a/../b",
                "/*/a",
                "/a*",
                "/a/*b",
                "/{}",
                "/{a b}",
                "/{id",
                "/id}",
                "/file{id}.json",
                "/{id}/{id}",
                "/a b",
                "/a%20b",
                "/a\"b",
                &format!("/{}", "a".repeat(1024)),
            ],
        );
    }

    #[test]
    fn method_lists() {
        let s = |v: &[&str]| v.iter().map(|m| m.to_string()).collect::<Vec<_>>();
        assert_eq!(methods("m", &[]), Ok(()));
        assert_eq!(methods("m", &s(&METHODS)), Ok(()));
        assert_eq!(methods("m", &s(&["GET", "POST"])), Ok(()));
        let err = methods("m", &s(&["get"])).unwrap_err();
        assert!(err.message.contains("upper case"), "{err}");
        assert!(methods("m", &s(&["FETCH"])).is_err());
        assert!(methods("m", &s(&["GET", "GET"])).is_err());
    }

    #[test]
    fn hosts() {
        accepts(host, &["api.example.com", "localhost", "127.0.0.1", "*.example.com", "a-b.c1.io"]);
        rejects(
            host,
            &[
                "",
                "API.example.com",
                "*.com",
                "*example.com",
                "a.*.com",
                "api.example.com:8080",
                "-a.com",
                "a-.com",
                "a..com",
                ".a.com",
                "a.com.",
                "a_b.com",
                &format!("{}.com", "a".repeat(64)),
            ],
        );
    }

    #[test]
    fn header_names_and_values() {
        accepts(header_name, &["X-Api-Version", "accept", "x_custom", "A1!#"]);
        rejects(header_name, &["", "X Api", "X:Api", "Ä", "a\r\nb", &"a".repeat(257)]);
        accepts(header_value, &["", "v1", "text/html; q=0.9", "a\tb"]);
        rejects(header_value, &["a\r\nX-Injected: 1", "é", &"a".repeat(1025)]);
    }

    #[test]
    fn target_urls() {
        accepts(
            target_url,
            &[
                "http://localhost",
                "http://127.0.0.1:8080",
                "https://api.example.com",
                "https://api.example.com:443/base/v1",
                "http://[::1]:9000",
                "http://[2001:db8::1]",
                "http://svc/a%20b",
                "h2c://grpc.internal:50051",
                "h2c://127.0.0.1:9000/base",
            ],
        );
        rejects(
            target_url,
            &[
                "",
                "localhost:8080",
                "ftp://example.com",
                "h2://example.com",
                "h2c://",
                "HTTP://example.com",
                "http://",
                "http:///path",
                "http://user:pw@example.com",
                "http://example.com?x=1",
                "http://example.com/a#frag",
                "http://example.com/",
                "http://example.com/a/",
                "http://example.com//a",
                "http://example.com/a/../b",
                "http://example.com:0",
                "http://example.com:65536",
                "http://example.com:+80",
                "http://example.com:",
                "http://[::1",
                "http://[zz]:80",
                "http://[1:2:3]:80",
                "http://[::1::2]",
                "http://[::1]x",
                "http://Example.com",
                "http://exa mple.com",
            ],
        );
    }

    #[test]
    fn versioning_modes_parse_and_validate() {
        use crate::model::VersionSelector;
        let parse = |v: serde_json::Value| serde_json::from_value::<Versioning>(v);
        assert_eq!(parse(serde_json::json!({"mode": "path"})).unwrap(), Versioning::Path);
        let header =
            parse(serde_json::json!({"mode": "header", "name": "api-version", "base_path": "/pets", "default": "v2"}))
                .unwrap();
        let selector =
            VersionSelector { name: "api-version".into(), base_path: "/pets".into(), default: Some("v2".into()) };
        assert_eq!(header, Versioning::Header(selector.clone()));
        assert_eq!(versioning(&header), Ok(()));
        let query = parse(serde_json::json!({"mode": "query", "name": "version", "base_path": "/pets"})).unwrap();
        assert_eq!(
            serde_json::to_value(&query).unwrap(),
            serde_json::json!({"mode": "query", "name": "version", "base_path": "/pets"})
        );
        assert!(parse(serde_json::json!({"mode": "header", "name": "v", "base_path": "/p", "extra": 1})).is_err());
        assert!(parse(serde_json::json!({"mode": "cookie"})).is_err());
        assert!(parse(serde_json::json!({"mode": "header", "base_path": "/p"})).is_err(), "name is required");
        // What a merge patch back to `path` leaves behind is ignored.
        assert_eq!(
            parse(serde_json::json!({"mode": "path", "name": "x", "base_path": "/p"})).unwrap(),
            Versioning::Path
        );

        let bad = Versioning::Query(VersionSelector {
            name: "ver sion".into(),
            base_path: "/pets/".into(),
            default: Some("-v2".into()),
        });
        let fields: Vec<_> = versioning(&bad).unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["versioning.name", "versioning.base_path", "versioning.default"]);
        let bad_header = Versioning::Header(VersionSelector { name: "api version".into(), ..selector });
        assert_eq!(versioning(&bad_header).unwrap_err()[0].field, "versioning.name");
        assert_eq!(versioning(&Versioning::Path), Ok(()));
    }

    #[test]
    fn tag_lists() {
        let s = |v: &[&str]| v.iter().map(|m| m.to_string()).collect::<Vec<_>>();
        assert_eq!(tags("tags", &[]), Ok(()));
        assert_eq!(tags("tags", &s(&["payments", "internal-v2"])), Ok(()));
        assert_eq!(tags("tags", &["a".to_string()]), Ok(()));
        let many: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
        assert!(tags("tags", &many).is_err());
        assert!(tags("tags", &many[..20]).is_ok());
        let err = tags("tags", &s(&["ok", "Bad Tag"])).unwrap_err();
        assert_eq!(err.field, "tags[1]");
        assert!(tags("tags", &s(&["a", "a"])).is_err());
        assert!(tags("tags", &["a".repeat(51)]).is_err());
    }

    #[test]
    fn rate_limits_and_quotas() {
        assert_eq!(rate_limit("rl", &RateLimit { requests: 10, per_seconds: 1 }), Ok(()));
        assert_eq!(rate_limit("rl", &RateLimit { requests: 1, per_seconds: 86_400 }), Ok(()));
        assert_eq!(rate_limit("rl", &RateLimit { requests: 0, per_seconds: 1 }).unwrap_err().field, "rl.requests");
        assert_eq!(rate_limit("rl", &RateLimit { requests: 1, per_seconds: 0 }).unwrap_err().field, "rl.per_seconds");
        assert!(rate_limit("rl", &RateLimit { requests: 1, per_seconds: 86_401 }).is_err());
        assert_eq!(quota("q", &Quota { requests: 1000, period: QuotaPeriod::Month }), Ok(()));
        assert_eq!(quota("q", &Quota { requests: 0, period: QuotaPeriod::Day }).unwrap_err().field, "q.requests");
    }

    fn good_upstream() -> UpstreamSpec {
        UpstreamSpec {
            name: "pets-backend".into(),
            targets: vec![
                Target { url: "http://127.0.0.1:9001".into(), weight: 100 },
                Target { url: "http://127.0.0.1:9002".into(), weight: 1 },
            ],
            algorithm: LoadBalancing::RoundRobin,
            hash_on: None,
            timeouts: Timeouts::default(),
            health_check: HealthCheck::default(),
            outlier_detection: Default::default(),
            circuit_breaker: Default::default(),
            retries: Default::default(),
            tls: Default::default(),
        }
    }

    fn fields(result: Result<(), Vec<ValidationError>>) -> Vec<String> {
        result.err().unwrap_or_default().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn upstream_accepts_a_sane_spec_and_defaults() {
        assert_eq!(upstream(&good_upstream()), Ok(()));
        let mut u = good_upstream();
        u.algorithm = LoadBalancing::ConsistentHash;
        u.hash_on = Some(HashOn::Header("X-User".into()));
        assert_eq!(upstream(&u), Ok(()));
        u.hash_on = Some(HashOn::ClientIp);
        assert_eq!(upstream(&u), Ok(()));
    }

    #[test]
    fn upstream_reports_every_problem() {
        let mut u = good_upstream();
        u.name = "Pets Backend".into();
        u.targets[0].url = "ftp://x".into();
        u.targets[1].weight = 0;
        u.targets.push(Target { url: "http://127.0.0.1:9002".into(), weight: 1001 });
        u.timeouts = Timeouts { connect_ms: 0, read_ms: 70_000, total_ms: 60_000 };
        u.health_check.path = "health".into();
        u.health_check.timeout_ms = 20_000;
        u.health_check.unhealthy_threshold = 0;
        assert_eq!(
            fields(upstream(&u)),
            [
                "name",
                "targets[0].url",
                "targets[1].weight",
                "targets[2].url",
                "targets[2].weight",
                "timeouts.connect_ms",
                "timeouts.read_ms",
                "health_check.path",
                "health_check.timeout_ms",
                "health_check.unhealthy_threshold",
            ]
        );
    }

    #[test]
    fn upstream_needs_targets_and_hash_on_exactly_with_consistent_hash() {
        let mut u = good_upstream();
        u.targets.clear();
        assert_eq!(fields(upstream(&u)), ["targets"]);

        let mut u = good_upstream();
        u.algorithm = LoadBalancing::ConsistentHash;
        assert_eq!(fields(upstream(&u)), ["hash_on"]);
        u.hash_on = Some(HashOn::Header("bad header".into()));
        assert_eq!(fields(upstream(&u)), ["hash_on.name"]);

        let mut u = good_upstream();
        u.algorithm = LoadBalancing::LeastConnections;
        u.hash_on = Some(HashOn::ClientIp);
        assert_eq!(fields(upstream(&u)), ["hash_on"]);
    }

    #[test]
    fn upstream_timeouts_and_health_edges() {
        let mut u = good_upstream();
        u.timeouts = Timeouts { connect_ms: 1, read_ms: 5, total_ms: 5 };
        assert_eq!(upstream(&u), Ok(()));
        u.timeouts.total_ms = 0;
        assert_eq!(fields(upstream(&u)), ["timeouts.total_ms", "timeouts.read_ms", "timeouts.connect_ms"]);

        let mut u = good_upstream();
        u.health_check.interval_ms = 0;
        u.health_check.healthy_threshold = 101;
        u.health_check.path = "/health check".into();
        assert_eq!(
            fields(upstream(&u)),
            [
                "health_check.path",
                "health_check.interval_ms",
                "health_check.timeout_ms",
                "health_check.healthy_threshold"
            ]
        );
    }

    #[test]
    fn target_addresses_are_read_from_literal_hosts_only() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(target_address("http://127.0.0.1:8080"), ip("127.0.0.1"));
        assert_eq!(target_address("https://10.0.0.1/base/v1"), ip("10.0.0.1"));
        assert_eq!(target_address("h2c://[::1]:50051"), ip("::1"));
        assert_eq!(target_address("http://[::ffff:169.254.169.254]"), ip("::ffff:169.254.169.254"));
        assert_eq!(target_address("http://127.1:80"), ip("127.0.0.1"));
        assert_eq!(target_address("http://2130706433"), ip("127.0.0.1"));
        assert_eq!(target_address("http://0x7f.1"), ip("127.0.0.1"));
        assert_eq!(target_address("http://localhost:8080"), None);
        assert_eq!(target_address("https://api.example.com"), None);
        assert_eq!(target_address("http://10.0.0.1.nip.io"), None);
    }

    #[test]
    fn the_target_policy_refuses_literal_non_public_addresses_naming_the_field() {
        let strict = TargetPolicy::public_only(Vec::new());
        let mut u = good_upstream();
        u.targets = [
            "http://127.0.0.1:9001",
            "https://93.184.216.34",
            "http://10.0.0.1",
            "http://[::1]:80",
            "http://169.254.169.254/latest",
            "http://internal.example.com",
            "http://[fd00::5]",
            "http://0.0.0.0:80",
            "http://127.1",
            "not a url",
        ]
        .into_iter()
        .map(|url| Target { url: url.into(), weight: 1 })
        .collect();
        let errors = upstream_targets(&u, &strict).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "targets[0].url",
                "targets[2].url",
                "targets[3].url",
                "targets[4].url",
                "targets[6].url",
                "targets[7].url",
                "targets[8].url"
            ]
        );
        assert!(errors[0].message.starts_with("points at 127.0.0.1, a loopback address; "), "{}", errors[0].message);
        assert!(errors[3].message.contains("169.254.169.254, a link-local address"), "{}", errors[3].message);
        assert!(errors[6].message.contains("127.0.0.1, a loopback address"), "{}", errors[6].message);

        assert_eq!(upstream_targets(&u, &TargetPolicy::allow_all()), Ok(()));
        let listed = TargetPolicy::public_only(
            ["127.0.0.0/8", "::1", "10.0.0.0/8", "169.254.0.0/16", "fc00::/7", "0.0.0.0/32"]
                .into_iter()
                .map(|b| b.parse().unwrap())
                .collect(),
        );
        assert_eq!(upstream_targets(&u, &listed), Ok(()));
    }

    fn good_route() -> RouteSpec {
        RouteSpec {
            name: Some("listPets".into()),
            methods: vec!["GET".into()],
            path: "/pets/{id}".into(),
            host: Some("*.example.com".into()),
            headers: BTreeMap::from([("X-Api-Version".into(), "2".into())]),
        }
    }

    #[test]
    fn routes() {
        assert_eq!(route(&good_route()), Ok(()));
        let minimal =
            RouteSpec { name: None, methods: vec![], path: "/*".into(), host: None, headers: BTreeMap::new() };
        assert_eq!(route(&minimal), Ok(()));

        let bad = RouteSpec {
            name: Some(" ".into()),
            methods: vec!["get".into()],
            path: "pets".into(),
            host: Some("Example.com".into()),
            headers: BTreeMap::from([("bad name".into(), "v".into()), ("X-Ok".into(), "line\nbreak".into())]),
        };
        assert_eq!(fields(route(&bad)), ["name", "methods", "path", "host", "headers.X-Ok", "headers.bad name"]);
    }

    #[test]
    fn validator_collects_in_order_and_error_displays_field_first() {
        let mut v = Validator::new();
        v.check(slug("slug", "ok")).check(slug("slug", "Nope")).check(label("label", ""));
        assert!(!v.is_empty());
        let errors = v.finish().unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].to_string(), "slug: may only contain lower-case letters, digits and '-' (found 'N')");
        assert_eq!(errors[1].to_string(), "label: must not be empty");

        let mut v = Validator::new();
        v.check_all(route(&good_route())).check(Ok(()));
        assert_eq!(v.finish(), Ok(()));
    }
}

/// An email address as people type them: one `@`, a non-empty local part, a domain
/// with a dot, no spaces, at most 254 characters. Deliverability is checked by
/// sending mail, not here.
pub fn email(field: &str, value: &str) -> Check {
    if value.len() > 254 {
        return fail(field, "must be at most 254 characters");
    }
    let Some((local, domain)) = value.split_once('@') else {
        return fail(field, "must be an email address like name@example.com");
    };
    let bad_domain = domain.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..");
    if local.is_empty() || bad_domain || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return fail(field, "must be an email address like name@example.com");
    }
    Ok(())
}

#[cfg(test)]
mod email_tests {
    use super::email;

    #[test]
    fn accepts_plain_addresses_and_rejects_the_rest() {
        for ok in ["a@b.co", "first.last+tag@sub.example.org"] {
            assert!(email("email", ok).is_ok(), "{ok}");
        }
        for bad in ["", "no-at", "@example.com", "a@", "a@b", "a@@b.com", "a b@c.com", "a@.com", "a@b..com", "a@b.com."]
        {
            assert!(email("email", bad).is_err(), "{bad}");
        }
    }
}
