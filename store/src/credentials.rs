//! The gateway's view of API keys: every live key with its application, developer
//! and approved subscriptions, keyed by the key's keyed hash.

use std::collections::{BTreeMap, HashMap};

use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use turnpike_domain::credential::Credential;
use turnpike_domain::model::SubscriptionState;

use crate::StoreError;
use crate::entities::{api_keys, applications, subscriptions};

/// Every non-revoked key as `(key hash, credential)`. Expired keys are included (the
/// gateway checks expiry at request time, so a key stops working on the second).
pub async fn load_all(db: &impl ConnectionTrait) -> Result<Vec<(String, Credential)>, StoreError> {
    let developer_of: HashMap<String, String> =
        applications::Entity::find().all(db).await?.into_iter().map(|a| (a.id, a.developer_id)).collect();
    let mut subscriptions_of: HashMap<String, BTreeMap<String, String>> = HashMap::new();
    for s in subscriptions::Entity::find()
        .filter(subscriptions::Column::State.eq(SubscriptionState::Approved.as_str()))
        .all(db)
        .await?
    {
        subscriptions_of.entry(s.application_id).or_default().insert(s.version_id, s.plan_id);
    }
    let keys = api_keys::Entity::find().filter(api_keys::Column::RevokedAt.is_null()).all(db).await?;
    Ok(keys
        .into_iter()
        .filter_map(|k| {
            let developer_id = developer_of.get(&k.application_id)?.clone();
            let credential = Credential {
                subscriptions: subscriptions_of.get(&k.application_id).cloned().unwrap_or_default(),
                key_id: k.id,
                application_id: k.application_id,
                developer_id,
                expires_at: k.expires_at,
            };
            Some((k.key_hash, credential))
        })
        .collect())
}
