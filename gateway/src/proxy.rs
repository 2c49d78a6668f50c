//! Forwarding to the upstream: the header rules of a well-behaved HTTP proxy
//! (hop-by-hop removal; `X-Forwarded-*` are in [`crate::forwarding`]) and the call itself: attempts with their
//! timeouts, outcomes reported to the target's outlier detection and breaker, and
//! retries where [`crate::retry`] allows them. Bodies are streamed both ways:
//! nothing here reads them, and every frame is passed on as it comes, HTTP/2
//! trailers included (gRPC's `grpc-status` travels in them).
//!
//! Timeouts: `connect_ms` bounds the TCP connect; `read_ms` bounds each attempt up
//! to the response head, and then each wait for the next piece of the response
//! body (like nginx's `proxy_read_timeout`); `total_ms` bounds all attempts
//! together up to the response head. A head that trickles in is bounded by
//! `read_ms` like one that never comes.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, HOST, TE};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::time::Sleep;

use crate::error::{ErrorKind, GatewayError};
use crate::retry::{is_idempotent, is_retryable_error, is_retryable_status};
use crate::upstream::{Attempt, BoxError, HttpClient, InFlight, Upstream, UpstreamRequestBody, empty_body};

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus the
/// `Proxy-*` family, which is addressed to us.
const HOP_BY_HOP: [&str; 6] = ["connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade"];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none of them (a `Connection` header, the only one that can
    // name others, is one of them): one pass over the names decides.
    let hop_by_hop = |name: &HeaderName| HOP_BY_HOP.contains(&name.as_str()) || name.as_str().starts_with("proxy-");
    if !headers.keys().any(hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::try_from(token.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers.keys().filter(|k| k.as_str().starts_with("proxy-")).cloned().collect();
    for name in proxy {
        headers.remove(name);
    }
}

/// The host the client asked for, as it wrote it (with port): the `Host` header, or
/// the URI's authority for HTTP/2.
pub fn original_host(req: &Request<Incoming>) -> Option<HeaderValue> {
    req.headers()
        .get(HOST)
        .cloned()
        .or_else(|| req.uri().authority().and_then(|a| HeaderValue::try_from(a.as_str()).ok()))
}

/// Sends the request to `upstream`, starting with the target of `first` and retrying
/// on other targets when the request and the failure allow it. `remainder` is the
/// path under the version's base path; the request's query is kept.
/// `client_failed` tells whether an attempt failed because of the client (its body
/// was too large, stalled or broken): such failures say nothing about the target
/// and are not held against it by outlier detection or the breaker.
pub async fn forward<B>(
    upstream: &Upstream,
    first: Attempt,
    req: Request<B>,
    remainder: &str,
    client_failed: &(dyn Fn() -> bool + Send + Sync),
) -> Result<Response<TrackedBody>, GatewayError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let deadline = upstream.total_timeout.map(|t| started + t);
    let (mut parts, body) = req.into_parts();
    // Upstream connections are HTTP/1.1 whatever the client spoke to us, or HTTP/2 to
    // `h2c://` targets and TLS targets that offer it (the client picks per connection).
    parts.version = Version::HTTP_11;
    // `TE` is hop-by-hop and was removed with the others, but gRPC servers require
    // `te: trailers` (and the trailers they then send are passed on).
    if is_grpc(&parts.headers) {
        parts.headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    let query = parts.uri.query().map(str::to_owned);
    // Only requests without a body are retried: nothing of the client's has been
    // consumed, so every attempt sends the same request.
    let bodiless = body.is_end_stream();
    let retryable = bodiless && upstream.retries.attempts > 0 && is_idempotent(&parts.method);
    if retryable {
        upstream.budget.record_request(started);
    }
    let mut body = Some(if bodiless { empty_body() } else { body.map_err(Into::into).boxed_unsync() });
    let mut parts = Some(parts);
    let hash = first.hash();
    let mut attempt = first;
    let mut tried: Vec<usize> = Vec::new();
    loop {
        let index = attempt.index();
        let target = upstream.target(&attempt);
        let may_retry = retryable && tried.len() < upstream.retries.attempts as usize;
        let mut head = if may_retry { parts.clone() } else { parts.take() }.ok_or(ErrorKind::Internal)?;
        head.uri =
            target.uri(remainder, query.as_deref()).map_err(|e| GatewayError::with_cause(ErrorKind::Internal, e))?;
        let body = if bodiless { empty_body() } else { body.take().ok_or(ErrorKind::Internal)? };
        let now = Instant::now();
        let remaining = deadline.map(|d| d.saturating_duration_since(now));
        let result = if remaining == Some(Duration::ZERO) {
            Err(GatewayError::from(ErrorKind::UpstreamTimeout))
        } else {
            let timeout = match (upstream.read_timeout, remaining) {
                (Some(read), Some(total)) => Some(read.min(total)),
                (read, total) => read.or(total),
            };
            send(&upstream.client, Request::from_parts(head, body), timeout).await
        };
        let ok = result.as_ref().is_ok_and(|r| !r.status().is_server_error()) || (result.is_err() && client_failed());
        let in_flight = upstream.finish(attempt, ok);
        tried.push(index);
        let worth_retrying = match &result {
            Ok(response) => is_retryable_status(response.status()),
            Err(e) => is_retryable_error(e),
        };
        let now = Instant::now();
        if may_retry && worth_retrying && deadline.is_none_or(|d| now < d) {
            let next = upstream.select_retry(hash, &tried);
            if let Some(next) = next.filter(|_| upstream.budget.try_retry(upstream.retries.budget_percent, now)) {
                tracing::debug!(upstream = %upstream.id, target = %target.authority(), attempt = tried.len(), "retrying");
                attempt = next;
                continue;
            }
        }
        return match result {
            Ok(response) => Ok(response.map(|b| TrackedBody::new(b, in_flight, upstream.read_timeout))),
            Err(e) => {
                Err(e.context(format!("upstream {} at {} (attempt {})", upstream.id, target.authority(), tried.len())))
            }
        };
    }
}

/// Whether a request is a gRPC call (`application/grpc`, `application/grpc+proto`…).
fn is_grpc(headers: &HeaderMap) -> bool {
    headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        let v = v.trim_start().to_ascii_lowercase();
        v.strip_prefix("application/grpc").is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
    })
}

