//! What every page shares: the context the base layout needs (who is signed in, the
//! CSRF token, flash messages), field errors for forms, rendering, and the one place
//! errors become a friendly page ([`PageError`] and the [`render_errors`] middleware).

use std::collections::BTreeMap;
use std::fmt;

use askama::Template;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;
use turnpike_store::StoreError;

use crate::PortalState;
use crate::rules::new_token;
use crate::session_store::DEVELOPER_KEY;

/// Session key of the CSRF token.
pub const CSRF_KEY: &str = "csrf";
/// Session key of the flash messages waiting to be shown.
const FLASH_KEY: &str = "flash";

/// The signed-in developer, as pages show them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Viewer {
    pub id: String,
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlashKind {
    Success,
    Info,
    Error,
}

impl FlashKind {
    /// The CSS class suffix (`flash-success`).
    pub fn class(&self) -> &'static str {
        match self {
            FlashKind::Success => "success",
            FlashKind::Info => "info",
            FlashKind::Error => "error",
        }
    }
}

/// A message shown once, on the next page rendered (after a redirect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flash {
    pub kind: FlashKind,
    pub text: String,
}

/// Queues a flash message for the next page.
pub async fn flash(session: &Session, kind: FlashKind, text: impl Into<String>) -> Result<(), PageError> {
    let mut queued: Vec<Flash> = session.get(FLASH_KEY).await.map_err(PageError::internal)?.unwrap_or_default();
    queued.push(Flash { kind, text: text.into() });
    session.insert(FLASH_KEY, queued).await.map_err(PageError::internal)
}

/// The session's CSRF token, created on first use.
pub async fn csrf_token(session: &Session) -> Result<String, PageError> {
    if let Some(token) = session.get::<String>(CSRF_KEY).await.map_err(PageError::internal)? {
        return Ok(token);
    }
    let token = new_token();
    session.insert(CSRF_KEY, &token).await.map_err(PageError::internal)?;
    Ok(token)
}

/// The developer signed in on this session, if any. A session whose developer has
/// been deleted meanwhile is signed out.
pub async fn current_developer(state: &PortalState, session: &Session) -> Result<Option<Viewer>, PageError> {
    let Some(id) = session.get::<String>(DEVELOPER_KEY).await.map_err(PageError::internal)? else {
        return Ok(None);
    };
    match turnpike_store::developers::get(state.store.db(), &id).await {
        Ok(d) => Ok(Some(Viewer { id: d.id, name: d.input.name, email: d.input.email })),
        Err(StoreError::NotFound { .. }) => {
            session.flush().await.map_err(PageError::internal)?;
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// What the base layout needs: every page template has a `ctx` field of this type.
#[derive(Debug, Clone, Default)]
pub struct PageContext {
    pub developer: Option<Viewer>,
    /// The CSRF token for forms; empty on pages without any (anonymous pages with no form).
    pub csrf: String,
    pub flashes: Vec<Flash>,
    /// Whether mail goes to the development outbox (linked from the footer).
    pub outbox: bool,
    /// The path and query of this page, to come back to after signing in.
    pub here: String,
}

impl PageContext {
    /// Loads the context; `with_form` makes sure there is a CSRF token (a page with a
    /// form). Signed-in pages always have one, for the sign-out button.
    pub async fn load(state: &PortalState, session: &Session, uri: &Uri, with_form: bool) -> Result<Self, PageError> {
        let developer = current_developer(state, session).await?;
        let csrf = if with_form || developer.is_some() { csrf_token(session).await? } else { String::new() };
        let flashes = session.remove::<Vec<Flash>>(FLASH_KEY).await.map_err(PageError::internal)?.unwrap_or_default();
        let here = uri.path_and_query().map_or_else(|| uri.path().to_owned(), |pq| pq.as_str().to_owned());
        Ok(PageContext { developer, csrf, flashes, outbox: state.mailer.uses_outbox(), here })
    }

    /// The sign-in link, coming back to this page afterwards.
    pub fn sign_in_href(&self) -> String {
        match self.here.as_str() {
            "/" | "/sign-in" | "/sign-up" => "/sign-in".to_owned(),
            // Nor back into a sign-in (the OpenID callback's URL carries a code).
            here if here.starts_with("/sign-in?") || here.starts_with("/sign-in/") => "/sign-in".to_owned(),
            here => format!("/sign-in?next={}", encode_component(here)),
        }
    }

    /// Whether the nav entry for `prefix` is the current section.
    pub fn is_current(&self, prefix: &str) -> bool {
        let path = self.here.split('?').next().unwrap_or_default();
        path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
    }
}

fn session_of(parts: &Parts) -> Result<Session, PageError> {
    parts.extensions.get::<Session>().cloned().ok_or_else(|| PageError::internal("the session layer is missing"))
}

/// The context of a page without a form (no session is created for anonymous visitors).
impl FromRequestParts<PortalState> for PageContext {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &PortalState) -> Result<Self, PageError> {
        PageContext::load(state, &session_of(parts)?, &parts.uri, false).await
    }
}

/// The context of a page with a form: it always carries a CSRF token.
pub struct FormContext(pub PageContext);

impl FromRequestParts<PortalState> for FormContext {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &PortalState) -> Result<Self, PageError> {
        Ok(FormContext(PageContext::load(state, &session_of(parts)?, &parts.uri, true).await?))
    }
}

/// A page that needs a signed-in developer: anyone else is sent to sign in, and back
/// here afterwards.
pub struct SignedIn(pub Viewer);

impl FromRequestParts<PortalState> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &PortalState) -> Result<Self, Response> {
        let session = session_of(parts).map_err(IntoResponse::into_response)?;
        match current_developer(state, &session).await.map_err(IntoResponse::into_response)? {
            Some(viewer) => Ok(SignedIn(viewer)),
            // A form sent from an expired session cannot be replayed after signing in.
            None if parts.method != axum::http::Method::GET => Err(Redirect::to("/sign-in").into_response()),
            None => {
                let here = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
                Err(Redirect::to(&format!("/sign-in?next={}", encode_component(here))).into_response())
            }
        }
    }
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved characters and `/` stay).
pub fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Messages next to the form fields they are about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(BTreeMap<String, String>);

