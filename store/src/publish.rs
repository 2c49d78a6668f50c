//! The one commit path for writes the gateway must see: commit the change, publish
//! the snapshot it produced on the bus, and reload the in-process credential table,
//! so that a new key works at the gateway at once and a revoked one stops. The admin
//! API and the portal both write through a [`Publisher`].

use std::sync::Arc;

use turnpike_bus::ConfigBus;
use turnpike_bus::credentials::InProcessCredentials;

use crate::{Change, Store, StoreError, credentials};

/// Where committed changes go: the configuration bus and the gateway's credential
/// table of this process.
#[derive(Clone)]
pub struct Publisher {
    store: Arc<Store>,
    bus: Arc<dyn ConfigBus>,
    credentials: Arc<InProcessCredentials>,
}

impl Publisher {
    pub fn new(store: Arc<Store>, bus: Arc<dyn ConfigBus>, credentials: Arc<InProcessCredentials>) -> Self {
        Publisher { store, bus, credentials }
    }

    pub fn bus(&self) -> &Arc<dyn ConfigBus> {
        &self.bus
    }

    pub fn credentials(&self) -> &Arc<InProcessCredentials> {
        &self.credentials
    }

    /// Commits `change` and publishes the snapshot it produced, if any, then reloads
    /// the credentials. Only the commit can fail: a failed publish or reload is
    /// logged, because the change is durable and the snapshot stored, so the next
    /// publish (or the binary's periodic reload) catches up.
    pub async fn commit(&self, change: Change<'_>) -> Result<(), StoreError> {
        if let Some(snapshot) = change.commit().await? {
            let version = snapshot.version;
            if let Err(e) = self.bus.publish(snapshot).await {
                tracing::warn!(version, error = %e, "snapshot stored but not published");
            }
        }
        self.reload_credentials().await;
        Ok(())
    }

    /// Reloads every live key with its application, developer and approved
    /// subscriptions into the credential table.
    pub async fn reload_credentials(&self) {
        match credentials::load_all(self.store.db()).await {
            Ok(all) => self.credentials.replace_all(all),
            Err(e) => tracing::warn!(error = %e, "credentials not refreshed after a change"),
        }
    }
}
