//! Everything about upstreams that outlives a snapshot: pooled clients (so a
//! configuration change keeps warm keep-alive connections), each target's state
//! (health, ejection, breaker, requests in flight), each upstream's retry budget and
//! health checker.
//!
//! Targets are keyed by (upstream id, target URL), budgets and checkers by upstream
//! id, and all are held weakly: compiling a snapshot while the previous one is still
//! applied finds the live state and shares it, so a configuration change does not
//! reset ejections, open breakers or counters. Once no applied (or in-flight
//! pinned) configuration uses a target any more, its state is dropped, and a health
//! checker stops with the last upstream that holds it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::watch;
use turnpike_domain::model::UpstreamTls;

use crate::health::{self, HealthChecker, HealthKey};
use crate::retry::RetryBudget;
use crate::tls_client;
use crate::upstream::{Clients, HttpClient, TargetState, TargetStatus, UpstreamTarget};

/// How long idle upstream connections stay in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// What makes two upstreams' clients interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ClientKey {
    pub connect_timeout: Option<Duration>,
    pub tls: UpstreamTls,
    /// The addresses connections may go to ([`UpstreamRuntime::target_guard`]).
    pub guard: tls_client::TargetGuard,
}

/// Everything about upstreams that outlives a snapshot: pooled clients, target
/// state, retry budgets and health checkers. One per `ConfigStore`.
#[derive(Debug)]
pub struct UpstreamRuntime {
    registry: Mutex<Registry>,
    /// Bumped whenever a target changes health, ejection or breaker phase, and when a
    /// health checker starts or stops.
    events: Arc<watch::Sender<u64>>,
    checks_running: Arc<AtomicUsize>,
}

#[derive(Debug, Default)]
struct Registry {
    clients: HashMap<ClientKey, HttpClient>,
    targets: Weakly<(String, String), TargetState>,
    budgets: Weakly<String, RetryBudget>,
    health: Weakly<String, HealthChecker>,
    /// The operator's policy for target addresses; every address by default.
    guard: tls_client::TargetGuard,
}

/// Weak references by key, with the dead ones swept out whenever the map has
/// doubled since the last sweep (amortized O(1) per insert, however many
/// upstreams a snapshot has).
#[derive(Debug)]
struct Weakly<K, V> {
    map: HashMap<K, Weak<V>>,
    sweep_at: usize,
}

impl<K, V> Default for Weakly<K, V> {
    fn default() -> Self {
        Weakly { map: HashMap::new(), sweep_at: 64 }
    }
}

impl<K: std::hash::Hash + Eq, V> Weakly<K, V> {
    fn get<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        self.map.get(key).and_then(Weak::upgrade)
    }

    fn insert(&mut self, key: K, value: &Arc<V>) {
        self.map.insert(key, Arc::downgrade(value));
        if self.map.len() >= self.sweep_at {
            self.map.retain(|_, v| v.strong_count() > 0);
            self.sweep_at = (self.map.len() * 2).max(64);
        }
    }

    fn live(&self) -> impl Iterator<Item = Arc<V>> + '_ {
        self.map.values().filter_map(Weak::upgrade)
    }
}

