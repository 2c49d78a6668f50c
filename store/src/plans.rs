//! Plans: the limits and approval rule a subscription is made under.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    Set,
};
use serde::{Deserialize, Serialize};
use turnpike_domain::model::{Quota, RateLimit};
use turnpike_domain::validate::{self, ValidationError};

use crate::entities::{plans, subscriptions};
use crate::json::{fetch_page, from_text, to_text};
use crate::{Change, Page, PageParams, StoreError, new_id, patched};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PlanInput {
    /// Unique identifier, fixed once created.
    pub slug: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<Quota>,
    /// Whether new subscriptions wait for an admin's approval.
    #[serde(default)]
    pub requires_approval: bool,
}

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanRecord {
    pub id: String,
    #[serde(flatten)]
    pub input: PlanInput,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(crate) fn record(m: plans::Model) -> Result<PlanRecord, StoreError> {
    Ok(PlanRecord {
        input: PlanInput {
            rate_limit: m.rate_limit.as_deref().map(|t| from_text("plans.rate_limit", t)).transpose()?,
            quota: m.quota.as_deref().map(|t| from_text("plans.quota", t)).transpose()?,
            slug: m.slug,
            name: m.name,
            description: m.description,
            requires_approval: m.requires_approval,
        },
        id: m.id,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

fn check(input: &PlanInput) -> Result<(), StoreError> {
    let mut errors: Vec<ValidationError> = Vec::new();
    errors.extend(validate::slug("slug", &input.slug).err());
    errors.extend(validate::name("name", &input.name).err());
    if let Some(r) = &input.rate_limit {
        errors.extend(validate::rate_limit("rate_limit", r).err());
    }
    if let Some(q) = &input.quota {
        errors.extend(validate::quota("quota", q).err());
    }
    if errors.is_empty() { Ok(()) } else { Err(StoreError::Invalid(errors)) }
}

pub async fn find(db: &impl ConnectionTrait, id_or_slug: &str) -> Result<plans::Model, StoreError> {
    plans::Entity::find()
        .filter(Condition::any().add(plans::Column::Id.eq(id_or_slug)).add(plans::Column::Slug.eq(id_or_slug)))
        .one(db)
        .await?
        .ok_or_else(|| StoreError::not_found("plan", id_or_slug))
}

pub async fn get(db: &impl ConnectionTrait, id_or_slug: &str) -> Result<PlanRecord, StoreError> {
    record(find(db, id_or_slug).await?)
}

pub async fn list(db: &impl ConnectionTrait, params: PageParams) -> Result<Page<PlanRecord>, StoreError> {
    let select = plans::Entity::find().order_by_asc(plans::Column::Slug);
    let (rows, total) = fetch_page(db, select, params).await?;
    Ok(Page::new(rows.into_iter().map(record).collect::<Result<_, _>>()?, params, total))
}

pub async fn create(change: &Change<'_>, input: PlanInput) -> Result<PlanRecord, StoreError> {
    check(&input)?;
    if plans::Entity::find().filter(plans::Column::Slug.eq(input.slug.clone())).count(change.txn()).await? > 0 {
        return Err(StoreError::Conflict(format!("a plan with slug '{}' already exists", input.slug)));
    }
    let now = Utc::now();
    let model = plans::ActiveModel {
        id: Set(new_id()),
        slug: Set(input.slug.clone()),
        name: Set(input.name.clone()),
        description: Set(input.description.clone()),
        rate_limit: Set(input.rate_limit.as_ref().map(to_text)),
        quota: Set(input.quota.as_ref().map(to_text)),
        requires_approval: Set(input.requires_approval),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(change.txn())
    .await?;
    change.audit("plan.create", "plan", &model.id, serde_json::to_value(&input).unwrap_or_default()).await?;
    record(model)
}

pub async fn replace(change: &Change<'_>, id_or_slug: &str, input: PlanInput) -> Result<PlanRecord, StoreError> {
    check(&input)?;
    let model = find(change.txn(), id_or_slug).await?;
    if model.slug != input.slug {
        return Err(StoreError::invalid("slug", "cannot be changed once the plan exists"));
    }
    let mut active: plans::ActiveModel = model.into();
    active.name = Set(input.name.clone());
    active.description = Set(input.description.clone());
    active.rate_limit = Set(input.rate_limit.as_ref().map(to_text));
    active.quota = Set(input.quota.as_ref().map(to_text));
    active.requires_approval = Set(input.requires_approval);
    active.updated_at = Set(Utc::now());
    let model = active.update(change.txn()).await?;
    change.audit("plan.update", "plan", &model.id, serde_json::to_value(&input).unwrap_or_default()).await?;
    record(model)
}

pub async fn patch(change: &Change<'_>, id_or_slug: &str, patch: &serde_json::Value) -> Result<PlanRecord, StoreError> {
    let current = get(change.txn(), id_or_slug).await?;
    let input = patched(&current.input, patch)?;
    replace(change, &current.id, input).await
}

pub async fn delete(change: &Change<'_>, id_or_slug: &str) -> Result<(), StoreError> {
    let model = find(change.txn(), id_or_slug).await?;
    let used = subscriptions::Entity::find()
        .filter(subscriptions::Column::PlanId.eq(model.id.clone()))
        .count(change.txn())
        .await?;
    if used > 0 {
        return Err(StoreError::Conflict(format!("plan '{}' has {used} subscription(s)", model.slug)));
    }
    plans::Entity::delete_by_id(model.id.clone()).exec(change.txn()).await?;
    change.audit("plan.delete", "plan", &model.id, serde_json::json!({"slug": model.slug})).await?;
    Ok(())
}
