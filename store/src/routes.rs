//! Routes of an API version.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde::Serialize;
use turnpike_domain::lifecycle;
use turnpike_domain::model::RouteSpec;
use turnpike_domain::validate;

use crate::entities::{api_versions, routes};
use crate::json::{fetch_page, from_text, to_text};
use crate::versions::state_of;
use crate::{Change, Page, PageParams, StoreError, new_id, patched};

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RouteRecord {
    pub id: String,
    pub version_id: String,
    #[serde(flatten)]
    pub spec: RouteSpec,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(crate) fn record(m: routes::Model) -> Result<RouteRecord, StoreError> {
    Ok(RouteRecord {
        spec: from_text("routes.spec", &m.spec)?,
        id: m.id,
        version_id: m.version_id,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

async fn find(db: &impl ConnectionTrait, version: &api_versions::Model, id: &str) -> Result<routes::Model, StoreError> {
    routes::Entity::find_by_id(id)
        .filter(routes::Column::VersionId.eq(version.id.clone()))
        .one(db)
        .await?
        .ok_or_else(|| StoreError::not_found("route", id))
}

pub async fn get(
    db: &impl ConnectionTrait,
    version: &api_versions::Model,
    id: &str,
) -> Result<RouteRecord, StoreError> {
    record(find(db, version, id).await?)
}

pub async fn list(
    db: &impl ConnectionTrait,
    version: &api_versions::Model,
    params: PageParams,
) -> Result<Page<RouteRecord>, StoreError> {
    let select = routes::Entity::find()
        .filter(routes::Column::VersionId.eq(version.id.clone()))
        .order_by_asc(routes::Column::Id);
    let (rows, total) = fetch_page(db, select, params).await?;
    Ok(Page::new(rows.into_iter().map(record).collect::<Result<_, _>>()?, params, total))
}

pub async fn create(
    change: &Change<'_>,
    version: &api_versions::Model,
    spec: RouteSpec,
) -> Result<RouteRecord, StoreError> {
    lifecycle::ensure_editable(state_of(version))?;
    validate::route(&spec)?;
    let now = Utc::now();
    let model = routes::ActiveModel {
        id: Set(new_id()),
        version_id: Set(version.id.clone()),
        spec: Set(to_text(&spec)),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(change.txn())
    .await?;
    change.audit("route.create", "route", &model.id, serde_json::to_value(&spec).unwrap_or_default()).await?;
    record(model)
}

pub async fn patch(
    change: &Change<'_>,
    version: &api_versions::Model,
    id: &str,
    patch: &serde_json::Value,
) -> Result<RouteRecord, StoreError> {
    lifecycle::ensure_editable(state_of(version))?;
    let model = find(change.txn(), version, id).await?;
    let spec: RouteSpec = patched(&from_text::<RouteSpec>("routes.spec", &model.spec)?, patch)?;
    validate::route(&spec)?;
    let mut active: routes::ActiveModel = model.into();
    active.spec = Set(to_text(&spec));
    active.updated_at = Set(Utc::now());
    let model = active.update(change.txn()).await?;
    change.audit("route.update", "route", &model.id, patch.clone()).await?;
    record(model)
}

pub async fn delete(change: &Change<'_>, version: &api_versions::Model, id: &str) -> Result<(), StoreError> {
    lifecycle::ensure_editable(state_of(version))?;
    let model = find(change.txn(), version, id).await?;
    routes::Entity::delete_by_id(model.id.clone()).exec(change.txn()).await?;
    change.audit("route.delete", "route", &model.id, serde_json::json!({})).await?;
    Ok(())
}
