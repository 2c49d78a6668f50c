//! Typed configuration for the `turnpike` binary: built-in defaults, overridden by an optional TOML
//! file (`--config`), overridden by `TURNPIKE_*` environment variables, all checked before anything
//! starts listening.
//!
//! Loading is a pure function of the file text and an [`Env`] snapshot, so tests never touch the
//! process environment. Every option is listed once in `env::OPTIONS` and documented in
//! `docs/configuration.md`; a test keeps the two in step.

mod env;
mod values;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use turnpike_domain::network::{Cidr, TargetPolicy};

pub use env::Env;
pub use values::{DatabaseUrl, ServerKey};

/// Environment variable that names the configuration file (read by the CLI, see `cli.rs`).
pub const CONFIG_FILE_ENV: &str = "TURNPIKE_CONFIG";

/// File name of the embedded SQLite database inside `data_dir`.
const SQLITE_FILE: &str = "turnpike.db";
/// File name of the generated server secret inside `data_dir`.
const SECRET_FILE: &str = "secret.key";
/// File name of the gateway's last-known-good snapshot inside `data_dir`.
const SNAPSHOT_FILE: &str = "gateway-snapshot.json";
/// Shortest server secret accepted: keyed hashes are HMAC-SHA256, whose key should be at least as
/// long as its output.
pub const MIN_SECRET_BYTES: usize = 32;

/// The whole configuration, one struct per concern.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Directory for state kept on local disk: the embedded SQLite database, the generated server
    /// secret and the gateway's last-known-good snapshot.
    #[serde(deserialize_with = "values::de_non_empty_path")]
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    pub gateway: GatewayConfig,
    pub upstreams: UpstreamsConfig,
    pub admin: AdminConfig,
    pub portal: PortalConfig,
    pub secret: SecretConfig,
    pub log: LogConfig,
}

/// The control-plane database (admin API, portal, migrations). The gateway never opens it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite:…`, `postgres://…` or `postgresql://…`. `None` means the SQLite file
    /// `<data_dir>/turnpike.db`; use [`Config::database_url`] to get the resolved URL.
    pub url: Option<DatabaseUrl>,
    /// Upper bound of the connection pool.
    #[serde(deserialize_with = "values::de_at_least_one")]
    pub max_connections: u32,
}

/// The data plane: the proxy listener and its separate status listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    /// Where API consumers' requests are accepted and proxied.
    #[serde(deserialize_with = "values::de_socket_addr")]
    pub listen: SocketAddr,
    /// Liveness, readiness, applied config version and metrics; kept off the proxy port so
    /// consumers can never reach it.
    #[serde(deserialize_with = "values::de_socket_addr")]
    pub status_listen: SocketAddr,
    /// Where HTTPS requests are accepted (TLS terminated, certificate chosen by SNI from those
    /// managed through the admin API); no TLS listener when unset.
    #[serde(deserialize_with = "values::de_opt_socket_addr")]
    pub tls_listen: Option<SocketAddr>,
    /// Where API consumers reach the gateway (`https://api.example.com`): the portal's interactive
    /// docs send requests there. `None` means `http://` the listen address; use
    /// [`GatewayConfig::public_url`] to get the resolved URL.
    pub public_url: Option<turnpike_portal::PublicUrl>,
    /// Peers (load balancers, CDNs) whose `X-Forwarded-*` and `Forwarded` headers are believed;
    /// everyone else's are replaced.
    pub trusted_proxies: Vec<turnpike_gateway::Cidr>,
    /// Largest request head (request line and headers), in bytes: 431 beyond it.
    #[serde(deserialize_with = "values::de_at_least_one")]
    pub max_header_bytes: usize,
    /// Most header fields in a request: 431 beyond it.
    #[serde(deserialize_with = "values::de_at_least_one")]
    pub max_headers: usize,
    /// Longest request target (path and query), in bytes: 414 beyond it.
    #[serde(deserialize_with = "values::de_at_least_one")]
    pub max_uri_bytes: usize,
    /// Seconds a client has to send a request head: 408 and the connection closed beyond it.
    #[serde(deserialize_with = "values::de_at_least_one")]
    pub header_read_timeout_secs: u64,
    /// Seconds a connection may sit without a request before it is closed.
    #[serde(deserialize_with = "values::de_at_least_one")]
    pub idle_timeout_secs: u64,
    /// Largest request body for API versions whose policies set none; no limit when unset.
    pub max_body_bytes: Option<std::num::NonZeroU64>,
    /// Seconds a client may leave a request body being forwarded without sending more: 408 beyond.
    #[serde(deserialize_with = "values::de_at_least_one")]
    pub body_read_timeout_secs: u64,
    /// Seconds a client may leave a response unread before the connection is closed.
    #[serde(deserialize_with = "values::de_at_least_one")]
    pub send_timeout_secs: u64,
    /// Proxy worker threads; 0 for one per CPU core.
    #[serde(deserialize_with = "values::de_workers")]
    pub workers: usize,
    /// The last-known-good snapshot file; `None` means `<data_dir>/gateway-snapshot.json`. Use
    /// [`Config::gateway_snapshot_file`] to get the resolved path.
    pub snapshot_file: Option<PathBuf>,
    /// Origins (`scheme://host[:port]`) whose pages may call every API version cross-origin,
    /// without credentials: the developer portal's interactive docs ("try it"). `None` means the
    /// portal's public URL (see [`Config::docs_origins`]); an empty list turns it off.
    pub docs_origins: Option<Vec<turnpike_gateway::Origin>>,
}

/// Which addresses upstream targets (and JWKS fetches) may connect to. Applied by the
/// admin API when an upstream is saved (literal addresses) and by the gateway when it
/// connects (every address a name resolves to), so both planes read it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamsConfig {
    /// Allow every address, private, link-local and loopback ones included: no check.
    pub allow_private_targets: bool,
    /// Allow loopback addresses (`127.0.0.0/8`, `::1`) although not public, for
    /// upstreams on the gateway's own host (the single-machine default).
    pub allow_loopback_targets: bool,
    /// Non-public blocks allowed anyway, such as the network the services live on.
    pub private_target_allowlist: Vec<Cidr>,
}

impl Default for UpstreamsConfig {
    fn default() -> Self {
        Self { allow_private_targets: false, allow_loopback_targets: true, private_target_allowlist: Vec::new() }
    }
}

impl UpstreamsConfig {
    /// The policy the store and the gateway apply.
    pub fn target_policy(&self) -> TargetPolicy {
        if self.allow_private_targets {
            return TargetPolicy::allow_all();
        }
        let mut allow_list = self.private_target_allowlist.clone();
        if self.allow_loopback_targets {
            allow_list.extend(["127.0.0.0/8", "::1/128"].map(|block| block.parse::<Cidr>().expect("a valid block")));
        }
        TargetPolicy::public_only(allow_list)
    }
}

