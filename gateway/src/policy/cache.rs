//! Response cache for GET and HEAD: in memory, bounded in bytes across all versions,
//! least recently used entries evicted first.
//!
//! - Keyed by version (its partition), consumer (authenticated versions), host,
//!   normalized path, query, and the values of the request headers the response's
//!   `Vary` names. Only GET responses are stored; HEAD is answered from them.
//!   `Vary: *` is never stored.
//! - Requests: `Cache-Control: no-store` bypasses the cache; `no-cache` (or
//!   `Pragma: no-cache`, or `max-age=0`) skips the lookup but stores the fresh answer;
//!   `max-age=N` refuses entries older than N seconds. Requests carrying
//!   `Authorization` bypass the cache: the upstream authenticates those itself, and
//!   the gateway cannot tell whose answer it would be keeping.
//! - Responses: only 200, 203, 204, 301, 404 and 410 without `Set-Cookie`, and not
//!   `private`, `no-store` or `no-cache`. Lifetime: `s-maxage`, else `max-age`, else
//!   the policy's TTL, less the upstream's `Age`.
//! - Versions that require API keys or a JWT cache per consumer, and only responses
//!   marked `Cache-Control: public`; without a consumer identity (a token alone names
//!   no consumer) they bypass the cache.
//! - Bodies stream to the client while a copy is kept, only as long as it stays within
//!   the policy's `max_body_bytes`; beyond that the copy is dropped and nothing stored.
//! - A non-error answer to an unsafe method (POST, PUT, PATCH, DELETE) drops the
//!   stored entries of its URL (for the same consumer).
//! - Each version's entries live in a partition tied to its policies, upstream and
//!   base path: a snapshot that changes any of them (or removes the version or its
//!   cache policy) drops them.
//!
//! Conditional requests are not revalidated: a hit is served whole, and upstream 304s
//! pass through unstored.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AGE, AUTHORIZATION, CACHE_CONTROL, CONTENT_LENGTH, PRAGMA, SET_COOKIE, VARY};
use http::response::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use turnpike_domain::policy::Cache as CacheSpec;
use turnpike_domain::snapshot::SnapshotVersion;

pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
const HIT: HeaderValue = HeaderValue::from_static("HIT");
const MISS: HeaderValue = HeaderValue::from_static("MISS");

/// Capacity of the gateway's response cache when not configured.
pub const DEFAULT_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

/// Bookkeeping counted against the capacity for each entry, besides its key, headers and body.
const ENTRY_OVERHEAD: usize = 256;
/// Longest lifetime honoured, whatever the upstream says.
const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
const STORABLE: [StatusCode; 6] = [
    StatusCode::OK,
    StatusCode::NON_AUTHORITATIVE_INFORMATION,
    StatusCode::NO_CONTENT,
    StatusCode::MOVED_PERMANENTLY,
    StatusCode::NOT_FOUND,
    StatusCode::GONE,
];

// ---------------------------------------------------------------------------
// The store

/// The gateway-wide store, shared by every snapshot's versions.
#[derive(Debug)]
pub struct ResponseCache {
    capacity: AtomicUsize,
    store: Mutex<Store>,
}

#[derive(Debug, Default)]
struct Store {
    /// Version id → (fingerprint of what its responses depend on, partition).
    versions: HashMap<String, (String, u64)>,
    /// Partitions entries may be stored in.
    live: HashSet<u64>,
    next_partition: u64,
    resources: HashMap<Arc<PrimaryKey>, Resource>,
    /// Least recently used first.
    lru: BTreeMap<u64, (Arc<PrimaryKey>, Arc<VariantKey>)>,
    tick: u64,
    bytes: usize,
}

/// Which URL, as whom, in which version.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PrimaryKey {
    partition: u64,
    consumer: Option<String>,
    host: Option<String>,
    path: String,
    query: Option<String>,
}

impl PrimaryKey {
    fn size(&self) -> usize {
        let len = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        len(&self.consumer) + len(&self.host) + self.path.len() + len(&self.query)
    }
}

/// The request's values of the headers a resource varies on, in the resource's order.
type VariantKey = Vec<Vec<HeaderValue>>;

/// A URL's stored variants, all varying on the same headers.
#[derive(Debug)]
struct Resource {
    vary: Vec<HeaderName>,
    variants: HashMap<Arc<VariantKey>, Entry>,
}

#[derive(Debug)]
struct Entry {
    response: Arc<Stored>,
    tick: u64,
    size: usize,
}

/// A stored response.
#[derive(Debug)]
struct Stored {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// When the response arrived.
    received: Instant,
    expires: Instant,
    /// The upstream's `Age` when it arrived, in seconds.
    initial_age: u64,
}

impl Stored {
    fn age(&self, now: Instant) -> u64 {
        self.initial_age + now.saturating_duration_since(self.received).as_secs()
    }
}

