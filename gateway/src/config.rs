//! The gateway's configuration: snapshots from the bus are checked, compiled once
//! into a router and upstreams, and swapped in atomically. Each request pins the
//! compiled configuration it started with, so a swap never changes a request midway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use http::HeaderMap;
use serde::Serialize;
use tokio::sync::watch;
use turnpike_bus::SnapshotReceiver;
use turnpike_domain::model::VersionState;
use turnpike_domain::network::TargetPolicy;
use turnpike_domain::policy::Policies;
use turnpike_domain::snapshot::{Snapshot, SnapshotError, SnapshotPlan};

use crate::consumer::Consumers;
use crate::jwks::{JwksCache, JwksSettings};
use crate::lifecycle::{Deprecation, deprecation_headers};
use crate::lkg::{LastKnownGood, LoadError, Writer};
use crate::metrics::{Metrics, VersionMetrics};
use crate::policy::VersionPolicies;
use crate::policy::cache::{DEFAULT_CAPACITY_BYTES, ResponseCache};
use crate::policy::cors::Origin;
use crate::registry::UpstreamRuntime;
use crate::router::Router;
use crate::tls_client::TargetGuard;
use crate::upstream::Upstream;

/// Why a snapshot was not applied. The current configuration stays in place.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    #[error(transparent)]
    Corrupt(#[from] SnapshotError),
    #[error("snapshot {offered} does not supersede the applied snapshot {current}")]
    Stale { offered: u64, current: u64 },
    /// An empty snapshot from a control plane that is behind the last-known-good
    /// file (emptied, or pointed at a fresh database): it does not replace the file's.
    #[error("snapshot {offered} is empty and not newer than the last-known-good snapshot {current}")]
    EmptyBehindFile { offered: u64, current: u64 },
}

/// A snapshot compiled for serving.
#[derive(Debug)]
pub struct CompiledConfig {
    version: u64,
    checksum: String,
    pub(crate) router: Router<Arc<RoutedVersion>>,
    /// Plans by id, for the limits of authenticated consumers.
    pub(crate) plans: HashMap<String, SnapshotPlan>,
    /// TLS certificates by host, for the TLS listener's SNI choice.
    pub(crate) certificates: crate::tls::Certificates,
    /// Whether the bus delivered this configuration; false while it comes only from
    /// the last-known-good file (see [`crate::lkg`]).
    from_bus: AtomicBool,
    /// Whether the snapshot has no API version at all.
    empty: bool,
}

impl CompiledConfig {
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Where the configuration came from.
    pub fn source(&self) -> ConfigSource {
        if self.from_bus.load(Ordering::Relaxed) { ConfigSource::Bus } else { ConfigSource::LastKnownGood }
    }

    pub fn checksum(&self) -> &str {
        &self.checksum
    }
}

/// What the proxy needs about a version the router can return (live or retired).
#[derive(Debug)]
pub(crate) struct RoutedVersion {
    pub id: String,
    pub state: VersionState,
    pub upstream: Option<Arc<Upstream>>,
    /// Added to every response of the version (lifecycle announcements).
    pub response_headers: HeaderMap,
    /// The version's policies as configured; phases compile what they need from them.
    pub policies: Policies,
    /// IP rules, CORS, header transforms and cache, compiled once per snapshot.
    pub policy: VersionPolicies,
    /// Request validation against the version's OpenAPI document, when its policies
    /// ask for it; compiled once per snapshot.
    pub validation: Option<crate::validation::Validator>,
    /// The `jwt` policy, compiled once per snapshot (keys resolved or fetching).
    pub jwt: Option<crate::jwt::JwtAuth>,
    /// The version's request counters, shared across snapshots (see `metrics`).
    pub metrics: Arc<VersionMetrics>,
}

/// Where the applied configuration came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigSource {
    /// The configuration bus (the control plane), directly or confirming the file.
    Bus,
    /// Only the last-known-good file read at start: the control plane has not been
    /// heard from since.
    LastKnownGood,
}

