//! Accounts at OpenID Connect providers linked to developers: one row per
//! (issuer, subject), the stable identity a provider vouches for. A developer may have
//! several (one per provider, or more).

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};

use crate::entities::oidc_identities;
use crate::{Change, StoreError, new_id};

/// The developer linked to `subject` at `issuer`, if any.
pub async fn find_developer(
    db: &impl ConnectionTrait,
    issuer: &str,
    subject: &str,
) -> Result<Option<String>, StoreError> {
    let row = oidc_identities::Entity::find()
        .filter(oidc_identities::Column::Issuer.eq(issuer))
        .filter(oidc_identities::Column::Subject.eq(subject))
        .one(db)
        .await?;
    Ok(row.map(|r| r.developer_id))
}

/// Links `subject` at `issuer` to a developer. Linking an identity that is already
/// linked is a [`StoreError::Conflict`] (the unique index decides, so two concurrent
/// first sign-ins cannot both link).
pub async fn link(change: &Change<'_>, issuer: &str, subject: &str, developer_id: &str) -> Result<(), StoreError> {
    if find_developer(change.txn(), issuer, subject).await?.is_some() {
        return Err(StoreError::Conflict(format!("the identity {subject} at {issuer} is already linked")));
    }
    let row = oidc_identities::ActiveModel {
        id: Set(new_id()),
        issuer: Set(issuer.to_owned()),
        subject: Set(subject.to_owned()),
        developer_id: Set(developer_id.to_owned()),
        created_at: Set(Utc::now()),
    };
    row.insert(change.txn()).await?;
    let detail = serde_json::json!({ "issuer": issuer });
    change.audit("developer.identity_linked", "developer", developer_id, detail).await
}

/// The subject linked to `developer_id` at `issuer`, if any.
pub async fn subject_at(
    db: &impl ConnectionTrait,
    developer_id: &str,
    issuer: &str,
) -> Result<Option<String>, StoreError> {
    let row = oidc_identities::Entity::find()
        .filter(oidc_identities::Column::DeveloperId.eq(developer_id))
        .filter(oidc_identities::Column::Issuer.eq(issuer))
        .one(db)
        .await?;
    Ok(row.map(|r| r.subject))
}

/// The issuers a developer has linked identities at, oldest link first.
pub async fn issuers_of(db: &impl ConnectionTrait, developer_id: &str) -> Result<Vec<String>, StoreError> {
    use sea_orm::QueryOrder;
    let rows = oidc_identities::Entity::find()
        .filter(oidc_identities::Column::DeveloperId.eq(developer_id))
        .order_by_asc(oidc_identities::Column::CreatedAt)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|r| r.issuer).collect())
}
