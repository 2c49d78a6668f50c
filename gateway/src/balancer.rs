//! Load balancing over an upstream's targets: weighted round robin with a schedule
//! computed once per snapshot, so picking a target is one atomic increment.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Weighted round robin. Over every `sum(weights) / gcd(weights)` consecutive picks
/// each target is chosen exactly in proportion to its weight, and the order is
/// interleaved ("smooth", as nginx does it) rather than in blocks, so a heavy
/// target never takes a long burst alone.
#[derive(Debug)]
pub struct WeightedRoundRobin {
    schedule: Box<[u32]>,
    cursor: AtomicUsize,
}

impl WeightedRoundRobin {
    /// Builds the schedule; `None` when no target has a positive weight.
    pub fn new(weights: &[u32]) -> Option<Self> {
        let divisor = weights.iter().copied().filter(|w| *w > 0).reduce(gcd)?;
        let weights: Vec<i64> = weights.iter().map(|w| i64::from(w / divisor)).collect();
        let total: i64 = weights.iter().sum();
        let mut current = vec![0i64; weights.len()];
        let mut schedule = Vec::with_capacity(usize::try_from(total).ok()?);
        for _ in 0..total {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += w;
            }
            let (best, _) = current
                .iter()
                .enumerate()
                .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
                .expect("at least one weight is positive");
            current[best] -= total;
            schedule.push(u32::try_from(best).ok()?);
        }
        Some(WeightedRoundRobin { schedule: schedule.into_boxed_slice(), cursor: AtomicUsize::new(0) })
    }

    /// Index of the target for the next request.
    pub fn next(&self) -> usize {
        // Relaxed is enough: picks need to be spread, not ordered with other memory.
        let n = self.cursor.fetch_add(1, Ordering::Relaxed);
        self.schedule[n % self.schedule.len()] as usize
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picks(weights: &[u32], n: usize) -> Vec<usize> {
        let wrr = WeightedRoundRobin::new(weights).unwrap();
        (0..n).map(|_| wrr.next()).collect()
    }

    fn counts(weights: &[u32], n: usize) -> Vec<usize> {
        let mut counts = vec![0; weights.len()];
        for i in picks(weights, n) {
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn counts_are_exactly_proportional_over_whole_cycles() {
        assert_eq!(counts(&[3, 1], 40), vec![30, 10]);
        assert_eq!(counts(&[100, 100, 200], 400), vec![100, 100, 200]);
        assert_eq!(counts(&[5, 0, 2], 70), vec![50, 0, 20]);
    }

    #[test]
    fn equal_weights_rotate_in_order() {
        assert_eq!(picks(&[7, 7, 7], 6), vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn heavy_targets_are_interleaved_not_bunched() {
        assert_eq!(picks(&[5, 1, 1], 7), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn no_positive_weight_means_no_balancer() {
        assert!(WeightedRoundRobin::new(&[]).is_none());
        assert!(WeightedRoundRobin::new(&[0, 0]).is_none());
    }
}
