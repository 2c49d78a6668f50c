//! Single-use account tokens sent by mail: email verification and password reset.
//! Only a keyed hash of each token is stored (the portal hashes with the server
//! secret), with its purpose, expiry and the time it was used.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};

use crate::StoreError;
use crate::entities::account_tokens;

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Prove the address of a new account.
    Verify,
    /// Choose a new password.
    Reset,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Verify => "verify",
            Purpose::Reset => "reset",
        }
    }
}

/// Stores a new token (by its keyed hash) for `developer_id`, valid until `expires_at`.
pub async fn issue(
    db: &impl ConnectionTrait,
    token_hash: &str,
    developer_id: &str,
    purpose: Purpose,
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    account_tokens::ActiveModel {
        token_hash: Set(token_hash.to_owned()),
        developer_id: Set(developer_id.to_owned()),
        purpose: Set(purpose.as_str().to_owned()),
        created_at: Set(Utc::now()),
        expires_at: Set(expires_at),
        used_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok(())
}

/// Whether a stored token may still be used at `now`: unused and not expired.
pub fn usable(token: &account_tokens::Model, now: DateTime<Utc>) -> bool {
    token.used_at.is_none() && now < token.expires_at
}

async fn find(
    db: &impl ConnectionTrait,
    token_hash: &str,
    purpose: Purpose,
) -> Result<Option<account_tokens::Model>, StoreError> {
    Ok(account_tokens::Entity::find_by_id(token_hash)
        .filter(account_tokens::Column::Purpose.eq(purpose.as_str()))
        .one(db)
        .await?)
}

/// The developer a usable token belongs to, without using it up (to decide which
/// page to show before the holder submits the form).
pub async fn peek(
    db: &impl ConnectionTrait,
    token_hash: &str,
    purpose: Purpose,
    now: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    Ok(find(db, token_hash, purpose).await?.filter(|t| usable(t, now)).map(|t| t.developer_id))
}

/// Uses a token up and returns its developer, or `None` if it is unknown, used or
/// expired. The update only matches an unused row, so two concurrent uses cannot
/// both succeed. The developer's other tokens of the same purpose are deleted: one
/// completed reset (or verification) makes older links useless.
pub async fn consume(
    db: &impl ConnectionTrait,
    token_hash: &str,
    purpose: Purpose,
    now: DateTime<Utc>,
) -> Result<Option<String>, StoreError> {
    let Some(token) = find(db, token_hash, purpose).await?.filter(|t| usable(t, now)) else {
        return Ok(None);
    };
    let updated = account_tokens::Entity::update_many()
        .col_expr(account_tokens::Column::UsedAt, Expr::value(now))
        .filter(account_tokens::Column::TokenHash.eq(token_hash))
        .filter(account_tokens::Column::UsedAt.is_null())
        .exec(db)
        .await?;
    if updated.rows_affected != 1 {
        return Ok(None);
    }
    account_tokens::Entity::delete_many()
        .filter(account_tokens::Column::DeveloperId.eq(&token.developer_id))
        .filter(account_tokens::Column::Purpose.eq(purpose.as_str()))
        .filter(account_tokens::Column::TokenHash.ne(token_hash))
        .exec(db)
        .await?;
    Ok(Some(token.developer_id))
}

/// Deletes tokens that expired before `now`, used or not; returns how many.
pub async fn delete_expired(db: &impl ConnectionTrait, now: DateTime<Utc>) -> Result<u64, StoreError> {
    let done = account_tokens::Entity::delete_many().filter(account_tokens::Column::ExpiresAt.lt(now)).exec(db).await?;
    Ok(done.rows_affected)
}