impl ResponseCache {
    pub fn new(capacity_bytes: u64) -> ResponseCache {
        ResponseCache {
            capacity: AtomicUsize::new(usize::try_from(capacity_bytes).unwrap_or(usize::MAX)),
            store: Mutex::new(Store::default()),
        }
    }

    /// Changes the capacity, evicting entries until they fit.
    pub fn set_capacity(&self, bytes: u64) {
        let capacity = usize::try_from(bytes).unwrap_or(usize::MAX);
        self.capacity.store(capacity, Ordering::Relaxed);
        self.lock().evict_to(capacity);
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // Nothing panics while holding the lock; should it, the store is still consistent
        // enough to serve (at worst a byte count is off).
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The partition for a version's entries: the same as before while `fingerprint`
    /// stays the same, else a new one, and the old one's entries are dropped.
    fn partition(&self, version_id: &str, fingerprint: String) -> u64 {
        let mut store = self.lock();
        if let Some((known, partition)) = store.versions.get(version_id)
            && *known == fingerprint
        {
            return *partition;
        }
        let partition = store.next_partition;
        store.next_partition += 1;
        store.live.insert(partition);
        if let Some((_, old)) = store.versions.insert(version_id.to_owned(), (fingerprint, partition)) {
            store.drop_partition(old);
        }
        partition
    }

    /// Drops the partitions of versions that no longer cache (or no longer exist).
    pub(crate) fn retain_versions(&self, caching: &HashSet<&str>) {
        let mut store = self.lock();
        let gone: Vec<String> = store.versions.keys().filter(|v| !caching.contains(v.as_str())).cloned().collect();
        for version in gone {
            if let Some((_, partition)) = store.versions.remove(&version) {
                store.drop_partition(partition);
            }
        }
    }

    fn get(&self, key: &PrimaryKey, request: &HeaderMap, max_age: Option<u64>, now: Instant) -> Option<Arc<Stored>> {
        let mut store = self.lock();
        let Store { resources, lru, tick, .. } = &mut *store;
        let resource = resources.get_mut(key)?;
        let variant = variant_key(&resource.vary, request);
        let entry = resource.variants.get_mut(&variant)?;
        if entry.response.expires <= now {
            store.remove_variant(key, &variant);
            return None;
        }
        if max_age.is_some_and(|limit| entry.response.age(now) > limit) {
            return None;
        }
        *tick += 1;
        if let Some(keys) = lru.remove(&entry.tick) {
            lru.insert(*tick, keys);
        }
        entry.tick = *tick;
        Some(entry.response.clone())
    }

    fn insert(&self, key: Arc<PrimaryKey>, vary: Vec<HeaderName>, variant: VariantKey, response: Stored) -> bool {
        let header_bytes: usize = response.headers.iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
        let variant_bytes: usize = variant.iter().flatten().map(HeaderValue::len).sum();
        let size = ENTRY_OVERHEAD + key.size() + variant_bytes + header_bytes + response.body.len();
        let capacity = self.capacity.load(Ordering::Relaxed);
        if size > capacity {
            return false;
        }
        let mut store = self.lock();
        if !store.live.contains(&key.partition) {
            // The version's policies changed while this response was on its way.
            return false;
        }
        if store.resources.get(&key).is_some_and(|r| r.vary != vary) {
            store.remove_resource(&key);
        }
        store.remove_variant(&key, &variant);
        store.evict_to(capacity - size);
        store.tick += 1;
        let tick = store.tick;
        let variant = Arc::new(variant);
        store.lru.insert(tick, (key.clone(), variant.clone()));
        store.bytes += size;
        let resource = store.resources.entry(key).or_insert_with(|| Resource { vary, variants: HashMap::new() });
        resource.variants.insert(variant, Entry { response: Arc::new(response), tick, size });
        true
    }

    fn invalidate(&self, key: &PrimaryKey) {
        self.lock().remove_resource(key);
    }

    #[cfg(test)]
    fn usage(&self) -> (usize, usize) {
        let store = self.lock();
        (store.lru.len(), store.bytes)
    }
}

impl Store {
    fn remove_variant(&mut self, key: &PrimaryKey, variant: &VariantKey) {
        let Some(resource) = self.resources.get_mut(key) else { return };
        if let Some(entry) = resource.variants.remove(variant) {
            self.lru.remove(&entry.tick);
            self.bytes -= entry.size;
        }
        if resource.variants.is_empty() {
            self.resources.remove(key);
        }
    }

    /// Evicts the least recently used entries until at most `bytes` are used.
    fn evict_to(&mut self, bytes: usize) {
        while self.bytes > bytes {
            let Some((_, (key, variant))) = self.lru.pop_first() else { break };
            self.remove_variant(&key, &variant);
        }
    }

    fn remove_resource(&mut self, key: &PrimaryKey) {
        if let Some(resource) = self.resources.remove(key) {
            for entry in resource.variants.into_values() {
                self.lru.remove(&entry.tick);
                self.bytes -= entry.size;
            }
        }
    }

