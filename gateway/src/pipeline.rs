//! The proxy's request pipeline: a fixed sequence of phases sharing one per-request
//! context ([`RequestCtx`]). Each phase either fills in the context or ends the
//! request with a [`GatewayError`]; the last phase runs for every response.
//!
//! | # | phase | why here |
//! |---|-------|----------|
//! | 1 | [`begin`](RequestCtx::begin): request id, client address (the peer, or behind trusted proxies the address they forward for; resolved by the listener, see [`forwarding`]), pin the configuration | first, so every later outcome (errors included) carries the id and sees one configuration even if a snapshot is swapped in meanwhile |
//! | 2 | [`normalize_path`] | before routing, so the router and the upstream see the same path; bad paths cost nothing further |
//! | 3 | [`route`]: version and route, by base path or by the API's version selector (header or query parameter; 400 when named twice differently) (404/405; 503 without configuration) | needs the normalized path |
//! | 4 | [`lifecycle`]: retired 410, deprecation headers | needs the version; before any policy so a retired version costs nothing |
//! | 4a | [`ip_rules`]: client IP allow/deny lists, 403 | first policy: the cheapest refusal, before anything costs |
//! | 4b | [`cors`]: preflights answered here (204, or 403 and not forwarded) for versions with a CORS policy and, on every version, from the docs origins (the portal's "try it", gateway setting `docs_origins`); other requests note what their response's CORS headers will be | before authentication, since browsers send preflights without credentials |
//! | 4c | [`consumer::authenticate`]: API key → consumer, 401/403; client `X-Consumer-*` headers always stripped | before limits, which count per consumer; after cheap refusals (IP, CORS preflight) |
//! | 4c2 | [`jwt::authenticate`]: bearer JWT (algorithm fixed by the policy, key from the policy or the issuer's JWKS, `exp`/`nbf`/`iss`/`aud`), 401 with `WWW-Authenticate: Bearer`, 503 when the issuer's keys cannot be had; claims forwarded per `claims_to_headers` (clients' copies stripped) | with the key check, before limits; after it, so the cheaper check refuses first, a version with both requires both, and the `X-Consumer-*` strip cannot remove claim headers such as `x-consumer-subject` |
//! | 4d | [`consumer::limit`]: version rate limit, plan rate limit and quota, 429 with `Retry-After` | after authentication (the consumer and plan are known), before any upstream work |
//! | 4e | [`validate`]: the request against the version's OpenAPI document (`validate_requests`): parameters, then the body's content type (415) and JSON body, read in full up to the body limit (413) and forwarded from that buffer; 400 naming each failing location | after authentication and limits, so refused callers cost no parsing and learn nothing of the schema; before the cache, so a cached answer never bypasses validation either; before an upstream is chosen, so an invalid request costs no connection |
//! | 4f | [`cache_lookup`]: GET/HEAD answered from the response cache (`X-Cache: HIT`, `Age`) | after authentication, limits and validation, so a cached answer never bypasses them |
//! | 4g | [`body_limit`]: 413 when the declared body length is over the version's `max_body_bytes` (or the listener's default), before the body is read | after the policies that refuse cheaper (an unauthenticated client learns no limits), before an upstream is chosen so an oversized upload costs no connection; bodies of unknown length are cut off at the limit while forwarded (phase 6) |
//! | 5 | [`select_upstream`]: upstream and target (balancer, active health, outlier ejection, circuit breaker), 503 | after policies, so refused requests do not advance the balancer or take breaker trials |
//! | 5a | request header transforms (`policy.request_headers`) | just before forwarding, so every earlier phase sees the client's headers; the gateway's own headers (`X-Forwarded-*`, `X-Request-Id`, `X-Consumer-*`) cannot be transformed |
//! | 6 | [`forward`]: rewrite headers (forwarding headers by peer trust, `traceparent`), cut the body off at its limit or when the client stalls it for the body read timeout (408), splice WebSocket upgrades, call with connect/per-try/total timeouts, retry idempotent bodiless requests on another target within the retry budget, 502/504 | last step that can fail; outcomes feed outlier detection and the breaker |
//! | 6a | [`respond`]: response header transforms, then the cache stores the response (`X-Cache: MISS`) while it streams | transforms first, so hits carry them too; the store before [`finish`], whose per-request headers (request id, CORS, limits) must not be stored |
//! | 7 | [`finish`]: request id, lifecycle and CORS headers on every response | runs for errors and cache hits too, so clients can always correlate, see deprecation, and read errors cross-origin |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::config::{CompiledConfig, ConfigStore, RoutedVersion};
use crate::consumer::{self, Consumer};
use crate::error::{ErrorKind, GatewayError};
use crate::forwarding::{self, Peer};
use crate::jwt;
use crate::limits;
use crate::path::normalize;
use crate::policy::cache::{CacheRequest, Lookup, Pending, UpstreamBody};
use crate::policy::cors;
use crate::proxy;
use crate::ratelimit::Decision;
use crate::router::{RequestFacts, RouteOutcome, request_host};
use crate::server::Scheme;
use crate::settings::Settings;
use crate::upstream::{Attempt, Upstream};
use crate::validation;
use crate::websocket;
use turnpike_domain::model::VersionState;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied request id that is passed on rather than replaced.
const MAX_REQUEST_ID_LEN: usize = 200;

