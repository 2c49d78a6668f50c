//! Request extractors whose rejections are problems, so a malformed body, query or
//! path gets the same error shape as every other failure.

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::problem::Problem;

/// A JSON body (`deny_unknown_fields` on the target type turns unknown fields into 422).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let axum::Json(value) = axum::Json::<serde_json::Value>::from_request(req, state).await?;
        // serde would also read a struct from an array of its fields in order; the
        // API only speaks objects.
        if !value.is_object() {
            return Err(Problem::invalid_body("body", "must be a JSON object"));
        }
        serde_path_to_error::deserialize(value).map(Body).map_err(|e| {
            let field = e.path().to_string();
            Problem::invalid_body(if field == "." { "body" } else { &field }, e.inner().to_string())
        })
    }
}

/// Query-string parameters.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(Params(value))
    }
}

/// Path parameters.
pub struct Segments<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Segments<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        let Path(value) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(Segments(value))
    }
}

/// A raw body (an uploaded document), within the body size limit.
pub struct RawBody(pub bytes::Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        let bytes = bytes::Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            let kind = if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE { "body-too-large" } else { "bad-body" };
            Problem::new(status, kind, rejection.body_text())
        })?;
        Ok(RawBody(bytes))
    }
}
