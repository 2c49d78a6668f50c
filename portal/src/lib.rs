//! The developer portal: server-rendered pages (askama templates in `templates/portal/`,
//! plain CSS in `static/portal/`) where API consumers sign up, sign in and manage
//! their account. Every flow works without JavaScript.
//!
//! The map:
//! - `accounts.rs` — sign-up, email verification, sign-in and out, password reset, the
//!   account page, the development outbox: thin handlers over `rules.rs` and the store.
//! - `rules.rs` — the account rules as plain functions (password policy, argon2id,
//!   token lifetimes, sign-in throttling, `next` sanitising).
//! - `pages.rs` — the layout's context, the `SignedIn` extractor, field errors, and
//!   the one place errors become pages.
//! - `csrf.rs` — the `CsrfForm` extractor every POST handler takes.
//! - `session_store.rs` — tower-sessions over the platform database.
//! - `mail.rs` — the `Mailer` trait: SMTP (lettre) or the development outbox.
//! - `outbox.rs` — the development outbox pages.
//! - `oidc.rs` — single sign-on with OpenID Connect (code flow, PKCE, state, nonce)
//!   and the rule that links or creates accounts by verified email.
//! - `apps.rs` — applications, subscriptions and self-service API keys.
//! - `catalog.rs` — the API catalogue, API pages and interactive reference docs.
//! - `assets.rs` — `/static/`.
//! - `settings.rs` — the operator's options.

mod accounts;
pub mod apps;
mod assets;
mod catalog;
pub mod csrf;
pub mod mail;
pub mod oidc;
mod outbox;
pub mod pages;
pub mod rules;
pub mod session_store;
mod settings;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use tokio::net::TcpListener;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, SessionManagerLayer};
use turnpike_domain::secrets::KeyHasher;
use turnpike_store::Store;
use turnpike_store::publish::Publisher;

use crate::mail::{Mailer, OutboxMailer, SmtpMailer};
use crate::oidc::Providers;
use crate::rules::{FailureCounter, THROTTLE_LIMIT, THROTTLE_WINDOW};
use crate::session_store::DbSessionStore;

pub use crate::accounts::SIGN_IN_REFUSED;
pub use crate::settings::{PublicUrl, Settings};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "turnpike_portal";
/// A session nobody has signed in to lives this long after its last change.
const ANONYMOUS_SESSION: time::Duration = time::Duration::days(1);
/// A signed-in session lives this long after its last change (sign-in, a form).
pub(crate) const SIGNED_IN_SESSION: time::Duration = time::Duration::days(7);
/// Largest form accepted.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// How often expired sessions and account tokens are deleted.
const CLEANUP_EVERY: Duration = Duration::from_secs(10 * 60);
/// Most accounts and addresses whose sign-in failures are remembered at once.
const THROTTLE_CAPACITY: usize = 100_000;

/// Shared state of the portal.
#[derive(Clone)]
pub struct PortalState(Arc<Inner>);

pub struct Inner {
    pub store: Arc<Store>,
    /// Keys the hashes of account tokens (the server secret).
    pub hasher: KeyHasher,
    pub mailer: Arc<dyn Mailer>,
    pub settings: Settings,
    /// Commits the portal's changes and publishes them to the gateway (keys and
    /// subscriptions work, or stop working, at once).
    pub publisher: Publisher,
    /// Failed sign-ins per account and per client address. Node-local, like the
    /// gateway's rate limits: a cluster of portal nodes multiplies the allowance.
    pub(crate) failures: Mutex<FailureCounter>,
    /// The OpenID providers people may sign in with.
    pub(crate) oidc: Providers,
}

/// Settings the portal cannot start with.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Mail(#[from] mail::MailError),
    #[error("portal.oidc: {0}")]
    Oidc(String),
}

impl std::ops::Deref for PortalState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl PortalState {
    /// The portal with the mailer its settings ask for: SMTP when `smtp_url` is set,
    /// otherwise the development outbox.
    pub fn new(
        store: Arc<Store>,
        hasher: KeyHasher,
        settings: Settings,
        publisher: Publisher,
    ) -> Result<Self, SetupError> {
        let mailer: Arc<dyn Mailer> = match &settings.smtp_url {
            Some(url) => Arc::new(SmtpMailer::new(url, &settings.smtp_from)?),
            None => Arc::new(OutboxMailer::new(store.clone())),
        };
        PortalState::with_mailer(store, hasher, settings, mailer, publisher)
    }

    pub fn with_mailer(
        store: Arc<Store>,
        hasher: KeyHasher,
        settings: Settings,
        mailer: Arc<dyn Mailer>,
        publisher: Publisher,
    ) -> Result<Self, SetupError> {
        let failures = Mutex::new(FailureCounter::new(THROTTLE_LIMIT, THROTTLE_WINDOW, THROTTLE_CAPACITY));
        let oidc = Providers::new(&settings.oidc_providers, &settings.public_url).map_err(SetupError::Oidc)?;
        Ok(PortalState(Arc::new(Inner { store, hasher, mailer, settings, publisher, failures, oidc })))
    }
}

/// Adds the headers every portal response carries, unless a handler chose its own.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let defaults: [(HeaderName, &str); 5] = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
             form-action 'self'; frame-ancestors 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        // Links in mail carry tokens: never pass a portal URL on to another site.
        (header::REFERRER_POLICY, "same-origin"),
        // Pages are personal (names, CSRF tokens); assets set their own.
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in defaults {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

/// The portal's routes, with sessions, error pages and security headers.
pub fn router(state: PortalState) -> Router {
    let sessions = SessionManagerLayer::new(DbSessionStore::new(state.store.clone()))
        .with_name(SESSION_COOKIE)
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(state.settings.public_url.is_https())
        .with_path("/")
        .with_expiry(Expiry::OnInactivity(ANONYMOUS_SESSION));
    accounts::routes()
        .merge(oidc::routes())
        .merge(outbox::routes())
        .merge(catalog::routes())
        .merge(apps::routes())
        .merge(assets::routes())
        .fallback(pages::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), pages::render_errors))
        .layer(sessions)
        .layer(middleware::from_fn(security_headers))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .with_state(state)
}

/// Deletes expired sessions and account tokens.
async fn clean_up(store: &Store) {
    let now = chrono::Utc::now();
    if let Err(e) = turnpike_store::portal::sessions::delete_expired(store.db(), now).await {
        tracing::warn!(error = %e, "could not delete expired portal sessions");
    }
    if let Err(e) = turnpike_store::portal::tokens::delete_expired(store.db(), now).await {
        tracing::warn!(error = %e, "could not delete expired account tokens");
    }
}

/// Serves the portal on `listener` until `shutdown` resolves, deleting expired
/// sessions and tokens meanwhile. Client addresses (for sign-in throttling) are the
/// TCP peers.
pub async fn serve(
    listener: TcpListener,
    state: PortalState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if state.mailer.uses_outbox() {
        tracing::info!(
            "portal mail goes to the development outbox at {}/outbox (set portal.smtp_url to send it)",
            state.settings.public_url
        );
    }
    // The decoy hash is made once, before the first sign-in of an unknown address needs it.
    tokio::task::spawn_blocking(|| std::sync::LazyLock::force(&rules::DECOY_HASH));
    let store = state.store.clone();
    let cleanup = tokio::spawn(async move {
        let mut tick = tokio::time::interval(CLEANUP_EVERY);
        loop {
            tick.tick().await;
            clean_up(&store).await;
        }
    });
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    cleanup.abort();
    served
}