    fn drop_partition(&mut self, partition: u64) {
        self.live.remove(&partition);
        let keys: Vec<Arc<PrimaryKey>> = self.resources.keys().filter(|k| k.partition == partition).cloned().collect();
        for key in keys {
            self.remove_resource(&key);
        }
    }
}

fn variant_key(vary: &[HeaderName], request: &HeaderMap) -> VariantKey {
    vary.iter().map(|name| request.get_all(name).iter().cloned().collect()).collect()
}

/// The header names a response varies on, sorted; `None` for `Vary: *`.
fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names = Vec::new();
    for token in headers.get_all(VARY).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')) {
        match token.trim() {
            "" => {}
            "*" => return None,
            name => names.push(HeaderName::try_from(name).ok()?),
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Some(names)
}

// ---------------------------------------------------------------------------
// Cache-Control

/// The `Cache-Control` directives the cache acts on.
#[derive(Debug, Default, PartialEq, Eq)]
struct Directives {
    no_store: bool,
    no_cache: bool,
    private: bool,
    public: bool,
    max_age: Option<u64>,
    s_maxage: Option<u64>,
}

impl Directives {
    fn parse(headers: &HeaderMap) -> Directives {
        let mut d = Directives::default();
        for directive in
            headers.get_all(CACHE_CONTROL).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(','))
        {
            let (name, value) = match directive.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            // An unreadable number counts as 0: stale at once, the safe reading.
            let seconds = || value.map(|v| v.parse::<u64>().unwrap_or(0));
            match name.to_ascii_lowercase().as_str() {
                "no-store" => d.no_store = true,
                // `no-cache="field"` and `private="field"` are read as the whole response.
                "no-cache" => d.no_cache = true,
                "private" => d.private = true,
                "public" => d.public = true,
                "max-age" => d.max_age = seconds(),
                "s-maxage" => d.s_maxage = seconds(),
                _ => {}
            }
        }
        d
    }
}

// ---------------------------------------------------------------------------
// The policy of one version

/// A version's compiled cache policy.
#[derive(Debug)]
pub struct CachePolicy {
    store: Arc<ResponseCache>,
    partition: u64,
    ttl: Duration,
    max_body_bytes: u64,
    /// The version requires API keys: entries are per consumer and only public ones.
    per_consumer: bool,
}

/// What the cache needs to know about a request.
#[derive(Debug)]
pub struct CacheRequest<'a> {
    pub method: &'a Method,
    /// Lower-case host without port.
    pub host: Option<String>,
    /// The normalized path.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// Who is calling, on versions that require API keys.
    pub consumer: Option<&'a str>,
}

/// The cache's answer to a request.
#[derive(Debug)]
pub enum Lookup {
    /// Serve this stored response.
    Hit(Response<Full<Bytes>>),
    /// Forward, then hand the response to [`Pending::respond`].
    Miss(Pending),
    /// Not the cache's business (e.g. `OPTIONS`).
    Pass,
}

/// What to do with the upstream's response to a request the cache did not answer.
#[derive(Debug)]
pub struct Pending {
    store: Arc<ResponseCache>,
    kind: PendingKind,
}

#[derive(Debug)]
enum PendingKind {
    /// A GET whose response may be stored.
    Fill { key: Arc<PrimaryKey>, request: HeaderMap, ttl: Duration, max_body_bytes: u64, public_only: bool },
    /// A GET or HEAD whose response is never stored.
    Bypass,
    /// An unsafe method: a non-error answer makes the URL's entries stale.
    Invalidate(PrimaryKey),
}

impl CachePolicy {
    pub fn compile(spec: &CacheSpec, version: &SnapshotVersion, store: &Arc<ResponseCache>) -> CachePolicy {
        // What a version's answers depend on besides the request: when it changes,
        // the stored answers are dropped.
        let fingerprint = serde_json::to_string(&(&version.policies, &version.upstream_id, &version.base_path))
            .expect("policies serialize");
        CachePolicy {
            store: store.clone(),
            partition: store.partition(&version.id, fingerprint),
            ttl: Duration::from_secs(u64::from(spec.ttl_seconds.max(1))),
            max_body_bytes: spec.max_body_bytes,
            // A JWT-protected version caches only for API-key consumers (see `lookup_at`):
            // answers to one token's holder are never served to another.
            per_consumer: version.policies.key_auth.is_some() || version.policies.jwt.is_some(),
        }
    }

    pub fn lookup(&self, req: &CacheRequest<'_>) -> Lookup {
        self.lookup_at(req, Instant::now())
    }

