//! The test portal and a minimal browser: it keeps the session cookie, follows no
//! redirects by itself, and reads the CSRF token out of forms.

#![allow(dead_code)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, HeaderMap, LOCATION, SET_COOKIE};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use turnpike_bus::InProcessBus;
use turnpike_bus::credentials::InProcessCredentials;
use turnpike_domain::secrets::{KeyHasher, generate_secret};
use turnpike_portal::{PortalState, PublicUrl, Settings};
use turnpike_store::portal::accounts;
use turnpike_store::portal::outbox::{self, OutboxMail};
use turnpike_store::publish::Publisher;
use turnpike_store::{Actor, Store};
use turnpike_testkit::Postgres;

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A migrated store of its own; the directory holds the SQLite file.
pub async fn open_store(backend: Backend) -> (Arc<Store>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}/turnpike.db?mode=rwc", dir.path().display()),
        Backend::Postgres => {
            tokio::task::spawn_blocking(|| Postgres::shared().create_database("portal")).await.unwrap()
        }
    };
    let store = Store::connect(&url, 5).await.expect("connect");
    store.migrate().await.expect("migrate");
    (Arc::new(store), dir)
}

pub struct TestPortal {
    pub url: String,
    pub store: Arc<Store>,
    pub hasher: KeyHasher,
    /// The bus and credential table the portal publishes to, as a gateway follows them.
    pub bus: Arc<InProcessBus>,
    pub credentials: Arc<InProcessCredentials>,
    stop: Option<oneshot::Sender<()>>,
    _dir: TempDir,
}

impl Drop for TestPortal {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The password the helpers give developers; it passes the policy.
pub const PASSWORD: &str = "correct horse battery staple";

impl TestPortal {
    /// A portal on SQLite with the development outbox.
    pub async fn start() -> TestPortal {
        TestPortal::start_with(Backend::Sqlite, |_| {}).await
    }

    pub async fn start_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> TestPortal {
        let (store, dir) = open_store(backend).await;
        TestPortal::serve(store, dir, configure).await
    }

    /// A portal over a store from [`open_store`], seeded before the portal's own
    /// background writes (session clean-up) can compete with the seeding on SQLite.
    pub async fn serve(store: Arc<Store>, dir: TempDir, configure: impl FnOnce(&mut Settings)) -> TestPortal {
        // Bound before serving: the port answers as soon as `start` returns.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut settings = Settings::new(PublicUrl::from_listen(addr));
        configure(&mut settings);
        let hasher = KeyHasher::new(&generate_secret()).unwrap();
        // The gateway's side of all-in-one mode: what the portal's changes are published to.
        let bus = Arc::new(InProcessBus::new());
        let credentials = Arc::new(InProcessCredentials::new());
        let publisher = Publisher::new(store.clone(), bus.clone(), credentials.clone());
        let state = PortalState::new(store.clone(), hasher.clone(), settings, publisher).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(turnpike_portal::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        TestPortal { url: format!("http://{addr}"), store, hasher, bus, credentials, stop: Some(stop), _dir: dir }
    }

    pub fn browser(&self) -> Browser {
        Browser::new(&self.url, None)
    }

    /// A browser whose connections come from another loopback address (`127.0.0.x`).
    pub fn browser_from(&self, ip: &str) -> Browser {
        Browser::new(&self.url, Some(ip.parse().unwrap()))
    }

    /// Waits for the newest mail to `to` whose subject contains `subject` (mail is sent
    /// in the background, after the answer).
    pub async fn mail(&self, to: &str, subject: &str) -> OutboxMail {
        self.mail_matching(|m| m.to == to && m.subject.contains(subject)).await
    }

    /// Waits for the newest mail that `wanted` accepts.
    pub async fn mail_matching(&self, wanted: impl Fn(&OutboxMail) -> bool) -> OutboxMail {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(mail) = self.all_mail().await.into_iter().find(|m| wanted(m)) {
                return mail;
            }
            assert!(tokio::time::Instant::now() < deadline, "the expected mail did not arrive");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn all_mail(&self) -> Vec<OutboxMail> {
        outbox::latest(self.store.db(), 1000).await.unwrap()
    }

    /// A developer who signed up and confirmed their address, with [`PASSWORD`].
    pub async fn developer(&self, email: &str, name: &str) -> String {
        let hash = turnpike_portal::rules::hash_password(PASSWORD);
        let change = self.store.change(&Actor("test".into())).await.unwrap();
        let account = accounts::sign_up(&change, email, name, &hash).await.unwrap();
        accounts::mark_email_verified(&change, &account.id, chrono::Utc::now()).await.unwrap();
        change.commit().await.unwrap();
        account.id
    }

    /// A browser signed in as a new confirmed developer.
    pub async fn signed_in(&self, email: &str) -> Browser {
        self.developer(email, "Test Developer").await;
        let mut browser = self.browser();
        let page = browser.sign_in(email, PASSWORD, "").await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "{}", page.body);
        browser
    }
}

/// The path and query of a portal link from a mail.
pub fn link_in(mail: &OutboxMail, needle: &str) -> String {
    let url = mail
        .body
        .split_whitespace()
        .find(|word| word.starts_with("http") && word.contains(needle))
        .unwrap_or_else(|| panic!("no {needle} link in:\n{}", mail.body));
    let after_scheme = &url[url.find("://").unwrap() + 3..];
    after_scheme[after_scheme.find('/').unwrap()..].to_owned()
}

/// Uses a password reset `link` (a path): the new password "a brand new passphrase" is
/// taken, then the link and a replay of its token are refused.
pub async fn reset_works_once(browser: &mut Browser, link: &str) {
    let token = link.split("token=").nth(1).expect("a token in the link").to_owned();
    let form = browser.get(link).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    let done = browser
        .post("/reset-password", &[("csrf", &form.csrf()), ("token", &token), ("password", "a brand new passphrase")])
        .await;
    done.assert_redirect("/sign-in");
    assert!(browser.follow(&done).await.body.contains("Your password is changed"));

    // Used: the link and the form refuse it.
    let reused = browser.get(link).await;
    assert_eq!(reused.status, StatusCode::BAD_REQUEST);
    assert!(reused.body.contains("This link does not work"), "{}", reused.body);
    let csrf = browser.get("/forgot-password").await.csrf();
    let replay = browser
        .post("/reset-password", &[("csrf", &csrf), ("token", &token), ("password", "yet another passphrase")])
        .await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
}

/// A response read in full.
#[derive(Debug)]
pub struct Page {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    /// The CSRF token of the page's first form.
    pub fn csrf(&self) -> String {
        let start =
            self.body.find(r#"name="csrf" value=""#).unwrap_or_else(|| panic!("no CSRF field in:\n{}", self.body))
                + r#"name="csrf" value=""#.len();
        self.body[start..start + self.body[start..].find('"').unwrap()].to_owned()
    }

    pub fn location(&self) -> &str {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no Location: {self:?}"))
    }

    /// The `Set-Cookie` header for the session cookie, if any.
    pub fn session_cookie(&self) -> Option<&str> {
        self.headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(&format!("{}=", turnpike_portal::SESSION_COOKIE)))
    }