/// Body of every proxy response: the upstream's, streamed (and maybe copied into the
/// cache), or a gateway-made one (errors, preflights, cache hits).
pub type ProxyBody = Either<UpstreamBody<proxy::TrackedBody>, Full<Bytes>>;

/// Everything the phases learn about one request.
#[derive(Debug)]
pub struct RequestCtx {
    pub request_id: HeaderValue,
    /// The client: the peer, or behind trusted proxies the address they forward for
    /// (with port 0); every policy decides on this, never on forwarding headers.
    pub client: SocketAddr,
    pub started: Instant,
    /// The configuration this request runs on from start to end.
    pub config: Option<Arc<CompiledConfig>>,
    /// The normalized path (phase 2).
    pub path: String,
    /// The matched version (phase 3).
    pub version: Option<Arc<RoutedVersion>>,
    /// Where the path under the version's base path starts in `path` (phase 3).
    pub remainder_start: usize,
    /// The authenticated caller (phase 4c).
    pub consumer: Option<Consumer>,
    /// The limit with the least room left, reported on the response (phase 4d).
    pub limit: Option<Decision>,
    /// The CORS headers for the response of a request that is not a preflight (phase 4b).
    pub cors: Option<cors::Actual>,
    /// What the cache does with the upstream's response (phase 4f).
    pub cache: Option<Pending>,
    /// The operation the request is validated against (found in phase 3, checked in phase 4e).
    pub operation: Option<Arc<validation::Operation>>,
}

impl RequestCtx {
    /// Phase 1.
    pub fn begin(req: &Request<Incoming>, client: SocketAddr, store: &ConfigStore) -> RequestCtx {
        RequestCtx {
            request_id: request_id(req.headers()),
            client,
            started: Instant::now(),
            config: store.current(),
            path: String::new(),
            version: None,
            remainder_start: 0,
            consumer: None,
            limit: None,
            cors: None,
            cache: None,
            operation: None,
        }
    }

    fn remainder(&self) -> &str {
        &self.path[self.remainder_start..]
    }
}

