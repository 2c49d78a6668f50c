//! Active health checks: one background task per upstream with
//! `health_check.enabled`, probing `GET {target}{path}` on every target each
//! `interval_ms`, each probe within `timeout_ms`. A 2xx or 3xx answer is a success.
//! `unhealthy_threshold` failures in a row take a target out of rotation and
//! `healthy_threshold` successes in a row bring it back.
//!
//! The task stops when its [`HealthChecker`] is dropped, i.e. when the last compiled
//! configuration holding the upstream goes away, or when a snapshot changes the
//! upstream's checks or targets (a new checker takes over; target health is kept).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::header::USER_AGENT;
use http::{HeaderValue, Request};
use http_body_util::BodyExt;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use turnpike_domain::model::HealthCheck;

use crate::registry::ClientKey;
use crate::upstream::{HttpClient, TargetState, UpstreamTarget, empty_body};

const PROBE_USER_AGENT: HeaderValue = HeaderValue::from_static("turnpike-health-check");

/// What a checker checks; a snapshot with the same key keeps the running checker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HealthKey {
    pub check: HealthCheck,
    pub urls: Vec<String>,
    pub client_key: ClientKey,
}

/// A running health-check task; dropping it stops the task.
#[derive(Debug)]
pub(crate) struct HealthChecker {
    key: HealthKey,
    _stop: oneshot::Sender<()>,
}

impl HealthChecker {
    /// Starts probing; `None` outside a Tokio runtime (nothing could run the task).
    pub fn start(
        upstream_id: &str,
        key: HealthKey,
        probes: Vec<(UpstreamTarget, Arc<TargetState>)>,
        client: HttpClient,
        running: Running,
    ) -> Option<HealthChecker> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(upstream = %upstream_id, "no async runtime; health checks are off");
            return None;
        };
        let (stop, stopped) = oneshot::channel();
        let task = Task { upstream_id: upstream_id.to_owned(), check: key.check.clone(), probes, client };
        runtime.spawn(task.run(stopped, running));
        Some(HealthChecker { key, _stop: stop })
    }

    pub fn key(&self) -> &HealthKey {
        &self.key
    }
}

/// Counts running checkers (and announces starts and stops) for as long as it lives.
#[derive(Debug)]
pub(crate) struct Running {
    count: Arc<AtomicUsize>,
    events: Arc<watch::Sender<u64>>,
}

impl Running {
    pub fn new(count: Arc<AtomicUsize>, events: Arc<watch::Sender<u64>>) -> Running {
        count.fetch_add(1, Ordering::SeqCst);
        events.send_modify(|n| *n = n.wrapping_add(1));
        Running { count, events }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::SeqCst);
        self.events.send_modify(|n| *n = n.wrapping_add(1));
    }
}

struct Task {
    upstream_id: String,
    check: HealthCheck,
    probes: Vec<(UpstreamTarget, Arc<TargetState>)>,
    client: HttpClient,
}

impl Task {
    async fn run(self, mut stop: oneshot::Receiver<()>, _running: Running) {
        tracing::debug!(upstream = %self.upstream_id, "health checks started");
        let interval = Duration::from_millis(self.check.interval_ms.max(1));
        let timeout = Duration::from_millis(self.check.timeout_ms.max(1));
        let path =
            if self.check.path.starts_with('/') { self.check.path.clone() } else { format!("/{}", self.check.path) };
        let mut streaks = vec![Streak::default(); self.probes.len()];
        loop {
            let mut round = JoinSet::new();
            for (i, (target, _)) in self.probes.iter().enumerate() {
                let client = self.client.clone();
                let uri = target.uri(&path, None).ok();
                round.spawn(async move {
                    let ok = match uri {
                        Some(uri) => probe(&client, uri, timeout).await,
                        None => false,
                    };
                    (i, ok)
                });
            }
            // Dropping the set on stop aborts the probes in flight.
            let results = tokio::select! {
                _ = &mut stop => break,
                results = round.join_all() => results,
            };
            for (i, ok) in results {
                let (target, state) = &self.probes[i];
                if let Some(healthy) = streaks[i].observe(ok, state.is_healthy(), &self.check) {
                    tracing::debug!(upstream = %self.upstream_id, target = %target.url(), healthy, "health changed");
                    state.set_healthy(healthy);
                }
            }
            tokio::select! {
                _ = &mut stop => break,
                () = tokio::time::sleep(interval) => {}
            }
        }
        tracing::debug!(upstream = %self.upstream_id, "health checks stopped");
    }
}

/// One probe: true for a 2xx or 3xx answer within `timeout` (body included).
async fn probe(client: &HttpClient, uri: http::Uri, timeout: Duration) -> bool {
    let mut request = Request::new(empty_body());
    *request.uri_mut() = uri;
    request.headers_mut().insert(USER_AGENT, PROBE_USER_AGENT);
    let exchange = async {
        let response = client.request(request).await.ok()?;
        let ok = response.status().is_success() || response.status().is_redirection();
        // Read the body so the connection can go back to the pool.
        response.into_body().collect().await.ok()?;
        Some(ok)
    };
    matches!(tokio::time::timeout(timeout, exchange).await, Ok(Some(true)))
}

/// Consecutive probe results of one target.
#[derive(Debug, Clone, Copy, Default)]
struct Streak {
    successes: u32,
    failures: u32,
}

impl Streak {
    /// Counts a probe; returns the target's new health when it crosses a threshold.
    fn observe(&mut self, ok: bool, healthy: bool, check: &HealthCheck) -> Option<bool> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            (!healthy && self.successes >= check.healthy_threshold.max(1)).then_some(true)
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            (healthy && self.failures >= check.unhealthy_threshold.max(1)).then_some(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_of_consecutive_results_move_a_target() {
        let check = HealthCheck { healthy_threshold: 2, unhealthy_threshold: 3, ..Default::default() };
        let mut s = Streak::default();
        let mut healthy = true;
        let mut changes = vec![];
        for ok in [false, false, true, false, false, false, true, false, true, true, false] {
            if let Some(h) = s.observe(ok, healthy, &check) {
                healthy = h;
                changes.push(h);
            }
        }
        // Down after the 3 failures in a row (not the 2 before the success), back up
        // after 2 successes in a row (not the lone one), then one failure is nothing.
        assert_eq!(changes, [false, true]);
        assert!(healthy);
    }
}
