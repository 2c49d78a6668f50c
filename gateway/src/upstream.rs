//! Upstreams as the proxy uses them: parsed targets, a balancer, timeouts, a pooled
//! HTTP(S) client (HTTP/2 with prior knowledge for `h2c://` targets), and per-target state (active health, outlier ejection, circuit
//! breaker, requests in flight) that decides which target may take a request. The
//! state outlives snapshots; [`crate::registry`] says how.
//!
//! Selection (phase 5 and every retry) works in two passes: first among targets that
//! pass health checks and are not ejected; if *no* target passes them, among all
//! targets ("panic mode", as Envoy calls it), because sending traffic to a target
//! that may have recovered beats failing every request closed. Circuit breakers are
//! respected in both passes: an open breaker means fail fast.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderName, Request, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use serde::Serialize;
use tokio::sync::watch;
use turnpike_domain::model::{CircuitBreaker, HashOn, OutlierDetection, Retries};
use turnpike_domain::snapshot::SnapshotUpstream;

use crate::balancer::{Balancer, hash64};
use crate::breaker::{Admission, Breaker};
use crate::health::{HealthChecker, HealthKey};
use crate::outlier::Outlier;
use crate::registry::{self, ClientKey, UpstreamRuntime};
use crate::retry::RetryBudget;
use crate::tls_client::TcpConnector;
use crate::worker::PerWorker;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What is sent to upstreams: the client's body streamed through (whatever the
/// phases before made of it), or nothing.
pub type UpstreamRequestBody = UnsyncBoxBody<Bytes, BoxError>;

/// The scheme of targets spoken to in HTTP/2 over cleartext with prior knowledge
/// (gRPC services without TLS). On the wire it is plain `http`.
pub const H2C: &str = "h2c";

/// The client that carries proxied requests and health probes: HTTP/1.1 to
/// `http://` targets, HTTP/1.1 or HTTP/2 (by ALPN) to `https://` ones, and HTTP/2
/// from the first byte to `h2c://` ones, chosen by the request URI's scheme. Each
/// proxy worker has its own connection pools (see [`crate::worker`]); clones share
/// them.
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: Arc<ClientSet>,
}

#[derive(Debug)]
struct ClientSet {
    key: ClientKey,
    per_worker: PerWorker<Clients>,
}

/// One worker's pooled clients.
#[derive(Debug)]
pub(crate) struct Clients {
    pub(crate) http: Client<HttpsConnector<TcpConnector>, UpstreamRequestBody>,
    /// HTTP/2-only (`http2_only(true)`).
    pub(crate) h2c: Client<TcpConnector, UpstreamRequestBody>,
}

impl HttpClient {
    /// Clients for `key`, each worker's made by [`registry::connect_clients`] when
    /// the worker first uses it.
    pub(crate) fn new(key: ClientKey) -> HttpClient {
        HttpClient { inner: Arc::new(ClientSet { key, per_worker: PerWorker::new() }) }
    }

    /// Sends a request to the target its URI names (see [`UpstreamTarget::uri`]).
    pub fn request(&self, mut req: Request<UpstreamRequestBody>) -> ResponseFuture {
        let clients = self.inner.per_worker.get(|| registry::connect_clients(&self.inner.key));
        if req.uri().scheme_str() != Some(H2C) {
            return clients.http.request(req);
        }
        let mut parts = req.uri().clone().into_parts();
        parts.scheme = Some(Scheme::HTTP);
        // Cannot fail: the URI had a scheme and an authority and keeps them.
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        clients.h2c.request(req)
    }
}

/// An empty request body.
pub fn empty_body() -> UpstreamRequestBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Why a target URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("target url {0:?} is not an absolute http, https or h2c url")]
    Invalid(String),
}

/// One server of an upstream, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    url: String,
    scheme: Scheme,
    authority: Authority,
    /// The target URL's path without trailing slash; `""` when it has none.
    path_prefix: String,
}

