//! Prometheus metrics and upstream status on the status listener: counts by version
//! and status class from real requests through a real gateway, the histogram's
//! consistency, and targets reported down once they fail their health checks.

use std::time::Instant;

use axum::extract::Path;
use axum::http::StatusCode;
use turnpike_domain::model::{CircuitBreaker, HealthCheck, OutlierDetection, RateLimit, Retries};
use turnpike_domain::policy::Policies;

use super::*;

/// Plenty for anything that happens on loopback; only reached when a test fails.
const DEADLINE: Duration = Duration::from_secs(10);

/// An upstream answering `/code/{status}` with that status and an empty body.
async fn status_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/code/{code}",
        axum::routing::get(|Path(code): Path<u16>| async move { StatusCode::from_u16(code).unwrap() }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// A loopback address nothing listens on.
async fn closed_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap()
}

/// One scrape of `/metrics`: every sample by its series as written
/// (`name{label="value",…}`), with the value.
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    async fn of(gw: &TestGateway) -> Scrape {
        let response = gw.http.get(format!("http://{}/metrics", gw.status)).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
        let text = response.text().await.unwrap();
        let mut samples = BTreeMap::new();
        let mut described = std::collections::BTreeSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                described.insert(rest.split(' ').next().unwrap().to_owned());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample without value: {line}"));
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| described.contains(*f)))
                .unwrap_or(name);
            assert!(described.contains(family), "{name} has no TYPE before it");
            let value = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
            assert!(samples.insert(series.to_owned(), value).is_none(), "series twice: {line}");
        }
        Scrape(samples)
    }

    /// The value of one series; labels in the order the gateway writes them.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = series(name, labels);
        *self.0.get(&key).unwrap_or_else(|| panic!("no series {key} in {:#?}", self.0))
    }

    /// Requests of a version by class, `1xx` to `5xx`.
    fn requests(&self, api: &str, version: &str) -> [f64; 5] {
        ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| {
            self.get("turnpike_http_requests_total", &[("api", api), ("version", version), ("code_class", class)])
        })
    }

    /// Checks the version's histogram against its request count and the time the
    /// requests can have taken at most, and returns its count.
    fn histogram(&self, api: &str, version: &str, at_most: Duration) -> f64 {
        let name = "turnpike_http_request_duration_seconds";
        let labels = [("api", api), ("version", version)];
        let buckets: Vec<(String, f64)> = self
            .0
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{name}_bucket{{api=\"{api}\",version=\"{version}\",le=")))
            .map(|(k, v)| (k.rsplit_once("le=\"").unwrap().1.trim_end_matches("\"}").to_owned(), *v))
            .collect();
        let mut bounds: Vec<(f64, f64)> = buckets
            .iter()
            .map(|(le, v)| (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() }, *v))
            .collect();
        bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        assert_eq!(bounds.len(), 16, "15 bounds and +Inf: {buckets:?}");
        assert!(bounds.windows(2).all(|w| w[0].1 <= w[1].1), "buckets are cumulative: {bounds:?}");
        let count = self.get(&format!("{name}_count"), &labels);
        let sum = self.get(&format!("{name}_sum"), &labels);
        assert_eq!(bounds.last().unwrap().1, count, "+Inf is the count");
        assert_eq!(count, self.requests(api, version).iter().sum::<f64>(), "every request is timed once");
        if count == 0.0 {
            assert_eq!(sum, 0.0);
        } else {
            assert!(sum > 0.0 && sum <= at_most.as_secs_f64(), "sum {sum} within the {at_most:?} the requests took");
        }
        count
    }
}

/// `name{a="1",b="2"}`, or `name` without labels.
fn series(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_owned();
    }
    let labels: Vec<_> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

fn all_paths(id: &str, base: &str, upstream: &str) -> SnapshotVersion {
    version(id, base, VersionState::Published, Some(upstream), vec![route("all", "/*")])
}

