//! Upstreams: where versions send their traffic.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    Set,
};
use serde::Serialize;
use turnpike_domain::model::UpstreamSpec;
use turnpike_domain::validate;

use crate::entities::{api_versions, upstreams};
use crate::json::{fetch_page, from_text, to_text};
use crate::{Change, Page, PageParams, StoreError, new_id, patched};

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpstreamRecord {
    pub id: String,
    #[serde(flatten)]
    pub spec: UpstreamSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(crate) fn record(m: upstreams::Model) -> Result<UpstreamRecord, StoreError> {
    Ok(UpstreamRecord {
        spec: from_text("upstreams.spec", &m.spec)?,
        id: m.id,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

/// Finds an upstream by id or by name.
pub async fn find(db: &impl ConnectionTrait, id_or_name: &str) -> Result<upstreams::Model, StoreError> {
    upstreams::Entity::find()
        .filter(Condition::any().add(upstreams::Column::Id.eq(id_or_name)).add(upstreams::Column::Name.eq(id_or_name)))
        .one(db)
        .await?
        .ok_or_else(|| StoreError::not_found("upstream", id_or_name))
}

pub async fn get(db: &impl ConnectionTrait, id_or_name: &str) -> Result<UpstreamRecord, StoreError> {
    record(find(db, id_or_name).await?)
}

pub async fn list(db: &impl ConnectionTrait, params: PageParams) -> Result<Page<UpstreamRecord>, StoreError> {
    let select = upstreams::Entity::find().order_by_asc(upstreams::Column::Name);
    let (rows, total) = fetch_page(db, select, params).await?;
    Ok(Page::new(rows.into_iter().map(record).collect::<Result<_, _>>()?, params, total))
}

async fn ensure_name_free(db: &impl ConnectionTrait, name: &str, except: Option<&str>) -> Result<(), StoreError> {
    let mut q = upstreams::Entity::find().filter(upstreams::Column::Name.eq(name));
    if let Some(id) = except {
        q = q.filter(upstreams::Column::Id.ne(id));
    }
    if q.count(db).await? > 0 {
        return Err(StoreError::Conflict(format!("an upstream named '{name}' already exists")));
    }
    Ok(())
}

/// Every rule of an upstream, the operator's target policy included.
fn check(change: &Change<'_>, spec: &UpstreamSpec) -> Result<(), StoreError> {
    let mut v = validate::Validator::new();
    v.check_all(validate::upstream(spec)).check_all(validate::upstream_targets(spec, change.target_policy()));
    Ok(v.finish()?)
}

pub async fn create(change: &Change<'_>, spec: UpstreamSpec) -> Result<UpstreamRecord, StoreError> {
    check(change, &spec)?;
    ensure_name_free(change.txn(), &spec.name, None).await?;
    let now = Utc::now();
    let model = upstreams::ActiveModel {
        id: Set(new_id()),
        name: Set(spec.name.clone()),
        spec: Set(to_text(&spec)),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(change.txn())
    .await?;
    change.audit("upstream.create", "upstream", &model.id, serde_json::to_value(&spec).unwrap_or_default()).await?;
    record(model)
}

/// Replaces the upstream's definition with `spec`.
pub async fn replace(change: &Change<'_>, id_or_name: &str, spec: UpstreamSpec) -> Result<UpstreamRecord, StoreError> {
    check(change, &spec)?;
    let model = find(change.txn(), id_or_name).await?;
    ensure_name_free(change.txn(), &spec.name, Some(&model.id)).await?;
    let mut active: upstreams::ActiveModel = model.into();
    active.name = Set(spec.name.clone());
    active.spec = Set(to_text(&spec));
    active.updated_at = Set(Utc::now());
    let model = active.update(change.txn()).await?;
    change.audit("upstream.update", "upstream", &model.id, serde_json::to_value(&spec).unwrap_or_default()).await?;
    record(model)
}

pub async fn patch(
    change: &Change<'_>,
    id_or_name: &str,
    patch: &serde_json::Value,
) -> Result<UpstreamRecord, StoreError> {
    let current = get(change.txn(), id_or_name).await?;
    let spec = patched(&current.spec, patch)?;
    replace(change, &current.id, spec).await
}

/// Deletes an upstream that no version uses.
pub async fn delete(change: &Change<'_>, id_or_name: &str) -> Result<(), StoreError> {
    let model = find(change.txn(), id_or_name).await?;
    let users = api_versions::Entity::find()
        .filter(api_versions::Column::UpstreamId.eq(model.id.clone()))
        .count(change.txn())
        .await?;
    if users > 0 {
        return Err(StoreError::Conflict(format!(
            "upstream '{}' is used by {users} API version(s); point them elsewhere first",
            model.name
        )));
    }
    upstreams::Entity::delete_by_id(model.id.clone()).exec(change.txn()).await?;
    change.audit("upstream.delete", "upstream", &model.id, serde_json::json!({"name": model.name})).await?;
    Ok(())
}