/// The admin API and admin console.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    #[serde(deserialize_with = "values::de_socket_addr")]
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes (OpenAPI documents are the big ones).
    #[serde(deserialize_with = "values::de_at_least_one")]
    pub max_body_bytes: usize,
}

/// The developer portal.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortalConfig {
    #[serde(deserialize_with = "values::de_socket_addr")]
    pub listen: SocketAddr,
    /// Where people reach the portal (`https://portal.example.com`): the base of links in mail, and
    /// `https` makes the session cookie `Secure`. `None` means `http://` the listen address; use
    /// [`PortalConfig::public_url`] to get the resolved URL.
    pub public_url: Option<turnpike_portal::PublicUrl>,
    /// The SMTP server portal mail goes through; without one, mail is kept in the development
    /// outbox shown at `/outbox`.
    pub smtp_url: Option<turnpike_portal::mail::SmtpUrl>,
    /// The `From` of portal mail.
    pub smtp_from: turnpike_portal::mail::Sender,
    /// OpenID Connect providers people may sign in with (`[[portal.oidc]]` tables).
    pub oidc: Vec<OidcProviderConfig>,
}

/// One OpenID Connect provider of the portal. Register the redirect URI
/// `<portal.public_url>/sign-in/oidc/<id>/callback` with the provider.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// Short name used in the portal's URLs (`[a-z0-9-]`, at most 32).
    pub id: String,
    /// Shown on the button: "Sign in with <name>".
    pub name: String,
    /// The issuer URL (https; http only on a loopback host).
    pub issuer: String,
    pub client_id: String,
    /// The client secret itself; or set `client_secret_file`.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// A file holding the client secret (trailing newline ignored).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Let a first sign-in open the existing account with the provider's verified email
    /// (and link it). Off by default: the owner links the provider from their account page.
    #[serde(default)]
    pub link_existing_by_email: bool,
}

impl std::fmt::Debug for OidcProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProviderConfig")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<redacted>"))
            .field("client_secret_file", &self.client_secret_file)
            .field("link_existing_by_email", &self.link_existing_by_email)
            .finish()
    }
}

impl OidcProviderConfig {
    fn with_secret(&self, client_secret: String) -> turnpike_portal::oidc::OidcProviderSettings {
        turnpike_portal::oidc::OidcProviderSettings {
            id: self.id.clone(),
            name: self.name.clone(),
            issuer: self.issuer.clone(),
            client_id: self.client_id.clone(),
            client_secret,
            link_existing_by_email: self.link_existing_by_email,
        }
    }

    /// The provider's settings, reading the secret file if that is where the secret is.
    fn settings(&self) -> Result<turnpike_portal::oidc::OidcProviderSettings, String> {
        let secret = match (&self.client_secret, &self.client_secret_file) {
            (Some(secret), None) => secret.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read client_secret_file {}: {e}", path.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            _ => return Err("set exactly one of client_secret and client_secret_file".into()),
        };
        Ok(self.with_secret(secret))
    }

    /// Checks the provider without reading the secret file.
    fn check(&self) -> Result<(), String> {
        if self.client_secret.is_some() == self.client_secret_file.is_some() {
            return Err("set exactly one of client_secret and client_secret_file".into());
        }
        self.with_secret(self.client_secret.clone().unwrap_or_else(|| "(in the file)".into())).check()
    }
}

impl PortalConfig {
    /// The configured public URL, or `http://` the listen address.
    pub fn public_url(&self) -> turnpike_portal::PublicUrl {
        self.public_url.clone().unwrap_or_else(|| turnpike_portal::PublicUrl::from_listen(self.listen))
    }

    /// The portal's settings; `gateway_url` is where the interactive docs send requests
    /// ([`Config::portal_settings`] passes the gateway's public URL).
    /// Reads the OpenID providers' secret files.
    pub fn settings(&self, gateway_url: turnpike_portal::PublicUrl) -> Result<turnpike_portal::Settings, ConfigError> {
        let oidc_providers = self
            .oidc
            .iter()
            .enumerate()
            .map(|(i, p)| p.settings().map_err(|message| ConfigError::OidcProvider { index: i, message }))
            .collect::<Result<_, _>>()?;
        Ok(turnpike_portal::Settings {
            public_url: self.public_url(),
            smtp_url: self.smtp_url.clone(),
            smtp_from: self.smtp_from.clone(),
            gateway_url,
            oidc_providers,
        })
    }
}

/// Where the server secret comes from. It keys the hashes of API keys and admin tokens, so every
/// node of a cluster needs the same one. Set at most one of the two fields; with neither,
/// `<data_dir>/secret.key` is used. See [`Config::secret_source`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretConfig {
    /// The secret itself (hex or base64, at least 32 bytes once decoded).
    pub key: Option<ServerKey>,
    /// A file holding the secret in the same encoding.
    pub key_file: Option<PathBuf>,
}

/// Logging to stderr (stdout is kept for command output such as `config export`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter: a level (`info`) or directives (`info,turnpike_gateway=debug`).
    #[serde(deserialize_with = "values::de_log_filter")]
    pub level: String,
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./turnpike-data"),
            database: DatabaseConfig::default(),
            gateway: GatewayConfig::default(),
            upstreams: UpstreamsConfig::default(),
            admin: AdminConfig::default(),
            portal: PortalConfig::default(),
            secret: SecretConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self { url: None, max_connections: 10 }
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        let proxy = turnpike_gateway::Settings::default();
        Self {
            listen: localhost(8000),
            status_listen: localhost(8002),
            tls_listen: None,
            public_url: None,
            trusted_proxies: proxy.trusted_proxies,
            max_header_bytes: proxy.max_header_bytes,
            max_headers: proxy.max_headers,
            max_uri_bytes: proxy.max_uri_bytes,
            header_read_timeout_secs: proxy.header_read_timeout.as_secs(),
            idle_timeout_secs: proxy.idle_timeout.as_secs(),
            max_body_bytes: None,
            body_read_timeout_secs: proxy.body_read_timeout.as_secs(),
            send_timeout_secs: proxy.send_timeout.as_secs(),
            workers: 0,
            snapshot_file: None,
            docs_origins: None,
        }
    }
}

impl GatewayConfig {
    /// The configured public URL, or `http://` the listen address.
    pub fn public_url(&self) -> turnpike_portal::PublicUrl {
        self.public_url.clone().unwrap_or_else(|| turnpike_portal::PublicUrl::from_listen(self.listen))
    }

    /// The proxy listener's settings.
    pub fn proxy_settings(&self) -> turnpike_gateway::Settings {
        turnpike_gateway::Settings {
            trusted_proxies: self.trusted_proxies.clone(),
            max_header_bytes: self.max_header_bytes,
            max_headers: self.max_headers,
            max_uri_bytes: self.max_uri_bytes,
            header_read_timeout: std::time::Duration::from_secs(self.header_read_timeout_secs),
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout_secs),
            max_body_bytes: self.max_body_bytes.map(std::num::NonZeroU64::get),
            body_read_timeout: std::time::Duration::from_secs(self.body_read_timeout_secs),
            send_timeout: std::time::Duration::from_secs(self.send_timeout_secs),
            workers: if self.workers == 0 { turnpike_gateway::default_workers() } else { self.workers },
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self { listen: localhost(8001), max_body_bytes: 10 * 1024 * 1024 }
    }
}

