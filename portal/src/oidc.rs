//! Single sign-on with OpenID Connect: the authorization code flow with PKCE (S256),
//! `state` and `nonce`, against providers the operator configures (`portal.oidc`).
//!
//! `/sign-in/oidc/{provider}` stores the flow's secrets in the session and sends the
//! browser to the provider; `/sign-in/oidc/{provider}/callback` checks `state`,
//! exchanges the code (with the PKCE verifier and the client secret), verifies the ID
//! token (signature, issuer, audience, expiry, nonce), reads the claims the provider
//! vouches for, and signs the developer in ([`decide`]): the developer the identity is
//! linked to, or a new account for a verified email nobody has. An existing account is
//! opened only by a provider trusted to (`link_existing_by_email`); otherwise its owner,
//! signed in, links the provider from the account page (the same flow, started by a
//! signed-in developer, links instead of signing in). The redirect URI is exactly
//! `<portal.public_url>/sign-in/oidc/<provider>/callback`.
//!
//! The flow starts with a GET link (not a form) so that the portal's
//! `form-action 'self'` policy needs no exception for the providers' origins.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::Utc;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata, CoreUserInfoClaims};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tower_sessions::Session;
use turnpike_domain::validate;
use turnpike_store::portal::accounts::{self, Account, normalize_email};
use turnpike_store::portal::{identities, sessions};
use turnpike_store::{Actor, StoreError};

use crate::pages::{FlashKind, PageError, current_developer, flash};
use crate::settings::PublicUrl;
use crate::{PortalState, accounts as account_pages, mail, rules};

/// Session key of the sign-in flows under way (one per browser tab that started one).
const FLOWS_KEY: &str = "oidc_flows";
/// Most flows a session keeps; starting another forgets the oldest.
const MAX_FLOWS: usize = 4;
/// How long a started sign-in may take at the provider.
pub const FLOW_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::minutes(10);
/// How long a provider's discovery document and keys are reused before being fetched
/// again (providers rotate signing keys with notice; this picks new ones up).
const DISCOVERY_TTL: Duration = Duration::from_secs(5 * 60);
/// How long a failed discovery is not retried.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);
/// Timeout of each request to a provider.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);

/// An OpenID provider as the operator configures it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderSettings {
    /// Short name used in URLs: `[a-z0-9-]`, 1–32 characters.
    pub id: String,
    /// What the sign-in button says: "Sign in with <name>".
    pub name: String,
    /// The issuer URL; `<issuer>/.well-known/openid-configuration` must answer and
    /// name the same issuer.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    /// Whether a first sign-in whose verified email belongs to an existing account signs
    /// in to that account (and links the identity). Off by default: then the owner signs
    /// in with their password and links the provider from their account page, so that
    /// no provider's word alone opens an existing account.
    #[serde(default)]
    pub link_existing_by_email: bool,
}

impl fmt::Debug for OidcProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OidcProviderSettings")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("link_existing_by_email", &self.link_existing_by_email)
            .finish()
    }
}

impl OidcProviderSettings {
    /// Checks the settings; the message names the field.
    pub fn check(&self) -> Result<(), String> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 32
            && self.id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            return Err(format!("id {:?}: use 1 to 32 of a-z, 0-9 and -", self.id));
        }
        if self.name.trim().is_empty() || self.name.chars().count() > 64 {
            return Err(format!("name of provider {}: must be 1 to 64 characters", self.id));
        }
        check_issuer(&self.issuer).map_err(|e| format!("issuer of provider {}: {e}", self.id))?;
        if self.client_id.trim().is_empty() {
            return Err(format!("client_id of provider {}: must not be empty", self.id));
        }
        if self.client_secret.is_empty() {
            return Err(format!("client_secret of provider {}: must not be empty", self.id));
        }
        Ok(())
    }
}

/// An issuer must be `https://`, or `http://` on a loopback host (a provider on the
/// same machine, as in development and tests): tokens must not cross a network in
/// clear.
pub fn check_issuer(issuer: &str) -> Result<(), String> {
    let url = openidconnect::url::Url::parse(issuer).map_err(|e| format!("not a URL ({e})"))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not have a query or fragment".into());
    }
    match (url.scheme(), url.host()) {
        ("https", Some(_)) => Ok(()),
        ("http", Some(openidconnect::url::Host::Domain("localhost"))) => Ok(()),
        ("http", Some(openidconnect::url::Host::Ipv4(ip))) if ip.is_loopback() => Ok(()),
        ("http", Some(openidconnect::url::Host::Ipv6(ip))) if ip.is_loopback() => Ok(()),
        ("http", _) => Err("must use https (http only for a provider on this machine)".into()),
        _ => Err("must be an https URL".into()),
    }
}

