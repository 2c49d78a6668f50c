//! What the gateway knows about an API key: whose it is and which versions it may
//! call under which plan. Built by the control plane from keys, applications and
//! approved subscriptions; looked up by the key's keyed hash, never by the key.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    pub key_id: String,
    pub application_id: String,
    pub developer_id: String,
    pub expires_at: Option<DateTime<Utc>>,
    /// Version id → plan id, for every approved subscription of the application.
    pub subscriptions: BTreeMap<String, String>,
}

impl Credential {
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The plan under which this key may call `version_id`, if it may.
    pub fn plan_for(&self, version_id: &str) -> Option<&str> {
        self.subscriptions.get(version_id).map(String::as_str)
    }
}