impl Default for PortalConfig {
    fn default() -> Self {
        Self {
            listen: localhost(8003),
            public_url: None,
            smtp_url: None,
            smtp_from: turnpike_portal::mail::Sender::default(),
            oidc: Vec::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".to_owned(), format: LogFormat::Text }
    }
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A process plane, used to check only the listeners that will actually be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    Gateway,
    Admin,
    Portal,
}

/// Where the server secret is to be read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource<'a> {
    /// Given inline (`secret.key`).
    Inline(&'a ServerKey),
    /// A file to read (and, for the default path, to create on first start).
    File {
        path: PathBuf,
        /// True when no option was set and this is the `data_dir` default.
        is_default: bool,
    },
}

impl Config {
    /// Builds the configuration from the defaults, the TOML `file` (if any) and `env`, in that
    /// order of precedence. Nothing but `file` is read.
    pub fn load(file: Option<&Path>, env: &Env) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::ReadFile { path: path.to_owned(), source })?;
                Self::from_toml(path, &text)?
            }
            None => Self::default(),
        };
        env::apply(&mut config, env)?;
        Ok(config)
    }

    /// Parses a TOML document; `path` is only used in error messages.
    fn from_toml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let config: Self = serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|err| {
            let option = err.path().to_string();
            let err = err.into_inner();
            ConfigError::File {
                path: path.to_owned(),
                line: err.span().map(|span| line_of(text, span.start)),
                // The path is "." when the error is not inside any key (a syntax error).
                option: (option != ".").then_some(option),
                // Syntax errors span lines; keep the message on one.
                message: err.message().trim_end().replace('\n', "; "),
            }
        })?;
        if config.secret.key.is_some() && config.secret.key_file.is_some() {
            return Err(ConfigError::SecretConflict { origin: path.display().to_string() });
        }
        for (i, provider) in config.portal.oidc.iter().enumerate() {
            provider.check().map_err(|message| ConfigError::OidcProvider { index: i, message })?;
            if config.portal.oidc[..i].iter().any(|p| p.id == provider.id) {
                let message = format!("the id {} is used twice", provider.id);
                return Err(ConfigError::OidcProvider { index: i, message });
            }
        }
        Ok(config)
    }

    /// The database URL to connect to, resolving the embedded default
    /// `sqlite://<data_dir>/turnpike.db?mode=rwc` (`mode=rwc` creates the file if missing).
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.as_str().to_owned(),
            None => sqlite_url(&self.data_dir.join(SQLITE_FILE)),
        }
    }

    /// The docs origins the gateway allows ([`turnpike_gateway::ConfigStore::with_docs_origins`]):
    /// `gateway.docs_origins` when set; else the origin of the portal's public URL when the
    /// portal runs in this process (`portal_here`) or `portal.public_url` is set; else none (a
    /// gateway-only node does not guess where a portal is).
    pub fn docs_origins(&self, portal_here: bool) -> Vec<turnpike_gateway::Origin> {
        if let Some(origins) = &self.gateway.docs_origins {
            return origins.clone();
        }
        if !portal_here && self.portal.public_url.is_none() {
            return Vec::new();
        }
        match self.portal.public_url().as_str().parse() {
            Ok(origin) => vec![origin],
            Err(e) => {
                tracing::warn!(error = %e, "the portal's public URL is no origin; no docs origins");
                Vec::new()
            }
        }
    }

    /// The portal's settings, with the gateway's public URL for the interactive docs (reads
    /// the OpenID providers' secret files).
    pub fn portal_settings(&self) -> Result<turnpike_portal::Settings, ConfigError> {
        self.portal.settings(self.gateway.public_url())
    }

    /// The gateway's last-known-good snapshot file, resolving the `data_dir` default.
    pub fn gateway_snapshot_file(&self) -> PathBuf {
        self.gateway.snapshot_file.clone().unwrap_or_else(|| self.data_dir.join(SNAPSHOT_FILE))
    }

    /// Where to read the server secret from, resolving the `data_dir` default.
    pub fn secret_source(&self) -> SecretSource<'_> {
        match (&self.secret.key, &self.secret.key_file) {
            (Some(key), _) => SecretSource::Inline(key),
            (None, Some(path)) => SecretSource::File { path: path.clone(), is_default: false },
            (None, None) => SecretSource::File { path: self.data_dir.join(SECRET_FILE), is_default: true },
        }
    }

    /// The addresses the given planes bind, each named by its option.
    pub fn listeners(&self, planes: &[Plane]) -> Vec<(&'static str, SocketAddr)> {
        let mut listeners = Vec::new();
        for plane in planes {
            match plane {
                Plane::Gateway => {
                    listeners.push(("gateway.listen", self.gateway.listen));
                    listeners.push(("gateway.status_listen", self.gateway.status_listen));
                    if let Some(tls) = self.gateway.tls_listen {
                        listeners.push(("gateway.tls_listen", tls));
                    }
                }
                Plane::Admin => listeners.push(("admin.listen", self.admin.listen)),
                Plane::Portal => listeners.push(("portal.listen", self.portal.listen)),
            }
        }
        listeners
    }

    /// Rejects two listeners of the given planes on the same address. Only the planes that will
    /// run are checked, so a gateway-only node may reuse the admin port, for example.
    pub fn check_listeners(&self, planes: &[Plane]) -> Result<(), ConfigError> {
        let listeners = self.listeners(planes);
        for (i, &(first, a)) in listeners.iter().enumerate() {
            for &(second, b) in &listeners[i + 1..] {
                if addresses_collide(a, b) {
                    return Err(ConfigError::AddressConflict { first, second, port: a.port() });
                }
            }
        }
        Ok(())
    }
}

/// Whether binding both addresses would fail. Port 0 asks the OS for a free port, so it never
/// collides; an unspecified IP (`0.0.0.0`, `[::]`) takes the port on every interface.
fn addresses_collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Builds a sqlx SQLite URL for a file path. sqlx percent-decodes the path, and `?` / `#` would
/// otherwise start the query or fragment, so those three characters are escaped.
fn sqlite_url(path: &Path) -> String {
    let mut url = String::from("sqlite://");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            '#' => url.push_str("%23"),
            c => url.push(c),
        }
    }
    url.push_str("?mode=rwc");
    url
}

/// 1-based line number of a byte offset, for error messages.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}

impl LogConfig {
    /// Installs the global `tracing` subscriber, writing to stderr.
    pub fn install(&self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let filter = tracing_subscriber::EnvFilter::try_new(&self.level)?;
        // Colours only on a terminal, so redirected logs stay plain text.
        let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
        match self.format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().try_init(),
        }
    }
}

