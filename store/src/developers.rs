//! Developers: the people who consume APIs. The portal adds sign-in on top.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
};
use serde::{Deserialize, Serialize};
use turnpike_domain::validate::{self, ValidationError};

use crate::entities::developers;
use crate::json::fetch_page;
use crate::{Change, Page, PageParams, StoreError, new_id, patched};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeveloperInput {
    pub email: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeveloperRecord {
    pub id: String,
    #[serde(flatten)]
    pub input: DeveloperInput,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn record(m: developers::Model) -> DeveloperRecord {
    DeveloperRecord {
        id: m.id,
        input: DeveloperInput { email: m.email, name: m.name },
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

fn check(input: &DeveloperInput) -> Result<(), StoreError> {
    let mut errors: Vec<ValidationError> = Vec::new();
    errors.extend(validate::email("email", &input.email).err());
    errors.extend(validate::name("name", &input.name).err());
    if errors.is_empty() { Ok(()) } else { Err(StoreError::Invalid(errors)) }
}

pub async fn find(db: &impl ConnectionTrait, id: &str) -> Result<developers::Model, StoreError> {
    developers::Entity::find_by_id(id).one(db).await?.ok_or_else(|| StoreError::not_found("developer", id))
}

pub async fn get(db: &impl ConnectionTrait, id: &str) -> Result<DeveloperRecord, StoreError> {
    Ok(record(find(db, id).await?))
}

pub async fn list(db: &impl ConnectionTrait, params: PageParams) -> Result<Page<DeveloperRecord>, StoreError> {
    let select = developers::Entity::find().order_by_asc(developers::Column::Email);
    let (rows, total) = fetch_page(db, select, params).await?;
    Ok(Page::new(rows.into_iter().map(record).collect(), params, total))
}

async fn ensure_email_free(db: &impl ConnectionTrait, email: &str, except: Option<&str>) -> Result<(), StoreError> {
    let mut q = developers::Entity::find().filter(developers::Column::Email.eq(email));
    if let Some(id) = except {
        q = q.filter(developers::Column::Id.ne(id));
    }
    if q.count(db).await? > 0 {
        return Err(StoreError::Conflict(format!("a developer with email '{email}' already exists")));
    }
    Ok(())
}

pub async fn create(change: &Change<'_>, mut input: DeveloperInput) -> Result<DeveloperRecord, StoreError> {
    input.email = input.email.trim().to_lowercase();
    check(&input)?;
    ensure_email_free(change.txn(), &input.email, None).await?;
    let now = Utc::now();
    let model = developers::ActiveModel {
        id: Set(new_id()),
        email: Set(input.email.clone()),
        name: Set(input.name.clone()),
        created_at: Set(now),
        updated_at: Set(now),
        email_verified_at: Set(None),
    }
    .insert(change.txn())
    .await?;
    change.audit("developer.create", "developer", &model.id, serde_json::json!({"name": model.name})).await?;
    Ok(record(model))
}

pub async fn patch(change: &Change<'_>, id: &str, patch: &serde_json::Value) -> Result<DeveloperRecord, StoreError> {
    let current = get(change.txn(), id).await?;
    let mut input = patched(&current.input, patch)?;
    input.email = input.email.trim().to_lowercase();
    check(&input)?;
    ensure_email_free(change.txn(), &input.email, Some(id)).await?;
    let mut active: developers::ActiveModel = find(change.txn(), id).await?.into();
    active.email = Set(input.email);
    active.name = Set(input.name);
    active.updated_at = Set(Utc::now());
    let model = active.update(change.txn()).await?;
    change.audit("developer.update", "developer", &model.id, serde_json::json!({})).await?;
    Ok(record(model))
}

/// Deletes a developer with their applications, subscriptions and keys.
pub async fn delete(change: &Change<'_>, id: &str) -> Result<(), StoreError> {
    let model = find(change.txn(), id).await?;
    developers::Entity::delete_by_id(model.id.clone()).exec(change.txn()).await?;
    change.audit("developer.delete", "developer", &model.id, serde_json::json!({})).await?;
    Ok(())
}
