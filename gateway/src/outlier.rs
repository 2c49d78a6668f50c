//! Passive outlier detection for one upstream target: `consecutive_failures` failed
//! requests in a row (connect errors, timeouts, 5xx answers) eject the target for
//! `base_ejection_ms × 2^(n-1)`, where n counts the ejections since the target last
//! answered successfully, capped at ten doublings. Time is passed in.

use std::time::{Duration, Instant};

use turnpike_domain::model::OutlierDetection;

/// At most this many doublings of the base ejection time.
const MAX_DOUBLINGS: u32 = 10;

#[derive(Debug, Clone, Default)]
pub struct Outlier {
    consecutive_failures: u32,
    /// Ejections since the last success; sets the back-off.
    ejections: u32,
    ejected_until: Option<Instant>,
}

impl Outlier {
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    /// Counts an outcome; returns how long the target is now ejected for when this
    /// failure ejected it.
    pub fn record(&mut self, ok: bool, cfg: &OutlierDetection, now: Instant) -> Option<Duration> {
        if !cfg.enabled {
            return None;
        }
        if ok {
            self.consecutive_failures = 0;
            self.ejections = 0;
            return None;
        }
        self.consecutive_failures += 1;
        // Failures of requests still in flight when the target was ejected do not
        // extend the ejection.
        if self.consecutive_failures < cfg.consecutive_failures.max(1) || self.is_ejected(now) {
            return None;
        }
        self.consecutive_failures = 0;
        self.ejections = self.ejections.saturating_add(1);
        let duration = ejection_time(cfg.base_ejection_ms, self.ejections);
        self.ejected_until = Some(now + duration);
        Some(duration)
    }
}

/// `base × 2^(n-1)`, with at most [`MAX_DOUBLINGS`] doublings.
pub fn ejection_time(base_ms: u64, ejections: u32) -> Duration {
    let doublings = ejections.saturating_sub(1).min(MAX_DOUBLINGS);
    Duration::from_millis(base_ms.saturating_mul(1 << doublings))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(failures: u32, base_ms: u64) -> OutlierDetection {
        OutlierDetection { enabled: true, consecutive_failures: failures, base_ejection_ms: base_ms }
    }

    #[test]
    fn back_off_doubles_and_is_capped() {
        assert_eq!(ejection_time(100, 1), Duration::from_millis(100));
        assert_eq!(ejection_time(100, 2), Duration::from_millis(200));
        assert_eq!(ejection_time(100, 4), Duration::from_millis(800));
        assert_eq!(ejection_time(100, 11), Duration::from_millis(102_400));
        assert_eq!(ejection_time(100, 50), Duration::from_millis(102_400));
    }

    #[test]
    fn consecutive_failures_eject_for_a_growing_time() {
        let cfg = cfg(3, 100);
        let t0 = Instant::now();
        let mut o = Outlier::default();
        assert_eq!(o.record(false, &cfg, t0), None);
        assert_eq!(o.record(false, &cfg, t0), None);
        assert_eq!(o.record(false, &cfg, t0), Some(Duration::from_millis(100)));
        assert!(o.is_ejected(t0 + Duration::from_millis(99)));
        assert!(!o.is_ejected(t0 + Duration::from_millis(100)));
        // Back from ejection and still failing: twice as long.
        let t1 = t0 + Duration::from_millis(100);
        o.record(false, &cfg, t1);
        o.record(false, &cfg, t1);
        assert_eq!(o.record(false, &cfg, t1), Some(Duration::from_millis(200)));
        assert!(o.is_ejected(t1 + Duration::from_millis(199)));
    }

    #[test]
    fn a_success_resets_the_count_and_the_back_off() {
        let cfg = cfg(2, 100);
        let t0 = Instant::now();
        let mut o = Outlier::default();
        o.record(false, &cfg, t0);
        o.record(true, &cfg, t0);
        assert_eq!(o.record(false, &cfg, t0), None, "the success broke the streak");
        assert_eq!(o.record(false, &cfg, t0), Some(Duration::from_millis(100)));
        let t1 = t0 + Duration::from_millis(100);
        o.record(true, &cfg, t1);
        o.record(false, &cfg, t1);
        assert_eq!(o.record(false, &cfg, t1), Some(Duration::from_millis(100)), "back-off starts over");
    }

    #[test]
    fn late_failures_do_not_extend_an_ejection_and_disabled_detection_never_ejects() {
        let t0 = Instant::now();
        let mut o = Outlier::default();
        let one = cfg(1, 100);
        assert!(o.record(false, &one, t0).is_some());
        assert_eq!(o.record(false, &one, t0 + Duration::from_millis(50)), None);
        assert!(!o.is_ejected(t0 + Duration::from_millis(100)));

        let mut o = Outlier::default();
        let off = OutlierDetection { enabled: false, ..one };
        for _ in 0..10 {
            assert_eq!(o.record(false, &off, t0), None);
        }
        assert!(!o.is_ejected(t0));
    }
}
