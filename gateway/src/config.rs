//! The gateway's configuration: snapshots from the bus are checked, compiled once
//! into a router and upstreams, and swapped in atomically. Each request pins the
//! compiled configuration it started with, so a swap never changes a request midway.

use std::collections::HashMap;
use std::sync::Arc;

use http::HeaderMap;
use serde::Serialize;
use tokio::sync::watch;
use turnpike_bus::SnapshotReceiver;
use turnpike_domain::model::VersionState;
use turnpike_domain::policy::Policies;
use turnpike_domain::snapshot::{Snapshot, SnapshotError, SnapshotPlan};

use crate::consumer::Consumers;
use crate::lifecycle::{Deprecation, deprecation_headers};
use crate::policy::VersionPolicies;
use crate::policy::cache::{DEFAULT_CAPACITY_BYTES, ResponseCache};
use crate::registry::UpstreamRuntime;
use crate::router::Router;
use crate::upstream::Upstream;

/// Why a snapshot was not applied. The current configuration stays in place.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    #[error(transparent)]
    Corrupt(#[from] SnapshotError),
    #[error("snapshot {offered} does not supersede the applied snapshot {current}")]
    Stale { offered: u64, current: u64 },
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
}

impl CompiledConfig {
    pub fn version(&self) -> u64 {
        self.version
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
}

/// What the status listener reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigStatus {
    /// Whether a snapshot has been applied, i.e. the gateway can route.
    pub ready: bool,
    pub config_version: Option<u64>,
    pub config_checksum: Option<String>,
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

    /// Gives the response cache (shared by all versions) a capacity other than the
    /// default 64 MiB.
    pub fn with_response_cache_bytes(self, bytes: u64) -> Self {
        self.inner.responses.set_capacity(bytes);
        self
    }

    /// Applies a snapshot if it is intact and newer than the applied one.
    pub fn apply(&self, snapshot: &Snapshot) -> Result<(), ApplyError> {
        snapshot.verify()?;
        self.check_supersedes(snapshot)?;
        // Compiled outside the channel's lock; the check is repeated under it in case
        // another apply won meanwhile.
        let compiled = Arc::new(compile(snapshot, &self.inner.responses, &self.inner.upstreams));
        let mut result = Ok(());
        self.inner.current.send_if_modified(|current| {
            match current.as_ref().filter(|c| c.version >= snapshot.version) {
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
            tracing::info!(version = snapshot.version, checksum = %snapshot.checksum, "applied configuration snapshot");
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
        ConfigStatus {
            ready: current.is_some(),
            config_version: current.as_ref().map(|c| c.version),
            config_checksum: current.map(|c| c.checksum.clone()),
        }
    }
}

/// Builds the router and upstreams of a snapshot. Parts that cannot be used (a bad
/// route, an unusable target) are logged and left out rather than failing the whole
/// snapshot: the control plane validates, and the rest of the configuration must
/// keep working.
fn compile(snapshot: &Snapshot, responses: &Arc<ResponseCache>, upstreams: &UpstreamRuntime) -> CompiledConfig {
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
            policy: VersionPolicies::compile(v, responses),
        });
        match router.add_version(&v.base_path, v.state, routed, &v.routes) {
            Ok(skipped) => {
                for (route, e) in skipped {
                    tracing::warn!(version = %v.id, route = %route, error = %e, "left out a route");
                }
            }
            Err(e) => tracing::warn!(version = %v.id, error = %e, "left out a version"),
        }
    }
    let caching = content.versions.iter().filter(|v| v.policies.cache.is_some()).map(|v| v.id.as_str()).collect();
    responses.retain_versions(&caching);
    let plans = content.plans.iter().map(|p| (p.id.clone(), p.clone())).collect();
    let certificates = crate::tls::Certificates::compile(&content.certificates);
    CompiledConfig { version: snapshot.version, checksum: snapshot.checksum.clone(), router, plans, certificates }
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
        assert_eq!(store.status(), ConfigStatus { ready: false, config_version: None, config_checksum: None });
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