/// Sends one attempt and waits for the response head, within `timeout`.
pub async fn send(
    client: &HttpClient,
    req: Request<UpstreamRequestBody>,
    timeout: Option<Duration>,
) -> Result<Response<Incoming>, GatewayError> {
    let call = client.request(req);
    // Dropping the call on timeout closes its connection: nothing is left waiting
    // on an upstream that does not answer.
    let result = match timeout {
        Some(t) => tokio::time::timeout(t, call).await.map_err(|_| GatewayError::from(ErrorKind::UpstreamTimeout))?,
        None => call.await,
    };
    let mut response = result.map_err(classify)?;
    remove_hop_by_hop(response.headers_mut());
    Ok(response)
}

/// The upstream's response body, streamed through. It counts the request as in
/// flight on its target until the body ends (least-connections sees long
/// downloads), and fails the body when the upstream goes quiet for longer than
/// the read timeout while the client is waiting for more.
pub struct TrackedBody {
    inner: Incoming,
    in_flight: Option<InFlight>,
    idle_timeout: Option<Duration>,
    /// Allocated the first time the upstream makes us wait.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` runs for the current wait.
    waiting: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("the upstream sent nothing for {0:?} in the middle of the response body")]
pub struct BodyIdleTimeout(Duration);

impl TrackedBody {
    pub fn new(inner: Incoming, in_flight: InFlight, idle_timeout: Option<Duration>) -> TrackedBody {
        TrackedBody { inner, in_flight: Some(in_flight), idle_timeout, timer: None, waiting: false }
    }
}

impl std::fmt::Debug for TrackedBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackedBody").field("idle_timeout", &self.idle_timeout).finish_non_exhaustive()
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                if frame.is_none() {
                    this.in_flight = None;
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let Some(idle) = this.idle_timeout else { return Poll::Pending };
                let deadline = tokio::time::Instant::now() + idle;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.waiting {
                    timer.as_mut().reset(deadline);
                    this.waiting = true;
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.in_flight = None;
                        Poll::Ready(Some(Err(BodyIdleTimeout(idle).into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn classify(e: hyper_util::client::legacy::Error) -> GatewayError {
    let kind = if !e.is_connect() {
        ErrorKind::UpstreamFailed
    } else if timed_out(&e) {
        ErrorKind::UpstreamConnectTimeout
    } else {
        ErrorKind::UpstreamConnect
    };
    GatewayError::with_cause(kind, e)
}

fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if err.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut) {
            return true;
        }
        source = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "x-other"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("x-other", "1"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("x-kept", "yes"),
            ("content-type", "text/plain"),
        ]);
        remove_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["content-type", "x-kept"]);
    }

    #[test]
    fn grpc_requests_are_recognized_by_content_type() {
        for grpc in ["application/grpc", "application/grpc+proto", "Application/GRPC;charset=x"] {
            assert!(is_grpc(&headers(&[("content-type", grpc)])), "{grpc}");
        }
        for other in ["application/grpc-web", "application/json", "text/grpc"] {
            assert!(!is_grpc(&headers(&[("content-type", other)])), "{other}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }
}