    fn lookup_at(&self, req: &CacheRequest<'_>, now: Instant) -> Lookup {
        let pending = |kind| Lookup::Miss(Pending { store: self.store.clone(), kind });
        let key = || PrimaryKey {
            partition: self.partition,
            consumer: req.consumer.filter(|_| self.per_consumer).map(str::to_owned),
            host: req.host.clone(),
            path: req.path.to_owned(),
            query: req.query.map(str::to_owned),
        };
        let head = *req.method == Method::HEAD;
        if *req.method != Method::GET && !head {
            return if req.method.is_safe() { Lookup::Pass } else { pending(PendingKind::Invalidate(key())) };
        }
        let directives = Directives::parse(req.headers);
        let bypass = directives.no_store
            || req.headers.contains_key(AUTHORIZATION)
            || (self.per_consumer && req.consumer.is_none());
        if bypass {
            return pending(PendingKind::Bypass);
        }
        let key = key();
        let no_cache = directives.no_cache
            || directives.max_age == Some(0)
            || (!req.headers.contains_key(CACHE_CONTROL)
                && req.headers.get_all(PRAGMA).iter().any(|v| v.as_bytes().eq_ignore_ascii_case(b"no-cache")));
        if !no_cache && let Some(stored) = self.store.get(&key, req.headers, directives.max_age, now) {
            return Lookup::Hit(hit(&stored, head, now));
        }
        if head {
            return pending(PendingKind::Bypass);
        }
        pending(PendingKind::Fill {
            key: Arc::new(key),
            request: req.headers.clone(),
            ttl: self.ttl,
            max_body_bytes: self.max_body_bytes,
            public_only: self.per_consumer,
        })
    }
}

fn hit(stored: &Stored, head: bool, now: Instant) -> Response<Full<Bytes>> {
    let body = if head { Bytes::new() } else { stored.body.clone() };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = stored.status;
    *response.headers_mut() = stored.headers.clone();
    response.headers_mut().insert(AGE, HeaderValue::from(stored.age(now)));
    response.headers_mut().insert(X_CACHE, HIT);
    response
}

impl Pending {
    /// Marks the response and, when it may be stored, copies its body into the cache
    /// as it streams to the client.
    pub fn respond<B>(self, parts: &mut Parts, body: B) -> UpstreamBody<B>
    where
        B: Body<Data = Bytes>,
    {
        self.respond_at(parts, body, Instant::now())
    }

    fn respond_at<B>(self, parts: &mut Parts, body: B, now: Instant) -> UpstreamBody<B>
    where
        B: Body<Data = Bytes>,
    {
        let (key, request, ttl, max_body_bytes, public_only) = match self.kind {
            PendingKind::Invalidate(key) => {
                if !parts.status.is_client_error() && !parts.status.is_server_error() {
                    self.store.invalidate(&key);
                }
                return UpstreamBody::new(body);
            }
            PendingKind::Bypass => {
                parts.headers.insert(X_CACHE, MISS);
                return UpstreamBody::new(body);
            }
            PendingKind::Fill { key, request, ttl, max_body_bytes, public_only } => {
                (key, request, ttl, max_body_bytes, public_only)
            }
        };
        let fill = storable(parts, ttl, max_body_bytes, public_only).map(|(vary, lifetime, initial_age)| {
            let remaining = lifetime.saturating_sub(Duration::from_secs(initial_age));
            Fill {
                store: self.store,
                variant: variant_key(&vary, &request),
                key,
                vary,
                status: parts.status,
                headers: parts.headers.clone(),
                received: now,
                expires: now + remaining,
                initial_age,
                limit: max_body_bytes,
                chunks: Vec::new(),
                size: 0,
            }
        });
        parts.headers.insert(X_CACHE, MISS);
        let fill = fill.filter(|f| f.expires > now);
        let mut body = UpstreamBody { inner: body, fill: fill.map(Box::new) };
        if body.inner.is_end_stream() {
            // Servers never poll an empty body, so the copy is complete already.
            body.finish();
        }
        body
    }
}

/// Whether a response may be stored: its `Vary` names, lifetime and initial age.
fn storable(
    parts: &Parts,
    ttl: Duration,
    max_body_bytes: u64,
    public_only: bool,
) -> Option<(Vec<HeaderName>, Duration, u64)> {
    if !STORABLE.contains(&parts.status) || parts.headers.contains_key(SET_COOKIE) {
        return None;
    }
    let d = Directives::parse(&parts.headers);
    if d.no_store || d.no_cache || d.private || (public_only && !d.public) {
        return None;
    }
    let too_long = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .is_some_and(|len| len > max_body_bytes);
    if too_long {
        return None;
    }
    let vary = vary_names(&parts.headers)?;
    let lifetime = d.s_maxage.or(d.max_age).map_or(ttl, Duration::from_secs).min(MAX_LIFETIME);
    let initial_age = parts.headers.get(AGE).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).unwrap_or(0);
    Some((vary, lifetime, initial_age))
}

// ---------------------------------------------------------------------------
// The upstream's body, copied on its way when it may be stored

