//! Limits that keep one client from holding or exhausting the gateway, and the
//! refusal of requests that two HTTP parsers could read differently.
//!
//! - [`guard`] sits between each connection's socket and hyper. It reads HTTP/1
//!   request heads strictly ([`head`]) and follows body framing ([`chunked`]), so a
//!   malformed, ambiguous or oversized request is answered (400, 414, 431) without
//!   hyper, the pipeline or any upstream ever seeing it; it also closes connections
//!   whose head trickles in (408) or that sit idle. HTTP/2 connections pass through
//!   it untouched apart from the idle timeout.
//! - [`limit_body`] is the pipeline's body-size phase: 413 up front when the declared
//!   length is too large, else the body is counted as it streams and cut off at the
//!   limit. Nothing is buffered.

pub mod chunked;
pub mod guard;
pub mod head;

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONNECTION;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::Notify;
use tokio::time::Sleep;

use crate::error::{ErrorKind, GatewayError};
use crate::pipeline::X_REQUEST_ID;
use crate::settings::Settings;

/// Why a request was refused before reaching the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// 400: the request cannot be read one unambiguous way.
    Malformed(&'static str),
    /// 431: the head is larger than `max_header_bytes`.
    HeadTooLarge,
    /// 431: more than `max_headers` header fields.
    TooManyHeaders,
    /// 414: the request target is longer than `max_uri_bytes`.
    UriTooLong,
    /// 408: the head did not arrive within `header_read_timeout`.
    HeadTimeout,
}

impl From<Rejection> for GatewayError {
    fn from(r: Rejection) -> Self {
        let kind = match r {
            Rejection::Malformed(why) => ErrorKind::Malformed(why),
            Rejection::HeadTooLarge | Rejection::TooManyHeaders => ErrorKind::HeadersTooLarge,
            Rejection::UriTooLong => ErrorKind::UriTooLong,
            Rejection::HeadTimeout => ErrorKind::RequestTimeout,
        };
        // The connection cannot be trusted to carry another request.
        GatewayError::from(kind).with_headers(close())
    }
}

fn close() -> HeaderMap {
    HeaderMap::from_iter([(CONNECTION, HeaderValue::from_static("close"))])
}

/// The answer to a refused request. The request was never read into the pipeline,
/// so its id is a new one.
pub fn refusal(rejection: Rejection) -> Response<Full<Bytes>> {
    let request_id = HeaderValue::try_from(uuid::Uuid::now_v7().to_string()).expect("a uuid is a valid header value");
    let mut response = GatewayError::from(rejection).into_response(&request_id);
    response.headers_mut().insert(X_REQUEST_ID, request_id);
    response
}

/// The head limits for requests the guard does not read itself (HTTP/2; for HTTP/1
/// the guard has checked them already, more precisely).
pub fn check_head<B>(req: &Request<B>, settings: &Settings) -> Option<Rejection> {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    let fields: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if target > settings.max_uri_bytes {
        Some(Rejection::UriTooLong)
    } else if req.headers().len() > settings.max_headers {
        Some(Rejection::TooManyHeaders)
    } else if target + fields > settings.max_header_bytes {
        Some(Rejection::HeadTooLarge)
    } else {
        None
    }
}

/// What a connection's [`guard::Guard`] and its requests share.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Requests whose response has not been sent yet (see [`InFlight`]).
    in_flight: AtomicUsize,
    /// Requests the service has been called for, in order.
    requests: AtomicU64,
    /// The guard's refusal and the number of the request that stands for it.
    rejection: Mutex<Option<(u64, Rejection)>>,
    /// The guard's reader, woken when the last request in flight ends so that its
    /// idle timer starts.
    reader: Mutex<Option<Waker>>,
    /// Signalled when an HTTP/2 connection has been idle too long.
    idle: Notify,
}

impl ConnState {
    /// Called by the service for each request, in the order they arrive. Returns the
    /// guard's refusal when this request stands for one, and a token that counts
    /// the request as in flight until it (or the response body holding it) drops.
    pub fn begin_request(self: &Arc<Self>) -> (Option<Rejection>, InFlight) {
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        let rejection = *self.rejection.lock().expect("not poisoned");
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        (rejection.filter(|(at, _)| *at == n).map(|(_, r)| r), InFlight(self.clone()))
    }

    /// Resolves once the guard finds the (HTTP/2) connection idle for too long.
    pub async fn idle_expired(&self) {
        self.idle.notified().await;
    }

    fn reject(&self, request: u64, rejection: Rejection) {
        *self.rejection.lock().expect("not poisoned") = Some((request, rejection));
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    fn set_reader(&self, waker: &Waker) {
        let mut reader = self.reader.lock().expect("not poisoned");
        if !reader.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *reader = Some(waker.clone());
        }
    }
}

/// Counts a request as in flight while alive.
#[derive(Debug)]
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && let Some(waker) = self.0.reader.lock().expect("not poisoned").take()
        {
            waker.wake();
        }
    }
}

/// A response body that keeps its request counted as in flight until it is sent.
#[derive(Debug)]
pub struct Tracked<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Tracked { inner, _in_flight: in_flight }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How reading a request body ended, when it ended badly; lets the pipeline tell a
/// client at fault from an upstream at fault when forwarding fails.
#[derive(Debug, Default)]
pub struct BodyOutcome(AtomicU8);

const BODY_TOO_LARGE: u8 = 1;
const BODY_BROKEN: u8 = 2;
const BODY_TIMEOUT: u8 = 3;

