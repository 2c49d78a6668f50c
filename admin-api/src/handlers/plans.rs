//! `/admin/v1/plans`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use turnpike_store::plans::{self, PlanInput, PlanRecord};
use turnpike_store::{Page, PageParams};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::auth::Admin;
use crate::extract::{Body, Params, Segments};
use crate::problem::Problem;

pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(list_plans, create_plan)).routes(routes!(get_plan, patch_plan, delete_plan))
}

#[utoipa::path(get, path = "/admin/v1/plans", tag = "plans", params(PageParams),
    responses((status = 200, body = Page<PlanRecord>)))]
async fn list_plans(
    State(app): State<AdminState>,
    _admin: Admin,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<PlanRecord>>, Problem> {
    Ok(Json(plans::list(app.store.db(), page).await?))
}

#[utoipa::path(post, path = "/admin/v1/plans", tag = "plans", request_body = PlanInput,
    responses((status = 201, body = PlanRecord), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_plan(
    State(app): State<AdminState>,
    admin: Admin,
    Body(input): Body<PlanInput>,
) -> Result<(StatusCode, Json<PlanRecord>), Problem> {
    let record = app.write(&admin, async |c| plans::create(c, input).await).await?;
    Ok((StatusCode::CREATED, Json(record)))
}

#[utoipa::path(get, path = "/admin/v1/plans/{plan}", tag = "plans",
    params(("plan" = String, Path, description = "Plan id or slug")),
    responses((status = 200, body = PlanRecord), (status = 404, body = Problem)))]
async fn get_plan(
    State(app): State<AdminState>,
    _admin: Admin,
    Segments(plan): Segments<String>,
) -> Result<Json<PlanRecord>, Problem> {
    Ok(Json(plans::get(app.store.db(), &plan).await?))
}

/// Update a plan with a JSON merge patch (RFC 7396); the slug cannot change.
#[utoipa::path(patch, path = "/admin/v1/plans/{plan}", tag = "plans",
    params(("plan" = String, Path, description = "Plan id or slug")),
    request_body(content = Object, description = "JSON merge patch"),
    responses((status = 200, body = PlanRecord), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn patch_plan(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(plan): Segments<String>,
    Body(patch): Body<serde_json::Value>,
) -> Result<Json<PlanRecord>, Problem> {
    Ok(Json(app.write(&admin, async |c| plans::patch(c, &plan, &patch).await).await?))
}

/// Delete a plan no subscription uses.
#[utoipa::path(delete, path = "/admin/v1/plans/{plan}", tag = "plans",
    params(("plan" = String, Path, description = "Plan id or slug")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_plan(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(plan): Segments<String>,
) -> Result<StatusCode, Problem> {
    app.write(&admin, async |c| plans::delete(c, &plan).await).await?;
    Ok(StatusCode::NO_CONTENT)
}
