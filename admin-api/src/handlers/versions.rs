//! `/admin/v1/apis/{api}/versions`: versions, their lifecycle actions and OpenAPI documents.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use turnpike_domain::lifecycle::Transition;
use turnpike_domain::model::VersionState;
use turnpike_store::versions::{self, CopyInput, ImportOutcome, TransitionInput, VersionInput, VersionRecord};
use turnpike_store::{Page, PageParams, apis};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::auth::Admin;
use crate::extract::{Body, Params, RawBody, Segments};
use crate::problem::Problem;

pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_versions, create_version))
        .routes(routes!(get_version, patch_version, delete_version))
        .routes(routes!(publish_version))
        .routes(routes!(deprecate_version))
        .routes(routes!(retire_version))
        .routes(routes!(copy_version))
        .routes(routes!(put_openapi, get_openapi))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct VersionListParams {
    #[serde(default = "turnpike_store::default_page")]
    page: u64,
    #[serde(default = "turnpike_store::default_per_page")]
    per_page: u64,
    /// Only versions in this state.
    state: Option<VersionState>,
}

#[utoipa::path(get, path = "/admin/v1/apis/{api}/versions", tag = "versions",
    params(("api" = String, Path, description = "API id or slug"), VersionListParams),
    responses((status = 200, body = Page<VersionRecord>), (status = 404, body = Problem)))]
async fn list_versions(
    State(app): State<AdminState>,
    _admin: Admin,
    Segments(api): Segments<String>,
    Params(q): Params<VersionListParams>,
) -> Result<Json<Page<VersionRecord>>, Problem> {
    let db = app.store.db();
    let api = apis::find(db, &api).await?;
    let page = PageParams { page: q.page, per_page: q.per_page };
    Ok(Json(versions::list(db, &api, q.state, page).await?))
}

/// Create a draft version.
#[utoipa::path(post, path = "/admin/v1/apis/{api}/versions", tag = "versions",
    params(("api" = String, Path, description = "API id or slug")),
    request_body = VersionInput,
    responses((status = 201, body = VersionRecord), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_version(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(api): Segments<String>,
    Body(input): Body<VersionInput>,
) -> Result<(StatusCode, Json<VersionRecord>), Problem> {
    let record = app
        .write(&admin, async |c| {
            let api = apis::find(c.txn(), &api).await?;
            versions::create(c, &api, input).await
        })
        .await?;
    Ok((StatusCode::CREATED, Json(record)))
}

#[utoipa::path(get, path = "/admin/v1/apis/{api}/versions/{version}", tag = "versions",
    params(("api" = String, Path, description = "API id or slug"), ("version" = String, Path, description = "Version id or label")),
    responses((status = 200, body = VersionRecord), (status = 404, body = Problem)))]
async fn get_version(
    State(app): State<AdminState>,
    _admin: Admin,
    Segments((api, version)): Segments<(String, String)>,
) -> Result<Json<VersionRecord>, Problem> {
    let db = app.store.db();
    let api = apis::find(db, &api).await?;
    Ok(Json(versions::get(db, &api, &version).await?))
}

