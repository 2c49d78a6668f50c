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

/// Fields whose values are secrets: they never reach the audit log, whatever the
/// change carried (a JWT policy's HMAC secret, a certificate's private key…).
const SECRET_FIELDS: [&str; 6] = ["secret", "key_pem", "password", "token", "key", "private_key"];

/// Replaces the value of every secret field, at any depth, with `"<redacted>"`.
pub fn redact(mut detail: serde_json::Value) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map.iter_mut() {
                    if SECRET_FIELDS.contains(&k.as_str()) && !v.is_null() {
                        *v = serde_json::Value::from("<redacted>");
                    } else {
                        walk(v);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut detail);
    detail
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::redact;

    #[test]
    fn secrets_are_redacted_at_any_depth() {
        let detail = json!({"policies": {"jwt": {"secret": "s3cr3t-s3cr3t", "issuer": "me"}}, "items": [{"key_pem": "PEM"}], "key": null});
        let redacted = redact(detail);
        assert_eq!(redacted["policies"]["jwt"]["secret"], "<redacted>");
        assert_eq!(redacted["policies"]["jwt"]["issuer"], "me");
        assert_eq!(redacted["items"][0]["key_pem"], "<redacted>");
        assert!(redacted["key"].is_null());
        assert!(!redacted.to_string().contains("s3cr3t"));
    }
}
