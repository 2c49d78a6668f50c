//! Credential distribution: the gateway looks keys up here by keyed hash. The
//! in-process store is replaced as a whole by the control plane after each change;
//! the cluster's Redis store will implement the same trait with a node-local cache.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;
use turnpike_domain::credential::Credential;

/// Where the gateway finds the credential behind a key hash.
pub trait CredentialStore: Send + Sync + 'static {
    fn get(&self, key_hash: &str) -> Option<Arc<Credential>>;
}

type Table = Arc<HashMap<String, Arc<Credential>>>;

/// All credentials of one process in memory. Readers clone an `Arc` of the current
/// table under a short read lock; a replacement never blocks them for long.
///
/// Every replacement that changes the table counts as a new generation, which
/// [`InProcessCredentials::subscribe`] reports: the gateway saves the table beside
/// its last-known-good snapshot when it changes, not on every reload.
#[derive(Debug)]
pub struct InProcessCredentials {
    table: RwLock<Table>,
    generation: watch::Sender<u64>,
}

impl Default for InProcessCredentials {
    fn default() -> Self {
        InProcessCredentials { table: RwLock::default(), generation: watch::Sender::new(0) }
    }
}

impl InProcessCredentials {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces every credential at once (keyed by key hash). The generation moves
    /// on only when the table changes.
    pub fn replace_all(&self, credentials: impl IntoIterator<Item = (String, Credential)>) {
        let table: HashMap<_, _> = credentials.into_iter().map(|(hash, c)| (hash, Arc::new(c))).collect();
        let mut current = self.table.write().unwrap_or_else(|e| e.into_inner());
        let same = current.len() == table.len()
            && table.iter().all(|(hash, c)| current.get(hash).is_some_and(|old| **old == **c));
        if !same {
            *current = Arc::new(table);
            // Moved on under the table's lock, so generations follow the order of the tables.
            self.generation.send_modify(|g| *g += 1);
        }
    }

    pub fn len(&self) -> usize {
        self.snapshot().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The number of changes so far (0 for the empty table of a new store).
    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    /// Follows the generation: the receiver sees a change each time the table changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Every credential with its key hash, ordered by key hash, and the generation
    /// they belong to.
    pub fn entries(&self) -> (u64, Vec<(String, Credential)>) {
        let table = self.table.read().unwrap_or_else(|e| e.into_inner());
        let generation = *self.generation.borrow();
        let mut entries: Vec<_> = table.iter().map(|(hash, c)| (hash.clone(), Credential::clone(c))).collect();
        drop(table);
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        (generation, entries)
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

    #[test]
    fn only_a_change_moves_the_generation_on() {
        let store = InProcessCredentials::new();
        let mut rx = store.subscribe();
        assert_eq!(store.generation(), 0);
        store.replace_all([]);
        assert!(!rx.has_changed().unwrap(), "empty for empty is no change");

        let two = || [("h2".to_owned(), credential("k2")), ("h1".to_owned(), credential("k1"))];
        store.replace_all(two());
        assert_eq!(store.generation(), 1);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        store.replace_all(two());
        assert!(!rx.has_changed().unwrap(), "the same keys again");
        assert_eq!(store.generation(), 1);

        // A changed credential behind the same hash is a change.
        let mut moved = credential("k1");
        moved.subscriptions.insert("v2".into(), "free".into());
        store.replace_all([("h2".to_owned(), credential("k2")), ("h1".to_owned(), moved.clone())]);
        assert_eq!(store.generation(), 2);
        let (generation, entries) = store.entries();
        assert_eq!(generation, 2);
        assert_eq!(entries, [("h1".to_owned(), moved), ("h2".to_owned(), credential("k2"))], "ordered by hash");
    }
}
