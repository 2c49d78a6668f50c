//! The snapshot compiler: turns the control plane's tables into the gateway's
//! [`SnapshotContent`] and stores each distinct result under the next version.

use std::collections::HashMap;

use chrono::Utc;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set};
use serde_json::Value;
use turnpike_domain::model::VersionState;
use turnpike_domain::model::Versioning;
use turnpike_domain::openapi::request_header_names;
use turnpike_domain::policy::Policies;
use turnpike_domain::snapshot::{
    Snapshot, SnapshotCertificate, SnapshotContent, SnapshotPlan, SnapshotRoute, SnapshotSelector, SnapshotUpstream,
    SnapshotVersion,
};

use crate::StoreError;
use crate::entities::{api_versions, apis, certificates, plans, routes, snapshots, upstreams};
use crate::json::{from_text, to_text};
use crate::versions::state_of;

/// Reads everything the gateway needs: non-draft versions with their routes, the
/// upstreams they use, and the version selectors of APIs that have one.
pub async fn compile_content(db: &impl ConnectionTrait) -> Result<SnapshotContent, StoreError> {
    let versions = api_versions::Entity::find()
        .filter(api_versions::Column::State.ne(VersionState::Draft.as_str()))
        .all(db)
        .await?;
    let api_rows = apis::Entity::find().all(db).await?;
    let mut selectors = Vec::new();
    for a in &api_rows {
        let versioning: Versioning = from_text("apis.versioning", &a.versioning)?;
        if versioning.selector().is_some() {
            selectors.push(SnapshotSelector { api_id: a.id.clone(), api_slug: a.slug.clone(), versioning });
        }
    }
    let slugs: HashMap<String, String> = api_rows.into_iter().map(|a| (a.id, a.slug)).collect();
    let mut routes_by_version: HashMap<String, Vec<SnapshotRoute>> = HashMap::new();
    let version_ids: Vec<String> = versions.iter().map(|v| v.id.clone()).collect();
    for r in routes::Entity::find().filter(routes::Column::VersionId.is_in(version_ids)).all(db).await? {
        routes_by_version
            .entry(r.version_id.clone())
            .or_default()
            .push(SnapshotRoute { spec: from_text("routes.spec", &r.spec)?, id: r.id });
    }
    // A successor is announced only while it carries traffic.
    let live_base_paths: HashMap<String, String> =
        versions.iter().filter(|v| state_of(v).is_live()).map(|v| (v.id.clone(), v.base_path.clone())).collect();
    let used: Vec<String> = versions.iter().filter_map(|v| v.upstream_id.clone()).collect();
    let upstreams = upstreams::Entity::find()
        .filter(upstreams::Column::Id.is_in(used))
        .all(db)
        .await?
        .into_iter()
        .map(|u| Ok(SnapshotUpstream { spec: from_text("upstreams.spec", &u.spec)?, id: u.id }))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let versions = versions
        .into_iter()
        .map(|v| {
            let policies = crate::versions::policies_of(&v);
            // Parsed once for both of its uses.
            let document = parsed_document(&v);
            SnapshotVersion {
                docs_headers: document.as_ref().map(request_header_names).unwrap_or_default(),
                openapi: validation_document(&v, document, &policies),
                policies,
                state: state_of(&v),
                api_slug: slugs.get(&v.api_id).cloned().unwrap_or_default(),
                successor_base_path: v.successor_id.as_ref().and_then(|id| live_base_paths.get(id).cloned()),
                routes: routes_by_version.remove(&v.id).unwrap_or_default(),
                id: v.id,
                api_id: v.api_id,
                label: v.label,
                base_path: v.base_path,
                upstream_id: v.upstream_id,
                sunset_at: v.sunset_at,
                deprecated_at: v.deprecated_at,
            }
        })
        .collect();
    let plans = plans::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|p| {
            let record = crate::plans::record(p)?;
            Ok(SnapshotPlan {
                id: record.id,
                slug: record.input.slug,
                rate_limit: record.input.rate_limit,
                quota: record.input.quota,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let certificates = certificates::Entity::find()
        .all(db)
        .await?
        .into_iter()
        .map(|c| {
            Ok(SnapshotCertificate {
                hosts: from_text("certificates.hosts", &c.hosts)?,
                id: c.id,
                cert_pem: c.cert_pem,
                key_pem: c.key_pem,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let mut content = SnapshotContent { versions, upstreams, plans, certificates, selectors };
    content.canonicalize();
    Ok(content)
}

/// How deeply a document carried in a snapshot may nest: the snapshot wraps it in a
/// few levels of its own and must stay within `serde_json`'s limit of 128 to be read back.
const MAX_DOCUMENT_DEPTH: usize = 100;

/// The version's stored OpenAPI document, parsed; `None` without one, or (with a
/// warning) when it does not parse.
fn parsed_document(v: &api_versions::Model) -> Option<Value> {
    let text = v.openapi_document.as_deref()?;
    serde_json::from_str::<Value>(text)
        .inspect_err(|e| tracing::warn!(version = %v.id, error = %e, "the stored OpenAPI document does not parse"))
        .ok()
}

/// The stored OpenAPI document of a version whose policies validate requests
/// against it; `None` for every other version, so that snapshots stay small. A
/// document that cannot travel in a snapshot is left out with a warning, and the
/// gateway then does not validate that version.
fn validation_document(v: &api_versions::Model, document: Option<Value>, policies: &Policies) -> Option<Value> {
    if !policies.validate_requests {
        return None;
    }
    if v.openapi_document.is_none() {
        tracing::warn!(version = %v.id, "requests are to be validated but the version has no OpenAPI document");
        return None;
    }
    let document = document?;
    if depth(&document) > MAX_DOCUMENT_DEPTH {
        tracing::warn!(version = %v.id, "the OpenAPI document nests too deeply to validate requests against it");
        return None;
    }
    Some(document)
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The newest stored snapshot.
pub async fn latest(db: &impl ConnectionTrait) -> Result<Option<Snapshot>, StoreError> {
    newest(db, snapshots::Entity::find()).await
}

/// The newest stored snapshot if it is newer than `version`. Pollers call this: an
/// unchanged configuration costs an index look-up, not reading and parsing the whole
/// snapshot (megabytes with 10,000 routes).
pub async fn newer_than(db: &impl ConnectionTrait, version: u64) -> Result<Option<Snapshot>, StoreError> {
    let version = i64::try_from(version).unwrap_or(i64::MAX);
    newest(db, snapshots::Entity::find().filter(snapshots::Column::Version.gt(version))).await
}

async fn newest(
    db: &impl ConnectionTrait,
    query: sea_orm::Select<snapshots::Entity>,
) -> Result<Option<Snapshot>, StoreError> {
    let Some(row) = query.order_by_desc(snapshots::Column::Version).one(db).await? else {
        return Ok(None);
    };
    Ok(Some(Snapshot {
        version: u64::try_from(row.version).unwrap_or_default(),
        checksum: row.checksum,
        created_at: row.created_at,
        content: from_text("snapshots.content", &row.content)?,
    }))
}

/// Compiles the current state and stores it as a new snapshot if it differs from
/// the latest one. The first call on an empty store always produces version 1, so a
/// gateway can become ready on a platform with nothing published yet.
pub async fn refresh(db: &impl ConnectionTrait) -> Result<Option<Snapshot>, StoreError> {
    let content = compile_content(db).await?;
    let previous = latest(db).await?;
    if previous.as_ref().is_some_and(|p| p.checksum == content.checksum()) {
        return Ok(None);
    }
    let version = previous.map_or(1, |p| p.version + 1);
    let snapshot = Snapshot::compile(version, content, Utc::now());
    snapshots::ActiveModel {
        version: Set(i64::try_from(snapshot.version).expect("snapshot versions fit in i64")),
        checksum: Set(snapshot.checksum.clone()),
        content: Set(to_text(&snapshot.content)),
        created_at: Set(snapshot.created_at),
    }
    .insert(db)
    .await?;
    Ok(Some(snapshot))
}
