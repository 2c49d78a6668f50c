//! API keys of applications: the plaintext exists only in the creation response;
//! the store keeps a keyed hash and a short prefix.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::{Deserialize, Serialize};
use turnpike_domain::secrets::{KeyHasher, generate_api_key};
use turnpike_domain::validate;

use crate::entities::{api_keys, applications};
use crate::json::fetch_page;
use crate::{Change, Page, PageParams, StoreError, new_id};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KeyInput {
    pub name: String,
    /// When the key stops working (RFC 3339); never if absent.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeyRecord {
    pub id: String,
    pub application_id: String,
    pub name: String,
    /// First characters of the key, to recognise it by.
    pub prefix: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A key just created: the only time its plaintext exists outside the caller.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedKey {
    #[serde(flatten)]
    pub record: KeyRecord,
    /// The API key. Shown once; only its keyed hash is stored.
    pub key: String,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey").field("record", &self.record).field("key", &"<redacted>").finish()
    }
}

fn record(m: api_keys::Model) -> KeyRecord {
    KeyRecord {
        id: m.id,
        application_id: m.application_id,
        name: m.name,
        prefix: m.prefix,
        expires_at: m.expires_at,
        revoked_at: m.revoked_at,
        created_at: m.created_at,
    }
}

async fn find(db: &impl ConnectionTrait, app: &applications::Model, id: &str) -> Result<api_keys::Model, StoreError> {
    api_keys::Entity::find_by_id(id)
        .filter(api_keys::Column::ApplicationId.eq(app.id.clone()))
        .one(db)
        .await?
        .ok_or_else(|| StoreError::not_found("key", id))
}

pub async fn list(
    db: &impl ConnectionTrait,
    app: &applications::Model,
    params: PageParams,
) -> Result<Page<KeyRecord>, StoreError> {
    let select = api_keys::Entity::find()
        .filter(api_keys::Column::ApplicationId.eq(app.id.clone()))
        .order_by_asc(api_keys::Column::Id);
    let (rows, total) = fetch_page(db, select, params).await?;
    Ok(Page::new(rows.into_iter().map(record).collect(), params, total))
}

pub async fn create(
    change: &Change<'_>,
    hasher: &KeyHasher,
    app: &applications::Model,
    input: KeyInput,
) -> Result<CreatedKey, StoreError> {
    validate::name("name", &input.name)?;
    let now = Utc::now();
    if input.expires_at.is_some_and(|at| at <= now) {
        return Err(StoreError::invalid("expires_at", "must be in the future"));
    }
    let generated = generate_api_key();
    let model = api_keys::ActiveModel {
        id: Set(new_id()),
        application_id: Set(app.id.clone()),
        name: Set(input.name),
        prefix: Set(generated.prefix.clone()),
        key_hash: Set(hasher.hash(&generated.plaintext)),
        expires_at: Set(input.expires_at.map(crate::json::stored_precision)),
        revoked_at: Set(None),
        created_at: Set(now),
    }
    .insert(change.txn())
    .await?;
    change.audit("key.create", "key", &model.id, serde_json::json!({"prefix": model.prefix})).await?;
    Ok(CreatedKey { record: record(model), key: generated.plaintext })
}

pub async fn get(db: &impl ConnectionTrait, app: &applications::Model, id: &str) -> Result<KeyRecord, StoreError> {
    Ok(record(find(db, app, id).await?))
}

/// Renames a key or changes its expiry (JSON merge patch of `name` and `expires_at`).
pub async fn patch(
    change: &Change<'_>,
    app: &applications::Model,
    id: &str,
    patch: &serde_json::Value,
) -> Result<KeyRecord, StoreError> {
    let model = find(change.txn(), app, id).await?;
    if model.revoked_at.is_some() {
        return Err(StoreError::Conflict("a revoked key cannot be changed".into()));
    }
    let current = KeyInput { name: model.name.clone(), expires_at: model.expires_at };
    let input: KeyInput = crate::patched(&current, patch)?;
    validate::name("name", &input.name)?;
    if input.expires_at != model.expires_at && input.expires_at.is_some_and(|at| at <= Utc::now()) {
        return Err(StoreError::invalid("expires_at", "must be in the future"));
    }
    let mut active: api_keys::ActiveModel = model.into();
    active.name = Set(input.name);
    active.expires_at = Set(input.expires_at.map(crate::json::stored_precision));
    let model = active.update(change.txn()).await?;
    change.audit("key.update", "key", &model.id, patch.clone()).await?;
    Ok(record(model))
}

pub async fn revoke(change: &Change<'_>, app: &applications::Model, id: &str) -> Result<KeyRecord, StoreError> {
    let model = find(change.txn(), app, id).await?;
    if model.revoked_at.is_some() {
        return Ok(record(model));
    }
    let mut active: api_keys::ActiveModel = model.into();
    active.revoked_at = Set(Some(Utc::now()));
    let model = active.update(change.txn()).await?;
    change.audit("key.revoke", "key", &model.id, serde_json::json!({"prefix": model.prefix})).await?;
    Ok(record(model))
}
