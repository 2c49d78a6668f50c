//! Admin API tokens: created once with their plaintext shown to the caller, stored
//! only as a keyed hash plus a short prefix to recognise them by.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
};
use serde::{Deserialize, Serialize};
use turnpike_domain::secrets::{KeyHasher, generate_admin_token};
use turnpike_domain::validate;

use crate::entities::admin_tokens;
use crate::json::fetch_page;
use crate::{Change, Page, PageParams, StoreError, new_id};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenInput {
    /// What the token is for, e.g. `ci-deploy`.
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    /// First characters of the token, to recognise it by.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A token just created: the only time its plaintext exists outside the caller.
#[derive(Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    #[serde(flatten)]
    pub record: TokenRecord,
    /// The bearer token. Shown once; only its keyed hash is stored.
    pub token: String,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken").field("record", &self.record).field("token", &"<redacted>").finish()
    }
}

fn record(m: admin_tokens::Model) -> TokenRecord {
    TokenRecord { id: m.id, name: m.name, prefix: m.prefix, created_at: m.created_at, revoked_at: m.revoked_at }
}

pub async fn create(change: &Change<'_>, hasher: &KeyHasher, input: TokenInput) -> Result<CreatedToken, StoreError> {
    validate::name("name", &input.name)?;
    let generated = generate_admin_token();
    let model = admin_tokens::ActiveModel {
        id: Set(new_id()),
        name: Set(input.name),
        prefix: Set(generated.prefix.clone()),
        token_hash: Set(hasher.hash(&generated.plaintext)),
        created_at: Set(Utc::now()),
        revoked_at: Set(None),
    }
    .insert(change.txn())
    .await?;
    change.audit("token.create", "token", &model.id, serde_json::json!({"name": model.name})).await?;
    Ok(CreatedToken { record: record(model), token: generated.plaintext })
}

/// Creates the first token if no token exists yet. Returns it only when created.
pub async fn bootstrap(change: &Change<'_>, hasher: &KeyHasher) -> Result<Option<CreatedToken>, StoreError> {
    if admin_tokens::Entity::find().count(change.txn()).await? > 0 {
        return Ok(None);
    }
    create(change, hasher, TokenInput { name: "bootstrap".into() }).await.map(Some)
}

pub async fn list(db: &impl ConnectionTrait, params: PageParams) -> Result<Page<TokenRecord>, StoreError> {
    let select = admin_tokens::Entity::find().order_by_asc(admin_tokens::Column::Id);
    let (rows, total) = fetch_page(db, select, params).await?;
    Ok(Page::new(rows.into_iter().map(record).collect(), params, total))
}

pub async fn get(db: &impl ConnectionTrait, id: &str) -> Result<TokenRecord, StoreError> {
    let model =
        admin_tokens::Entity::find_by_id(id).one(db).await?.ok_or_else(|| StoreError::not_found("token", id))?;
    Ok(record(model))
}

pub async fn revoke(change: &Change<'_>, id: &str) -> Result<TokenRecord, StoreError> {
    let model =
        admin_tokens::Entity::find_by_id(id).one(change.txn()).await?.ok_or(StoreError::not_found("token", id))?;
    if model.revoked_at.is_some() {
        return Ok(record(model));
    }
    let mut active: admin_tokens::ActiveModel = model.into();
    active.revoked_at = Set(Some(Utc::now()));
    let model = active.update(change.txn()).await?;
    change.audit("token.revoke", "token", &model.id, serde_json::json!({})).await?;
    Ok(record(model))
}

/// The live token whose plaintext is `presented`, if any.
pub async fn authenticate(
    db: &impl ConnectionTrait,
    hasher: &KeyHasher,
    presented: &str,
) -> Result<Option<TokenRecord>, StoreError> {
    let hash = hasher.hash(presented);
    let found = admin_tokens::Entity::find()
        .filter(admin_tokens::Column::TokenHash.eq(hash))
        .filter(admin_tokens::Column::RevokedAt.is_null())
        .one(db)
        .await?;
    Ok(found.map(record))
}