/// The redirect URI registered at the provider for `provider_id`.
pub fn redirect_uri(public_url: &PublicUrl, provider_id: &str) -> String {
    public_url.join(&format!("/sign-in/oidc/{provider_id}/callback"))
}

/// What is known of a provider's discovery document.
enum Discovery {
    Unknown,
    Found(Instant, Arc<DiscoveredClient>),
    /// The last attempt failed; not retried for [`RETRY_AFTER_FAILURE`], so that a
    /// provider that is down costs one request, not one per visitor.
    Failed(Instant, String),
}

/// A client made from a provider's discovery document.
type DiscoveredClient =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

struct Provider {
    settings: OidcProviderSettings,
    redirect_uri: RedirectUrl,
    /// Held while discovering, so concurrent sign-ins wait for one fetch.
    discovered: Mutex<Discovery>,
}

/// The configured providers, with their discovered metadata cached.
pub struct Providers {
    list: Vec<Provider>,
    http: openidconnect::reqwest::Client,
}

/// A provider as the account page shows it.
#[derive(Debug, Clone)]
pub struct ProviderStatus {
    pub name: String,
    pub href: String,
    pub linked: bool,
}

/// A provider as the sign-in page links to it.
#[derive(Debug, Clone)]
pub struct ProviderLink {
    pub name: String,
    pub href: String,
}

impl Providers {
    /// Checks every provider's settings; ids must be distinct.
    pub fn new(settings: &[OidcProviderSettings], public_url: &PublicUrl) -> Result<Providers, String> {
        let mut list = Vec::with_capacity(settings.len());
        for provider in settings {
            provider.check()?;
            if list.iter().any(|p: &Provider| p.settings.id == provider.id) {
                return Err(format!("two providers have the id {}", provider.id));
            }
            let redirect_uri = RedirectUrl::new(redirect_uri(public_url, &provider.id)).map_err(|e| e.to_string())?;
            list.push(Provider {
                settings: provider.clone(),
                redirect_uri,
                discovered: Mutex::new(Discovery::Unknown),
            });
        }
        // No redirects: a provider's endpoints answer directly (and a redirect to an
        // internal address must not be followed).
        let http = openidconnect::reqwest::Client::builder()
            .redirect(openidconnect::reqwest::redirect::Policy::none())
            .timeout(PROVIDER_TIMEOUT)
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        Ok(Providers { list, http })
    }

    /// Links for the sign-in page, each coming back to `next` afterwards.
    pub fn links(&self, next: &str) -> Vec<ProviderLink> {
        let query = if next == "/" { String::new() } else { format!("?{}", encode_pair("next", next)) };
        self.list
            .iter()
            .map(|p| ProviderLink {
                name: p.settings.name.clone(),
                href: format!("/sign-in/oidc/{}{query}", p.settings.id),
            })
            .collect()
    }

    /// Each provider with whether one of `linked_issuers` is its issuer, for the account
    /// page (whose links start link flows: the developer is signed in).
    pub fn statuses(&self, linked_issuers: &[String]) -> Vec<ProviderStatus> {
        self.list
            .iter()
            .map(|p| ProviderStatus {
                name: p.settings.name.clone(),
                href: format!("/sign-in/oidc/{}", p.settings.id),
                linked: linked_issuers.contains(&p.settings.issuer),
            })
            .collect()
    }

    fn get(&self, id: &str) -> Option<&Provider> {
        self.list.iter().find(|p| p.settings.id == id)
    }
}

fn encode_pair(name: &str, value: &str) -> String {
    serde_urlencoded::to_string([(name, value)]).unwrap_or_default()
}

/// Why a provider could not be used.
#[derive(Debug, thiserror::Error)]
enum FlowError {
    #[error("discovery failed: {0}")]
    Discovery(String),
    #[error("the code exchange failed: {0}")]
    Exchange(String),
    #[error("the ID token was refused: {0}")]
    IdToken(String),
    #[error("the user info request failed: {0}")]
    UserInfo(String),
}

impl Provider {
    /// The client, from a fresh-enough discovery (fetched at most once at a time).
    async fn client(&self, http: &openidconnect::reqwest::Client) -> Result<Arc<DiscoveredClient>, FlowError> {
        let mut cached = self.discovered.lock().await;
        match &*cached {
            Discovery::Found(at, client) if at.elapsed() < DISCOVERY_TTL => return Ok(client.clone()),
            Discovery::Failed(at, error) if at.elapsed() < RETRY_AFTER_FAILURE => {
                return Err(FlowError::Discovery(format!("{error} (not retried yet)")));
            }
            _ => {}
        }
        let discovered = self.discover(http).await;
        *cached = match &discovered {
            Ok(client) => Discovery::Found(Instant::now(), client.clone()),
            Err(e) => Discovery::Failed(Instant::now(), e.to_string()),
        };
        discovered
    }