    /// The body with the CSRF token blanked out, for comparing answers.
    pub fn without_csrf(&self) -> String {
        match self.body.find(r#"name="csrf" value=""#) {
            Some(_) => self.body.replace(&self.csrf(), "CSRF"),
            None => self.body.clone(),
        }
    }

    #[track_caller]
    pub fn assert_redirect(&self, to: &str) {
        assert_eq!(self.status, StatusCode::SEE_OTHER, "{}", self.body);
        assert_eq!(self.location(), to);
    }
}

/// A client that keeps the portal's session cookie, as a browser would.
pub struct Browser {
    client: reqwest::Client,
    base: String,
    /// The session cookie's value.
    pub cookie: Option<String>,
}

impl Browser {
    fn new(base: &str, local: Option<IpAddr>) -> Browser {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .local_address(local)
            .build()
            .unwrap();
        Browser { client, base: base.to_owned(), cookie: None }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let request = match &self.cookie {
            Some(value) => request.header(COOKIE, format!("{}={value}", turnpike_portal::SESSION_COOKIE)),
            None => request,
        };
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let body = response.text().await.unwrap();
        let page = Page { status, headers, body };
        if let Some(set) = page.session_cookie() {
            let value = set.split(';').next().unwrap().split_once('=').unwrap().1;
            let removed = set.contains("Max-Age=0") || value.is_empty();
            self.cookie = if removed { None } else { Some(value.to_owned()) };
        }
        page
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let request = self.client.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    /// Posts a form as given: no CSRF token is added.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let request = self.client.post(format!("{}{path}", self.base)).form(fields);
        self.send(request).await
    }

    /// Opens `page`, then posts `fields` to `action` with the page's CSRF token.
    pub async fn submit(&mut self, page: &str, action: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = self.get(page).await.csrf();
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post(action, &all).await
    }

    /// Follows a redirect.
    pub async fn follow(&mut self, page: &Page) -> Page {
        assert!(page.status.is_redirection(), "not a redirect: {page:?}");
        let to = page.location().to_owned();
        self.get(&to).await
    }

    pub async fn sign_in(&mut self, email: &str, password: &str, next: &str) -> Page {
        self.submit("/sign-in", "/sign-in", &[("email", email), ("password", password), ("next", next)]).await
    }
}