impl BodyOutcome {
    /// The client's fault, if reading its body is what failed.
    pub fn error(&self) -> Option<GatewayError> {
        let kind = match self.0.load(Ordering::SeqCst) {
            BODY_TOO_LARGE => ErrorKind::BodyTooLarge,
            BODY_BROKEN => ErrorKind::Malformed("the request body could not be read"),
            BODY_TIMEOUT => ErrorKind::BodyTimeout,
            _ => return None,
        };
        Some(GatewayError::from(kind).with_headers(close()))
    }
}

/// The request body as forwarded: the client's, streamed, cut off with an error
/// once it passes the limit, or when the client makes the upstream wait longer
/// than the read timeout for the next piece (the clock runs only while the body is
/// being read, i.e. while the upstream takes it).
#[derive(Debug)]
pub struct LimitedBody {
    inner: Incoming,
    limit: Option<u64>,
    seen: u64,
    outcome: Arc<BodyOutcome>,
    read_timeout: Duration,
    /// Allocated the first time the client makes us wait.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` runs for the current wait.
    waiting: bool,
}

/// Why a request body stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is larger than allowed")]
    TooLarge,
    #[error("the client sent nothing of the request body for {0:?}")]
    Timeout(Duration),
    #[error("reading the request body failed")]
    Client(#[source] hyper::Error),
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if polled.is_pending() {
            if !this.waiting {
                let deadline = deadline_after(this.read_timeout);
                match &mut this.timer {
                    Some(timer) => timer.as_mut().reset(deadline),
                    None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
                }
                this.waiting = true;
            }
            let timer = this.timer.as_mut().expect("armed above");
            if timer.as_mut().poll(cx).is_ready() {
                this.outcome.0.store(BODY_TIMEOUT, Ordering::SeqCst);
                return Poll::Ready(Some(Err(BodyError::Timeout(this.read_timeout))));
            }
            return Poll::Pending;
        }
        this.waiting = false;
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen = this.seen.saturating_add(data.len() as u64);
                    if this.limit.is_some_and(|limit| this.seen > limit) {
                        this.outcome.0.store(BODY_TOO_LARGE, Ordering::SeqCst);
                        return Poll::Ready(Some(Err(BodyError::TooLarge)));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.outcome.0.store(BODY_BROKEN, Ordering::SeqCst);
                Poll::Ready(Some(Err(BodyError::Client(e))))
            }
            other => other.map(|_| None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `timeout` from now, or a century from now when that does not fit.
pub(crate) fn deadline_after(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(timeout.min(Duration::from_secs(100 * 365 * 24 * 3600))).unwrap_or(now)
}

/// The body-size phase: 413 when the declared length is over `limit`, before any
/// of the body is read. Bodies without a declared length are cut off by
/// [`limit_body`] as they stream.
pub fn check_declared_length(req: &Request<Incoming>, limit: Option<u64>) -> Result<(), GatewayError> {
    match limit {
        Some(limit) if req.body().size_hint().lower() > limit => {
            Err(GatewayError::from(ErrorKind::BodyTooLarge).with_headers(close()))
        }
        _ => Ok(()),
    }
}

/// Wraps the body to be cut off once more than `limit` bytes have passed, or when
/// the client sends nothing for `read_timeout` while it is read. The outcome tells
/// a failed forward whether the client's body was at fault.
pub fn limit_body(
    req: Request<Incoming>,
    limit: Option<u64>,
    read_timeout: Duration,
) -> (Request<LimitedBody>, Arc<BodyOutcome>) {
    let outcome = Arc::new(BodyOutcome::default());
    let req = req.map(|inner| LimitedBody {
        inner,
        limit,
        seen: 0,
        outcome: outcome.clone(),
        read_timeout,
        timer: None,
        waiting: false,
    });
    (req, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_map_to_their_status_and_close_the_connection() {
        for (rejection, status) in [
            (Rejection::Malformed("x"), 400),
            (Rejection::HeadTooLarge, 431),
            (Rejection::TooManyHeaders, 431),
            (Rejection::UriTooLong, 414),
            (Rejection::HeadTimeout, 408),
        ] {
            let e = GatewayError::from(rejection);
            assert_eq!(e.status().as_u16(), status, "{rejection:?}");
            assert_eq!(e.headers.as_deref().unwrap()[CONNECTION], "close");
        }
    }

    #[test]
    fn only_the_request_standing_for_a_rejection_gets_it() {
        let state = Arc::new(ConnState::default());
        let (first, t1) = state.begin_request();
        state.reject(1, Rejection::UriTooLong);
        let (second, t2) = state.begin_request();
        assert_eq!((first, second), (None, Some(Rejection::UriTooLong)));
        assert_eq!(state.in_flight(), 2);
        drop((t1, t2));
        assert_eq!(state.in_flight(), 0);
    }

    #[test]
    fn body_outcomes_name_the_clients_fault() {
        let outcome = BodyOutcome::default();
        assert!(outcome.error().is_none());
        outcome.0.store(BODY_TOO_LARGE, Ordering::SeqCst);
        assert_eq!(outcome.error().unwrap().status().as_u16(), 413);
        outcome.0.store(BODY_BROKEN, Ordering::SeqCst);
        assert_eq!(outcome.error().unwrap().status().as_u16(), 400);
        outcome.0.store(BODY_TIMEOUT, Ordering::SeqCst);
        assert_eq!(outcome.error().unwrap().status().as_u16(), 408);
    }
}
