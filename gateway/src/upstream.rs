//! Upstreams as the proxy uses them: parsed targets, a balancer, the timeouts and a
//! pooled HTTP client. HTTP clients outlive snapshots (see [`ClientCache`]) so that
//! a configuration change does not throw away warm keep-alive connections.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use http::Uri;
use http::uri::{Authority, Scheme};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use turnpike_domain::model::LoadBalancing;
use turnpike_domain::snapshot::SnapshotUpstream;

use crate::balancer::WeightedRoundRobin;

/// The client that carries proxied requests: the body is the client's request body,
/// passed through without buffering.
pub type HttpClient = Client<HttpConnector, Incoming>;

/// How long idle upstream connections stay in the pool.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a target URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("target url {0:?} is not an absolute http url")]
    Invalid(String),
    #[error("target url {0:?} uses https, which the gateway does not support yet")]
    Https(String),
}

/// One server of an upstream, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTarget {
    authority: Authority,
    /// The target URL's path without trailing slash; `""` when it has none.
    path_prefix: String,
}

impl UpstreamTarget {
    pub fn parse(url: &str) -> Result<UpstreamTarget, TargetError> {
        let invalid = || TargetError::Invalid(url.to_owned());
        let uri: Uri = url.parse().map_err(|_| invalid())?;
        match uri.scheme() {
            Some(s) if *s == Scheme::HTTP => {}
            Some(s) if *s == Scheme::HTTPS => return Err(TargetError::Https(url.to_owned())),
            _ => return Err(invalid()),
        }
        if uri.query().is_some() {
            return Err(invalid());
        }
        let authority = uri.authority().ok_or_else(invalid)?.clone();
        let path_prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(UpstreamTarget { authority, path_prefix })
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// `{target url}{remainder}{?query}`: the path under the version's base path,
    /// appended to the target's own path.
    pub fn uri(&self, remainder: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let mut path_and_query =
            String::with_capacity(self.path_prefix.len() + remainder.len() + 1 + query.map_or(0, str::len));
        path_and_query.push_str(&self.path_prefix);
        path_and_query.push_str(remainder);
        if path_and_query.is_empty() {
            path_and_query.push('/');
        }
        if let Some(q) = query {
            path_and_query.push('?');
            path_and_query.push_str(q);
        }
        Uri::builder().scheme(Scheme::HTTP).authority(self.authority.clone()).path_and_query(path_and_query).build()
    }
}

/// An upstream compiled from a snapshot.
#[derive(Debug)]
pub struct Upstream {
    pub id: String,
    targets: Vec<UpstreamTarget>,
    balancer: Option<WeightedRoundRobin>,
    /// Time allowed from sending the request to the response head; `None` for no limit.
    pub response_timeout: Option<Duration>,
    pub client: HttpClient,
}

impl Upstream {
    /// Compiles an upstream; unusable targets are left out and reported.
    ///
    /// Every algorithm is weighted round robin for now: least-connections and
    /// consistent hashing fall back to it until they get their own modules.
    pub fn compile(spec: &SnapshotUpstream, clients: &ClientCache) -> (Upstream, Vec<TargetError>) {
        let mut targets = Vec::with_capacity(spec.spec.targets.len());
        let mut weights = Vec::with_capacity(spec.spec.targets.len());
        let mut skipped = Vec::new();
        for target in &spec.spec.targets {
            match UpstreamTarget::parse(&target.url) {
                Ok(t) => {
                    targets.push(t);
                    weights.push(target.weight);
                }
                Err(e) => skipped.push(e),
            }
        }
        // Exhaustive on purpose: a new algorithm must decide here how it picks targets.
        let balancer = match spec.spec.algorithm {
            LoadBalancing::RoundRobin | LoadBalancing::LeastConnections | LoadBalancing::ConsistentHash => {
                WeightedRoundRobin::new(&weights)
            }
        };
        let timeouts = spec.spec.timeouts;
        let millis = |ms: u64| (ms > 0).then(|| Duration::from_millis(ms));
        // Without retries the total budget only ever shortens the single attempt.
        let response_timeout = match (millis(timeouts.read_ms), millis(timeouts.total_ms)) {
            (Some(read), Some(total)) => Some(read.min(total)),
            (read, total) => read.or(total),
        };
        let upstream = Upstream {
            id: spec.id.clone(),
            balancer,
            targets,
            response_timeout,
            client: clients.get(millis(timeouts.connect_ms)),
        };
        (upstream, skipped)
    }

    /// The target for the next request; `None` when the upstream has no usable target.
    pub fn pick(&self) -> Option<&UpstreamTarget> {
        self.balancer.as_ref().map(|b| &self.targets[b.next()])
    }
}

/// HTTP clients shared by all snapshots, one per connect timeout (the connector
/// holds the timeout, and most upstreams share the default).
#[derive(Debug, Default)]
pub struct ClientCache {
    clients: Mutex<HashMap<Option<Duration>, HttpClient>>,
}

impl ClientCache {
    pub fn get(&self, connect_timeout: Option<Duration>) -> HttpClient {
        let mut clients = self.clients.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        clients.entry(connect_timeout).or_insert_with(|| new_client(connect_timeout)).clone()
    }
}

fn new_client(connect_timeout: Option<Duration>) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(connect_timeout);
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_path_prefix_and_query_are_joined_with_the_remainder() {
        let plain = UpstreamTarget::parse("http://10.0.0.1:8080").unwrap();
        assert_eq!(plain.uri("/pets/1", Some("a=1&b")).unwrap(), "http://10.0.0.1:8080/pets/1?a=1&b");
        assert_eq!(plain.uri("", None).unwrap(), "http://10.0.0.1:8080/");
        let prefixed = UpstreamTarget::parse("http://svc.local/api/").unwrap();
        assert_eq!(prefixed.uri("/pets", None).unwrap(), "http://svc.local/api/pets");
        assert_eq!(prefixed.uri("", Some("x=1")).unwrap(), "http://svc.local/api?x=1");
        assert_eq!(prefixed.uri("/", None).unwrap(), "http://svc.local/api/");
    }

    #[test]
    fn unusable_targets_are_refused() {
        assert!(matches!(UpstreamTarget::parse("https://a.example"), Err(TargetError::Https(_))));
        for bad in ["a.example:80", "ftp://a.example", "http://a.example/?q=1", "not a url"] {
            assert!(matches!(UpstreamTarget::parse(bad), Err(TargetError::Invalid(_))), "{bad}");
        }
    }
}
