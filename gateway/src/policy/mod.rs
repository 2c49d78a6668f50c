//! The policies a version runs on its requests and responses, each compiled once per
//! snapshot from `turnpike_domain::policy::Policies` so that no request parses a CIDR
//! or a header name. The pipeline (`pipeline.rs`) runs them as phases, in an order it
//! documents. Authentication and rate limits live in their own modules.

pub mod cache;
pub mod cors;
pub mod ip;
pub mod transform;

use std::sync::Arc;

use turnpike_domain::snapshot::SnapshotVersion;

use self::cache::{CachePolicy, ResponseCache};
use self::cors::{Origin, VersionCors};
use self::ip::IpRules;
use self::transform::{HeaderTransform, Side};

/// A version's compiled policies; everything off is `None` or empty and costs nothing.
#[derive(Debug, Default)]
pub struct VersionPolicies {
    pub ip: Option<IpRules>,
    /// The version's CORS policy and the docs origins' rules (see `cors`).
    pub cors: Option<VersionCors>,
    pub request_headers: HeaderTransform,
    pub response_headers: HeaderTransform,
    pub cache: Option<CachePolicy>,
}

impl VersionPolicies {
    /// Compiles a version's policies. Unusable entries are logged and left out; the
    /// control plane validates, so only a hand-made snapshot has them. `docs_origins`
    /// (the gateway setting) get CORS on every version.
    pub fn compile(
        version: &SnapshotVersion,
        responses: &Arc<ResponseCache>,
        docs_origins: &[Origin],
    ) -> VersionPolicies {
        let p = &version.policies;
        let id = version.id.as_str();
        VersionPolicies {
            ip: p.ip.as_ref().and_then(|rules| IpRules::compile(rules, id)),
            cors: VersionCors::compile(p, &version.docs_headers, docs_origins, id),
            request_headers: HeaderTransform::compile(&p.request_headers, Side::Request, id),
            response_headers: HeaderTransform::compile(&p.response_headers, Side::Response, id),
            cache: p.cache.as_ref().map(|cache| CachePolicy::compile(cache, version, responses)),
        }
    }
}
