//! Routing: which API version and route take a request. Built once per snapshot into
//! two indexes so that the work per request depends on the request's path, not on
//! how many versions and routes the snapshot has:
//! - versions sit in a trie of their base paths' segments; walking the request path
//!   down it yields exactly the versions the path is under, deepest first;
//! - each version's routes sit in a trie of their templates' segments (literal
//!   children by hash, then mixed segments, then a parameter child); walking it yields
//!   the routes whose path matches, which are then tried in precedence order.
//!
//! Only routes whose path template matches are examined (plus the mixed segments such
//! as `{name}.json` at each position the walk reaches, which are tried one by one).
//!
//! An API can also choose its version by a header or query parameter (a *selector*,
//! see [`turnpike_domain::model::Versioning`]): the selector's base path sits in the
//! same trie, and a request under it is routed to the version whose label the request
//! names (or the selector's default), matched against that version's routes as if the
//! selector's base path were the version's own. A selector owns its base path: a
//! label it does not know (or no label and no default) answers 404 without looking at
//! shorter base paths, a label named twice with different values 400.
//!
//! Precedence, highest first:
//! 1. Versions with the longer base path (counted in segments), then live before
//!    retired ones with the same base path, then a selector on the same base path
//!    (the control plane keeps selectors off versions' base paths). A request goes
//!    to the first version whose base path it is under *and* one of whose routes
//!    matches it; a retired version answers every request under its base path
//!    (with 410), whether reached by its base path or chosen by a selector.
//! 2. Within a version, exact templates before prefixes (`.../*`); among prefixes,
//!    the longer one first; then, segment by segment from the left, a literal
//!    segment before a segment mixing literals and parameters (`{name}.json`)
//!    before a plain parameter (`{id}`).
//! 3. For the same path shape, the more constrained route first: an exact host
//!    counts 2, a wildcard host 1, a method list 1, each header 1.
//! 4. Finally the route id, so that the order never depends on input order.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::HashMap;

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use turnpike_domain::model::{RouteSpec, VersionState, Versioning};
use turnpike_domain::snapshot::{SnapshotRoute, SnapshotSelector, SnapshotVersion};

use crate::path::normalize;

/// Why a route (or a base path) from a snapshot cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("invalid path template {0:?}")]
    Path(String),
    #[error("invalid method {0:?}")]
    Method(String),
    #[error("invalid host pattern {0:?}")]
    Host(String),
    #[error("invalid header match {0:?}")]
    Header(String),
    #[error("another version selector already takes base path {0:?}")]
    SelectorTaken(String),
}

/// What the router needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    /// Lower-case host without port (see [`request_host`]).
    pub host: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The normalized path (see [`crate::path::normalize`]).
    pub path: &'a str,
    /// The raw query, for selectors that read the version from it.
    pub query: Option<&'a str>,
}

/// The router's answer. `T` is whatever the caller attached to each version.
#[derive(Debug, PartialEq, Eq)]
pub enum RouteOutcome<'r, T> {
    Matched {
        version: &'r T,
        route_id: &'r str,
        /// Where the path under the base path starts: `&path[remainder_start..]` is
        /// `""` or starts with `/`.
        remainder_start: usize,
    },
    Retired(&'r T),
    /// Some route takes this path, but with other methods.
    MethodNotAllowed(Vec<Method>),
    NotFound,
    /// A selector's header or query parameter was given more than once, with
    /// different values.
    AmbiguousVersion,
}

/// Where a selector reads the label of the version a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelSource {
    Header(HeaderName),
    /// A query parameter, by its decoded name.
    Query(String),
}

/// Routes of every version in a snapshot, indexed by base path.
#[derive(Debug)]
pub struct Router<T> {
    versions: Vec<VersionRoutes<T>>,
    /// Trie of base-path segments; node 0 is the root (base path `/`).
    bases: Vec<BaseNode>,
    selectors: Vec<Selector>,
}

#[derive(Debug, Default)]
struct BaseNode {
    children: HashMap<Box<str>, usize>,
    /// Versions with exactly this base path, live before retired, then in the order
    /// they were added.
    versions: Vec<usize>,
    /// The selector with exactly this base path, by index in `Router::selectors`.
    selector: Option<usize>,
}

/// A selector compiled: its versions are entries of `Router::versions` whose base is
/// the selector's, reachable only through it.
#[derive(Debug)]
struct Selector {
    source: LabelSource,
    default: Option<String>,
    /// Live and retired versions by label, as indexes into `Router::versions`.
    labels: HashMap<Box<str>, usize>,
}

/// Which version a selector picks for a request.
enum Choice {
    Version(usize),
    /// No version by that label (or none named and no default).
    Unknown,
    Ambiguous,
}

impl Selector {
    fn choose(&self, req: &RequestFacts<'_>) -> Choice {
        let named = match &self.source {
            LabelSource::Header(name) => {
                // Not UTF-8: replaced by U+FFFD, which no label contains.
                one_value(req.headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes())))
            }
            LabelSource::Query(name) => one_value(
                req.query
                    .into_iter()
                    .flat_map(|q| q.split('&'))
                    .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
                    .filter(|(key, _)| form_decode(key) == name.as_str())
                    .map(|(_, value)| form_decode(value)),
            ),
        };
        let label = match named {
            Err(()) => return Choice::Ambiguous,
            Ok(Some(label)) => label,
            Ok(None) => match &self.default {
                Some(default) => Cow::Borrowed(default.as_str()),
                None => return Choice::Unknown,
            },
        };
        match self.labels.get(label.trim()) {
            Some(&index) => Choice::Version(index),
            None => Choice::Unknown,
        }
    }
}

/// The value given, if any; `Err` when values differ.
fn one_value<'a>(mut values: impl Iterator<Item = Cow<'a, str>>) -> Result<Option<Cow<'a, str>>, ()> {
    let Some(first) = values.next() else { return Ok(None) };
    if values.any(|other| other.trim() != first.trim()) { Err(()) } else { Ok(Some(first)) }
}

