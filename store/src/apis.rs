//! APIs: the catalogue entries that own versions.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    Set,
};
use serde::{Deserialize, Serialize};
use turnpike_domain::lifecycle;
use turnpike_domain::model::{VersionState, Versioning};
use turnpike_domain::validate::{self, ValidationError};

use crate::entities::{api_versions, apis};
use crate::json::{fetch_page, from_text, to_text};
use crate::{Change, Page, PageParams, StoreError, new_id, patched};

/// What an admin sends to create an API (and what PATCH merges into).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApiInput {
    pub name: String,
    /// URL-safe identifier, unique, fixed once created: lowercase letters, digits and hyphens.
    pub slug: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub owner: Option<String>,
    /// How clients choose a version besides each version's own base path.
    #[serde(default)]
    pub versioning: Versioning,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiRecord {
    pub id: String,
    #[serde(flatten)]
    pub input: ApiInput,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(crate) fn record(m: apis::Model) -> Result<ApiRecord, StoreError> {
    Ok(ApiRecord {
        input: ApiInput {
            tags: from_text("apis.tags", &m.tags)?,
            versioning: from_text("apis.versioning", &m.versioning)?,
            name: m.name,
            slug: m.slug,
            description: m.description,
            owner: m.owner,
        },
        id: m.id,
        created_at: m.created_at,
        updated_at: m.updated_at,
    })
}

fn check(input: &ApiInput) -> Result<(), StoreError> {
    let mut errors: Vec<ValidationError> = Vec::new();
    errors.extend(validate::name("name", &input.name).err());
    errors.extend(validate::slug("slug", &input.slug).err());
    errors.extend(validate::tags("tags", &input.tags).err());
    if input.description.len() > 10_000 {
        errors.push(ValidationError { field: "description".into(), message: "must be at most 10000 bytes".into() });
    }
    if let Some(owner) = &input.owner {
        errors.extend(validate::name("owner", owner).err());
    }
    if let Err(mut e) = validate::versioning(&input.versioning) {
        errors.append(&mut e);
    }
    if errors.is_empty() { Ok(()) } else { Err(StoreError::Invalid(errors)) }
}

/// Refuses a selector base path that a version, or another API's selector, already uses:
/// the gateway could not tell which one a request means.
async fn check_selector(db: &impl ConnectionTrait, input: &ApiInput, api_id: Option<&str>) -> Result<(), StoreError> {
    let Some(selector) = input.versioning.selector() else { return Ok(()) };
    let base_path = &selector.base_path;
    let version = api_versions::Entity::find().filter(api_versions::Column::BasePath.eq(base_path)).one(db).await?;
    if let Some(version) = version {
        return Err(StoreError::Conflict(format!(
            "versioning base path '{base_path}' is already the base path of version '{}'",
            version.label
        )));
    }
    if let Some(slug) = selector_owner(db, base_path, api_id).await? {
        return Err(StoreError::Conflict(format!(
            "versioning base path '{base_path}' is already used by API '{slug}'"
        )));
    }
    Ok(())
}

/// The slug of the API (other than `except`) that selects versions under `base_path`.
pub(crate) async fn selector_owner(
    db: &impl ConnectionTrait,
    base_path: &str,
    except: Option<&str>,
) -> Result<Option<String>, StoreError> {
    // Few APIs select versions by header or query, and the catalogue is small, so
    // the JSON column is read rather than indexed.
    let rows = apis::Entity::find().filter(apis::Column::Versioning.ne(r#"{"mode":"path"}"#)).all(db).await?;
    for row in rows {
        if Some(row.id.as_str()) == except {
            continue;
        }
        let versioning: Versioning = from_text("apis.versioning", &row.versioning)?;
        if versioning.selector().is_some_and(|s| s.base_path == base_path) {
            return Ok(Some(row.slug));
        }
    }
    Ok(None)
}

/// Finds an API by id or slug.
pub async fn find(db: &impl ConnectionTrait, id_or_slug: &str) -> Result<apis::Model, StoreError> {
    apis::Entity::find()
        .filter(Condition::any().add(apis::Column::Id.eq(id_or_slug)).add(apis::Column::Slug.eq(id_or_slug)))
        .one(db)
        .await?
        .ok_or_else(|| StoreError::not_found("api", id_or_slug))
}

pub async fn get(db: &impl ConnectionTrait, id_or_slug: &str) -> Result<ApiRecord, StoreError> {
    record(find(db, id_or_slug).await?)
}

pub async fn list(db: &impl ConnectionTrait, params: PageParams) -> Result<Page<ApiRecord>, StoreError> {
    let select = apis::Entity::find().order_by_asc(apis::Column::Slug);
    let (rows, total) = fetch_page(db, select, params).await?;
    Ok(Page::new(rows.into_iter().map(record).collect::<Result<_, _>>()?, params, total))
}

pub async fn create(change: &Change<'_>, input: ApiInput) -> Result<ApiRecord, StoreError> {
    check(&input)?;
    let taken = apis::Entity::find().filter(apis::Column::Slug.eq(input.slug.clone())).count(change.txn()).await?;
    if taken > 0 {
        return Err(StoreError::Conflict(format!("an API with slug '{}' already exists", input.slug)));
    }
    check_selector(change.txn(), &input, None).await?;
    let now = Utc::now();
    let model = apis::ActiveModel {
        id: Set(new_id()),
        slug: Set(input.slug.clone()),
        name: Set(input.name.clone()),
        description: Set(input.description.clone()),
        tags: Set(to_text(&input.tags)),
        owner: Set(input.owner.clone()),
        versioning: Set(to_text(&input.versioning)),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(change.txn())
    .await?;
    change.audit("api.create", "api", &model.id, serde_json::to_value(&input).unwrap_or_default()).await?;
    record(model)
}

/// Replaces the API's editable fields; the slug cannot change.
pub async fn replace(change: &Change<'_>, id_or_slug: &str, input: ApiInput) -> Result<ApiRecord, StoreError> {
    check(&input)?;
    let model = find(change.txn(), id_or_slug).await?;
    if model.slug != input.slug {
        return Err(StoreError::invalid("slug", "cannot be changed once the API exists"));
    }
    check_selector(change.txn(), &input, Some(&model.id)).await?;
    let mut active: apis::ActiveModel = model.into();
    active.name = Set(input.name.clone());
    active.description = Set(input.description.clone());
    active.tags = Set(to_text(&input.tags));
    active.owner = Set(input.owner.clone());
    active.versioning = Set(to_text(&input.versioning));
    active.updated_at = Set(Utc::now());
    let model = active.update(change.txn()).await?;
    change.audit("api.update", "api", &model.id, serde_json::to_value(&input).unwrap_or_default()).await?;
    record(model)
}

pub async fn patch(change: &Change<'_>, id_or_slug: &str, patch: &serde_json::Value) -> Result<ApiRecord, StoreError> {
    let current = get(change.txn(), id_or_slug).await?;
    let input = patched(&current.input, patch)?;
    replace(change, &current.id, input).await
}

/// Deletes an API and its versions; refused while any version carries traffic.
pub async fn delete(change: &Change<'_>, id_or_slug: &str) -> Result<(), StoreError> {
    let model = find(change.txn(), id_or_slug).await?;
    let versions =
        api_versions::Entity::find().filter(api_versions::Column::ApiId.eq(model.id.clone())).all(change.txn()).await?;
    for v in &versions {
        let state = VersionState::parse(&v.state).unwrap_or(VersionState::Draft);
        if lifecycle::ensure_deletable(state).is_err() {
            return Err(StoreError::Conflict(format!(
                "API '{}' has version '{}' in state {}; retire it before deleting the API",
                model.slug,
                v.label,
                state.as_str()
            )));
        }
    }
    apis::Entity::delete_by_id(model.id.clone()).exec(change.txn()).await?;
    change.audit("api.delete", "api", &model.id, serde_json::json!({"slug": model.slug})).await?;
    Ok(())
}