/// Update a version's label, base path or upstream with a JSON merge patch (RFC 7396);
/// on a deprecated version, `sunset_at` moves its sunset date (it must stay in the future).
#[utoipa::path(patch, path = "/admin/v1/apis/{api}/versions/{version}", tag = "versions",
    params(("api" = String, Path, description = "API id or slug"), ("version" = String, Path, description = "Version id or label")),
    request_body(content = Object, description = "JSON merge patch of label, base_path, upstream_id (and sunset_at when deprecated)"),
    responses((status = 200, body = VersionRecord), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn patch_version(
    State(app): State<AdminState>,
    admin: Admin,
    Segments((api, version)): Segments<(String, String)>,
    Body(patch): Body<serde_json::Value>,
) -> Result<Json<VersionRecord>, Problem> {
    let record = app
        .write(&admin, async |c| {
            let api = apis::find(c.txn(), &api).await?;
            versions::patch(c, &api, &version, &patch).await
        })
        .await?;
    Ok(Json(record))
}

/// Delete a draft or retired version.
#[utoipa::path(delete, path = "/admin/v1/apis/{api}/versions/{version}", tag = "versions",
    params(("api" = String, Path, description = "API id or slug"), ("version" = String, Path, description = "Version id or label")),
    responses((status = 204), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn delete_version(
    State(app): State<AdminState>,
    admin: Admin,
    Segments((api, version)): Segments<(String, String)>,
) -> Result<StatusCode, Problem> {
    app.write(&admin, async |c| {
        let api = apis::find(c.txn(), &api).await?;
        versions::delete(c, &api, &version).await
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn act(
    app: &AdminState,
    admin: &Admin,
    (api, version): (String, String),
    t: Transition,
    input: TransitionInput,
) -> Result<Json<VersionRecord>, Problem> {
    let record = app
        .write(admin, async |c| {
            let api = apis::find(c.txn(), &api).await?;
            versions::transition(c, &api, &version, t, input).await
        })
        .await?;
    Ok(Json(record))
}

/// Publish a draft (or un-deprecate a deprecated version): the gateway starts serving it.
#[utoipa::path(post, path = "/admin/v1/apis/{api}/versions/{version}/publish", tag = "versions",
    params(("api" = String, Path, description = "API id or slug"), ("version" = String, Path, description = "Version id or label")),
    responses((status = 200, body = VersionRecord), (status = 409, body = Problem, description = "Illegal transition; names the current state and the allowed transitions")))]
async fn publish_version(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(path): Segments<(String, String)>,
) -> Result<Json<VersionRecord>, Problem> {
    act(&app, &admin, path, Transition::Publish, TransitionInput::default()).await
}

/// Deprecate a published version; requires `sunset_at`. The gateway adds Deprecation and Sunset headers.
#[utoipa::path(post, path = "/admin/v1/apis/{api}/versions/{version}/deprecate", tag = "versions",
    params(("api" = String, Path, description = "API id or slug"), ("version" = String, Path, description = "Version id or label")),
    request_body = TransitionInput,
    responses((status = 200, body = VersionRecord), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn deprecate_version(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(path): Segments<(String, String)>,
    Body(input): Body<TransitionInput>,
) -> Result<Json<VersionRecord>, Problem> {
    act(&app, &admin, path, Transition::Deprecate, input).await
}

/// Retire a version for good: the gateway answers 410 Gone for it.
#[utoipa::path(post, path = "/admin/v1/apis/{api}/versions/{version}/retire", tag = "versions",
    params(("api" = String, Path, description = "API id or slug"), ("version" = String, Path, description = "Version id or label")),
    responses((status = 200, body = VersionRecord), (status = 409, body = Problem)))]
async fn retire_version(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(path): Segments<(String, String)>,
) -> Result<Json<VersionRecord>, Problem> {
    act(&app, &admin, path, Transition::Retire, TransitionInput::default()).await
}

/// Create a new draft version as a copy of this one (upstream, routes and document).
#[utoipa::path(post, path = "/admin/v1/apis/{api}/versions/{version}/copy", tag = "versions",
    params(("api" = String, Path, description = "API id or slug"), ("version" = String, Path, description = "Version id or label")),
    request_body = CopyInput,
    responses((status = 201, body = VersionRecord), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn copy_version(
    State(app): State<AdminState>,
    admin: Admin,
    Segments((api, version)): Segments<(String, String)>,
    Body(input): Body<CopyInput>,
) -> Result<(StatusCode, Json<VersionRecord>), Problem> {
    let record = app
        .write(&admin, async |c| {
            let api = apis::find(c.txn(), &api).await?;
            versions::copy(c, &api, &version, input).await
        })
        .await?;
    Ok((StatusCode::CREATED, Json(record)))
}

/// Import an OpenAPI 3.0/3.1 document (JSON or YAML) into the draft version `label`,
/// creating the draft if it does not exist. Its operations become the version's routes.
#[utoipa::path(put, path = "/admin/v1/apis/{api}/versions/{version}/openapi", tag = "versions",
    params(("api" = String, Path, description = "API id or slug"), ("version" = String, Path, description = "Version label")),
    request_body(content = String, description = "OpenAPI document", content_type = "application/yaml"),
    responses((status = 200, body = ImportOutcome, description = "Draft updated"), (status = 201, body = ImportOutcome, description = "Draft created"),
        (status = 409, body = Problem, description = "The version is not a draft"), (status = 422, body = Problem, description = "Broken document; says where")))]
async fn put_openapi(
    State(app): State<AdminState>,
    admin: Admin,
    Segments((api, version)): Segments<(String, String)>,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<ImportOutcome>), Problem> {
    let text = std::str::from_utf8(&body).map_err(|e| {
        Problem::new(StatusCode::BAD_REQUEST, "malformed-body", format!("the document is not UTF-8: {e}"))
    })?;
    let outcome = app
        .write(&admin, async |c| {
            let api = apis::find(c.txn(), &api).await?;
            versions::import_openapi(c, &api, &version, text).await
        })
        .await?;
    let status = if outcome.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(outcome)))
}

/// The version's stored OpenAPI document, as JSON.
#[utoipa::path(get, path = "/admin/v1/apis/{api}/versions/{version}/openapi", tag = "versions",
    params(("api" = String, Path, description = "API id or slug"), ("version" = String, Path, description = "Version id or label")),
    responses((status = 200, body = Object), (status = 404, body = Problem)))]
async fn get_openapi(
    State(app): State<AdminState>,
    _admin: Admin,
    Segments((api, version)): Segments<(String, String)>,
) -> Result<Json<serde_json::Value>, Problem> {
    let db = app.store.db();
    let api = apis::find(db, &api).await?;
    Ok(Json(versions::document(db, &api, &version).await?))
}
