//! Option values that need more than a plain type: validated database URLs, the server secret,
//! and the parsers shared by the TOML and environment layers so both report the same message.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, de::Error as _};

use super::{LogFormat, MIN_SECRET_BYTES};

/// A validated database URL. `Debug` hides the password so a logged config leaks nothing.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_postgres(&self) -> bool {
        !self.0.starts_with("sqlite:")
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;

    // Never echoes the URL: it may carry a password.
    fn from_str(url: &str) -> Result<Self, String> {
        const EXPECTED: &str = "expected sqlite:…, postgres://… or postgresql://…";
        if ["sqlite:", "postgres://", "postgresql://"].iter().any(|prefix| url.starts_with(prefix)) {
            return Ok(Self(url.to_owned()));
        }
        match url.split_once(':') {
            Some((scheme, _))
                if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
            {
                Err(format!("unsupported database scheme {scheme:?}; {EXPECTED}"))
            }
            _ => Err(format!("not a database URL; {EXPECTED}")),
        }
    }
}

impl TryFrom<String> for DatabaseUrl {
    type Error = String;

    fn try_from(url: String) -> Result<Self, String> {
        url.parse()
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl").field(&redact_password(&self.0)).finish()
    }
}

/// Replaces the password of `scheme://user:password@host…` with `***`.
fn redact_password(url: &str) -> String {
    let Some(authority_start) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_len].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!("{}{}:***{}", &url[..authority_start], &rest[..colon], &rest[at..]),
        None => url.to_owned(),
    }
}

/// The decoded server secret. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ServerKey(Vec<u8>);

impl ServerKey {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl FromStr for ServerKey {
    type Err = String;

    /// Accepts hex (tried first, since hex text is also valid base64) or standard base64 with or
    /// without padding; surrounding whitespace, such as a key file's final newline, is ignored.
    /// Errors never echo the text.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| "odd number of hex digits".to_owned())?
        } else {
            const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
                &base64::alphabet::STANDARD,
                base64::engine::GeneralPurposeConfig::new()
                    .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
            );
            BASE64.decode(text).map_err(|_| "the secret is neither hex nor base64".to_owned())?
        };
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the secret is {} bytes; at least {MIN_SECRET_BYTES} are needed \
                 (e.g. `openssl rand -hex 32`)",
                bytes.len()
            ));
        }
        Ok(Self(bytes))
    }
}

impl TryFrom<String> for ServerKey {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerKey(<redacted>)")
    }
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown log format {other:?}; expected text or json")),
        }
    }
}

// Parsers shared by the TOML and environment layers, so both report the same message.

pub(super) fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| format!("invalid socket address {text:?}; expected IP:PORT such as 127.0.0.1:8000"))
}

pub(super) fn parse_at_least_one<T: FromStr + PartialEq + From<u8>>(text: &str) -> Result<T, String> {
    match text.parse::<T>() {
        Ok(n) if n != T::from(0) => Ok(n),
        _ => Err(format!("invalid number {text:?}; expected a whole number of at least 1")),
    }
}

/// Most proxy workers: far more threads than any machine has cores gains nothing.
pub(super) const MAX_WORKERS: usize = 1024;

pub(super) fn parse_workers(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n <= MAX_WORKERS => Ok(n),
        _ => {
            Err(format!("invalid number {text:?}; expected a whole number from 0 (one per CPU core) to {MAX_WORKERS}"))
        }
    }
}

pub(super) fn parse_bool(text: &str) -> Result<bool, String> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("invalid value {text:?}; expected true or false")),
    }
}

/// IP addresses or CIDR blocks separated by commas (the environment's form of a list).
pub(super) fn parse_cidr_list(text: &str) -> Result<Vec<turnpike_domain::network::Cidr>, String> {
    let blocks = text.split(',').map(str::trim).filter(|b| !b.is_empty());
    blocks.map(|b| b.parse().map_err(|e: turnpike_domain::network::InvalidCidr| e.to_string())).collect()
}

pub(super) fn parse_log_filter(text: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(text)
        .map(|_| text.to_owned())
        .map_err(|err| format!("invalid log filter {text:?}: {err}"))
}