    async fn discover(&self, http: &openidconnect::reqwest::Client) -> Result<Arc<DiscoveredClient>, FlowError> {
        let issuer = IssuerUrl::new(self.settings.issuer.clone()).map_err(|e| FlowError::Discovery(e.to_string()))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, http)
            .await
            .map_err(|e| FlowError::Discovery(error_chain(&e)))?;
        // The secret, codes and tokens go to these: the issuer's rule holds for each.
        let endpoints = [
            ("authorization_endpoint", Some(metadata.authorization_endpoint().as_str())),
            ("token_endpoint", metadata.token_endpoint().map(|u| u.as_str())),
            ("userinfo_endpoint", metadata.userinfo_endpoint().map(|u| u.as_str())),
            ("jwks_uri", Some(metadata.jwks_uri().as_str())),
        ];
        for (name, url) in endpoints {
            if let Some(url) = url {
                check_issuer(url).map_err(|e| FlowError::Discovery(format!("{name} {url}: {e}")))?;
            }
        }
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.settings.client_id.clone()),
            Some(ClientSecret::new(self.settings.client_secret.clone())),
        )
        .set_redirect_uri(self.redirect_uri.clone());
        Ok(Arc::new(client))
    }

    /// Forgets the discovered metadata (after a failure that fresh keys may cure).
    async fn forget(&self) {
        *self.discovered.lock().await = Discovery::Unknown;
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// The flow under way, kept in the (server-side) session until the callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub provider: String,
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
    /// Where to go once signed in (already checked to be a local path).
    pub next: String,
    pub started_at: chrono::DateTime<Utc>,
    /// The developer signed in when the flow started: the flow links the provider's
    /// account to theirs instead of signing in.
    #[serde(default)]
    pub link_to: Option<String>,
}

/// Why a callback is refused before anything is asked of the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackProblem {
    /// No sign-in was started in this browser (or it was already finished).
    NotStarted,
    /// The flow was started for another provider.
    OtherProvider,
    /// `state` does not match: the answer belongs to another flow (or is forged).
    StateMismatch,
    /// The flow was started more than [`FLOW_LIFETIME`] ago.
    Expired,
}

/// Takes the flow `state` names out of the session's `flows` (it is used once,
/// whatever happens next) and checks that it is for `provider` and not too old. A
/// `state` that names none leaves the flows alone, so a forged answer cannot cancel
/// someone's sign-in.
pub fn take_flow(
    flows: &mut Vec<Pending>,
    provider: &str,
    state: &str,
    now: chrono::DateTime<Utc>,
) -> Result<Pending, CallbackProblem> {
    if flows.is_empty() {
        return Err(CallbackProblem::NotStarted);
    }
    let found = flows.iter().position(|f| crate::csrf::tokens_match(state, &f.state));
    let flow = flows.remove(found.ok_or(CallbackProblem::StateMismatch)?);
    if flow.provider != provider {
        return Err(CallbackProblem::OtherProvider);
    }
    if !is_fresh(&flow, now) {
        return Err(CallbackProblem::Expired);
    }
    Ok(flow)
}

fn is_fresh(flow: &Pending, now: chrono::DateTime<Utc>) -> bool {
    now >= flow.started_at && now - flow.started_at <= FLOW_LIFETIME
}

/// Adds a flow to the session's, dropping stale ones and, beyond [`MAX_FLOWS`], the oldest.
pub fn add_flow(flows: &mut Vec<Pending>, flow: Pending, now: chrono::DateTime<Utc>) {
    flows.retain(|f| is_fresh(f, now));
    flows.push(flow);
    if flows.len() > MAX_FLOWS {
        flows.drain(..flows.len() - MAX_FLOWS);
    }
}

/// What a provider says about the person signing in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: Option<String>,
}

/// What to do with a verified identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The identity is linked to this developer already.
    SignIn(String),
    /// Link the identity to this developer (and sign them in). When their address was
    /// never confirmed, the provider's word confirms it, and any password on the
    /// account goes (whoever set it had not proved the address was theirs).
    Link { developer_id: String, confirms_email: bool },
    /// Create a developer with this email (confirmed) and name, and link the identity.
    Create { email: String, name: String },
    /// The provider did not vouch for an email address.
    NoVerifiedEmail,
    /// An account has this email and the provider may not open it on its word: its
    /// owner signs in with their password and links the provider from the account page.
    ExistingAccount,
    /// The identity is linked to another developer than the one linking it.
    LinkedElsewhere,
    /// The developer already has another account at this provider linked.
    OtherIdentityLinked,
}

