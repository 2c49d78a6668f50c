//! `/admin/v1/tokens`: admin tokens.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use turnpike_store::tokens::{self, CreatedToken, TokenInput, TokenRecord};
use turnpike_store::{Page, PageParams};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::auth::Admin;
use crate::extract::{Body, Params, Segments};
use crate::problem::Problem;

pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(list_tokens, create_token)).routes(routes!(get_token, revoke_token))
}

/// List admin tokens (never their secrets).
#[utoipa::path(get, path = "/admin/v1/tokens", tag = "tokens", params(PageParams),
    responses((status = 200, body = Page<TokenRecord>), (status = 401, body = Problem)))]
async fn list_tokens(
    State(app): State<AdminState>,
    _admin: Admin,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<TokenRecord>>, Problem> {
    Ok(Json(tokens::list(app.store.db(), page).await?))
}

/// Create an admin token. The response holds the token itself, shown this once.
#[utoipa::path(post, path = "/admin/v1/tokens", tag = "tokens", request_body = TokenInput,
    responses((status = 201, body = CreatedToken), (status = 422, body = Problem)))]
async fn create_token(
    State(app): State<AdminState>,
    admin: Admin,
    Body(input): Body<TokenInput>,
) -> Result<(StatusCode, Json<CreatedToken>), Problem> {
    let created = app.write(&admin, async |c| tokens::create(c, &app.hasher, input).await).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/admin/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 200, body = TokenRecord), (status = 404, body = Problem)))]
async fn get_token(
    State(app): State<AdminState>,
    _admin: Admin,
    Segments(id): Segments<String>,
) -> Result<Json<TokenRecord>, Problem> {
    Ok(Json(tokens::get(app.store.db(), &id).await?))
}

/// Revoke an admin token; it stops working at once.
#[utoipa::path(delete, path = "/admin/v1/tokens/{id}", tag = "tokens",
    params(("id" = String, Path, description = "Token id")),
    responses((status = 200, body = TokenRecord), (status = 404, body = Problem)))]
async fn revoke_token(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(id): Segments<String>,
) -> Result<Json<TokenRecord>, Problem> {
    let record = app.write(&admin, async |c| tokens::revoke(c, &id).await).await?;
    Ok(Json(record))
}
