//! Admin API handlers, one module per resource. Each handler names the access it
//! needs ([`Admin`](crate::auth::Admin)), parses, calls the store and maps the result.

mod apis;
mod certificates;
mod consumers;
mod plans;
mod routes;
mod system;
mod tokens;
mod upstreams;
mod versions;

use utoipa_axum::router::OpenApiRouter;

use crate::AdminState;

pub fn router() -> OpenApiRouter<AdminState> {
    OpenApiRouter::new()
        .merge(tokens::router())
        .merge(upstreams::router())
        .merge(certificates::router())
        .merge(apis::router())
        .merge(versions::router())
        .merge(routes::router())
        .merge(plans::router())
        .merge(consumers::router())
        .merge(system::router())
}
