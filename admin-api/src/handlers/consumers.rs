//! Developers, applications, their keys, and subscriptions.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use turnpike_domain::model::SubscriptionState;
use turnpike_domain::subscription::SubscriptionAction;
use turnpike_store::applications::{self, ApplicationInput, ApplicationRecord};
use turnpike_store::developers::{self, DeveloperInput, DeveloperRecord};
use turnpike_store::keys::{self, CreatedKey, KeyInput, KeyRecord};
use turnpike_store::subscriptions::{self, SubscriptionFilter, SubscriptionInput, SubscriptionRecord};
use turnpike_store::{Page, PageParams};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::auth::Admin;
use crate::extract::{Body, Params, Segments};
use crate::problem::Problem;

pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .routes(routes!(list_developers, create_developer))
        .routes(routes!(get_developer, patch_developer, delete_developer))
        .routes(routes!(list_applications, create_application))
        .routes(routes!(get_application, patch_application, delete_application))
        .routes(routes!(list_keys, create_key))
        .routes(routes!(get_key, patch_key, revoke_key))
        .routes(routes!(list_subscriptions, create_subscription))
        .routes(routes!(get_subscription, delete_subscription))
        .routes(routes!(approve_subscription))
        .routes(routes!(reject_subscription))
        .routes(routes!(revoke_subscription))
}

#[utoipa::path(get, path = "/admin/v1/developers", tag = "developers", params(PageParams),
    responses((status = 200, body = Page<DeveloperRecord>)))]
async fn list_developers(
    State(app): State<AdminState>,
    _admin: Admin,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<DeveloperRecord>>, Problem> {
    Ok(Json(developers::list(app.store.db(), page).await?))
}

#[utoipa::path(post, path = "/admin/v1/developers", tag = "developers", request_body = DeveloperInput,
    responses((status = 201, body = DeveloperRecord), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_developer(
    State(app): State<AdminState>,
    admin: Admin,
    Body(input): Body<DeveloperInput>,
) -> Result<(StatusCode, Json<DeveloperRecord>), Problem> {
    let record = app.write(&admin, async |c| developers::create(c, input).await).await?;
    Ok((StatusCode::CREATED, Json(record)))
}

#[utoipa::path(get, path = "/admin/v1/developers/{id}", tag = "developers",
    params(("id" = String, Path, description = "Developer id")),
    responses((status = 200, body = DeveloperRecord), (status = 404, body = Problem)))]
async fn get_developer(
    State(app): State<AdminState>,
    _admin: Admin,
    Segments(id): Segments<String>,
) -> Result<Json<DeveloperRecord>, Problem> {
    Ok(Json(developers::get(app.store.db(), &id).await?))
}

/// Update a developer with a JSON merge patch (RFC 7396).
#[utoipa::path(patch, path = "/admin/v1/developers/{id}", tag = "developers",
    params(("id" = String, Path, description = "Developer id")),
    request_body(content = Object, description = "JSON merge patch"),
    responses((status = 200, body = DeveloperRecord), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn patch_developer(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(id): Segments<String>,
    Body(patch): Body<serde_json::Value>,
) -> Result<Json<DeveloperRecord>, Problem> {
    Ok(Json(app.write(&admin, async |c| developers::patch(c, &id, &patch).await).await?))
}

/// Delete a developer with their applications, subscriptions and keys.
#[utoipa::path(delete, path = "/admin/v1/developers/{id}", tag = "developers",
    params(("id" = String, Path, description = "Developer id")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_developer(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(id): Segments<String>,
) -> Result<StatusCode, Problem> {
    app.write(&admin, async |c| developers::delete(c, &id).await).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ApplicationListParams {
    #[serde(default = "turnpike_store::default_page")]
    page: u64,
    #[serde(default = "turnpike_store::default_per_page")]
    per_page: u64,
    /// Only this developer's applications.
    developer_id: Option<String>,
}

#[utoipa::path(get, path = "/admin/v1/applications", tag = "applications", params(ApplicationListParams),
    responses((status = 200, body = Page<ApplicationRecord>)))]
async fn list_applications(
    State(app): State<AdminState>,
    _admin: Admin,
    Params(q): Params<ApplicationListParams>,
) -> Result<Json<Page<ApplicationRecord>>, Problem> {
    let page = PageParams { page: q.page, per_page: q.per_page };
    Ok(Json(applications::list(app.store.db(), q.developer_id.as_deref(), page).await?))
}

#[utoipa::path(post, path = "/admin/v1/applications", tag = "applications", request_body = ApplicationInput,
    responses((status = 201, body = ApplicationRecord), (status = 422, body = Problem)))]