/// What [`decide`] goes by, besides the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Facts<'a> {
    /// The developer the identity is linked to.
    pub linked: Option<&'a str>,
    /// The developer linking it (signed in when the flow started), if this is a link flow.
    pub linking: Option<&'a str>,
    /// The account with the identity's email.
    pub same_email: Option<&'a Account>,
    /// Whether the developer it would be linked to has another identity at this issuer.
    pub target_has_other: bool,
    /// The provider's `link_existing_by_email` setting.
    pub link_by_email: bool,
}

/// Decides what a sign-in (or a link flow) with `identity` does.
pub fn decide(identity: &Identity, facts: Facts<'_>) -> Outcome {
    if let Some(linking) = facts.linking {
        return match facts.linked {
            Some(linked) if linked == linking => Outcome::SignIn(linked.to_owned()),
            Some(_) => Outcome::LinkedElsewhere,
            None if facts.target_has_other => Outcome::OtherIdentityLinked,
            None => Outcome::Link { developer_id: linking.to_owned(), confirms_email: false },
        };
    }
    if let Some(developer_id) = facts.linked {
        return Outcome::SignIn(developer_id.to_owned());
    }
    let email = match &identity.email {
        Some(email) if identity.email_verified && validate::email("email", &normalize_email(email)).is_ok() => {
            normalize_email(email)
        }
        _ => return Outcome::NoVerifiedEmail,
    };
    if let Some(account) = facts.same_email {
        if !facts.link_by_email {
            return Outcome::ExistingAccount;
        }
        if facts.target_has_other {
            return Outcome::OtherIdentityLinked;
        }
        return Outcome::Link { developer_id: account.id.clone(), confirms_email: account.email_verified_at.is_none() };
    }
    let name = identity
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| validate::name("name", n).is_ok())
        .map_or_else(|| email.split('@').next().unwrap_or("developer").to_owned(), str::to_owned);
    Outcome::Create { email, name }
}

pub(crate) fn routes() -> Router<PortalState> {
    Router::new()
        .route("/sign-in/oidc/{provider}", get(start))
        .route("/sign-in/oidc/{provider}/callback", get(callback))
}

#[derive(Deserialize)]
struct StartQuery {
    #[serde(default)]
    next: String,
}

fn unavailable(name: &str) -> PageError {
    PageError::new(
        StatusCode::BAD_GATEWAY,
        "Sign-in is unavailable",
        format!("We could not complete sign-in with {name}. Try again in a moment, or sign in with your password."),
    )
}

/// Starts a sign-in: new `state`, `nonce` and PKCE verifier in the session, then off
/// to the provider's authorization endpoint.
async fn start(
    State(state): State<PortalState>,
    session: Session,
    Path(provider_id): Path<String>,
    Query(query): Query<StartQuery>,
) -> Result<Response, PageError> {
    let provider = state.oidc.get(&provider_id).ok_or_else(PageError::not_found)?;
    // A signed-in developer links the provider to their account (from the account page).
    let link_to = current_developer(&state, &session).await?.map(|viewer| viewer.id);
    let client = provider.client(&state.oidc.http).await.map_err(|e| {
        tracing::warn!(provider = %provider_id, error = %e, "OpenID provider unavailable");
        unavailable(&provider.settings.name)
    })?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, csrf, nonce) = client
        .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge)
        .url();
    let pending = Pending {
        provider: provider_id,
        state: csrf.secret().clone(),
        nonce: nonce.secret().clone(),
        pkce_verifier: verifier.secret().clone(),
        next: match link_to {
            Some(_) => "/account".to_owned(),
            None => rules::safe_next(&query.next).unwrap_or("/").to_owned(),
        },
        started_at: Utc::now(),
        link_to,
    };
    let mut flows: Vec<Pending> = session.get(FLOWS_KEY).await.map_err(PageError::internal)?.unwrap_or_default();
    add_flow(&mut flows, pending, Utc::now());
    session.insert(FLOWS_KEY, &flows).await.map_err(PageError::internal)?;
    Ok(Redirect::to(url.as_str()).into_response())
}

#[derive(Deserialize)]
struct CallbackQuery {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    error: Option<String>,
}