/// What the status listener reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigStatus {
    /// Whether a snapshot has been applied, i.e. the gateway can route.
    pub ready: bool,
    pub config_version: Option<u64>,
    pub config_checksum: Option<String>,
    /// Where the applied snapshot came from; `None` before the first.
    pub source: Option<ConfigSource>,
    /// True while the gateway serves the last-known-good file without having heard
    /// from the bus: it routes, but may be behind the control plane.
    pub degraded: bool,
}

/// Holds the applied configuration; cheap to clone (all clones share it).
#[derive(Debug, Clone)]
pub struct ConfigStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    current: watch::Sender<Option<Arc<CompiledConfig>>>,
    /// Upstream state that outlives snapshots (clients, health, breakers, budgets).
    upstreams: UpstreamRuntime,
    consumers: Consumers,
    /// Cached responses; outlives snapshots (see `policy::cache`).
    responses: Arc<ResponseCache>,
    /// Saves applied snapshots as last-known-good, once configured.
    last_known_good: OnceLock<Writer>,
    /// JWKS key sets by URL; outlive snapshots (see `jwks`).
    jwks: JwksCache,
    /// Request counters; outlive snapshots (see `metrics`).
    metrics: Metrics,
    /// Origins of the developer portal's interactive docs: CORS on every version
    /// (see `policy::cors`), compiled into each snapshot.
    docs_origins: RwLock<Arc<[Origin]>>,
}

impl Default for ConfigStore {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigStore {
    /// A store with no configuration: the proxy answers 503 until the first snapshot.
    pub fn new() -> Self {
        Self::with_consumers(Consumers::default())
    }

    /// A store whose requests authenticate against `consumers` (credentials, the
    /// server secret's hasher, the rate limiter).
    pub fn with_consumers(consumers: Consumers) -> Self {
        ConfigStore {
            inner: Arc::new(Inner {
                current: watch::Sender::new(None),
                upstreams: UpstreamRuntime::default(),
                consumers,
                responses: Arc::new(ResponseCache::new(DEFAULT_CAPACITY_BYTES)),
                last_known_good: OnceLock::new(),
                jwks: JwksCache::default(),
                metrics: Metrics::default(),
                docs_origins: RwLock::new(Arc::from([])),
            }),
        }
    }

    /// The state of upstream targets (health, ejection, breakers) across snapshots.
    pub fn upstreams(&self) -> &UpstreamRuntime {
        &self.inner.upstreams
    }