async fn create_application(
    State(app): State<AdminState>,
    admin: Admin,
    Body(input): Body<ApplicationInput>,
) -> Result<(StatusCode, Json<ApplicationRecord>), Problem> {
    let record = app.write(&admin, async |c| applications::create(c, input).await).await?;
    Ok((StatusCode::CREATED, Json(record)))
}

#[utoipa::path(get, path = "/admin/v1/applications/{id}", tag = "applications",
    params(("id" = String, Path, description = "Application id")),
    responses((status = 200, body = ApplicationRecord), (status = 404, body = Problem)))]
async fn get_application(
    State(app): State<AdminState>,
    _admin: Admin,
    Segments(id): Segments<String>,
) -> Result<Json<ApplicationRecord>, Problem> {
    Ok(Json(applications::get(app.store.db(), &id).await?))
}

/// Update an application with a JSON merge patch (RFC 7396); its developer cannot change.
#[utoipa::path(patch, path = "/admin/v1/applications/{id}", tag = "applications",
    params(("id" = String, Path, description = "Application id")),
    request_body(content = Object, description = "JSON merge patch"),
    responses((status = 200, body = ApplicationRecord), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn patch_application(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(id): Segments<String>,
    Body(patch): Body<serde_json::Value>,
) -> Result<Json<ApplicationRecord>, Problem> {
    Ok(Json(app.write(&admin, async |c| applications::patch(c, &id, &patch).await).await?))
}

/// Delete an application with its subscriptions and keys.
#[utoipa::path(delete, path = "/admin/v1/applications/{id}", tag = "applications",
    params(("id" = String, Path, description = "Application id")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_application(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(id): Segments<String>,
) -> Result<StatusCode, Problem> {
    app.write(&admin, async |c| applications::delete(c, &id).await).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/admin/v1/applications/{id}/keys", tag = "keys",
    params(("id" = String, Path, description = "Application id"), PageParams),
    responses((status = 200, body = Page<KeyRecord>), (status = 404, body = Problem)))]
async fn list_keys(
    State(app): State<AdminState>,
    _admin: Admin,
    Segments(id): Segments<String>,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<KeyRecord>>, Problem> {
    let db = app.store.db();
    let application = applications::find(db, &id).await?;
    Ok(Json(keys::list(db, &application, page).await?))
}

/// Create an API key for an application. The response holds the key itself, shown this once.
#[utoipa::path(post, path = "/admin/v1/applications/{id}/keys", tag = "keys",
    params(("id" = String, Path, description = "Application id")),
    request_body = KeyInput,
    responses((status = 201, body = CreatedKey), (status = 404, body = Problem), (status = 422, body = Problem)))]
async fn create_key(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(id): Segments<String>,
    Body(input): Body<KeyInput>,
) -> Result<(StatusCode, Json<CreatedKey>), Problem> {
    let created = app
        .write(&admin, async |c| {
            let application = applications::find(c.txn(), &id).await?;
            keys::create(c, &app.hasher, &application, input).await
        })
        .await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/admin/v1/applications/{id}/keys/{key}", tag = "keys",
    params(("id" = String, Path, description = "Application id"), ("key" = String, Path, description = "Key id")),
    responses((status = 200, body = KeyRecord), (status = 404, body = Problem)))]
async fn get_key(
    State(app): State<AdminState>,
    _admin: Admin,
    Segments((id, key)): Segments<(String, String)>,
) -> Result<Json<KeyRecord>, Problem> {
    let db = app.store.db();
    let application = applications::find(db, &id).await?;
    Ok(Json(keys::get(db, &application, &key).await?))
}

/// Rename a key or change its expiry with a JSON merge patch (RFC 7396).
#[utoipa::path(patch, path = "/admin/v1/applications/{id}/keys/{key}", tag = "keys",
    params(("id" = String, Path, description = "Application id"), ("key" = String, Path, description = "Key id")),
    request_body(content = Object, description = "JSON merge patch of name and expires_at"),
    responses((status = 200, body = KeyRecord), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn patch_key(
    State(app): State<AdminState>,
    admin: Admin,
    Segments((id, key)): Segments<(String, String)>,
    Body(patch): Body<serde_json::Value>,
) -> Result<Json<KeyRecord>, Problem> {
    let record = app
        .write(&admin, async |c| {
            let application = applications::find(c.txn(), &id).await?;
            keys::patch(c, &application, &key, &patch).await
        })
        .await?;
    Ok(Json(record))
}

/// Revoke an API key (it is kept, marked revoked, for the record).
#[utoipa::path(delete, path = "/admin/v1/applications/{id}/keys/{key}", tag = "keys",
    params(("id" = String, Path, description = "Application id"), ("key" = String, Path, description = "Key id")),
    responses((status = 200, body = KeyRecord), (status = 404, body = Problem)))]
