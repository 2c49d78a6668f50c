//! The audit log: who changed what, written in the same transaction as the change.

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, QueryOrder, Set};
use serde::Serialize;

use crate::entities::audit_log;
use crate::json::fetch_page;
use crate::{Page, PageParams, StoreError, new_id};

#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub id: String,
    pub at: chrono::DateTime<Utc>,
    /// Admin token id (or `system`/`bootstrap`/`config-import`) that made the change.
    pub actor: String,
    pub action: String,
    pub resource_type: String,
    pub resource_id: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub detail: serde_json::Value,
}

pub async fn record(
    db: &impl ConnectionTrait,
    actor: &str,
    action: &str,
    resource_type: &str,
    resource_id: &str,
    detail: serde_json::Value,
) -> Result<(), StoreError> {
    audit_log::ActiveModel {
        id: Set(new_id()),
        at: Set(Utc::now()),
        actor: Set(actor.into()),
        action: Set(action.into()),
        resource_type: Set(resource_type.into()),
        resource_id: Set(resource_id.into()),
        detail: Set(detail.to_string()),
    }
    .insert(db)
    .await?;
    Ok(())
}

/// Newest first.
pub async fn list(db: &impl ConnectionTrait, params: PageParams) -> Result<Page<AuditEntry>, StoreError> {
    let select = audit_log::Entity::find().order_by_desc(audit_log::Column::Id);
    let (rows, total) = fetch_page(db, select, params).await?;
    let items = rows
        .into_iter()
        .map(|r| AuditEntry {
            detail: serde_json::from_str(&r.detail).unwrap_or(serde_json::Value::Null),
            id: r.id,
            at: r.at,
            actor: r.actor,
            action: r.action,
            resource_type: r.resource_type,
            resource_id: r.resource_id,
        })
        .collect();
    Ok(Page::new(items, params, total))
}
