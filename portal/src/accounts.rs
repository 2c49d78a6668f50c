//! Accounts: sign-up with email verification, sign-in and sign-out, password reset,
//! and the account page. Handlers parse, call the rules and the store, and render;
//! answers about an email address never depend on whether it has an account.

use std::error::Error;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use askama::Template;
use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde::Deserialize;
use tower_sessions::{Expiry, Session};
use turnpike_domain::validate;
use turnpike_store::portal::accounts::{self, Account, normalize_email};
use turnpike_store::portal::{identities, sessions, tokens};
use turnpike_store::{Actor, StoreError};

use crate::csrf::CsrfForm;
use crate::oidc::{ProviderLink, ProviderStatus};
use crate::pages::{CSRF_KEY, FieldErrors, FlashKind, FormContext, PageContext, PageError, SignedIn, flash, render};
use crate::rules::{self, DECOY_HASH};
use crate::session_store::DEVELOPER_KEY;
use crate::{PortalState, SIGNED_IN_SESSION, mail};

type BoxError = Box<dyn Error + Send + Sync>;

/// The one answer to a refused sign-in, whatever the reason (unknown email, wrong
/// password, unconfirmed address, too many failures).
pub const SIGN_IN_REFUSED: &str = "That email and password did not work. Check them and try again; \
     if you signed up recently, first follow the link we emailed you.";

pub(crate) fn routes() -> Router<PortalState> {
    Router::new()
        .route("/", get(home))
        .route("/sign-up", get(sign_up_page).post(sign_up))
        .route("/sign-up/sent", get(sign_up_sent))
        .route("/verify", get(verify_page).post(verify))
        .route("/sign-in", get(sign_in_page).post(sign_in))
        .route("/sign-out", post(sign_out))
        .route("/forgot-password", get(forgot_page).post(forgot))
        .route("/forgot-password/sent", get(forgot_sent))
        .route("/reset-password", get(reset_page).post(reset))
        .route("/account", get(account_page))
        .route("/account/name", post(rename))
        .route("/account/password", post(change_password))
}

/// The client's address: the TCP peer (the portal is not behind trusted proxies yet).
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Served without connection info (a router in a test), everyone shares one address.
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| addr.ip());
        Ok(ClientIp(ip))
    }
}

// ---- helpers -------------------------------------------------------------------

fn check_email(email: &str, errors: &mut FieldErrors) {
    if validate::email("email", email).is_err() {
        errors.add("email", "Enter an email address like name@example.com.");
    }
}

fn check_name(name: &str, errors: &mut FieldErrors) {
    if let Err(e) = validate::name("name", name) {
        if name.trim().is_empty() {
            errors.add("name", "Enter your name.");
        } else {
            errors.add("name", format!("The name {}.", e.message));
        }
    }
}

fn check_new_password(password: &str, email: &str, field: &str, errors: &mut FieldErrors) {
    if let Err(problem) = rules::check_password(password, email) {
        errors.add(field, problem.to_string());
    }
}

/// Hashes off the async threads: argon2 takes tens of milliseconds of CPU.
async fn hash_password(password: String) -> Result<String, PageError> {
    tokio::task::spawn_blocking(move || rules::hash_password(&password)).await.map_err(PageError::internal)
}

async fn verify_password(password: String, hash: String) -> Result<bool, PageError> {
    tokio::task::spawn_blocking(move || rules::verify_password(&password, &hash)).await.map_err(PageError::internal)
}

fn developer_actor(id: &str) -> Actor {
    Actor(format!("developer:{id}"))
}

/// Work whose outcome must not show in the answer (whether an address has an
/// account): the answer is sent at once, and failures go to the log.
fn in_background(what: &'static str, work: impl Future<Output = Result<(), BoxError>> + Send + 'static) {
    tokio::spawn(async move {
        if let Err(e) = work.await {
            tracing::error!(error = %e, "{what} failed");
        }
    });
}

