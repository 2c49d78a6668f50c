//! `/admin/v1/upstreams`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use turnpike_domain::model::UpstreamSpec;
use turnpike_store::upstreams::{self, UpstreamRecord};
use turnpike_store::{Page, PageParams};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::auth::Admin;
use crate::extract::{Body, Params, Segments};
use crate::problem::Problem;

pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(list_upstreams, create_upstream)).routes(routes!(
        get_upstream,
        patch_upstream,
        delete_upstream
    ))
}

#[utoipa::path(get, path = "/admin/v1/upstreams", tag = "upstreams", params(PageParams),
    responses((status = 200, body = Page<UpstreamRecord>)))]
async fn list_upstreams(
    State(app): State<AdminState>,
    _admin: Admin,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<UpstreamRecord>>, Problem> {
    Ok(Json(upstreams::list(app.store.db(), page).await?))
}

#[utoipa::path(post, path = "/admin/v1/upstreams", tag = "upstreams", request_body = UpstreamSpec,
    responses((status = 201, body = UpstreamRecord), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_upstream(
    State(app): State<AdminState>,
    admin: Admin,
    Body(spec): Body<UpstreamSpec>,
) -> Result<(StatusCode, Json<UpstreamRecord>), Problem> {
    let record = app.write(&admin, async |c| upstreams::create(c, spec).await).await?;
    Ok((StatusCode::CREATED, Json(record)))
}

#[utoipa::path(get, path = "/admin/v1/upstreams/{upstream}", tag = "upstreams",
    params(("upstream" = String, Path, description = "Upstream id or name")),
    responses((status = 200, body = UpstreamRecord), (status = 404, body = Problem)))]
async fn get_upstream(
    State(app): State<AdminState>,
    _admin: Admin,
    Segments(id): Segments<String>,
) -> Result<Json<UpstreamRecord>, Problem> {
    Ok(Json(upstreams::get(app.store.db(), &id).await?))
}

/// Update an upstream with a JSON merge patch (RFC 7396) of its definition.
#[utoipa::path(patch, path = "/admin/v1/upstreams/{upstream}", tag = "upstreams",
    params(("upstream" = String, Path, description = "Upstream id or name")),
    request_body(content = Object, description = "JSON merge patch"),
    responses((status = 200, body = UpstreamRecord), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn patch_upstream(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(id): Segments<String>,
    Body(patch): Body<serde_json::Value>,
) -> Result<Json<UpstreamRecord>, Problem> {
    let record = app.write(&admin, async |c| upstreams::patch(c, &id, &patch).await).await?;
    Ok(Json(record))
}

/// Delete an upstream that no version uses.
#[utoipa::path(delete, path = "/admin/v1/upstreams/{upstream}", tag = "upstreams",
    params(("upstream" = String, Path, description = "Upstream id or name")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_upstream(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(id): Segments<String>,
) -> Result<StatusCode, Problem> {
    app.write(&admin, async |c| upstreams::delete(c, &id).await).await?;
    Ok(StatusCode::NO_CONTENT)
}
