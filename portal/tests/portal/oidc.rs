//! OpenID Connect sign-in against a real provider: panva's `oidc-provider` under
//! Node.js, started by the testkit on a free port, with PKCE required for every
//! client. The portal's browser is the JS-off client of `support.rs`; the person at
//! the provider is [`Agent`], which keeps the provider's cookies and fills in its
//! login form.

use std::collections::BTreeMap;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use turnpike_portal::oidc::OidcProviderSettings;
use turnpike_store::portal::{accounts, identities, sessions};
use turnpike_testkit::{OidcAccount, OidcClient, OidcOptions, OidcProvider};

use crate::support::{Backend, Browser, PASSWORD, Page, TestPortal, open_store};

const CLIENT_ID: &str = "turnpike-portal";
const CLIENT_SECRET: &str = "client-secret-for-tests-only";
pub(crate) const ADA_PASSWORD: &str = "ada-at-the-provider";
/// How Ada signs in at the provider; the portal keeps addresses lower-cased.
pub(crate) const ADA_AT_PROVIDER: &str = "Ada@Example.com";

pub(crate) fn ada(verified: bool) -> OidcAccount {
    OidcAccount {
        subject: "ada-subject-1".into(),
        email: ADA_AT_PROVIDER.into(),
        email_verified: verified,
        name: "Ada Lovelace".into(),
        password: ADA_PASSWORD.into(),
    }
}

/// A portal with the provider "corp" at a real OpenID provider that knows `accounts`.
pub(crate) async fn portal_with_provider(backend: Backend, accounts: Vec<OidcAccount>) -> (TestPortal, OidcProvider) {
    portal_with(backend, accounts, false).await
}

/// The same, with the provider's `link_existing_by_email` setting as given.
async fn portal_with(backend: Backend, accounts: Vec<OidcAccount>, link_by_email: bool) -> (TestPortal, OidcProvider) {
    portal_with_options(backend, accounts, link_by_email, OidcOptions::default()).await
}

async fn portal_with_options(
    backend: Backend,
    accounts: Vec<OidcAccount>,
    link_by_email: bool,
    options: OidcOptions,
) -> (TestPortal, OidcProvider) {
    let (store, dir) = open_store(backend).await;
    let mut provider = None;
    let portal = TestPortal::serve(store, dir, |settings| {
        let redirect = turnpike_portal::oidc::redirect_uri(&settings.public_url, "corp");
        let client = OidcClient {
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            redirect_uris: vec![redirect],
        };
        let started = OidcProvider::start_with(&[client], &accounts, &options).expect("start the OpenID provider");
        settings.oidc_providers.push(OidcProviderSettings {
            id: "corp".into(),
            name: "Corp SSO".into(),
            issuer: started.issuer().to_owned(),
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            link_existing_by_email: link_by_email,
        });
        provider = Some(started);
    })
    .await;
    (portal, provider.unwrap())
}

/// The person at the provider: a client that keeps the provider's cookies (all of
/// them, on every request) and follows no redirects by itself.
struct Agent {
    client: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

impl Agent {
    fn new() -> Agent {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Agent { client, cookies: BTreeMap::new() }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let response = request.header(COOKIE, cookie).send().await.unwrap();
        for set in response.headers().get_all(SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.cookies.insert(name.to_owned(), value.to_owned());
        }
        let (status, headers) = (response.status(), response.headers().clone());
        Page { status, headers, body: response.text().await.unwrap() }
    }

    fn absolute(base: &str, location: &str) -> String {
        if location.starts_with("http") { location.to_owned() } else { format!("{base}{location}") }
    }

    /// Follows the provider's redirects from `url` until one leaves for `portal`;
    /// returns the last provider page, or the portal URL it was sent to.
    async fn walk(&mut self, issuer: &str, portal: &str, mut url: String) -> Result<String, Page> {
        for _ in 0..10 {
            if url.starts_with(portal) {
                return Ok(url);
            }
            let page = self.send(self.client.get(&url)).await;
            if !page.status.is_redirection() {
                return Err(page);
            }
            url = Agent::absolute(issuer, page.location());
        }
        panic!("too many redirects at the provider");
    }