async fn revoke_key(
    State(app): State<AdminState>,
    admin: Admin,
    Segments((id, key)): Segments<(String, String)>,
) -> Result<Json<KeyRecord>, Problem> {
    let record = app
        .write(&admin, async |c| {
            let application = applications::find(c.txn(), &id).await?;
            keys::revoke(c, &application, &key).await
        })
        .await?;
    Ok(Json(record))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct SubscriptionListParams {
    #[serde(default = "turnpike_store::default_page")]
    page: u64,
    #[serde(default = "turnpike_store::default_per_page")]
    per_page: u64,
    /// Only subscriptions in this state.
    state: Option<SubscriptionState>,
    application_id: Option<String>,
    version_id: Option<String>,
}

#[utoipa::path(get, path = "/admin/v1/subscriptions", tag = "subscriptions", params(SubscriptionListParams),
    responses((status = 200, body = Page<SubscriptionRecord>)))]
async fn list_subscriptions(
    State(app): State<AdminState>,
    _admin: Admin,
    Params(q): Params<SubscriptionListParams>,
) -> Result<Json<Page<SubscriptionRecord>>, Problem> {
    let page = PageParams { page: q.page, per_page: q.per_page };
    let filter = SubscriptionFilter { state: q.state, application_id: q.application_id, version_id: q.version_id };
    Ok(Json(subscriptions::list(app.store.db(), &filter, page).await?))
}

/// Subscribe an application to a published version under a plan; pending if the plan requires approval.
#[utoipa::path(post, path = "/admin/v1/subscriptions", tag = "subscriptions", request_body = SubscriptionInput,
    responses((status = 201, body = SubscriptionRecord), (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_subscription(
    State(app): State<AdminState>,
    admin: Admin,
    Body(input): Body<SubscriptionInput>,
) -> Result<(StatusCode, Json<SubscriptionRecord>), Problem> {
    let record = app.write(&admin, async |c| subscriptions::create(c, input).await).await?;
    Ok((StatusCode::CREATED, Json(record)))
}

#[utoipa::path(get, path = "/admin/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, body = SubscriptionRecord), (status = 404, body = Problem)))]
async fn get_subscription(
    State(app): State<AdminState>,
    _admin: Admin,
    Segments(id): Segments<String>,
) -> Result<Json<SubscriptionRecord>, Problem> {
    Ok(Json(subscriptions::get(app.store.db(), &id).await?))
}

#[utoipa::path(delete, path = "/admin/v1/subscriptions/{id}", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_subscription(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(id): Segments<String>,
) -> Result<StatusCode, Problem> {
    app.write(&admin, async |c| subscriptions::delete(c, &id).await).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn act(
    app: &AdminState,
    admin: &Admin,
    id: &str,
    action: SubscriptionAction,
) -> Result<Json<SubscriptionRecord>, Problem> {
    Ok(Json(app.write(admin, async |c| subscriptions::act(c, id, action).await).await?))
}

/// Approve a pending subscription.
#[utoipa::path(post, path = "/admin/v1/subscriptions/{id}/approve", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, body = SubscriptionRecord), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn approve_subscription(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(id): Segments<String>,
) -> Result<Json<SubscriptionRecord>, Problem> {
    act(&app, &admin, &id, SubscriptionAction::Approve).await
}

/// Reject a pending subscription.
#[utoipa::path(post, path = "/admin/v1/subscriptions/{id}/reject", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, body = SubscriptionRecord), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn reject_subscription(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(id): Segments<String>,
) -> Result<Json<SubscriptionRecord>, Problem> {
    act(&app, &admin, &id, SubscriptionAction::Reject).await
}

/// Revoke an approved subscription.
#[utoipa::path(post, path = "/admin/v1/subscriptions/{id}/revoke", tag = "subscriptions",
    params(("id" = String, Path, description = "Subscription id")),
    responses((status = 200, body = SubscriptionRecord), (status = 404, body = Problem), (status = 409, body = Problem)))]
async fn revoke_subscription(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(id): Segments<String>,
) -> Result<Json<SubscriptionRecord>, Problem> {
    act(&app, &admin, &id, SubscriptionAction::Revoke).await
}
