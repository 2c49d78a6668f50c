//! The control-plane store: every read and change of the platform's state, on
//! SQLite or PostgreSQL through sea-orm. Each change runs in one transaction that
//! also writes its audit record and, when the gateway's view changed, the next
//! configuration snapshot.

pub mod entities;

pub mod apis;
pub mod applications;
pub mod audit;
pub mod certificates;
pub mod credentials;
pub mod declarative;
pub mod developers;
pub mod keys;
pub mod subscriptions;

mod error;
mod json;
pub mod plans;
pub mod portal;
pub mod publish;
pub mod routes;
pub mod snapshots;
pub mod tokens;
pub mod upstreams;
pub mod versions;

use std::sync::Arc;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, TransactionTrait,
};
use tokio::sync::{Mutex, MutexGuard};
use turnpike_domain::network::TargetPolicy;
use turnpike_domain::snapshot::Snapshot;

pub use error::StoreError;
pub use json::{Page, PageParams, default_page, default_per_page, merge_patch, patched};
pub use sea_orm::DbErr;

/// Who made a change, as written to the audit log.
#[derive(Debug, Clone)]
pub struct Actor(pub String);

/// Handle on the control-plane database.
pub struct Store {
    db: DatabaseConnection,
    /// Serializes changes within this process so snapshot versions are allocated in
    /// order; across processes the snapshot table's primary key does the same.
    write_lock: Mutex<()>,
    /// Which upstream target addresses changes may save; every one unless the
    /// operator chose ([`Store::with_target_policy`]).
    target_policy: TargetPolicy,
}

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.max_connections(max_connections).sqlx_logging(false);
        let db = Database::connect(opts).await?;
        Ok(Store { db, write_lock: Mutex::new(()), target_policy: TargetPolicy::allow_all() })
    }

    /// Refuses upstream targets naming an address `policy` does not allow (see
    /// `turnpike_domain::validate::upstream_targets`).
    pub fn with_target_policy(mut self, policy: TargetPolicy) -> Store {
        self.target_policy = policy;
        self
    }

    pub fn target_policy(&self) -> &TargetPolicy {
        &self.target_policy
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        use turnpike_migrations::{Migrator, MigratorTrait};
        Migrator::up(&self.db, None).await?;
        Ok(())
    }

    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Starts a change made by `actor`. Finish it with [`Change::commit`]; dropping it
    /// rolls everything back.
    pub async fn change(&self, actor: &Actor) -> Result<Change<'_>, StoreError> {
        let guard = self.write_lock.lock().await;
        let txn = self.db.begin().await?;
        if self.db.get_database_backend() == DbBackend::Sqlite {
            // SQLite starts a transaction reading, and a writer that slips in before
            // its first write (a session saved outside any change) would make that
            // write fail at once with "database is locked": no waiting can resolve
            // that. Taking the write lock first (what `BEGIN IMMEDIATE` does) makes
            // such writers wait for this change instead, within the busy timeout.
            txn.execute_unprepared("UPDATE snapshots SET version = version WHERE 0 = 1").await?;
        }
        Ok(Change { txn, actor: actor.clone(), target_policy: &self.target_policy, _guard: guard })
    }
}

/// One change in progress: a transaction plus who is making it.
pub struct Change<'a> {
    txn: DatabaseTransaction,
    actor: Actor,
    target_policy: &'a TargetPolicy,
    _guard: MutexGuard<'a, ()>,
}

impl Change<'_> {
    pub fn txn(&self) -> &DatabaseTransaction {
        &self.txn
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    /// The store's policy for upstream target addresses.
    pub fn target_policy(&self) -> &TargetPolicy {
        self.target_policy
    }

    /// Records an audit entry inside the change's transaction.
    pub async fn audit(
        &self,
        action: &str,
        resource_type: &str,
        resource_id: &str,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        audit::record(&self.txn, &self.actor.0, action, resource_type, resource_id, audit::redact(detail)).await
    }

    /// Compiles the gateway's view; if it differs from the last snapshot a new
    /// snapshot is stored with the change. Commits and returns the new snapshot, if any.
    pub async fn commit(self) -> Result<Option<Arc<Snapshot>>, StoreError> {
        let snapshot = snapshots::refresh(&self.txn).await?;
        self.txn.commit().await?;
        Ok(snapshot.map(Arc::new))
    }
}

/// A fresh unique id (UUIDv7: time-ordered, so lists sort by creation).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