    pub(crate) fn consumers(&self) -> &Consumers {
        &self.inner.consumers
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Gives the response cache (shared by all versions) a capacity other than the
    /// default 64 MiB.
    pub fn with_response_cache_bytes(self, bytes: u64) -> Self {
        self.inner.responses.set_capacity(bytes);
        self
    }

    /// Changes how JWKS key sets are fetched and cached (see [`JwksSettings`]); call
    /// before the first snapshot.
    pub fn with_jwks_settings(self, settings: JwksSettings) -> Self {
        self.inner.jwks.set_settings(settings);
        self
    }

    /// Lets pages from `origins` (the developer portal's interactive docs) call every
    /// version cross-origin, with or without a CORS policy (see [`crate::policy::cors`]);
    /// none by default. Call before the first snapshot: it applies to the snapshots
    /// compiled afterwards.
    pub fn with_docs_origins(self, origins: impl IntoIterator<Item = Origin>) -> Self {
        let mut origins: Vec<Origin> = origins.into_iter().collect();
        origins.dedup();
        *self.inner.docs_origins.write().unwrap_or_else(std::sync::PoisonError::into_inner) = origins.into();
        self
    }

    /// Refuses upstream connections (and JWKS fetches) to addresses `policy` does not
    /// allow: literal target addresses before connecting, names by dropping refused
    /// addresses from what they resolve to. Call before the first snapshot.
    pub fn with_target_policy(self, policy: TargetPolicy) -> Self {
        let guard = TargetGuard::new(policy);
        self.inner.upstreams.set_target_guard(guard.clone());
        self.inner.jwks.set_target_guard(guard);
        self
    }

    /// Boots from the last-known-good file, when it holds an intact snapshot, then
    /// saves every snapshot applied from the bus to it (see [`crate::lkg`]). Call it
    /// before following the bus, inside a Tokio runtime. A missing or unusable file
    /// is logged and leaves the store waiting for the bus, as without one.
    pub fn with_last_known_good(self, file: LastKnownGood) -> Self {
        match file.load() {
            Ok(snapshot) => match self.apply_from(&snapshot, ConfigSource::LastKnownGood) {
                Ok(_) => tracing::warn!(
                    version = snapshot.version,
                    path = %file.path().display(),
                    "serving the last-known-good snapshot until the configuration bus is heard from"
                ),
                Err(e) => {
                    tracing::info!(path = %file.path().display(), error = %e, "last-known-good snapshot not used")
                }
            },
            Err(LoadError::Missing) => {
                tracing::info!(path = %file.path().display(), "no last-known-good snapshot; waiting for the bus")
            }
            Err(e) => tracing::warn!(path = %file.path().display(), error = %e, "ignored the last-known-good file"),
        }
        if self.inner.last_known_good.set(file.spawn_writer()).is_err() {
            tracing::warn!("a last-known-good file was already configured; keeping the first");
        }
        self
    }

    /// Applies a snapshot from the bus if it is intact and newer than the applied
    /// one. An empty snapshot is no exception when it is newer: a control plane
    /// whose last API was removed compiles exactly that.
    ///
    /// While the applied configuration comes only from the last-known-good file
    /// (the bus has not been heard from since start), the bus is the authority:
    /// - the same snapshot confirms the file's (`Ok`; the status is no longer
    ///   degraded, and nothing is recompiled);
    /// - any other intact snapshot replaces it, even an older one (a control plane
    ///   restored from a backup is followed, and the change logged),
    /// - except an empty one that is not newer, while the file's is not empty
    ///   ([`ApplyError::EmptyBehindFile`]): an emptied bus or a fresh database
    ///   never replaces a good configuration.
    ///
    /// Once the bus has been heard from, only newer snapshots apply.
    pub fn apply(&self, snapshot: &Snapshot) -> Result<(), ApplyError> {
        let replaced = self.apply_from(snapshot, ConfigSource::Bus)?;
        if let (true, Some(writer)) = (replaced, self.inner.last_known_good.get()) {
            writer.offer(Arc::new(snapshot.clone()));
        }
        Ok(())
    }

    /// Applies `snapshot`; `Ok(false)` when it only confirmed the file's (see [`Self::apply`]).
    fn apply_from(&self, snapshot: &Snapshot, source: ConfigSource) -> Result<bool, ApplyError> {
        snapshot.verify()?;
        // The file's configuration that the bus may replace although not newer.
        let mut overruled = None;
        if let Err(stale) = self.check_supersedes(snapshot) {
            let Some(c) = self.current().filter(|c| c.source() == ConfigSource::LastKnownGood) else {
                return Err(stale);
            };
            if source != ConfigSource::Bus {
                return Err(stale);
            }
            if c.version == snapshot.version && c.checksum == snapshot.checksum {
                c.from_bus.store(true, Ordering::Relaxed);
                tracing::info!(version = c.version, "the configuration bus confirmed the last-known-good snapshot");
                return Ok(false);
            }
            if snapshot.content.versions.is_empty() && !c.empty {
                tracing::warn!(
                    offered = snapshot.version,
                    current = c.version,
                    "the configuration bus offers an empty snapshot behind the last-known-good one; keeping the file's"
                );
                return Err(ApplyError::EmptyBehindFile { offered: snapshot.version, current: c.version });
            }
            tracing::warn!(
                offered = snapshot.version,
                current = c.version,
                "the configuration bus is behind the last-known-good snapshot (a restored control plane?); following it"
            );
            overruled = Some(c);
        }
        // Compiled outside the channel's lock; the check is repeated under it in case
        // another apply won meanwhile.
        let docs_origins = self.inner.docs_origins.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let compiled = compile(
            snapshot,
            &self.inner.responses,
            &self.inner.upstreams,
            &self.inner.jwks,
            &self.inner.metrics,
            &docs_origins,
        );
        compiled.from_bus.store(source == ConfigSource::Bus, Ordering::Relaxed);
        let compiled = Arc::new(compiled);
        let mut result = Ok(true);
        self.inner.current.send_if_modified(|current| {
            let replaceable = |c: &&Arc<CompiledConfig>| overruled.as_ref().is_some_and(|o| Arc::ptr_eq(o, c));
            match current.as_ref().filter(|c| c.version >= snapshot.version && !replaceable(c)) {
                Some(c) => {
                    result = Err(ApplyError::Stale { offered: snapshot.version, current: c.version });
                    false
                }
                None => {
                    *current = Some(compiled);
                    true
                }
            }
        });
        if result.is_ok() {
            tracing::info!(
                version = snapshot.version,
                checksum = %snapshot.checksum,
                ?source,
                "applied configuration snapshot"
            );
        }
        result
    }

    fn check_supersedes(&self, snapshot: &Snapshot) -> Result<(), ApplyError> {
        match self.current() {
            Some(c) if c.version >= snapshot.version => {
                Err(ApplyError::Stale { offered: snapshot.version, current: c.version })
            }
            _ => Ok(()),
        }
    }

    /// Applies every snapshot the bus delivers until the bus goes away. Refused
    /// snapshots are logged and skipped. Run it as a task:
    /// `tokio::spawn(store.clone().follow(bus.subscribe()))`.
    pub async fn follow(self, mut snapshots: SnapshotReceiver) {
        loop {
            let snapshot = snapshots.borrow_and_update().clone();
            if let Some(snapshot) = snapshot {
                match self.apply(&snapshot) {
                    Ok(()) => {}
                    Err(e @ ApplyError::Stale { .. }) => tracing::debug!(error = %e, "ignored configuration snapshot"),
                    Err(e) => tracing::error!(error = %e, "refused configuration snapshot"),
                }
            }
            if snapshots.changed().await.is_err() {
                tracing::debug!("configuration bus closed");
                return;
            }
        }
    }

    /// The applied configuration, pinned for as long as the caller holds it.
    pub fn current(&self) -> Option<Arc<CompiledConfig>> {
        self.inner.current.borrow().clone()
    }

    /// Waits until a snapshot of at least `version` is applied.
    pub async fn wait_for_version(&self, version: u64) {
        let mut rx = self.inner.current.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|c| c.as_ref().is_some_and(|c| c.version >= version)).await;
    }