/// Handles one proxied request from start to end.
pub async fn handle(
    req: Request<Incoming>,
    client: SocketAddr,
    store: &ConfigStore,
) -> Result<Response<ProxyBody>, Infallible> {
    let mut ctx = RequestCtx::begin(&req, client, store);
    let method = req.method().clone();
    let mut response = match run(&mut ctx, req, store).await {
        Ok(response) => response,
        Err(e) => e.into_response(&ctx.request_id).map(Either::Right),
    };
    finish(&ctx, response.headers_mut());
    store.metrics().record(&ctx, &response);
    tracing::debug!(
        request_id = ctx.request_id.to_str().unwrap_or_default(),
        %method,
        path = %ctx.path,
        version = ctx.version.as_ref().map(|v| v.id.as_str()),
        status = response.status().as_u16(),
        elapsed_us = u64::try_from(ctx.started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "proxied request",
    );
    Ok(response)
}

/// Phases 2 to 6.
async fn run(
    ctx: &mut RequestCtx,
    mut req: Request<Incoming>,
    store: &ConfigStore,
) -> Result<Response<ProxyBody>, GatewayError> {
    normalize_path(ctx, &req)?;
    route(ctx, &req)?;
    let version = ctx.version.clone().ok_or(ErrorKind::Internal)?;
    lifecycle(&version)?;
    ip_rules(ctx, &version)?;
    if let Some(preflight) = cors(ctx, &version, &req)? {
        return Ok(preflight.map(Either::Right));
    }
    let consumers = store.consumers();
    ctx.consumer = consumer::authenticate(&mut req, &version, consumers)?;
    jwt::authenticate(&mut req, &version).await?;
    let config = ctx.config.clone().ok_or(ErrorKind::NoConfig)?;
    ctx.limit = consumer::limit(&config, &version, ctx.consumer.as_ref(), ctx.client.ip(), consumers.limiter.as_ref())?;
    let buffered = validate(ctx, &version, &mut req).await?;
    if let Some(hit) = cache_lookup(ctx, &version, &req) {
        return Ok(hit.map(Either::Right));
    }
    body_limit(&version, &req)?;
    let (upstream, attempt) = select_upstream(ctx, &version, &req)?;
    version.policy.request_headers.apply(req.headers_mut());
    let response = forward(ctx, req, buffered, upstream, attempt).await?;
    Ok(respond(ctx, &version, response))
}

/// Phase 2.
fn normalize_path(ctx: &mut RequestCtx, req: &Request<Incoming>) -> Result<(), GatewayError> {
    ctx.path = normalize(req.uri().path())?;
    Ok(())
}

/// Phase 3.
fn route(ctx: &mut RequestCtx, req: &Request<Incoming>) -> Result<(), GatewayError> {
    let config = ctx.config.clone().ok_or(ErrorKind::NoConfig)?;
    let host = request_host(req.uri(), req.headers());
    let facts = RequestFacts {
        method: req.method(),
        host: host.as_deref(),
        headers: req.headers(),
        path: &ctx.path,
        query: req.uri().query(),
    };
    let mut outcome = config.router.route(&facts);
    // A CORS preflight asks about another method than its own. When no route takes
    // OPTIONS, it is routed as the request it announces, for the version's CORS policy
    // (or the docs rules, for a docs origin) to answer; otherwise it stays a 405.
    if let RouteOutcome::MethodNotAllowed(_) = outcome
        && let Some(announced) = cors::preflight_method(req.method(), req.headers())
        && let matched @ RouteOutcome::Matched { version, .. } =
            config.router.route(&RequestFacts { method: &announced, ..facts })
        && version.policy.cors.as_ref().is_some_and(|c| c.answers(req.headers()))
    {
        outcome = matched;
    }
    match outcome {
        RouteOutcome::Matched { version, route_id, remainder_start } => {
            tracing::trace!(version = %version.id, route = route_id, "matched route");
            ctx.version = Some(version.clone());
            ctx.remainder_start = remainder_start;
            ctx.operation = version.validation.as_ref().and_then(|v| v.operation(route_id, req.method()));
            Ok(())
        }
        RouteOutcome::Retired(version) => {
            ctx.version = Some(version.clone());
            Ok(())
        }
        RouteOutcome::MethodNotAllowed(allow) => Err(ErrorKind::MethodNotAllowed { allow }.into()),
        RouteOutcome::NotFound => Err(ErrorKind::NoRoute.into()),
        RouteOutcome::AmbiguousVersion => Err(ErrorKind::Malformed("the API version is given more than once").into()),
    }
}

/// Phase 4. Deprecation is announced by [`finish`] from the version's precomputed
/// headers, so that error responses carry it too.
fn lifecycle(version: &RoutedVersion) -> Result<(), GatewayError> {
    match version.state {
        VersionState::Retired => Err(ErrorKind::Retired.into()),
        VersionState::Published | VersionState::Deprecated => Ok(()),
        // Never routed; refused the same way should one slip through.
        VersionState::Draft => Err(ErrorKind::NoRoute.into()),
    }
}

/// Phase 4a. Decided on the client address (phase 1): the peer, or behind trusted
/// proxies the address they forward for; never on a header an untrusted peer sent.
fn ip_rules(ctx: &RequestCtx, version: &RoutedVersion) -> Result<(), GatewayError> {
    match &version.policy.ip {
        Some(rules) if !rules.allows(ctx.client.ip()) => Err(ErrorKind::IpDenied.into()),
        _ => Ok(()),
    }
}

/// Phase 4b.
fn cors(
    ctx: &mut RequestCtx,
    version: &RoutedVersion,
    req: &Request<Incoming>,
) -> Result<Option<Response<Full<Bytes>>>, GatewayError> {
    let Some(policy) = &version.policy.cors else { return Ok(None) };
    if cors::preflight_method(req.method(), req.headers()).is_none() {
        ctx.cors = policy.actual(req.headers());
        return Ok(None);
    }
    // Not the gateway's to answer (no policy, and not a docs origin): an ordinary OPTIONS.
    let Some(answer) = policy.preflight(req.headers()) else { return Ok(None) };
    let headers = answer.map_err(|e| GatewayError::with_cause(ErrorKind::CorsRefused, e))?;
    let mut response = Response::new(Full::default());
    *response.status_mut() = StatusCode::NO_CONTENT;
    *response.headers_mut() = headers;
    Ok(Some(response))
}

/// Phase 4e. Returns the body when it was read to be checked, for [`forward`] to send.
async fn validate(
    ctx: &RequestCtx,
    version: &RoutedVersion,
    req: &mut Request<Incoming>,
) -> Result<Option<Bytes>, GatewayError> {
    let Some(operation) = &ctx.operation else { return Ok(None) };
    let limit = max_body_bytes(version, req);
    let stall = req.extensions().get::<Arc<Settings>>().map(|s| s.body_read_timeout);
    operation.check(req, ctx.remainder(), limit, stall.unwrap_or(Settings::default().body_read_timeout)).await
}

/// Phase 4f. A miss leaves what to do with the response in `ctx.cache`.
fn cache_lookup(
    ctx: &mut RequestCtx,
    version: &RoutedVersion,
    req: &Request<Incoming>,
) -> Option<Response<Full<Bytes>>> {
    let policy = version.policy.cache.as_ref()?;
    let lookup = policy.lookup(&CacheRequest {
        method: req.method(),
        host: request_host(req.uri(), req.headers()),
        path: &ctx.path,
        query: req.uri().query(),
        headers: req.headers(),
        consumer: ctx.consumer.as_ref().map(|c| c.key_id.as_str()),
    });
    match lookup {
        Lookup::Hit(response) => Some(response),
        Lookup::Miss(pending) => {
            ctx.cache = Some(pending);
            None
        }
        Lookup::Pass => None,
    }
}

/// Phase 5. The client address and headers are the consistent-hashing key.
fn select_upstream<'v>(
    ctx: &RequestCtx,
    version: &'v RoutedVersion,
    req: &Request<Incoming>,
) -> Result<(&'v Upstream, Attempt), GatewayError> {
    let upstream = version.upstream.as_deref().ok_or(ErrorKind::NoUpstream)?;
    let attempt = upstream
        .select(ctx.client.ip(), req.headers())
        .ok_or_else(|| GatewayError::from(ErrorKind::NoTarget).context(format!("upstream {}", upstream.id)))?;
    Ok((upstream, attempt))
}

