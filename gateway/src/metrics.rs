//! Prometheus metrics, served by the status listener in the text exposition format
//! 0.0.4 (`docs/metrics.md` lists every metric).
//!
//! The request path only adds to atomics: each API version's counters are made when a
//! snapshot is compiled and held by its [`RoutedVersion`](crate::config::RoutedVersion),
//! so recording a request is a handful of relaxed `fetch_add`s, with no lookup, lock or
//! allocation. Counters are split into one cache-line-aligned shard per proxy worker
//! (see [`crate::worker`]), so workers on different cores never write the same line;
//! a scrape adds the shards up. Everything else (upstream targets, the applied
//! configuration) is read when scraped.
//!
//! A version's counters are found again by (API slug, version label) when the next
//! snapshot is compiled while the previous one still holds them, so they survive
//! configuration changes; once no configuration uses a version, its series go (a
//! version that comes back starts from zero, which Prometheus reads as a counter reset).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{Response, StatusCode};
use http_body_util::Either;

use crate::config::ConfigStatus;
use crate::pipeline::{ProxyBody, RequestCtx};
use crate::upstream::TargetStatus;
use crate::worker;

/// The media type of the text exposition format this module writes.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the request duration histogram's buckets, in nanoseconds (1 ms to
/// 60 s; `+Inf` comes on top). Integers, so that a duration lands in exactly the
/// bucket its `le` label names.
const BUCKETS_NANOS: [u64; 15] = [
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
];

/// Status classes counted, `1xx` (WebSocket upgrades answer 101) to `5xx`.
const CODE_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The gateway's metrics: one set of request counters per API version in use, and
/// one for requests that matched no version. One per `ConfigStore`.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// `api=""`, `version=""`: requests that matched no version (404, 405, bad
    /// paths, no configuration yet).
    unmatched: Arc<VersionMetrics>,
    versions: Mutex<Versions>,
}

/// Counters by (API slug, version label), held weakly: the compiled configurations
/// own them. Dead entries are swept whenever the map has doubled since the last sweep.
#[derive(Debug)]
struct Versions {
    map: HashMap<(String, String), Weak<VersionMetrics>>,
    sweep_at: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            unmatched: Arc::new(VersionMetrics::new(String::new(), String::new())),
            versions: Mutex::new(Versions { map: HashMap::new(), sweep_at: 64 }),
        }
    }
}

impl Metrics {
    /// The counters of a version, shared with every configuration that uses it.
    /// Called when a snapshot is compiled, never per request.
    pub(crate) fn version(&self, api: &str, version: &str) -> Arc<VersionMetrics> {
        if api.is_empty() && version.is_empty() {
            // The unmatched series' labels; two series with one label set would be invalid.
            return self.unmatched.clone();
        }
        let mut versions = self.versions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (api.to_owned(), version.to_owned());
        if let Some(live) = versions.map.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        let metrics = Arc::new(VersionMetrics::new(key.0.clone(), key.1.clone()));
        versions.map.insert(key, Arc::downgrade(&metrics));
        if versions.map.len() >= versions.sweep_at {
            versions.map.retain(|_, v| v.strong_count() > 0);
            versions.sweep_at = (versions.map.len() * 2).max(64);
        }
        metrics
    }

    /// Records one request once its response head is ready (phase 7). Its duration
    /// runs from its arrival to now: a streamed body's transfer is not included.
    pub(crate) fn record(&self, ctx: &RequestCtx, response: &Response<ProxyBody>) {
        let metrics = ctx.version.as_ref().map_or(&self.unmatched, |v| &v.metrics);
        // A 429 the gateway made itself (not the upstream's, which streams in `Left`)
        // is always a rate limit or quota refusal: no other gateway error answers 429,
        // and the cache never stores one.
        let rate_limited =
            response.status() == StatusCode::TOO_MANY_REQUESTS && matches!(response.body(), Either::Right(_));
        metrics.observe(response.status(), ctx.started.elapsed(), rate_limited);
    }