impl FieldErrors {
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.entry(field.to_owned()).or_insert_with(|| message.into());
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Renders a page with a status.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => PageError::internal(e).into_response(),
    }
}

/// An error shown to the person as a page. Internal details go to the log only.
#[derive(Debug, Clone)]
pub struct PageError {
    pub status: StatusCode,
    pub title: &'static str,
    pub message: String,
}

impl PageError {
    pub fn new(status: StatusCode, title: &'static str, message: impl Into<String>) -> Self {
        PageError { status, title, message: message.into() }
    }

    pub fn not_found() -> Self {
        PageError::new(
            StatusCode::NOT_FOUND,
            "Page not found",
            "There is nothing at this address. Check the link, or start again from the home page.",
        )
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        PageError::new(StatusCode::BAD_REQUEST, "Something is wrong with this request", message)
    }

    /// A form that did not come from one of our pages, or from an expired session.
    pub fn csrf() -> Self {
        PageError::new(
            StatusCode::FORBIDDEN,
            "This form has expired",
            "The form was not sent from a current page of this site, so nothing was changed. \
             Go back, reload the page and try again.",
        )
    }

    /// Logs `error` and answers with a page that says nothing about it.
    pub fn internal(error: impl fmt::Display) -> Self {
        tracing::error!(error = %error, "portal request failed");
        PageError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The portal could not complete this request. Please try again in a moment.",
        )
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { .. } => PageError::not_found(),
            other => PageError::internal(other),
        }
    }
}

impl IntoResponse for PageError {
    /// An empty response carrying the error; [`render_errors`] turns it into the page.
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

#[derive(Template)]
#[template(path = "portal/error.html")]
struct ErrorPage<'a> {
    ctx: PageContext,
    error: &'a PageError,
}

/// Renders every [`PageError`] with the layout, knowing who is signed in.
pub async fn render_errors(State(state): State<PortalState>, request: Request, next: Next) -> Response {
    let session = request.extensions().get::<Session>().cloned();
    let uri = request.uri().clone();
    let mut response = next.run(request).await;
    let Some(error) = response.extensions_mut().remove::<PageError>() else {
        return response;
    };
    let ctx = match &session {
        Some(session) => PageContext::load(&state, session, &uri, false).await.unwrap_or_default(),
        None => PageContext::default(),
    };
    let ctx = PageContext { outbox: state.mailer.uses_outbox(), ..ctx };
    let page = ErrorPage { ctx, error: &error };
    match page.render() {
        Ok(html) => (error.status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "the error page did not render");
            (error.status, error.message).into_response()
        }
    }
}

/// The answer for addresses the portal does not have.
pub async fn not_found() -> PageError {
    PageError::not_found()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_percent_encoded() {
        assert_eq!(encode_component("/apps?x=1&y=2"), "/apps%3Fx%3D1%26y%3D2");
        assert_eq!(encode_component("/ä b"), "/%C3%A4%20b");
    }

    #[test]
    fn the_sign_in_link_returns_to_the_page() {
        let ctx = |here: &str| PageContext { here: here.to_owned(), ..PageContext::default() };
        assert_eq!(ctx("/apps/1?tab=keys").sign_in_href(), "/sign-in?next=/apps/1%3Ftab%3Dkeys");
        assert_eq!(ctx("/").sign_in_href(), "/sign-in");
        assert_eq!(ctx("/sign-in?next=/x").sign_in_href(), "/sign-in");
        assert_eq!(ctx("/sign-in/oidc/corp/callback?code=secret&state=s").sign_in_href(), "/sign-in");
        assert!(ctx("/apps/1").is_current("/apps"));
        assert!(ctx("/apps").is_current("/apps"));
        assert!(!ctx("/applesauce").is_current("/apps"));
    }

    #[test]
    fn field_errors_keep_the_first_message() {
        let mut errors = FieldErrors::default();
        assert!(errors.is_empty());
        errors.add("email", "first");
        errors.add("email", "second");
        assert_eq!(errors.get("email"), Some("first"));
        assert_eq!(errors.get("name"), None);
    }
}