    pub fn status(&self) -> ConfigStatus {
        let current = self.current();
        let source = current.as_ref().map(|c| c.source());
        ConfigStatus {
            ready: current.is_some(),
            config_version: current.as_ref().map(|c| c.version),
            config_checksum: current.map(|c| c.checksum.clone()),
            source,
            degraded: source == Some(ConfigSource::LastKnownGood),
        }
    }
}

/// Builds the router and upstreams of a snapshot. Parts that cannot be used (a bad
/// route, an unusable target) are logged and left out rather than failing the whole
/// snapshot: the control plane validates, and the rest of the configuration must
/// keep working.
fn compile(
    snapshot: &Snapshot,
    responses: &Arc<ResponseCache>,
    upstreams: &UpstreamRuntime,
    jwks: &JwksCache,
    metrics: &Metrics,
    docs_origins: &[Origin],
) -> CompiledConfig {
    let content = &snapshot.content;
    let upstreams: HashMap<&str, Arc<Upstream>> = content
        .upstreams
        .iter()
        .map(|u| {
            let (upstream, skipped) = Upstream::compile(u, upstreams);
            for e in skipped {
                tracing::warn!(upstream = %u.id, error = %e, "left out an upstream target");
            }
            (u.id.as_str(), Arc::new(upstream))
        })
        .collect();
    let mut router = Router::default();
    // Each API's versions, for its version selector.
    let mut by_api: HashMap<&str, Vec<_>> = HashMap::new();
    for v in &content.versions {
        let upstream = v.upstream_id.as_deref().and_then(|id| upstreams.get(id).cloned());
        if upstream.is_none() && v.upstream_id.is_some() {
            tracing::warn!(version = %v.id, upstream = ?v.upstream_id, "version names an unknown upstream");
        }
        let deprecated = v.state == VersionState::Deprecated;
        let response_headers = deprecation_headers(&Deprecation {
            deprecated_at: v.deprecated_at.filter(|_| deprecated),
            sunset_at: v.sunset_at,
            successor: v.successor_base_path.as_deref().filter(|s| deprecated && *s != v.base_path),
        });
        let routed = Arc::new(RoutedVersion {
            id: v.id.clone(),
            state: v.state,
            upstream,
            response_headers,
            policies: v.policies.clone(),
            policy: VersionPolicies::compile(v, responses, docs_origins),
            validation: crate::validation::Validator::compile(v),
            jwt: v.policies.jwt.as_ref().map(|p| crate::jwt::JwtAuth::compile(p, &v.id, jwks)),
            metrics: metrics.version(&v.api_slug, &v.label),
        });
        by_api.entry(v.api_id.as_str()).or_default().push((v, routed.clone()));
        match router.add_version(&v.base_path, v.state, routed, &v.routes) {
            Ok(skipped) => {
                for (route, e) in skipped {
                    tracing::warn!(version = %v.id, route = %route, error = %e, "left out a route");
                }
            }
            Err(e) => tracing::warn!(version = %v.id, error = %e, "left out a version"),
        }
    }
    router.add_selectors(&content.selectors, by_api);
    let caching = content.versions.iter().filter(|v| v.policies.cache.is_some()).map(|v| v.id.as_str()).collect();
    responses.retain_versions(&caching);
    let plans = content.plans.iter().map(|p| (p.id.clone(), p.clone())).collect();
    let certificates = crate::tls::Certificates::compile(&content.certificates);
    CompiledConfig {
        version: snapshot.version,
        checksum: snapshot.checksum.clone(),
        router,
        plans,
        certificates,
        from_bus: AtomicBool::new(true),
        empty: content.versions.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use turnpike_domain::snapshot::SnapshotContent;

    use super::*;

    fn snapshot(version: u64) -> Snapshot {
        Snapshot::compile(version, SnapshotContent::default(), Utc::now())
    }

    #[tokio::test]
    async fn applies_only_intact_newer_snapshots() {
        let store = ConfigStore::new();
        assert_eq!(
            store.status(),
            ConfigStatus { ready: false, config_version: None, config_checksum: None, source: None, degraded: false }
        );
        store.apply(&snapshot(2)).unwrap();
        assert_eq!(store.apply(&snapshot(2)), Err(ApplyError::Stale { offered: 2, current: 2 }));
        assert_eq!(store.apply(&snapshot(1)), Err(ApplyError::Stale { offered: 1, current: 2 }));
        let mut corrupt = snapshot(3);
        corrupt.checksum = "f".repeat(64);
        assert!(matches!(store.apply(&corrupt), Err(ApplyError::Corrupt(_))));
        let status = store.status();
        assert_eq!(status.config_version, Some(2));
        assert_eq!(status.config_checksum.as_deref(), Some(snapshot(2).checksum.as_str()));
        store.apply(&snapshot(3)).unwrap();
        assert_eq!(store.current().unwrap().version(), 3);
    }

    #[tokio::test]
    async fn pinned_configuration_survives_a_swap() {
        let store = ConfigStore::new();
        store.apply(&snapshot(1)).unwrap();
        let pinned = store.current().unwrap();
        store.apply(&snapshot(2)).unwrap();
        assert_eq!(pinned.version(), 1);
        assert_eq!(store.current().unwrap().version(), 2);
    }

    #[tokio::test]
    async fn follow_skips_corrupt_snapshots_and_applies_the_next_good_one() {
        let store = ConfigStore::new();
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(store.clone().follow(rx));
        tx.send(Some(Arc::new(snapshot(1)))).unwrap();
        store.wait_for_version(1).await;
        let mut corrupt = snapshot(7);
        corrupt.content.versions.clear();
        corrupt.checksum = "0".repeat(64);
        tx.send(Some(Arc::new(corrupt))).unwrap();
        tx.send(Some(Arc::new(snapshot(4)))).unwrap();
        store.wait_for_version(4).await;
        assert_eq!(store.current().unwrap().version(), 4, "the corrupt version 7 was never applied");
        drop(tx);
        task.await.unwrap();
    }
}