/// Decodes a query component as HTML forms encode it: `+` is a space, `%XX` a
/// byte; malformed escapes are kept as written.
fn form_decode(raw: &str) -> Cow<'_, str> {
    if !raw.contains(['%', '+']) {
        return Cow::Borrowed(raw);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%').then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?))).flatten();
        match (bytes[i], escaped) {
            (_, Some((hi, lo))) => {
                out.push(hi << 4 | lo);
                i += 2;
            }
            (b'+', _) => out.push(b' '),
            (b, _) => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[derive(Debug)]
struct VersionRoutes<T> {
    /// Normalized base path without trailing slash; `""` for the root.
    base: String,
    live: bool,
    payload: T,
    /// In precedence order; the trie refers to routes by their index here, so a
    /// smaller index means a higher precedence.
    routes: Vec<Route>,
    trie: RouteTrie,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Router { versions: Vec::new(), bases: vec![BaseNode::default()], selectors: Vec::new() }
    }
}

impl<T> Router<T> {
    /// Adds a version. Drafts are ignored (they never route); routes that cannot be
    /// compiled are skipped and reported, so one bad route does not take down the rest.
    pub fn add_version(
        &mut self,
        base_path: &str,
        state: VersionState,
        payload: T,
        routes: &[SnapshotRoute],
    ) -> Result<Vec<(String, RouteError)>, RouteError> {
        if !state.is_live() && state != VersionState::Retired {
            return Ok(Vec::new());
        }
        let base = base_of(base_path)?;
        let node = self.base_node(&base);
        let (version, skipped) = VersionRoutes::compile(base, state, payload, routes);
        let index = self.versions.len();
        self.versions.push(version);
        let versions = &self.versions;
        let list = &mut self.bases[node].versions;
        list.push(index);
        // Stable sort: versions with the same liveness keep the order they were added in.
        list.sort_by_key(|&v| Reverse(versions[v].live));
        Ok(skipped)
    }

    /// Adds a selector: under `base_path`, the label read from `source` (or
    /// `default`) picks one of `versions` (`(label, state, payload, routes)`, the
    /// API's versions). Drafts are ignored; routes that cannot be compiled are left
    /// out silently, as [`Router::add_version`] reports them for the same versions.
    pub fn add_selector<'s>(
        &mut self,
        base_path: &str,
        source: LabelSource,
        default: Option<&str>,
        versions: impl IntoIterator<Item = (&'s str, VersionState, T, &'s [SnapshotRoute])>,
    ) -> Result<(), RouteError> {
        let base = base_of(base_path)?;
        let node = self.base_node(&base);
        if self.bases[node].selector.is_some() {
            return Err(RouteError::SelectorTaken(base_path.to_owned()));
        }
        let mut labels = HashMap::new();
        for (label, state, payload, routes) in versions {
            if !state.is_live() && state != VersionState::Retired {
                continue;
            }
            let (version, _) = VersionRoutes::compile(base.clone(), state, payload, routes);
            labels.entry(label.into()).or_insert(self.versions.len());
            self.versions.push(version);
        }
        self.bases[node].selector = Some(self.selectors.len());
        self.selectors.push(Selector { source, default: default.map(str::to_owned), labels });
        Ok(())
    }

    /// Adds a snapshot's selectors; `by_api` holds each API's versions with their
    /// payloads. Selectors that cannot be used are logged and left out.
    pub fn add_selectors(
        &mut self,
        selectors: &[SnapshotSelector],
        mut by_api: HashMap<&str, Vec<(&SnapshotVersion, T)>>,
    ) {
        for s in selectors {
            let (source, selector) = match &s.versioning {
                Versioning::Path => continue,
                Versioning::Header(selector) => match HeaderName::try_from(selector.name.to_ascii_lowercase()) {
                    Ok(name) => (LabelSource::Header(name), selector),
                    Err(_) => {
                        let header = &selector.name;
                        tracing::warn!(api = %s.api_slug, %header, "left out a version selector: invalid header name");
                        continue;
                    }
                },
                Versioning::Query(selector) => (LabelSource::Query(selector.name.clone()), selector),
            };
            let versions = by_api.remove(s.api_id.as_str()).unwrap_or_default();
            let candidates =
                versions.into_iter().map(|(v, payload)| (v.label.as_str(), v.state, payload, &v.routes[..]));
            if let Err(e) = self.add_selector(&selector.base_path, source, selector.default.as_deref(), candidates) {
                tracing::warn!(api = %s.api_slug, error = %e, "left out a version selector");
            }
        }
    }

    /// The trie node of `base`, created if needed.
    fn base_node(&mut self, base: &str) -> usize {
        let mut node = 0;
        for segment in split_segments(base) {
            node = match self.bases[node].children.get(segment) {
                Some(&child) => child,
                None => {
                    let child = self.bases.len();
                    self.bases.push(BaseNode::default());
                    self.bases[node].children.insert(segment.into(), child);
                    child
                }
            };
        }
        node
    }

    /// Finds the version and route for a request.
    pub fn route(&self, req: &RequestFacts<'_>) -> RouteOutcome<'_, T> {
        // The nodes of the base paths the request is under, shallowest first.
        let mut under = Vec::with_capacity(4);
        let mut node = 0;
        under.push(node);
        for segment in split_segments(req.path) {
            match self.bases[node].children.get(segment) {
                Some(&child) => {
                    node = child;
                    under.push(node);
                }
                None => break,
            }
        }
        let mut allow: Vec<Method> = Vec::new();
        let mut candidates = Vec::new();
        for &node in under.iter().rev() {
            let base = &self.bases[node];
            for &index in &base.versions {
                if let Some(outcome) = self.try_version(index, req, &mut allow, &mut candidates) {
                    return outcome;
                }
            }
            if let Some(selector) = base.selector {
                count_examined();
                match self.selectors[selector].choose(req) {
                    Choice::Version(index) => {
                        if let Some(outcome) = self.try_version(index, req, &mut allow, &mut candidates) {
                            return outcome;
                        }
                    }
                    Choice::Unknown => break,
                    Choice::Ambiguous => return RouteOutcome::AmbiguousVersion,
                }
            }
        }
        if allow.is_empty() { RouteOutcome::NotFound } else { method_not_allowed(allow) }
    }

    /// Tries the routes of one version whose base path the request is under: the
    /// outcome if the version decides the request, `None` to go on looking.
    fn try_version<'r>(
        &'r self,
        index: usize,
        req: &RequestFacts<'_>,
        allow: &mut Vec<Method>,
        candidates: &mut Vec<usize>,
    ) -> Option<RouteOutcome<'r, T>> {
        let version = &self.versions[index];
        count_examined();
        if !version.live {
            if allow.is_empty() {
                return Some(RouteOutcome::Retired(&version.payload));
            }
            return Some(method_not_allowed(std::mem::take(allow)));
        }
        let segments = split_segments(&req.path[version.base.len()..]);
        candidates.clear();
        version.trie.matching(&segments, candidates);
        candidates.sort_unstable();
        for &candidate in candidates.iter() {
            let route = &version.routes[candidate];
            count_examined();
            if !route.matches_host_and_headers(req) {
                continue;
            }
            if route.methods.is_empty() || route.methods.contains(req.method) {
                return Some(RouteOutcome::Matched {
                    version: &version.payload,
                    route_id: &route.id,
                    remainder_start: version.base.len(),
                });
            }
            allow.extend(route.methods.iter().cloned());
        }
        None
    }
}

