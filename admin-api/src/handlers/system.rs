//! `/admin/v1/config/snapshot` and `/admin/v1/audit`: what the gateways run and who changed what.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use turnpike_store::audit::{self, AuditEntry};
use turnpike_store::{Page, PageParams, snapshots};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::auth::Admin;
use crate::extract::Params;
use crate::problem::Problem;

pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(current_snapshot)).routes(routes!(list_audit))
}

/// The newest configuration snapshot.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SnapshotSummary {
    version: u64,
    checksum: String,
    created_at: DateTime<Utc>,
    /// Versions (published, deprecated, retired) the gateways know about.
    versions: usize,
    routes: usize,
    upstreams: usize,
}

#[utoipa::path(get, path = "/admin/v1/config/snapshot", tag = "system",
    responses((status = 200, body = SnapshotSummary), (status = 404, body = Problem)))]
async fn current_snapshot(State(app): State<AdminState>, _admin: Admin) -> Result<Json<SnapshotSummary>, Problem> {
    let snap =
        snapshots::latest(app.store.db()).await?.ok_or_else(|| Problem::not_found("no snapshot compiled yet"))?;
    Ok(Json(SnapshotSummary {
        version: snap.version,
        checksum: snap.checksum,
        created_at: snap.created_at,
        versions: snap.content.versions.len(),
        routes: snap.content.versions.iter().map(|v| v.routes.len()).sum(),
        upstreams: snap.content.upstreams.len(),
    }))
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/admin/v1/audit", tag = "system", params(PageParams),
    responses((status = 200, body = Page<AuditEntry>)))]
async fn list_audit(
    State(app): State<AdminState>,
    _admin: Admin,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<AuditEntry>>, Problem> {
    Ok(Json(audit::list(app.store.db(), page).await?))
}
