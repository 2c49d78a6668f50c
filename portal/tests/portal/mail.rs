//! Portal mail over SMTP, end to end: lettre talks to a real SMTP server (aiosmtpd, started
//! by the testkit), and the links in the mail it receives are followed with the test browser.

use std::time::Duration;

use lettre::message::Mailbox;
use reqwest::StatusCode;
use turnpike_portal::Settings;
use turnpike_portal::mail::SmtpUrl;
use turnpike_store::portal::accounts;
use turnpike_testkit::{ReceivedMail, SmtpServer};

use crate::support::{Backend, Browser, PASSWORD, Page, TestPortal, reset_works_once};

/// How long mail may take to arrive (it is sent in the background, after the answer).
const MAIL_TIMEOUT: Duration = Duration::from_secs(15);

/// The sender the portals here use, rather than the default.
const FROM: &str = "Example APIs <apis@example.com>";

/// The SMTP login of the servers that require one, with characters a URL must escape.
const SMTP_USER: &str = "mailer";
const SMTP_PASSWORD: &str = "s3cret pass/@word";
const SMTP_PASSWORD_IN_URL: &str = "s3cret%20pass%2F%40word";

fn start_server(login: Option<(&str, &str)>) -> SmtpServer {
    tokio::task::block_in_place(|| match login {
        Some((user, password)) => SmtpServer::start_with_login(user, password),
        None => SmtpServer::start(),
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A portal on SQLite that sends its mail to `smtp_url`, from [`FROM`].
async fn portal_with_smtp(smtp_url: &str) -> TestPortal {
    let smtp_url: SmtpUrl = smtp_url.parse().unwrap();
    TestPortal::start_with(Backend::Sqlite, move |s: &mut Settings| {
        s.smtp_url = Some(smtp_url);
        s.smtp_from = FROM.parse().unwrap();
    })
    .await
}

/// Waits for the first mail to `to` whose subject is `subject`.
fn received(server: &SmtpServer, to: &str, subject: &str) -> ReceivedMail {
    tokio::task::block_in_place(|| {
        server
            .wait_for(|m| m.to.iter().any(|t| t == to) && m.header("Subject").as_deref() == Some(subject), MAIL_TIMEOUT)
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The `From` header, as a mailbox (lettre quotes the display name).
fn from_header(mail: &ReceivedMail) -> Mailbox {
    let from = mail.header("From").unwrap_or_else(|| panic!("no From:\n{}", mail.data));
    from.parse().unwrap_or_else(|e| panic!("From: {from}: {e}"))
}

/// The body as text: lettre sends plain ASCII as 7bit, and quoted-printable otherwise.
fn body_text(mail: &ReceivedMail) -> String {
    let encoding = mail.header("Content-Transfer-Encoding").unwrap_or_default().to_ascii_lowercase();
    match encoding.as_str() {
        "" | "7bit" | "8bit" => mail.body().replace("\r\n", "\n"),
        "quoted-printable" => decode_quoted_printable(mail.body()),
        other => panic!("unexpected transfer encoding {other}:\n{}", mail.data),
    }
}

fn decode_quoted_printable(text: &str) -> String {
    let text = text.replace("=\r\n", "").replace("=\n", "").replace("\r\n", "\n");
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'=', Some(hex)) => {
                out.push(u8::from_str_radix(std::str::from_utf8(hex).unwrap(), 16).unwrap());
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// The path and query of the portal link in `mail` that contains `needle`, checking
/// that it points at `portal`.
fn link(portal: &TestPortal, mail: &ReceivedMail, needle: &str) -> String {
    let body = body_text(mail);
    let url = body
        .split_whitespace()
        .find(|word| word.starts_with("http") && word.contains(needle))
        .unwrap_or_else(|| panic!("no {needle} link in:\n{body}"));
    url.strip_prefix(&portal.url).unwrap_or_else(|| panic!("{url} is not on {}", portal.url)).to_owned()
}

/// Signs up through the form: the redirect, and the page it leads to.
async fn sign_up(browser: &mut Browser, email: &str, name: &str) -> (Page, Page) {
    let answer =
        browser.submit("/sign-up", "/sign-up", &[("email", email), ("name", name), ("password", PASSWORD)]).await;
    answer.assert_redirect("/sign-up/sent");
    let sent = browser.follow(&answer).await;
    assert_eq!(sent.status, StatusCode::OK);
    assert!(sent.body.contains("Check your inbox"), "{}", sent.body);
    (answer, sent)
}

/// What a person sees of a sign-up, for comparing answers between portals.
fn seen(answer: &Page, sent: &Page) -> (StatusCode, String, String, StatusCode, String) {
    (answer.status, answer.location().to_owned(), answer.body.clone(), sent.status, sent.without_csrf())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_mail_goes_over_smtp_and_its_link_confirms_the_address() {
    let server = start_server(None);
    let portal = portal_with_smtp(&server.url()).await;
    let mut browser = portal.browser();
    sign_up(&mut browser, "Ada@Example.com", "Ada Lovelace").await;

    let mail = received(&server, "ada@example.com", "Confirm your email address");
    assert_eq!(mail.from, "apis@example.com", "the envelope sender is smtp_from's address");
    assert_eq!(mail.to, ["ada@example.com"]);
    assert_eq!(from_header(&mail), FROM.parse::<Mailbox>().unwrap());
    assert_eq!(mail.header("To").as_deref(), Some("ada@example.com"));
    assert!(mail.header("Content-Type").unwrap().starts_with("text/plain"), "{}", mail.data);
    assert!(body_text(&mail).starts_with("Hello Ada Lovelace,"), "{}", mail.data);
    assert!(portal.all_mail().await.is_empty(), "nothing goes to the development outbox");
    assert_eq!(browser.get("/outbox").await.status, StatusCode::NOT_FOUND);

    // The link: the confirmation page, then its button.
    let link = link(&portal, &mail, "/verify?token=");
    let page = browser.get(&link).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let token = link.split("token=").nth(1).unwrap().to_owned();
    let confirmed = browser.post("/verify", &[("csrf", &page.csrf()), ("token", &token)]).await;
    confirmed.assert_redirect("/sign-in");
    assert!(browser.follow(&confirmed).await.body.contains("Your email address is confirmed"));
    let account = accounts::find_by_email(portal.store.db(), "ada@example.com").await.unwrap().unwrap();
    assert!(account.email_verified_at.is_some());

    browser.sign_in("ada@example.com", PASSWORD, "/account").await.assert_redirect("/account");
    let account_page = browser.get("/account").await;
    assert!(account_page.body.contains("ada@example.com"), "{}", account_page.body);
    assert_eq!(server.messages().len(), 1, "one mail in all: {:?}", server.messages());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_reset_mail_goes_over_smtp_and_its_link_works_once() {
    let server = start_server(None);
    let portal = portal_with_smtp(&server.url()).await;
    portal.developer("grace@example.com", "Grace Hopper").await;

    let mut browser = portal.browser();
    let asked = browser.submit("/forgot-password", "/forgot-password", &[("email", "grace@example.com")]).await;
    asked.assert_redirect("/forgot-password/sent");
    let mail = received(&server, "grace@example.com", "Choose a new password");
    assert_eq!(from_header(&mail), FROM.parse::<Mailbox>().unwrap());
    assert_eq!(mail.header("To").as_deref(), Some("grace@example.com"));
    assert!(portal.all_mail().await.is_empty(), "nothing goes to the development outbox");

    let link = link(&portal, &mail, "/reset-password?token=");
    reset_works_once(&mut browser, &link).await;

    assert_eq!(portal.browser().sign_in("grace@example.com", PASSWORD, "").await.status, StatusCode::BAD_REQUEST);
    portal.browser().sign_in("grace@example.com", "a brand new passphrase", "").await.assert_redirect("/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_credentials_from_the_url_are_used_and_wrong_ones_fail_quietly() {
    let server = start_server(Some((SMTP_USER, SMTP_PASSWORD)));
    let port = server.port();
    let good = portal_with_smtp(&format!("smtp://{SMTP_USER}:{SMTP_PASSWORD_IN_URL}@127.0.0.1:{port}")).await;
    let bad = portal_with_smtp(&format!("smtp://{SMTP_USER}:not-the-password@127.0.0.1:{port}")).await;

    // The right credentials: AUTH succeeds and the mail is delivered.
    let mut browser = good.browser();
    let (answer, sent) = sign_up(&mut browser, "ada@example.com", "Ada").await;
    let good_answer = seen(&answer, &sent);
    let mut pages = vec![answer, sent, browser.get("/").await, browser.get("/sign-in").await];
    let mail = received(&server, "ada@example.com", "Confirm your email address");
    assert!(body_text(&mail).contains("/verify?token="), "{}", mail.data);
    assert_eq!(server.auth_attempts().len(), 1);
    assert!(server.auth_attempts()[0].succeeded && server.auth_attempts()[0].login == SMTP_USER);

    // Wrong credentials: the same answer, AUTH fails at the server, nothing is delivered, and
    // nothing goes to the outbox instead.
    let mut browser = bad.browser();
    let (answer, sent) = sign_up(&mut browser, "ada@example.com", "Ada").await;
    assert_eq!(seen(&answer, &sent), good_answer);
    pages.extend([answer, sent, browser.get("/").await, browser.get("/sign-in").await]);
    let failed = tokio::task::block_in_place(|| server.wait_for_auth_attempt(|a| !a.succeeded, MAIL_TIMEOUT))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(failed.login, SMTP_USER);
    // The server refused the AUTH before anything else could happen on that connection.
    assert_eq!(server.messages().len(), 1, "{:?}", server.messages());
    assert!(bad.all_mail().await.is_empty() && good.all_mail().await.is_empty());
    assert!(accounts::find_by_email(bad.store.db(), "ada@example.com").await.unwrap().is_some());

    for page in &pages {
        for secret in [SMTP_PASSWORD, SMTP_PASSWORD_IN_URL, "not-the-password"] {
            assert!(!page.body.contains(secret), "the SMTP password shows in:\n{}", page.body);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_answers_the_same_when_the_smtp_server_is_down() {
    // A port nothing listens on: every connection is refused.
    let portal = portal_with_smtp(&format!("smtp://127.0.0.1:{}", turnpike_testkit::free_port())).await;
    let mut browser = portal.browser();
    let (answer, sent) = sign_up(&mut browser, "ada@example.com", "Ada").await;

    // The same answer as from a portal whose mail goes through.
    let server = start_server(None);
    let working = portal_with_smtp(&server.url()).await;
    let mut other = working.browser();
    let (working_answer, working_sent) = sign_up(&mut other, "ada@example.com", "Ada").await;
    assert_eq!(seen(&answer, &sent), seen(&working_answer, &working_sent));
    received(&server, "ada@example.com", "Confirm your email address");

    // The account exists; the mail is lost (logged), not diverted to the outbox.
    assert!(accounts::find_by_email(portal.store.db(), "ada@example.com").await.unwrap().is_some());
    assert!(portal.all_mail().await.is_empty());
    // The portal keeps answering.
    assert_eq!(browser.get("/sign-in").await.status, StatusCode::OK);
}