/// Stores a new account token and returns the plaintext for the link.
async fn issue_token(state: &PortalState, developer_id: &str, purpose: tokens::Purpose) -> Result<String, StoreError> {
    let token = rules::new_token();
    let lifetime = match purpose {
        tokens::Purpose::Verify => rules::VERIFY_TOKEN_LIFETIME,
        tokens::Purpose::Reset => rules::RESET_TOKEN_LIFETIME,
    };
    tokens::issue(state.store.db(), &state.hasher.hash(&token), developer_id, purpose, Utc::now() + lifetime).await?;
    Ok(token)
}

async fn send_verification(state: &PortalState, account: &Account) -> Result<(), BoxError> {
    let token = issue_token(state, &account.id, tokens::Purpose::Verify).await?;
    let url = &state.settings.public_url;
    state.mailer.send(&mail::verification(url, &account.email, &account.name, &token)).await?;
    Ok(())
}

// ---- pages ---------------------------------------------------------------------

#[derive(Template)]
#[template(path = "portal/home.html")]
struct HomePage {
    ctx: PageContext,
}

async fn home(ctx: PageContext) -> Response {
    render(StatusCode::OK, &HomePage { ctx })
}

/// A page that only tells something, such as "check your inbox".
#[derive(Template)]
#[template(path = "portal/notice.html")]
struct NoticePage {
    ctx: PageContext,
    title: &'static str,
    paragraphs: Vec<&'static str>,
}

// ---- sign-up and verification ---------------------------------------------------

#[derive(Template)]
#[template(path = "portal/sign_up.html")]
struct SignUpPage {
    ctx: PageContext,
    email: String,
    name: String,
    errors: FieldErrors,
}

#[derive(Deserialize)]
struct SignUpForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    password: String,
}

async fn sign_up_page(FormContext(ctx): FormContext) -> Response {
    render(
        StatusCode::OK,
        &SignUpPage { ctx, email: String::new(), name: String::new(), errors: FieldErrors::default() },
    )
}

async fn sign_up(
    State(state): State<PortalState>,
    FormContext(ctx): FormContext,
    CsrfForm(form): CsrfForm<SignUpForm>,
) -> Response {
    let email = normalize_email(&form.email);
    let name = form.name.trim().to_owned();
    let mut errors = FieldErrors::default();
    check_email(&email, &mut errors);
    check_name(&name, &mut errors);
    check_new_password(&form.password, &email, "password", &mut errors);
    if !errors.is_empty() {
        return render(StatusCode::BAD_REQUEST, &SignUpPage { ctx, email: form.email, name: form.name, errors });
    }
    in_background("sign-up", register(state, email, name, form.password));
    Redirect::to("/sign-up/sent").into_response()
}

/// Creates the account and mails a confirmation link, or, when the address already
/// has an account, mails its owner about it instead.
async fn register(state: PortalState, email: String, name: String, password: String) -> Result<(), BoxError> {
    if let Some(existing) = accounts::find_by_email(state.store.db(), &email).await? {
        return tell_already_registered(&state, &existing).await;
    }
    let hash = hash_password(password).await.map_err(|e| e.message)?;
    let change = state.store.change(&Actor("portal:sign-up".into())).await?;
    let created = match accounts::sign_up(&change, &email, &name, &hash).await {
        Ok(created) => created,
        // Signed up meanwhile (a double submit, or someone else).
        Err(StoreError::Conflict(_)) => {
            drop(change);
            let existing = accounts::find_by_email(state.store.db(), &email).await?.ok_or("account vanished")?;
            return tell_already_registered(&state, &existing).await;
        }
        Err(e) => return Err(e.into()),
    };
    change.commit().await?;
    send_verification(&state, &created).await
}

async fn tell_already_registered(state: &PortalState, account: &Account) -> Result<(), BoxError> {
    let token = match account.email_verified_at {
        Some(_) => None,
        None => Some(issue_token(state, &account.id, tokens::Purpose::Verify).await?),
    };
    let url = &state.settings.public_url;
    state.mailer.send(&mail::already_registered(url, &account.email, &account.name, token.as_deref())).await?;
    Ok(())
}

