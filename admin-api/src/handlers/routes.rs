//! `/admin/v1/apis/{api}/versions/{version}/routes`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use turnpike_domain::model::RouteSpec;
use turnpike_store::routes::{self, RouteRecord};
use turnpike_store::{Page, PageParams, apis, versions};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::auth::Admin;
use crate::extract::{Body, Params, Segments};
use crate::problem::Problem;

pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(list_routes, create_route)).routes(routes!(
        get_route,
        patch_route,
        delete_route
    ))
}

#[utoipa::path(get, path = "/admin/v1/apis/{api}/versions/{version}/routes", tag = "routes",
    params(("api" = String, Path, description = "API id or slug"), ("version" = String, Path, description = "Version id or label"), PageParams),
    responses((status = 200, body = Page<RouteRecord>), (status = 404, body = Problem)))]
async fn list_routes(
    State(app): State<AdminState>,
    _admin: Admin,
    Segments((api, version)): Segments<(String, String)>,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<RouteRecord>>, Problem> {
    let db = app.store.db();
    let version = versions::find(db, &apis::find(db, &api).await?, &version).await?;
    Ok(Json(routes::list(db, &version, page).await?))
}

#[utoipa::path(post, path = "/admin/v1/apis/{api}/versions/{version}/routes", tag = "routes",
    params(("api" = String, Path, description = "API id or slug"), ("version" = String, Path, description = "Version id or label")),
    request_body = RouteSpec,
    responses((status = 201, body = RouteRecord), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_route(
    State(app): State<AdminState>,
    admin: Admin,
    Segments((api, version)): Segments<(String, String)>,
    Body(spec): Body<RouteSpec>,
) -> Result<(StatusCode, Json<RouteRecord>), Problem> {
    let record = app
        .write(&admin, async |c| {
            let version = versions::find(c.txn(), &apis::find(c.txn(), &api).await?, &version).await?;
            routes::create(c, &version, spec).await
        })
        .await?;
    Ok((StatusCode::CREATED, Json(record)))
}

#[utoipa::path(get, path = "/admin/v1/apis/{api}/versions/{version}/routes/{route}", tag = "routes",
    params(("api" = String, Path, description = "API id or slug"), ("version" = String, Path, description = "Version id or label"), ("route" = String, Path, description = "Route id")),
    responses((status = 200, body = RouteRecord), (status = 404, body = Problem)))]
async fn get_route(
    State(app): State<AdminState>,
    _admin: Admin,
    Segments((api, version, route)): Segments<(String, String, String)>,
) -> Result<Json<RouteRecord>, Problem> {
    let db = app.store.db();
    let version = versions::find(db, &apis::find(db, &api).await?, &version).await?;
    Ok(Json(routes::get(db, &version, &route).await?))
}

/// Update a route with a JSON merge patch (RFC 7396).
#[utoipa::path(patch, path = "/admin/v1/apis/{api}/versions/{version}/routes/{route}", tag = "routes",
    params(("api" = String, Path, description = "API id or slug"), ("version" = String, Path, description = "Version id or label"), ("route" = String, Path, description = "Route id")),
    request_body(content = Object, description = "JSON merge patch"),
    responses((status = 200, body = RouteRecord), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn patch_route(
    State(app): State<AdminState>,
    admin: Admin,
    Segments((api, version, route)): Segments<(String, String, String)>,
    Body(patch): Body<serde_json::Value>,
) -> Result<Json<RouteRecord>, Problem> {
    let record = app
        .write(&admin, async |c| {
            let version = versions::find(c.txn(), &apis::find(c.txn(), &api).await?, &version).await?;
            routes::patch(c, &version, &route, &patch).await
        })
        .await?;
    Ok(Json(record))
}

#[utoipa::path(delete, path = "/admin/v1/apis/{api}/versions/{version}/routes/{route}", tag = "routes",
    params(("api" = String, Path, description = "API id or slug"), ("version" = String, Path, description = "Version id or label"), ("route" = String, Path, description = "Route id")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_route(
    State(app): State<AdminState>,
    admin: Admin,
    Segments((api, version, route)): Segments<(String, String, String)>,
) -> Result<StatusCode, Problem> {
    app.write(&admin, async |c| {
        let version = versions::find(c.txn(), &apis::find(c.txn(), &api).await?, &version).await?;
        routes::delete(c, &version, &route).await
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