/// Where the provider sends the browser back.
async fn callback(
    State(state): State<PortalState>,
    session: Session,
    Path(provider_id): Path<String>,
    Query(query): Query<CallbackQuery>,
) -> Result<Response, PageError> {
    let provider = state.oidc.get(&provider_id).ok_or_else(PageError::not_found)?;
    let mut flows: Vec<Pending> = session.get(FLOWS_KEY).await.map_err(PageError::internal)?.unwrap_or_default();
    let before = flows.len();
    let taken = take_flow(&mut flows, &provider_id, &query.state, Utc::now());
    if flows.len() != before {
        // Used once, whatever happens next (saved now: sessions are not saved with a 5xx answer).
        session.insert(FLOWS_KEY, &flows).await.map_err(PageError::internal)?;
        session.save().await.map_err(PageError::internal)?;
    }
    let pending = taken.map_err(|problem| {
        tracing::info!(provider = %provider_id, ?problem, "OpenID callback refused");
        PageError::bad_request(
            "This sign-in did not start here, was already used or took too long. Start again from the sign-in page.",
        )
    })?;
    let name = &provider.settings.name;
    if let Some(error) = query.error {
        tracing::info!(provider = %provider_id, %error, "OpenID provider refused the sign-in");
        let text = match error.as_str() {
            "access_denied" => format!("Sign-in with {name} was cancelled."),
            _ => format!("{name} did not sign you in. Try again, or sign in with your password."),
        };
        flash(&session, FlashKind::Error, text).await?;
        return Ok(Redirect::to("/sign-in").into_response());
    }
    let identity = match identify(&state, provider, &pending, query.code).await {
        Ok(identity) => identity,
        Err(e) => {
            tracing::warn!(provider = %provider_id, error = %e, "OpenID sign-in failed");
            // New signing keys, perhaps: the next sign-in fetches them.
            if matches!(e, FlowError::IdToken(_)) {
                provider.forget().await;
            }
            return Err(unavailable(name));
        }
    };
    // A link flow belongs to the developer who started it, still signed in here.
    let signed_in = current_developer(&state, &session).await?.map(|viewer| viewer.id);
    if pending.link_to.is_some() && pending.link_to != signed_in {
        return Err(PageError::bad_request("You signed out while linking. Sign in and start again."));
    }
    let outcome = settle(&state, provider, &identity, pending.link_to.as_deref()).await?;
    let refusal = match outcome {
        Settled::SignIn(developer_id) if pending.link_to.is_none() => {
            account_pages::start_signed_in_session(&session, &developer_id).await?;
            return Ok(Redirect::to(&pending.next).into_response());
        }
        Settled::SignIn(_) => {
            flash(&session, FlashKind::Success, format!("You can now sign in with {name}.")).await?;
            return Ok(Redirect::to(&pending.next).into_response());
        }
        Settled::Refused(Outcome::NoVerifiedEmail) => format!(
            "{name} did not confirm an email address for your account, so we cannot sign you in with it. \
             Confirm your address there, or sign up with a password."
        ),
        Settled::Refused(Outcome::ExistingAccount) => format!(
            "An account with your {name} email address already exists. Sign in with its password (or choose a \
             new one with “Forgot your password?”), then link {name} on your account page."
        ),
        Settled::Refused(Outcome::LinkedElsewhere) => {
            format!("That {name} account is linked to another developer account here, so it was not linked.")
        }
        Settled::Refused(_) => {
            format!("Another {name} account is linked to this developer account already, so this one was not linked.")
        }
    };
    flash(&session, FlashKind::Error, refusal).await?;
    let back = if pending.link_to.is_some() { "/account" } else { "/sign-in" };
    Ok(Redirect::to(back).into_response())
}

