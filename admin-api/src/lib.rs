//! The admin API: REST under `/admin/v1` for everything an API owner or operator
//! manages, its OpenAPI document (generated from the handlers) and interactive docs.
//! Handlers are thin: parse, call the store, map the result.

mod auth;
mod docs;
mod extract;
mod handlers;
pub mod problem;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use turnpike_bus::ConfigBus;
use turnpike_bus::credentials::InProcessCredentials;
use turnpike_domain::secrets::KeyHasher;
use turnpike_store::publish::Publisher;
use turnpike_store::{Change, Store};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::problem::Problem;

/// Shared state of the admin API.
#[derive(Clone)]
pub struct AdminState(Arc<Inner>);

pub struct Inner {
    pub store: Arc<Store>,
    pub bus: Arc<dyn ConfigBus>,
    pub hasher: KeyHasher,
    /// The gateway's credential table in this process, refreshed after every change.
    pub credentials: Arc<InProcessCredentials>,
    /// Commits changes and publishes them to the bus and the credential table.
    pub publisher: Publisher,
}

impl std::ops::Deref for AdminState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AdminState {
    pub fn new(
        store: Arc<Store>,
        bus: Arc<dyn ConfigBus>,
        hasher: KeyHasher,
        credentials: Arc<InProcessCredentials>,
    ) -> Self {
        let publisher = Publisher::new(store.clone(), bus.clone(), credentials.clone());
        AdminState(Arc::new(Inner { store, bus, hasher, credentials, publisher }))
    }

    /// Runs `f` as one change by `admin`: one transaction, its audit records, and the
    /// snapshot it produces, published after commit. An error rolls everything back.
    pub async fn write<T>(
        &self,
        admin: &auth::Admin,
        f: impl AsyncFnOnce(&Change<'_>) -> Result<T, turnpike_store::StoreError>,
    ) -> Result<T, Problem> {
        let change = self.store.change(&admin.actor()).await?;
        let out = f(&change).await?;
        self.commit(change).await?;
        Ok(out)
    }

    /// Commits a change, publishes the snapshot it produced and reloads the
    /// credentials: the shared path in [`Publisher::commit`].
    pub async fn commit(&self, change: Change<'_>) -> Result<(), Problem> {
        Ok(self.publisher.commit(change).await?)
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Turnpike admin API",
        description = "Manage APIs, versions, routes, upstreams, plans, developers, applications, subscriptions, keys \
                       and the gateway's TLS certificates. \
                       Every route needs `Authorization: Bearer <admin token>`. Errors are RFC 9457 problem details.",
        license(name = "Apache-2.0")
    ),
    modifiers(&SecurityAddon),
    security(("bearer" = []))
)]
struct ApiDoc;

struct SecurityAddon;

impl utoipa::Modify for SecurityAddon {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

fn api_router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(handlers::router())
}

/// The admin API's OpenAPI document.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

/// Largest request body accepted; OpenAPI documents are the big ones.
pub const DEFAULT_MAX_BODY: usize = 10 * 1024 * 1024;

/// The whole admin surface: `/admin/v1/…`, `/admin/openapi.json`, `/admin/docs`.
pub fn router(state: AdminState, max_body: usize) -> Router {
    let (api, doc) = api_router().split_for_parts();
    api.merge(docs::router(doc))
        .fallback(|| async { Problem::new(StatusCode::NOT_FOUND, "not-found", "no such admin endpoint") })
        .method_not_allowed_fallback(|| async {
            Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "method not allowed on this endpoint")
        })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}
