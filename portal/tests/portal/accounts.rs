//! Accounts over HTTP: sign-up, verification, sign-in and out, sessions, CSRF,
//! password reset and change, enumeration-safe answers, throttling, `next`.

use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use turnpike_portal::Settings;
use turnpike_portal::mail::SmtpUrl;
use turnpike_store::entities::account_tokens;
use turnpike_store::portal::{accounts, sessions};

use crate::support::{Backend, Browser, PASSWORD, TestPortal, link_in, reset_works_once};

/// Signs up through the forms and returns the confirmation mail's link.
async fn sign_up(portal: &TestPortal, browser: &mut Browser, email: &str, name: &str) -> String {
    let page =
        browser.submit("/sign-up", "/sign-up", &[("email", email), ("name", name), ("password", PASSWORD)]).await;
    page.assert_redirect("/sign-up/sent");
    let sent = browser.follow(&page).await;
    assert!(sent.body.contains("Check your inbox"), "{}", sent.body);
    // Addresses are kept lower-cased, and mail goes to that form.
    link_in(&portal.mail(&email.to_lowercase(), "Confirm your email address").await, "/verify?token=")
}

/// Opens a confirmation link and presses its button.
async fn confirm(browser: &mut Browser, link: &str) -> crate::support::Page {
    let page = browser.get(link).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let token = link.split("token=").nth(1).unwrap().to_owned();
    browser.post("/verify", &[("csrf", &page.csrf()), ("token", &token)]).await
}

