//! CSRF protection: every session gets a random token (see `pages::csrf_token`), every
//! POST form carries it in a hidden `csrf` field, and [`CsrfForm`] refuses a form
//! without the session's token with a 403 page before the handler runs, so nothing
//! is changed. Together with the `SameSite=Lax` session cookie this stops other sites
//! from submitting forms in a signed-in visitor's name.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tower_sessions::Session;

use crate::pages::{CSRF_KEY, PageError};

/// A submitted form whose `csrf` field matched the session's token.
pub struct CsrfForm<T>(pub T);

#[derive(Deserialize)]
struct Token {
    #[serde(default)]
    csrf: String,
}

/// Compares two tokens without stopping at the first differing byte.
pub fn tokens_match(sent: &str, expected: &str) -> bool {
    sent.len() == expected.len()
        && !expected.is_empty()
        && sent.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for CsrfForm<T> {
    type Rejection = PageError;

    async fn from_request(request: Request, state: &S) -> Result<Self, PageError> {
        let session = request
            .extensions()
            .get::<Session>()
            .cloned()
            .ok_or_else(|| PageError::internal("the session layer is missing"))?;
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|_| PageError::bad_request("The form could not be read. Go back and try again."))?;
        let sent: Token = serde_urlencoded::from_bytes(&body).unwrap_or(Token { csrf: String::new() });
        let expected = session.get::<String>(CSRF_KEY).await.map_err(PageError::internal)?.unwrap_or_default();
        if !tokens_match(&sent.csrf, &expected) {
            return Err(PageError::csrf());
        }
        serde_urlencoded::from_bytes(&body)
            .map(CsrfForm)
            .map_err(|_| PageError::bad_request("The form was incomplete. Go back and try again."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_must_match_exactly() {
        assert!(tokens_match("abc", "abc"));
        assert!(!tokens_match("abd", "abc"));
        assert!(!tokens_match("ab", "abc"));
        assert!(!tokens_match("abcd", "abc"));
        // A session without a token accepts nothing, not even an empty field.
        assert!(!tokens_match("", ""));
    }
}
