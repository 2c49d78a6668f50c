//! A real OpenID Connect provider for tests: panva's `oidc-provider` (npm), run under Node.js from
//! `tests/oidc-provider/server.mjs`, on a port the kernel picks on 127.0.0.1.
//!
//! The provider serves the authorization-code flow with PKCE (S256, required for every client),
//! `client_secret_basic` client authentication, RS256 ID tokens, the userinfo endpoint, and its own
//! plain login page (`#email`, `#password`, `#sign-in`, `#cancel`) for the given accounts. Consent is
//! never asked: `openid email profile` are granted to every client.
//!
//! Node.js and the package must be installed beforehand (`scripts/test` does both); nothing is
//! downloaded while tests run.
//!
//! ```no_run
//! use turnpike_testkit::{OidcAccount, OidcClient, OidcProvider};
//!
//! let provider = OidcProvider::start(
//!     &[OidcClient {
//!         client_id: "portal".into(),
//!         client_secret: "secret".into(),
//!         redirect_uris: vec!["http://127.0.0.1:8080/auth/callback".into()],
//!     }],
//!     &[OidcAccount {
//!         subject: "user-1".into(),
//!         email: "ada@example.com".into(),
//!         email_verified: true,
//!         name: "Ada Lovelace".into(),
//!         password: "correct horse".into(),
//!     }],
//! )
//! .unwrap();
//! assert!(provider.issuer().starts_with("http://127.0.0.1:"));
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::child::{ChildService, StopSignal};
use crate::{Error, Result, repo_root};

/// A start takes about half a second (Node.js, then an RSA key); CI machines are slower.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A client registered at the provider (response type `code`, grant type `authorization_code`,
/// authentication `client_secret_basic`, PKCE with S256 required).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcClient {
    pub client_id: String,
    pub client_secret: String,
    /// Compared exactly; `http://127.0.0.1:<port>/...` URIs are accepted.
    pub redirect_uris: Vec<String>,
}

/// An account that can sign in on the provider's login page with `email` and `password`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcAccount {
    /// The `sub` claim.
    pub subject: String,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
    pub password: String,
}

/// How the provider behaves where OpenID providers differ.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OidcOptions {
    /// `false` (the default, as the OpenID Connect spec asks when an access token is issued): the
    /// ID token carries only `sub` and the protocol claims, and `email`, `email_verified` and
    /// `name` come from the userinfo endpoint. `true`: the ID token carries them as well, as many
    /// providers do.
    pub claims_in_id_token: bool,
}

/// A running OpenID provider, stopped on drop (see [`ChildService`]).
pub struct OidcProvider {
    service: ChildService,
    issuer: String,
}

impl OidcProvider {
    /// Starts the provider with default [`OidcOptions`].
    ///
    /// Blocking (about half a second); from async tests call it in `spawn_blocking`.
    pub fn start(clients: &[OidcClient], accounts: &[OidcAccount]) -> Result<Self> {
        Self::start_with(clients, accounts, &OidcOptions::default())
    }

    /// Starts the provider. Blocking; from async tests call it in `spawn_blocking`.
    pub fn start_with(clients: &[OidcClient], accounts: &[OidcAccount], options: &OidcOptions) -> Result<Self> {
        let node = find_node()?;
        let server = server_script()?;
        let dir = tempfile::Builder::new()
            .prefix("turnpike-oidc-")
            .tempdir()
            .map_err(|source| Error::Io { context: "creating a directory for the OpenID provider".into(), source })?;
        let ready_file = dir.path().join("issuer");
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, config_json(clients, accounts, options, &ready_file))
            .map_err(|source| Error::Io { context: format!("writing {}", config_path.display()), source })?;

