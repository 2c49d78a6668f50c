//! The public catalogue as the developer portal shows it: APIs with their visible
//! versions (never drafts) and the plans developers can subscribe under. Read-only.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder};
use turnpike_domain::model::VersionState;

use crate::apis::ApiRecord;
use crate::entities::{api_versions, apis, plans};
use crate::plans::PlanRecord;
use crate::versions::state_of;
use crate::{StoreError, json};

/// A version as developers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicVersion {
    pub id: String,
    pub label: String,
    pub state: VersionState,
    pub base_path: String,
    pub sunset_at: Option<DateTime<Utc>>,
    pub deprecated_at: Option<DateTime<Utc>>,
    /// Label of the version that replaces this one, when it is visible.
    pub successor: Option<String>,
    pub has_document: bool,
    pub created_at: DateTime<Utc>,
}

impl PublicVersion {
    /// Published or deprecated: callable at the gateway.
    pub fn is_live(&self) -> bool {
        self.state.is_live()
    }
}

/// An API with its visible versions, newest first.
#[derive(Debug, Clone)]
pub struct CatalogApi {
    pub api: ApiRecord,
    pub versions: Vec<PublicVersion>,
}

impl CatalogApi {
    /// Whether the catalogue lists it: it has a published or deprecated version.
    pub fn is_listed(&self) -> bool {
        self.versions.iter().any(PublicVersion::is_live)
    }

    /// The version to show first: the newest published one, else the newest deprecated one.
    pub fn latest(&self) -> Option<&PublicVersion> {
        let newest = |state| self.versions.iter().find(|v| v.state == state);
        newest(VersionState::Published).or_else(|| newest(VersionState::Deprecated))
    }
}

/// Visible versions of the given API rows, grouped by API id, newest first.
async fn versions_of(
    db: &impl ConnectionTrait,
    api_ids: Vec<String>,
) -> Result<HashMap<String, Vec<PublicVersion>>, StoreError> {
    let rows = api_versions::Entity::find()
        .filter(api_versions::Column::ApiId.is_in(api_ids))
        .filter(api_versions::Column::State.ne(VersionState::Draft.as_str()))
        .order_by_desc(api_versions::Column::CreatedAt)
        .order_by_desc(api_versions::Column::Id)
        .all(db)
        .await?;
    let labels: HashMap<String, String> = rows.iter().map(|m| (m.id.clone(), m.label.clone())).collect();
    let mut grouped: HashMap<String, Vec<PublicVersion>> = HashMap::new();
    for m in rows {
        let version = PublicVersion {
            state: state_of(&m),
            successor: m.successor_id.as_ref().and_then(|id| labels.get(id).cloned()),
            has_document: m.openapi_document.is_some(),
            id: m.id,
            label: m.label,
            base_path: m.base_path,
            sunset_at: m.sunset_at,
            deprecated_at: m.deprecated_at,
            created_at: m.created_at,
        };
        grouped.entry(m.api_id).or_default().push(version);
    }
    Ok(grouped)
}

/// Every API the catalogue lists (with a published or deprecated version), by name.
pub async fn listed(db: &impl ConnectionTrait) -> Result<Vec<CatalogApi>, StoreError> {
    let rows = apis::Entity::find().order_by_asc(apis::Column::Name).order_by_asc(apis::Column::Slug).all(db).await?;
    let mut versions = versions_of(db, rows.iter().map(|m| m.id.clone()).collect()).await?;
    let mut out = Vec::new();
    for row in rows {
        let entry =
            CatalogApi { versions: versions.remove(&row.id).unwrap_or_default(), api: crate::apis::record(row)? };
        if entry.is_listed() {
            out.push(entry);
        }
    }
    Ok(out)
}

/// The API with slug `slug` if it has any visible (non-draft) version.
pub async fn api(db: &impl ConnectionTrait, slug: &str) -> Result<Option<CatalogApi>, StoreError> {
    let Some(row) = apis::Entity::find().filter(apis::Column::Slug.eq(slug)).one(db).await? else {
        return Ok(None);
    };
    let versions = versions_of(db, vec![row.id.clone()]).await?.remove(&row.id).unwrap_or_default();
    if versions.is_empty() {
        return Ok(None);
    }
    Ok(Some(CatalogApi { api: crate::apis::record(row)?, versions }))
}

/// The stored OpenAPI document of a visible version (`None` for a version without one).
pub async fn document(db: &impl ConnectionTrait, version_id: &str) -> Result<Option<serde_json::Value>, StoreError> {
    let row = api_versions::Entity::find_by_id(version_id.to_owned())
        .one(db)
        .await?
        .ok_or_else(|| StoreError::not_found("version", version_id))?;
    if state_of(&row) == VersionState::Draft {
        return Err(StoreError::not_found("version", version_id));
    }
    row.openapi_document.as_deref().map(|text| json::from_text("api_versions.openapi_document", text)).transpose()
}

/// Every plan, by name.
pub async fn plans(db: &impl ConnectionTrait) -> Result<Vec<PlanRecord>, StoreError> {
    let rows = plans::Entity::find().order_by_asc(plans::Column::Name).all(db).await?;
    rows.into_iter().map(crate::plans::record).collect()
}