pub(super) fn de_socket_addr<'de, D: Deserializer<'de>>(de: D) -> Result<SocketAddr, D::Error> {
    parse_socket_addr(&String::deserialize(de)?).map_err(D::Error::custom)
}

pub(super) fn de_opt_socket_addr<'de, D: Deserializer<'de>>(de: D) -> Result<Option<SocketAddr>, D::Error> {
    parse_socket_addr(&String::deserialize(de)?).map(Some).map_err(D::Error::custom)
}

pub(super) fn de_at_least_one<'de, D, T>(de: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + PartialEq + From<u8>,
{
    let n = T::deserialize(de)?;
    if n == T::from(0) {
        return Err(D::Error::custom("must be at least 1"));
    }
    Ok(n)
}

pub(super) fn de_workers<'de, D: Deserializer<'de>>(de: D) -> Result<usize, D::Error> {
    let n = usize::deserialize(de)?;
    parse_workers(&n.to_string()).map_err(D::Error::custom)
}

pub(super) fn de_log_filter<'de, D: Deserializer<'de>>(de: D) -> Result<String, D::Error> {
    parse_log_filter(&String::deserialize(de)?).map_err(D::Error::custom)
}

pub(super) fn de_non_empty_path<'de, D: Deserializer<'de>>(de: D) -> Result<PathBuf, D::Error> {
    let path = PathBuf::deserialize(de)?;
    if path.as_os_str().is_empty() {
        return Err(D::Error::custom("must not be empty"));
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn database_url_accepts_sqlite_and_postgres_only() {
        for ok in ["sqlite::memory:", "sqlite://tp.db", "postgres://h/db", "postgresql://h/db"] {
            assert!(ok.parse::<DatabaseUrl>().is_ok(), "{ok}");
        }
        assert_eq!(
            "mysql://root:pw@db/x".parse::<DatabaseUrl>().unwrap_err(),
            "unsupported database scheme \"mysql\"; expected sqlite:…, postgres://… or postgresql://…"
        );
        assert!("/tmp/tp.db".parse::<DatabaseUrl>().unwrap_err().starts_with("not a database URL"));
    }

    #[test]
    fn database_url_debug_hides_the_password() {
        let url: DatabaseUrl = "postgres://tp:hunter2@db:5432/tp".parse().unwrap();
        assert_eq!(format!("{url:?}"), r#"DatabaseUrl("postgres://tp:***@db:5432/tp")"#);
        assert!(url.is_postgres());
        assert!(!"sqlite://tp.db".parse::<DatabaseUrl>().unwrap().is_postgres());
    }

    #[test]
    fn redact_password_leaves_urls_without_one_alone() {
        assert_eq!(redact_password("postgres://tp@db/tp"), "postgres://tp@db/tp");
        assert_eq!(redact_password("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(redact_password("postgres://u:p@ss@db/x?a=b@c"), "postgres://u:***@db/x?a=b@c");
    }

    #[test]
    fn server_key_accepts_hex_and_base64_of_at_least_32_bytes() {
        let key: ServerKey = format!("{KEY_HEX}\n").parse().unwrap();
        assert_eq!(key.as_bytes(), (0u8..32).collect::<Vec<_>>());
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 40]);
        assert_eq!(b64.parse::<ServerKey>().unwrap().as_bytes(), [7u8; 40]);
        assert_eq!(b64.trim_end_matches('=').parse::<ServerKey>().unwrap().as_bytes(), [7u8; 40]);
        assert!("abcd".parse::<ServerKey>().unwrap_err().contains("at least 32"));
        assert!("not a key!".parse::<ServerKey>().is_err());
        assert_eq!(format!("{key:?}"), "ServerKey(<redacted>)");
    }

    #[test]
    fn numbers_must_be_at_least_one() {
        assert_eq!(parse_at_least_one::<u32>("7"), Ok(7));
        assert!(parse_at_least_one::<u32>("0").is_err());
        assert!(parse_at_least_one::<u32>("-1").is_err());
        assert!(parse_at_least_one::<usize>("1.5").is_err());
    }
}
