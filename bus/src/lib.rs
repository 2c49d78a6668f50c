//! Configuration distribution: the control plane publishes compiled snapshots on a
//! [`ConfigBus`], every gateway subscribes and always sees the newest one.
//!
//! One machine uses [`InProcessBus`]; a cluster will use a Redis implementation of
//! the same trait. Both refuse stale and corrupt snapshots at publication, and
//! gateways check again on receipt, because a network bus may deliver anything.

pub mod credentials;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;
use turnpike_domain::snapshot::{Snapshot, SnapshotError};

/// The receiving end of a bus: holds the newest published snapshot, `None` before
/// the first publication.
pub type SnapshotReceiver = watch::Receiver<Option<Arc<Snapshot>>>;

/// Why a publication was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// Versions only move forward, so an older or equal version is a lost race
    /// between two writers (or a replay) and must not reach gateways.
    #[error("snapshot {offered} is not newer than the published snapshot {current}")]
    Stale { offered: u64, current: u64 },
    #[error(transparent)]
    Corrupt(#[from] SnapshotError),
    /// The bus could not be reached (network buses only); the caller may retry.
    #[error("configuration bus unavailable: {0}")]
    Unavailable(String),
}

/// Distributes configuration snapshots from the control plane to gateways.
pub trait ConfigBus: Send + Sync + 'static {
    /// Publishes a snapshot to every subscriber. Refuses ([`BusError::Stale`]) a
    /// snapshot that is not newer than the last one published, and a corrupt one
    /// ([`Snapshot::verify`]).
    fn publish(&self, snapshot: Arc<Snapshot>) -> Pin<Box<dyn Future<Output = Result<(), BusError>> + Send + '_>>;

    /// A receiver that always holds the newest published snapshot (`None` before the first).
    fn subscribe(&self) -> SnapshotReceiver;
}

/// A bus inside one process: a watch channel, so slow subscribers skip straight to
/// the newest snapshot instead of queueing old ones.
#[derive(Debug)]
pub struct InProcessBus {
    tx: watch::Sender<Option<Arc<Snapshot>>>,
}

impl InProcessBus {
    pub fn new() -> Self {
        InProcessBus { tx: watch::Sender::new(None) }
    }

    /// The newest published snapshot.
    pub fn latest(&self) -> Option<Arc<Snapshot>> {
        self.tx.borrow().clone()
    }

    fn publish_now(&self, snapshot: Arc<Snapshot>) -> Result<(), BusError> {
        snapshot.verify()?;
        let mut refused = None;
        // The check and the replacement happen under the channel's lock, so two
        // concurrent publishers cannot both win with out-of-order versions.
        self.tx.send_if_modified(|current| {
            if snapshot.supersedes(current.as_deref()) {
                *current = Some(snapshot.clone());
                true
            } else {
                refused = current.as_ref().map(|c| c.version);
                false
            }
        });
        match refused {
            Some(current) => Err(BusError::Stale { offered: snapshot.version, current }),
            None => {
                tracing::debug!(version = snapshot.version, "published configuration snapshot");
                Ok(())
            }
        }
    }
}

impl Default for InProcessBus {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigBus for InProcessBus {
    fn publish(&self, snapshot: Arc<Snapshot>) -> Pin<Box<dyn Future<Output = Result<(), BusError>> + Send + '_>> {
        let result = self.publish_now(snapshot);
        Box::pin(std::future::ready(result))
    }

    fn subscribe(&self) -> SnapshotReceiver {
        self.tx.subscribe()
    }
}

/// Behaviour every [`ConfigBus`] implementation must show; each implementation's
/// tests run these against a fresh bus.
#[cfg(test)]
mod contract {
    use super::*;
    use chrono::Utc;
    use turnpike_domain::snapshot::SnapshotContent;

    pub fn snapshot(version: u64) -> Arc<Snapshot> {
        Arc::new(Snapshot::compile(version, SnapshotContent::default(), Utc::now()))
    }

    fn seen(rx: &SnapshotReceiver) -> Option<u64> {
        rx.borrow().as_ref().map(|s| s.version)
    }

    pub async fn subscribers_see_none_then_the_newest(bus: &dyn ConfigBus) {
        let mut early = bus.subscribe();
        assert_eq!(seen(&early), None);
        bus.publish(snapshot(1)).await.unwrap();
        bus.publish(snapshot(2)).await.unwrap();
        early.changed().await.unwrap();
        assert_eq!(seen(&early), Some(2));
        let late = bus.subscribe();
        assert_eq!(seen(&late), Some(2), "a late subscriber starts from the newest snapshot");
    }

    pub async fn stale_versions_are_refused(bus: &dyn ConfigBus) {
        bus.publish(snapshot(5)).await.unwrap();
        let rx = bus.subscribe();
        assert_eq!(bus.publish(snapshot(5)).await, Err(BusError::Stale { offered: 5, current: 5 }));
        assert_eq!(bus.publish(snapshot(4)).await, Err(BusError::Stale { offered: 4, current: 5 }));
        assert_eq!(seen(&rx), Some(5));
        assert!(!rx.has_changed().unwrap(), "a refused snapshot must not wake subscribers");
    }

    pub async fn corrupt_snapshots_are_refused(bus: &dyn ConfigBus) {
        bus.publish(snapshot(1)).await.unwrap();
        let mut tampered = (*snapshot(2)).clone();
        tampered.checksum = "0".repeat(64);
        let err = bus.publish(Arc::new(tampered)).await.unwrap_err();
        assert!(matches!(err, BusError::Corrupt(SnapshotError::ChecksumMismatch { version: 2, .. })), "{err:?}");
        let zero = bus.publish(snapshot(0)).await.unwrap_err();
        assert_eq!(zero, BusError::Corrupt(SnapshotError::ZeroVersion));
        assert_eq!(seen(&bus.subscribe()), Some(1));
    }

    pub async fn all(make: impl Fn() -> Box<dyn ConfigBus>) {
        subscribers_see_none_then_the_newest(&*make()).await;
        stale_versions_are_refused(&*make()).await;
        corrupt_snapshots_are_refused(&*make()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_process_bus_passes_the_contract() {
        contract::all(|| Box::new(InProcessBus::new())).await;
    }

    #[tokio::test]
    async fn concurrent_publishers_never_move_the_version_backwards() {
        let bus = Arc::new(InProcessBus::new());
        let mut rx = bus.subscribe();
        let tasks: Vec<_> = (1..=50u64)
            .rev()
            .map(|v| {
                let bus = bus.clone();
                tokio::spawn(async move { bus.publish(contract::snapshot(v)).await })
            })
            .collect();
        let mut accepted = 0;
        for t in tasks {
            if t.await.unwrap().is_ok() {
                accepted += 1;
            }
        }
        assert!(accepted >= 1);
        assert_eq!(rx.borrow_and_update().as_ref().map(|s| s.version), Some(50));
        assert_eq!(bus.latest().map(|s| s.version), Some(50));
    }
}
