//! Rate limits (GCRA) and quotas (fixed calendar periods), node-local. Behind the
//! [`Limiter`] trait so the cluster can swap in a Redis-backed limiter that shares
//! counters between nodes without touching the pipeline.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};
use turnpike_domain::model::{Quota, QuotaPeriod, RateLimit};

/// The outcome of one check, with what the `RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u64,
    /// Requests still allowed now.
    pub remaining: u64,
    /// Until the window is fully available again.
    pub reset: Duration,
    /// When denied: how long until a request would be allowed.
    pub retry_after: Duration,
    /// Window length in seconds, for `RateLimit-Policy`.
    pub window_seconds: u64,
}

impl Decision {
    /// `RateLimit-Limit/-Remaining/-Reset/-Policy` (draft-ietf-httpapi-ratelimit-headers,
    /// in the form gateways commonly send), plus `Retry-After` when denied.
    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        let mut put = |name: &'static str, value: String| {
            if let Ok(v) = HeaderValue::try_from(value) {
                h.insert(HeaderName::from_static(name), v);
            }
        };
        put("ratelimit-limit", self.limit.to_string());
        put("ratelimit-remaining", self.remaining.to_string());
        put("ratelimit-reset", ceil_secs(self.reset).to_string());
        put("ratelimit-policy", format!("{};w={}", self.limit, self.window_seconds));
        if !self.allowed {
            put("retry-after", ceil_secs(self.retry_after).max(1).to_string());
        }
        h
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Counts requests against limits. Keys are opaque strings chosen by the caller
/// (`version:consumer`, `plan:application`…).
pub trait Limiter: Send + Sync + 'static {
    fn rate(&self, key: &str, limit: RateLimit, now: Instant) -> Decision;
    fn quota(&self, key: &str, quota: Quota, now: DateTime<Utc>) -> Decision;
}

/// Start of the current period and requests counted in it.
type QuotaCount = (DateTime<Utc>, u64);

const SHARDS: usize = 32;
/// A shard is swept of finished entries when it grows past this many.
const SWEEP_AT: usize = 4096;

/// The node-local limiter: sharded maps so concurrent requests rarely contend.
#[derive(Debug)]
pub struct LocalLimiter {
    epoch: Instant,
    /// Theoretical arrival time (GCRA), in nanoseconds since `epoch`.
    rates: Vec<Mutex<HashMap<String, u64>>>,
    /// Period start and count.
    quotas: Vec<Mutex<HashMap<String, QuotaCount>>>,
}