/// Why the configuration was rejected. Every message names the option and where its value came
/// from, so the operator knows what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Syntax errors, unknown keys and invalid values in the TOML file.
    #[error("{}", file_error(path, *line, option.as_deref(), message))]
    File {
        path: PathBuf,
        line: Option<usize>,
        /// Dotted key, when the error is about one.
        option: Option<String>,
        message: String,
    },
    #[error("{option} ({var}): {message}")]
    Env { option: &'static str, var: &'static str, message: String },
    #[error(
        "unknown environment variable {var}{}",
        suggestion.map(|s| format!(" (did you mean {s}?)")).unwrap_or_default()
    )]
    UnknownEnv { var: String, suggestion: Option<&'static str> },
    #[error("environment variable {var} is not valid UTF-8")]
    EnvNotUnicode { var: String },
    #[error("secret.key and secret.key_file are both set in {origin}; set only one")]
    SecretConflict { origin: String },
    #[error("portal.oidc[{index}]: {message}")]
    OidcProvider { index: usize, message: String },
    #[error("{first} and {second} both use port {port}; each listener needs its own address")]
    AddressConflict { first: &'static str, second: &'static str, port: u16 },
}

fn file_error(path: &Path, line: Option<usize>, option: Option<&str>, message: &str) -> String {
    let place = match line {
        Some(line) => format!("{}, line {line}", path.display()),
        None => path.display().to_string(),
    };
    match option {
        Some(option) => format!("{option} ({place}): {message}"),
        None => format!("{place}: {message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().copied().collect()
    }

    fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("turnpike.toml"), text)
    }

    /// Loads `toml` then applies `pairs`, as `Config::load` does after reading the file.
    fn load(toml: &str, pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut config = from_toml(toml)?;
        env::apply(&mut config, &env(pairs))?;
        Ok(config)
    }

    fn load_err(toml: &str, pairs: &[(&str, &str)]) -> String {
        load(toml, pairs).expect_err("configuration should be rejected").to_string()
    }

    const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn defaults_apply_without_file_or_environment() {
        let config = Config::load(None, &Env::default()).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.data_dir, Path::new("./turnpike-data"));
        assert_eq!(config.gateway.listen, "127.0.0.1:8000".parse().unwrap());
        assert_eq!(config.admin.listen, "127.0.0.1:8001".parse().unwrap());
        assert_eq!(config.gateway.status_listen, "127.0.0.1:8002".parse().unwrap());
        assert_eq!(config.portal.listen, "127.0.0.1:8003".parse().unwrap());
        assert_eq!(config.database.max_connections, 10);
        assert_eq!(config.admin.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(config.log.level, "info");
        assert_eq!(config.log.format, LogFormat::Text);
        assert_eq!(config.database_url(), "sqlite://./turnpike-data/turnpike.db?mode=rwc");
    }

    #[test]
    fn file_overrides_defaults_and_keeps_the_rest() {
        let config = from_toml(
            r#"
            data_dir = "/var/lib/turnpike"
            [gateway]
            listen = "0.0.0.0:9000"
            [log]
            format = "json"
            "#,
        )
        .unwrap();
        assert_eq!(config.data_dir, Path::new("/var/lib/turnpike"));
        assert_eq!(config.gateway.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.gateway.status_listen, localhost(8002));
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.log.level, "info");
        assert_eq!(config.database_url(), "sqlite:///var/lib/turnpike/turnpike.db?mode=rwc");
    }

    #[test]
    fn environment_overrides_file() {
        let config = load(
            "[gateway]\nlisten = \"0.0.0.0:9000\"\n[admin]\nmax_body_bytes = 5\n",
            &[
                ("TURNPIKE_GATEWAY_LISTEN", "127.0.0.1:7000"),
                ("TURNPIKE_DATA_DIR", "/srv/tp"),
                ("TURNPIKE_LOG_LEVEL", "warn,turnpike_gateway=debug"),
                ("TURNPIKE_DATABASE_MAX_CONNECTIONS", "3"),
            ],
        )
        .unwrap();
        assert_eq!(config.gateway.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(config.admin.max_body_bytes, 5, "file value kept");
        assert_eq!(config.data_dir, Path::new("/srv/tp"));
        assert_eq!(config.log.level, "warn,turnpike_gateway=debug");
        assert_eq!(config.database.max_connections, 3);
    }

    #[test]
    fn every_environment_variable_sets_its_option() {
        let config = load(
            "",
            &[
                ("TURNPIKE_DATA_DIR", "/d"),
                ("TURNPIKE_DATABASE_URL", "postgres://db/tp"),
                ("TURNPIKE_DATABASE_MAX_CONNECTIONS", "4"),
                ("TURNPIKE_GATEWAY_LISTEN", "127.0.0.1:1"),
                ("TURNPIKE_GATEWAY_STATUS_LISTEN", "127.0.0.1:2"),
                ("TURNPIKE_GATEWAY_TLS_LISTEN", "127.0.0.1:5"),
                ("TURNPIKE_GATEWAY_PUBLIC_URL", "https://api.example.com"),
                ("TURNPIKE_GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8, ::1"),
                ("TURNPIKE_GATEWAY_MAX_HEADER_BYTES", "8192"),
                ("TURNPIKE_GATEWAY_MAX_HEADERS", "50"),
                ("TURNPIKE_GATEWAY_MAX_URI_BYTES", "2048"),
                ("TURNPIKE_GATEWAY_HEADER_READ_TIMEOUT_SECS", "5"),
                ("TURNPIKE_GATEWAY_IDLE_TIMEOUT_SECS", "30"),
                ("TURNPIKE_GATEWAY_MAX_BODY_BYTES", "1048576"),
                ("TURNPIKE_GATEWAY_BODY_READ_TIMEOUT_SECS", "6"),
                ("TURNPIKE_GATEWAY_SEND_TIMEOUT_SECS", "7"),
                ("TURNPIKE_GATEWAY_SNAPSHOT_FILE", "/s/snap.json"),
                ("TURNPIKE_GATEWAY_DOCS_ORIGINS", "https://portal.example.com, http://127.0.0.1:8003"),
                ("TURNPIKE_UPSTREAMS_ALLOW_PRIVATE_TARGETS", "true"),
                ("TURNPIKE_UPSTREAMS_ALLOW_LOOPBACK_TARGETS", "false"),
                ("TURNPIKE_UPSTREAMS_PRIVATE_TARGET_ALLOWLIST", "10.20.0.0/16, fd00::/8"),
                ("TURNPIKE_ADMIN_LISTEN", "127.0.0.1:3"),
                ("TURNPIKE_ADMIN_MAX_BODY_BYTES", "1024"),
                ("TURNPIKE_PORTAL_LISTEN", "127.0.0.1:4"),
                ("TURNPIKE_PORTAL_PUBLIC_URL", "https://portal.example.com"),
                ("TURNPIKE_PORTAL_SMTP_URL", "smtps://mailer:pw@mail.example.com:465"),
                ("TURNPIKE_PORTAL_SMTP_FROM", "APIs <apis@example.com>"),
                ("TURNPIKE_SECRET_KEY_FILE", "/run/secrets/tp"),
                ("TURNPIKE_LOG_LEVEL", "debug"),
                ("TURNPIKE_LOG_FORMAT", "json"),
            ],
        )
        .unwrap();
        let expected = Config {
            data_dir: "/d".into(),
            database: DatabaseConfig { url: Some("postgres://db/tp".parse().unwrap()), max_connections: 4 },
            gateway: GatewayConfig {
                listen: localhost(1),
                status_listen: localhost(2),
                tls_listen: Some(localhost(5)),
                public_url: Some("https://api.example.com".parse().unwrap()),
                trusted_proxies: vec!["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()],
                max_header_bytes: 8192,
                max_headers: 50,
                max_uri_bytes: 2048,
                header_read_timeout_secs: 5,
                idle_timeout_secs: 30,
                max_body_bytes: std::num::NonZeroU64::new(1_048_576),
                body_read_timeout_secs: 6,
                send_timeout_secs: 7,
                workers: 0,
                snapshot_file: Some("/s/snap.json".into()),
                docs_origins: Some(vec![
                    "https://portal.example.com".parse().unwrap(),
                    "http://127.0.0.1:8003".parse().unwrap(),
                ]),
            },
            upstreams: UpstreamsConfig {
                allow_private_targets: true,
                allow_loopback_targets: false,
                private_target_allowlist: vec!["10.20.0.0/16".parse().unwrap(), "fd00::/8".parse().unwrap()],
            },
            admin: AdminConfig { listen: localhost(3), max_body_bytes: 1024 },
            portal: PortalConfig {
                listen: localhost(4),
                public_url: Some("https://portal.example.com".parse().unwrap()),
                smtp_url: Some("smtps://mailer:pw@mail.example.com:465".parse().unwrap()),
                smtp_from: "APIs <apis@example.com>".parse().unwrap(),
                oidc: vec![],
            },
            secret: SecretConfig { key: None, key_file: Some("/run/secrets/tp".into()) },
            log: LogConfig { level: "debug".into(), format: LogFormat::Json },
        };
        assert_eq!(config, expected);
        let config = load("", &[("TURNPIKE_SECRET_KEY", KEY_HEX)]).unwrap();
        assert_eq!(config.secret.key.unwrap().as_bytes()[31], 0x1f);
    }

    #[test]
    fn gateway_options_become_the_proxy_settings() {
        let cores = turnpike_gateway::default_workers();
        let defaults = turnpike_gateway::Settings { workers: cores, ..turnpike_gateway::Settings::default() };
        assert_eq!(Config::default().gateway.proxy_settings(), defaults);
        assert_eq!(load("[gateway]\nworkers = 3\n", &[]).unwrap().gateway.proxy_settings().workers, 3);
        assert_eq!(load("", &[("TURNPIKE_GATEWAY_WORKERS", "5")]).unwrap().gateway.proxy_settings().workers, 5);
        let err = load_err("[gateway]\nworkers = 5000\n", &[]);
        assert!(err.starts_with("gateway.workers (turnpike.toml, line 2): "), "{err}");
        let file = "[gateway]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\nmax_body_bytes = 5\n";
        let config = load(file, &[("TURNPIKE_GATEWAY_IDLE_TIMEOUT_SECS", "7")]).unwrap();
        let settings = config.gateway.proxy_settings();
        assert_eq!(settings.trusted_proxies, ["10.0.0.0/8".parse().unwrap(), "::1".parse().unwrap()]);
        assert_eq!(settings.max_body_bytes, Some(5));
        assert_eq!(settings.idle_timeout, std::time::Duration::from_secs(7));
        let config = load("[gateway]\nbody_read_timeout_secs = 2\nsend_timeout_secs = 3\n", &[]).unwrap();
        let settings = config.gateway.proxy_settings();
        assert_eq!(settings.body_read_timeout, std::time::Duration::from_secs(2));
        assert_eq!(settings.send_timeout, std::time::Duration::from_secs(3));
        let err = load_err("", &[("TURNPIKE_GATEWAY_SEND_TIMEOUT_SECS", "0")]);
        assert!(err.starts_with("gateway.send_timeout_secs (TURNPIKE_GATEWAY_SEND_TIMEOUT_SECS): "), "{err}");

        let err = load_err("[gateway]\ntrusted_proxies = [\"10.0.0.300/8\"]\n", &[]);
        assert!(err.starts_with("gateway.trusted_proxies[0] (turnpike.toml, line 2): "), "{err}");
        assert!(err.contains("is not an IP address or CIDR block"), "{err}");
        let err = load_err("", &[("TURNPIKE_GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8, nonsense")]);
        assert_eq!(
            err,
            "gateway.trusted_proxies (TURNPIKE_GATEWAY_TRUSTED_PROXIES): \"nonsense\" is not an IP address or CIDR block"
        );
        let err = load_err("[gateway]\nmax_body_bytes = 0\n", &[]);
        assert!(err.starts_with("gateway.max_body_bytes (turnpike.toml, line 2): "), "{err}");
        let err = load_err("", &[("TURNPIKE_GATEWAY_HEADER_READ_TIMEOUT_SECS", "0")]);
        assert!(
            err.starts_with("gateway.header_read_timeout_secs (TURNPIKE_GATEWAY_HEADER_READ_TIMEOUT_SECS): "),
            "{err}"
        );
    }

    #[test]
    fn docs_origins_default_to_the_portals_origin_and_are_checked() {
        let resolved =
            |config: &Config| -> Vec<String> { config.docs_origins(true).iter().map(|o| o.to_string()).collect() };
        assert_eq!(resolved(&Config::default()), ["http://127.0.0.1:8003"]);
        // A gateway-only node allows the portal only when told where it is.
        assert!(Config::default().docs_origins(false).is_empty());
        let config = load("[portal]\npublic_url = \"https://Portal.Example.com:443/\"\n", &[]).unwrap();
        assert_eq!(resolved(&config), ["https://portal.example.com"]);
        assert_eq!(config.docs_origins(false), config.docs_origins(true));
        let config = load("", &[("TURNPIKE_PORTAL_LISTEN", "0.0.0.0:9003")]).unwrap();
        assert_eq!(resolved(&config), ["http://127.0.0.1:9003"]);

        let file = "[gateway]\ndocs_origins = [\"https://docs.example.com\", \"http://localhost:3000\"]\n";
        assert_eq!(resolved(&load(file, &[]).unwrap()), ["https://docs.example.com", "http://localhost:3000"]);
        let env = [("TURNPIKE_GATEWAY_DOCS_ORIGINS", " https://a.example ,https://b.example:8443,")];
        assert_eq!(resolved(&load(file, &env).unwrap()), ["https://a.example", "https://b.example:8443"]);
        // An empty list turns it off: in the file, or `none` in the environment.
        assert!(resolved(&load("[gateway]\ndocs_origins = []\n", &[]).unwrap()).is_empty());
        assert!(resolved(&load(file, &[("TURNPIKE_GATEWAY_DOCS_ORIGINS", "none")]).unwrap()).is_empty());
        // An empty variable counts as unset, as for every option.
        assert_eq!(resolved(&load("", &[("TURNPIKE_GATEWAY_DOCS_ORIGINS", "")]).unwrap()), ["http://127.0.0.1:8003"]);

        for bad in ["*", "https://portal.example.com/", "https://portal.example.com/docs", "portal.example.com"] {
            let err = load_err(&format!("[gateway]\ndocs_origins = [\"https://ok.example\", \"{bad}\"]\n"), &[]);
            assert!(err.starts_with("gateway.docs_origins[1] (turnpike.toml, line 2): "), "{err}");
            assert!(err.contains("is not an origin"), "{err}");
            let err = load_err("", &[("TURNPIKE_GATEWAY_DOCS_ORIGINS", &format!("https://ok.example, {bad}"))]);
            assert!(err.starts_with("gateway.docs_origins (TURNPIKE_GATEWAY_DOCS_ORIGINS): "), "{err}");
            assert!(err.contains(&format!("{bad:?} is not an origin")), "{err}");
        }
        let err = load_err("", &[("TURNPIKE_GATEWAY_DOCS_ORIGINS", "*")]);
        assert!(err.contains("`*` is not allowed"), "{err}");
    }

    #[test]
    fn upstream_target_options_become_the_target_policy() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        // The default: public addresses and loopback (upstreams on this host), nothing else.
        let policy = Config::default().upstreams.target_policy();
        assert_eq!(policy.check(ip("93.184.216.34")), Ok(()));
        assert_eq!(policy.check(ip("127.0.0.1")), Ok(()));
        assert_eq!(policy.check(ip("::1")), Ok(()));
        for refused in ["10.0.0.1", "169.254.169.254", "192.168.1.1", "fd00::1", "0.0.0.0"] {
            assert!(policy.check(ip(refused)).is_err(), "{refused}");
        }

        let file = "[upstreams]\nallow_loopback_targets = false\nprivate_target_allowlist = [\"10.20.0.0/16\"]\n";
        let policy = load(file, &[]).unwrap().upstreams.target_policy();
        assert!(policy.check(ip("127.0.0.1")).is_err());
        assert_eq!(policy.check(ip("10.20.1.2")), Ok(()));
        assert!(policy.check(ip("10.21.1.2")).is_err());

        let config = load(file, &[("TURNPIKE_UPSTREAMS_ALLOW_PRIVATE_TARGETS", "true")]).unwrap();
        assert_eq!(config.upstreams.target_policy(), TargetPolicy::allow_all());
        let config = load("", &[("TURNPIKE_UPSTREAMS_PRIVATE_TARGET_ALLOWLIST", "192.168.0.0/16,::1")]).unwrap();
        assert_eq!(config.upstreams.private_target_allowlist.len(), 2);
        assert_eq!(config.upstreams.target_policy().check(ip("192.168.7.7")), Ok(()));

        let err = load_err("", &[("TURNPIKE_UPSTREAMS_ALLOW_PRIVATE_TARGETS", "yes")]);
        assert_eq!(
            err,
            "upstreams.allow_private_targets (TURNPIKE_UPSTREAMS_ALLOW_PRIVATE_TARGETS): \
             invalid value \"yes\"; expected true or false"
        );
        let err = load_err("[upstreams]\nallow_loopback_targets = \"no\"\n", &[]);
        assert!(err.starts_with("upstreams.allow_loopback_targets (turnpike.toml, line 2): "), "{err}");
        let err = load_err("[upstreams]\nprivate_target_allowlist = [\"10.0.0.0/40\"]\n", &[]);
        assert!(err.starts_with("upstreams.private_target_allowlist[0] (turnpike.toml, line 2): "), "{err}");
        let err = load_err("", &[("TURNPIKE_UPSTREAMS_PRIVATE_TARGET_ALLOWLIST", "10.0.0.0/8, x")]);
        assert!(err.ends_with("\"x\" is not an IP address or CIDR block"), "{err}");
    }

    #[test]
    fn turnpike_database_url_beats_database_url_which_beats_the_file() {
        let file = "[database]\nurl = \"sqlite://file.db\"\n";
        let config = load(file, &[("DATABASE_URL", "postgres://generic/db")]).unwrap();
        assert_eq!(config.database_url(), "postgres://generic/db");
        let config = load(
            file,
            &[("DATABASE_URL", "postgres://generic/db"), ("TURNPIKE_DATABASE_URL", "postgresql://specific/db")],
        )
        .unwrap();
        assert_eq!(config.database_url(), "postgresql://specific/db");
        assert_eq!(load(file, &[]).unwrap().database_url(), "sqlite://file.db");
    }

    #[test]
    fn empty_environment_values_count_as_unset() {
        let config =
            load("[gateway]\nlisten = \"0.0.0.0:9000\"\n", &[("TURNPIKE_GATEWAY_LISTEN", ""), ("DATABASE_URL", "")])
                .unwrap();
        assert_eq!(config.gateway.listen, "0.0.0.0:9000".parse().unwrap());
        assert!(config.database.url.is_none());
    }

    #[test]
    fn load_reads_the_file_then_applies_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("turnpike.toml");
        std::fs::write(&path, "[portal]\nlisten = \"127.0.0.1:9003\"\n[admin]\nlisten = \"127.0.0.1:9001\"\n").unwrap();
        let config = Config::load(Some(&path), &env(&[("TURNPIKE_ADMIN_LISTEN", "127.0.0.1:7001")])).unwrap();
        assert_eq!(config.portal.listen, localhost(9003));
        assert_eq!(config.admin.listen, localhost(7001));
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.toml");
        let err = Config::load(Some(&path), &Env::default()).unwrap_err();
        assert!(matches!(err, ConfigError::ReadFile { .. }), "{err:?}");
        assert!(err.to_string().contains("absent.toml"), "{err}");
    }

    #[test]
    fn invalid_environment_value_names_option_and_variable() {
        let err = load_err("", &[("TURNPIKE_GATEWAY_LISTEN", "abc")]);
        assert!(err.starts_with(r#"gateway.listen (TURNPIKE_GATEWAY_LISTEN): invalid socket address "abc""#), "{err}");
        let err = load_err("", &[("TURNPIKE_ADMIN_MAX_BODY_BYTES", "0")]);
        assert!(err.starts_with("admin.max_body_bytes (TURNPIKE_ADMIN_MAX_BODY_BYTES): "), "{err}");
        let err = load_err("", &[("TURNPIKE_DATABASE_MAX_CONNECTIONS", "ten")]);
        assert!(err.starts_with("database.max_connections (TURNPIKE_DATABASE_MAX_CONNECTIONS): "), "{err}");
        let err = load_err("", &[("TURNPIKE_LOG_FORMAT", "xml")]);
        assert!(err.starts_with("log.format (TURNPIKE_LOG_FORMAT): "), "{err}");
        let err = load_err("", &[("TURNPIKE_LOG_LEVEL", "info,[")]);
        assert!(err.starts_with("log.level (TURNPIKE_LOG_LEVEL): "), "{err}");
    }

    #[test]
    fn invalid_file_value_names_option_file_and_line() {
        let err = load_err("\n[gateway]\nlisten = \"abc\"\n", &[]);
        assert!(err.starts_with(r#"gateway.listen (turnpike.toml, line 3): invalid socket address "abc""#), "{err}");
        let err = load_err("[database]\nmax_connections = 0\n", &[]);
        assert!(err.starts_with("database.max_connections (turnpike.toml, line 2): "), "{err}");
        let err = load_err("[admin]\nmax_body_bytes = \"big\"\n", &[]);
        assert!(err.starts_with("admin.max_body_bytes (turnpike.toml"), "{err}");
        let err = load_err("data_dir = \"\"\n", &[]);
        assert!(err.starts_with("data_dir (turnpike.toml"), "{err}");
        let err = load_err("[log]\nformat = \"xml\"\n", &[]);
        assert!(err.starts_with("log.format (turnpike.toml"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_named() {
        let err = load_err("[gateway]\nlisen = \"127.0.0.1:1\"\n", &[]);
        assert!(err.starts_with("gateway.lisen (turnpike.toml, line 2): unknown field `lisen`"), "{err}");
        let err = load_err("[gatway]\n", &[]);
        assert!(err.starts_with("gatway (turnpike.toml, line 1): unknown field `gatway`"), "{err}");
    }

    #[test]
    fn toml_syntax_errors_name_the_file_and_line() {
        let err = load_err("[gateway]\nlisten = \n", &[]);
        assert!(err.starts_with("turnpike.toml, line 2: "), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn unknown_turnpike_variables_are_rejected_with_a_hint() {
        let err = load("", &[("TURNPIKE_GATWAY_LISTEN", "127.0.0.1:1"), ("TURNPIKE_CONFIG", "x")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown environment variable TURNPIKE_GATWAY_LISTEN \
             (did you mean TURNPIKE_GATEWAY_LISTEN?)"
        );
        let err = load_err("", &[("TURNPIKE_WHATEVER", "")]);
        assert_eq!(err, "unknown environment variable TURNPIKE_WHATEVER");
    }

    #[test]
    fn unrelated_variables_are_ignored() {
        let config = load("", &[("PATH", "/bin"), ("TURNPIKEX", "1")]).unwrap();
        assert_eq!(config, Config::default());
    }

    #[test]
    fn database_urls_with_other_schemes_are_rejected_without_echoing_them() {
        let err = load_err("", &[("DATABASE_URL", "mysql://root:hunter2@db/tp")]);
        assert!(err.starts_with(r#"database.url (DATABASE_URL): unsupported database scheme "mysql""#), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = load_err("[database]\nurl = \"/tmp/tp.db\"\n", &[]);
        assert!(err.starts_with("database.url (turnpike.toml, line 2): "), "{err}");
        for ok in ["sqlite::memory:", "sqlite://tp.db", "postgres://h/db", "postgresql://h/db"] {
            assert!(ok.parse::<DatabaseUrl>().is_ok(), "{ok}");
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = load(
            "",
            &[("TURNPIKE_DATABASE_URL", "postgres://tp:hunter2@db:5432/tp"), ("TURNPIKE_SECRET_KEY", KEY_HEX)],
        )
        .unwrap();
        let debug = format!("{config:?}");
        assert!(debug.contains("postgres://tp:***@db:5432/tp"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(!debug.contains(KEY_HEX), "{debug}");
        let env = env(&[("TURNPIKE_SECRET_KEY", KEY_HEX)]);
        assert!(!format!("{env:?}").contains(KEY_HEX));
    }

    #[test]
    fn short_secret_is_rejected_naming_the_option_without_echoing_it() {
        let err = load_err("", &[("TURNPIKE_SECRET_KEY", "deadbeef")]);
        assert!(err.starts_with("secret.key (TURNPIKE_SECRET_KEY): "), "{err}");
        assert!(!err.contains("deadbeef"), "{err}");
        let err = load_err("[secret]\nkey = \"deadbeef\"\n", &[]);
        assert!(err.starts_with("secret.key (turnpike.toml, line 2): "), "{err}");
        assert!(!err.contains("deadbeef"), "{err}");
    }

    #[test]
    fn secret_source_resolves_inline_file_and_default() {
        let config = Config::default();
        assert_eq!(
            config.secret_source(),
            SecretSource::File { path: PathBuf::from("./turnpike-data/secret.key"), is_default: true }
        );
        let file = "[secret]\nkey_file = \"/etc/tp.key\"\n";
        let config = load(file, &[]).unwrap();
        assert_eq!(
            config.secret_source(),
            SecretSource::File { path: PathBuf::from("/etc/tp.key"), is_default: false }
        );
        // A key in the environment replaces the file's key_file instead of conflicting with it.
        let config = load(file, &[("TURNPIKE_SECRET_KEY", KEY_HEX)]).unwrap();
        assert!(matches!(config.secret_source(), SecretSource::Inline(_)));
        assert_eq!(config.secret.key_file, None);
        let file = format!("[secret]\nkey = \"{KEY_HEX}\"\n");
        let config = load(&file, &[("TURNPIKE_SECRET_KEY_FILE", "/k")]).unwrap();
        assert_eq!(config.secret.key, None);
        assert_eq!(config.secret.key_file, Some(PathBuf::from("/k")));
    }

    #[test]
    fn both_secret_options_in_one_source_are_rejected() {
        let err = load_err(&format!("[secret]\nkey = \"{KEY_HEX}\"\nkey_file = \"/k\"\n"), &[]);
        assert!(err.starts_with("secret.key and secret.key_file are both set in turnpike.toml"), "{err}");
        let err = load_err("", &[("TURNPIKE_SECRET_KEY", KEY_HEX), ("TURNPIKE_SECRET_KEY_FILE", "/k")]);
        assert!(err.contains("both set in the environment"), "{err}");
    }

    #[test]
    fn planes_on_the_same_address_are_rejected() {
        let all = [Plane::Gateway, Plane::Admin, Plane::Portal];
        Config::default().check_listeners(&all).unwrap();

        let config = load("", &[("TURNPIKE_PORTAL_LISTEN", "127.0.0.1:8001")]).unwrap();
        let err = config.check_listeners(&all).unwrap_err().to_string();
        assert_eq!(
            err,
            "admin.listen and portal.listen both use port 8001; \
             each listener needs its own address"
        );
        // A node running only the gateway does not bind the others.
        config.check_listeners(&[Plane::Gateway]).unwrap();

        let config = load("", &[("TURNPIKE_GATEWAY_STATUS_LISTEN", "0.0.0.0:8000")]).unwrap();
        let err = config.check_listeners(&[Plane::Gateway]).unwrap_err();
        assert!(err.to_string().starts_with("gateway.listen and gateway.status_listen"), "{err}");
    }

    #[test]
    fn log_install_rejects_an_invalid_filter_set_after_loading() {
        let log = LogConfig { level: "info,[".to_owned(), format: LogFormat::Json };
        assert!(log.install().is_err());
    }

    #[test]
    fn address_collisions_follow_socket_rules() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(addresses_collide(a("127.0.0.1:80"), a("127.0.0.1:80")));
        assert!(addresses_collide(a("0.0.0.0:80"), a("127.0.0.1:80")));
        assert!(addresses_collide(a("127.0.0.1:80"), a("[::]:80")));
        assert!(!addresses_collide(a("127.0.0.1:80"), a("127.0.0.2:80")));
        assert!(!addresses_collide(a("127.0.0.1:80"), a("127.0.0.1:81")));
        // Tests bind every plane to port 0.
        assert!(!addresses_collide(a("127.0.0.1:0"), a("127.0.0.1:0")));
    }

    #[test]
    fn the_snapshot_file_defaults_to_the_data_dir() {
        let config = load("data_dir = \"/var/lib/tp\"\n", &[]).unwrap();
        assert_eq!(config.gateway_snapshot_file(), Path::new("/var/lib/tp/gateway-snapshot.json"));
        let config = load("[gateway]\nsnapshot_file = \"/srv/lkg.json\"\n", &[]).unwrap();
        assert_eq!(config.gateway_snapshot_file(), Path::new("/srv/lkg.json"));
    }

    #[test]
    fn sqlite_url_escapes_characters_sqlx_would_misread() {
        let config = load("", &[("TURNPIKE_DATA_DIR", "/data/50%?#x")]).unwrap();
        assert_eq!(config.database_url(), "sqlite:///data/50%25%3F%23x/turnpike.db?mode=rwc");
    }

    /// The documentation is the operator's reference: each option and variable must appear in it,
    /// and its example file must load.
    #[test]
    fn documentation_covers_every_option_and_its_example_loads() {
        let doc = include_str!("../docs/configuration.md");
        for option in env::OPTIONS {
            assert!(doc.contains(&format!("`{}`", option.key)), "{} undocumented", option.key);
            for var in option.vars {
                assert!(doc.contains(&format!("`{var}`")), "{var} undocumented");
            }
        }
        assert!(doc.contains(&format!("`{CONFIG_FILE_ENV}`")));

        let example = doc
            .split("```toml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("docs/configuration.md has a ```toml example");
        let config = from_toml(example).unwrap();
        config.check_listeners(&[Plane::Gateway, Plane::Admin, Plane::Portal]).unwrap();
    }

    #[test]
    fn portal_options_are_checked() {
        let config = load("", &[("TURNPIKE_PORTAL_LISTEN", "0.0.0.0:9003")]).unwrap();
        assert_eq!(config.portal.public_url().as_str(), "http://127.0.0.1:9003");
        assert!(config.portal_settings().unwrap().smtp_url.is_none());
        assert_eq!(config.portal_settings().unwrap().gateway_url.as_str(), "http://127.0.0.1:8000");
        let file = "[portal]\npublic_url = \"https://portal.example.com/\"\nsmtp_url = \"smtp://127.0.0.1:2525\"\n";
        let settings = load(file, &[]).unwrap().portal_settings().unwrap();
        assert_eq!(settings.public_url.as_str(), "https://portal.example.com");
        assert!(settings.public_url.is_https());
        assert_eq!(settings.smtp_url.unwrap().as_str(), "smtp://127.0.0.1:2525");
        let err = load_err("[portal]\npublic_url = \"https://portal.example.com/portal\"\n", &[]);
        assert!(err.starts_with("portal.public_url (turnpike.toml, line 2): "), "{err}");
        let err = load_err("", &[("TURNPIKE_PORTAL_SMTP_URL", "https://user:hunter2@mail.example.com")]);
        assert!(err.starts_with("portal.smtp_url (TURNPIKE_PORTAL_SMTP_URL): "), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = load_err("", &[("TURNPIKE_PORTAL_SMTP_FROM", "nobody")]);
        assert!(err.starts_with("portal.smtp_from (TURNPIKE_PORTAL_SMTP_FROM): "), "{err}");
    }

    #[test]
    fn oidc_providers_are_checked_and_secrets_read_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("oidc-secret");
        std::fs::write(&secret_file, "from-a-file\n").unwrap();
        let file = format!(
            "[[portal.oidc]]\nid = \"corp\"\nname = \"Example SSO\"\nissuer = \"https://sso.example.com\"\n\
             client_id = \"portal\"\nclient_secret = \"inline-secret\"\n\
             [[portal.oidc]]\nid = \"dev\"\nname = \"Dev\"\nissuer = \"http://127.0.0.1:9999\"\n\
             client_id = \"portal\"\nclient_secret_file = \"{}\"\n",
            secret_file.display()
        );
        let config = load(&file, &[]).unwrap();
        assert!(!format!("{config:?}").contains("inline-secret"));
        let providers = config.portal_settings().unwrap().oidc_providers;
        assert_eq!(providers.len(), 2);
        assert_eq!(providers[0].client_secret, "inline-secret");
        assert_eq!(providers[1].client_secret, "from-a-file");

        let one =
            |extra: &str| format!("[[portal.oidc]]\nid = \"corp\"\nname = \"SSO\"\nclient_id = \"portal\"\n{extra}");
        let cases = [
            (one("issuer = \"http://sso.example.com\"\nclient_secret = \"x\"\n"), "must use https"),
            (one("issuer = \"https://sso.example.com\"\n"), "exactly one of client_secret"),
            (
                one("issuer = \"https://sso.example.com\"\nclient_secret = \"x\"\nclient_secret_file = \"/f\"\n"),
                "exactly one of client_secret",
            ),
            (
                format!(
                    "{}{}",
                    one("issuer = \"https://a.example\"\nclient_secret = \"x\"\n"),
                    one("issuer = \"https://b.example\"\nclient_secret = \"y\"\n")
                ),
                "portal.oidc[1]: the id corp is used twice",
            ),
        ];
        for (file, needle) in cases {
            let err = load_err(&file, &[]);
            assert!(err.contains(needle), "{needle}: {err}");
            assert!(err.starts_with("portal.oidc["), "{err}");
        }
        // A secret file that cannot be read is an error when the portal starts.
        let missing = one("issuer = \"https://sso.example.com\"\nclient_secret_file = \"/nonexistent/secret\"\n");
        let err = load(&missing, &[]).unwrap().portal_settings().unwrap_err().to_string();
        assert!(err.starts_with("portal.oidc[0]: cannot read client_secret_file /nonexistent/secret"), "{err}");
    }
}