/// Phase 4g.
fn body_limit(version: &RoutedVersion, req: &Request<Incoming>) -> Result<(), GatewayError> {
    limits::check_declared_length(req, max_body_bytes(version, req))
}

/// The version's body limit, or the listener's default.
fn max_body_bytes<B>(version: &RoutedVersion, req: &Request<B>) -> Option<u64> {
    version.policies.max_body_bytes.or_else(|| req.extensions().get::<Arc<Settings>>()?.max_body_bytes)
}

/// Phase 6. The forwarding headers describe the way from the client (see
/// [`forwarding`]), a `traceparent` is passed on or started, and the body is cut off
/// at the version's limit or once the client stalls it. A WebSocket handshake keeps its upgrade headers and, once
/// the upstream switches protocols, is spliced through (see [`websocket`]).
async fn forward(
    ctx: &RequestCtx,
    mut req: Request<Incoming>,
    buffered: Option<Bytes>,
    upstream: &Upstream,
    attempt: Attempt,
) -> Result<Response<proxy::TrackedBody>, GatewayError> {
    let original_host = proxy::original_host(&req);
    let scheme = req.extensions().get::<Scheme>().copied().unwrap_or(Scheme::Http);
    let peer = req.extensions().get::<Peer>().copied().unwrap_or(Peer { addr: ctx.client, trusted: false });
    let limit = ctx.version.as_deref().and_then(|version| max_body_bytes(version, &req));
    let websocket = websocket::take_client_upgrade(&mut req);
    let headers = req.headers_mut();
    forwarding::forwarded_request_headers(headers, peer, scheme.as_str(), original_host);
    forwarding::trace_context(headers);
    if websocket.is_some() {
        websocket::keep_upgrade_headers(headers);
    }
    headers.insert(X_REQUEST_ID, ctx.request_id.clone());
    let read_timeout = req.extensions().get::<Arc<Settings>>().map(|s| s.body_read_timeout);
    let (req, body) = limits::limit_body(req, limit, read_timeout.unwrap_or(Settings::default().body_read_timeout));
    // A body read to be validated (phase 4e) is sent from its buffer.
    let req = match buffered {
        Some(bytes) => req.map(|_| Either::Right(Full::new(bytes))),
        None => req.map(Either::Left),
    };
    // A failure caused by the client's body is the client's error, not the upstream's.
    let mut response = proxy::forward(upstream, attempt, req, ctx.remainder(), &|| body.error().is_some())
        .await
        .map_err(|e| body.error().unwrap_or(e))?;
    if let Some(client) = websocket {
        websocket::splice_on_switch(client, &mut response);
    }
    Ok(response)
}

