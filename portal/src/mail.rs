//! Mail the portal sends (verification, password reset, "you already have an
//! account"), and where it goes: an SMTP server through lettre when `portal.smtp_url`
//! is set, otherwise the development outbox in the database, readable at `/outbox`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use turnpike_store::Store;

use crate::PublicUrl;

/// How long one SMTP exchange may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(15);

/// One plain-text message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
#[error("mail not sent: {0}")]
pub struct MailError(String);

/// Where mail goes. Held on the portal's state so tests and deployments choose.
#[async_trait]
pub trait Mailer: Send + Sync + 'static {
    async fn send(&self, mail: &Mail) -> Result<(), MailError>;

    /// Whether mail lands in the development outbox, which the portal then shows at `/outbox`.
    fn uses_outbox(&self) -> bool {
        false
    }
}

/// Development mail: kept in the database instead of being sent.
pub struct OutboxMailer {
    store: Arc<Store>,
}

impl OutboxMailer {
    pub fn new(store: Arc<Store>) -> Self {
        OutboxMailer { store }
    }
}

#[async_trait]
impl Mailer for OutboxMailer {
    async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        turnpike_store::portal::outbox::push(self.store.db(), &mail.to, &mail.subject, &mail.body)
            .await
            .map(|_| ())
            .map_err(|e| MailError(e.to_string()))
    }

    fn uses_outbox(&self) -> bool {
        true
    }
}

/// An SMTP server's URL, as lettre reads it: `smtp://host:25` (plain, or with
/// `?tls=required` for STARTTLS), `smtps://user:password@host:465` (TLS). `Debug`
/// hides the password.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct SmtpUrl(String);

impl SmtpUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SmtpUrl {
    type Err = String;

    // Never echoes the URL: it may carry a password.
    fn from_str(url: &str) -> Result<Self, String> {
        if !(url.starts_with("smtp://") || url.starts_with("smtps://")) {
            return Err("expected smtp://host:port or smtps://user:password@host:port".into());
        }
        AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|_| "not a valid SMTP URL (smtp://host:port or smtps://user:password@host:port)".to_owned())?;
        Ok(SmtpUrl(url.to_owned()))
    }
}

impl TryFrom<String> for SmtpUrl {
    type Error = String;

    fn try_from(url: String) -> Result<Self, String> {
        url.parse()
    }
}

impl fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = match (self.0.find("://"), self.0.rfind('@')) {
            (Some(start), Some(at)) if at > start => format!("{}://***{}", &self.0[..start], &self.0[at..]),
            _ => self.0.clone(),
        };
        f.debug_tuple("SmtpUrl").field(&shown).finish()
    }
}

/// The `From` of portal mail, e.g. `Turnpike <portal@example.com>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Sender(Mailbox);

impl Default for Sender {
    fn default() -> Self {
        "Turnpike developer portal <portal@localhost>".parse().expect("a valid mailbox")
    }
}

impl FromStr for Sender {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        text.parse::<Mailbox>()
            .map(Sender)
            .map_err(|_| format!("invalid sender {text:?}; expected an address or `Name <address>`"))
    }
}

impl TryFrom<String> for Sender {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl fmt::Display for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Mail through an SMTP server.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpMailer {
    pub fn new(url: &SmtpUrl, from: &Sender) -> Result<Self, MailError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.as_str())
            .map_err(|e| MailError(e.to_string()))?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        Ok(SmtpMailer { transport, from: from.0.clone() })
    }
}

/// The message lettre sends for `mail`.
pub fn message(from: &Mailbox, mail: &Mail) -> Result<Message, MailError> {
    let to: Mailbox = mail.to.parse().map_err(|_| MailError("invalid recipient address".into()))?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(mail.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(mail.body.clone())
        .map_err(|e| MailError(e.to_string()))
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, mail: &Mail) -> Result<(), MailError> {
        let message = message(&self.from, mail)?;
        self.transport.send(message).await.map(|_| ()).map_err(|e| MailError(e.to_string()))
    }
}

// The messages. Links carry single-use tokens; nothing else secret goes into mail.

fn greeting(name: &str) -> String {
    if name.trim().is_empty() { "Hello,".to_owned() } else { format!("Hello {},", name.trim()) }
}

/// Asks a new developer to confirm their address.
pub fn verification(base: &PublicUrl, to: &str, name: &str, token: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: "Confirm your email address".to_owned(),
        body: format!(
            "{}\n\nConfirm your email address to finish creating your developer account:\n\n{}\n\n\
             The link works once, for 24 hours. If you did not sign up, ignore this message.\n",
            greeting(name),
            base.join(&format!("/verify?token={token}")),
        ),
    }
}

