//! API versions and their lifecycle. Every state change goes through
//! [`turnpike_domain::lifecycle`]; this module only loads, checks preconditions that
//! need the database, and saves.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    Set,
};
use serde::{Deserialize, Serialize};
use turnpike_domain::lifecycle::{self, Transition};
use turnpike_domain::model::VersionState;
use turnpike_domain::openapi;
use turnpike_domain::policy::{self, Policies};
use turnpike_domain::validate::{self, ValidationError};

use crate::entities::{api_versions, apis, routes};
use crate::json::fetch_page;
use crate::{Change, Page, PageParams, StoreError, new_id, patched, upstreams};

/// What an admin sends to create a version (and what PATCH merges into).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VersionInput {
    /// Version label, e.g. `v1`; unique within the API.
    pub label: String,
    /// Path prefix the version is served under; defaults to `/{api slug}/{label}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_path: Option<String>,
    /// Upstream id or name that receives the version's traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_id: Option<String>,
    /// Authentication, limits, CORS, caching and transforms applied by the gateway.
    #[serde(default)]
    pub policies: Policies,
}

/// Body of a lifecycle action.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TransitionInput {
    /// Required to deprecate: when the version will be retired (RFC 3339).
    #[serde(default)]
    pub sunset_at: Option<DateTime<Utc>>,
    /// Version (id or label of the same API) that replaces a deprecated one.
    #[serde(default)]
    pub successor: Option<String>,
}

