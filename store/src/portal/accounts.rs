//! Portal accounts: a developer plus, optionally, a password hash (argon2id, in PHC
//! string form, produced and checked by the portal) and the time their email address
//! was verified. Developers created through the admin API have neither until they
//! reset their password on the portal.

use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};

use crate::developers::{self, DeveloperInput};
use crate::entities::{developer_passwords, developers as developer_rows};
use crate::{Change, StoreError};

/// A developer as the portal sees them.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    pub id: String,
    pub email: String,
    pub name: String,
    pub email_verified_at: Option<DateTime<Utc>>,
    /// The argon2id PHC string; `None` until a password is set.
    pub password_hash: Option<String>,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("name", &self.name)
            .field("email_verified_at", &self.email_verified_at)
            .field("password_hash", &self.password_hash.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Emails are stored trimmed and lower-cased (see `developers::create`); lookups do the same.
pub fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

async fn with_password(
    db: &impl ConnectionTrait,
    developer: Option<developer_rows::Model>,
) -> Result<Option<Account>, StoreError> {
    let Some(d) = developer else { return Ok(None) };
    let password = developer_passwords::Entity::find_by_id(d.id.clone()).one(db).await?;
    Ok(Some(Account {
        id: d.id,
        email: d.email,
        name: d.name,
        email_verified_at: d.email_verified_at,
        password_hash: password.map(|p| p.password_hash),
    }))
}

pub async fn find(db: &impl ConnectionTrait, id: &str) -> Result<Option<Account>, StoreError> {
    let developer = developer_rows::Entity::find_by_id(id).one(db).await?;
    with_password(db, developer).await
}

pub async fn find_by_email(db: &impl ConnectionTrait, email: &str) -> Result<Option<Account>, StoreError> {
    let developer =
        developer_rows::Entity::find().filter(developer_rows::Column::Email.eq(normalize_email(email))).one(db).await?;
    with_password(db, developer).await
}

/// Creates a developer who signed up on the portal, with their password hash; the
/// email is unverified until they follow the link sent to it. A taken email is a
/// [`StoreError::Conflict`].
pub async fn sign_up(change: &Change<'_>, email: &str, name: &str, password_hash: &str) -> Result<Account, StoreError> {
    let developer =
        developers::create(change, DeveloperInput { email: email.to_owned(), name: name.to_owned() }).await?;
    write_password(change.txn(), &developer.id, password_hash).await?;
    change.audit("developer.sign_up", "developer", &developer.id, serde_json::json!({})).await?;
    find(change.txn(), &developer.id).await?.ok_or_else(|| StoreError::not_found("developer", developer.id))
}

async fn write_password(db: &impl ConnectionTrait, developer_id: &str, password_hash: &str) -> Result<(), StoreError> {
    let row = developer_passwords::ActiveModel {
        developer_id: Set(developer_id.to_owned()),
        password_hash: Set(password_hash.to_owned()),
        updated_at: Set(Utc::now()),
    };
    developer_passwords::Entity::insert(row)
        .on_conflict(
            OnConflict::column(developer_passwords::Column::DeveloperId)
                .update_columns([developer_passwords::Column::PasswordHash, developer_passwords::Column::UpdatedAt])
                .to_owned(),
        )
        .exec(db)
        .await?;
    Ok(())
}

/// Sets (or replaces) a developer's password hash.
pub async fn set_password(change: &Change<'_>, developer_id: &str, password_hash: &str) -> Result<(), StoreError> {
    developers::find(change.txn(), developer_id).await?;
    write_password(change.txn(), developer_id, password_hash).await?;
    change.audit("developer.password_set", "developer", developer_id, serde_json::json!({})).await
}

/// Records that the developer proved the address is theirs; the first time counts.
pub async fn mark_email_verified(change: &Change<'_>, developer_id: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
    let developer = developers::find(change.txn(), developer_id).await?;
    if developer.email_verified_at.is_some() {
        return Ok(());
    }
    let mut active: developer_rows::ActiveModel = developer.into();
    active.email_verified_at = Set(Some(at));
    active.update(change.txn()).await?;
    change.audit("developer.email_verified", "developer", developer_id, serde_json::json!({})).await
}

/// Changes the developer's display name (validated like the admin API's).
pub async fn rename(change: &Change<'_>, developer_id: &str, name: &str) -> Result<(), StoreError> {
    developers::patch(change, developer_id, &serde_json::json!({ "name": name })).await?;
    Ok(())
}

/// Creates a developer whose address an OpenID Connect provider has verified: no
/// password (they sign in through the provider, or set one by a reset link), the
/// address confirmed at `verified_at`. A taken email is a [`StoreError::Conflict`].
pub async fn sign_up_verified(
    change: &Change<'_>,
    email: &str,
    name: &str,
    verified_at: DateTime<Utc>,
) -> Result<Account, StoreError> {
    let developer =
        developers::create(change, DeveloperInput { email: email.to_owned(), name: name.to_owned() }).await?;
    change.audit("developer.sign_up", "developer", &developer.id, serde_json::json!({ "via": "oidc" })).await?;
    mark_email_verified(change, &developer.id, verified_at).await?;
    find(change.txn(), &developer.id).await?.ok_or_else(|| StoreError::not_found("developer", developer.id))
}

/// Removes a developer's password, if they have one: they sign in through a provider
/// (or set a new password by a reset link).
pub async fn remove_password(change: &Change<'_>, developer_id: &str) -> Result<(), StoreError> {
    let removed = developer_passwords::Entity::delete_by_id(developer_id).exec(change.txn()).await?.rows_affected;
    if removed > 0 {
        change.audit("developer.password_removed", "developer", developer_id, serde_json::json!({})).await?;
    }
    Ok(())
}
