//! Admin authentication: every `/admin/v1` route takes an [`Admin`], so a handler
//! states in its signature that it needs a valid bearer token.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use turnpike_store::{Actor, tokens};

use crate::AdminState;
use crate::problem::Problem;

/// The authenticated caller: an admin token that exists and is not revoked.
pub struct Admin {
    pub token_id: String,
}

impl Admin {
    pub fn actor(&self) -> Actor {
        Actor(format!("token:{}", self.token_id))
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

impl FromRequestParts<AdminState> for Admin {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, Problem> {
        let presented = bearer(parts).ok_or_else(Problem::unauthorized)?;
        let token = tokens::authenticate(state.store.db(), &state.hasher, presented)
            .await?
            .ok_or_else(Problem::unauthorized)?;
        Ok(Admin { token_id: token.id })
    }
}