    /// The exposition text: request metrics, then upstream targets, then the
    /// configuration.
    pub(crate) fn render(&self, config: &ConfigStatus, targets: &[TargetStatus]) -> String {
        let mut versions: Vec<_> = {
            let versions = self.versions.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            versions.map.values().filter_map(Weak::upgrade).collect()
        };
        versions.push(self.unmatched.clone());
        versions.sort_by(|a, b| (&a.api, &a.version).cmp(&(&b.api, &b.version)));
        let totals: Vec<_> = versions.iter().map(|v| (v.as_ref(), v.totals())).collect();

        let mut out = String::with_capacity(1024 + totals.len() * 2048 + targets.len() * 256);
        family(
            &mut out,
            "turnpike_http_requests_total",
            "counter",
            "Requests answered by the proxy, by API, version and status class; requests that matched no version have empty api and version labels.",
        );
        for (v, t) in &totals {
            for (class, count) in CODE_CLASSES.iter().zip(t.requests) {
                sample(&mut out, "turnpike_http_requests_total", &v.labels(&[("code_class", class)]), count);
            }
        }
        family(
            &mut out,
            "turnpike_http_request_duration_seconds",
            "histogram",
            "Time from a request's arrival until its response head was ready (a streamed body's transfer not included), by API and version.",
        );
        for (v, t) in &totals {
            let mut cumulative = 0;
            for (bound, count) in BUCKETS_NANOS.iter().zip(t.buckets) {
                cumulative += count;
                let le = seconds(*bound);
                sample(
                    &mut out,
                    "turnpike_http_request_duration_seconds_bucket",
                    &v.labels(&[("le", &le)]),
                    cumulative,
                );
            }
            let count = cumulative + t.buckets[BUCKETS_NANOS.len()];
            let labels = v.labels(&[]);
            sample(&mut out, "turnpike_http_request_duration_seconds_bucket", &v.labels(&[("le", "+Inf")]), count);
            sample(&mut out, "turnpike_http_request_duration_seconds_sum", &labels, t.sum_micros as f64 / 1e6);
            sample(&mut out, "turnpike_http_request_duration_seconds_count", &labels, count);
        }
        family(
            &mut out,
            "turnpike_ratelimit_rejected_total",
            "counter",
            "Requests refused with 429 by a rate limit or quota (the version's or the plan's), by API and version.",
        );
        for (v, t) in &totals {
            sample(&mut out, "turnpike_ratelimit_rejected_total", &v.labels(&[]), t.rate_limited);
        }
        family(
            &mut out,
            "turnpike_upstream_target_up",
            "gauge",
            "1 while an upstream target may take requests, 0 while active health checks hold it down, outlier detection has ejected it or its circuit breaker is open.",
        );
        for t in targets {
            let up = u8::from(TargetState::of(t).is_up());
            sample(&mut out, "turnpike_upstream_target_up", &target_labels(t), up);
        }
        family(
            &mut out,
            "turnpike_upstream_target_requests_in_flight",
            "gauge",
            "Requests in flight on an upstream target, responses still streaming included.",
        );
        for t in targets {
            sample(&mut out, "turnpike_upstream_target_requests_in_flight", &target_labels(t), t.in_flight);
        }
        family(
            &mut out,
            "turnpike_config_version",
            "gauge",
            "Version of the applied configuration snapshot; 0 before the first.",
        );
        sample(&mut out, "turnpike_config_version", "", config.config_version.unwrap_or(0));
        family(
            &mut out,
            "turnpike_config_ready",
            "gauge",
            "1 once a configuration snapshot is applied (the gateway routes), else 0.",
        );
        sample(&mut out, "turnpike_config_ready", "", u8::from(config.ready));
        family(
            &mut out,
            "turnpike_config_degraded",
            "gauge",
            "1 while the applied configuration comes only from the last-known-good file (the configuration bus has not been heard from since start), else 0.",
        );
        sample(&mut out, "turnpike_config_degraded", "", u8::from(config.degraded));
        out
    }
}

/// The request counters of one API version (or of unmatched requests).
#[derive(Debug)]
pub(crate) struct VersionMetrics {
    api: String,
    version: String,
    shards: Box<[Shard]>,
}

/// One worker's counters, on cache lines of their own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    requests: [AtomicU64; CODE_CLASSES.len()],
    /// Not cumulative; the last is above the highest bound.
    buckets: [AtomicU64; BUCKETS_NANOS.len() + 1],
    /// Microseconds: nanoseconds would wrap after 584 years of summed latency, which a
    /// busy gateway in front of slow upstreams reaches in months.
    sum_micros: AtomicU64,
    rate_limited: AtomicU64,
}

/// A version's counters added up over its shards.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    requests: [u64; CODE_CLASSES.len()],
    buckets: [u64; BUCKETS_NANOS.len() + 1],
    sum_micros: u64,
    rate_limited: u64,
}

impl VersionMetrics {
    fn new(api: String, version: String) -> VersionMetrics {
        // One per worker slot, as `worker::PerWorker`.
        let shards = (0..worker::slots()).map(|_| Shard::default()).collect();
        VersionMetrics { api, version, shards }
    }