impl<T> VersionRoutes<T> {
    /// Compiles a version's routes; those that cannot be compiled are skipped and
    /// returned.
    fn compile(
        base: String,
        state: VersionState,
        payload: T,
        routes: &[SnapshotRoute],
    ) -> (VersionRoutes<T>, Vec<(String, RouteError)>) {
        let mut compiled = Vec::with_capacity(routes.len());
        let mut skipped = Vec::new();
        for route in routes {
            match Route::compile(&route.id, &route.spec) {
                Ok(r) => compiled.push(r),
                Err(e) => skipped.push((route.id.clone(), e)),
            }
        }
        compiled.sort_by(|a, b| a.rank.cmp(&b.rank));
        let trie = RouteTrie::build(&compiled);
        (VersionRoutes { base, live: state.is_live(), payload, routes: compiled, trie }, skipped)
    }
}

/// A base path normalized, without trailing slash; `""` for the root.
fn base_of(base_path: &str) -> Result<String, RouteError> {
    let base = normalize(base_path).map_err(|_| RouteError::Path(base_path.to_owned()))?;
    Ok(base.trim_end_matches('/').to_owned())
}

fn method_not_allowed<'r, T>(mut allow: Vec<Method>) -> RouteOutcome<'r, T> {
    allow.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    allow.dedup();
    RouteOutcome::MethodNotAllowed(allow)
}