/// Exchanges the code and reads the verified identity: the ID token's subject, and
/// the email claims from the ID token or, when it has none, from the user info
/// endpoint (which must name the same subject).
async fn identify(
    state: &PortalState,
    provider: &Provider,
    pending: &Pending,
    code: String,
) -> Result<Identity, FlowError> {
    let http = &state.oidc.http;
    let client = provider.client(http).await?;
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| FlowError::Exchange(e.to_string()))?
        .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
        .request_async(http)
        .await
        .map_err(|e| FlowError::Exchange(error_chain(&e)))?;
    let id_token = tokens.id_token().ok_or_else(|| FlowError::IdToken("the token response has none".into()))?;
    let claims = id_token
        .claims(&client.id_token_verifier(), &Nonce::new(pending.nonce.clone()))
        .map_err(|e| FlowError::IdToken(error_chain(&e)))?;
    let mut identity = Identity {
        issuer: claims.issuer().to_string(),
        subject: claims.subject().to_string(),
        email: claims.email().map(|e| e.to_string()),
        email_verified: claims.email_verified().unwrap_or(false),
        name: claims.name().and_then(|n| n.get(None)).map(|n| n.to_string()),
    };
    // Claims the ID token lacks (many providers put them only in the user info).
    if identity.email.is_none() || claims.email_verified().is_none() {
        let info: CoreUserInfoClaims = client
            .user_info(tokens.access_token().clone(), Some(claims.subject().clone()))
            .map_err(|e| FlowError::UserInfo(e.to_string()))?
            .request_async(http)
            .await
            .map_err(|e| FlowError::UserInfo(error_chain(&e)))?;
        if info.email().is_some() {
            identity.email = info.email().map(|e| e.to_string());
            identity.email_verified = info.email_verified().unwrap_or(false);
        }
        if identity.name.is_none() {
            identity.name = info.name().and_then(|n| n.get(None)).map(|n| n.to_string());
        }
    }
    Ok(identity)
}

/// What a settled sign-in comes to.
enum Settled {
    /// The developer to sign in (or who linked the provider).
    SignIn(String),
    /// One of the refusing [`Outcome`]s.
    Refused(Outcome),
}

