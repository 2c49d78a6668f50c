//! The admin API's one error shape: RFC 9457 `application/problem+json`, mapped
//! here from every error the handlers can meet. Internal details go to the log.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};
use turnpike_domain::lifecycle::LifecycleError;
use turnpike_store::StoreError;

/// A problem details object.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Extension members: `errors`, `current_state`, `allowed_transitions`, `location`…
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extensions: Map<String, Value>,
}

impl Problem {
    pub fn new(status: StatusCode, kind: &str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("urn:turnpike:problem:{kind}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            extensions: Map::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Serialize) -> Problem {
        self.extensions.insert(key.to_owned(), serde_json::to_value(value).unwrap_or(Value::Null));
        self
    }

    pub fn unauthorized() -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid admin token is required (Authorization: Bearer …)",
        )
    }

    /// A well-formed body that does not fit the resource: 422 naming the field.
    pub fn invalid_body(field: &str, message: impl Into<String>) -> Problem {
        let message = message.into();
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-input", format!("{field}: {message}"))
            .with("errors", json!([{"field": field, "message": message}]))
    }

    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, "not-found", detail)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(&self)).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The unread rest of the body makes the connection unusable; say so
            // instead of letting the client's next request fail on it.
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for Problem {
    fn from(err: StoreError) -> Problem {
        match err {
            StoreError::NotFound { .. } => Problem::not_found(err.to_string()),
            StoreError::Conflict(detail) => Problem::new(StatusCode::CONFLICT, "conflict", detail),
            StoreError::Invalid(errors) => {
                let detail = errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; ");
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-input", detail).with("errors", errors)
            }
            StoreError::Lifecycle(e) => lifecycle(e),
            StoreError::Subscription(e) => {
                Problem::new(StatusCode::CONFLICT, "illegal-subscription-action", e.to_string())
                    .with("current_state", e.from)
                    .with("allowed_actions", &e.allowed)
            }
            StoreError::Document(e) => {
                let mut p = Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-openapi-document", e.to_string());
                if let Some(location) = &e.location {
                    p = p.with("location", location);
                }
                if let Some(line) = e.line {
                    p = p.with("line", line);
                }
                if let Some(column) = e.column {
                    p = p.with("column", column);
                }
                p
            }
            StoreError::Database(e) => {
                tracing::error!(error = %e, "database error");
                if matches!(e, turnpike_store::DbErr::ConnectionAcquire(_) | turnpike_store::DbErr::Conn(_)) {
                    Problem::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        "the control-plane database is unavailable",
                    )
                } else {
                    Problem::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "an internal error occurred; it has been logged",
                    )
                }
            }
        }
    }
}

fn lifecycle(e: LifecycleError) -> Problem {
    match &e {
        LifecycleError::IllegalTransition { from, allowed, .. } => {
            Problem::new(StatusCode::CONFLICT, "illegal-transition", e.to_string())
                .with("current_state", from)
                .with("allowed_transitions", allowed)
        }
        LifecycleError::Immutable { state }
        | LifecycleError::NotDraft { state }
        | LifecycleError::NotDeletable { state } => {
            Problem::new(StatusCode::CONFLICT, "state-conflict", e.to_string()).with("current_state", state)
        }
        LifecycleError::SunsetRequired
        | LifecycleError::SunsetInPast { .. }
        | LifecycleError::SunsetNotApplicable { .. } => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-input", e.to_string())
                .with("errors", json!([{"field": "sunset_at", "message": e.to_string()}]))
        }
    }
}

impl From<JsonRejection> for Problem {
    fn from(rejection: JsonRejection) -> Problem {
        let kind = match rejection {
            JsonRejection::JsonSyntaxError(_) => "malformed-body",
            JsonRejection::JsonDataError(_) => "invalid-input",
            JsonRejection::MissingJsonContentType(_) => "unsupported-media-type",
            JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => "body-too-large",
            _ => "bad-body",
        };
        Problem::new(rejection.status(), kind, rejection.body_text())
    }
}

impl From<QueryRejection> for Problem {
    fn from(rejection: QueryRejection) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-query", rejection.body_text())
    }
}

impl From<PathRejection> for Problem {
    fn from(rejection: PathRejection) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-path", rejection.body_text())
    }
}