async fn sign_up_sent(ctx: PageContext) -> Response {
    render(
        StatusCode::OK,
        &NoticePage {
            ctx,
            title: "Check your inbox",
            paragraphs: vec![
                "We have sent a message to the address you gave. Follow the link in it to confirm your address \
                 and finish signing up; the link works for 24 hours.",
                "Nothing arrived after a few minutes? Check your spam folder, or sign up again to get a new link.",
            ],
        },
    )
}

#[derive(Template)]
#[template(path = "portal/verify.html")]
struct VerifyPage {
    ctx: PageContext,
    token: String,
    valid: bool,
}

#[derive(Deserialize)]
struct TokenQuery {
    #[serde(default)]
    token: String,
}

/// Whether a mailed link's token is still good (without using it up), and the status
/// of the page that shows it: 400 for a used, expired or unknown one.
async fn link_state(
    state: &PortalState,
    token: &str,
    purpose: tokens::Purpose,
) -> Result<(StatusCode, bool), PageError> {
    let hash = state.hasher.hash(token);
    let valid = tokens::peek(state.store.db(), &hash, purpose, Utc::now()).await?.is_some();
    Ok((if valid { StatusCode::OK } else { StatusCode::BAD_REQUEST }, valid))
}

/// The link from the mail shows a button rather than confirming at once, so that
/// mail scanners that open links do not use the token up.
async fn verify_page(
    State(state): State<PortalState>,
    FormContext(ctx): FormContext,
    Query(query): Query<TokenQuery>,
) -> Result<Response, PageError> {
    let (status, valid) = link_state(&state, &query.token, tokens::Purpose::Verify).await?;
    Ok(render(status, &VerifyPage { ctx, token: query.token, valid }))
}

async fn verify(
    State(state): State<PortalState>,
    FormContext(ctx): FormContext,
    session: Session,
    CsrfForm(form): CsrfForm<TokenQuery>,
) -> Result<Response, PageError> {
    let hash = state.hasher.hash(&form.token);
    let now = Utc::now();
    let change = state.store.change(&Actor("portal:verify".into())).await?;
    let Some(developer_id) = tokens::consume(change.txn(), &hash, tokens::Purpose::Verify, now).await? else {
        return Ok(render(StatusCode::BAD_REQUEST, &VerifyPage { ctx, token: String::new(), valid: false }));
    };
    accounts::mark_email_verified(&change, &developer_id, now).await?;
    change.commit().await?;
    flash(&session, FlashKind::Success, "Your email address is confirmed. Sign in to continue.").await?;
    Ok(Redirect::to("/sign-in").into_response())
}

// ---- sign-in and sign-out -------------------------------------------------------

#[derive(Template)]
#[template(path = "portal/sign_in.html")]
struct SignInPage {
    ctx: PageContext,
    email: String,
    next: String,
    error: Option<&'static str>,
    /// "Sign in with …" links to the OpenID providers.
    providers: Vec<ProviderLink>,
}

#[derive(Deserialize)]
struct NextQuery {
    #[serde(default)]
    next: String,
}

fn safe_next_or_home(next: &str) -> String {
    rules::safe_next(next).unwrap_or("/").to_owned()
}