/// Applies [`decide`] to the identity (for the developer `linking` it, in a link flow).
async fn settle(
    state: &PortalState,
    provider: &Provider,
    identity: &Identity,
    linking: Option<&str>,
) -> Result<Settled, PageError> {
    // Two first sign-ins racing: the loser finds the winner's link and signs in.
    for _ in 0..2 {
        let db = state.store.db();
        let linked = identities::find_developer(db, &identity.issuer, &identity.subject).await?;
        let same_email = match (&identity.email, linking, &linked) {
            (Some(email), None, None) => accounts::find_by_email(db, email).await?,
            _ => None,
        };
        let target = linking.or(same_email.as_ref().map(|a| a.id.as_str()));
        let target_has_other = match target {
            Some(developer_id) => identities::subject_at(db, developer_id, &identity.issuer).await?.is_some(),
            None => false,
        };
        let facts = Facts {
            linked: linked.as_deref(),
            linking,
            same_email: same_email.as_ref(),
            target_has_other,
            link_by_email: provider.settings.link_existing_by_email,
        };
        let outcome = decide(identity, facts);
        if !matches!(outcome, Outcome::Link { .. } | Outcome::Create { .. }) {
            return Ok(match outcome {
                Outcome::SignIn(developer_id) => Settled::SignIn(developer_id),
                refused => Settled::Refused(refused),
            });
        }
        let change = state.store.change(&Actor(format!("oidc:{}", identity.issuer))).await?;
        let result = match outcome {
            Outcome::Link { developer_id, confirms_email } => {
                link_existing(&change, identity, &developer_id, confirms_email).await.map(|()| (developer_id, true))
            }
            Outcome::Create { email, name } => create(&change, identity, &email, &name).await.map(|id| (id, false)),
            _ => unreachable!("only links and creations change anything"),
        };
        match result {
            Ok((developer_id, linked_existing)) => {
                change.commit().await?;
                if linked_existing {
                    tell_owner(state, &provider.settings.name, &developer_id).await;
                }
                return Ok(Settled::SignIn(developer_id));
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(PageError::internal("OpenID sign-in kept conflicting with concurrent sign-ins"))
}

/// Mails the owner of an account that a provider was linked to it (a failure is logged).
async fn tell_owner(state: &PortalState, provider: &str, developer_id: &str) {
    let sent = async {
        let account = accounts::find(state.store.db(), developer_id).await?.ok_or("account vanished")?;
        let mail = mail::identity_linked(&state.settings.public_url, &account.email, &account.name, provider);
        state.mailer.send(&mail).await?;
        Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    };
    if let Err(e) = sent.await {
        tracing::error!(error = %e, "could not tell a developer about a linked sign-in provider");
    }
}

async fn link_existing(
    change: &turnpike_store::Change<'_>,
    identity: &Identity,
    developer_id: &str,
    confirms_email: bool,
) -> Result<(), StoreError> {
    identities::link(change, &identity.issuer, &identity.subject, developer_id).await?;
    if confirms_email {
        accounts::remove_password(change, developer_id).await?;
        accounts::mark_email_verified(change, developer_id, Utc::now()).await?;
        sessions::delete_for_developer(change.txn(), developer_id, None).await?;
    }
    Ok(())
}

async fn create(
    change: &turnpike_store::Change<'_>,
    identity: &Identity,
    email: &str,
    name: &str,
) -> Result<String, StoreError> {
    let account = accounts::sign_up_verified(change, email, name, Utc::now()).await?;
    identities::link(change, &identity.issuer, &identity.subject, &account.id).await?;
    Ok(account.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(id: &str, issuer: &str) -> OidcProviderSettings {
        OidcProviderSettings {
            id: id.into(),
            name: "Example".into(),
            issuer: issuer.into(),
            client_id: "portal".into(),
            client_secret: "s3cret".into(),
            link_existing_by_email: false,
        }
    }

    #[test]
    fn provider_settings_are_checked() {
        assert!(settings("corp", "https://sso.example.com").check().is_ok());
        assert!(settings("corp-2", "https://sso.example.com/realms/x").check().is_ok());
        assert!(settings("dev", "http://127.0.0.1:9999").check().is_ok());
        assert!(settings("dev", "http://localhost:9999").check().is_ok());
        assert!(settings("dev", "http://[::1]:9999").check().is_ok());
        for (id, issuer, needle) in [
            ("", "https://sso.example.com", "id"),
            ("Corp", "https://sso.example.com", "id"),
            ("a/b", "https://sso.example.com", "id"),
            ("corp", "http://sso.example.com", "https"),
            ("corp", "http://10.0.0.1", "https"),
            ("corp", "ftp://sso.example.com", "https"),
            ("corp", "sso.example.com", "not a URL"),
            ("corp", "https://sso.example.com/?x=1", "query"),
        ] {
            let err = settings(id, issuer).check().unwrap_err();
            assert!(err.contains(needle), "{id} {issuer}: {err}");
        }
        let mut no_secret = settings("corp", "https://sso.example.com");
        no_secret.client_secret.clear();
        assert!(no_secret.check().unwrap_err().contains("client_secret"));
        assert!(!format!("{no_secret:?}{:?}", settings("a", "https://x.example")).contains("s3cret"));
    }

    #[test]
    fn provider_ids_are_distinct_and_links_carry_next() {
        let url: PublicUrl = "https://portal.example.com".parse().unwrap();
        let one = settings("corp", "https://sso.example.com");
        let Err(twice) = Providers::new(&[one.clone(), one.clone()], &url) else { panic!("the same id twice") };
        assert!(twice.contains("two providers"), "{twice}");
        let providers = Providers::new(&[one], &url).unwrap();
        assert_eq!(providers.links("/")[0].href, "/sign-in/oidc/corp");
        assert_eq!(providers.links("/apps?x=1&y")[0].href, "/sign-in/oidc/corp?next=%2Fapps%3Fx%3D1%26y");
        assert_eq!(redirect_uri(&url, "corp"), "https://portal.example.com/sign-in/oidc/corp/callback");
    }

    fn pending(started_at: chrono::DateTime<Utc>) -> Pending {
        Pending {
            provider: "corp".into(),
            state: "state-123".into(),
            nonce: "n".into(),
            pkce_verifier: "v".into(),
            next: "/".into(),
            started_at,
            link_to: None,
        }
    }

    #[test]
    fn callbacks_must_match_a_flow_this_session_started() {
        let now = Utc::now();
        let flow = pending(now - chrono::TimeDelta::minutes(1));
        let take = |flows: &[Pending], provider: &str, state: &str| {
            let mut flows = flows.to_vec();
            let taken = take_flow(&mut flows, provider, state, now);
            (taken, flows.len())
        };
        assert_eq!(take(std::slice::from_ref(&flow), "corp", "state-123"), (Ok(flow.clone()), 0));
        assert_eq!(take(&[], "corp", "state-123"), (Err(CallbackProblem::NotStarted), 0));
        // A state naming no flow leaves the flows alone.
        assert_eq!(take(std::slice::from_ref(&flow), "corp", "state-124"), (Err(CallbackProblem::StateMismatch), 1));
        assert_eq!(take(std::slice::from_ref(&flow), "corp", ""), (Err(CallbackProblem::StateMismatch), 1));
        // A flow named but wrong is used up all the same.
        assert_eq!(take(std::slice::from_ref(&flow), "other", "state-123"), (Err(CallbackProblem::OtherProvider), 0));
        let old = pending(now - FLOW_LIFETIME - chrono::TimeDelta::seconds(1));
        assert_eq!(take(&[old], "corp", "state-123"), (Err(CallbackProblem::Expired), 0));
        let future = pending(now + chrono::TimeDelta::minutes(5));
        assert_eq!(take(&[future], "corp", "state-123"), (Err(CallbackProblem::Expired), 0));
        // Among several, the one named.
        let other = Pending { state: "state-456".into(), ..flow.clone() };
        assert_eq!(take(&[other.clone(), flow.clone()], "corp", "state-123"), (Ok(flow.clone()), 1));
    }

    #[test]
    fn a_session_keeps_a_few_fresh_flows() {
        let now = Utc::now();
        let mut flows = vec![pending(now - FLOW_LIFETIME - chrono::TimeDelta::seconds(1))];
        for i in 0..6 {
            add_flow(&mut flows, Pending { state: format!("s{i}"), ..pending(now) }, now);
        }
        let states: Vec<&str> = flows.iter().map(|f| f.state.as_str()).collect();
        assert_eq!(states, ["s2", "s3", "s4", "s5"], "the stale one and the oldest went");
    }

    fn identity(email: Option<&str>, verified: bool, name: Option<&str>) -> Identity {
        Identity {
            issuer: "https://sso.example.com".into(),
            subject: "248289761001".into(),
            email: email.map(str::to_owned),
            email_verified: verified,
            name: name.map(str::to_owned),
        }
    }

    fn account(id: &str, verified: bool) -> Account {
        Account {
            id: id.into(),
            email: "ada@example.com".into(),
            name: "Ada".into(),
            email_verified_at: verified.then(Utc::now),
            password_hash: Some("$argon2id$…".into()),
        }
    }

    #[test]
    fn sign_ins_link_or_create_by_verified_email() {
        let ada = identity(Some("Ada@Example.com"), true, Some("Ada Lovelace"));
        let confirmed = account("d1", true);
        let unconfirmed = account("d1", false);
        let trusting = |same_email| Facts { same_email, link_by_email: true, ..Facts::default() };
        // A linked identity signs in whatever the email says now.
        let linked = Facts { linked: Some("d1"), ..Facts::default() };
        assert_eq!(decide(&identity(None, false, None), linked), Outcome::SignIn("d1".into()));
        // Unverified or missing email: refused, never linked.
        let no = Facts::default();
        assert_eq!(decide(&identity(Some("ada@example.com"), false, None), no), Outcome::NoVerifiedEmail);
        assert_eq!(decide(&identity(None, true, None), no), Outcome::NoVerifiedEmail);
        assert_eq!(decide(&identity(Some("not-an-email"), true, None), no), Outcome::NoVerifiedEmail);
        assert_eq!(
            decide(&identity(Some("ada@example.com"), false, None), trusting(Some(&confirmed))),
            Outcome::NoVerifiedEmail
        );
        // An existing account is not opened on a provider's word unless the operator says so.
        for existing in [&confirmed, &unconfirmed] {
            let facts = Facts { same_email: Some(existing), ..Facts::default() };
            assert_eq!(decide(&ada, facts), Outcome::ExistingAccount);
        }
        assert_eq!(
            decide(&ada, trusting(Some(&confirmed))),
            Outcome::Link { developer_id: "d1".into(), confirms_email: false }
        );
        assert_eq!(
            decide(&ada, trusting(Some(&unconfirmed))),
            Outcome::Link { developer_id: "d1".into(), confirms_email: true }
        );
        // ...and never when the account has another identity at this provider (a
        // recycled address at the provider must not open it).
        let other = Facts { target_has_other: true, ..trusting(Some(&confirmed)) };
        assert_eq!(decide(&ada, other), Outcome::OtherIdentityLinked);
        // New: created with the normalised email and the provider's name.
        assert_eq!(decide(&ada, no), Outcome::Create { email: "ada@example.com".into(), name: "Ada Lovelace".into() });
        // Without a usable name, the email's local part.
        for name in [None, Some("  "), Some("bad\u{7}name")] {
            assert_eq!(
                decide(&identity(Some("ada@example.com"), true, name), no),
                Outcome::Create { email: "ada@example.com".into(), name: "ada".into() }
            );
        }
    }

    #[test]
    fn a_signed_in_developer_links_their_own_provider_account() {
        // The email does not matter: they proved both accounts are theirs.
        let stranger = identity(Some("someone@else.example"), false, None);
        let linking = Facts { linking: Some("d1"), ..Facts::default() };
        assert_eq!(decide(&stranger, linking), Outcome::Link { developer_id: "d1".into(), confirms_email: false });
        assert_eq!(decide(&stranger, Facts { linked: Some("d1"), ..linking }), Outcome::SignIn("d1".into()));
        assert_eq!(decide(&stranger, Facts { linked: Some("d2"), ..linking }), Outcome::LinkedElsewhere);
        assert_eq!(decide(&stranger, Facts { target_has_other: true, ..linking }), Outcome::OtherIdentityLinked);
    }
}
