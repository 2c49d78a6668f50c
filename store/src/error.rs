//! The store's one error type. Callers map it to their surface's error shape.

use sea_orm::{DbErr, SqlErr};
use turnpike_domain::lifecycle::LifecycleError;
use turnpike_domain::openapi::ImportError;
use turnpike_domain::subscription::IllegalSubscriptionAction;
use turnpike_domain::validate::ValidationError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{resource} '{id}' not found")]
    NotFound { resource: &'static str, id: String },
    /// The change clashes with existing state (duplicate, still in use…).
    #[error("{0}")]
    Conflict(String),
    /// The input is well-formed but breaks a rule.
    #[error("invalid input")]
    Invalid(Vec<ValidationError>),
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    #[error(transparent)]
    Subscription(#[from] IllegalSubscriptionAction),
    /// An OpenAPI document that could not be imported.
    #[error(transparent)]
    Document(#[from] ImportError),
    #[error("database error: {0}")]
    Database(DbErr),
}

impl StoreError {
    pub fn not_found(resource: &'static str, id: impl Into<String>) -> Self {
        StoreError::NotFound { resource, id: id.into() }
    }

    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        StoreError::Invalid(vec![ValidationError { field: field.into(), message: message.into() }])
    }
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        // Uniqueness checks happen before writes; these catch the races between them.
        match err.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => {
                StoreError::Conflict("a resource with the same unique value already exists".into())
            }
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => {
                StoreError::Conflict("the change refers to a missing resource or one still in use".into())
            }
            _ => StoreError::Database(err),
        }
    }
}

impl From<Vec<ValidationError>> for StoreError {
    fn from(errors: Vec<ValidationError>) -> Self {
        StoreError::Invalid(errors)
    }
}

impl From<ValidationError> for StoreError {
    fn from(error: ValidationError) -> Self {
        StoreError::Invalid(vec![error])
    }
}