async fn sign_in_page(
    State(state): State<PortalState>,
    FormContext(ctx): FormContext,
    Query(query): Query<NextQuery>,
) -> Response {
    let next = safe_next_or_home(&query.next);
    if ctx.developer.is_some() {
        return Redirect::to(&next).into_response();
    }
    let providers = state.oidc.links(&next);
    render(StatusCode::OK, &SignInPage { ctx, email: String::new(), next, error: None, providers })
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

async fn sign_in(
    State(state): State<PortalState>,
    ClientIp(ip): ClientIp,
    session: Session,
    FormContext(ctx): FormContext,
    CsrfForm(form): CsrfForm<SignInForm>,
) -> Result<Response, PageError> {
    let next = safe_next_or_home(&form.next);
    let Some(account) = authenticate(&state, &normalize_email(&form.email), form.password, ip).await? else {
        let providers = state.oidc.links(&next);
        let page = SignInPage { ctx, email: form.email, next, error: Some(SIGN_IN_REFUSED), providers };
        return Ok(render(StatusCode::BAD_REQUEST, &page));
    };
    start_signed_in_session(&session, &account.id).await?;
    Ok(Redirect::to(&next).into_response())
}

/// Signs `developer_id` in on this browser: a new session id (no fixation), and a new
/// CSRF token with it.
pub(crate) async fn start_signed_in_session(session: &Session, developer_id: &str) -> Result<(), PageError> {
    session.cycle_id().await.map_err(PageError::internal)?;
    session.insert(DEVELOPER_KEY, developer_id).await.map_err(PageError::internal)?;
    session.insert(CSRF_KEY, rules::new_token()).await.map_err(PageError::internal)?;
    session.set_expiry(Some(Expiry::OnInactivity(SIGNED_IN_SESSION)));
    Ok(())
}

/// The account if `password` is right for `email`, the address is confirmed and
/// neither the account nor the client address is throttled. Unknown accounts and
/// accounts without a password are checked against a decoy hash so that every
/// refusal takes as long as a wrong password.
async fn authenticate(
    state: &PortalState,
    email: &str,
    password: String,
    ip: IpAddr,
) -> Result<Option<Account>, PageError> {
    let (account_key, address_key) = (rules::account_key(email), rules::address_key(ip));
    {
        let mut failures = state.failures.lock().map_err(PageError::internal)?;
        let now = Instant::now();
        if failures.is_blocked(&account_key, now) || failures.is_blocked(&address_key, now) {
            return Ok(None);
        }
    }
    let account = accounts::find_by_email(state.store.db(), email).await?;
    let stored = account.as_ref().and_then(|a| a.password_hash.clone());
    let has_password = stored.is_some();
    let password_ok = verify_password(password, stored.unwrap_or_else(|| DECOY_HASH.clone())).await? && has_password;
    let mut failures = state.failures.lock().map_err(PageError::internal)?;
    match account {
        Some(account) if password_ok && account.email_verified_at.is_some() => {
            failures.clear(&account_key);
            Ok(Some(account))
        }
        account => {
            let now = Instant::now();
            failures.record_failure(&account_key, now);
            failures.record_failure(&address_key, now);
            drop(failures);
            // The right password for an unconfirmed address: the owner lost the link.
            if let Some(account) = account.filter(|_| password_ok) {
                let state = state.clone();
                in_background(
                    "resending a verification link",
                    async move { send_verification(&state, &account).await },
                );
            }
            Ok(None)
        }
    }
}

#[derive(Deserialize)]
struct NoFields {}

async fn sign_out(session: Session, CsrfForm(_): CsrfForm<NoFields>) -> Result<Response, PageError> {
    session.flush().await.map_err(PageError::internal)?;
    flash(&session, FlashKind::Info, "You are signed out.").await?;
    Ok(Redirect::to("/").into_response())
}

// ---- password reset -------------------------------------------------------------

#[derive(Template)]
#[template(path = "portal/forgot.html")]
struct ForgotPage {
    ctx: PageContext,
    email: String,
    errors: FieldErrors,
}

#[derive(Deserialize)]
struct EmailForm {
    #[serde(default)]
    email: String,
}

async fn forgot_page(FormContext(ctx): FormContext) -> Response {
    render(StatusCode::OK, &ForgotPage { ctx, email: String::new(), errors: FieldErrors::default() })
}

async fn forgot(
    State(state): State<PortalState>,
    FormContext(ctx): FormContext,
    CsrfForm(form): CsrfForm<EmailForm>,
) -> Response {
    let email = normalize_email(&form.email);
    let mut errors = FieldErrors::default();
    check_email(&email, &mut errors);
    if !errors.is_empty() {
        return render(StatusCode::BAD_REQUEST, &ForgotPage { ctx, email: form.email, errors });
    }
    in_background("password reset", async move {
        let Some(account) = accounts::find_by_email(state.store.db(), &email).await? else {
            return Ok(());
        };
        let token = issue_token(&state, &account.id, tokens::Purpose::Reset).await?;
        let url = &state.settings.public_url;
        state.mailer.send(&mail::password_reset(url, &account.email, &account.name, &token)).await?;
        Ok(())
    });
    Redirect::to("/forgot-password/sent").into_response()
}

async fn forgot_sent(ctx: PageContext) -> Response {
    render(
        StatusCode::OK,
        &NoticePage {
            ctx,
            title: "Check your inbox",
            paragraphs: vec![
                "If an account uses the address you gave, we have sent it a link to choose a new password. \
                 The link works once, for one hour.",
                "Nothing arrived after a few minutes? Check your spam folder and the address, then ask again.",
            ],
        },
    )
}

#[derive(Template)]
#[template(path = "portal/reset.html")]
struct ResetPage {
    ctx: PageContext,
    token: String,
    valid: bool,
    errors: FieldErrors,
}

async fn reset_page(
    State(state): State<PortalState>,
    FormContext(ctx): FormContext,
    Query(query): Query<TokenQuery>,
) -> Result<Response, PageError> {
    let (status, valid) = link_state(&state, &query.token, tokens::Purpose::Reset).await?;
    Ok(render(status, &ResetPage { ctx, token: query.token, valid, errors: FieldErrors::default() }))
}

#[derive(Deserialize)]
struct ResetForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
}