/// Tells someone who signed up with a registered address that they already have an
/// account, instead of creating a second one; a fresh confirmation link is included
/// while the address is unconfirmed.
pub fn already_registered(base: &PublicUrl, to: &str, name: &str, verify_token: Option<&str>) -> Mail {
    let confirm = verify_token
        .map(|token| {
            format!(
                "Your address is not confirmed yet; confirm it here (the link works once, for 24 hours):\n\n{}\n\n",
                base.join(&format!("/verify?token={token}"))
            )
        })
        .unwrap_or_default();
    Mail {
        to: to.to_owned(),
        subject: "You already have a developer account".to_owned(),
        body: format!(
            "{}\n\nSomeone (probably you) tried to sign up with this address, which already has an account, \
             so no new account was made.\n\n{confirm}Sign in: {}\nForgot your password? Choose a new one: {}\n\n\
             If this was not you, ignore this message.\n",
            greeting(name),
            base.join("/sign-in"),
            base.join("/forgot-password"),
        ),
    }
}

/// Tells the owner that a provider's account was linked to theirs, so that a link they
/// did not make does not go unnoticed.
pub fn identity_linked(base: &PublicUrl, to: &str, name: &str, provider: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: format!("{provider} sign-in was added to your account"),
        body: format!(
            "{}\n\nYour developer account can now be signed in to with {provider}.\n\n             If this was not you, choose a new password at {} and tell the portal's operator.\n",
            greeting(name),
            base.join("/forgot-password"),
        ),
    }
}

/// A link to choose a new password.
pub fn password_reset(base: &PublicUrl, to: &str, name: &str, token: &str) -> Mail {
    Mail {
        to: to.to_owned(),
        subject: "Choose a new password".to_owned(),
        body: format!(
            "{}\n\nChoose a new password for your developer account here:\n\n{}\n\n\
             The link works once, for one hour, and signs you out everywhere. \
             If you did not ask for it, ignore this message: your password stays as it is.\n",
            greeting(name),
            base.join(&format!("/reset-password?token={token}")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_are_checked_and_their_password_hidden() {
        let url: SmtpUrl = "smtps://mailer:s3cret@mail.example.com:465".parse().unwrap();
        let shown = format!("{url:?}");
        assert!(!shown.contains("s3cret") && shown.contains("mail.example.com"), "{shown}");
        assert!("smtp://127.0.0.1:2525".parse::<SmtpUrl>().is_ok());
        assert!("smtp://127.0.0.1:2525?tls=required".parse::<SmtpUrl>().is_ok());
        for bad in ["http://mail.example.com", "mail.example.com:25", ""] {
            let err = bad.parse::<SmtpUrl>().unwrap_err();
            assert!(err.starts_with("expected smtp://"), "{bad}: {err}");
        }
        assert!(SmtpMailer::new(&url, &Sender::default()).is_ok());
    }

    #[test]
    fn senders_are_mailboxes() {
        let sender: Sender = "Example APIs <apis@example.com>".parse().unwrap();
        assert_eq!(sender.to_string(), "Example APIs <apis@example.com>");
        assert!("not an address".parse::<Sender>().is_err());
        assert_eq!(Sender::default().to_string(), "Turnpike developer portal <portal@localhost>");
    }

    #[test]
    fn messages_are_plain_text_with_the_links() {
        let base: PublicUrl = "https://portal.example.com".parse().unwrap();
        let mail = verification(&base, "ada@example.com", "Ada", "tok123");
        assert!(mail.body.contains("https://portal.example.com/verify?token=tok123\n"), "{}", mail.body);
        assert!(mail.body.starts_with("Hello Ada,"));
        let reset = password_reset(&base, "ada@example.com", "", "r1");
        assert!(reset.body.contains("https://portal.example.com/reset-password?token=r1\n"));
        assert!(reset.body.starts_with("Hello,"));
        let again = already_registered(&base, "ada@example.com", "Ada", None);
        assert!(!again.body.contains("/verify"));
        assert!(again.body.contains("https://portal.example.com/forgot-password"));
        assert!(already_registered(&base, "ada@example.com", "Ada", Some("v1")).body.contains("/verify?token=v1"));

        let built = message(&Sender::default().0, &mail).unwrap();
        let text = String::from_utf8(built.formatted()).unwrap();
        assert!(text.contains("To: ada@example.com"), "{text}");
        assert!(text.contains("Subject: Confirm your email address"), "{text}");
        assert!(text.contains("Content-Type: text/plain; charset=utf-8"), "{text}");
        assert!(message(&Sender::default().0, &Mail { to: "nope".into(), ..mail }).is_err());
    }
}