impl UpstreamTarget {
    pub fn parse(url: &str) -> Result<UpstreamTarget, TargetError> {
        let invalid = || TargetError::Invalid(url.to_owned());
        let uri: Uri = url.parse().map_err(|_| invalid())?;
        let scheme = match uri.scheme() {
            Some(s) if *s == Scheme::HTTP || *s == Scheme::HTTPS || s.as_str() == H2C => s.clone(),
            _ => return Err(invalid()),
        };
        if uri.query().is_some() {
            return Err(invalid());
        }
        let authority = uri.authority().ok_or_else(invalid)?.clone();
        let path_prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(UpstreamTarget { url: url.to_owned(), scheme, authority, path_prefix })
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The URL as configured; it identifies the target's state.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `{target url}{remainder}{?query}`: the path under the version's base path,
    /// appended to the target's own path. `h2c://` targets keep their scheme, which
    /// tells [`HttpClient::request`] to speak HTTP/2 to them.
    pub fn uri(&self, remainder: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let mut path_and_query =
            String::with_capacity(self.path_prefix.len() + remainder.len() + 1 + query.map_or(0, str::len));
        path_and_query.push_str(&self.path_prefix);
        path_and_query.push_str(remainder);
        if path_and_query.is_empty() {
            path_and_query.push('/');
        }
        if let Some(q) = query {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }
}

/// The state of one target that outlives snapshots.
#[derive(Debug)]
pub(crate) struct TargetState {
    upstream_id: String,
    url: String,
    in_flight: AtomicUsize,
    /// Set by active health checks; targets start healthy.
    healthy: AtomicBool,
    passive: Mutex<Passive>,
    events: Arc<watch::Sender<u64>>,
}

#[derive(Debug, Default)]
struct Passive {
    outlier: Outlier,
    breaker: Breaker,
}

impl TargetState {
    pub(crate) fn new(upstream_id: &str, url: &str, events: Arc<watch::Sender<u64>>) -> TargetState {
        TargetState {
            upstream_id: upstream_id.to_owned(),
            url: url.to_owned(),
            in_flight: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            passive: Mutex::new(Passive::default()),
            events,
        }
    }

    fn passive(&self) -> MutexGuard<'_, Passive> {
        self.passive.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn notify(&self) {
        self.events.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Called by the health checker when a target crosses a threshold.
    pub(crate) fn set_healthy(&self, healthy: bool) {
        if self.healthy.swap(healthy, Ordering::Relaxed) != healthy {
            if healthy {
                tracing::info!(upstream = %self.upstream_id, target = %self.url, "target passes health checks again");
            } else {
                tracing::warn!(upstream = %self.upstream_id, target = %self.url, "target failed health checks");
            }
            self.notify();
        }
    }

    pub(crate) fn status(&self, now: Instant) -> TargetStatus {
        let passive = self.passive();
        TargetStatus {
            upstream_id: self.upstream_id.clone(),
            url: self.url.clone(),
            healthy: self.is_healthy(),
            ejected: passive.outlier.is_ejected(now),
            circuit: passive.breaker.phase(now).as_str(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
        }
    }
}

/// A target's state as reported (status listener, tests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetStatus {
    pub upstream_id: String,
    pub url: String,
    /// False while active health checks hold the target down.
    pub healthy: bool,
    /// True while passive outlier detection has the target ejected.
    pub ejected: bool,
    /// `closed`, `open` or `half_open`.
    pub circuit: &'static str,
    pub in_flight: usize,
}

/// Counts a request in flight on a target until dropped; moves into the response
/// body so that least-connections sees responses still streaming.
#[derive(Debug)]
pub struct InFlight(Arc<TargetState>);

impl InFlight {
    fn new(state: Arc<TargetState>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A target admitted for one attempt. Its outcome must be reported with
/// [`Upstream::finish`]; dropped without one (the client went away), it gives back
/// its half-open trial, if it held one.
#[derive(Debug)]
pub struct Attempt {
    index: usize,
    admission: Admission,
    in_flight: Option<InFlight>,
    /// The request's consistent-hashing key, kept for retries.
    hash: Option<u64>,
}

impl Attempt {
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    pub(crate) fn hash(&self) -> Option<u64> {
        self.hash
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if let Some(in_flight) = &self.in_flight {
            in_flight.0.passive().breaker.release(self.admission);
        }
    }
}

/// What consistent hashing hashes on, compiled.
#[derive(Debug)]
enum HashKey {
    ClientIp,
    Header(HeaderName),
}

/// An upstream compiled from a snapshot.
#[derive(Debug)]
pub struct Upstream {
    pub id: String,
    targets: Vec<UpstreamTarget>,
    states: Vec<Arc<TargetState>>,
    weights: Vec<u32>,
    balancer: Option<Balancer>,
    hash_key: Option<HashKey>,
    health_checked: bool,
    outlier: OutlierDetection,
    breaker: CircuitBreaker,
    pub(crate) retries: Retries,
    pub(crate) budget: Arc<RetryBudget>,
    /// Time allowed for one attempt, to the response head and then between body reads.
    pub(crate) read_timeout: Option<Duration>,
    /// Time allowed for all attempts together, to the response head.
    pub(crate) total_timeout: Option<Duration>,
    pub client: HttpClient,
    /// Keeps the health checker running while this upstream is in use.
    _health: Option<Arc<HealthChecker>>,
}

impl Upstream {
    /// Compiles an upstream; unusable targets are left out and reported.
    pub fn compile(spec: &SnapshotUpstream, runtime: &UpstreamRuntime) -> (Upstream, Vec<TargetError>) {
        let mut targets = Vec::with_capacity(spec.spec.targets.len());
        let mut weights = Vec::with_capacity(spec.spec.targets.len());
        let mut skipped = Vec::new();
        for target in &spec.spec.targets {
            match UpstreamTarget::parse(&target.url) {
                Ok(t) => {
                    targets.push(t);
                    weights.push(target.weight);
                }
                Err(e) => skipped.push(e),
            }
        }
        let keys: Vec<&str> = targets.iter().map(UpstreamTarget::url).collect();
        let balancer = Balancer::new(spec.spec.algorithm, &weights, &keys);
        let hash_key = match &spec.spec.hash_on {
            Some(HashOn::Header(name)) => match HeaderName::try_from(name.to_ascii_lowercase()) {
                Ok(name) => Some(HashKey::Header(name)),
                Err(_) => {
                    tracing::warn!(upstream = %spec.id, header = %name, "hash_on names an invalid header; using round robin");
                    None
                }
            },
            Some(HashOn::ClientIp) | None => Some(HashKey::ClientIp),
        };
        let timeouts = spec.spec.timeouts;
        let millis = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
        let client_key = ClientKey {
            connect_timeout: millis(timeouts.connect_ms),
            tls: spec.spec.tls.clone(),
            guard: runtime.target_guard(),
        };
        let client = runtime.client(&client_key);
        let states: Vec<_> = keys.iter().map(|url| runtime.target_state(&spec.id, url)).collect();
        let hc = &spec.spec.health_check;
        let health = (hc.enabled && !targets.is_empty()).then(|| {
            let key = HealthKey { check: hc.clone(), urls: keys.iter().map(|k| (*k).to_owned()).collect(), client_key };
            let probes = targets.iter().cloned().zip(states.iter().cloned()).collect();
            runtime.health_checker(&spec.id, key, probes, &client)
        });
        let upstream = Upstream {
            id: spec.id.clone(),
            balancer,
            hash_key,
            health_checked: health.as_ref().is_some_and(Option::is_some),
            outlier: spec.spec.outlier_detection,
            breaker: spec.spec.circuit_breaker,
            retries: spec.spec.retries,
            budget: runtime.retry_budget(&spec.id),
            read_timeout: millis(timeouts.read_ms),
            total_timeout: millis(timeouts.total_ms),
            client,
            _health: health.flatten(),
            targets,
            states,
            weights,
        };
        (upstream, skipped)
    }

    /// Picks and admits the target for a request's first attempt; `None` when no
    /// target can take it (none usable, or every breaker open).
    pub fn select(&self, client_ip: IpAddr, headers: &HeaderMap) -> Option<Attempt> {
        self.select_excluding(self.request_hash(client_ip, headers), &[])
    }

    /// Picks the target for a retry: another one than those `tried` when possible.
    pub(crate) fn select_retry(&self, hash: Option<u64>, tried: &[usize]) -> Option<Attempt> {
        self.select_excluding(hash, tried)
    }

    pub fn target(&self, attempt: &Attempt) -> &UpstreamTarget {
        &self.targets[attempt.index]
    }

    /// Records the outcome of an attempt (`ok`: an answer below 500) for outlier
    /// detection and the breaker, and hands back its in-flight count.
    pub fn finish(&self, mut attempt: Attempt, ok: bool) -> InFlight {
        let now = Instant::now();
        let in_flight = attempt.in_flight.take().expect("an attempt is finished once");
        let state = &in_flight.0;
        let changed = {
            let mut passive = state.passive();
            let ejected = passive.outlier.record(ok, &self.outlier, now);
            if let Some(duration) = ejected {
                tracing::warn!(upstream = %self.id, target = %state.url, ?duration, "ejected a failing target");
            }
            let moved = passive.breaker.record(attempt.admission, ok, &self.breaker, now);
            if moved {
                let phase = passive.breaker.phase(now).as_str();
                tracing::info!(upstream = %self.id, target = %state.url, circuit = phase, "circuit breaker moved");
            }
            ejected.is_some() || moved
        };
        if changed {
            state.notify();
        }
        in_flight
    }

    fn request_hash(&self, client_ip: IpAddr, headers: &HeaderMap) -> Option<u64> {
        if !matches!(self.balancer, Some(Balancer::ConsistentHash { .. })) {
            return None;
        }
        match self.hash_key.as_ref()? {
            HashKey::Header(name) => headers.get(name).map(|v| hash64(v.as_bytes())),
            HashKey::ClientIp => Some(match client_ip.to_canonical() {
                IpAddr::V4(ip) => hash64(&ip.octets()),
                IpAddr::V6(ip) => hash64(&ip.octets()),
            }),
        }
    }

    fn select_excluding(&self, hash: Option<u64>, tried: &[usize]) -> Option<Attempt> {
        let balancer = self.balancer.as_ref()?;
        let now = Instant::now();
        let mut refused = Vec::new();
        let healthy = |i: usize| !self.health_checked || self.states[i].is_healthy();
        // Untried targets first, then (for retries) the ones already tried.
        let passes = [false, true].into_iter().filter(|retry_tried| !retry_tried || !tried.is_empty());
        for allow_tried in passes.clone() {
            if let Some(attempt) = self.admit_one(
                balancer,
                hash,
                now,
                &mut refused,
                &|i| healthy(i) && (allow_tried || !tried.contains(&i)),
                true,
            ) {
                return Some(attempt);
            }
        }
        let any_usable = (0..self.targets.len()).any(|i| {
            self.weights[i] > 0
                && healthy(i)
                && !(self.outlier.enabled && self.states[i].passive().outlier.is_ejected(now))
        });
        if any_usable {
            return None;
        }
        // Panic mode: every target is down or ejected.
        refused.clear();
        for allow_tried in passes {
            if let Some(attempt) =
                self.admit_one(balancer, hash, now, &mut refused, &|i| allow_tried || !tried.contains(&i), false)
            {
                tracing::debug!(upstream = %self.id, "every target is unhealthy or ejected; trying one anyway");
                return Some(attempt);
            }
        }
        None
    }

    /// Asks the balancer for eligible targets until one is admitted: not ejected
    /// (when `strict`) and let through by its breaker.
    fn admit_one(
        &self,
        balancer: &Balancer,
        hash: Option<u64>,
        now: Instant,
        refused: &mut Vec<usize>,
        eligible: &dyn Fn(usize) -> bool,
        strict: bool,
    ) -> Option<Attempt> {
        loop {
            let refused_now: &[usize] = refused;
            let pick = balancer.pick(hash, &|i| !refused_now.contains(&i) && eligible(i), &|i| {
                self.states[i].in_flight.load(Ordering::Relaxed)
            })?;
            let state = &self.states[pick];
            let admission = {
                let mut passive = state.passive();
                if strict && self.outlier.enabled && passive.outlier.is_ejected(now) {
                    None
                } else {
                    let before = passive.breaker.phase(now);
                    let admission = passive.breaker.admit(&self.breaker, now);
                    if admission.is_some() && before != passive.breaker.phase(now) {
                        drop(passive);
                        state.notify();
                    }
                    admission
                }
            };
            match admission {
                Some(admission) => {
                    return Some(Attempt {
                        index: pick,
                        admission,
                        in_flight: Some(InFlight::new(state.clone())),
                        hash,
                    });
                }
                None => refused.push(pick),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use turnpike_domain::model::{LoadBalancing, Target, UpstreamSpec};

    use super::*;

    #[test]
    fn target_path_prefix_and_query_are_joined_with_the_remainder() {
        let plain = UpstreamTarget::parse("http://10.0.0.1:8080").unwrap();
        assert_eq!(plain.uri("/pets/1", Some("a=1&b")).unwrap(), "http://10.0.0.1:8080/pets/1?a=1&b");
        assert_eq!(plain.uri("", None).unwrap(), "http://10.0.0.1:8080/");
        let prefixed = UpstreamTarget::parse("http://svc.local/api/").unwrap();
        assert_eq!(prefixed.uri("/pets", None).unwrap(), "http://svc.local/api/pets");
        assert_eq!(prefixed.uri("", Some("x=1")).unwrap(), "http://svc.local/api?x=1");
        assert_eq!(prefixed.uri("/", None).unwrap(), "http://svc.local/api/");
        let tls = UpstreamTarget::parse("https://a.example:8443/v2").unwrap();
        assert_eq!(tls.uri("/x", None).unwrap(), "https://a.example:8443/v2/x");
        let h2c = UpstreamTarget::parse("h2c://grpc.local:50051").unwrap();
        assert_eq!(h2c.uri("/pkg.Svc/Call", None).unwrap(), "h2c://grpc.local:50051/pkg.Svc/Call");
    }

    #[test]
    fn unusable_targets_are_refused() {
        for bad in ["a.example:80", "ftp://a.example", "h2://a.example", "http://a.example/?q=1", "not a url"] {
            assert!(matches!(UpstreamTarget::parse(bad), Err(TargetError::Invalid(_))), "{bad}");
        }
    }

    fn spec(id: &str, urls: &[&str]) -> SnapshotUpstream {
        SnapshotUpstream {
            id: id.into(),
            spec: UpstreamSpec {
                name: id.into(),
                targets: urls.iter().map(|u| Target { url: (*u).into(), weight: 100 }).collect(),
                algorithm: LoadBalancing::RoundRobin,
                hash_on: None,
                timeouts: Default::default(),
                health_check: Default::default(),
                outlier_detection: OutlierDetection {
                    enabled: true,
                    consecutive_failures: 2,
                    base_ejection_ms: 60_000,
                },
                circuit_breaker: CircuitBreaker { enabled: false, ..Default::default() },
                retries: Default::default(),
                tls: Default::default(),
            },
        }
    }

    const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    fn pick(u: &Upstream) -> usize {
        let attempt = u.select(IP, &HeaderMap::new()).unwrap();
        let i = attempt.index();
        drop(u.finish(attempt, true));
        i
    }

    fn fail(u: &Upstream, index: usize) {
        for _ in 0..10 {
            let attempt = u.select(IP, &HeaderMap::new()).unwrap();
            if attempt.index() == index {
                drop(u.finish(attempt, false));
                return;
            }
            drop(u.finish(attempt, true));
        }
        panic!("target {index} was never picked");
    }

    #[tokio::test]
    async fn target_state_survives_recompiling_while_the_old_upstream_lives() {
        let runtime = UpstreamRuntime::default();
        let (v1, _) = Upstream::compile(&spec("u", &["http://a:1", "http://b:1"]), &runtime);
        fail(&v1, 1);
        fail(&v1, 1);
        assert!(runtime.target("u", "http://b:1").unwrap().ejected);
        assert_eq!((0..4).map(|_| pick(&v1)).collect::<Vec<_>>(), [0, 0, 0, 0]);

        // Same targets plus one: b stays ejected and shares its state.
        let (v2, _) = Upstream::compile(&spec("u", &["http://a:1", "http://b:1", "http://c:1"]), &runtime);
        assert!(Arc::ptr_eq(&v1.states[1], &v2.states[1]));
        drop(v1);
        assert!((0..6).all(|_| pick(&v2) != 1), "b is still ejected after the swap");

        // Another upstream with the same URL has its own state.
        let (other, _) = Upstream::compile(&spec("w", &["http://b:1"]), &runtime);
        assert!(!Arc::ptr_eq(&other.states[0], &v2.states[1]));

        // Once nothing uses the target, its state is gone.
        drop(v2);
        assert!(runtime.target("u", "http://b:1").is_none());
        let (v3, _) = Upstream::compile(&spec("u", &["http://a:1", "http://b:1"]), &runtime);
        assert!(!runtime.target("u", "http://b:1").unwrap().ejected);
        drop(v3);
        assert_eq!(runtime.targets().len(), 1, "only w's target is left: {:?}", runtime.targets());
    }

    #[tokio::test]
    async fn when_every_target_is_ejected_they_are_tried_anyway() {
        let runtime = UpstreamRuntime::default();
        let (u, _) = Upstream::compile(&spec("u", &["http://a:1", "http://b:1"]), &runtime);
        for i in [0, 1, 0, 1] {
            fail(&u, i);
        }
        assert!(runtime.targets().iter().all(|t| t.ejected));
        let picks: Vec<_> = (0..4).map(|_| pick(&u)).collect();
        assert!(picks.contains(&0) && picks.contains(&1), "{picks:?}");
    }

    #[tokio::test]
    async fn open_breakers_are_never_tried_and_retries_prefer_other_targets() {
        let runtime = UpstreamRuntime::default();
        let mut s = spec("u", &["http://a:1", "http://b:1"]);
        s.spec.outlier_detection.enabled = false;
        s.spec.circuit_breaker =
            CircuitBreaker { enabled: true, failure_threshold: 1, open_ms: 60_000, half_open_requests: 1 };
        let (u, _) = Upstream::compile(&s, &runtime);
        fail(&u, 0);
        assert_eq!(runtime.target("u", "http://a:1").unwrap().circuit, "open");
        assert!((0..4).all(|_| pick(&u) == 1));
        fail(&u, 1);
        assert!(u.select(IP, &HeaderMap::new()).is_none(), "every breaker is open: fail fast");

        let (u, _) = Upstream::compile(&spec("v", &["http://a:1", "http://b:1"]), &runtime);
        let first = u.select(IP, &HeaderMap::new()).unwrap();
        let tried = [first.index()];
        let retry = u.select_retry(first.hash(), &tried).unwrap();
        assert_ne!(retry.index(), first.index());
        let (single, _) = Upstream::compile(&spec("s", &["http://a:1"]), &runtime);
        let first = single.select(IP, &HeaderMap::new()).unwrap();
        assert_eq!(single.select_retry(None, &[first.index()]).map(|a| a.index()), Some(0), "same target if alone");
    }

    #[tokio::test]
    async fn in_flight_counts_follow_attempts_and_their_bodies() {
        let runtime = UpstreamRuntime::default();
        let mut s = spec("u", &["http://a:1", "http://b:1"]);
        s.spec.algorithm = LoadBalancing::LeastConnections;
        let (u, _) = Upstream::compile(&s, &runtime);
        let held = u.finish(u.select(IP, &HeaderMap::new()).unwrap(), true);
        assert_eq!(runtime.target("u", "http://a:1").unwrap().in_flight, 1);
        // While a is busy, least-connections sends everything to b.
        assert!((0..5).all(|_| pick(&u) == 1));
        drop(held);
        assert_eq!(runtime.target("u", "http://a:1").unwrap().in_flight, 0);
        let abandoned = u.select(IP, &HeaderMap::new()).unwrap();
        drop(abandoned);
        assert!(runtime.targets().iter().all(|t| t.in_flight == 0));
    }

    #[tokio::test]
    async fn consistent_hashing_follows_the_header_and_falls_back_to_round_robin() {
        let runtime = UpstreamRuntime::default();
        let mut s = spec("u", &["http://a:1", "http://b:1", "http://c:1"]);
        s.spec.algorithm = LoadBalancing::ConsistentHash;
        s.spec.hash_on = Some(HashOn::Header("X-User".into()));
        let (u, _) = Upstream::compile(&s, &runtime);
        let mut seen = std::collections::BTreeSet::new();
        for user in 0..30 {
            let mut h = HeaderMap::new();
            h.insert("x-user", format!("user-{user}").parse().unwrap());
            let first = u.select(IP, &h).unwrap().index();
            assert!((0..5).all(|_| u.select(IP, &h).unwrap().index() == first));
            seen.insert(first);
        }
        assert_eq!(seen.len(), 3, "30 users land on every target");
        let picks: Vec<_> = (0..6).map(|_| pick(&u)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);

        s.spec.hash_on = Some(HashOn::ClientIp);
        let (by_ip, _) = Upstream::compile(&s, &runtime);
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped());
        let plain = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        let a = by_ip.select(mapped, &HeaderMap::new()).unwrap().index();
        assert!((0..5).all(|_| by_ip.select(plain, &HeaderMap::new()).unwrap().index() == a));
    }
}