    fn observe(&self, status: StatusCode, elapsed: Duration, rate_limited: bool) {
        let shard = &self.shards[worker::slot()];
        // hyper accepts 100 to 999; codes above 599 are not HTTP's and count as 5xx.
        let class = usize::from(status.as_u16() / 100).clamp(1, CODE_CLASSES.len()) - 1;
        shard.requests[class].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BUCKETS_NANOS.partition_point(|&bound| bound < nanos);
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        shard.sum_micros.fetch_add(nanos / 1_000, Ordering::Relaxed);
        if rate_limited {
            shard.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn totals(&self) -> Totals {
        let mut t = Totals::default();
        let add = |sum: &mut u64, counter: &AtomicU64| *sum = sum.wrapping_add(counter.load(Ordering::Relaxed));
        for shard in &self.shards {
            for (sum, counter) in t.requests.iter_mut().zip(&shard.requests) {
                add(sum, counter);
            }
            for (sum, counter) in t.buckets.iter_mut().zip(&shard.buckets) {
                add(sum, counter);
            }
            add(&mut t.sum_micros, &shard.sum_micros);
            add(&mut t.rate_limited, &shard.rate_limited);
        }
        t
    }

    /// `api="…",version="…"` followed by `extra`, escaped.
    fn labels(&self, extra: &[(&str, &str)]) -> String {
        let mut out = String::with_capacity(self.api.len() + self.version.len() + 48);
        label(&mut out, "api", &self.api);
        label(&mut out, "version", &self.version);
        for (name, value) in extra {
            label(&mut out, name, value);
        }
        out
    }
}

/// Where a target stands, as `/status/upstreams` reports it. When several things
/// hold a target back, the one that keeps it out longest is named: an open breaker
/// is never tried, an unhealthy or ejected target still is when no target is usable
/// (panic mode, see [`crate::upstream`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TargetState {
    Healthy,
    /// The breaker lets trial requests through.
    CircuitHalfOpen,
    CircuitOpen,
    /// Active health checks hold it down.
    Unhealthy,
    /// Passive outlier detection ejected it for a while.
    Ejected,
}

impl TargetState {
    pub(crate) fn of(t: &TargetStatus) -> TargetState {
        match (t.circuit, t.healthy, t.ejected) {
            ("open", _, _) => TargetState::CircuitOpen,
            (_, false, _) => TargetState::Unhealthy,
            (_, _, true) => TargetState::Ejected,
            ("half_open", _, _) => TargetState::CircuitHalfOpen,
            _ => TargetState::Healthy,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TargetState::Healthy => "healthy",
            TargetState::CircuitHalfOpen => "circuit_half_open",
            TargetState::CircuitOpen => "circuit_open",
            TargetState::Unhealthy => "unhealthy",
            TargetState::Ejected => "ejected",
        }
    }

    /// Whether the target takes requests (half-open: its trials).
    pub(crate) fn is_up(self) -> bool {
        matches!(self, TargetState::Healthy | TargetState::CircuitHalfOpen)
    }
}

/// Target URLs never carry credentials: validation refuses user info in them.
fn target_labels(t: &TargetStatus) -> String {
    let mut out = String::with_capacity(t.upstream_id.len() + t.url.len() + 24);
    label(&mut out, "upstream", &t.upstream_id);
    label(&mut out, "target", &t.url);
    out
}

/// `# HELP` and `# TYPE` lines, which must come before the family's samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    for c in help.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    let _ = writeln!(out, "\n# TYPE {name} {kind}");
}

/// `name{labels} value`; `labels` as [`label`] writes them, possibly empty.
fn sample(out: &mut String, name: &str, labels: &str, value: impl std::fmt::Display) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        out.push_str(labels);
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Appends `name="value"` (comma-separated from a previous label), the value escaped
/// as the format requires: backslash, double quote and line feed.
fn label(out: &mut String, name: &str, value: &str) {
    if !out.is_empty() {
        out.push(',');
    }
    out.push_str(name);
    out.push_str("=\"");
    escape_label_value(out, value);
    out.push('"');
}

fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Nanoseconds as seconds, in the shortest decimal that reads back the same.
fn seconds(nanos: u64) -> String {
    // Exact below 2^53 ns (104 days), far beyond any bucket bound.
    (nanos as f64 / 1e9).to_string()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashSet};

    use super::*;

    fn not_ready() -> ConfigStatus {
        ConfigStatus { ready: false, config_version: None, config_checksum: None, source: None, degraded: false }
    }

    fn escaped(value: &str) -> String {
        let mut out = String::new();
        escape_label_value(&mut out, value);
        out
    }

    #[test]
    fn label_values_escape_backslashes_quotes_and_line_feeds() {
        assert_eq!(escaped("plain-v1"), "plain-v1");
        assert_eq!(escaped(r#"a"b"#), r#"a\"b"#);
        assert_eq!(escaped(r"a\b"), r"a\\b");
        assert_eq!(escaped("a\nb"), r"a\nb");
        assert_eq!(escaped("\\\"\n"), r#"\\\"\n"#);
        // Everything else, tabs and non-ASCII included, is written as it is.
        assert_eq!(escaped("tab\there ünï"), "tab\there ünï");
        let mut labels = String::new();
        label(&mut labels, "api", "x\"y");
        label(&mut labels, "version", "");
        assert_eq!(labels, r#"api="x\"y",version="""#);
    }

    #[test]
    fn durations_land_in_the_bucket_their_le_names() {
        let v = VersionMetrics::new("a".into(), "v".into());
        let ms = Duration::from_millis;
        for d in [Duration::ZERO, ms(1), ms(1) + Duration::from_nanos(1), ms(60_000), ms(60_001)] {
            v.observe(StatusCode::OK, d, false);
        }
        let t = v.totals();
        assert_eq!(t.buckets[0], 2, "0 and exactly 1 ms are <= 0.001");
        assert_eq!(t.buckets[1], 1, "just over 1 ms is in le=0.0025");
        assert_eq!(t.buckets[BUCKETS_NANOS.len() - 1], 1, "exactly 60 s is <= 60");
        assert_eq!(t.buckets[BUCKETS_NANOS.len()], 1, "over 60 s is only in +Inf");
        assert_eq!(t.sum_micros, 2_000 + 120_001_000, "in whole microseconds");
        assert_eq!(seconds(BUCKETS_NANOS[1]), "0.0025");
        assert_eq!(seconds(BUCKETS_NANOS[9]), "1");
    }

    #[test]
    fn status_codes_count_by_class() {
        let v = VersionMetrics::new("a".into(), "v".into());
        for code in [101, 200, 204, 304, 404, 429, 500, 599, 999] {
            v.observe(StatusCode::from_u16(code).unwrap(), Duration::ZERO, code == 429);
        }
        let t = v.totals();
        assert_eq!(t.requests, [1, 2, 1, 2, 3]);
        assert_eq!(t.rate_limited, 1);
    }

    #[test]
    fn workers_count_in_their_own_shards_and_scrapes_add_them_up() {
        let v = Arc::new(VersionMetrics::new("a".into(), "v".into()));
        let shards = v.shards.len();
        assert!(shards >= 2, "worker 0 and at least one worker");
        v.observe(StatusCode::OK, Duration::ZERO, false);
        // Workers 1 to `shards`: the last one is beyond the shards and shares worker 0's.
        let threads: Vec<_> = (1..=shards)
            .map(|n| {
                let v = v.clone();
                std::thread::spawn(move || {
                    worker::enter(n);
                    for _ in 0..100 {
                        v.observe(StatusCode::OK, Duration::from_millis(2), false);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let per_shard: Vec<u64> = v.shards.iter().map(|s| s.requests[1].load(Ordering::Relaxed)).collect();
        let mut expected = vec![100; shards];
        expected[0] = 101;
        assert_eq!(per_shard, expected, "each worker wrote its own shard");
        let t = v.totals();
        assert_eq!(t.requests[1], 1 + 100 * shards as u64);
        assert_eq!(t.buckets[..2], [1, 100 * shards as u64]);
    }

    #[test]
    fn versions_share_counters_while_in_use_and_unmatched_labels_stay_unique() {
        let m = Metrics::default();
        let a = m.version("pets", "v1");
        assert!(Arc::ptr_eq(&a, &m.version("pets", "v1")));
        drop(m.version("pets", "v2"));
        assert!(Arc::ptr_eq(&m.version("", ""), &m.unmatched));
        a.observe(StatusCode::OK, Duration::ZERO, false);
        let text = m.render(&not_ready(), &[]);
        assert!(text.contains("turnpike_http_requests_total{api=\"pets\",version=\"v1\",code_class=\"2xx\"} 1\n"));
        assert!(!text.contains("version=\"v2\""), "no configuration uses v2 any more");
        drop(a);
        let fresh = m.version("pets", "v1");
        assert_eq!(fresh.totals(), Totals::default(), "counters go with the last configuration using them");
    }

    #[test]
    fn target_states_and_whether_they_are_up() {
        let status = |healthy, ejected, circuit| TargetStatus {
            upstream_id: "u".into(),
            url: "http://a:1".into(),
            healthy,
            ejected,
            circuit,
            in_flight: 0,
        };
        let cases = [
            (status(true, false, "closed"), TargetState::Healthy, true),
            (status(true, false, "half_open"), TargetState::CircuitHalfOpen, true),
            (status(true, false, "open"), TargetState::CircuitOpen, false),
            (status(false, true, "open"), TargetState::CircuitOpen, false),
            (status(false, true, "closed"), TargetState::Unhealthy, false),
            (status(true, true, "half_open"), TargetState::Ejected, false),
        ];
        for (t, state, up) in cases {
            assert_eq!(TargetState::of(&t), state, "{t:?}");
            assert_eq!(state.is_up(), up, "{state:?}");
        }
    }

    /// A sample's name, labels (unescaped) and value.
    type Sample = (String, Vec<(String, String)>, f64);

    /// A check of the text exposition format 0.0.4, as strict as Prometheus's parser
    /// on what this module writes: HELP and TYPE once per family and before its
    /// samples, families contiguous (each sample belongs to the last TYPE, and a
    /// family has one TYPE), every other line `name{labels} value` with valid
    /// names, properly escaped label values and a float value, no series twice, and
    /// histogram samples named after their family with an `le` label on buckets.
    fn check_exposition(text: &str) -> Vec<Sample> {
        assert!(text.ends_with('\n'), "the last line ends with a line feed");
        let is_name = |s: &str, colon: bool| {
            let mut chars = s.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
        };
        let (mut helped, mut typed) = (HashSet::new(), HashMap::new());
        let (mut current, mut series) = (None::<String>, BTreeSet::new());
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _) = rest.split_once(' ').expect("HELP has a text");
                assert!(is_name(name, true) && helped.insert(name.to_owned()), "one HELP for {name}");
                assert!(!typed.contains_key(name), "HELP of {name} before its TYPE");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{line}");
                assert!(typed.insert(name.to_owned(), kind.to_owned()).is_none(), "one TYPE for {name}");
                current = Some(name.to_owned());
                continue;
            }
            assert!(!line.starts_with('#') && !line.is_empty(), "unexpected line {line:?}");
            let name_end = line.find(['{', ' ']).expect("a sample has a value");
            let name = &line[..name_end];
            assert!(is_name(name, true), "metric name {name:?}");
            let family = current.as_deref().expect("samples follow a TYPE");
            let suffix = name.strip_prefix(family).unwrap_or_else(|| panic!("{name} outside its family {family}"));
            let histogram = typed[family] == "histogram";
            let allowed: &[&str] = if histogram { &["_bucket", "_sum", "_count"] } else { &[""] };
            assert!(allowed.contains(&suffix), "{name} in a {} family", typed[family]);
            // Labels: name="value" pairs, comma-separated, values escaped.
            let mut rest = &line[name_end..];
            let mut labels = Vec::new();
            if let Some(mut body) = rest.strip_prefix('{') {
                loop {
                    let (label_name, after) = body.split_once("=\"").expect("label name=\"value\"");
                    assert!(is_name(label_name, false), "label name {label_name:?}");
                    let mut value = String::new();
                    let mut chars = after.char_indices();
                    let end = loop {
                        match chars.next().expect("label value is closed") {
                            (i, '"') => break i,
                            (_, '\\') => match chars.next().expect("escape is complete").1 {
                                '\\' => value.push('\\'),
                                '"' => value.push('"'),
                                'n' => value.push('\n'),
                                other => panic!("invalid escape \\{other}"),
                            },
                            (_, c) => value.push(c),
                        }
                    };
                    assert!(labels.iter().all(|(n, _)| n != label_name), "label {label_name} twice");
                    labels.push((label_name.to_owned(), value));
                    let after = &after[end + 1..];
                    if let Some(next) = after.strip_prefix(',') {
                        body = next;
                        continue;
                    }
                    rest = after.strip_prefix('}').expect("labels are closed");
                    break;
                }
            }
            let value = rest.strip_prefix(' ').expect("one space before the value");
            let parsed: f64 = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("value {v:?} of {line}")),
            };
            if suffix == "_bucket" {
                assert!(labels.iter().any(|(n, _)| n == "le"), "{line} has le");
            }
            assert!(series.insert((name.to_owned(), labels.clone())), "series twice: {line}");
            samples.push((name.to_owned(), labels, parsed));
        }
        for name in typed.keys() {
            assert!(helped.contains(name), "{name} has HELP");
        }
        samples
    }

    #[test]
    fn output_is_valid_exposition_text() {
        let m = Metrics::default();
        let odd = m.version("we\"ird\\api", "v\n1");
        let plain = m.version("pets", "v1");
        odd.observe(StatusCode::OK, Duration::from_millis(3), false);
        plain.observe(StatusCode::TOO_MANY_REQUESTS, Duration::from_micros(10), true);
        m.unmatched.observe(StatusCode::NOT_FOUND, Duration::from_secs(90), false);
        let config = ConfigStatus {
            ready: true,
            config_version: Some(7),
            config_checksum: Some("c".into()),
            source: Some(crate::config::ConfigSource::Bus),
            degraded: false,
        };
        let target = TargetStatus {
            upstream_id: "u\"1".into(),
            url: "http://a:1".into(),
            healthy: false,
            ejected: false,
            circuit: "closed",
            in_flight: 2,
        };
        let text = m.render(&config, &[target]);
        let samples = check_exposition(&text);
        let value = |name: &str, labels: &[(&str, &str)]| {
            let found: Vec<_> = samples
                .iter()
                .filter(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.iter().any(|(a, b)| a == k && b == v)))
                .collect();
            assert_eq!(found.len(), 1, "{name} {labels:?} in\n{text}");
            found[0].2
        };
        let odd_labels = [("api", "we\"ird\\api"), ("version", "v\n1")];
        assert_eq!(value("turnpike_http_requests_total", &[odd_labels[0], odd_labels[1], ("code_class", "2xx")]), 1.0);
        assert_eq!(value("turnpike_http_request_duration_seconds_count", &odd_labels), 1.0);
        assert_eq!(value("turnpike_http_request_duration_seconds_bucket", &[odd_labels[1], ("le", "0.0025")]), 0.0);
        assert_eq!(value("turnpike_http_request_duration_seconds_bucket", &[odd_labels[1], ("le", "0.005")]), 1.0);
        assert_eq!(value("turnpike_http_request_duration_seconds_sum", &odd_labels), 0.003);
        assert_eq!(value("turnpike_ratelimit_rejected_total", &[("api", "pets")]), 1.0);
        assert_eq!(value("turnpike_http_request_duration_seconds_bucket", &[("api", ""), ("le", "60")]), 0.0);
        assert_eq!(value("turnpike_http_request_duration_seconds_bucket", &[("api", ""), ("le", "+Inf")]), 1.0);
        assert_eq!(value("turnpike_upstream_target_up", &[("upstream", "u\"1"), ("target", "http://a:1")]), 0.0);
        assert_eq!(value("turnpike_upstream_target_requests_in_flight", &[("upstream", "u\"1")]), 2.0);
        assert_eq!(value("turnpike_config_version", &[]), 7.0);
        assert_eq!(value("turnpike_config_ready", &[]), 1.0);
        assert_eq!(value("turnpike_config_degraded", &[]), 0.0);
        // Before the first snapshot, and with nothing recorded, the text is valid too.
        check_exposition(&Metrics::default().render(&not_ready(), &[]));
    }

    #[test]
    fn the_checker_refuses_what_the_format_does_not_allow() {
        let valid = "# HELP m h\n# TYPE m counter\nm{a=\"x\"} 1\n";
        check_exposition(valid);
        for bad in [
            "# TYPE m counter\nm 1\n",                                                            // no HELP
            "# HELP m h\n# TYPE m counter\nm{a=\"x\n\"} 1\n",                                     // raw line feed
            "# HELP m h\n# TYPE m counter\nm{a=\"x\\t\"} 1\n",                                    // unknown escape
            "# HELP m h\n# TYPE m counter\nm{a=\"x\"} one\n",                                     // not a number
            "# HELP m h\n# TYPE m counter\nm 1\nm 2\n",                                           // series twice
            "# HELP m h\n# TYPE m counter\nm_bucket 1\n",                                         // not a histogram
            "# HELP m h\n# TYPE m counter\nm 1\n# HELP n h\n# TYPE n gauge\nn 1\nm{a=\"b\"} 1\n", // m split in two
        ] {
            let result = std::panic::catch_unwind(|| check_exposition(bad));
            assert!(result.is_err(), "accepted {bad:?}");
        }
    }
}