/// Body of a copy action.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CopyInput {
    pub label: String,
    #[serde(default)]
    pub base_path: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VersionRecord {
    pub id: String,
    pub api_id: String,
    pub api_slug: String,
    pub label: String,
    pub state: VersionState,
    pub base_path: String,
    pub upstream_id: Option<String>,
    pub sunset_at: Option<DateTime<Utc>>,
    pub deprecated_at: Option<DateTime<Utc>>,
    pub successor_id: Option<String>,
    /// Whether an OpenAPI document is stored for this version.
    pub has_openapi_document: bool,
    /// The version's policies; a JWT `secret` is write-only and reads as `<redacted>`.
    pub policies: Policies,
    /// Lifecycle actions possible from the current state.
    pub allowed_transitions: Vec<Transition>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(crate) fn state_of(m: &api_versions::Model) -> VersionState {
    // The column is only ever written from VersionState::as_str.
    VersionState::parse(&m.state).unwrap_or(VersionState::Draft)
}

/// Shown in place of a write-only secret; sending it back in a PATCH keeps the secret.
pub const REDACTED: &str = "<redacted>";

/// The policies as an admin may read them: the JWT secret is write-only.
fn readable_policies(m: &api_versions::Model) -> Policies {
    let mut policies = policies_of(m);
    if let Some(jwt) = policies.jwt.as_mut()
        && jwt.secret.is_some()
    {
        jwt.secret = Some(turnpike_domain::policy::JwtSecret::new(REDACTED));
    }
    policies
}

pub(crate) fn record(m: api_versions::Model, api_slug: &str) -> VersionRecord {
    let state = state_of(&m);
    VersionRecord {
        policies: readable_policies(&m),
        allowed_transitions: lifecycle::allowed_transitions(state).to_vec(),
        has_openapi_document: m.openapi_document.is_some(),
        id: m.id,
        api_id: m.api_id,
        api_slug: api_slug.to_owned(),
        label: m.label,
        state,
        base_path: m.base_path,
        upstream_id: m.upstream_id,
        sunset_at: m.sunset_at,
        deprecated_at: m.deprecated_at,
        successor_id: m.successor_id,
        created_at: m.created_at,
        updated_at: m.updated_at,
    }
}

/// The version's policies; the column is only ever written from [`Policies`].
pub(crate) fn policies_of(m: &api_versions::Model) -> Policies {
    serde_json::from_str(&m.policies).unwrap_or_default()
}

pub fn default_base_path(api_slug: &str, label: &str) -> String {
    format!("/{api_slug}/{label}")
}

/// Finds a version of `api` by id or label.
pub async fn find(
    db: &impl ConnectionTrait,
    api: &apis::Model,
    id_or_label: &str,
) -> Result<api_versions::Model, StoreError> {
    api_versions::Entity::find()
        .filter(api_versions::Column::ApiId.eq(api.id.clone()))
        .filter(
            Condition::any()
                .add(api_versions::Column::Id.eq(id_or_label))
                .add(api_versions::Column::Label.eq(id_or_label)),
        )
        .one(db)
        .await?
        .ok_or_else(|| StoreError::not_found("version", format!("{}/{}", api.slug, id_or_label)))
}

pub async fn get(db: &impl ConnectionTrait, api: &apis::Model, id_or_label: &str) -> Result<VersionRecord, StoreError> {
    Ok(record(find(db, api, id_or_label).await?, &api.slug))
}

pub async fn list(
    db: &impl ConnectionTrait,
    api: &apis::Model,
    state: Option<VersionState>,
    params: PageParams,
) -> Result<Page<VersionRecord>, StoreError> {
    let mut select = api_versions::Entity::find()
        .filter(api_versions::Column::ApiId.eq(api.id.clone()))
        .order_by_asc(api_versions::Column::Id);
    if let Some(state) = state {
        select = select.filter(api_versions::Column::State.eq(state.as_str()));
    }
    let (rows, total) = fetch_page(db, select, params).await?;
    Ok(Page::new(rows.into_iter().map(|m| record(m, &api.slug)).collect(), params, total))
}

/// Checks label and base path and resolves the upstream reference to an id.
async fn resolve(
    db: &impl ConnectionTrait,
    api: &apis::Model,
    input: &VersionInput,
    except: Option<&str>,
) -> Result<(String, Option<String>), StoreError> {
    let base_path = input.base_path.clone().unwrap_or_else(|| default_base_path(&api.slug, &input.label));
    let mut errors: Vec<ValidationError> = Vec::new();
    errors.extend(validate::label("label", &input.label).err());
    errors.extend(validate::base_path("base_path", &base_path).err());
    if let Err(mut e) = policy::validate(&input.policies) {
        errors.append(&mut e);
    }
    if !errors.is_empty() {
        return Err(StoreError::Invalid(errors));
    }
    let upstream_id = match &input.upstream_id {
        Some(reference) => Some(
            upstreams::find(db, reference)
                .await
                .map_err(|e| match e {
                    StoreError::NotFound { .. } => {
                        StoreError::invalid("upstream_id", format!("no upstream with id or name '{reference}'"))
                    }
                    other => other,
                })?
                .id,
        ),
        None => None,
    };
    let clash = |col: api_versions::Column, value: String| {
        let mut q = api_versions::Entity::find().filter(col.eq(value));
        if let Some(id) = except {
            q = q.filter(api_versions::Column::Id.ne(id));
        }
        q
    };
    if clash(api_versions::Column::BasePath, base_path.clone()).count(db).await? > 0 {
        return Err(StoreError::Conflict(format!("base path '{base_path}' is already used by another version")));
    }
    if let Some(slug) = crate::apis::selector_owner(db, &base_path, None).await? {
        return Err(StoreError::Conflict(format!(
            "base path '{base_path}' is where API '{slug}' selects its versions by header or query"
        )));
    }
    let label_taken = clash(api_versions::Column::Label, input.label.clone())
        .filter(api_versions::Column::ApiId.eq(api.id.clone()))
        .count(db)
        .await?;
    if label_taken > 0 {
        return Err(StoreError::Conflict(format!("API '{}' already has a version '{}'", api.slug, input.label)));
    }
    Ok((base_path, upstream_id))
}

async fn insert_draft(
    change: &Change<'_>,
    api: &apis::Model,
    input: &VersionInput,
    document: Option<String>,
) -> Result<api_versions::Model, StoreError> {
    let (base_path, upstream_id) = resolve(change.txn(), api, input, None).await?;
    let now = Utc::now();
    Ok(api_versions::ActiveModel {
        id: Set(new_id()),
        api_id: Set(api.id.clone()),
        label: Set(input.label.clone()),
        state: Set(VersionState::Draft.as_str().into()),
        base_path: Set(base_path),
        upstream_id: Set(upstream_id),
        openapi_document: Set(document),
        sunset_at: Set(None),
        deprecated_at: Set(None),
        successor_id: Set(None),
        policies: Set(crate::json::to_text(&input.policies)),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(change.txn())
    .await?)
}

pub async fn create(change: &Change<'_>, api: &apis::Model, input: VersionInput) -> Result<VersionRecord, StoreError> {
    let model = insert_draft(change, api, &input, None).await?;
    change.audit("version.create", "version", &model.id, serde_json::to_value(&input).unwrap_or_default()).await?;
    Ok(record(model, &api.slug))
}

fn input_of(m: &api_versions::Model) -> VersionInput {
    VersionInput {
        label: m.label.clone(),
        base_path: Some(m.base_path.clone()),
        upstream_id: m.upstream_id.clone(),
        policies: policies_of(m),
    }
}

pub async fn patch(
    change: &Change<'_>,
    api: &apis::Model,
    id_or_label: &str,
    patch: &serde_json::Value,
) -> Result<VersionRecord, StoreError> {
    let model = find(change.txn(), api, id_or_label).await?;
    let state = state_of(&model);
    lifecycle::ensure_editable(state)?;
    // `sunset_at` is not part of the create body: it is set by deprecating, and only
    // a deprecated version's sunset may be moved here.
    let mut patch = patch.clone();
    let sunset = patch.as_object_mut().and_then(|o| o.remove("sunset_at"));
    // A record read back and sent again carries the redacted secret: keep the real one.
    if let Some(jwt) = patch.pointer_mut("/policies/jwt").and_then(|j| j.as_object_mut())
        && jwt.get("secret").and_then(|v| v.as_str()) == Some(REDACTED)
    {
        jwt.remove("secret");
    }
    let sunset_at = match sunset {
        None => model.sunset_at,
        Some(_) if state != VersionState::Deprecated => {
            return Err(StoreError::invalid(
                "sunset_at",
                "only a deprecated version has a sunset date; deprecate it to set one",
            ));
        }
        Some(value) => {
            let at: DateTime<Utc> = serde_json::from_value(value)
                .map_err(|e| StoreError::invalid("sunset_at", format!("must be an RFC 3339 date-time: {e}")))?;
            lifecycle::check_sunset(at, Utc::now())?;
            Some(crate::json::stored_precision(at))
        }
    };
    let input = patched(&input_of(&model), &patch)?;
    let (base_path, upstream_id) = resolve(change.txn(), api, &input, Some(&model.id)).await?;
    if upstream_id.is_none() && state.is_live() {
        return Err(StoreError::invalid("upstream_id", "a published or deprecated version needs an upstream"));
    }
    let mut active: api_versions::ActiveModel = model.into();
    active.sunset_at = Set(sunset_at);
    active.label = Set(input.label.clone());
    active.base_path = Set(base_path);
    active.upstream_id = Set(upstream_id);
    active.policies = Set(crate::json::to_text(&input.policies));
    active.updated_at = Set(Utc::now());
    let model = active.update(change.txn()).await?;
    change.audit("version.update", "version", &model.id, patch.clone()).await?;
    Ok(record(model, &api.slug))
}

pub async fn delete(change: &Change<'_>, api: &apis::Model, id_or_label: &str) -> Result<(), StoreError> {
    let model = find(change.txn(), api, id_or_label).await?;
    lifecycle::ensure_deletable(state_of(&model))?;
    // Versions that named this one as their successor stop doing so.
    api_versions::Entity::update_many()
        .col_expr(api_versions::Column::SuccessorId, sea_orm::sea_query::Expr::value(Option::<String>::None))
        .filter(api_versions::Column::SuccessorId.eq(model.id.clone()))
        .exec(change.txn())
        .await?;
    api_versions::Entity::delete_by_id(model.id.clone()).exec(change.txn()).await?;
    change.audit("version.delete", "version", &model.id, serde_json::json!({"label": model.label})).await?;
    Ok(())
}

/// Runs a lifecycle action.
pub async fn transition(
    change: &Change<'_>,
    api: &apis::Model,
    id_or_label: &str,
    t: Transition,
    input: TransitionInput,
) -> Result<VersionRecord, StoreError> {
    let model = find(change.txn(), api, id_or_label).await?;
    let now = Utc::now();
    let input = TransitionInput { sunset_at: input.sunset_at.map(crate::json::stored_precision), ..input };
    let from = state_of(&model);
    let to = lifecycle::transition(from, t, input.sunset_at, now)?;
    if to.is_live() {
        let route_count =
            routes::Entity::find().filter(routes::Column::VersionId.eq(model.id.clone())).count(change.txn()).await?;
        if model.upstream_id.is_none() || route_count == 0 {
            return Err(StoreError::Conflict(format!(
                "version '{}' cannot be {}: it needs an upstream and at least one route",
                model.label,
                to.as_str()
            )));
        }
    }
    let successor_id = match (&input.successor, t) {
        (Some(_), t) if t != Transition::Deprecate => {
            return Err(StoreError::invalid("successor", "only applies when deprecating"));
        }
        (Some(reference), _) => {
            let successor = find(change.txn(), api, reference).await.map_err(|_| {
                StoreError::invalid("successor", format!("API '{}' has no version '{reference}'", api.slug))
            })?;
            if successor.id == model.id {
                return Err(StoreError::invalid("successor", "a version cannot succeed itself"));
            }
            if state_of(&successor) != VersionState::Published {
                return Err(StoreError::invalid(
                    "successor",
                    format!("version '{}' is {}; a successor must be published", successor.label, successor.state),
                ));
            }
            Some(successor.id)
        }
        (None, Transition::Deprecate) => None,
        (None, _) => model.successor_id.clone().filter(|_| t == Transition::Retire),
    };
    let sunset_at = lifecycle::sunset_after(t, model.sunset_at, input.sunset_at);
    let mut active: api_versions::ActiveModel = model.into();
    active.state = Set(to.as_str().into());
    active.sunset_at = Set(sunset_at);
    active.successor_id = Set(successor_id);
    active.deprecated_at = Set(match to {
        VersionState::Deprecated => Some(now),
        VersionState::Published => None,
        _ => active.deprecated_at.clone().unwrap(),
    });
    active.updated_at = Set(now);
    let model = active.update(change.txn()).await?;
    change
        .audit(
            &format!("version.{}", t.as_str()),
            "version",
            &model.id,
            serde_json::json!({"from": from.as_str(), "to": to.as_str(), "sunset_at": sunset_at}),
        )
        .await?;
    Ok(record(model, &api.slug))
}

/// Creates a new draft with the same upstream, document and routes as an existing version.
pub async fn copy(
    change: &Change<'_>,
    api: &apis::Model,
    id_or_label: &str,
    input: CopyInput,
) -> Result<VersionRecord, StoreError> {
    let source = find(change.txn(), api, id_or_label).await?;
    let new_input = VersionInput {
        label: input.label,
        base_path: input.base_path,
        upstream_id: source.upstream_id.clone(),
        policies: policies_of(&source),
    };
    let model = insert_draft(change, api, &new_input, source.openapi_document.clone()).await?;
    let source_routes =
        routes::Entity::find().filter(routes::Column::VersionId.eq(source.id.clone())).all(change.txn()).await?;
    let now = Utc::now();
    for r in source_routes {
        routes::ActiveModel {
            id: Set(new_id()),
            version_id: Set(model.id.clone()),
            spec: Set(r.spec),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(change.txn())
        .await?;
    }
    change
        .audit("version.copy", "version", &model.id, serde_json::json!({"from": source.id, "label": model.label}))
        .await?;
    Ok(record(model, &api.slug))
}

/// Outcome of an OpenAPI import.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ImportOutcome {
    pub version: VersionRecord,
    /// Whether the version was created by this import (rather than updated).
    pub created: bool,
    pub routes: usize,
    pub title: String,
}

/// Creates or updates the draft version `label` from an OpenAPI document: its routes
/// become the document's operations and the document is kept for docs and validation.
pub async fn import_openapi(
    change: &Change<'_>,
    api: &apis::Model,
    label: &str,
    text: &str,
) -> Result<ImportOutcome, StoreError> {
    let imported = openapi::import(text)?;
    let document = serde_json::to_string(&imported.document).expect("JSON values serialize");
    let existing = api_versions::Entity::find()
        .filter(api_versions::Column::ApiId.eq(api.id.clone()))
        .filter(api_versions::Column::Label.eq(label))
        .one(change.txn())
        .await?;
    let (model, created) = match existing {
        Some(model) => {
            lifecycle::ensure_importable(state_of(&model))?;
            routes::Entity::delete_many()
                .filter(routes::Column::VersionId.eq(model.id.clone()))
                .exec(change.txn())
                .await?;
            let mut active: api_versions::ActiveModel = model.into();
            active.openapi_document = Set(Some(document));
            active.updated_at = Set(Utc::now());
            (active.update(change.txn()).await?, false)
        }
        None => {
            let input = VersionInput {
                label: label.to_owned(),
                base_path: None,
                upstream_id: None,
                policies: Policies::default(),
            };
            (insert_draft(change, api, &input, Some(document)).await?, true)
        }
    };
    let now = Utc::now();
    for spec in &imported.routes {
        routes::ActiveModel {
            id: Set(new_id()),
            version_id: Set(model.id.clone()),
            spec: Set(serde_json::to_string(spec).expect("route specs serialize")),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(change.txn())
        .await?;
    }
    change
        .audit(
            "version.import_openapi",
            "version",
            &model.id,
            serde_json::json!({"title": imported.title, "routes": imported.routes.len(), "created": created}),
        )
        .await?;
    Ok(ImportOutcome {
        routes: imported.routes.len(),
        title: imported.title,
        version: record(model, &api.slug),
        created,
    })
}

/// The stored OpenAPI document of a version, as JSON.
pub async fn document(
    db: &impl ConnectionTrait,
    api: &apis::Model,
    id_or_label: &str,
) -> Result<serde_json::Value, StoreError> {
    let model = find(db, api, id_or_label).await?;
    let text = model.openapi_document.ok_or_else(|| StoreError::not_found("openapi document", &model.label))?;
    crate::json::from_text("api_versions.openapi_document", &text)
}
