//! The control plane's vocabulary: the values an admin or developer manipulates,
//! shared by the store, the admin API, the portal and (through snapshots) the gateway.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where an API version is in its life. The legal moves between states live in
/// [`crate::lifecycle`]; nothing else may change a version's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum VersionState {
    Draft,
    Published,
    Deprecated,
    Retired,
}

impl VersionState {
    pub const ALL: [VersionState; 4] =
        [VersionState::Draft, VersionState::Published, VersionState::Deprecated, VersionState::Retired];

    pub fn as_str(self) -> &'static str {
        match self {
            VersionState::Draft => "draft",
            VersionState::Published => "published",
            VersionState::Deprecated => "deprecated",
            VersionState::Retired => "retired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Whether the gateway carries traffic for a version in this state.
    pub fn is_live(self) -> bool {
        matches!(self, VersionState::Published | VersionState::Deprecated)
    }
}

/// State of an application's subscription to an API version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionState {
    Pending,
    Approved,
    Rejected,
    Revoked,
}

impl SubscriptionState {
    pub const ALL: [SubscriptionState; 4] = [
        SubscriptionState::Pending,
        SubscriptionState::Approved,
        SubscriptionState::Rejected,
        SubscriptionState::Revoked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionState::Pending => "pending",
            SubscriptionState::Approved => "approved",
            SubscriptionState::Rejected => "rejected",
            SubscriptionState::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// How requests are spread over an upstream's targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancing {
    /// Weighted round robin (equal weights give plain round robin).
    #[default]
    RoundRobin,
    LeastConnections,
    /// Consistent hashing on `hash_on`.
    ConsistentHash,
}

/// What consistent hashing hashes on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum HashOn {
    ClientIp,
    Header(String),
}

/// One backend server of an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `http://host:port` or `https://host:port`, optionally with a path prefix; or
    /// `h2c://host:port` for HTTP/2 over cleartext with prior knowledge (gRPC
    /// services without TLS).
    pub url: String,
    /// Relative share of traffic, 1..=1000.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    100
}

/// Timeouts applied when proxying to an upstream, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    pub connect_ms: u64,
    /// Time allowed for one attempt, from sending the request to the response head.
    pub read_ms: u64,
    /// Time allowed for all attempts together.
    pub total_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts { connect_ms: 5_000, read_ms: 30_000, total_ms: 60_000 }
    }
}

/// Active health checking of an upstream's targets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    pub enabled: bool,
    /// Path probed with GET on each target.
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Consecutive successes that bring an ejected target back.
    pub healthy_threshold: u32,
    /// Consecutive failures that eject a target.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            enabled: false,
            path: "/".into(),
            interval_ms: 10_000,
            timeout_ms: 2_000,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
        }
    }
}

/// Everything that defines an upstream apart from its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpstreamSpec {
    pub name: String,
    pub targets: Vec<Target>,
    #[serde(default)]
    pub algorithm: LoadBalancing,
    #[serde(default)]
    pub hash_on: Option<HashOn>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub health_check: HealthCheck,
    /// Passive health: targets that keep failing are ejected for a while.
    #[serde(default)]
    pub outlier_detection: OutlierDetection,
    /// Per-target circuit breaker.
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
    #[serde(default)]
    pub retries: Retries,
    /// How `https://` targets are verified.
    #[serde(default)]
    pub tls: UpstreamTls,
}

/// Passive outlier detection: consecutive failures (connect errors, timeouts, 5xx)
/// eject a target for a back-off period that doubles each time, up to ten times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct OutlierDetection {
    pub enabled: bool,
    pub consecutive_failures: u32,
    pub base_ejection_ms: u64,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection { enabled: true, consecutive_failures: 5, base_ejection_ms: 30_000 }
    }
}

/// A circuit breaker per target: after `failure_threshold` consecutive failures it
/// opens for `open_ms`, then lets `half_open_requests` trial requests through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreaker {
    pub enabled: bool,
    pub failure_threshold: u32,
    pub open_ms: u64,
    pub half_open_requests: u32,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker { enabled: true, failure_threshold: 10, open_ms: 10_000, half_open_requests: 1 }
    }
}

/// Retries of idempotent requests on another target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Retries {
    /// Extra attempts after the first one; 0 disables retries.
    pub attempts: u32,
    /// Retries may add at most this percentage to the upstream's request rate.
    pub budget_percent: u32,
}

impl Default for Retries {
    fn default() -> Self {
        Retries { attempts: 2, budget_percent: 20 }
    }
}

/// Verification of `https://` upstream targets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTls {
    /// Verify the target's certificate chain and name (turn off only for testing).
    pub verify: bool,
    /// PEM of extra CA certificates to trust, besides the system's.
    pub ca_pem: Option<String>,
    /// Name to present (SNI) and verify, instead of the target's host.
    pub server_name: Option<String>,
}

impl Default for UpstreamTls {
    fn default() -> Self {
        UpstreamTls { verify: true, ca_pem: None, server_name: None }
    }
}

/// A route of an API version: which requests under the version's base path it takes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// Optional operation name (the OpenAPI `operationId` on import).
    #[serde(default)]
    pub name: Option<String>,
    /// Upper-case HTTP methods; empty means any method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Path template relative to the version's base path: `/pets`, `/pets/{id}`,
    /// or a prefix ending in `/*` (`/*` takes everything under the base path).
    pub path: String,
    /// Exact host (`api.example.com`) or wildcard (`*.example.com`).
    #[serde(default)]
    pub host: Option<String>,
    /// Headers that must be present with exactly these values.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// How clients choose among an API's versions. Every version is always served under
/// its own base path (`/pets/v1/...`); `header` and `query` add one more base path,
/// shared by the API's versions, under which a request header or query parameter
/// names the version by its label (`GET /pets/dogs` with `api-version: v2`).
///
/// Through a JSON merge patch, `{"versioning": null}` goes back to `path`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Versioning {
    /// Versions only by their own base paths.
    #[default]
    Path,
    /// Under `base_path`, the request header `name` holds the version label.
    Header(VersionSelector),
    /// Under `base_path`, the query parameter `name` holds the version label.
    Query(VersionSelector),
}

impl Versioning {
    /// The selector of `header` and `query` versioning.
    pub fn selector(&self) -> Option<&VersionSelector> {
        match self {
            Versioning::Path => None,
            Versioning::Header(s) | Versioning::Query(s) => Some(s),
        }
    }
}

/// Where a header or query parameter picks the version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct VersionSelector {
    /// Header or query parameter name, e.g. `api-version`.
    pub name: String,
    /// Path prefix under which the version is selected; must differ from every
    /// version's base path. The rest of the path is matched against the chosen
    /// version's routes as if it were under that version's own base path.
    pub base_path: String,
    /// Label of the version for requests that do not name one; without it such
    /// requests answer 404.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// A requests-per-window limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub requests: u32,
    pub per_seconds: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum QuotaPeriod {
    Hour,
    Day,
    Month,
}

/// A total number of requests per calendar period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Quota {
    pub requests: u64,
    pub period: QuotaPeriod,
}

/// Instant used for sunset dates and timestamps throughout.
pub type Timestamp = DateTime<Utc>;
