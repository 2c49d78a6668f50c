//! Applications: what a developer subscribes to APIs and holds keys for.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::{Deserialize, Serialize};
use turnpike_domain::validate::{self, ValidationError};

use crate::entities::applications;
use crate::json::fetch_page;
use crate::{Change, Page, PageParams, StoreError, developers, new_id, patched};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApplicationInput {
    /// Owner; fixed once created.
    pub developer_id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApplicationRecord {
    pub id: String,
    #[serde(flatten)]
    pub input: ApplicationInput,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn record(m: applications::Model) -> ApplicationRecord {
    ApplicationRecord {
        id: m.id,
        input: ApplicationInput { developer_id: m.developer_id, name: m.name, description: m.description },
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

fn check(input: &ApplicationInput) -> Result<(), StoreError> {
    let mut errors: Vec<ValidationError> = Vec::new();
    errors.extend(validate::name("name", &input.name).err());
    if input.description.len() > 10_000 {
        errors.push(ValidationError { field: "description".into(), message: "must be at most 10000 bytes".into() });
    }
    if errors.is_empty() { Ok(()) } else { Err(StoreError::Invalid(errors)) }
}

pub async fn find(db: &impl ConnectionTrait, id: &str) -> Result<applications::Model, StoreError> {
    applications::Entity::find_by_id(id).one(db).await?.ok_or_else(|| StoreError::not_found("application", id))
}

pub async fn get(db: &impl ConnectionTrait, id: &str) -> Result<ApplicationRecord, StoreError> {
    Ok(record(find(db, id).await?))
}

/// Lists applications, optionally only one developer's.
pub async fn list(
    db: &impl ConnectionTrait,
    developer_id: Option<&str>,
    params: PageParams,
) -> Result<Page<ApplicationRecord>, StoreError> {
    let mut select = applications::Entity::find().order_by_asc(applications::Column::Id);
    if let Some(dev) = developer_id {
        select = select.filter(applications::Column::DeveloperId.eq(dev));
    }
    let (rows, total) = fetch_page(db, select, params).await?;
    Ok(Page::new(rows.into_iter().map(record).collect(), params, total))
}

pub async fn create(change: &Change<'_>, input: ApplicationInput) -> Result<ApplicationRecord, StoreError> {
    check(&input)?;
    developers::find(change.txn(), &input.developer_id)
        .await
        .map_err(|_| StoreError::invalid("developer_id", format!("no developer with id '{}'", input.developer_id)))?;
    let now = Utc::now();
    let model = applications::ActiveModel {
        id: Set(new_id()),
        developer_id: Set(input.developer_id.clone()),
        name: Set(input.name.clone()),
        description: Set(input.description.clone()),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(change.txn())
    .await?;
    change.audit("application.create", "application", &model.id, serde_json::json!({"name": model.name})).await?;
    Ok(record(model))
}

pub async fn patch(change: &Change<'_>, id: &str, patch: &serde_json::Value) -> Result<ApplicationRecord, StoreError> {
    let current = get(change.txn(), id).await?;
    let input = patched(&current.input, patch)?;
    check(&input)?;
    if input.developer_id != current.input.developer_id {
        return Err(StoreError::invalid("developer_id", "cannot be changed once the application exists"));
    }
    let mut active: applications::ActiveModel = find(change.txn(), id).await?.into();
    active.name = Set(input.name);
    active.description = Set(input.description);
    active.updated_at = Set(Utc::now());
    let model = active.update(change.txn()).await?;
    change.audit("application.update", "application", &model.id, patch.clone()).await?;
    Ok(record(model))
}

pub async fn delete(change: &Change<'_>, id: &str) -> Result<(), StoreError> {
    let model = find(change.txn(), id).await?;
    applications::Entity::delete_by_id(model.id.clone()).exec(change.txn()).await?;
    change.audit("application.delete", "application", &model.id, serde_json::json!({})).await?;
    Ok(())
}