#[tokio::test]
async fn metrics_count_requests_by_version_and_status_class() {
    let echo = EchoServer::start("a").await;
    let codes = status_server().await;
    let closed = closed_port().await;
    let gw = TestGateway::start().await;
    let mut limited = all_paths("limited", "/limited", "echo");
    limited.policies =
        Policies { rate_limit: Some(RateLimit { requests: 2, per_seconds: 3600 }), ..Default::default() };
    let mut down = upstream("down", &[(format!("http://{closed}"), 1)]);
    down.spec.retries = Retries { attempts: 0, ..Default::default() };
    let snapshot = content(
        vec![
            all_paths("v1", "/pets/v1", "echo"),
            all_paths("down", "/down", "down"),
            all_paths("codes", "/codes", "codes"),
            limited,
            version("old", "/old", VersionState::Retired, Some("echo"), vec![route("all", "/*")]),
        ],
        vec![upstream("echo", &[(echo.url(), 1)]), upstream("codes", &[(format!("http://{codes}"), 1)]), down],
    );
    let before = Scrape::of(&gw).await;
    assert_eq!(before.get("turnpike_config_ready", &[]), 0.0);
    assert_eq!(before.get("turnpike_config_version", &[]), 0.0);
    gw.publish(1, snapshot.clone()).await;

    let started = Instant::now();
    for _ in 0..3 {
        echoed(gw.get("/pets/v1/dogs").await).await;
    }
    // The status endpoints are not on the proxy port: these are unmatched 404s.
    for path in ["/metrics", "/status/upstreams", "/nowhere"] {
        problem(gw.get(path).await, 404, "no-route").await;
    }
    problem(gw.get("/down/x").await, 502, "upstream-unreachable").await;
    echoed(gw.get("/limited/x").await).await;
    echoed(gw.get("/limited/x").await).await;
    problem(gw.get("/limited/x").await, 429, "rate-limited").await;
    for code in [304, 429, 503] {
        assert_eq!(gw.get(&format!("/codes/code/{code}")).await.status().as_u16(), code);
    }
    problem(gw.get("/old/x").await, 410, "version-retired").await;
    let elapsed = started.elapsed();

    let m = Scrape::of(&gw).await;
    assert_eq!(m.requests("pets", "v1"), [0.0, 3.0, 0.0, 0.0, 0.0]);
    assert_eq!(m.requests("", ""), [0.0, 0.0, 0.0, 3.0, 0.0], "unmatched requests");
    assert_eq!(m.requests("pets", "down"), [0.0, 0.0, 0.0, 0.0, 1.0]);
    assert_eq!(m.requests("pets", "limited"), [0.0, 2.0, 0.0, 1.0, 0.0]);
    assert_eq!(m.requests("pets", "codes"), [0.0, 0.0, 1.0, 1.0, 1.0]);
    assert_eq!(m.requests("pets", "old"), [0.0, 0.0, 0.0, 1.0, 0.0]);
    let rejected = |version| m.get("turnpike_ratelimit_rejected_total", &[("api", "pets"), ("version", version)]);
    assert_eq!(rejected("limited"), 1.0);
    assert_eq!(rejected("codes"), 0.0, "the upstream's own 429 is no rate limit of the gateway's");
    assert_eq!(m.get("turnpike_ratelimit_rejected_total", &[("api", ""), ("version", "")]), 0.0);
    let counts: Vec<f64> = [("pets", "v1"), ("", ""), ("pets", "down"), ("pets", "limited"), ("pets", "codes")]
        .iter()
        .map(|(api, version)| m.histogram(api, version, elapsed))
        .collect();
    assert_eq!(counts, [3.0, 3.0, 1.0, 3.0, 3.0]);
    assert_eq!(m.get("turnpike_config_version", &[]), 1.0);
    assert_eq!(m.get("turnpike_config_ready", &[]), 1.0);
    assert_eq!(m.get("turnpike_config_degraded", &[]), 0.0);
    let target = format!("http://{closed}");
    assert_eq!(m.get("turnpike_upstream_target_up", &[("upstream", "echo"), ("target", &echo.url())]), 1.0);
    assert_eq!(m.get("turnpike_upstream_target_requests_in_flight", &[("upstream", "down"), ("target", &target)]), 0.0);

    // A new snapshot keeps the counters of the versions it still has.
    gw.publish(2, snapshot).await;
    echoed(gw.get("/pets/v1/dogs").await).await;
    let m = Scrape::of(&gw).await;
    assert_eq!(m.requests("pets", "v1"), [0.0, 4.0, 0.0, 0.0, 0.0]);
    assert_eq!(m.requests("pets", "limited"), [0.0, 2.0, 0.0, 1.0, 0.0]);
    assert_eq!(m.get("turnpike_config_version", &[]), 2.0);
    assert_eq!(m.histogram("pets", "v1", started.elapsed()), 4.0);
}

#[tokio::test]
async fn targets_failing_health_checks_or_ejected_are_down_in_metrics_and_status() {
    let echo = EchoServer::start("a").await;
    let closed = closed_port().await;
    let dead = format!("http://{closed}");
    let gw = TestGateway::start().await;
    let mut checked = upstream("checked", &[(echo.url(), 1), (dead.clone(), 1)]);
    checked.spec.health_check = HealthCheck {
        enabled: true,
        path: "/health".into(),
        interval_ms: 50,
        timeout_ms: 500,
        healthy_threshold: 1,
        unhealthy_threshold: 1,
    };
    // One failure ejects the only target of `flaky`; no breaker, no retries.
    let mut flaky = upstream("flaky", &[(dead.clone(), 1)]);
    flaky.spec.outlier_detection =
        OutlierDetection { enabled: true, consecutive_failures: 1, base_ejection_ms: 60_000 };
    flaky.spec.circuit_breaker = CircuitBreaker { enabled: false, ..Default::default() };
    flaky.spec.retries = Retries { attempts: 0, ..Default::default() };
    gw.publish(
        1,
        content(
            vec![all_paths("checked", "/checked", "checked"), all_paths("flaky", "/flaky", "flaky")],
            vec![checked, flaky],
        ),
    )
    .await;
    let failed =
        gw.store.upstreams().wait_until(DEADLINE, |r| r.target("checked", &dead).is_some_and(|t| !t.healthy)).await;
    assert!(failed, "the dead target failed its health check");
    problem(gw.get("/flaky/x").await, 502, "upstream-unreachable").await;

    let m = Scrape::of(&gw).await;
    let up =
        |upstream, target: &str| m.get("turnpike_upstream_target_up", &[("upstream", upstream), ("target", target)]);
    assert_eq!(up("checked", &echo.url()), 1.0);
    assert_eq!(up("checked", &dead), 0.0, "failed its health check");
    assert_eq!(up("flaky", &dead), 0.0, "ejected");

    let (code, status) = gw.status("/status/upstreams").await;
    assert_eq!(code, 200);
    let target = |url: &str, state: &str, healthy: bool, ejected: bool| {
        json!({
            "url": url, "state": state, "up": state == "healthy", "healthy": healthy,
            "ejected": ejected, "circuit": "closed", "in_flight": 0,
        })
    };
    let mut checked_targets =
        vec![target(&echo.url(), "healthy", true, false), target(&dead, "unhealthy", false, false)];
    checked_targets.sort_by_key(|t| t["url"].as_str().unwrap().to_owned());
    assert_eq!(
        status,
        json!({"upstreams": [
            {"id": "checked", "targets": checked_targets},
            {"id": "flaky", "targets": [target(&dead, "ejected", true, true)]},
        ]})
    );
}
