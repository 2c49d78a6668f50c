//! The portal's settings, chosen by the operator (`portal.*` options of the binary).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::str::FromStr;

use serde::Deserialize;

use crate::mail::{Sender, SmtpUrl};
use crate::oidc::OidcProviderSettings;

/// Where people reach the portal: `scheme://host[:port]`, used for links in mail and
/// to decide whether the session cookie is `Secure` (when it is `https`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PublicUrl(String);

impl PublicUrl {
    /// `http://` the listen address, with `127.0.0.1` standing in for an unspecified IP:
    /// right for a portal used on the machine it runs on.
    pub fn from_listen(addr: SocketAddr) -> PublicUrl {
        let ip = if addr.ip().is_unspecified() { IpAddr::V4(Ipv4Addr::LOCALHOST) } else { addr.ip() };
        PublicUrl(format!("http://{}", SocketAddr::new(ip, addr.port())))
    }

    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }

    /// The absolute URL of a portal path (`/verify?token=…`).
    pub fn join(&self, path: &str) -> String {
        format!("{}{path}", self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for PublicUrl {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        const EXPECTED: &str = "expected scheme://host[:port] such as https://portal.example.com";
        let Some((scheme, rest)) = text.split_once("://") else {
            return Err(format!("not a URL; {EXPECTED}"));
        };
        if scheme != "http" && scheme != "https" {
            return Err(format!("the scheme must be http or https; {EXPECTED}"));
        }
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() {
            return Err(format!("the host is missing; {EXPECTED}"));
        }
        if authority.contains(['/', '?', '#']) {
            return Err(format!("the portal is served at the root: no path, query or fragment; {EXPECTED}"));
        }
        if authority.contains('@') || authority.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("invalid host; {EXPECTED}"));
        }
        Ok(PublicUrl(format!("{scheme}://{authority}")))
    }
}

impl TryFrom<String> for PublicUrl {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Everything the portal needs from the operator's configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub public_url: PublicUrl,
    /// Mail goes to this SMTP server; without one it is kept in the development outbox.
    pub smtp_url: Option<SmtpUrl>,
    pub smtp_from: Sender,
    /// Where API consumers reach the gateway (`https://api.example.com`): the interactive
    /// docs send their "try it" requests there.
    pub gateway_url: PublicUrl,
    /// OpenID providers people may sign in with, besides a password.
    pub oidc_providers: Vec<OidcProviderSettings>,
}

impl Settings {
    /// Development settings: links to `public_url`, mail to the outbox, the gateway on
    /// `http://127.0.0.1:8000`, no OpenID providers.
    pub fn new(public_url: PublicUrl) -> Settings {
        let gateway_url = PublicUrl::from_listen(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8000));
        Settings { public_url, smtp_url: None, smtp_from: Sender::default(), gateway_url, oidc_providers: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_urls_are_origins() {
        let url: PublicUrl = "https://portal.example.com/".parse().unwrap();
        assert_eq!(url.as_str(), "https://portal.example.com");
        assert!(url.is_https());
        assert_eq!(url.join("/verify?token=x"), "https://portal.example.com/verify?token=x");
        let url: PublicUrl = "http://127.0.0.1:8003".parse().unwrap();
        assert!(!url.is_https());
        assert_eq!(url.to_string(), "http://127.0.0.1:8003");
        for bad in [
            "",
            "portal.example.com",
            "ftp://portal.example.com",
            "https://",
            "https://portal.example.com/portal",
            "https://portal.example.com?x=1",
            "https://user@portal.example.com",
            "https://portal example.com",
        ] {
            assert!(bad.parse::<PublicUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_public_url_follows_the_listen_address() {
        assert_eq!(PublicUrl::from_listen("0.0.0.0:8003".parse().unwrap()).as_str(), "http://127.0.0.1:8003");
        assert_eq!(PublicUrl::from_listen("[::]:8003".parse().unwrap()).as_str(), "http://127.0.0.1:8003");
        assert_eq!(PublicUrl::from_listen("192.0.2.1:80".parse().unwrap()).as_str(), "http://192.0.2.1:80");
        assert_eq!(PublicUrl::from_listen("[2001:db8::1]:80".parse().unwrap()).as_str(), "http://[2001:db8::1]:80");
    }
}