async fn reset(
    State(state): State<PortalState>,
    FormContext(ctx): FormContext,
    session: Session,
    CsrfForm(form): CsrfForm<ResetForm>,
) -> Result<Response, PageError> {
    let hash = state.hasher.hash(&form.token);
    let invalid = |ctx| {
        render(
            StatusCode::BAD_REQUEST,
            &ResetPage { ctx, token: String::new(), valid: false, errors: FieldErrors::default() },
        )
    };
    let Some(developer_id) = tokens::peek(state.store.db(), &hash, tokens::Purpose::Reset, Utc::now()).await? else {
        return Ok(invalid(ctx));
    };
    let Some(account) = accounts::find(state.store.db(), &developer_id).await? else {
        return Ok(invalid(ctx));
    };
    let mut errors = FieldErrors::default();
    check_new_password(&form.password, &account.email, "password", &mut errors);
    if !errors.is_empty() {
        return Ok(render(StatusCode::BAD_REQUEST, &ResetPage { ctx, token: form.token, valid: true, errors }));
    }
    let password_hash = hash_password(form.password).await?;
    let now = Utc::now();
    let change = state.store.change(&developer_actor(&developer_id)).await?;
    // Used up here, in the transaction, so that two submissions cannot both succeed.
    if tokens::consume(change.txn(), &hash, tokens::Purpose::Reset, now).await?.is_none() {
        return Ok(invalid(ctx));
    }
    accounts::set_password(&change, &developer_id, &password_hash).await?;
    // Following the link proved the address.
    accounts::mark_email_verified(&change, &developer_id, now).await?;
    sessions::delete_for_developer(change.txn(), &developer_id, None).await?;
    change.commit().await?;
    // This browser starts afresh too: whoever it was signed in as, it is not any more.
    session.flush().await.map_err(PageError::internal)?;
    flash(
        &session,
        FlashKind::Success,
        "Your password is changed, and you are signed out everywhere. Sign in with the new password.",
    )
    .await?;
    Ok(Redirect::to("/sign-in").into_response())
}

// ---- the account page -----------------------------------------------------------

#[derive(Template)]
#[template(path = "portal/account.html")]
struct AccountPage {
    ctx: PageContext,
    email: String,
    name: String,
    has_password: bool,
    name_errors: FieldErrors,
    password_errors: FieldErrors,
    /// The OpenID providers, linked to this account or not.
    providers: Vec<ProviderStatus>,
}

