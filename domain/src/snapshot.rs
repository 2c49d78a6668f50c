//! Configuration snapshots: the immutable, versioned, checksummed view of the
//! control plane that gateways run on. The control plane compiles one after every
//! change; a gateway applies it only if it is newer and intact.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::{Quota, RateLimit, RouteSpec, UpstreamSpec, VersionState, Versioning};
use crate::policy::Policies;

/// An upstream as the gateway sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotUpstream {
    pub id: String,
    #[serde(flatten)]
    pub spec: UpstreamSpec,
}

/// A route with its identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRoute {
    pub id: String,
    #[serde(flatten)]
    pub spec: RouteSpec,
}

/// One non-draft API version with its routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotVersion {
    pub id: String,
    pub api_id: String,
    pub api_slug: String,
    pub label: String,
    pub state: VersionState,
    /// Path prefix under which the version's routes are served, e.g. `/petstore/v1`.
    pub base_path: String,
    /// Id of the upstream in [`SnapshotContent::upstreams`]; none means the version
    /// has nowhere to send traffic and the gateway answers 503.
    pub upstream_id: Option<String>,
    pub sunset_at: Option<DateTime<Utc>>,
    /// When the version was deprecated, for the `Deprecation` header (RFC 9745).
    pub deprecated_at: Option<DateTime<Utc>>,
    /// Base path of the newest live version of the same API, for `Link: rel=successor-version`.
    pub successor_base_path: Option<String>,
    pub routes: Vec<SnapshotRoute>,
    pub policies: Policies,
    /// The version's OpenAPI document, carried only when its policies validate
    /// requests against it (so snapshots stay small otherwise); left out when absent
    /// so that other snapshots keep their checksums.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openapi: Option<serde_json::Value>,
    /// Request headers the version's OpenAPI document names (header parameters, API keys
    /// in headers; [`crate::openapi::request_header_names`]): the portal's interactive docs
    /// send them, so the gateway allows them from the docs origins. Left out when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub docs_headers: Vec<String>,
}

/// An API whose versions are also chosen by a header or query parameter under a
/// base path of their own (see [`Versioning`]); the candidates are the API's
/// versions in [`SnapshotContent::versions`], by label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSelector {
    pub api_id: String,
    pub api_slug: String,
    /// `header` or `query`; `path` is never listed.
    pub versioning: Versioning,
}

/// A plan's limits, applied to every consumer subscribed under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPlan {
    pub id: String,
    pub slug: String,
    pub rate_limit: Option<RateLimit>,
    pub quota: Option<Quota>,
}

/// A TLS certificate the gateway presents for the hosts it names (chosen by SNI).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotCertificate {
    pub id: String,
    /// Exact (`api.example.com`) or wildcard (`*.example.com`) host names.
    pub hosts: Vec<String>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for SnapshotCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotCertificate").field("id", &self.id).field("hosts", &self.hosts).finish_non_exhaustive()
    }
}

/// What the gateway needs, without version or checksum. Lists are kept sorted by id
/// so that the same state always gives the same checksum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotContent {
    pub versions: Vec<SnapshotVersion>,
    pub upstreams: Vec<SnapshotUpstream>,
    #[serde(default)]
    pub plans: Vec<SnapshotPlan>,
    #[serde(default)]
    pub certificates: Vec<SnapshotCertificate>,
    /// Left out when empty, so that snapshots without selectors keep the checksums
    /// they had before selectors existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub selectors: Vec<SnapshotSelector>,
}

impl SnapshotContent {
    /// Sorts every list into its canonical order.
    pub fn canonicalize(&mut self) {
        self.upstreams.sort_by(|a, b| a.id.cmp(&b.id));
        self.versions.sort_by(|a, b| a.id.cmp(&b.id));
        self.plans.sort_by(|a, b| a.id.cmp(&b.id));
        self.certificates.sort_by(|a, b| a.id.cmp(&b.id));
        self.selectors.sort_by(|a, b| a.api_id.cmp(&b.api_id));
        for v in &mut self.versions {
            v.routes.sort_by(|a, b| a.id.cmp(&b.id));
        }
    }