/// The upstream's response body, streamed to the client unchanged. When the response
/// may be cached, a copy of it is kept and stored once the body has ended, unless it
/// outgrew the limit, failed or carried trailers (then the copy is dropped).
#[derive(Debug)]
pub struct UpstreamBody<B = Incoming> {
    inner: B,
    fill: Option<Box<Fill>>,
}

#[derive(Debug)]
struct Fill {
    store: Arc<ResponseCache>,
    key: Arc<PrimaryKey>,
    vary: Vec<HeaderName>,
    variant: VariantKey,
    status: StatusCode,
    headers: HeaderMap,
    received: Instant,
    expires: Instant,
    initial_age: u64,
    limit: u64,
    chunks: Vec<Bytes>,
    size: u64,
}

impl<B> UpstreamBody<B> {
    /// A body that is only passed through.
    pub fn new(inner: B) -> Self {
        UpstreamBody { inner, fill: None }
    }

    fn finish(&mut self) {
        let Some(fill) = self.fill.take() else { return };
        let mut body = Vec::with_capacity(usize::try_from(fill.size).unwrap_or(0));
        for chunk in &fill.chunks {
            body.extend_from_slice(chunk);
        }
        let mut headers = fill.headers;
        if fill.status != StatusCode::NO_CONTENT {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let stored = Stored {
            status: fill.status,
            headers,
            body: Bytes::from(body),
            received: fill.received,
            expires: fill.expires,
            initial_age: fill.initial_age,
        };
        fill.store.insert(fill.key, fill.vary, fill.variant, stored);
    }
}

impl<B> Body for UpstreamBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(fill) = &mut this.fill {
            match &polled {
                Poll::Pending => {}
                Poll::Ready(Some(Ok(frame))) => match frame.data_ref() {
                    Some(data) => {
                        fill.size += data.len() as u64;
                        if fill.size > fill.limit {
                            this.fill = None;
                        } else {
                            fill.chunks.push(data.clone());
                            // Servers stop polling once the body says it has ended.
                            if this.inner.is_end_stream() {
                                this.finish();
                            }
                        }
                    }
                    None => this.fill = None,
                },
                Poll::Ready(Some(Err(_))) => this.fill = None,
                Poll::Ready(None) => this.finish(),
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::BodyExt;
    use turnpike_domain::model::VersionState;
    use turnpike_domain::policy::{KeyAuth, Policies};

    use super::*;

    fn version(id: &str, policies: Policies) -> SnapshotVersion {
        SnapshotVersion {
            id: id.into(),
            api_id: "api".into(),
            api_slug: "api".into(),
            label: id.into(),
            state: VersionState::Published,
            base_path: "/v1".into(),
            upstream_id: None,
            sunset_at: None,
            deprecated_at: None,
            successor_base_path: None,
            routes: vec![],
            policies,
            openapi: None,
            docs_headers: Vec::new(),
        }
    }

    fn cached(policies: Policies) -> Policies {
        Policies { cache: Some(CacheSpec { ttl_seconds: 60, max_body_bytes: 1000 }), ..policies }
    }

    fn policy(store: &Arc<ResponseCache>, policies: Policies) -> CachePolicy {
        let v = version("v1", cached(policies));
        CachePolicy::compile(v.policies.cache.as_ref().unwrap(), &v, store)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    struct Req {
        method: Method,
        path: &'static str,
        headers: HeaderMap,
        consumer: Option<&'static str>,
    }

    fn get(path: &'static str) -> Req {
        Req { method: Method::GET, path, headers: HeaderMap::new(), consumer: None }
    }

    impl Req {
        fn with(mut self, pairs: &[(&'static str, &'static str)]) -> Req {
            self.headers.extend(headers(pairs));
            self
        }

        fn lookup(&self, policy: &CachePolicy, now: Instant) -> Lookup {
            let req = CacheRequest {
                method: &self.method,
                host: Some("api.example".into()),
                path: self.path,
                query: None,
                headers: &self.headers,
                consumer: self.consumer,
            };
            policy.lookup_at(&req, now)
        }
    }

    /// Runs a miss to the end: the response with `pairs` and `body` streams through.
    async fn fill(
        lookup: Lookup,
        status: u16,
        pairs: &[(&'static str, &'static str)],
        body: &'static str,
        now: Instant,
    ) -> Parts {
        let Lookup::Miss(pending) = lookup else { panic!("expected a miss, got {lookup:?}") };
        let (mut parts, ()) = Response::builder().status(status).body(()).unwrap().into_parts();
        parts.headers = headers(pairs);
        let upstream = Full::new(Bytes::from_static(body.as_bytes()));
        let streamed = pending.respond_at(&mut parts, upstream, now).collect().await.unwrap().to_bytes();
        assert_eq!(streamed, body.as_bytes(), "the body passes through unchanged");
        parts
    }

    async fn hit_body(lookup: Lookup) -> (HeaderMap, Bytes) {
        let Lookup::Hit(response) = lookup else { panic!("expected a hit, got {lookup:?}") };
        let (parts, body) = response.into_parts();
        (parts.headers, body.collect().await.unwrap().to_bytes())
    }

    fn is_miss(lookup: &Lookup) -> bool {
        matches!(lookup, Lookup::Miss(_))
    }

    #[tokio::test]
    async fn a_stored_get_answers_get_and_head_with_age_until_it_expires() {
        let store = Arc::new(ResponseCache::new(1 << 20));
        let p = policy(&store, Policies::default());
        let t0 = Instant::now();
        let miss =
            fill(get("/v1/a").lookup(&p, t0), 200, &[("cache-control", "max-age=30"), ("age", "5")], "hello", t0).await;
        assert_eq!(miss.headers[X_CACHE], "MISS");

        let (h, body) = hit_body(get("/v1/a").lookup(&p, t0 + Duration::from_secs(3))).await;
        assert_eq!((h[X_CACHE].to_str().unwrap(), h[AGE].to_str().unwrap()), ("HIT", "8"));
        assert_eq!((body.as_ref(), h[CONTENT_LENGTH].to_str().unwrap()), (b"hello".as_ref(), "5"));
        let head = Req { method: Method::HEAD, ..get("/v1/a") };
        let (h, body) = hit_body(head.lookup(&p, t0)).await;
        assert_eq!((body.len(), h[CONTENT_LENGTH].to_str().unwrap()), (0, "5"));

        // 30 s of freshness, 5 of them spent before it arrived.
        assert!(matches!(get("/v1/a").lookup(&p, t0 + Duration::from_secs(24)), Lookup::Hit(_)));
        assert!(is_miss(&get("/v1/a").lookup(&p, t0 + Duration::from_secs(25))));
        assert_eq!(store.usage(), (0, 0), "the expired entry is gone");
    }

    #[tokio::test]
    async fn lifetime_is_s_maxage_then_max_age_then_the_ttl() {
        let store = Arc::new(ResponseCache::new(1 << 20));
        let p = policy(&store, Policies::default());
        let t0 = Instant::now();
        for (path, cc, fresh_for) in
            [("/v1/s", "max-age=5, s-maxage=100", 100), ("/v1/m", "max-age=7", 7), ("/v1/t", "public", 60)]
        {
            fill(get(path).lookup(&p, t0), 200, &[("cache-control", cc)], "x", t0).await;
            let at = |s| t0 + Duration::from_secs(s);
            assert!(matches!(get(path).lookup(&p, at(fresh_for - 1)), Lookup::Hit(_)), "{cc}");
            assert!(is_miss(&get(path).lookup(&p, at(fresh_for))), "{cc}");
        }
    }

    #[tokio::test]
    async fn responses_that_must_not_be_stored_are_not() {
        let store = Arc::new(ResponseCache::new(1 << 20));
        let p = policy(&store, Policies::default());
        let now = Instant::now();
        let cases: [(u16, &[(&'static str, &'static str)]); 9] = [
            (200, &[("cache-control", "no-store")]),
            (200, &[("cache-control", "private, max-age=60")]),
            (200, &[("cache-control", "no-cache")]),
            (200, &[("cache-control", "max-age=0")]),
            (200, &[("vary", "Accept, *")]),
            (200, &[("set-cookie", "session=1")]),
            (200, &[("content-length", "1001")]),
            (500, &[]),
            (302, &[]),
        ];
        for (status, pairs) in cases {
            fill(get("/v1/x").lookup(&p, now), status, pairs, "x", now).await;
            assert!(is_miss(&get("/v1/x").lookup(&p, now)), "{status} {pairs:?} was stored");
        }
        for status in [204, 301, 404, 410] {
            let path = Box::leak(format!("/v1/{status}").into_boxed_str());
            fill(get(path).lookup(&p, now), status, &[], "", now).await;
            assert!(matches!(get(path).lookup(&p, now), Lookup::Hit(_)), "{status} was not stored");
        }
    }

    /// A body of ready chunks (and optional trailers) that says when it has ended, as
    /// hyper's bodies do.
    struct Chunks(std::collections::VecDeque<Frame<Bytes>>);

    impl Chunks {
        fn new(sizes: &[usize], trailers: bool) -> Chunks {
            let mut frames: std::collections::VecDeque<_> =
                sizes.iter().map(|n| Frame::data(Bytes::from(vec![b'x'; *n]))).collect();
            if trailers {
                frames.push_back(Frame::trailers(headers(&[("grpc-status", "0")])));
            }
            Chunks(frames)
        }
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    async fn stream_miss(p: &CachePolicy, path: &'static str, body: Chunks, now: Instant) -> usize {
        let Lookup::Miss(pending) = get(path).lookup(p, now) else { panic!("expected a miss") };
        let (mut parts, ()) = Response::new(()).into_parts();
        let mut body = pending.respond_at(&mut parts, body, now);
        // Poll the way a server does: stop as soon as the body says it has ended.
        let mut len = 0;
        while !body.is_end_stream() {
            let Some(frame) = body.frame().await else { break };
            len += frame.unwrap().data_ref().map_or(0, Bytes::len);
        }
        len
    }

    #[tokio::test]
    async fn bodies_are_kept_only_when_complete_within_the_limit_and_without_trailers() {
        let store = Arc::new(ResponseCache::new(1 << 20));
        let p = policy(&store, Policies::default());
        let now = Instant::now();
        assert_eq!(stream_miss(&p, "/v1/big", Chunks::new(&[400, 400, 400], false), now).await, 1200);
        assert!(is_miss(&get("/v1/big").lookup(&p, now)), "over max_body_bytes, yet stored");
        assert_eq!(stream_miss(&p, "/v1/trailers", Chunks::new(&[10], true), now).await, 10);
        assert!(is_miss(&get("/v1/trailers").lookup(&p, now)), "trailers are not stored");
        assert_eq!(store.usage(), (0, 0));

        assert_eq!(stream_miss(&p, "/v1/fits", Chunks::new(&[500, 500], false), now).await, 1000);
        let (h, body) = hit_body(get("/v1/fits").lookup(&p, now)).await;
        assert_eq!((body.len(), h[CONTENT_LENGTH].to_str().unwrap()), (1000, "1000"));
        stream_miss(&p, "/v1/empty", Chunks::new(&[], false), now).await;
        assert!(matches!(get("/v1/empty").lookup(&p, now), Lookup::Hit(_)), "an empty body is stored at once");
    }

    #[tokio::test]
    async fn vary_keys_entries_by_the_named_request_headers() {
        let store = Arc::new(ResponseCache::new(1 << 20));
        let p = policy(&store, Policies::default());
        let now = Instant::now();
        let en = get("/v1/v").with(&[("accept-language", "en")]);
        let fr = get("/v1/v").with(&[("accept-language", "fr")]);
        fill(en.lookup(&p, now), 200, &[("vary", "Accept-Language")], "hello", now).await;
        assert!(is_miss(&fr.lookup(&p, now)), "another language is another entry");
        fill(fr.lookup(&p, now), 200, &[("vary", "accept-language")], "bonjour", now).await;
        assert_eq!(hit_body(en.lookup(&p, now)).await.1, "hello");
        assert_eq!(hit_body(fr.lookup(&p, now)).await.1, "bonjour");
        assert!(is_miss(&get("/v1/v").lookup(&p, now)), "no header is a value of its own");
        // A response varying on something else replaces the old variants.
        fill(get("/v1/v").lookup(&p, now), 200, &[("vary", "accept")], "any", now).await;
        assert_eq!(store.usage().0, 1);
        assert_eq!(hit_body(en.lookup(&p, now)).await.1, "any", "en sends no Accept either");
    }

    #[tokio::test]
    async fn request_directives_bypass_skip_or_limit_the_lookup() {
        let store = Arc::new(ResponseCache::new(1 << 20));
        let p = policy(&store, Policies::default());
        let t0 = Instant::now();
        fill(get("/v1/r").lookup(&p, t0), 200, &[], "old", t0).await;
        let later = t0 + Duration::from_secs(10);
        assert!(is_miss(&get("/v1/r").with(&[("cache-control", "max-age=5")]).lookup(&p, later)));
        assert!(matches!(get("/v1/r").with(&[("cache-control", "max-age=10")]).lookup(&p, later), Lookup::Hit(_)));
        assert!(is_miss(&get("/v1/r").with(&[("authorization", "Bearer x")]).lookup(&p, later)));
        assert!(is_miss(&get("/v1/r").with(&[("pragma", "no-cache")]).lookup(&p, later)));

        // no-store: neither served nor stored.
        let no_store = get("/v1/r").with(&[("cache-control", "no-store")]);
        fill(no_store.lookup(&p, later), 200, &[], "skipped", later).await;
        assert_eq!(hit_body(get("/v1/r").lookup(&p, later)).await.1, "old");
        // no-cache: not served, but the fresh answer is stored.
        let no_cache = get("/v1/r").with(&[("cache-control", "No-Cache")]);
        fill(no_cache.lookup(&p, later), 200, &[], "new", later).await;
        assert_eq!(hit_body(get("/v1/r").lookup(&p, later)).await.1, "new");
    }

    #[tokio::test]
    async fn keyed_versions_cache_public_answers_per_consumer_only() {
        let store = Arc::new(ResponseCache::new(1 << 20));
        let p = policy(&store, Policies { key_auth: Some(KeyAuth::default()), ..Default::default() });
        let now = Instant::now();
        let alice = Req { consumer: Some("alice"), ..get("/v1/k") };
        let bob = Req { consumer: Some("bob"), ..get("/v1/k") };
        fill(alice.lookup(&p, now), 200, &[("cache-control", "max-age=60")], "mine", now).await;
        assert!(is_miss(&alice.lookup(&p, now)), "not public, so not stored");
        fill(alice.lookup(&p, now), 200, &[("cache-control", "public, max-age=60")], "mine", now).await;
        assert_eq!(hit_body(alice.lookup(&p, now)).await.1, "mine");
        assert!(is_miss(&bob.lookup(&p, now)), "another consumer never gets it");
        assert!(is_miss(&get("/v1/k").lookup(&p, now)), "no consumer identity: bypass");
    }

    #[tokio::test]
    async fn unsafe_methods_invalidate_and_other_methods_pass() {
        let store = Arc::new(ResponseCache::new(1 << 20));
        let p = policy(&store, Policies::default());
        let now = Instant::now();
        fill(get("/v1/i").lookup(&p, now), 200, &[], "x", now).await;
        assert!(matches!(Req { method: Method::OPTIONS, ..get("/v1/i") }.lookup(&p, now), Lookup::Pass));
        let post = Req { method: Method::POST, ..get("/v1/i") };
        let parts = fill(post.lookup(&p, now), 500, &[], "", now).await;
        assert!(parts.headers.get(X_CACHE).is_none());
        assert!(matches!(get("/v1/i").lookup(&p, now), Lookup::Hit(_)), "a failed POST changes nothing");
        fill(post.lookup(&p, now), 201, &[], "", now).await;
        assert!(is_miss(&get("/v1/i").lookup(&p, now)));
    }

    #[tokio::test]
    async fn the_least_recently_used_entries_go_first_when_full() {
        let now = Instant::now();
        // Room for two entries of this size, not three.
        let size = ENTRY_OVERHEAD + "api.example".len() + "/v1/a".len() + "content-length".len() + 3 + 100;
        let store = Arc::new(ResponseCache::new((2 * size + size / 2) as u64));
        let p = policy(&store, Policies::default());
        let body: &'static str = Box::leak("x".repeat(100).into_boxed_str());
        for path in ["/v1/a", "/v1/b"] {
            fill(get(path).lookup(&p, now), 200, &[], body, now).await;
        }
        assert_eq!(store.usage(), (2, 2 * size));
        assert!(matches!(get("/v1/a").lookup(&p, now), Lookup::Hit(_)), "a is now the most recently used");
        fill(get("/v1/c").lookup(&p, now), 200, &[], body, now).await;
        assert!(is_miss(&get("/v1/b").lookup(&p, now)), "b was evicted");
        assert!(matches!(get("/v1/a").lookup(&p, now), Lookup::Hit(_)));
        assert!(matches!(get("/v1/c").lookup(&p, now), Lookup::Hit(_)));
        assert_eq!(store.usage(), (2, 2 * size));
    }

    #[tokio::test]
    async fn changed_policies_and_removed_versions_drop_their_entries() {
        let store = Arc::new(ResponseCache::new(1 << 20));
        let now = Instant::now();
        let p1 = policy(&store, Policies::default());
        fill(get("/v1/p").lookup(&p1, now), 200, &[], "x", now).await;
        let same = policy(&store, Policies::default());
        assert!(matches!(get("/v1/p").lookup(&same, now), Lookup::Hit(_)), "an unchanged version keeps its entries");

        // An in-flight response of the old configuration is not stored after the change.
        let Lookup::Miss(late) = get("/v1/late").lookup(&p1, now) else { panic!() };
        let changed = policy(&store, Policies { max_body_bytes: Some(10), ..Default::default() });
        assert_eq!(store.usage(), (0, 0), "entries of the old policies are dropped");
        let (mut parts, ()) = Response::new(()).into_parts();
        late.respond_at(&mut parts, Full::new(Bytes::from_static(b"late")), now).collect().await.unwrap();
        assert!(is_miss(&get("/v1/late").lookup(&changed, now)));
        assert_eq!(store.usage(), (0, 0));

        fill(get("/v1/p").lookup(&changed, now), 200, &[], "x", now).await;
        store.retain_versions(&HashSet::from(["other"]));
        assert_eq!(store.usage(), (0, 0), "a version that no longer caches loses its entries");
    }

    #[test]
    fn cache_control_directives_parse_leniently() {
        let d = Directives::parse(&headers(&[
            ("cache-control", "Public, max-age=\"30\""),
            ("cache-control", "s-maxage=abc, no-cache=\"set-cookie, x-a\""),
        ]));
        assert_eq!(
            d,
            Directives { public: true, max_age: Some(30), s_maxage: Some(0), no_cache: true, ..Default::default() }
        );
        assert_eq!(
            vary_names(&headers(&[("vary", "B, a"), ("vary", "a")])),
            Some(vec![HeaderName::from_static("a"), HeaderName::from_static("b")])
        );
        assert_eq!(vary_names(&headers(&[("vary", "accept, *")])), None);
    }
}