impl Default for LocalLimiter {
    fn default() -> Self {
        LocalLimiter {
            epoch: Instant::now(),
            rates: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            quotas: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

fn shard(key: &str) -> usize {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

impl Limiter for LocalLimiter {
    /// GCRA: each request moves the key's theoretical arrival time (TAT) on by one
    /// emission interval `T = window / limit`; a request is allowed while the TAT
    /// stays within one window of now. Bursts up to the limit, smooth refill.
    fn rate(&self, key: &str, limit: RateLimit, now: Instant) -> Decision {
        let window = u64::from(limit.per_seconds) * 1_000_000_000;
        let count = u64::from(limit.requests.max(1));
        let interval = window / count;
        let now_ns = u64::try_from(now.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX);
        let mut map = self.rates[shard(key)].lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > SWEEP_AT {
            map.retain(|_, tat| *tat > now_ns);
        }
        let tat = map.get(key).copied().unwrap_or(now_ns).max(now_ns);
        let new_tat = tat + interval;
        let allowed = new_tat - now_ns <= window;
        let used_until = if allowed { new_tat } else { tat };
        if allowed {
            // Update in place: allocating the key again on every request showed in profiles.
            match map.get_mut(key) {
                Some(stored) => *stored = new_tat,
                None => {
                    map.insert(key.to_owned(), new_tat);
                }
            }
        }
        let headroom = window.saturating_sub(used_until - now_ns);
        Decision {
            allowed,
            limit: count,
            remaining: headroom / interval,
            reset: Duration::from_nanos(used_until - now_ns),
            retry_after: Duration::from_nanos(new_tat.saturating_sub(window).saturating_sub(now_ns)),
            window_seconds: u64::from(limit.per_seconds),
        }
    }

    fn quota(&self, key: &str, quota: Quota, now: DateTime<Utc>) -> Decision {
        let (start, end) = period_bounds(quota.period, now);
        let mut map = self.quotas[shard(key)].lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > SWEEP_AT {
            map.retain(|_, (s, _)| *s >= start);
        }
        if !map.contains_key(key) {
            map.insert(key.to_owned(), (start, 0));
        }
        let entry = map.get_mut(key).expect("inserted above");
        if entry.0 != start {
            *entry = (start, 0);
        }
        let allowed = entry.1 < quota.requests;
        if allowed {
            entry.1 += 1;
        }
        let until_reset = (end - now).to_std().unwrap_or_default();
        Decision {
            allowed,
            limit: quota.requests,
            remaining: quota.requests - entry.1,
            reset: until_reset,
            retry_after: until_reset,
            window_seconds: u64::try_from((end - start).num_seconds()).unwrap_or(0),
        }
    }
}

/// The calendar period (UTC) containing `now`: its start and its end.
pub fn period_bounds(period: QuotaPeriod, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let day = Utc.with_ymd_and_hms(now.year(), now.month(), now.day(), 0, 0, 0).single().expect("a valid day");
    match period {
        QuotaPeriod::Hour => {
            let start = day + chrono::Duration::hours(i64::from(now.hour()));
            (start, start + chrono::Duration::hours(1))
        }
        QuotaPeriod::Day => (day, day + chrono::Duration::days(1)),
        QuotaPeriod::Month => {
            let start = Utc.with_ymd_and_hms(now.year(), now.month(), 1, 0, 0, 0).single().expect("a valid month");
            let (y, m) = if now.month() == 12 { (now.year() + 1, 1) } else { (now.year(), now.month() + 1) };
            (start, Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single().expect("a valid month"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u32, per_seconds: u32) -> RateLimit {
        RateLimit { requests, per_seconds }
    }

    #[test]
    fn a_burst_up_to_the_limit_passes_then_requests_wait_one_interval() {
        let l = LocalLimiter::default();
        let t0 = l.epoch + Duration::from_secs(100);
        for i in 0..5 {
            let d = l.rate("k", limit(5, 10), t0);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 4 - i);
        }
        let denied = l.rate("k", limit(5, 10), t0);
        assert!(!denied.allowed);
        assert_eq!(denied.remaining, 0);
        assert_eq!(denied.retry_after, Duration::from_secs(2), "one emission interval of 10 s / 5");
        assert!(!l.rate("k", limit(5, 10), t0 + Duration::from_millis(1999)).allowed);
        assert!(l.rate("k", limit(5, 10), t0 + Duration::from_secs(2)).allowed);
        // Other keys are independent.
        assert!(l.rate("other", limit(5, 10), t0).allowed);
    }

    #[test]
    fn the_full_window_refills() {
        let l = LocalLimiter::default();
        let t0 = l.epoch + Duration::from_secs(1);
        for _ in 0..3 {
            assert!(l.rate("k", limit(3, 1), t0).allowed);
        }
        assert!(!l.rate("k", limit(3, 1), t0).allowed);
        let later = l.rate("k", limit(3, 1), t0 + Duration::from_secs(1));
        assert!(later.allowed);
        assert_eq!(later.remaining, 2);
    }

    #[test]
    fn quotas_count_per_calendar_period_and_reset_with_it() {
        let l = LocalLimiter::default();
        let q = Quota { requests: 2, period: QuotaPeriod::Day };
        let noon = Utc.with_ymd_and_hms(2026, 3, 31, 12, 0, 0).unwrap();
        assert!(l.quota("app", q, noon).allowed);
        let second = l.quota("app", q, noon);
        assert!(second.allowed);
        assert_eq!(second.remaining, 0);
        let third = l.quota("app", q, noon);
        assert!(!third.allowed);
        assert_eq!(third.retry_after, Duration::from_secs(12 * 3600));
        assert!(l.quota("app", q, noon + chrono::Duration::hours(12)).allowed, "a new day");
    }

    #[test]
    fn period_bounds_cover_month_and_year_ends() {
        let t = Utc.with_ymd_and_hms(2026, 12, 31, 23, 30, 0).unwrap();
        let (s, e) = period_bounds(QuotaPeriod::Month, t);
        assert_eq!(
            (s, e),
            (Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(), Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap())
        );
        let (s, e) = period_bounds(QuotaPeriod::Hour, t);
        assert_eq!(
            (s, e),
            (Utc.with_ymd_and_hms(2026, 12, 31, 23, 0, 0).unwrap(), Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap())
        );
    }

    #[test]
    fn headers_follow_the_decision() {
        let l = LocalLimiter::default();
        let t0 = l.epoch + Duration::from_secs(5);
        let d = l.rate("k", limit(1, 60), t0);
        let h = d.headers();
        assert_eq!(h["ratelimit-limit"], "1");
        assert_eq!(h["ratelimit-remaining"], "0");
        assert_eq!(h["ratelimit-policy"], "1;w=60");
        assert!(h.get("retry-after").is_none());
        let denied = l.rate("k", limit(1, 60), t0).headers();
        assert_eq!(denied["retry-after"], "60");
    }
}
