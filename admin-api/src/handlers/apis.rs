//! `/admin/v1/apis`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use turnpike_store::apis::{self, ApiInput, ApiRecord};
use turnpike_store::{Page, PageParams};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::auth::Admin;
use crate::extract::{Body, Params, Segments};
use crate::problem::Problem;

pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(list_apis, create_api)).routes(routes!(get_api, patch_api, delete_api))
}

#[utoipa::path(get, path = "/admin/v1/apis", tag = "apis", params(PageParams),
    responses((status = 200, body = Page<ApiRecord>)))]
async fn list_apis(
    State(app): State<AdminState>,
    _admin: Admin,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<ApiRecord>>, Problem> {
    Ok(Json(apis::list(app.store.db(), page).await?))
}

#[utoipa::path(post, path = "/admin/v1/apis", tag = "apis", request_body = ApiInput,
    responses((status = 201, body = ApiRecord), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_api(
    State(app): State<AdminState>,
    admin: Admin,
    Body(input): Body<ApiInput>,
) -> Result<(StatusCode, Json<ApiRecord>), Problem> {
    let record = app.write(&admin, async |c| apis::create(c, input).await).await?;
    Ok((StatusCode::CREATED, Json(record)))
}

#[utoipa::path(get, path = "/admin/v1/apis/{api}", tag = "apis",
    params(("api" = String, Path, description = "API id or slug")),
    responses((status = 200, body = ApiRecord), (status = 404, body = Problem)))]
async fn get_api(
    State(app): State<AdminState>,
    _admin: Admin,
    Segments(api): Segments<String>,
) -> Result<Json<ApiRecord>, Problem> {
    Ok(Json(apis::get(app.store.db(), &api).await?))
}

/// Update an API with a JSON merge patch (RFC 7396); the slug cannot change.
#[utoipa::path(patch, path = "/admin/v1/apis/{api}", tag = "apis",
    params(("api" = String, Path, description = "API id or slug")),
    request_body(content = Object, description = "JSON merge patch"),
    responses((status = 200, body = ApiRecord), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn patch_api(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(api): Segments<String>,
    Body(patch): Body<serde_json::Value>,
) -> Result<Json<ApiRecord>, Problem> {
    Ok(Json(app.write(&admin, async |c| apis::patch(c, &api, &patch).await).await?))
}

/// Delete an API with its versions; refused while a version is published or deprecated.
#[utoipa::path(delete, path = "/admin/v1/apis/{api}", tag = "apis",
    params(("api" = String, Path, description = "API id or slug")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_api(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(api): Segments<String>,
) -> Result<StatusCode, Problem> {
    app.write(&admin, async |c| apis::delete(c, &api).await).await?;
    Ok(StatusCode::NO_CONTENT)
}