/// Phase 6a.
fn respond(
    ctx: &mut RequestCtx,
    version: &RoutedVersion,
    response: Response<proxy::TrackedBody>,
) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    version.policy.response_headers.apply(&mut parts.headers);
    let body = match ctx.cache.take() {
        Some(pending) => pending.respond(&mut parts, body),
        None => UpstreamBody::new(body),
    };
    Response::from_parts(parts, Either::Left(body))
}

/// Phase 7.
fn finish(ctx: &RequestCtx, headers: &mut HeaderMap) {
    headers.insert(X_REQUEST_ID, ctx.request_id.clone());
    if let (Some(actual), Some(policy)) = (&ctx.cors, ctx.version.as_ref().and_then(|v| v.policy.cors.as_ref())) {
        policy.decorate(actual, headers);
    }
    if let Some(limit) = &ctx.limit {
        headers.extend(limit.headers());
    }
    if let Some(version) = &ctx.version {
        for (name, value) in &version.response_headers {
            headers.append(name, value.clone());
        }
    }
}

/// The client's `X-Request-Id` when it is reasonable, else a new one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(X_REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID_LEN && v.to_str().is_ok())
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::try_from(uuid::Uuid::now_v7().to_string()).expect("a uuid is a valid header value")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_kept_when_sane_and_generated_otherwise() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(X_REQUEST_ID, HeaderValue::try_from("x".repeat(MAX_REQUEST_ID_LEN + 1)).unwrap());
        let generated = request_id(&h);
        assert_eq!(generated.len(), 36);
        assert_ne!(request_id(&HeaderMap::new()), request_id(&HeaderMap::new()));
    }
}
