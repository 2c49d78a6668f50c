//! `/admin/v1/certificates`: TLS certificates the gateway presents, chosen by SNI.
//! Responses describe a certificate (hosts, validity, fingerprint); the private key
//! goes in and is never sent back.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use turnpike_domain::certificate::CertificateInput;
use turnpike_store::certificates::{self, CertificateRecord};
use turnpike_store::{Page, PageParams};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::auth::Admin;
use crate::extract::{Body, Params, Segments};
use crate::problem::Problem;

pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new().routes(routes!(list_certificates, create_certificate)).routes(routes!(
        get_certificate,
        patch_certificate,
        delete_certificate
    ))
}

#[utoipa::path(get, path = "/admin/v1/certificates", tag = "certificates", params(PageParams),
    responses((status = 200, body = Page<CertificateRecord>)))]
async fn list_certificates(
    State(app): State<AdminState>,
    _admin: Admin,
    Params(page): Params<PageParams>,
) -> Result<Json<Page<CertificateRecord>>, Problem> {
    Ok(Json(certificates::list(app.store.db(), page).await?))
}

/// Add a certificate. The key must belong to the certificate, the certificate must
/// not have expired, and each host must be covered by it and have no other certificate.
#[utoipa::path(post, path = "/admin/v1/certificates", tag = "certificates", request_body = CertificateInput,
    responses((status = 201, body = CertificateRecord), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
async fn create_certificate(
    State(app): State<AdminState>,
    admin: Admin,
    Body(input): Body<CertificateInput>,
) -> Result<(StatusCode, Json<CertificateRecord>), Problem> {
    let record = app.write(&admin, async |c| certificates::create(c, input).await).await?;
    Ok((StatusCode::CREATED, Json(record)))
}

#[utoipa::path(get, path = "/admin/v1/certificates/{id}", tag = "certificates",
    params(("id" = String, Path, description = "Certificate id")),
    responses((status = 200, body = CertificateRecord), (status = 404, body = Problem)))]
async fn get_certificate(
    State(app): State<AdminState>,
    _admin: Admin,
    Segments(id): Segments<String>,
) -> Result<Json<CertificateRecord>, Problem> {
    Ok(Json(certificates::get(app.store.db(), &id).await?))
}

/// Renew or re-host a certificate with a JSON merge patch (RFC 7396) of
/// `{cert_pem, key_pem, hosts}`. Hosts stay unless given; `"hosts": null` takes them
/// from the certificate again.
#[utoipa::path(patch, path = "/admin/v1/certificates/{id}", tag = "certificates",
    params(("id" = String, Path, description = "Certificate id")),
    request_body(content = Object, description = "JSON merge patch"),
    responses((status = 200, body = CertificateRecord), (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
async fn patch_certificate(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(id): Segments<String>,
    Body(patch): Body<serde_json::Value>,
) -> Result<Json<CertificateRecord>, Problem> {
    let record = app.write(&admin, async |c| certificates::patch(c, &id, &patch).await).await?;
    Ok(Json(record))
}

/// Delete a certificate; its hosts are no longer served over TLS.
#[utoipa::path(delete, path = "/admin/v1/certificates/{id}", tag = "certificates",
    params(("id" = String, Path, description = "Certificate id")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_certificate(
    State(app): State<AdminState>,
    admin: Admin,
    Segments(id): Segments<String>,
) -> Result<StatusCode, Problem> {
    app.write(&admin, async |c| certificates::delete(c, &id).await).await?;
    Ok(StatusCode::NO_CONTENT)
}
