//! The circuit breaker of one upstream target: after `failure_threshold` consecutive
//! failures it opens and the target gets no traffic for `open_ms`; then it lets
//! `half_open_requests` trial requests through. It closes when every trial succeeds
//! and opens again on the first failed trial. Time is passed in, so the state
//! machine is tested without clocks.

use std::time::{Duration, Instant};

use turnpike_domain::model::CircuitBreaker;

/// Why a request was let through, so that its outcome is counted the right way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The breaker was closed (or disabled).
    Normal,
    /// One of the half-open trials.
    Trial,
}

/// What the status listener and tests see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerPhase {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerPhase::Closed => "closed",
            BreakerPhase::Open => "open",
            BreakerPhase::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// `permits` trials may still start; `successes` have already succeeded.
    HalfOpen {
        permits: u32,
        successes: u32,
    },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    state: State,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker { state: State::Closed { failures: 0 } }
    }
}

impl Breaker {
    /// Whether a request may go to the target now; `None` while the breaker is open
    /// or all half-open trials are taken.
    pub fn admit(&mut self, cfg: &CircuitBreaker, now: Instant) -> Option<Admission> {
        if !cfg.enabled {
            return Some(Admission::Normal);
        }
        match &mut self.state {
            State::Closed { .. } => Some(Admission::Normal),
            State::Open { until } if now < *until => None,
            State::Open { .. } => {
                let trials = cfg.half_open_requests.max(1);
                self.state = State::HalfOpen { permits: trials - 1, successes: 0 };
                Some(Admission::Trial)
            }
            State::HalfOpen { permits, .. } if *permits > 0 => {
                *permits -= 1;
                Some(Admission::Trial)
            }
            State::HalfOpen { .. } => None,
        }
    }

    /// Counts the outcome of an admitted request. Returns true when the phase changed.
    pub fn record(&mut self, admission: Admission, ok: bool, cfg: &CircuitBreaker, now: Instant) -> bool {
        if !cfg.enabled {
            return false;
        }
        let before = self.phase(now);
        let open = State::Open { until: now + Duration::from_millis(cfg.open_ms) };
        match (&mut self.state, admission) {
            (State::Closed { failures }, _) if ok => *failures = 0,
            (State::Closed { failures }, _) => {
                *failures += 1;
                if *failures >= cfg.failure_threshold.max(1) {
                    self.state = open;
                }
            }
            (State::HalfOpen { .. }, Admission::Trial) if !ok => self.state = open,
            (State::HalfOpen { successes, .. }, Admission::Trial) => {
                *successes += 1;
                if *successes >= cfg.half_open_requests.max(1) {
                    self.state = State::Closed { failures: 0 };
                }
            }
            // Outcomes of requests admitted before the breaker opened (or before this
            // half-open round) say nothing about the target's recovery.
            (State::HalfOpen { .. }, Admission::Normal) | (State::Open { .. }, _) => {}
        }
        before != self.phase(now)
    }

    /// Gives back the permit of a request that ended without an outcome (the client
    /// went away), so a half-open breaker does not wait for a trial that never ends.
    pub fn release(&mut self, admission: Admission) {
        if let (State::HalfOpen { permits, .. }, Admission::Trial) = (&mut self.state, admission) {
            *permits += 1;
        }
    }

    pub fn phase(&self, now: Instant) -> BreakerPhase {
        match self.state {
            State::Closed { .. } => BreakerPhase::Closed,
            State::Open { until } if now < until => BreakerPhase::Open,
            // Open past its deadline: the next request will be a trial.
            State::Open { .. } | State::HalfOpen { .. } => BreakerPhase::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(threshold: u32, open_ms: u64, trials: u32) -> CircuitBreaker {
        CircuitBreaker { enabled: true, failure_threshold: threshold, open_ms, half_open_requests: trials }
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let cfg = cfg(3, 1_000, 1);
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for ok in [false, false, true, false, false] {
            let a = b.admit(&cfg, t0).unwrap();
            assert!(!b.record(a, ok, &cfg, t0));
        }
        assert_eq!(b.phase(t0), BreakerPhase::Closed, "a success in between resets the count");
        let a = b.admit(&cfg, t0).unwrap();
        assert!(b.record(a, false, &cfg, t0));
        assert_eq!(b.phase(t0), BreakerPhase::Open);
        assert_eq!(b.admit(&cfg, t0 + Duration::from_millis(999)), None);
    }

    #[test]
    fn half_open_lets_the_configured_trials_through_and_closes_when_they_succeed() {
        let cfg = cfg(1, 100, 2);
        let t0 = Instant::now();
        let mut b = Breaker::default();
        let a = b.admit(&cfg, t0).unwrap();
        b.record(a, false, &cfg, t0);
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(b.phase(t1), BreakerPhase::HalfOpen);
        let first = b.admit(&cfg, t1).unwrap();
        let second = b.admit(&cfg, t1).unwrap();
        assert_eq!((first, second), (Admission::Trial, Admission::Trial));
        assert_eq!(b.admit(&cfg, t1), None, "only two trials at a time");
        assert!(!b.record(first, true, &cfg, t1));
        assert_eq!(b.phase(t1), BreakerPhase::HalfOpen);
        assert!(b.record(second, true, &cfg, t1));
        assert_eq!(b.phase(t1), BreakerPhase::Closed);
        assert_eq!(b.admit(&cfg, t1), Some(Admission::Normal));
    }

    #[test]
    fn a_failed_trial_opens_again_for_a_full_period() {
        let cfg = cfg(1, 100, 1);
        let t0 = Instant::now();
        let mut b = Breaker::default();
        let a = b.admit(&cfg, t0).unwrap();
        b.record(a, false, &cfg, t0);
        let t1 = t0 + Duration::from_millis(150);
        let trial = b.admit(&cfg, t1).unwrap();
        assert!(b.record(trial, false, &cfg, t1));
        assert_eq!(b.phase(t1 + Duration::from_millis(99)), BreakerPhase::Open);
        assert_eq!(b.admit(&cfg, t1 + Duration::from_millis(99)), None);
        assert_eq!(b.admit(&cfg, t1 + Duration::from_millis(100)), Some(Admission::Trial));
    }

    #[test]
    fn cancelled_trials_are_given_back_and_stale_outcomes_ignored() {
        let cfg = cfg(1, 100, 1);
        let t0 = Instant::now();
        let mut b = Breaker::default();
        let before_open = b.admit(&cfg, t0).unwrap();
        let a = b.admit(&cfg, t0).unwrap();
        b.record(a, false, &cfg, t0);
        // A request admitted while closed ends after the breaker opened: ignored.
        assert!(!b.record(before_open, true, &cfg, t0));
        assert_eq!(b.phase(t0), BreakerPhase::Open);
        let t1 = t0 + Duration::from_millis(100);
        let trial = b.admit(&cfg, t1).unwrap();
        assert_eq!(b.admit(&cfg, t1), None);
        b.release(trial);
        let again = b.admit(&cfg, t1).unwrap();
        assert_eq!(again, Admission::Trial);
        assert!(b.record(again, true, &cfg, t1));
        assert_eq!(b.phase(t1), BreakerPhase::Closed);
    }

    #[test]
    fn disabled_breakers_admit_everything() {
        let cfg = CircuitBreaker { enabled: false, ..cfg(1, 100, 1) };
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..5 {
            let a = b.admit(&cfg, t0).unwrap();
            assert!(!b.record(a, false, &cfg, t0));
        }
        assert_eq!(b.phase(t0), BreakerPhase::Closed);
    }
}