impl AccountPage {
    async fn load(state: &PortalState, ctx: PageContext, developer_id: &str) -> Result<AccountPage, PageError> {
        let account = accounts::find(state.store.db(), developer_id).await?.ok_or_else(PageError::not_found)?;
        let linked = identities::issuers_of(state.store.db(), developer_id).await?;
        Ok(AccountPage {
            providers: state.oidc.statuses(&linked),
            ctx,
            email: account.email,
            name: account.name,
            has_password: account.password_hash.is_some(),
            name_errors: FieldErrors::default(),
            password_errors: FieldErrors::default(),
        })
    }
}

async fn account_page(
    State(state): State<PortalState>,
    SignedIn(viewer): SignedIn,
    FormContext(ctx): FormContext,
) -> Result<Response, PageError> {
    Ok(render(StatusCode::OK, &AccountPage::load(&state, ctx, &viewer.id).await?))
}

#[derive(Deserialize)]
struct NameForm {
    #[serde(default)]
    name: String,
}

async fn rename(
    State(state): State<PortalState>,
    SignedIn(viewer): SignedIn,
    FormContext(ctx): FormContext,
    session: Session,
    CsrfForm(form): CsrfForm<NameForm>,
) -> Result<Response, PageError> {
    let mut errors = FieldErrors::default();
    check_name(form.name.trim(), &mut errors);
    if !errors.is_empty() {
        let page =
            AccountPage { name: form.name, name_errors: errors, ..AccountPage::load(&state, ctx, &viewer.id).await? };
        return Ok(render(StatusCode::BAD_REQUEST, &page));
    }
    let change = state.store.change(&developer_actor(&viewer.id)).await?;
    accounts::rename(&change, &viewer.id, form.name.trim()).await?;
    change.commit().await?;
    flash(&session, FlashKind::Success, "Your name is saved.").await?;
    Ok(Redirect::to("/account").into_response())
}

#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
}

async fn change_password(
    State(state): State<PortalState>,
    SignedIn(viewer): SignedIn,
    FormContext(ctx): FormContext,
    session: Session,
    CsrfForm(form): CsrfForm<PasswordForm>,
) -> Result<Response, PageError> {
    let page = AccountPage::load(&state, ctx, &viewer.id).await?;
    let account = accounts::find(state.store.db(), &viewer.id).await?.ok_or_else(PageError::not_found)?;
    let mut errors = FieldErrors::default();
    // Someone at an unattended browser must not lock the owner out: the current
    // password is needed, and wrong guesses count towards the sign-in throttle.
    if let Some(stored) = account.password_hash.clone() {
        let key = rules::account_key(&account.email);
        let blocked = state.failures.lock().map_err(PageError::internal)?.is_blocked(&key, Instant::now());
        if blocked || !verify_password(form.current_password, stored).await? {
            if !blocked {
                state.failures.lock().map_err(PageError::internal)?.record_failure(&key, Instant::now());
            }
            errors.add("current_password", "That is not your current password.");
        }
    }
    check_new_password(&form.new_password, &account.email, "new_password", &mut errors);
    if !errors.is_empty() {
        return Ok(render(StatusCode::BAD_REQUEST, &AccountPage { password_errors: errors, ..page }));
    }
    let password_hash = hash_password(form.new_password).await?;
    let change = state.store.change(&developer_actor(&viewer.id)).await?;
    accounts::set_password(&change, &viewer.id, &password_hash).await?;
    // Every session of the account ends, this one included; this browser continues
    // under a new id (`cycle_id` stores the session afresh).
    sessions::delete_for_developer(change.txn(), &viewer.id, None).await?;
    change.commit().await?;
    session.cycle_id().await.map_err(PageError::internal)?;
    flash(&session, FlashKind::Success, "Your password is changed. You are signed out everywhere else.").await?;
    Ok(Redirect::to("/account").into_response())
}