    /// Signs in at the provider with `email` and `password` from the authorization URL
    /// the portal sent the browser to; returns the portal URL the provider sends back.
    async fn sign_in(&mut self, issuer: &str, portal: &str, authorize: &str, email: &str, password: &str) -> String {
        let login = self.walk(issuer, portal, authorize.to_owned()).await.expect_err("the provider asks to sign in");
        assert_eq!(login.status, StatusCode::OK, "{}", login.body);
        let action = form_action(&login.body, "/login");
        let page = self
            .send(self.client.post(Agent::absolute(issuer, &action)).form(&[("email", email), ("password", password)]))
            .await;
        assert!(page.status.is_redirection(), "the provider refused the sign-in: {page:?}");
        let next = Agent::absolute(issuer, page.location());
        self.walk(issuer, portal, next).await.unwrap_or_else(|page| panic!("stuck at the provider: {page:?}"))
    }

    /// Presses "Cancel" at the provider's login page.
    async fn cancel(&mut self, issuer: &str, portal: &str, authorize: &str) -> String {
        let login = self.walk(issuer, portal, authorize.to_owned()).await.expect_err("the provider asks to sign in");
        let action = form_action(&login.body, "/abort");
        let page = self.send(self.client.post(Agent::absolute(issuer, &action))).await;
        let next = Agent::absolute(issuer, page.location());
        self.walk(issuer, portal, next).await.unwrap_or_else(|page| panic!("stuck at the provider: {page:?}"))
    }
}

/// The `action` of the form whose action ends with `suffix`.
fn form_action(html: &str, suffix: &str) -> String {
    html.split("action=\"")
        .skip(1)
        .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
        .find(|action| action.ends_with(suffix))
        .unwrap_or_else(|| panic!("no form posting to …{suffix} in:\n{html}"))
}

/// The value of query parameter `name` in `url`.
fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Starts the sign-in in the portal and returns the authorization URL.
async fn start(browser: &mut Browser, next: &str) -> String {
    let path =
        if next.is_empty() { "/sign-in/oidc/corp".to_owned() } else { format!("/sign-in/oidc/corp?next={next}") };
    let page = browser.get(&path).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
    page.location().to_owned()
}

/// The path and query of a portal URL.
fn path_of(portal: &TestPortal, url: &str) -> String {
    url.strip_prefix(&portal.url).unwrap_or_else(|| panic!("{url} is not on the portal")).to_owned()
}

async fn developer_count(portal: &TestPortal) -> u64 {
    let all = turnpike_store::developers::list(portal.store.db(), turnpike_store::PageParams::default()).await;
    all.unwrap().total
}

/// The whole flow for `email`: returns the portal's answer to the callback.
async fn sign_in_through_provider(
    portal: &TestPortal,
    provider: &OidcProvider,
    browser: &mut Browser,
    next: &str,
    email: &str,
) -> Page {
    let authorize = start(browser, next).await;
    let back = Agent::new().sign_in(provider.issuer(), &portal.url, &authorize, email, ADA_PASSWORD).await;
    browser.get(&path_of(portal, &back)).await
}

#[tokio::test]
async fn the_sign_in_page_offers_the_provider_and_the_flow_uses_pkce_state_and_nonce() {
    let (portal, provider) = portal_with_provider(Backend::Sqlite, vec![ada(true)]).await;
    let mut browser = portal.browser();
    let page = browser.get("/sign-in?next=/apps").await;
    assert!(page.body.contains("Sign in with Corp SSO"), "{}", page.body);
    assert!(page.body.contains(r#"href="/sign-in/oidc/corp?next=%2Fapps""#), "{}", page.body);

    let authorize = start(&mut browser, "/apps").await;
    assert!(authorize.starts_with(&format!("{}/", provider.issuer())), "{authorize}");
    assert_eq!(query_param(&authorize, "response_type").as_deref(), Some("code"));
    assert_eq!(query_param(&authorize, "client_id").as_deref(), Some(CLIENT_ID));
    assert_eq!(query_param(&authorize, "code_challenge_method").as_deref(), Some("S256"));
    assert_eq!(query_param(&authorize, "code_challenge").map(|c| c.len()), Some(43));
    let redirect = query_param(&authorize, "redirect_uri").unwrap();
    assert_eq!(redirect, format!("{}/sign-in/oidc/corp/callback", portal.url));
    let scope = query_param(&authorize, "scope").unwrap();
    for wanted in ["openid", "email", "profile"] {
        assert!(scope.split(' ').any(|s| s == wanted), "{scope}");
    }
    let state = query_param(&authorize, "state").unwrap();
    let nonce = query_param(&authorize, "nonce").unwrap();
    assert!(state.len() >= 22 && nonce.len() >= 22, "{state} {nonce}");
    // A second start gets fresh values.
    let again = start(&mut browser, "").await;
    assert_ne!(query_param(&again, "state").unwrap(), state);
    assert_ne!(query_param(&again, "nonce").unwrap(), nonce);
    assert_ne!(query_param(&again, "code_challenge").unwrap(), query_param(&authorize, "code_challenge").unwrap());
    // Unknown providers are not found.
    assert_eq!(browser.get("/sign-in/oidc/nope").await.status, StatusCode::NOT_FOUND);
    assert_eq!(browser.get("/sign-in/oidc/nope/callback?code=x&state=y").await.status, StatusCode::NOT_FOUND);
    drop(provider);
}

#[tokio::test]
async fn a_first_sign_in_creates_a_confirmed_account_and_later_ones_find_it() {
    let (portal, provider) = portal_with_provider(Backend::Postgres, vec![ada(true)]).await;
    let mut browser = portal.browser();
    let authorize = start(&mut browser, "/apps").await;
    let before = browser.cookie.clone().expect("the flow is kept in a session");
    let back = Agent::new().sign_in(provider.issuer(), &portal.url, &authorize, ADA_AT_PROVIDER, ADA_PASSWORD).await;
    browser.get(&path_of(&portal, &back)).await.assert_redirect("/apps");
    // Signed in under a new session id (no fixation).
    assert_ne!(browser.cookie.as_deref(), Some(before.as_str()));
    let apps = browser.get("/apps").await;
    assert_eq!(apps.status, StatusCode::OK, "{}", apps.body);
    assert!(apps.body.contains("Signed in as ada@example.com"), "{}", apps.body);
    let account_page = browser.get("/account").await;
    assert!(account_page.body.contains("Ada Lovelace"), "{}", account_page.body);

    let db = portal.store.db();
    let account = accounts::find_by_email(db, "ada@example.com").await.unwrap().expect("account created");
    assert_eq!(account.name, "Ada Lovelace");
    assert!(account.email_verified_at.is_some());
    assert!(account.password_hash.is_none(), "no password for an account made by the provider");
    let linked = identities::find_developer(db, provider.issuer(), "ada-subject-1").await.unwrap();
    assert_eq!(linked.as_deref(), Some(account.id.as_str()));

    // Signing in again, in another browser, finds the same account.
    let mut other = portal.browser();
    let page = sign_in_through_provider(&portal, &provider, &mut other, "", ADA_AT_PROVIDER).await;
    page.assert_redirect("/");
    assert!(other.get("/account").await.body.contains("ada@example.com"));
    assert_eq!(identities::issuers_of(db, &account.id).await.unwrap(), vec![provider.issuer().to_owned()]);
    assert_eq!(developer_count(&portal).await, 1);
}

#[tokio::test]
async fn an_existing_account_is_not_opened_on_the_providers_word_but_its_owner_can_link_it() {
    let (portal, provider) = portal_with_provider(Backend::Sqlite, vec![ada(true)]).await;
    let id = portal.developer("ada@example.com", "Ada").await;
    let mut browser = portal.browser();
    let page = sign_in_through_provider(&portal, &provider, &mut browser, "", ADA_AT_PROVIDER).await;
    page.assert_redirect("/sign-in");
    let page = browser.follow(&page).await;
    assert!(page.body.contains("already exists. Sign in with its password"), "{}", page.body);
    assert!(!page.body.contains("Sign out"), "not signed in");
    let db = portal.store.db();
    assert_eq!(identities::find_developer(db, provider.issuer(), "ada-subject-1").await.unwrap(), None);

    // Signed in with the password, the owner links the provider from the account page.
    let mut owner = portal.browser();
    owner.sign_in("ada@example.com", PASSWORD, "").await.assert_redirect("/");
    let account = owner.get("/account").await;
    assert!(account.body.contains(r#"href="/sign-in/oidc/corp">Link Corp SSO</a>"#), "{}", account.body);
    let page = owner.get("/sign-in/oidc/corp").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    let authorize = page.location().to_owned();
    let back = Agent::new().sign_in(provider.issuer(), &portal.url, &authorize, ADA_AT_PROVIDER, ADA_PASSWORD).await;
    let page = owner.get(&path_of(&portal, &back)).await;
    page.assert_redirect("/account");
    let page = owner.follow(&page).await;
    assert!(page.body.contains("You can now sign in with Corp SSO."), "{}", page.body);
    assert!(page.body.contains("linked</span>"), "{}", page.body);
    assert_eq!(identities::find_developer(db, provider.issuer(), "ada-subject-1").await.unwrap(), Some(id.clone()));
    // The owner is told by mail.
    let mail = portal.mail("ada@example.com", "Corp SSO sign-in was added").await;
    assert!(mail.body.contains("/forgot-password"), "{}", mail.body);

    // From now on the provider signs in to that account, and the password still works.
    let mut browser = portal.browser();
    sign_in_through_provider(&portal, &provider, &mut browser, "", ADA_AT_PROVIDER).await.assert_redirect("/");
    assert!(browser.get("/account").await.body.contains("ada@example.com"));
    portal.browser().sign_in("ada@example.com", PASSWORD, "").await.assert_redirect("/");
    assert_eq!(developer_count(&portal).await, 1);
}

#[tokio::test]
async fn a_provider_trusted_to_link_by_email_links_once_and_never_a_second_subject() {
    let mut impostor = ada(true);
    impostor.subject = "recycled-address-subject".into();
    impostor.email = "ada@example.com".into();
    impostor.password = "the-new-holder".into();
    let (portal, provider) = portal_with(Backend::Sqlite, vec![ada(true), impostor], true).await;
    let id = portal.developer("ada@example.com", "Ada").await;
    let mut browser = portal.browser();
    sign_in_through_provider(&portal, &provider, &mut browser, "", ADA_AT_PROVIDER).await.assert_redirect("/");
    let db = portal.store.db();
    assert_eq!(identities::find_developer(db, provider.issuer(), "ada-subject-1").await.unwrap(), Some(id.clone()));
    portal.mail("ada@example.com", "Corp SSO sign-in was added").await;
    // The password still works: linking took nothing away from a confirmed account.
    portal.browser().sign_in("ada@example.com", PASSWORD, "").await.assert_redirect("/");

    // Another subject at the same provider with the same address: refused.
    let mut other = portal.browser();
    let authorize = start(&mut other, "").await;
    let back =
        Agent::new().sign_in(provider.issuer(), &portal.url, &authorize, "ada@example.com", "the-new-holder").await;
    let page = other.get(&path_of(&portal, &back)).await;
    page.assert_redirect("/sign-in");
    assert!(other.follow(&page).await.body.contains("is linked to this developer account already"));
    assert_eq!(identities::find_developer(db, provider.issuer(), "recycled-address-subject").await.unwrap(), None);
}

#[tokio::test]
async fn a_provider_account_linked_to_someone_else_cannot_be_linked_again() {
    let (portal, provider) = portal_with_provider(Backend::Sqlite, vec![ada(true)]).await;
    // Ada's provider account made its own portal account at a first sign-in.
    let mut browser = portal.browser();
    sign_in_through_provider(&portal, &provider, &mut browser, "", ADA_AT_PROVIDER).await.assert_redirect("/");
    let ada_id = identities::find_developer(portal.store.db(), provider.issuer(), "ada-subject-1").await.unwrap();
    // Bob, signed in with his password, tries to link the same provider account.
    portal.developer("bob@example.com", "Bob").await;
    let mut bob = portal.browser();
    bob.sign_in("bob@example.com", PASSWORD, "").await.assert_redirect("/");
    let authorize = bob.get("/sign-in/oidc/corp").await.location().to_owned();
    let back = Agent::new().sign_in(provider.issuer(), &portal.url, &authorize, ADA_AT_PROVIDER, ADA_PASSWORD).await;
    let page = bob.get(&path_of(&portal, &back)).await;
    page.assert_redirect("/account");
    assert!(bob.follow(&page).await.body.contains("is linked to another developer account here"));
    let linked = identities::find_developer(portal.store.db(), provider.issuer(), "ada-subject-1").await.unwrap();
    assert_eq!(linked, ada_id, "still Ada's");
    assert!(bob.get("/account").await.body.contains("bob@example.com"), "Bob is still Bob");
}

#[tokio::test]
async fn an_unconfirmed_account_is_confirmed_by_the_provider_and_loses_the_unproven_password() {
    let (portal, provider) = portal_with(Backend::Sqlite, vec![ada(true)], true).await;
    // Someone signed up with Ada's address but never confirmed it.
    let mut squatter = portal.browser();
    let page = squatter
        .submit("/sign-up", "/sign-up", &[("email", "ada@example.com"), ("name", "Not Ada"), ("password", PASSWORD)])
        .await;
    page.assert_redirect("/sign-up/sent");
    portal.mail("ada@example.com", "Confirm").await;
    let mut browser = portal.browser();
    let page = sign_in_through_provider(&portal, &provider, &mut browser, "", ADA_AT_PROVIDER).await;
    page.assert_redirect("/");
    let account = accounts::find_by_email(portal.store.db(), "ada@example.com").await.unwrap().unwrap();
    assert!(account.email_verified_at.is_some());
    assert!(account.password_hash.is_none(), "the password set by whoever signed up is gone");
    let page = portal.browser().sign_in("ada@example.com", PASSWORD, "").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "the squatter's password must not work");
}

#[tokio::test]
async fn an_unverified_email_at_the_provider_creates_and_links_nothing() {
    let (portal, provider) = portal_with(Backend::Sqlite, vec![ada(false)], true).await;
    let id = portal.developer("ada@example.com", "Ada").await;
    let mut browser = portal.browser();
    let page = sign_in_through_provider(&portal, &provider, &mut browser, "/apps", ADA_AT_PROVIDER).await;
    page.assert_redirect("/sign-in");
    let page = browser.follow(&page).await;
    assert!(page.body.contains("did not confirm an email address"), "{}", page.body);
    assert!(!page.body.contains("Sign out"), "not signed in");
    let db = portal.store.db();
    assert_eq!(identities::find_developer(db, provider.issuer(), "ada-subject-1").await.unwrap(), None);
    assert!(identities::issuers_of(db, &id).await.unwrap().is_empty());
    assert_eq!(developer_count(&portal).await, 1);
}

#[tokio::test]
async fn callbacks_with_a_wrong_or_used_state_are_refused() {
    let (portal, provider) = portal_with_provider(Backend::Sqlite, vec![ada(true)]).await;
    // No sign-in started in this browser.
    let mut stranger = portal.browser();
    let page = stranger.get("/sign-in/oidc/corp/callback?code=abc&state=def").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("Start again"), "{}", page.body);

    // A real code with a tampered state: refused (the flow it does not name stays).
    let mut tampering = portal.browser();
    let authorize = start(&mut tampering, "").await;
    let back = Agent::new().sign_in(provider.issuer(), &portal.url, &authorize, ADA_AT_PROVIDER, ADA_PASSWORD).await;
    let state = query_param(&back, "state").unwrap();
    let tampered = path_of(&portal, &back).replace(&format!("state={state}"), "state=forged");
    assert_eq!(tampering.get(&tampered).await.status, StatusCode::BAD_REQUEST);

    // Another browser cannot use a code and state made for this one (login CSRF).
    let mut browser = portal.browser();
    let authorize = start(&mut browser, "").await;
    let back = Agent::new().sign_in(provider.issuer(), &portal.url, &authorize, ADA_AT_PROVIDER, ADA_PASSWORD).await;
    let mut victim = portal.browser();
    start(&mut victim, "").await;
    assert_eq!(victim.get(&path_of(&portal, &back)).await.status, StatusCode::BAD_REQUEST);
    // Nothing was created by any of it.
    assert_eq!(developer_count(&portal).await, 0);

    // The right browser, once: signed in; the same callback again: refused, there and
    // in any other browser.
    let mut browser = portal.browser();
    let authorize = start(&mut browser, "").await;
    let back = Agent::new().sign_in(provider.issuer(), &portal.url, &authorize, ADA_AT_PROVIDER, ADA_PASSWORD).await;
    browser.get(&path_of(&portal, &back)).await.assert_redirect("/");
    assert_eq!(browser.get(&path_of(&portal, &back)).await.status, StatusCode::BAD_REQUEST, "used up");
    let mut replay = portal.browser();
    assert_eq!(replay.get(&path_of(&portal, &back)).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn sign_ins_started_in_two_tabs_each_work_once() {
    let (portal, provider) = portal_with_provider(Backend::Sqlite, vec![ada(true)]).await;
    let mut browser = portal.browser();
    // Two tabs of one browser start a sign-in each; the first one started finishes first.
    let first = start(&mut browser, "/apps").await;
    let second = start(&mut browser, "/account").await;
    let back_first = Agent::new().sign_in(provider.issuer(), &portal.url, &first, ADA_AT_PROVIDER, ADA_PASSWORD).await;
    let back_second =
        Agent::new().sign_in(provider.issuer(), &portal.url, &second, ADA_AT_PROVIDER, ADA_PASSWORD).await;
    browser.get(&path_of(&portal, &back_first)).await.assert_redirect("/apps");
    // The other tab's flow survived the first sign-in and goes where it was asked to.
    browser.get(&path_of(&portal, &back_second)).await.assert_redirect("/account");
    assert_eq!(browser.get(&path_of(&portal, &back_first)).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(developer_count(&portal).await, 1);
}

#[tokio::test]
async fn next_only_ever_leads_to_a_portal_path() {
    let (portal, provider) = portal_with_provider(Backend::Sqlite, vec![ada(true)]).await;
    for (next, expected) in [
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/%5Cevil.example", "/"),
        ("/apps%3Fx%3D1", "/apps?x=1"),
    ] {
        let mut browser = portal.browser();
        let page = sign_in_through_provider(&portal, &provider, &mut browser, next, ADA_AT_PROVIDER).await;
        page.assert_redirect(expected);
    }
}

#[tokio::test]
async fn cancelling_at_the_provider_comes_back_to_the_sign_in_page() {
    let (portal, provider) = portal_with_provider(Backend::Sqlite, vec![ada(true)]).await;
    let mut browser = portal.browser();
    let authorize = start(&mut browser, "").await;
    let back = Agent::new().cancel(provider.issuer(), &portal.url, &authorize).await;
    assert_eq!(query_param(&back, "error").as_deref(), Some("access_denied"));
    let page = browser.get(&path_of(&portal, &back)).await;
    page.assert_redirect("/sign-in");
    let page = browser.follow(&page).await;
    assert!(page.body.contains("Sign-in with Corp SSO was cancelled."), "{}", page.body);
    assert_eq!(developer_count(&portal).await, 0);
}

#[tokio::test]
async fn a_provider_that_cannot_be_reached_gets_a_clear_page() {
    let (store, dir) = open_store(Backend::Sqlite).await;
    // A port nothing listens on.
    let port = turnpike_testkit::free_port();
    let portal = TestPortal::serve(store, dir, |settings| {
        settings.oidc_providers.push(OidcProviderSettings {
            id: "corp".into(),
            name: "Corp SSO".into(),
            issuer: format!("http://127.0.0.1:{port}"),
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            link_existing_by_email: false,
        });
    })
    .await;
    let page = portal.browser().get("/sign-in/oidc/corp").await;
    assert_eq!(page.status, StatusCode::BAD_GATEWAY);
    // Asked again at once: the same answer (the failure is remembered for a few seconds).
    assert_eq!(portal.browser().get("/sign-in/oidc/corp").await.status, StatusCode::BAD_GATEWAY);
    assert!(page.body.contains("We could not complete sign-in with Corp SSO"), "{}", page.body);
    assert!(!page.body.contains(CLIENT_SECRET));
    assert!(page.headers.get(LOCATION).is_none());
}

/// Replaces `field` of the sign-in flow kept in `browser`'s server-side session, as if
/// the flow had been started with another value.
async fn tamper_with_flow(portal: &TestPortal, browser: &Browser, field: &str, value: &str) {
    let id: tower_sessions::session::Id = browser.cookie.as_deref().expect("a session").parse().unwrap();
    let hash = turnpike_portal::session_store::hash_id(&id);
    let db = portal.store.db();
    let mut row = sessions::load(db, &hash, chrono::Utc::now()).await.unwrap().expect("the stored session");
    let mut data: serde_json::Value = serde_json::from_str(&row.data).unwrap();
    let pending = data.get_mut("oidc_flows").and_then(|f| f.get_mut(0)).expect("a sign-in under way");
    assert_ne!(pending[field], value);
    pending[field] = value.into();
    row.data = data.to_string();
    assert!(sessions::update(db, &row).await.unwrap());
}

#[tokio::test]
async fn a_wrong_nonce_or_pkce_verifier_signs_nobody_in() {
    let (portal, provider) = portal_with_provider(Backend::Sqlite, vec![ada(true)]).await;
    // The ID token must carry the nonce of this flow; the provider must get the
    // verifier of this flow's challenge. Either one wrong: refused, nothing created.
    for (field, value) in [("nonce", "a-nonce-of-another-flow"), ("pkce_verifier", &"v".repeat(43)[..])] {
        let mut browser = portal.browser();
        let authorize = start(&mut browser, "").await;
        let back =
            Agent::new().sign_in(provider.issuer(), &portal.url, &authorize, ADA_AT_PROVIDER, ADA_PASSWORD).await;
        tamper_with_flow(&portal, &browser, field, value).await;
        let page = browser.get(&path_of(&portal, &back)).await;
        assert_eq!(page.status, StatusCode::BAD_GATEWAY, "{field}: {}", page.body);
        assert!(page.body.contains("We could not complete sign-in with Corp SSO"), "{}", page.body);
        assert!(!browser.get("/account").await.status.is_success(), "{field}: not signed in");
        assert_eq!(developer_count(&portal).await, 0, "{field}");
        // The flow is used up: the same answer again is refused before the provider.
        assert_eq!(browser.get(&path_of(&portal, &back)).await.status, StatusCode::BAD_REQUEST);
    }
    // The untouched flow works, so the refusals above were the tampering's doing.
    let mut browser = portal.browser();
    sign_in_through_provider(&portal, &provider, &mut browser, "", ADA_AT_PROVIDER).await.assert_redirect("/");
}

#[tokio::test]
async fn email_claims_in_the_id_token_are_used_as_well() {
    // Providers that put the claims in the ID token (here: no user info request needed).
    let options = OidcOptions { claims_in_id_token: true };
    let (portal, provider) = portal_with_options(Backend::Sqlite, vec![ada(true)], false, options).await;
    let mut browser = portal.browser();
    sign_in_through_provider(&portal, &provider, &mut browser, "", ADA_AT_PROVIDER).await.assert_redirect("/");
    let account = accounts::find_by_email(portal.store.db(), "ada@example.com").await.unwrap().expect("created");
    assert_eq!(account.name, "Ada Lovelace");
    assert!(account.email_verified_at.is_some());
}