/// The request's host, lower-cased and without port: from the URI (HTTP/2 and
/// absolute-form requests) or else the `Host` header.
pub fn request_host(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let host = match uri.host() {
        Some(h) => h.to_owned(),
        None => {
            let value = headers.get(http::header::HOST)?.to_str().ok()?;
            value.parse::<http::uri::Authority>().ok()?.host().to_owned()
        }
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

fn split_segments(path: &str) -> Vec<&str> {
    match path.strip_prefix('/').unwrap_or(path) {
        "" => Vec::new(),
        rest => rest.split('/').collect(),
    }
}

#[cfg(test)]
thread_local! {
    /// Versions and routes examined by [`Router::route`] on this thread; tests use it
    /// to check that the work per request does not grow with the configuration.
    static EXAMINED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
fn count_examined() {
    EXAMINED.with(|n| n.set(n.get() + 1));
}

#[cfg(not(test))]
fn count_examined() {}

/// A version's routes by path template: one node per template prefix. Each route
/// sits in exactly one node, so a walk collects each matching route once.
#[derive(Debug)]
struct RouteTrie {
    nodes: Vec<TrieNode>,
}

#[derive(Debug, Default)]
struct TrieNode {
    literals: HashMap<Box<str>, usize>,
    mixed: Vec<(Vec<Piece>, usize)>,
    param: Option<usize>,
    /// Exact templates ending here.
    exact: Vec<usize>,
    /// Prefix templates ending here: they take this path and everything under it.
    prefix: Vec<usize>,
}

impl RouteTrie {
    fn build(routes: &[Route]) -> RouteTrie {
        let mut trie = RouteTrie { nodes: vec![TrieNode::default()] };
        for (index, route) in routes.iter().enumerate() {
            let (segments, prefix) = match &route.path {
                PathPattern::Exact(s) => (s, false),
                PathPattern::Prefix(s) => (s, true),
            };
            let mut node = 0;
            for segment in segments {
                node = trie.child(node, segment);
            }
            let node = &mut trie.nodes[node];
            if prefix { node.prefix.push(index) } else { node.exact.push(index) }
        }
        trie
    }

    fn child(&mut self, node: usize, segment: &Segment) -> usize {
        let existing = match segment {
            Segment::Literal(l) => self.nodes[node].literals.get(l.as_str()).copied(),
            Segment::Mixed(pieces) => self.nodes[node].mixed.iter().find(|(p, _)| p == pieces).map(|&(_, n)| n),
            Segment::Param => self.nodes[node].param,
        };
        if let Some(child) = existing {
            return child;
        }
        let child = self.nodes.len();
        self.nodes.push(TrieNode::default());
        let parent = &mut self.nodes[node];
        match segment {
            Segment::Literal(l) => {
                parent.literals.insert(l.as_str().into(), child);
            }
            Segment::Mixed(pieces) => parent.mixed.push((pieces.clone(), child)),
            Segment::Param => parent.param = Some(child),
        }
        child
    }

    /// Adds to `out` the index of every route whose template matches `request`.
    fn matching(&self, request: &[&str], out: &mut Vec<usize>) {
        self.walk(0, request, out);
    }

    fn walk(&self, node: usize, rest: &[&str], out: &mut Vec<usize>) {
        let node = &self.nodes[node];
        out.extend_from_slice(&node.prefix);
        let Some((segment, rest)) = rest.split_first() else {
            out.extend_from_slice(&node.exact);
            return;
        };
        if let Some(&child) = node.literals.get(*segment) {
            self.walk(child, rest, out);
        }
        for (pieces, child) in &node.mixed {
            count_examined();
            if match_pieces(pieces, segment) {
                self.walk(*child, rest, out);
            }
        }
        if let Some(child) = node.param.filter(|_| !segment.is_empty()) {
            self.walk(child, rest, out);
        }
    }
}

#[derive(Debug)]
struct Route {
    id: String,
    path: PathPattern,
    methods: Vec<Method>,
    host: Option<HostPattern>,
    headers: Vec<(HeaderName, HeaderValue)>,
    rank: Rank,
}

/// Sort key implementing the precedence in the module documentation.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    prefix: bool,
    length: Reverse<usize>,
    segments: Vec<u8>,
    constraints: Reverse<usize>,
    id: String,
}

impl Route {
    fn compile(id: &str, spec: &RouteSpec) -> Result<Route, RouteError> {
        let path = PathPattern::compile(&spec.path)?;
        let methods = spec
            .methods
            .iter()
            .map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| RouteError::Method(m.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let host = spec.host.as_deref().map(HostPattern::compile).transpose()?;
        let headers = spec
            .headers
            .iter()
            .map(|(name, value)| {
                let invalid = || RouteError::Header(name.clone());
                Ok((
                    HeaderName::try_from(name.as_str()).map_err(|_| invalid())?,
                    HeaderValue::try_from(value).map_err(|_| invalid())?,
                ))
            })
            .collect::<Result<Vec<_>, RouteError>>()?;
        let host_weight = match host {
            Some(HostPattern::Exact(_)) => 2,
            Some(HostPattern::Wildcard(_)) => 1,
            None => 0,
        };
        let (prefix, segments) = match &path {
            PathPattern::Exact(s) => (false, s),
            PathPattern::Prefix(s) => (true, s),
        };
        let rank = Rank {
            prefix,
            length: Reverse(segments.len()),
            segments: segments.iter().map(Segment::rank).collect(),
            constraints: Reverse(host_weight + usize::from(!methods.is_empty()) + headers.len()),
            id: id.to_owned(),
        };
        Ok(Route { id: id.to_owned(), path, methods, host, headers, rank })
    }

    fn matches_host_and_headers(&self, req: &RequestFacts<'_>) -> bool {
        let host_ok = match &self.host {
            Some(pattern) => req.host.is_some_and(|h| pattern.matches(h)),
            None => true,
        };
        host_ok && self.headers.iter().all(|(name, value)| req.headers.get_all(name).iter().any(|v| v == value))
    }
}

#[derive(Debug, PartialEq, Eq)]
enum PathPattern {
    Exact(Vec<Segment>),
    /// Matches these segments followed by anything (or nothing).
    Prefix(Vec<Segment>),
}

impl PathPattern {
    fn compile(template: &str) -> Result<PathPattern, RouteError> {
        let invalid = || RouteError::Path(template.to_owned());
        let (body, prefix) = match template.strip_suffix("/*") {
            Some(body) => (if body.is_empty() { "/" } else { body }, true),
            None => (template, false),
        };
        // Literal segments are compared with normalized request paths, so they are
        // normalized the same way.
        let normalized = normalize(body).map_err(|_| invalid())?;
        let mut segments = split_segments(&normalized)
            .into_iter()
            .map(Segment::compile)
            .collect::<Option<Vec<_>>>()
            .ok_or_else(invalid)?;
        if prefix && segments.last() == Some(&Segment::Literal(String::new())) {
            segments.pop();
        }
        Ok(if prefix { PathPattern::Prefix(segments) } else { PathPattern::Exact(segments) })
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// Literals and parameters within one segment, like `{name}.{ext}`.
    Mixed(Vec<Piece>),
    /// `{name}`: any one non-empty segment.
    Param,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Param,
}

impl Segment {
    fn compile(raw: &str) -> Option<Segment> {
        if !raw.contains(['{', '}']) {
            return Some(Segment::Literal(raw.to_owned()));
        }
        let mut pieces = Vec::new();
        let mut rest = raw;
        while !rest.is_empty() {
            match rest.find('{') {
                Some(0) => {
                    let close = rest.find('}')?;
                    if rest[1..close].contains('{') {
                        return None;
                    }
                    pieces.push(Piece::Param);
                    rest = &rest[close + 1..];
                }
                found => {
                    let end = found.unwrap_or(rest.len());
                    if rest[..end].contains('}') {
                        return None;
                    }
                    pieces.push(Piece::Literal(rest[..end].to_owned()));
                    rest = &rest[end..];
                }
            }
        }
        Some(if pieces == [Piece::Param] { Segment::Param } else { Segment::Mixed(pieces) })
    }

    fn rank(&self) -> u8 {
        match self {
            Segment::Literal(_) => 0,
            Segment::Mixed(_) => 1,
            Segment::Param => 2,
        }
    }
}

/// Each parameter takes at least one character; backtracks over where it ends.
fn match_pieces(pieces: &[Piece], s: &str) -> bool {
    match pieces.split_first() {
        None => s.is_empty(),
        Some((Piece::Literal(l), rest)) => s.strip_prefix(l.as_str()).is_some_and(|tail| match_pieces(rest, tail)),
        Some((Piece::Param, rest)) => {
            s.char_indices().skip(1).map(|(i, _)| i).chain([s.len()]).any(|i| i > 0 && match_pieces(rest, &s[i..]))
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: any name ending so, at any depth.
    Wildcard(String),
}

impl HostPattern {
    fn compile(raw: &str) -> Result<HostPattern, RouteError> {
        let invalid = || RouteError::Host(raw.to_owned());
        let lower = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        // The pattern is parsed like a request's Host so that a port given in it is ignored alike.
        let host = name.parse::<http::uri::Authority>().map_err(|_| invalid())?.host().to_owned();
        if host.is_empty() || host.contains('*') {
            return Err(invalid());
        }
        Ok(if wildcard { HostPattern::Wildcard(format!(".{host}")) } else { HostPattern::Exact(host) })
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn route(id: &str, path: &str) -> SnapshotRoute {
        SnapshotRoute {
            id: id.into(),
            spec: RouteSpec { name: None, methods: vec![], path: path.into(), host: None, headers: BTreeMap::new() },
        }
    }

    fn with_methods(mut r: SnapshotRoute, methods: &[&str]) -> SnapshotRoute {
        r.spec.methods = methods.iter().map(|m| m.to_string()).collect();
        r
    }

    fn with_host(mut r: SnapshotRoute, host: &str) -> SnapshotRoute {
        r.spec.host = Some(host.into());
        r
    }

    fn with_header(mut r: SnapshotRoute, name: &str, value: &str) -> SnapshotRoute {
        r.spec.headers.insert(name.into(), value.into());
        r
    }

    fn router(versions: Vec<(&'static str, &str, VersionState, Vec<SnapshotRoute>)>) -> Router<&'static str> {
        let mut router = Router::default();
        for (name, base, state, routes) in versions {
            let skipped = router.add_version(base, state, name, &routes).unwrap();
            assert!(skipped.is_empty(), "{skipped:?}");
        }
        router
    }

    struct Req {
        method: Method,
        host: Option<&'static str>,
        headers: HeaderMap,
        query: Option<&'static str>,
    }

    fn get() -> Req {
        Req { method: Method::GET, host: None, headers: HeaderMap::new(), query: None }
    }

    impl Req {
        fn method(mut self, m: Method) -> Self {
            self.method = m;
            self
        }
        fn host(mut self, h: &'static str) -> Self {
            self.host = Some(h);
            self
        }
        fn header(mut self, name: &'static str, value: &'static str) -> Self {
            self.headers.append(name, HeaderValue::from_static(value));
            self
        }
        fn query(mut self, q: &'static str) -> Self {
            self.query = Some(q);
            self
        }
        /// `(version, route, remainder)` of a match, or a short name of the outcome.
        fn at(&self, router: &Router<&'static str>, path: &str) -> String {
            let facts =
                RequestFacts { method: &self.method, host: self.host, headers: &self.headers, path, query: self.query };
            match router.route(&facts) {
                RouteOutcome::Matched { version, route_id, remainder_start } => {
                    format!("{version} {route_id} {:?}", &path[remainder_start..])
                }
                RouteOutcome::Retired(v) => format!("retired {v}"),
                RouteOutcome::MethodNotAllowed(allow) => format!("405 {allow:?}"),
                RouteOutcome::NotFound => "404".into(),
                RouteOutcome::AmbiguousVersion => "400".into(),
            }
        }
    }

    #[test]
    fn base_path_must_end_at_a_segment_boundary_and_is_stripped() {
        let r = router(vec![("v1", "/pets/v1", VersionState::Published, vec![route("all", "/*")])]);
        assert_eq!(get().at(&r, "/pets/v1"), "v1 all \"\"");
        assert_eq!(get().at(&r, "/pets/v1/"), "v1 all \"/\"");
        assert_eq!(get().at(&r, "/pets/v1/a/b"), "v1 all \"/a/b\"");
        assert_eq!(get().at(&r, "/pets/v10"), "404");
        assert_eq!(get().at(&r, "/pets"), "404");
    }

    #[test]
    fn templates_match_one_non_empty_segment() {
        let r = router(vec![(
            "v1",
            "/api",
            VersionState::Published,
            vec![route("one", "/pets/{id}"), route("file", "/files/{name}.{ext}")],
        )]);
        assert_eq!(get().at(&r, "/api/pets/7"), "v1 one \"/pets/7\"");
        assert_eq!(get().at(&r, "/api/pets/"), "404");
        assert_eq!(get().at(&r, "/api/pets"), "404");
        assert_eq!(get().at(&r, "/api/pets/7/toys"), "404");
        assert_eq!(get().at(&r, "/api/files/a.b.json"), "v1 file \"/files/a.b.json\"");
        assert_eq!(get().at(&r, "/api/files/.json"), "404");
        assert_eq!(get().at(&r, "/api/files/readme"), "404");
    }

    #[test]
    fn prefixes_match_themselves_and_everything_under() {
        let r = router(vec![("v1", "/api", VersionState::Published, vec![route("p", "/pets/*")])]);
        assert_eq!(get().at(&r, "/api/pets"), "v1 p \"/pets\"");
        assert_eq!(get().at(&r, "/api/pets/"), "v1 p \"/pets/\"");
        assert_eq!(get().at(&r, "/api/pets/1/toys"), "v1 p \"/pets/1/toys\"");
        assert_eq!(get().at(&r, "/api/petsitter"), "404");
    }

    #[test]
    fn literals_beat_templates_beat_prefixes() {
        let routes = vec![
            route("any", "/*"),
            route("pets-prefix", "/pets/*"),
            route("pet", "/pets/{id}"),
            route("mine", "/pets/mine"),
            route("json", "/pets/{id}.json"),
        ];
        let r = router(vec![("v1", "/", VersionState::Published, routes)]);
        assert_eq!(get().at(&r, "/pets/mine"), "v1 mine \"/pets/mine\"");
        assert_eq!(get().at(&r, "/pets/7.json"), "v1 json \"/pets/7.json\"");
        assert_eq!(get().at(&r, "/pets/7"), "v1 pet \"/pets/7\"");
        assert_eq!(get().at(&r, "/pets/7/toys"), "v1 pets-prefix \"/pets/7/toys\"");
        assert_eq!(get().at(&r, "/owners"), "v1 any \"/owners\"");
    }

    #[test]
    fn longer_prefixes_win_and_exact_root_takes_empty_remainder() {
        let routes = vec![route("short", "/a/*"), route("long", "/a/b/*"), route("root", "/")];
        let r = router(vec![("v1", "/x", VersionState::Published, routes)]);
        assert_eq!(get().at(&r, "/x/a/b/c"), "v1 long \"/a/b/c\"");
        assert_eq!(get().at(&r, "/x/a/c"), "v1 short \"/a/c\"");
        assert_eq!(get().at(&r, "/x"), "v1 root \"\"");
        assert_eq!(get().at(&r, "/x/"), "v1 root \"/\"");
    }

    #[test]
    fn longest_base_path_first_falling_back_when_no_route_matches() {
        let r = router(vec![
            ("outer", "/shop", VersionState::Published, vec![route("o", "/*")]),
            ("inner", "/shop/v2", VersionState::Published, vec![route("i", "/orders")]),
        ]);
        assert_eq!(get().at(&r, "/shop/v2/orders"), "inner i \"/orders\"");
        assert_eq!(get().at(&r, "/shop/v2/carts"), "outer o \"/v2/carts\"");
    }

    #[test]
    fn methods_restrict_routes_and_mismatch_lists_allowed_methods() {
        let routes = vec![
            with_methods(route("list", "/pets"), &["get"]),
            with_methods(route("create", "/pets"), &["POST", "PUT"]),
        ];
        let r = router(vec![("v1", "/api", VersionState::Published, routes)]);
        assert_eq!(get().at(&r, "/api/pets"), "v1 list \"/pets\"");
        assert_eq!(get().method(Method::POST).at(&r, "/api/pets"), "v1 create \"/pets\"");
        assert_eq!(get().method(Method::DELETE).at(&r, "/api/pets"), "405 [GET, POST, PUT]");
        assert_eq!(get().method(Method::DELETE).at(&r, "/api/owners"), "404");
    }

    #[test]
    fn constrained_routes_come_before_unconstrained_ones() {
        let routes = vec![
            route("plain", "/pets"),
            with_host(route("wild", "/pets"), "*.Example.com"),
            with_host(route("exact", "/pets"), "api.example.com:8443"),
            with_header(route("beta", "/pets"), "x-channel", "beta"),
        ];
        let r = router(vec![("v1", "/", VersionState::Published, routes)]);
        assert_eq!(get().host("api.example.com").at(&r, "/pets"), "v1 exact \"/pets\"");
        assert_eq!(get().host("eu.api.example.com").at(&r, "/pets"), "v1 wild \"/pets\"");
        assert_eq!(get().host("example.com").at(&r, "/pets"), "v1 plain \"/pets\"");
        assert_eq!(get().header("x-channel", "beta").at(&r, "/pets"), "v1 beta \"/pets\"");
        assert_eq!(get().header("x-channel", "stable").at(&r, "/pets"), "v1 plain \"/pets\"");
        assert_eq!(get().at(&r, "/pets"), "v1 plain \"/pets\"");
    }

    #[test]
    fn retired_versions_take_everything_under_their_base_and_drafts_nothing() {
        let r = router(vec![
            ("old", "/pets/v1", VersionState::Retired, vec![route("a", "/pets")]),
            ("draft", "/pets/v3", VersionState::Draft, vec![route("a", "/*")]),
            ("new", "/pets/v2", VersionState::Deprecated, vec![route("a", "/*")]),
        ]);
        assert_eq!(get().at(&r, "/pets/v1/anything"), "retired old");
        assert_eq!(get().at(&r, "/pets/v3/x"), "404");
        assert_eq!(get().at(&r, "/pets/v2/x"), "new a \"/x\"");
    }

    #[test]
    fn live_versions_shadow_retired_ones_on_the_same_base() {
        let r = router(vec![
            ("old", "/pets", VersionState::Retired, vec![]),
            ("new", "/pets", VersionState::Published, vec![route("a", "/dogs")]),
        ]);
        assert_eq!(get().at(&r, "/pets/dogs"), "new a \"/dogs\"");
        assert_eq!(get().at(&r, "/pets/cats"), "retired old");
    }

    #[test]
    fn invalid_routes_are_skipped_and_reported() {
        let mut r: Router<&str> = Router::default();
        let skipped = r
            .add_version(
                "/api",
                VersionState::Published,
                "v1",
                &[
                    route("ok", "/ok"),
                    route("bad", "/a/{id"),
                    route("up", "/../x"),
                    with_methods(route("m", "/m"), &["G T"]),
                ],
            )
            .unwrap();
        let ids: Vec<_> = skipped.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, ["bad", "up", "m"]);
        assert_eq!(get().at(&r, "/api/ok"), "v1 ok \"/ok\"");
    }

    #[test]
    fn request_host_comes_from_uri_or_host_header_without_port() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, HeaderValue::from_static("API.Example.com:8000"));
        assert_eq!(request_host(&Uri::from_static("/x"), &headers).as_deref(), Some("api.example.com"));
        assert_eq!(request_host(&Uri::from_static("http://h2.example/x"), &headers).as_deref(), Some("h2.example"));
        headers.insert(http::header::HOST, HeaderValue::from_static("[::1]:8000"));
        assert_eq!(request_host(&Uri::from_static("/x"), &headers).as_deref(), Some("[::1]"));
        assert_eq!(request_host(&Uri::from_static("/x"), &HeaderMap::new()), None);
    }

    /// The pets API: v1 retired, v2 published, v3 deprecated, v4 a draft, each also
    /// under its own base path, and a selector on `/pets`.
    fn selected(source: LabelSource, default: Option<&str>) -> Router<&'static str> {
        let versions: Vec<(&'static str, VersionState, Vec<SnapshotRoute>)> = vec![
            ("v1", VersionState::Retired, vec![route("a", "/*")]),
            (
                "v2",
                VersionState::Published,
                vec![route("dogs", "/dogs/{id}"), with_methods(route("cats", "/cats"), &["GET"])],
            ),
            ("v3", VersionState::Deprecated, vec![route("all", "/*")]),
            ("v4", VersionState::Draft, vec![route("all", "/*")]),
        ];
        let mut r = Router::default();
        for (label, state, routes) in &versions {
            r.add_version(&format!("/pets/{label}"), *state, *label, routes).unwrap();
        }
        r.add_version("/pets/v2/legacy", VersionState::Published, "legacy", &[route("x", "/*")]).unwrap();
        let candidates = versions.iter().map(|(label, state, routes)| (*label, *state, *label, routes.as_slice()));
        r.add_selector("/pets", source, default, candidates).unwrap();
        r
    }

    #[test]
    fn header_selectors_route_by_label_as_if_under_the_version_base() {
        let r = selected(LabelSource::Header(HeaderName::from_static("api-version")), Some("v2"));
        assert_eq!(get().header("api-version", "v2").at(&r, "/pets/dogs/7"), "v2 dogs \"/dogs/7\"");
        assert_eq!(get().header("api-version", " v3 ").at(&r, "/pets/dogs/7"), "v3 all \"/dogs/7\"");
        assert_eq!(get().at(&r, "/pets/dogs/7"), "v2 dogs \"/dogs/7\"", "the default");
        assert_eq!(get().at(&r, "/pets"), "404", "v2 has no route for the base itself");
        assert_eq!(get().header("api-version", "v1").at(&r, "/pets/anything"), "retired v1");
        assert_eq!(get().header("api-version", "v4").at(&r, "/pets/dogs/7"), "404", "drafts are never chosen");
        assert_eq!(get().header("api-version", "v9").at(&r, "/pets/dogs/7"), "404");
        assert_eq!(get().header("api-version", "V2").at(&r, "/pets/dogs/7"), "404", "labels are exact");
        assert_eq!(get().method(Method::POST).at(&r, "/pets/cats"), "405 [GET]");
        assert_eq!(get().header("api-version", "v2").header("api-version", "v3").at(&r, "/pets/dogs/7"), "400");
        assert_eq!(
            get().header("api-version", "v2").header("api-version", "v2").at(&r, "/pets/dogs/7"),
            "v2 dogs \"/dogs/7\""
        );
        // Versions' own base paths are deeper, so they win over the selector.
        assert_eq!(get().header("api-version", "v3").at(&r, "/pets/v2/dogs/7"), "v2 dogs \"/dogs/7\"");
        assert_eq!(get().at(&r, "/pets/v2/legacy/x"), "legacy x \"/x\"");
        assert_eq!(get().header("api-version", "v2").at(&r, "/petsx/dogs/7"), "404");
        assert_eq!(get().header("other", "v3").at(&r, "/pets/dogs/1"), "v2 dogs \"/dogs/1\"");
    }

    #[test]
    fn query_selectors_decode_the_parameter_and_need_a_label_without_default() {
        let r = selected(LabelSource::Query("version".into()), None);
        assert_eq!(get().query("version=v3").at(&r, "/pets/x"), "v3 all \"/x\"");
        assert_eq!(get().query("a=1&version=v2&b").at(&r, "/pets/dogs/1"), "v2 dogs \"/dogs/1\"");
        assert_eq!(get().query("%76ersion=%76%33").at(&r, "/pets/x"), "v3 all \"/x\"", "percent-decoded");
        assert_eq!(get().query("version=v3&version=v3").at(&r, "/pets/x"), "v3 all \"/x\"");
        assert_eq!(get().query("version=v3&version=v2").at(&r, "/pets/x"), "400");
        assert_eq!(get().at(&r, "/pets/x"), "404", "no label and no default");
        assert_eq!(get().query("versions=v3").at(&r, "/pets/x"), "404");
        assert_eq!(get().query("version").at(&r, "/pets/x"), "404", "an empty label names no version");
        assert_eq!(get().query("version=v1").at(&r, "/pets/x"), "retired v1");
    }

    #[test]
    fn a_selector_owns_its_base_path_but_shorter_versions_still_take_the_rest() {
        let mut r = Router::default();
        r.add_version("/", VersionState::Published, "root", &[route("all", "/*")]).unwrap();
        r.add_version("/shop/v1", VersionState::Published, "v1", &[route("o", "/orders")]).unwrap();
        let v1 = [route("o", "/orders")];
        let header = || LabelSource::Header(HeaderName::from_static("x-v"));
        r.add_selector("/shop", header(), None, [("v1", VersionState::Published, "v1", &v1[..])]).unwrap();
        assert_eq!(get().header("x-v", "v1").at(&r, "/shop/orders"), "v1 o \"/orders\"");
        // The chosen version has no such route: on to shorter base paths, as for versions.
        assert_eq!(get().header("x-v", "v1").at(&r, "/shop/carts"), "root all \"/shop/carts\"");
        // An unknown label does not fall through to `/`.
        assert_eq!(get().header("x-v", "v7").at(&r, "/shop/orders"), "404");
        assert_eq!(get().at(&r, "/elsewhere"), "root all \"/elsewhere\"");
        assert_eq!(r.add_selector("/shop/", header(), None, []), Err(RouteError::SelectorTaken("/shop/".into())));
    }

    #[test]
    fn form_decoding_keeps_malformed_escapes() {
        assert_eq!(form_decode("a+b%20c"), "a b c");
        assert_eq!(form_decode("100%"), "100%");
        assert_eq!(form_decode("%zz%4"), "%zz%4");
        assert_eq!(form_decode("%C3%A9"), "é");
        assert!(matches!(form_decode("plain"), Cow::Borrowed("plain")));
    }

    /// Versions and routes [`Router::route`] examined for one request.
    fn examined(router: &Router<&'static str>, req: &Req, path: &str) -> (String, usize) {
        EXAMINED.with(|n| n.set(0));
        let outcome = req.at(router, path);
        (outcome, EXAMINED.with(|n| n.get()))
    }

    /// Ten routes of every shape, with methods, for one version.
    fn ten_routes(tag: &str) -> Vec<SnapshotRoute> {
        vec![
            route(&format!("{tag}-items"), "/items"),
            route(&format!("{tag}-item"), "/items/{id}"),
            route(&format!("{tag}-item-json"), "/items/{id}.json"),
            route(&format!("{tag}-parts"), "/items/{id}/parts/*"),
            route(&format!("{tag}-me"), "/users/me"),
            route(&format!("{tag}-user"), "/users/{uid}"),
            with_methods(route(&format!("{tag}-get-health"), "/health"), &["GET"]),
            with_methods(route(&format!("{tag}-post-health"), "/health"), &["POST"]),
            route(&format!("{tag}-orders"), "/orders/*"),
            with_host(route(&format!("{tag}-admin"), "/admin"), "admin.example.com"),
        ]
    }

    #[test]
    fn ten_thousand_routes_match_with_the_same_work_as_ten() {
        let mut big: Router<&'static str> = Router::default();
        let names: Vec<&'static str> = (0..1000).map(|i| &*Box::leak(format!("v{i}").into_boxed_str())).collect();
        for (i, name) in names.iter().enumerate() {
            let base = format!("/svc{}/v{}", i % 100, i / 100);
            let skipped = big.add_version(&base, VersionState::Published, name, &ten_routes(name)).unwrap();
            assert!(skipped.is_empty());
        }
        let small = router(vec![("v0", "/svc0/v0", VersionState::Published, ten_routes("v0"))]);

        let cases = [
            ("/svc42/v7/items", "v742 v742-items \"/items\""),
            ("/svc42/v7/items/9", "v742 v742-item \"/items/9\""),
            ("/svc42/v7/items/9.json", "v742 v742-item-json \"/items/9.json\""),
            ("/svc42/v7/items/9/parts/a/b", "v742 v742-parts \"/items/9/parts/a/b\""),
            ("/svc99/v9/users/me", "v999 v999-me \"/users/me\""),
            ("/svc99/v9/users/7", "v999 v999-user \"/users/7\""),
            ("/svc1/v0/orders", "v1 v1-orders \"/orders\""),
            ("/svc1/v0/health", "v1 v1-get-health \"/health\""),
            ("/svc1/v0/admin", "404"),
            ("/svc1/v0/nothing/here", "404"),
        ];
        for (path, expected) in cases {
            let (outcome, work) = examined(&big, &get(), path);
            assert_eq!(outcome, expected, "{path}");
            // The same request to a router holding only one version with the same routes.
            let remainder = path.splitn(4, '/').nth(3).unwrap();
            let (_, small_work) = examined(&small, &get(), &format!("/svc0/v0/{remainder}"));
            assert_eq!(work, small_work, "{path}: the work grew with the number of routes");
            assert!(work <= 4, "{path}: examined {work}");
        }
        // Paths under no version cost nothing at all.
        for path in ["/svc100/v0/items", "/svc5/v10/items", "/"] {
            assert_eq!(examined(&big, &get(), path), ("404".to_owned(), 0), "{path}");
        }
        let (outcome, _) = examined(&big, &get().method(Method::DELETE), "/svc3/v2/health");
        assert_eq!(outcome, "405 [GET, POST]");
        let (outcome, _) = examined(&big, &get().host("admin.example.com"), "/svc3/v2/admin");
        assert_eq!(outcome, "v203 v203-admin \"/admin\"");
    }

    /// The precedence rules applied the slow, obvious way: every version in order,
    /// every route in rank order.
    fn reference<'r>(router: &'r Router<&'static str>, req: &RequestFacts<'_>) -> RouteOutcome<'r, &'static str> {
        fn segment_matches(p: &Segment, s: &str) -> bool {
            match p {
                Segment::Literal(l) => l == s,
                Segment::Param => !s.is_empty(),
                Segment::Mixed(pieces) => match_pieces(pieces, s),
            }
        }
        fn path_matches(pattern: &PathPattern, request: &[&str]) -> bool {
            match pattern {
                PathPattern::Exact(s) => {
                    s.len() == request.len() && s.iter().zip(request).all(|(p, r)| segment_matches(p, r))
                }
                PathPattern::Prefix(s) => {
                    s.len() <= request.len() && s.iter().zip(request).all(|(p, r)| segment_matches(p, r))
                }
            }
        }
        let mut order: Vec<&VersionRoutes<&'static str>> = router.versions.iter().collect();
        order.sort_by_key(|v| (Reverse(split_segments(&v.base).len()), Reverse(v.live)));
        let mut allow = Vec::new();
        for version in order {
            let Some(rest) = req.path.strip_prefix(version.base.as_str()) else { continue };
            if !(rest.is_empty() || rest.starts_with('/')) {
                continue;
            }
            if !version.live {
                if allow.is_empty() {
                    return RouteOutcome::Retired(&version.payload);
                }
                break;
            }
            let segments = split_segments(rest);
            for route in &version.routes {
                if !path_matches(&route.path, &segments) || !route.matches_host_and_headers(req) {
                    continue;
                }
                if route.methods.is_empty() || route.methods.contains(req.method) {
                    return RouteOutcome::Matched {
                        version: &version.payload,
                        route_id: &route.id,
                        remainder_start: version.base.len(),
                    };
                }
                allow.extend(route.methods.iter().cloned());
            }
        }
        if allow.is_empty() { RouteOutcome::NotFound } else { method_not_allowed(allow) }
    }

    #[test]
    fn indexed_matching_agrees_with_the_obvious_scan() {
        let templates = [
            "/",
            "/*",
            "/a",
            "/a/*",
            "/a/b",
            "/a/{x}",
            "/a/{x}/*",
            "/{x}",
            "/{x}/b",
            "/{x}.json",
            "/a/{x}.{y}",
            "/a/b/",
            "/b/*",
            "/{x}/{y}/c",
        ];
        let mut versions = Vec::new();
        for (i, base) in ["/", "/a", "/a/b", "/b", "/a"].into_iter().enumerate() {
            let state = if i == 4 { VersionState::Retired } else { VersionState::Published };
            let routes = templates
                .iter()
                .enumerate()
                .filter(|(j, _)| (i + j) % 3 != 0)
                .map(|(j, t)| {
                    let r = route(&format!("r{j}"), t);
                    match j % 4 {
                        0 => with_methods(r, &["POST"]),
                        1 => with_host(r, "h.example"),
                        _ => r,
                    }
                })
                .collect();
            versions.push((["root", "a", "ab", "b", "old-a"][i], base, state, routes));
        }
        let r = router(versions);
        let words = ["a", "b", "c", "x.json", "p.q", ""];
        let mut paths = vec!["/".to_owned()];
        for w1 in words {
            paths.push(format!("/{w1}"));
            for w2 in words {
                paths.push(format!("/{w1}/{w2}"));
                for w3 in ["c", "b", ""] {
                    paths.push(format!("/{w1}/{w2}/{w3}"));
                }
            }
        }
        let headers = HeaderMap::new();
        for path in &paths {
            for method in [Method::GET, Method::POST] {
                for host in [None, Some("h.example")] {
                    let facts = RequestFacts { method: &method, host, headers: &headers, path, query: None };
                    assert_eq!(r.route(&facts), reference(&r, &facts), "{method} {host:?} {path}");
                }
            }
        }
    }
}
