//! The portal in a real browser: headless Chromium driven through ChromeDriver
//! (WebDriver, with `fantoccini`), against the real router, a real gateway following
//! the portal's bus, and a real upstream. Each test starts its own portal, gateway and
//! driver; waits are for elements the next page shows, never fixed sleeps.
//!
//! Screenshots of the main pages go to `target/test-artifacts/portal-browser/`
//! (or `$TURNPIKE_TEST_ARTIFACTS/portal-browser/`). Chromium and ChromeDriver must be
//! installed (`scripts/test` does): without them these tests fail, they do not skip.

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::StatusCode;
use turnpike_domain::lifecycle::Transition;
use turnpike_store::publish::Publisher;
use turnpike_store::{Actor, apis, plans, upstreams, versions};
use turnpike_testkit::{ChromeDriver, JAVASCRIPT_OFF, artifacts_dir};

use crate::apps::{call, caught_up, eventually, json, start_gateway, start_gateway_on, start_upstream, subscribed_key};
use crate::oidc::{ADA_AT_PROVIDER, ADA_PASSWORD, ada, portal_with_provider};
use crate::support::{Backend, PASSWORD, TestPortal};

/// How long a page may take to show what a test waits for.
const PAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The weather API's OpenAPI document: one operation, keyed by `x-api-key`.
fn weather_document() -> String {
    serde_json::json!({
        "openapi": "3.0.3",
        "info": {"title": "Weather forecasts", "version": "1.0", "description": "Forecasts for any city."},
        "servers": [{"url": "http://upstream.internal"}],
        "components": {"securitySchemes": {"key": {"type": "apiKey", "in": "header", "name": "x-api-key"}}},
        "security": [{"key": []}],
        "paths": {
            "/today": {"get": {
                "operationId": "today",
                "summary": "Today's forecast",
                "parameters": [{"name": "X-Units", "in": "header", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The forecast"}}
            }}
        }
    })
    .to_string()
}

/// The ids of what the browser picks in the subscription form.
struct Published {
    version: String,
    free: String,
}

/// Publishes `weather` v1 (keys required, with its OpenAPI document, served under
/// `/weather/v1`) and a free plan, through the publisher so the gateway gets them.
async fn publish_weather(portal: &TestPortal, upstream: &str) -> Published {
    let publisher = Publisher::new(portal.store.clone(), portal.bus.clone(), portal.credentials.clone());
    let change = portal.store.change(&Actor("admin".into())).await.unwrap();
    upstreams::create(&change, json(serde_json::json!({"name": "weather-up", "targets": [{"url": upstream}]})))
        .await
        .unwrap();
    let input = serde_json::json!({
        "name": "Weather",
        "slug": "weather",
        "description": "Hourly forecasts for any city",
        "tags": ["geo"]
    });
    apis::create(&change, json(input)).await.unwrap();
    let api = apis::find(change.txn(), "weather").await.unwrap();
    let input = json(serde_json::json!({"label": "v1", "upstream_id": "weather-up", "policies": {"key_auth": {}}}));
    let version = versions::create(&change, &api, input).await.unwrap();
    // The document's operations become the version's routes.
    versions::import_openapi(&change, &api, "v1", &weather_document()).await.unwrap();
    versions::transition(&change, &api, &version.id, Transition::Publish, Default::default()).await.unwrap();
    let free = plans::create(&change, json(serde_json::json!({"slug": "free", "name": "Free"}))).await.unwrap();
    publisher.commit(change).await.unwrap();
    Published { version: version.id, free: free.id }
}

/// A portal with the published weather API, and a gateway that has loaded it.
async fn portal_and_gateway() -> (TestPortal, String, Published) {
    let portal = TestPortal::start().await;
    let (gateway, config) = start_gateway(&portal).await;
    let upstream = start_upstream().await;
    let published = publish_weather(&portal, &upstream).await;
    caught_up(&portal, &config).await;
    (portal, gateway, published)
}

/// Headless Chromium on the portal: a WebDriver session of its own on a driver of its own.
struct Chrome {
    client: Client,
    base: String,
    shots: PathBuf,
    /// Names the screenshot taken when an awaited element never appears.
    test: &'static str,
    /// Declared last: dropped after the session, and it stops any browser left behind.
    driver: ChromeDriver,
}

impl Chrome {
    async fn start(test: &'static str, portal: &TestPortal, prefs: &[(&str, &str)]) -> Chrome {
        let driver = tokio::task::spawn_blocking(ChromeDriver::start)
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("starting ChromeDriver: {e}"));
        let capabilities: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&driver.capabilities_with_prefs(prefs)).unwrap();
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver.url())
            .await
            .unwrap_or_else(|e| panic!("starting a Chromium session: {e}\n{}", driver.log_tail()));
        Chrome { client, base: portal.url.clone(), shots: artifacts_dir("portal-browser"), test, driver }
    }

    /// Opens a portal path.
    async fn open(&self, path: &str) {
        self.client.goto(&format!("{}{path}", self.base)).await.unwrap();
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// Waits for an element.
    async fn wait(&self, locator: Locator<'_>) -> Element {
        let what = format!("{locator:?}");
        match self.client.wait().at_most(PAGE_TIMEOUT).for_element(locator).await {
            Ok(element) => element,
            Err(e) => {
                let url = self.client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
                let source = self.client.source().await.unwrap_or_default();
                self.screenshot(&format!("failed-{}", self.test)).await;
                panic!("{what} did not appear on {url} (screenshot: failed-{}.png): {e}\n{source}", self.test)
            }
        }
    }

    async fn css(&self, selector: &str) -> Element {
        self.wait(Locator::Css(selector)).await
    }

    /// Waits for the page whose main heading is `text`.
    async fn heading(&self, text: &str) -> Element {
        self.wait(Locator::XPath(&format!("//h1[normalize-space()={}]", xpath_literal(text)))).await
    }

    /// Waits for a flash message containing `text`; returns the whole message.
    async fn flash(&self, text: &str) -> String {
        let xpath = format!("//p[contains(@class, 'flash') and contains(., {})]", xpath_literal(text));
        self.wait(Locator::XPath(&xpath)).await.text().await.unwrap()
    }

    /// Types `value` into the field `selector` (emptied first).
    async fn fill(&self, selector: &str, value: &str) {
        let field = self.css(selector).await;
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    async fn click(&self, selector: &str) {
        self.css(selector).await.click().await.unwrap();
    }

    /// Clicks the link whose text is `text`.
    async fn click_link(&self, text: &str) {
        self.wait(Locator::LinkText(text)).await.click().await.unwrap();
    }

    /// The text of the element `selector`.
    async fn text(&self, selector: &str) -> String {
        self.css(selector).await.text().await.unwrap()
    }

    /// Saves a screenshot of the viewport as `<name>.png`.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// The browser console since the last call (ChromeDriver's log endpoint), as
    /// (level, message) pairs.
    async fn console(&self) -> Vec<(String, String)> {
        let session = self.client.session_id().await.unwrap().expect("a session");
        let answer: serde_json::Value = reqwest::Client::new()
            .post(format!("{}/session/{session}/se/log", self.driver.url()))
            .json(&serde_json::json!({"type": "browser"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let entries = answer["value"].as_array().unwrap_or_else(|| panic!("no console log: {answer}"));
        entries
            .iter()
            .map(|e| (e["level"].as_str().unwrap_or("").to_owned(), e["message"].as_str().unwrap_or("").to_owned()))
            .collect()
    }

    async fn close(self) {
        self.client.close().await.unwrap();
    }
}

/// `text` as an XPath string literal (the texts used here have no double quotes).
fn xpath_literal(text: &str) -> String {
    assert!(!text.contains('"'), "{text}");
    format!("\"{text}\"")
}

/// Console errors other than the missing favicon (the portal serves none).
fn console_errors(entries: &[(String, String)]) -> Vec<String> {
    entries
        .iter()
        .filter(|(level, message)| level == "SEVERE" && !message.contains("favicon.ico"))
        .map(|(_, message)| message.clone())
        .collect()
}

#[tokio::test]
async fn full_journey_in_chromium() {
    let (portal, gateway, published) = portal_and_gateway().await;
    let chrome = Chrome::start("full-journey", &portal, &[]).await;
    let email = "ann@example.com";

    // Home, then sign up.
    chrome.open("/").await;
    chrome.heading("Build with our APIs").await;
    chrome.click(".hero a[href='/sign-up']").await;
    chrome.heading("Create an account").await;
    chrome.screenshot("01-sign-up").await;
    chrome.fill("#email", email).await;
    chrome.fill("#name", "Ann Example").await;
    chrome.fill("#password", PASSWORD).await;
    chrome.click("form[action='/sign-up'] button[type='submit']").await;
    chrome.heading("Check your inbox").await;

    // The mail, read in the development outbox; its link opens the confirmation page.
    portal.mail(email, "Confirm your email address").await;
    chrome.open("/outbox").await;
    chrome.heading("Development outbox").await;
    chrome.click_link("Confirm your email address").await;
    assert_eq!(chrome.text("#mail-subject").await, "Confirm your email address");
    assert!(chrome.text(".mail-meta").await.contains(email));
    chrome.screenshot("02-outbox").await;
    chrome.click(".mail-body a[href*='/verify?token=']").await;
    chrome.heading("Confirm your email address").await;
    chrome.click("form[action='/verify'] button[type='submit']").await;
    let confirmed = chrome.flash("Your email address is confirmed").await;
    assert_eq!(confirmed, "Your email address is confirmed. Sign in to continue.");
    chrome.heading("Sign in").await;
    assert_eq!(chrome.path().await, "/sign-in");
    chrome.screenshot("03-sign-in").await;

    // Sign in: home again, with the account in the navigation.
    chrome.fill("#email", email).await;
    chrome.fill("#password", PASSWORD).await;
    chrome.click("form[action='/sign-in'] button[type='submit']").await;
    chrome.heading("Build with our APIs").await;
    let nav = chrome.text(".site-nav").await;
    assert!(nav.contains("Account") && nav.contains("Sign out") && !nav.contains("Sign in"), "{nav}");

    // The catalogue, the API's page and its interactive reference.
    chrome.click_link("Catalog").await;
    chrome.heading("API catalog").await;
    let card = chrome.text(".api-card").await;
    // Badges are upper-cased by the style sheet; WebDriver reads the text as rendered.
    assert!(card.contains("Weather") && card.contains("Latest: v1 PUBLISHED"), "{card}");
    assert!(card.contains("Hourly forecasts for any city"), "{card}");
    chrome.screenshot("04-catalog").await;
    chrome.click(".api-card h2 a").await;
    chrome.heading("Weather").await;
    let version = chrome.text("#version-v1").await;
    assert!(version.to_lowercase().contains("v1 published") && version.contains("/weather/v1"), "{version}");
    let plans = chrome.text("table.plans").await;
    assert!(plans.contains("Free") && plans.contains("Immediate"), "{plans}");
    chrome.screenshot("05-api").await;
    chrome.click_link("Reference documentation").await;
    let title = chrome.css(".swagger-ui .info .title").await.text().await.unwrap();
    assert!(title.contains("Weather forecasts"), "{title}");
    chrome.css(".swagger-ui .opblock-summary-path[data-path='/today']").await;
    chrome.screenshot("06-docs").await;

    // An application.
    chrome.click_link("Applications").await;
    chrome.heading("Your applications").await;
    assert!(chrome.text("#list-heading + p").await.contains("no applications yet"));
    chrome.fill("#name", "Weather station").await;
    chrome.fill("#description", "Forecasts on the wall").await;
    chrome.click("form[action='/apps'] button[type='submit']").await;
    assert_eq!(chrome.flash("created").await, "Application “Weather station” created.");
    chrome.heading("Weather station").await;
    let app_path = chrome.path().await;
    assert!(app_path.starts_with("/apps/"), "{app_path}");
    chrome.click(".eyebrow a[href='/apps']").await;
    chrome.heading("Your applications").await;
    let listed = chrome.text(".app-list").await;
    assert!(listed.contains("Weather station") && listed.contains("Forecasts on the wall"), "{listed}");
    chrome.screenshot("07-apps").await;
    chrome.click_link("Weather station").await;
    chrome.heading("Weather station").await;

    // Subscribed to weather v1 under the free plan: approved at once.
    chrome.css("#version_id").await.select_by_value(&published.version).await.unwrap();
    chrome.css("#plan_id").await.select_by_value(&published.free).await.unwrap();
    chrome.click("form.subscribe-form button[type='submit']").await;
    let subscribed = chrome.flash("Subscribed").await;
    assert_eq!(subscribed, "Subscribed. The application's keys can call this API now.");
    let row = chrome.text("#subscriptions tbody tr").await;
    assert!(row.contains("Weather v1") && row.contains("Free") && row.to_lowercase().contains("approved"), "{row}");
    chrome.css("#subscriptions .state-approved").await;

    // A key, shown once.
    chrome.fill("form[action$='/keys'] #name", "server").await;
    chrome.click("form[action$='/keys'] button[type='submit']").await;
    chrome.heading("Your new API key").await;
    let key = chrome.css("#new-key").await.prop("value").await.unwrap().expect("the key");
    assert!(key.starts_with("tpk_") && key.len() > 20, "{key}");
    assert!(chrome.text(".key-reveal").await.contains("It is shown only once"));
    // The copy button is shown by portal-copy.js, so the script ran under the CSP.
    assert!(chrome.css(".copy-button").await.is_displayed().await.unwrap(), "the copy button stayed hidden");
    chrome.screenshot("08-key-created").await;

    // The key works at the gateway.
    eventually(&gateway, &key, StatusCode::OK, Duration::from_secs(1)).await;

    // Back on the application: only the key's prefix is shown.
    chrome.click_link("I have saved it: back to Weather station").await;
    chrome.heading("Weather station").await;
    let shown = chrome.text(".key-table tbody tr td code").await;
    let prefix = shown.strip_suffix('…').unwrap_or_else(|| panic!("not a prefix: {shown}"));
    assert!(prefix.starts_with("tpk_") && key.starts_with(prefix) && prefix.len() < key.len(), "{shown} / {key}");
    assert!(!chrome.client.source().await.unwrap().contains(&key), "the full key is shown again");
    chrome.css(".key-table .state-active").await;
    chrome.screenshot("09-app-with-key").await;

    // Revoking: the box must be ticked first (the browser refuses the form without it).
    chrome.css(".key-actions summary").await.click().await.unwrap();
    let confirm = chrome.css("form[action$='/revoke'] input[name='confirm']").await;
    let revoke = "form[action$='/revoke'] button[type='submit']";
    // A marker on the page's window: a navigation would drop it.
    chrome.client.execute("window.turnpikeMarker = 'still here';", vec![]).await.unwrap();
    chrome.click(revoke).await;
    let refused = chrome
        .client
        .execute(
            "const box = document.querySelector(\"form[action$='/revoke'] input[name='confirm']\");
             return [window.turnpikeMarker || null, box.validity.valueMissing];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(refused, serde_json::json!(["still here", true]), "the form was sent unconfirmed");
    assert_eq!(call(&gateway, &key).await, StatusCode::OK);
    confirm.click().await.unwrap();
    chrome.click(revoke).await;
    let revoked = chrome.flash("is revoked").await;
    assert_eq!(revoked, format!("The key {prefix}… is revoked; it no longer works."));
    chrome.css(".key-table .state-revoked").await;
    chrome.screenshot("10-revoked").await;
    eventually(&gateway, &key, StatusCode::UNAUTHORIZED, Duration::from_secs(1)).await;

    let errors = console_errors(&chrome.console().await);
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    chrome.close().await;
}

#[tokio::test]
async fn docs_page_renders_swagger_ui_in_chromium() {
    let (portal, _gateway, _) = portal_and_gateway().await;
    let chrome = Chrome::start("docs", &portal, &[]).await;
    chrome.open("/apis/weather/v1/docs").await;
    chrome.heading("Weather v1 published").await;
    // Swagger UI renders the document it fetched from the portal.
    let title = chrome.css(".swagger-ui .info .title").await.text().await.unwrap();
    assert!(title.contains("Weather forecasts"), "{title}");
    let operation = chrome.css(".swagger-ui .opblock-get .opblock-summary").await.text().await.unwrap();
    assert!(operation.contains("GET") && operation.contains("/today"), "{operation}");
    assert!(operation.contains("Today's forecast"), "{operation}");
    // The server it names is the gateway's address for the version.
    let servers = chrome.text(".swagger-ui .servers").await;
    assert!(servers.contains("/weather/v1"), "{servers}");
    // Opening the operation shows its response.
    chrome.css(".swagger-ui .opblock-get .opblock-summary").await.click().await.unwrap();
    let body = chrome.css(".swagger-ui .opblock-get .responses-table").await.text().await.unwrap();
    assert!(body.contains("200") && body.contains("The forecast"), "{body}");
    chrome.screenshot("11-docs-operation").await;

    // Nothing refused by the page's Content-Security-Policy, and no other errors. A probe
    // written to the console first shows that the console is really read.
    chrome.client.execute("console.warn('turnpike console probe');", vec![]).await.unwrap();
    let console = chrome.console().await;
    assert!(console.iter().any(|(_, m)| m.contains("turnpike console probe")), "console not read: {console:#?}");
    let violations: Vec<_> = console.iter().filter(|(_, m)| m.contains("Content Security Policy")).collect();
    assert!(violations.is_empty(), "CSP violations: {violations:#?}");
    let errors = console_errors(&console);
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    chrome.close().await;
}

#[tokio::test]
async fn sign_in_and_applications_work_with_javascript_off_in_chromium() {
    let (portal, _gateway, _) = portal_and_gateway().await;
    portal.developer("bob@example.com", "Bob").await;
    let chrome = Chrome::start("javascript-off", &portal, &[JAVASCRIPT_OFF]).await;

    // JavaScript really is off: the docs page shows its <noscript> notice, and Swagger UI
    // renders nothing.
    chrome.open("/apis/weather/v1/docs").await;
    let notice = chrome.text("noscript .notice").await;
    assert!(notice.contains("needs JavaScript"), "{notice}");
    assert!(chrome.client.find_all(Locator::Css(".swagger-ui")).await.unwrap().is_empty());

    // Sent to sign in, and back to the applications afterwards.
    chrome.open("/apps").await;
    chrome.heading("Sign in").await;
    assert_eq!(chrome.path().await, "/sign-in");
    chrome.fill("#email", "bob@example.com").await;
    chrome.fill("#password", PASSWORD).await;
    chrome.click("form[action='/sign-in'] button[type='submit']").await;
    chrome.heading("Your applications").await;

    // A form error keeps what was typed, then the application is created.
    chrome.fill("#description", "Kept text").await;
    chrome.click("form[action='/apps'] button[type='submit']").await;
    chrome.css("#name-error").await;
    assert_eq!(chrome.css("#description").await.prop("value").await.unwrap().as_deref(), Some("Kept text"));
    chrome.fill("#name", "No-script app").await;
    chrome.click("form[action='/apps'] button[type='submit']").await;
    assert_eq!(chrome.flash("created").await, "Application “No-script app” created.");
    chrome.heading("No-script app").await;
    chrome.screenshot("12-no-javascript-app").await;
    chrome.close().await;
}

#[tokio::test]
async fn single_sign_on_with_a_real_openid_provider_in_chromium() {
    let (portal, provider) = portal_with_provider(Backend::Sqlite, vec![ada(true)]).await;
    let chrome = Chrome::start("single-sign-on", &portal, &[]).await;

    // A page that needs an account leads to the sign-in page, which offers the provider.
    chrome.open("/apps").await;
    chrome.heading("Sign in").await;
    chrome.screenshot("13-sign-in-with-sso").await;
    chrome.click_link("Sign in with Corp SSO").await;

    // The provider's own login page, on the provider's origin.
    chrome.css("#email").await;
    let at = chrome.client.current_url().await.unwrap();
    assert!(at.as_str().starts_with(provider.issuer()), "{at}");
    chrome.screenshot("14-provider-sign-in").await;
    chrome.fill("#email", ADA_AT_PROVIDER).await;
    chrome.fill("#password", "not her password").await;
    chrome.click("#sign-in").await;
    assert_eq!(chrome.text("#error").await, "Invalid email or password.");
    // The provider's 400 for the wrong password is the one console error expected.
    let refused = console_errors(&chrome.console().await);
    assert!(refused.iter().all(|e| e.contains("400")), "{refused:?}");
    chrome.fill("#password", ADA_PASSWORD).await;
    chrome.click("#sign-in").await;

    // Back on the portal, signed in, on the page first asked for.
    chrome.heading("Your applications").await;
    assert_eq!(chrome.path().await, "/apps");
    chrome.css("a[href='/account'][title='Signed in as ada@example.com']").await;
    chrome.screenshot("15-signed-in-by-sso").await;
    chrome.open("/account").await;
    chrome.heading("Your account").await;
    let account = turnpike_store::portal::accounts::find_by_email(portal.store.db(), "ada@example.com").await;
    let account = account.unwrap().expect("the account was created");
    assert_eq!(account.name, "Ada Lovelace");
    assert!(account.email_verified_at.is_some() && account.password_hash.is_none());
    let errors = console_errors(&chrome.console().await);
    assert!(errors.is_empty(), "{errors:?}");
    chrome.close().await;
}

#[tokio::test]
async fn try_it_in_the_docs_calls_the_gateway_with_a_key() {
    // The gateway's address is known before the portal starts (the docs name it), and the
    // portal's before the gateway starts (it answers CORS for the portal's origin).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_url = turnpike_portal::PublicUrl::from_listen(listener.local_addr().unwrap());
    let portal = TestPortal::start_with(Backend::Sqlite, |s| s.gateway_url = gateway_url).await;
    let origin: turnpike_gateway::Origin = portal.url.parse().unwrap();
    let (gateway, config) = start_gateway_on(&portal, listener, [origin]).await;
    let upstream = start_upstream().await;
    let published = publish_weather(&portal, &upstream).await;
    caught_up(&portal, &config).await;

    // A key for the weather API, made through the portal's forms.
    let mut ann = portal.signed_in("ann@example.com").await;
    let (_, key) = subscribed_key(&mut ann, "Try it", &published.version, &published.free).await;
    assert_eq!(call(&gateway, &key).await, StatusCode::OK);

    // In the browser: authorize Swagger UI with the key, then run GET /today from the page.
    let chrome = Chrome::start("try-it", &portal, &[]).await;
    chrome.open("/apis/weather/v1/docs").await;
    chrome.click(".swagger-ui .auth-wrapper .authorize").await;
    chrome.fill(".swagger-ui .modal-ux input[type='text']", &key).await;
    chrome.click(".swagger-ui .modal-ux .auth-btn-wrapper .authorize").await;
    chrome.click(".swagger-ui .modal-ux .btn-done").await;
    chrome.click(".swagger-ui .opblock-get .opblock-summary").await;
    chrome.click(".swagger-ui .try-out__btn").await;
    // A header the document declares: the gateway allows it from the portal because the
    // document names it (a preflight asking for any other header is refused).
    chrome.fill(".swagger-ui tr[data-param-name='X-Units'] input", "metric").await;
    chrome.click(".swagger-ui .execute").await;
    let status = chrome.css(".swagger-ui .live-responses-table .response .response-col_status").await;
    assert_eq!(status.text().await.unwrap().trim(), "200");
    let body = chrome.text(".swagger-ui .live-responses-table .response-col_description .highlight-code").await;
    assert!(body.contains("weather"), "the upstream's answer: {body}");
    let curl = chrome.text(".swagger-ui .curl-command").await;
    assert!(curl.contains("X-Units: metric"), "the declared header was sent: {curl}");
    let shown = serde_json::to_value(&status).unwrap();
    chrome.client.execute("arguments[0].scrollIntoView({block: 'center'});", vec![shown]).await.unwrap();
    chrome.screenshot("16-try-it").await;
    // The request left the page for the gateway, which the page's CSP allows.
    let errors = console_errors(&chrome.console().await);
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    chrome.close().await;
}
