//! The proxy's request pipeline: a fixed sequence of phases sharing one per-request
//! context ([`RequestCtx`]). Each phase either fills in the context or ends the
//! request with a [`GatewayError`]; the last phase runs for every response.
//!
//! | # | phase | why here |
//! |---|-------|----------|
//! | 1 | [`begin`](RequestCtx::begin): request id, client address, pin the configuration | first, so every later outcome (errors included) carries the id and sees one configuration even if a snapshot is swapped in meanwhile |
//! | 2 | [`normalize_path`] | before routing, so the router and the upstream see the same path; bad paths cost nothing further |
//! | 3 | [`route`]: version and route (404/405; 503 without configuration) | needs the normalized path |
//! | 4 | [`lifecycle`]: retired 410, deprecation headers | needs the version; before any policy so a retired version costs nothing |
//! | – | (later: IP rules, authentication, rate limits, validation, cache, transforms) | policies need the route and must run before an upstream is chosen |
//! | 5 | [`select_upstream`]: upstream and target, 503 | after policies, so refused requests do not advance the balancer |
//! | 6 | [`forward`]: rewrite headers, call with timeouts, 502/504 | last step that can fail |
//! | 7 | [`finish`]: request id and lifecycle headers on every response | runs for errors too, so clients can always correlate and see deprecation |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

use crate::config::{CompiledConfig, ConfigStore, RoutedVersion};
use crate::error::{ErrorKind, GatewayError};
use crate::path::normalize;
use crate::proxy;
use crate::router::{RequestFacts, RouteOutcome, request_host};
use crate::upstream::{Upstream, UpstreamTarget};
use turnpike_domain::model::VersionState;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied request id that is passed on rather than replaced.
const MAX_REQUEST_ID_LEN: usize = 200;

/// Body of every proxy response: the upstream's, streamed, or a gateway-made one.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// Everything the phases learn about one request.
#[derive(Debug)]
pub struct RequestCtx {
    pub request_id: HeaderValue,
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
    let mut response = match run(&mut ctx, req).await {
        Ok(response) => response.map(Either::Left),
        Err(e) => e.into_response(&ctx.request_id).map(Either::Right),
    };
    finish(&ctx, response.headers_mut());
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
async fn run(ctx: &mut RequestCtx, req: Request<Incoming>) -> Result<Response<Incoming>, GatewayError> {
    normalize_path(ctx, &req)?;
    route(ctx, &req)?;
    let version = ctx.version.clone().ok_or(ErrorKind::Internal)?;
    lifecycle(&version)?;
    let (upstream, target) = select_upstream(&version)?;
    forward(ctx, req, upstream, target).await
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
    let facts = RequestFacts { method: req.method(), host: host.as_deref(), headers: req.headers(), path: &ctx.path };
    match config.router.route(&facts) {
        RouteOutcome::Matched { version, route_id, remainder_start } => {
            tracing::trace!(version = %version.id, route = route_id, "matched route");
            ctx.version = Some(version.clone());
            ctx.remainder_start = remainder_start;
            Ok(())
        }
        RouteOutcome::Retired(version) => {
            ctx.version = Some(version.clone());
            Ok(())
        }
        RouteOutcome::MethodNotAllowed(allow) => Err(ErrorKind::MethodNotAllowed { allow }.into()),
        RouteOutcome::NotFound => Err(ErrorKind::NoRoute.into()),
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

/// Phase 5.
fn select_upstream(version: &RoutedVersion) -> Result<(&Upstream, &UpstreamTarget), GatewayError> {
    let upstream = version.upstream.as_deref().ok_or(ErrorKind::NoUpstream)?;
    let target = upstream.pick().ok_or(ErrorKind::NoTarget)?;
    Ok((upstream, target))
}

/// Phase 6.
async fn forward(
    ctx: &RequestCtx,
    mut req: Request<Incoming>,
    upstream: &Upstream,
    target: &UpstreamTarget,
) -> Result<Response<Incoming>, GatewayError> {
    let uri =
        target.uri(ctx.remainder(), req.uri().query()).map_err(|e| GatewayError::with_cause(ErrorKind::Internal, e))?;
    let original_host = proxy::original_host(&req);
    let headers = req.headers_mut();
    proxy::forwarded_request_headers(headers, original_host, ctx.client.ip());
    headers.insert(X_REQUEST_ID, ctx.request_id.clone());
    proxy::send(&upstream.client, req, uri, upstream.response_timeout)
        .await
        .map_err(|e| e.context(format!("upstream {} at {}", upstream.id, target.authority())))
}

/// Phase 7.
fn finish(ctx: &RequestCtx, headers: &mut HeaderMap) {
    headers.insert(X_REQUEST_ID, ctx.request_id.clone());
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