async fn journey(portal: TestPortal) {
    let mut browser = portal.browser();
    let link = sign_up(&portal, &mut browser, "Ada@Example.com", "Ada Lovelace").await;

    // Stored as argon2id with OWASP's parameters, never in clear.
    let account = accounts::find_by_email(portal.store.db(), "ada@example.com").await.unwrap().unwrap();
    assert!(account.password_hash.as_deref().unwrap().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
    assert!(account.email_verified_at.is_none());

    // Unconfirmed: refused like a wrong password.
    let refused = browser.sign_in("ada@example.com", PASSWORD, "").await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert!(refused.body.contains(turnpike_portal::SIGN_IN_REFUSED), "{}", refused.body);

    let confirmed = confirm(&mut browser, &link).await;
    confirmed.assert_redirect("/sign-in");
    let sign_in_page = browser.follow(&confirmed).await;
    assert!(sign_in_page.body.contains("Your email address is confirmed"), "{}", sign_in_page.body);
    let account = accounts::find(portal.store.db(), &account.id).await.unwrap().unwrap();
    assert!(account.email_verified_at.is_some());
    // The link works once.
    let again = browser.get(&link).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(again.body.contains("This link does not work"), "{}", again.body);

    // Sign in: a new session id, and the cookie's attributes.
    let before = browser.cookie.clone().expect("an anonymous session holds the CSRF token");
    let signed_in = browser.sign_in("ada@example.com", PASSWORD, "/account").await;
    signed_in.assert_redirect("/account");
    let set_cookie = signed_in.session_cookie().expect("the session cookie is set again").to_owned();
    let after = browser.cookie.clone().unwrap();
    assert_ne!(before, after, "the session id must change at sign-in");
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age="] {
        assert!(set_cookie.contains(attribute), "{attribute} missing: {set_cookie}");
    }
    assert!(!set_cookie.contains("Secure"), "plain-HTTP public URL: {set_cookie}");

    // The old id is gone: someone holding it is not signed in.
    let mut fixated = portal.browser();
    fixated.cookie = Some(before);
    fixated.get("/account").await.assert_redirect("/sign-in?next=/account");

    let account_page = browser.get("/account").await;
    assert_eq!(account_page.status, StatusCode::OK, "{}", account_page.body);
    assert!(account_page.body.contains("ada@example.com") && account_page.body.contains("Ada Lovelace"));
    assert!(account_page.body.contains(r#"action="/sign-out""#));

    // Sign out: the session is deleted, so the old cookie no longer signs anyone in.
    let page = browser.get("/account").await;
    let signed_out = browser.post("/sign-out", &[("csrf", &page.csrf())]).await;
    signed_out.assert_redirect("/");
    assert!(browser.follow(&signed_out).await.body.contains("You are signed out."));
    let mut replay = portal.browser();
    replay.cookie = Some(after);
    replay.get("/account").await.assert_redirect("/sign-in?next=/account");
    assert_eq!(sessions::count_for_developer(portal.store.db(), &account.id).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_verify_sign_in_and_sign_out() {
    journey(TestPortal::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_verify_sign_in_and_sign_out_on_postgres() {
    journey(TestPortal::start_with(Backend::Postgres, |_| {}).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_is_secure_when_the_portal_is_served_over_https() {
    let portal = TestPortal::start_with(Backend::Sqlite, |s: &mut Settings| {
        s.public_url = "https://portal.example.com".parse().unwrap();
    })
    .await;
    let page = portal.browser().get("/sign-in").await;
    let cookie = page.session_cookie().expect("the sign-in form opens a session");
    assert!(cookie.contains("Secure") && cookie.contains("HttpOnly"), "{cookie}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_without_the_csrf_token_are_refused_and_change_nothing() {
    let portal = TestPortal::start().await;
    let mut browser = portal.browser();
    let page = browser.get("/sign-up").await;
    let fields = [("email", "mallory@example.com"), ("name", "Mallory"), ("password", PASSWORD)];

    let missing = browser.post("/sign-up", &fields).await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    assert!(missing.body.contains("This form has expired"), "{}", missing.body);
    let mut wrong = vec![("csrf", "not-the-token")];
    wrong.extend_from_slice(&fields);
    assert_eq!(browser.post("/sign-up", &wrong).await.status, StatusCode::FORBIDDEN);
    // Another session's token does not count either.
    let other = portal.browser().get("/sign-up").await.csrf();
    let mut foreign = vec![("csrf", other.as_str())];
    foreign.extend_from_slice(&fields);
    assert_eq!(browser.post("/sign-up", &foreign).await.status, StatusCode::FORBIDDEN);

    // A sign-up with the token goes through; by the time its mail is there, a refused
    // one would have left its traces too.
    let mut good = vec![("csrf", page.csrf())];
    good.extend(fields.iter().map(|(k, v)| (*k, v.to_string())).filter(|(k, _)| *k != "email"));
    good.push(("email", "alice@example.com".to_owned()));
    let good: Vec<(&str, &str)> = good.iter().map(|(k, v)| (*k, v.as_str())).collect();
    browser.post("/sign-up", &good).await.assert_redirect("/sign-up/sent");
    portal.mail("alice@example.com", "Confirm").await;
    assert!(accounts::find_by_email(portal.store.db(), "mallory@example.com").await.unwrap().is_none());
    assert_eq!(portal.all_mail().await.len(), 1);

    // Signed in, a password change without the token changes nothing.
    let mut ada = portal.signed_in("ada@example.com").await;
    let change = [("current_password", PASSWORD), ("new_password", "a brand new passphrase")];
    let refused = ada.post("/account/password", &change).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(refused.body.contains("Sign out"), "the error page knows who is signed in: {}", refused.body);
    assert_eq!(ada.post("/sign-out", &[("csrf", "x")]).await.status, StatusCode::FORBIDDEN);
    assert_eq!(ada.get("/account").await.status, StatusCode::OK, "still signed in");
    let mut other = portal.browser();
    other.sign_in("ada@example.com", PASSWORD, "").await.assert_redirect("/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_links_work_once_and_expire() {
    let portal = TestPortal::start().await;
    let id = portal.developer("grace@example.com", "Grace Hopper").await;
    let mut owner = portal.signed_in("other@example.com").await; // an unrelated session
    let mut elsewhere = portal.browser();
    elsewhere.sign_in("grace@example.com", PASSWORD, "").await.assert_redirect("/");

    let mut browser = portal.browser();
    let asked = browser.submit("/forgot-password", "/forgot-password", &[("email", "grace@example.com")]).await;
    asked.assert_redirect("/forgot-password/sent");
    let link = link_in(&portal.mail("grace@example.com", "new password").await, "/reset-password?token=");
    let token = link.split("token=").nth(1).unwrap().to_owned();

    let form = browser.get(&link).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    // The policy applies (the email is refused as a password), and the link survives it.
    let weak = browser
        .post("/reset-password", &[("csrf", &form.csrf()), ("token", &token), ("password", "grace@example.com")])
        .await;
    assert_eq!(weak.status, StatusCode::BAD_REQUEST);
    assert!(weak.body.contains("Do not use your email address"), "{}", weak.body);
    // Then a good one, once.
    reset_works_once(&mut browser, &link).await;

    // The new password works, the old one does not, and the reset ended Grace's sessions.
    assert_eq!(portal.browser().sign_in("grace@example.com", PASSWORD, "").await.status, StatusCode::BAD_REQUEST);
    portal.browser().sign_in("grace@example.com", "a brand new passphrase", "").await.assert_redirect("/");
    elsewhere.get("/account").await.assert_redirect("/sign-in?next=/account");
    assert_eq!(owner.get("/account").await.status, StatusCode::OK, "other accounts keep their sessions");

    // Expired: pushed into the past through the store, not by waiting an hour.
    browser.submit("/forgot-password", "/forgot-password", &[("email", "grace@example.com")]).await;
    let mail = portal.mail_matching(|m| m.subject.contains("new password") && !m.body.contains(&token)).await;
    let link = link_in(&mail, "/reset-password?token=");
    let expired = account_tokens::Entity::update_many()
        .col_expr(
            account_tokens::Column::ExpiresAt,
            sea_orm::sea_query::Expr::value(chrono::Utc::now() - chrono::TimeDelta::seconds(1)),
        )
        .filter(account_tokens::Column::DeveloperId.eq(&id))
        .filter(account_tokens::Column::UsedAt.is_null())
        .exec(portal.store.db())
        .await
        .unwrap();
    assert_eq!(expired.rows_affected, 1, "the new link's token");
    let page = browser.get(&link).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("This link does not work"));
    let csrf = browser.get("/forgot-password").await.csrf();
    let token = link.split("token=").nth(1).unwrap();
    let late = browser
        .post("/reset-password", &[("csrf", &csrf), ("token", token), ("password", "yet another passphrase")])
        .await;
    assert_eq!(late.status, StatusCode::BAD_REQUEST);
    portal.browser().sign_in("grace@example.com", "a brand new passphrase", "").await.assert_redirect("/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_links_expire() {
    let portal = TestPortal::start().await;
    let mut browser = portal.browser();
    let link = sign_up(&portal, &mut browser, "late@example.com", "Late").await;
    let account = accounts::find_by_email(portal.store.db(), "late@example.com").await.unwrap().unwrap();
    account_tokens::Entity::update_many()
        .col_expr(account_tokens::Column::ExpiresAt, sea_orm::sea_query::Expr::value(chrono::Utc::now()))
        .filter(account_tokens::Column::DeveloperId.eq(&account.id))
        .exec(portal.store.db())
        .await
        .unwrap();
    assert_eq!(browser.get(&link).await.status, StatusCode::BAD_REQUEST);
    let page = browser.get("/sign-in").await;
    let token = link.split("token=").nth(1).unwrap();
    assert_eq!(
        browser.post("/verify", &[("csrf", &page.csrf()), ("token", token)]).await.status,
        StatusCode::BAD_REQUEST
    );
    let account = accounts::find(portal.store.db(), &account.id).await.unwrap().unwrap();
    assert!(account.email_verified_at.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_the_same_whether_or_not_an_email_has_an_account() {
    let portal = TestPortal::start().await;
    portal.developer("known@example.com", "Known").await;

    // Sign-up: the same redirect and page; the owner gets a mail, and no second account.
    let mut answers = Vec::new();
    for email in ["known@example.com", "fresh@example.com"] {
        let mut browser = portal.browser();
        let page = browser
            .submit("/sign-up", "/sign-up", &[("email", email), ("name", "Someone"), ("password", PASSWORD)])
            .await;
        let next = browser.follow(&page).await;
        answers.push((page.status, page.location().to_owned(), page.body.clone(), next.status, next.without_csrf()));
    }
    assert_eq!(answers[0], answers[1]);
    let told = portal.mail("known@example.com", "You already have a developer account").await;
    assert!(told.body.contains("/forgot-password") && !told.body.contains("/verify"), "{}", told.body);
    portal.mail("fresh@example.com", "Confirm your email address").await;
    let known = accounts::find_by_email(portal.store.db(), "known@example.com").await.unwrap().unwrap();
    assert_eq!(known.name, "Known", "the existing account is untouched");

    // Sign-in: unknown address, wrong password and unconfirmed address look alike.
    let mut answers = Vec::new();
    for (email, password) in
        [("nobody@example.com", PASSWORD), ("known@example.com", "the wrong password"), ("fresh@example.com", PASSWORD)]
    {
        let page = portal.browser().sign_in(email, password, "").await;
        answers.push((page.status, page.without_csrf().replace(email, "EMAIL")));
    }
    assert_eq!(answers[0].0, StatusCode::BAD_REQUEST);
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[1], answers[2]);

    // Reset: the same redirect and page; only the account's owner gets mail.
    let mut answers = Vec::new();
    for email in ["known@example.com", "nobody@example.com"] {
        let mut browser = portal.browser();
        let page = browser.submit("/forgot-password", "/forgot-password", &[("email", email)]).await;
        let next = browser.follow(&page).await;
        answers.push((page.status, page.location().to_owned(), page.body.clone(), next.status, next.without_csrf()));
    }
    assert_eq!(answers[0], answers[1]);
    portal.mail("known@example.com", "Choose a new password").await;
    assert!(portal.all_mail().await.iter().all(|m| m.to != "nobody@example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sign_ins_are_throttled_per_account_and_per_address() {
    let portal = TestPortal::start().await;
    portal.developer("target@example.com", "Target").await;
    portal.developer("bystander@example.com", "Bystander").await;
    // What a refusal looks like (the typed address aside), from an address of its own.
    let refusal = portal.browser_from("127.0.0.9").sign_in("someone@example.com", "wrong password!", "").await;
    let refusal = refusal.without_csrf().replace("someone@example.com", "EMAIL");
    let refused = |page: &crate::support::Page, email: &str| {
        page.status == StatusCode::BAD_REQUEST && page.without_csrf().replace(email, "EMAIL") == refusal
    };

    // Per account: five failures from any addresses block the account from all of them...
    assert!(refused(
        &portal.browser_from("127.0.0.8").sign_in("target@example.com", "wrong password!", "").await,
        "target@example.com"
    ));
    let mut attacker = portal.browser_from("127.0.0.2");
    for _ in 0..4 {
        assert!(refused(&attacker.sign_in("target@example.com", "wrong password!", "").await, "target@example.com"));
    }
    let mut owner = portal.browser_from("127.0.0.3");
    let blocked = owner.sign_in("target@example.com", PASSWORD, "").await;
    assert!(refused(&blocked, "target@example.com"), "the right password is refused alike: {}", blocked.body);
    // ... but not other accounts, from the attacker's address or elsewhere.
    portal.browser_from("127.0.0.3").sign_in("bystander@example.com", PASSWORD, "").await.assert_redirect("/");

    // Per address: five failures on any accounts block the address for everyone.
    let mut sprayer = portal.browser_from("127.0.0.4");
    for i in 0..5 {
        let page = sprayer.sign_in(&format!("guess{i}@example.com"), "wrong password!", "").await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
    }
    let blocked = portal.browser_from("127.0.0.4").sign_in("bystander@example.com", PASSWORD, "").await;
    assert!(refused(&blocked, "bystander@example.com"), "{}", blocked.body);
    portal.browser_from("127.0.0.5").sign_in("bystander@example.com", PASSWORD, "").await.assert_redirect("/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_ends_the_accounts_other_sessions() {
    let portal = TestPortal::start().await;
    let mut laptop = portal.signed_in("ada@example.com").await;
    let mut phone = portal.browser();
    phone.sign_in("ada@example.com", PASSWORD, "").await.assert_redirect("/");
    let mut someone_else = portal.signed_in("bob@example.com").await;

    // The current password is required, and the new one must pass the policy.
    let wrong = laptop
        .submit(
            "/account",
            "/account/password",
            &[("current_password", "not it at all"), ("new_password", "a brand new passphrase")],
        )
        .await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST);
    assert!(wrong.body.contains("That is not your current password."), "{}", wrong.body);
    assert!(!wrong.body.contains("not it at all"), "passwords are never sent back");
    let weak = laptop
        .submit("/account", "/account/password", &[("current_password", PASSWORD), ("new_password", "password1234")])
        .await;
    assert_eq!(weak.status, StatusCode::BAD_REQUEST);
    assert!(weak.body.contains("too common"), "{}", weak.body);
    assert_eq!(phone.get("/account").await.status, StatusCode::OK, "nothing changed yet");

    let before = laptop.cookie.clone();
    let changed = laptop
        .submit(
            "/account",
            "/account/password",
            &[("current_password", PASSWORD), ("new_password", "a brand new passphrase")],
        )
        .await;
    changed.assert_redirect("/account");
    assert_ne!(laptop.cookie, before, "this browser continues under a new session id");
    let page = laptop.follow(&changed).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Your password is changed"), "{}", page.body);
    phone.get("/account").await.assert_redirect("/sign-in?next=/account");
    assert_eq!(someone_else.get("/account").await.status, StatusCode::OK);
    portal.browser().sign_in("ada@example.com", "a brand new passphrase", "").await.assert_redirect("/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_only_redirects_within_the_portal() {
    let portal = TestPortal::start().await;
    portal.developer("ada@example.com", "Ada").await;
    for (next, expected) in [
        ("//evil.com", "/"),
        ("https://evil", "/"),
        ("/\\evil", "/"),
        ("/\t/evil.com", "/"),
        ("", "/"),
        ("/ok?x=1", "/ok?x=1"),
    ] {
        let page = portal.browser().sign_in("ada@example.com", PASSWORD, next).await;
        page.assert_redirect(expected);
    }
    // A page that needs an account sends visitors to sign in and back.
    let mut browser = portal.browser();
    browser.get("/account?tab=password").await.assert_redirect("/sign-in?next=/account%3Ftab%3Dpassword");
    let form = browser.get("/sign-in?next=/account%3Ftab%3Dpassword").await;
    assert!(form.body.contains(r#"name="next" value="/account?tab=password""#), "{}", form.body);
    let hostile = browser.get("/sign-in?next=//evil.com").await;
    assert!(hostile.body.contains(r#"name="next" value="/""#), "{}", hostile.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forms_keep_what_was_typed_and_say_what_is_wrong() {
    let portal = TestPortal::start().await;
    let mut browser = portal.browser();
    let page = browser
        .submit("/sign-up", "/sign-up", &[("email", "not-an-email"), ("name", "Ada <b>"), ("password", "too short!")])
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains(r#"value="not-an-email""#), "{}", page.body);
    assert!(
        page.body.contains(r#"value="Ada &#60;b&#62;""#) || page.body.contains(r#"value="Ada &lt;b&gt;""#),
        "escaped: {}",
        page.body
    );
    assert!(!page.body.contains("too short!"), "passwords are never sent back");
    assert!(page.body.contains("Enter an email address like name@example.com."));
    assert!(page.body.contains("Use at least 12 characters."));
    assert!(page.body.contains(r#"aria-invalid="true""#));
    assert!(page.body.contains(r#"aria-describedby="email-hint email-error""#), "{}", page.body);

    let page = browser
        .submit("/sign-up", "/sign-up", &[("email", "ada@example.com"), ("name", " "), ("password", PASSWORD)])
        .await;
    assert!(page.body.contains("Enter your name."), "{}", page.body);

    let mut ada = portal.signed_in("ada@example.com").await;
    let blank = ada.submit("/account", "/account/name", &[("name", "   ")]).await;
    assert_eq!(blank.status, StatusCode::BAD_REQUEST);
    assert!(blank.body.contains("Enter your name."));
    let renamed = ada.submit("/account", "/account/name", &[("name", "Ada King")]).await;
    renamed.assert_redirect("/account");
    let page = ada.follow(&renamed).await;
    assert!(page.body.contains("Your name is saved.") && page.body.contains(r#"value="Ada King""#), "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_is_shown_only_without_smtp() {
    let portal = TestPortal::start().await;
    let mut browser = portal.browser();
    let link = sign_up(&portal, &mut browser, "ada@example.com", "Ada").await;
    let home = browser.get("/").await;
    assert!(home.body.contains(r#"href="/outbox""#));
    let list = browser.get("/outbox").await;
    assert_eq!(list.status, StatusCode::OK);
    let mail = portal.mail("ada@example.com", "Confirm").await;
    assert!(list.body.contains(&format!(r#"href="/outbox/{}""#, mail.id)), "{}", list.body);
    let shown = browser.get(&format!("/outbox/{}", mail.id)).await;
    assert!(
        shown.body.contains(&format!(r#"<a href="{}{}">"#, portal.url, link.replace('&', "&#38;")))
            || shown.body.contains(&link),
        "{}",
        shown.body
    );
    assert_eq!(browser.get("/outbox/nope").await.status, StatusCode::NOT_FOUND);

    let with_smtp = TestPortal::start_with(Backend::Sqlite, |s: &mut Settings| {
        s.smtp_url = Some("smtp://127.0.0.1:9".parse::<SmtpUrl>().unwrap());
    })
    .await;
    let mut browser = with_smtp.browser();
    assert_eq!(browser.get("/outbox").await.status, StatusCode::NOT_FOUND);
    assert!(!browser.get("/").await.body.contains(r#"href="/outbox""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_security_headers_and_assets_are_served() {
    let portal = TestPortal::start().await;
    let mut browser = portal.browser();
    let home = browser.get("/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.session_cookie().is_none(), "no session for a page without a form");
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
    ] {
        assert_eq!(home.headers.get(name).and_then(|v| v.to_str().ok()), Some(value), "{name}");
    }
    let csp = home.headers.get("content-security-policy").unwrap().to_str().unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(home.body.contains(r#"<link rel="stylesheet" href="/static/portal.css">"#));

    let css = browser.get("/static/portal.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.headers.get("content-type").unwrap(), "text/css; charset=utf-8");
    assert!(css.body.contains(".site-header"));
    assert_eq!(browser.get("/static/nope.css").await.status, StatusCode::NOT_FOUND);

    let missing = browser.get("/no/such/page").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("Page not found") && missing.body.contains("<nav"), "{}", missing.body);
}
