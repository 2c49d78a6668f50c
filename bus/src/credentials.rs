//! Credential distribution: the gateway looks keys up here by keyed hash. The
//! in-process store is replaced as a whole by the control plane after each change;
//! the cluster's Redis store will implement the same trait with a node-local cache.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use turnpike_domain::credential::Credential;

/// Where the gateway finds the credential behind a key hash.
pub trait CredentialStore: Send + Sync + 'static {
    fn get(&self, key_hash: &str) -> Option<Arc<Credential>>;
}

type Table = Arc<HashMap<String, Arc<Credential>>>;

/// All credentials of one process in memory. Readers clone an `Arc` of the current
/// table under a short read lock; a replacement never blocks them for long.
#[derive(Debug, Default)]
pub struct InProcessCredentials {
    table: RwLock<Table>,
}

impl InProcessCredentials {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces every credential at once (keyed by key hash).
    pub fn replace_all(&self, credentials: impl IntoIterator<Item = (String, Credential)>) {
        let table: HashMap<_, _> = credentials.into_iter().map(|(hash, c)| (hash, Arc::new(c))).collect();
        *self.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }

    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn snapshot(&self) -> Table {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl CredentialStore for InProcessCredentials {
    fn get(&self, key_hash: &str) -> Option<Arc<Credential>> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).get(key_hash).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(key: &str) -> Credential {
        Credential {
            key_id: key.into(),
            application_id: "app".into(),
            developer_id: "dev".into(),
            expires_at: None,
            subscriptions: [("v1".to_owned(), "gold".to_owned())].into(),
        }
    }

    #[test]
    fn replacing_swaps_the_whole_table() {
        let store = InProcessCredentials::new();
        assert!(store.is_empty());
        store.replace_all([("h1".to_owned(), credential("k1")), ("h2".to_owned(), credential("k2"))]);
        assert_eq!(store.get("h1").unwrap().key_id, "k1");
        assert_eq!(store.len(), 2);
        store.replace_all([("h2".to_owned(), credential("k2"))]);
        assert!(store.get("h1").is_none(), "a revoked key must disappear");
        assert_eq!(store.get("h2").unwrap().plan_for("v1"), Some("gold"));
    }
}