        let argv = [node.into_os_string(), server.into_os_string(), config_path.into_os_string()];
        let mut service = ChildService::spawn("oidc-provider", dir, &argv, StopSignal::Terminate)?;
        // The server writes the file (by rename, so never half of it) once it serves requests.
        service.wait_until_ready(READY_TIMEOUT, || {
            std::fs::read_to_string(&ready_file).is_ok_and(|issuer| !issuer.trim().is_empty())
        })?;
        let issuer = std::fs::read_to_string(&ready_file)
            .map_err(|source| Error::Io { context: format!("reading {}", ready_file.display()), source })?
            .trim()
            .to_owned();
        tracing::info!(%issuer, dir = %service.dir().display(), "OpenID provider ready");
        Ok(Self { service, issuer })
    }

    /// The issuer, `http://127.0.0.1:<port>` (no trailing slash); discovery is at
    /// `<issuer>/.well-known/openid-configuration`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The last lines of the provider's log (every request, sign-ins, errors).
    pub fn log_tail(&self) -> String {
        self.service.log_tail()
    }
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProvider").field("issuer", &self.issuer).field("dir", &self.service.dir()).finish()
    }
}

/// The provider's directory in the repository.
fn provider_dir() -> PathBuf {
    repo_root().join("tests").join("oidc-provider")
}

/// `server.mjs`, once its npm dependencies are installed.
fn server_script() -> Result<PathBuf> {
    let dir = provider_dir();
    if !dir.join("node_modules").join("oidc-provider").join("package.json").is_file() {
        return Err(Error::NotFound {
            what: format!("the npm package oidc-provider in {}", dir.join("node_modules").display()),
            hint: "run `npm ci --prefix tests/oidc-provider` in the repository (scripts/test does)".into(),
        });
    }
    Ok(dir.join("server.mjs"))
}

/// `node` on `PATH`.
fn find_node() -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join("node")).find(|node| is_file(node)).ok_or_else(|| Error::NotFound {
        what: "Node.js (`node`)".into(),
        hint: "looked on PATH; install the `nodejs` package (scripts/test does)".into(),
    })
}

fn is_file(path: &Path) -> bool {
    path.metadata().is_ok_and(|meta| meta.is_file())
}

/// The configuration file `server.mjs` reads.
fn config_json(clients: &[OidcClient], accounts: &[OidcAccount], options: &OidcOptions, ready_file: &Path) -> String {
    let clients: Vec<String> = clients
        .iter()
        .map(|client| {
            let uris: Vec<String> = client.redirect_uris.iter().map(|uri| json_string(uri)).collect();
            format!(
                r#"{{"client_id":{},"client_secret":{},"redirect_uris":[{}]}}"#,
                json_string(&client.client_id),
                json_string(&client.client_secret),
                uris.join(",")
            )
        })
        .collect();
    let accounts: Vec<String> = accounts
        .iter()
        .map(|account| {
            format!(
                r#"{{"subject":{},"email":{},"email_verified":{},"name":{},"password":{}}}"#,
                json_string(&account.subject),
                json_string(&account.email),
                account.email_verified,
                json_string(&account.name),
                json_string(&account.password)
            )
        })
        .collect();
    format!(
        r#"{{"clients":[{}],"accounts":[{}],"ready_file":{},"claims_in_id_token":{}}}"#,
        clients.join(","),
        accounts.join(","),
        json_string(&ready_file.to_string_lossy()),
        options.claims_in_id_token
    )
}

