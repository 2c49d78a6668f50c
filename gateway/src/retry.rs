//! When a failed attempt may be tried again: only idempotent methods, only requests
//! without a body (so nothing the client sent has been consumed), only failures that
//! say nothing about the request itself, and only within the upstream's retry budget
//! so that retries cannot multiply the load on a struggling upstream.

use std::sync::Mutex;
use std::time::Instant;

use http::{Method, StatusCode};

use crate::error::{ErrorKind, GatewayError};

/// The budget counts requests and retries over a sliding window of this many
/// one-second buckets.
const BUCKETS: usize = 10;
/// Retries always allowed per window, so that an upstream with little traffic can
/// still retry (20% of 3 requests is no retry at all).
pub const MIN_RETRIES_PER_WINDOW: u64 = 10;

/// Methods whose effect is the same when sent twice (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

/// Whether an attempt that failed this way may be retried (the request itself being
/// retryable): the target could not be reached, did not answer in time, dropped the
/// connection, or answered that it is overloaded or failing at the gateway level.
pub fn is_retryable_error(e: &GatewayError) -> bool {
    matches!(
        e.kind,
        ErrorKind::UpstreamConnect
            | ErrorKind::UpstreamConnectTimeout
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamFailed
    )
}

/// 502, 503 and 504 are retried; a 500 is usually the application's answer to this
/// very request and would fail again.
pub fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status, StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT)
}

/// Retries may add at most `percent` % to the requests of the last ten seconds, with
/// at least [`MIN_RETRIES_PER_WINDOW`]. One per upstream, kept across snapshots.
#[derive(Debug)]
pub struct RetryBudget {
    start: Instant,
    buckets: Mutex<[Bucket; BUCKETS]>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Seconds since `start` that this bucket counts.
    second: u64,
    requests: u64,
    retries: u64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl RetryBudget {
    pub fn new(start: Instant) -> Self {
        RetryBudget { start, buckets: Mutex::new([Bucket::default(); BUCKETS]) }
    }

    /// Counts a request (its first attempt).
    pub fn record_request(&self, now: Instant) {
        let second = self.second(now);
        let mut buckets = self.lock();
        let slot = current(&mut buckets, second);
        buckets[slot].requests += 1;
    }

    /// Takes one retry from the budget if it has one left.
    pub fn try_retry(&self, percent: u32, now: Instant) -> bool {
        let second = self.second(now);
        let mut buckets = self.lock();
        let slot = current(&mut buckets, second);
        let (requests, retries) = buckets
            .iter()
            .filter(|b| b.second <= second && b.second + BUCKETS as u64 > second)
            .fold((0, 0), |(q, r), b| (q + b.requests, r + b.retries));
        let allowed = (requests * u64::from(percent) / 100).max(MIN_RETRIES_PER_WINDOW);
        let ok = retries < allowed;
        if ok {
            buckets[slot].retries += 1;
        }
        ok
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Bucket; BUCKETS]> {
        self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The slot of `second`, emptied first if it still counts an older second.
fn current(buckets: &mut [Bucket; BUCKETS], second: u64) -> usize {
    let slot = (second % BUCKETS as u64) as usize;
    if buckets[slot].second != second {
        buckets[slot] = Bucket { second, requests: 0, retries: 0 };
    }
    slot
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn only_idempotent_methods_are_retryable() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::PUT, Method::DELETE, Method::TRACE] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT, Method::from_bytes(b"PURGE").unwrap()] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }

    #[test]
    fn retryable_outcomes() {
        assert!(is_retryable_error(&ErrorKind::UpstreamConnect.into()));
        assert!(is_retryable_error(&ErrorKind::UpstreamTimeout.into()));
        assert!(!is_retryable_error(&ErrorKind::NoTarget.into()));
        assert!(is_retryable_status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!is_retryable_status(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!is_retryable_status(StatusCode::NOT_FOUND));
    }

    #[test]
    fn low_traffic_gets_the_minimum_and_high_traffic_the_percentage() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(t0);
        let retried: usize = (0..40)
            .filter(|_| {
                budget.record_request(t0);
                budget.try_retry(50, t0)
            })
            .count();
        // The first ten ride on the minimum; then one retry per two requests.
        assert_eq!(retried, 20);
        let budget = RetryBudget::new(t0);
        budget.record_request(t0);
        let granted = (0..20).filter(|_| budget.try_retry(20, t0)).count();
        assert_eq!(granted, MIN_RETRIES_PER_WINDOW as usize);
    }

    #[test]
    fn the_window_slides() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(t0);
        let granted = (0..20).filter(|_| budget.try_retry(0, t0)).count();
        assert_eq!(granted, 10);
        assert!(!budget.try_retry(0, t0 + Duration::from_secs(9)), "still inside the window");
        assert!(budget.try_retry(0, t0 + Duration::from_secs(10)), "the first second has left the window");
    }
}