    /// Hex SHA-256 of the canonical JSON form of the content.
    pub fn checksum(&self) -> String {
        let json = serde_json::to_vec(self).expect("snapshot content serializes");
        hex::encode(Sha256::digest(&json))
    }
}

/// A compiled, immutable configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Strictly increasing across the cluster's history.
    pub version: u64,
    pub checksum: String,
    pub created_at: DateTime<Utc>,
    pub content: SnapshotContent,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("snapshot {version} is corrupt: checksum {expected} does not match its content ({actual})")]
    ChecksumMismatch { version: u64, expected: String, actual: String },
    #[error("snapshot version 0 is not valid")]
    ZeroVersion,
}

impl Snapshot {
    /// Builds a snapshot from content, canonicalizing it and computing its checksum.
    pub fn compile(version: u64, mut content: SnapshotContent, created_at: DateTime<Utc>) -> Snapshot {
        content.canonicalize();
        let checksum = content.checksum();
        Snapshot { version, checksum, created_at, content }
    }

    /// Checks that the snapshot is intact: non-zero version and a matching checksum.
    pub fn verify(&self) -> Result<(), SnapshotError> {
        if self.version == 0 {
            return Err(SnapshotError::ZeroVersion);
        }
        let actual = self.content.checksum();
        if actual != self.checksum {
            return Err(SnapshotError::ChecksumMismatch {
                version: self.version,
                expected: self.checksum.clone(),
                actual,
            });
        }
        Ok(())
    }

    /// Whether a gateway holding `current` should apply `self`.
    pub fn supersedes(&self, current: Option<&Snapshot>) -> bool {
        current.is_none_or(|c| self.version > c.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content() -> SnapshotContent {
        SnapshotContent::default()
    }

    #[test]
    fn compile_then_verify_succeeds_and_tampering_is_detected() {
        let snap = Snapshot::compile(3, content(), Utc::now());
        assert_eq!(snap.verify(), Ok(()));
        let mut bad = snap.clone();
        bad.content.upstreams.push(SnapshotUpstream {
            id: "u".into(),
            spec: UpstreamSpec {
                name: "u".into(),
                targets: vec![],
                algorithm: Default::default(),
                hash_on: None,
                timeouts: Default::default(),
                health_check: Default::default(),
                outlier_detection: Default::default(),
                circuit_breaker: Default::default(),
                retries: Default::default(),
                tls: Default::default(),
            },
        });
        assert!(matches!(bad.verify(), Err(SnapshotError::ChecksumMismatch { .. })));
    }

    #[test]
    fn only_newer_versions_supersede() {
        let a = Snapshot::compile(5, content(), Utc::now());
        let b = Snapshot::compile(6, content(), Utc::now());
        assert!(a.supersedes(None));
        assert!(b.supersedes(Some(&a)));
        assert!(!a.supersedes(Some(&b)));
        assert!(!a.supersedes(Some(&a)));
    }

    #[test]
    fn selectors_are_sorted_and_absent_when_empty() {
        use crate::model::VersionSelector;
        let empty = serde_json::to_value(content()).unwrap();
        assert!(empty.get("selectors").is_none(), "older snapshots keep their checksum: {empty}");
        let selector = |api: &str| SnapshotSelector {
            api_id: api.into(),
            api_slug: api.into(),
            versioning: Versioning::Header(VersionSelector {
                name: "api-version".into(),
                base_path: format!("/{api}"),
                default: None,
            }),
        };
        let mut a = content();
        a.selectors = vec![selector("b"), selector("a")];
        let mut b = content();
        b.selectors = vec![selector("a"), selector("b")];
        let (a, b) = (Snapshot::compile(1, a, Utc::now()), Snapshot::compile(1, b, Utc::now()));
        assert_eq!(a.checksum, b.checksum);
        assert_eq!(a.content.selectors[0].api_id, "a");
        let json = serde_json::to_string(&a.content).unwrap();
        assert_eq!(serde_json::from_str::<SnapshotContent>(&json).unwrap(), a.content);
    }

    #[test]
    fn zero_version_is_rejected() {
        assert_eq!(Snapshot::compile(0, content(), Utc::now()).verify(), Err(SnapshotError::ZeroVersion));
    }
}