/// `text` as a JSON string literal (testkit has no JSON library; its configs are small).
pub(crate) fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(json_string("line\nnext\u{1}é"), "\"line\\nnext\\u0001é\"");
    }

    #[test]
    fn config_json_has_every_field() {
        let json = config_json(&[client()], &[account()], &OidcOptions::default(), Path::new("/tmp/x/issuer"));
        assert_eq!(
            json,
            r#"{"clients":[{"client_id":"portal","client_secret":"s3cret","redirect_uris":["http://127.0.0.1:9/cb"]}],"#
                .to_owned()
                + r#""accounts":[{"subject":"user-1","email":"ada@example.com","email_verified":true,"#
                + r#""name":"Ada \"Countess\" Lovelace","password":"pw 1&2"}],"#
                + r#""ready_file":"/tmp/x/issuer","claims_in_id_token":false}"#
        );
    }

    fn client() -> OidcClient {
        OidcClient {
            client_id: "portal".into(),
            client_secret: "s3cret".into(),
            redirect_uris: vec!["http://127.0.0.1:9/cb".into()],
        }
    }

    fn account() -> OidcAccount {
        OidcAccount {
            subject: "user-1".into(),
            email: "ada@example.com".into(),
            email_verified: true,
            name: "Ada \"Countess\" Lovelace".into(),
            password: "pw 1&2".into(),
        }
    }

    /// A response: status, headers (names lower-cased), body.
    struct Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    }

    impl Response {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
        }
    }

    /// One HTTP/1.0 request to `url` (`http://host:port/path`), enough for these tests.
    fn http(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> Response {
        let rest = url.strip_prefix("http://").expect("an http URL");
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let path = if path.is_empty() { "/" } else { path };
        let mut stream = TcpStream::connect(authority).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {authority}\r\n");
        for (name, value) in headers {
            let _ = write!(request, "{name}: {value}\r\n");
        }
        let _ = write!(request, "Content-Length: {}\r\n\r\n{body}", body.len());
        stream.write_all(request.as_bytes()).unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
        let mut lines = head.lines();
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        Response { status, headers, body: body.to_owned() }
    }

    #[test]
    fn discovery_document_names_the_issuer_and_s256() {
        let provider = OidcProvider::start(&[client()], &[account()]).unwrap();
        let issuer = provider.issuer();
        assert!(issuer.starts_with("http://127.0.0.1:") && !issuer.ends_with('/'), "{issuer}");
        let response = http("GET", &format!("{issuer}/.well-known/openid-configuration"), &[], "");
        assert_eq!(response.status, 200, "{}", provider.log_tail());
        // Node's JSON.stringify output is compact, so plain substrings are exact.
        let document = response.body;
        assert!(document.contains(&format!(r#""issuer":"{issuer}""#)), "{document}");
        assert!(document.contains(r#""code_challenge_methods_supported":["S256"]"#), "{document}");
        assert!(document.contains(r#""id_token_signing_alg_values_supported":["RS256"]"#), "{document}");
        assert!(provider.log_tail().contains("/.well-known/openid-configuration"));
    }

    /// Cookies as a browser would keep them, ignoring paths (enough for one flow).
    #[derive(Default)]
    struct Jar(Vec<(String, String)>);

    impl Jar {
        fn send(&mut self, method: &str, url: &str, extra: &[(&str, &str)], body: &str) -> Response {
            let cookie = self.0.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; ");
            let mut headers = extra.to_vec();
            if !cookie.is_empty() {
                headers.push(("Cookie", &cookie));
            }
            let response = http(method, url, &headers, body);
            for (name, value) in &response.headers {
                if name == "set-cookie" {
                    let pair = value.split(';').next().unwrap();
                    let (n, v) = pair.split_once('=').unwrap();
                    self.0.retain(|(old, _)| old != n);
                    self.0.push((n.to_owned(), v.to_owned()));
                }
            }
            response
        }
    }

    fn location(issuer: &str, response: &Response) -> String {
        let location = response.header("location").unwrap_or_else(|| panic!("no redirect: {}", response.body));
        if location.starts_with('/') { format!("{issuer}{location}") } else { location.to_owned() }
    }

    fn query_param(url: &str, name: &str) -> Option<String> {
        let query = url.split_once('?')?.1;
        query.split('&').filter_map(|pair| pair.split_once('=')).find(|(n, _)| *n == name).map(|(_, v)| v.to_owned())
    }

    fn form_encode(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    fn base64(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn base64_matches_rfc_4648() {
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    /// The whole flow a relying party and a browser walk: authorize, log in on the provider's
    /// page (after one wrong password), code back to the redirect URI, token with PKCE and basic
    /// auth, then userinfo.
    #[test]
    fn authorization_code_flow_with_pkce_signs_an_account_in() {
        let provider = OidcProvider::start(&[client()], &[account()]).unwrap();
        let issuer = provider.issuer();
        // RFC 7636, appendix B.
        let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
        let redirect_uri = "http://127.0.0.1:9/cb";
        let authorize = format!(
            "{issuer}/auth?client_id=portal&response_type=code&scope=openid%20email%20profile&redirect_uri={}\
             &state=st4te&nonce=n0nce&code_challenge={challenge}&code_challenge_method=S256",
            form_encode(redirect_uri)
        );
        let mut browser = Jar::default();

        let response = browser.send("GET", &authorize, &[], "");
        assert_eq!(response.status, 303, "{}", provider.log_tail());
        let login_page = location(issuer, &response);
        let page = browser.send("GET", &login_page, &[], "");
        assert_eq!(page.status, 200, "{}", provider.log_tail());
        for element in [r#"id="email""#, r#"id="password""#, r#"id="sign-in""#, r#"id="cancel""#] {
            assert!(page.body.contains(element), "{element} missing from {}", page.body);
        }

        let form = [("Content-Type", "application/x-www-form-urlencoded")];
        let wrong =
            browser.send("POST", &format!("{login_page}/login"), &form, "email=ada%40example.com&password=nope");
        assert_eq!(wrong.status, 400);
        assert!(wrong.body.contains("Invalid email or password"), "{}", wrong.body);

        let body = format!("email=ada%40example.com&password={}", form_encode("pw 1&2"));
        let response = browser.send("POST", &format!("{login_page}/login"), &form, &body);
        assert_eq!(response.status, 303, "{}", response.body);
        let response = browser.send("GET", &location(issuer, &response), &[], "");
        let callback = location(issuer, &response);
        assert!(callback.starts_with(&format!("{redirect_uri}?")), "{callback}");
        assert_eq!(query_param(&callback, "state").as_deref(), Some("st4te"));
        let code = query_param(&callback, "code").unwrap_or_else(|| panic!("no code in {callback}"));

        let basic = format!("Basic {}", base64(b"portal:s3cret"));
        let token_request = format!(
            "grant_type=authorization_code&code={code}&redirect_uri={}&code_verifier={verifier}",
            form_encode(redirect_uri)
        );
        let token = http(
            "POST",
            &format!("{issuer}/token"),
            &[("Authorization", &basic), ("Content-Type", "application/x-www-form-urlencoded")],
            &token_request,
        );
        assert_eq!(token.status, 200, "{}\n{}", token.body, provider.log_tail());
        assert!(token.body.contains(r#""id_token":"ey"#), "{}", token.body);
        let access_token = token.body.split(r#""access_token":""#).nth(1).unwrap().split('"').next().unwrap();

        let userinfo =
            http("GET", &format!("{issuer}/me"), &[("Authorization", &format!("Bearer {access_token}"))], "");
        assert_eq!(userinfo.status, 200, "{}", userinfo.body);
        assert_eq!(
            userinfo.body,
            r#"{"sub":"user-1","email":"ada@example.com","email_verified":true,"name":"Ada \"Countess\" Lovelace"}"#
        );
    }

    #[test]
    fn a_missing_pkce_challenge_is_refused() {
        let provider = OidcProvider::start(&[client()], &[account()]).unwrap();
        let issuer = provider.issuer();
        let response = http(
            "GET",
            &format!(
                "{issuer}/auth?client_id=portal&response_type=code&scope=openid&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&state=s"
            ),
            &[],
            "",
        );
        let callback = location(issuer, &response);
        assert_eq!(query_param(&callback, "error").as_deref(), Some("invalid_request"), "{callback}");
    }
}
