//! The tower-sessions store over the platform's database (SQLite or PostgreSQL,
//! through `turnpike_store::portal::sessions`). Session ids are kept only as SHA-256
//! hashes, and the signed-in developer gets a column of its own so that a password
//! change can end the account's other sessions.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tower_sessions::SessionStore;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, Error};
use turnpike_store::Store;
use turnpike_store::portal::sessions::{self, SessionRow};

/// Session key holding the signed-in developer's id.
pub const DEVELOPER_KEY: &str = "developer_id";

#[derive(Clone)]
pub struct DbSessionStore {
    store: Arc<Store>,
}

impl std::fmt::Debug for DbSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbSessionStore").finish_non_exhaustive()
    }
}

impl DbSessionStore {
    pub fn new(store: Arc<Store>) -> Self {
        DbSessionStore { store }
    }
}

/// What the database keeps instead of a session id.
pub fn hash_id(id: &Id) -> String {
    hex::encode(Sha256::digest(id.0.to_le_bytes()))
}

fn backend(e: impl std::fmt::Display) -> Error {
    Error::Backend(e.to_string())
}

fn to_chrono(t: OffsetDateTime) -> DateTime<Utc> {
    DateTime::from_timestamp(t.unix_timestamp(), t.nanosecond()).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn to_time(t: DateTime<Utc>) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(
        i128::from(t.timestamp()) * 1_000_000_000 + i128::from(t.timestamp_subsec_nanos()),
    )
    .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn row(record: &Record) -> Result<SessionRow, Error> {
    Ok(SessionRow {
        id_hash: hash_id(&record.id),
        developer_id: record.data.get(DEVELOPER_KEY).and_then(|v| v.as_str()).map(str::to_owned),
        data: serde_json::to_string(&record.data).map_err(|e| Error::Encode(e.to_string()))?,
        expiry_date: to_chrono(record.expiry_date),
    })
}

#[async_trait]
impl SessionStore for DbSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        // A clash of two random 128-bit ids is not expected, but must not merge sessions.
        while !sessions::create(self.store.db(), &row(record)?).await.map_err(backend)? {
            record.id = Id::default();
        }
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        // A session deleted meanwhile stays deleted (see `sessions::update`).
        sessions::update(self.store.db(), &row(record)?).await.map_err(backend)?;
        Ok(())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let Some(found) = sessions::load(self.store.db(), &hash_id(id), Utc::now()).await.map_err(backend)? else {
            return Ok(None);
        };
        let data = serde_json::from_str(&found.data).map_err(|e| Error::Decode(e.to_string()))?;
        Ok(Some(Record { id: *id, data, expiry_date: to_time(found.expiry_date) }))
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        sessions::delete(self.store.db(), &hash_id(id)).await.map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_convert_both_ways() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_800_000_000_123_456_789).unwrap();
        assert_eq!(to_time(to_chrono(t)), t);
    }

    #[test]
    fn ids_are_hashed() {
        let id = Id(42);
        assert_eq!(hash_id(&id), hash_id(&Id(42)));
        assert_ne!(hash_id(&id), hash_id(&Id(43)));
        assert_eq!(hash_id(&id).len(), 64);
        assert!(!hash_id(&id).contains(&id.to_string()));
    }
}