impl Default for UpstreamRuntime {
    fn default() -> Self {
        UpstreamRuntime {
            registry: Mutex::default(),
            events: Arc::new(watch::Sender::new(0)),
            checks_running: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl UpstreamRuntime {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state of every target some configuration still uses, sorted.
    pub fn targets(&self) -> Vec<TargetStatus> {
        let now = Instant::now();
        let live: Vec<_> = self.registry().targets.live().collect();
        let mut statuses: Vec<_> = live.iter().map(|s| s.status(now)).collect();
        statuses.sort_by(|a, b| (&a.upstream_id, &a.url).cmp(&(&b.upstream_id, &b.url)));
        statuses
    }

    /// The state of one target, if some configuration uses it.
    pub fn target(&self, upstream_id: &str, url: &str) -> Option<TargetStatus> {
        let state = self.registry().targets.get(&(upstream_id.to_owned(), url.to_owned()));
        state.map(|s| s.status(Instant::now()))
    }

    /// Changes whenever a target's health, ejection or breaker phase moves, or a
    /// health checker starts or stops. Time-driven changes (an ejection or an open
    /// period running out) are seen by the next request, not announced.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.events.subscribe()
    }

    /// How many health checkers are running.
    pub fn health_checks_running(&self) -> usize {
        self.checks_running.load(Ordering::SeqCst)
    }

    /// Waits until `condition` holds (checked now and after every change), at most
    /// `timeout`. Returns whether it held.
    pub async fn wait_until(&self, timeout: Duration, mut condition: impl FnMut(&UpstreamRuntime) -> bool) -> bool {
        let mut changes = self.subscribe();
        let wait = async {
            loop {
                changes.borrow_and_update();
                if condition(self) {
                    return;
                }
                // The sender lives in `self`, so this cannot fail while we wait.
                let _ = changes.changed().await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// The addresses upstream connections may go to.
    pub(crate) fn target_guard(&self) -> tls_client::TargetGuard {
        self.registry().guard.clone()
    }

    /// Changes the addresses upstream connections may go to, for upstreams compiled
    /// from now on.
    pub(crate) fn set_target_guard(&self, guard: tls_client::TargetGuard) {
        self.registry().guard = guard;
    }

    pub(crate) fn client(&self, key: &ClientKey) -> HttpClient {
        let mut registry = self.registry();
        registry.clients.entry(key.clone()).or_insert_with(|| new_client(key)).clone()
    }

    pub(crate) fn target_state(&self, upstream_id: &str, url: &str) -> Arc<TargetState> {
        let mut registry = self.registry();
        let key = (upstream_id.to_owned(), url.to_owned());
        if let Some(state) = registry.targets.get(&key) {
            return state;
        }
        let state = Arc::new(TargetState::new(upstream_id, url, self.events.clone()));
        registry.targets.insert(key, &state);
        state
    }

    pub(crate) fn retry_budget(&self, upstream_id: &str) -> Arc<RetryBudget> {
        let mut registry = self.registry();
        if let Some(budget) = registry.budgets.get(upstream_id) {
            return budget;
        }
        let budget = Arc::new(RetryBudget::default());
        registry.budgets.insert(upstream_id.to_owned(), &budget);
        budget
    }

    /// The running checker when its settings and targets are unchanged, else a new
    /// one (the old one stops with the last configuration that holds it). `None`
    /// outside a Tokio runtime.
    pub(crate) fn health_checker(
        &self,
        upstream_id: &str,
        key: HealthKey,
        probes: Vec<(UpstreamTarget, Arc<TargetState>)>,
        client: &HttpClient,
    ) -> Option<Arc<HealthChecker>> {
        let mut registry = self.registry();
        if let Some(checker) = registry.health.get(upstream_id).filter(|c| c.key() == &key) {
            return Some(checker);
        }
        let running = health::Running::new(self.checks_running.clone(), self.events.clone());
        let checker = Arc::new(HealthChecker::start(upstream_id, key, probes, client.clone(), running)?);
        registry.health.insert(upstream_id.to_owned(), &checker);
        Some(checker)
    }
}

fn new_client(key: &ClientKey) -> HttpClient {
    HttpClient::new(key.clone())
}

/// The pooled clients of one worker for `key`.
pub(crate) fn connect_clients(key: &ClientKey) -> Clients {
    let mut builder = Client::builder(TokioExecutor::new());
    builder.pool_timer(TokioTimer::new()).timer(TokioTimer::new()).pool_idle_timeout(POOL_IDLE_TIMEOUT);
    let http = builder.build(tls_client::connector(&key.tls, key.connect_timeout, &key.guard));
    // `h2c://` targets: HTTP/2 from the first byte, one multiplexed connection each.
    let h2c = builder.http2_only(true).build(tls_client::plain_connector(key.connect_timeout, &key.guard));
    Clients { http, h2c }
}
