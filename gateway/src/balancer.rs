//! Load balancing over an upstream's targets, as pure choices: which target index
//! to try, given which targets are eligible (healthy, not yet tried…) and how loaded
//! each is. Schedules and rings are computed once per snapshot.
//!
//! - weighted round robin: a precomputed smooth schedule, one atomic increment a pick;
//! - least connections: the eligible target with the fewest requests in flight per
//!   unit of weight; ties go to the weighted round robin order;
//! - consistent hashing: a ring of virtual nodes (as many per target as its share
//!   of the total weight), looked up by a hash of the request's key; requests
//!   without a key fall back to weighted round robin.

use std::sync::atomic::{AtomicUsize, Ordering};

use turnpike_domain::model::LoadBalancing;

/// Virtual nodes per target on the ring when all weights are equal.
const VNODES_PER_TARGET: u64 = 160;

/// A compiled balancing algorithm over an upstream's targets.
#[derive(Debug)]
pub enum Balancer {
    RoundRobin(WeightedRoundRobin),
    /// Loads are in flight requests; the schedule breaks ties.
    LeastConnections {
        weights: Box<[u32]>,
        order: WeightedRoundRobin,
    },
    ConsistentHash {
        ring: HashRing,
        fallback: WeightedRoundRobin,
    },
}

impl Balancer {
    /// `keys` name the targets on the hash ring (their URLs), so a target keeps its
    /// place on the ring when others come and go. `None` when no target has a
    /// positive weight.
    pub fn new(algorithm: LoadBalancing, weights: &[u32], keys: &[&str]) -> Option<Balancer> {
        let wrr = WeightedRoundRobin::new(weights)?;
        // Exhaustive on purpose: a new algorithm must decide here how it picks targets.
        Some(match algorithm {
            LoadBalancing::RoundRobin => Balancer::RoundRobin(wrr),
            LoadBalancing::LeastConnections => Balancer::LeastConnections { weights: weights.into(), order: wrr },
            LoadBalancing::ConsistentHash => {
                Balancer::ConsistentHash { ring: HashRing::new(weights, keys)?, fallback: wrr }
            }
        })
    }

    /// The target to try among those `eligible`; `hash` is the request's key for
    /// consistent hashing, `load` a target's requests in flight.
    pub fn pick(
        &self,
        hash: Option<u64>,
        eligible: &dyn Fn(usize) -> bool,
        load: &dyn Fn(usize) -> usize,
    ) -> Option<usize> {
        match self {
            Balancer::RoundRobin(wrr) => wrr.next_where(eligible),
            Balancer::ConsistentHash { ring, fallback } => match hash {
                Some(h) => ring.lookup(h, eligible),
                None => fallback.next_where(eligible),
            },
            Balancer::LeastConnections { weights, order } => {
                // Least loaded by requests in flight per unit of weight, compared by
                // cross-multiplication: a/wa < b/wb  <=>  a*wb < b*wa.
                let ratio = |i: usize| (load(i) as u128, u128::from(weights[i]));
                let (best_load, best_weight) = (0..weights.len())
                    .filter(|&i| weights[i] > 0 && eligible(i))
                    .map(ratio)
                    .min_by(|(a, wa), (b, wb)| (a * wb).cmp(&(b * wa)))?;
                let least = |i: usize| {
                    let (l, w) = ratio(i);
                    eligible(i) && l * best_weight == best_load * w
                };
                // Loads move under our feet; if no least-loaded target shows up in a
                // whole cycle, any eligible one will do.
                order.next_where(&least).or_else(|| order.next_where(eligible))
            }
        }
    }
}

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

    /// The next target in the schedule that is `eligible`, looking at most one whole
    /// cycle ahead.
    pub fn next_where(&self, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        (0..self.schedule.len()).map(|_| self.next()).find(|&i| eligible(i))
    }
}

/// A consistent-hashing ring: points sorted by hash, each naming a target.
#[derive(Debug)]
pub struct HashRing {
    points: Box<[(u64, u32)]>,
}

impl HashRing {
    /// Each target gets virtual nodes in proportion to its weight (at least one if
    /// its weight is positive), placed by hashing `"{key}#{n}"`.
    pub fn new(weights: &[u32], keys: &[&str]) -> Option<HashRing> {
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let mut points = Vec::new();
        for (i, (weight, key)) in weights.iter().zip(keys).enumerate() {
            if *weight == 0 {
                continue;
            }
            let share = VNODES_PER_TARGET * weights.len() as u64 * u64::from(*weight);
            let vnodes = ((share + total / 2) / total).max(1);
            let index = u32::try_from(i).ok()?;
            points.extend((0..vnodes).map(|n| (hash64(format!("{key}#{n}").as_bytes()), index)));
        }
        if points.is_empty() {
            return None;
        }
        points.sort_unstable();
        Some(HashRing { points: points.into_boxed_slice() })
    }

    /// The first eligible target clockwise from `hash`.
    pub fn lookup(&self, hash: u64, eligible: &dyn Fn(usize) -> bool) -> Option<usize> {
        let start = self.points.partition_point(|(h, _)| *h < hash);
        let (after, before) = (&self.points[start..], &self.points[..start]);
        after.iter().chain(before).map(|(_, i)| *i as usize).find(|&i| eligible(i))
    }
}

/// A stable 64-bit hash (FNV-1a, then a SplitMix64 finalizer to spread similar
/// inputs), so that every gateway node maps a key to the same target.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
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
        assert!(Balancer::new(LoadBalancing::ConsistentHash, &[0], &["a"]).is_none());
    }

    const ALL: &dyn Fn(usize) -> bool = &|_| true;
    const IDLE: &dyn Fn(usize) -> usize = &|_| 0;

    #[test]
    fn round_robin_skips_ineligible_targets() {
        let b = Balancer::new(LoadBalancing::RoundRobin, &[1, 1, 1], &["a", "b", "c"]).unwrap();
        let not_b = |i: usize| i != 1;
        let picks: Vec<_> = (0..4).map(|_| b.pick(None, &not_b, IDLE).unwrap()).collect();
        assert_eq!(picks, [0, 2, 0, 2]);
        assert_eq!(b.pick(None, &|_| false, IDLE), None);
    }

    #[test]
    fn least_connections_takes_the_least_loaded_per_weight() {
        let b = Balancer::new(LoadBalancing::LeastConnections, &[1, 1, 2], &["a", "b", "c"]).unwrap();
        let loads = [3usize, 1, 4];
        // 1/1 < 4/2 < 3/1
        assert_eq!(b.pick(None, ALL, &|i| loads[i]), Some(1));
        let loads = [3usize, 2, 4];
        // b (2/1) and c (4/2) tie; the weighted order decides, and keeps alternating
        // between them in proportion to their weights.
        let picks: Vec<_> = (0..6).map(|_| b.pick(None, ALL, &|i| loads[i]).unwrap()).collect();
        assert_eq!(picks.iter().filter(|&&i| i == 2).count(), 4);
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 2);
        assert_eq!(b.pick(None, &|i| i == 0, &|i| loads[i]), Some(0), "only eligible targets count");
    }

    #[test]
    fn least_connections_with_equal_loads_is_weighted_round_robin() {
        let b = Balancer::new(LoadBalancing::LeastConnections, &[3, 1], &["a", "b"]).unwrap();
        let mut counts = [0; 2];
        for _ in 0..40 {
            counts[b.pick(None, ALL, IDLE).unwrap()] += 1;
        }
        assert_eq!(counts, [30, 10]);
    }

    fn ring_counts(weights: &[u32], keys: &[&str], requests: usize) -> Vec<usize> {
        let b = Balancer::new(LoadBalancing::ConsistentHash, weights, keys).unwrap();
        let mut counts = vec![0; weights.len()];
        for n in 0..requests {
            counts[b.pick(Some(hash64(format!("user-{n}").as_bytes())), ALL, IDLE).unwrap()] += 1;
        }
        counts
    }

    #[test]
    fn hashing_is_stable_and_spreads_by_weight() {
        let keys = ["http://a:1", "http://b:1", "http://c:1"];
        let b = Balancer::new(LoadBalancing::ConsistentHash, &[100, 100, 100], &keys).unwrap();
        for n in 0..50 {
            let h = hash64(format!("user-{n}").as_bytes());
            let first = b.pick(Some(h), ALL, IDLE);
            assert!((0..10).all(|_| b.pick(Some(h), ALL, IDLE) == first), "user-{n} moved");
        }
        let even = ring_counts(&[100, 100, 100], &keys, 30_000);
        assert!(even.iter().all(|c| (8_500..=11_500).contains(c)), "{even:?}");
        let heavy = ring_counts(&[300, 100], &keys[..2], 40_000);
        assert!((28_000..=32_000).contains(&heavy[0]), "{heavy:?}");
    }

    #[test]
    fn removing_a_target_only_moves_its_own_keys() {
        let three = Balancer::new(LoadBalancing::ConsistentHash, &[1, 1, 1], &["a", "b", "c"]).unwrap();
        let two = Balancer::new(LoadBalancing::ConsistentHash, &[1, 1], &["a", "c"]).unwrap();
        let mut moved = 0;
        for n in 0..2_000 {
            let h = hash64(format!("k{n}").as_bytes());
            let before = three.pick(Some(h), ALL, IDLE).unwrap();
            let after = two.pick(Some(h), ALL, IDLE).map(|i| if i == 1 { 2 } else { 0 }).unwrap();
            if before != 1 {
                assert_eq!(before, after, "key k{n} moved although its target stayed");
            } else {
                moved += 1;
            }
        }
        assert!(moved > 0);
        // The same holds when a target is only ineligible (ejected) for a while.
        for n in 0..2_000 {
            let h = hash64(format!("k{n}").as_bytes());
            let before = three.pick(Some(h), ALL, IDLE).unwrap();
            let without_b = three.pick(Some(h), &|i| i != 1, IDLE).unwrap();
            assert!(before == 1 || before == without_b);
            assert_ne!(without_b, 1);
        }
    }

    #[test]
    fn hashing_without_a_key_is_round_robin() {
        let b = Balancer::new(LoadBalancing::ConsistentHash, &[1, 1], &["a", "b"]).unwrap();
        let picks: Vec<_> = (0..4).map(|_| b.pick(None, ALL, IDLE).unwrap()).collect();
        assert_eq!(picks, [0, 1, 0, 1]);
    }

    #[test]
    fn the_hash_is_stable_across_builds() {
        // Gateways of different builds must agree; these values must never change.
        assert_eq!(hash64(b""), hash64(b""));
        assert_ne!(hash64(b"a"), hash64(b"b"));
        assert_eq!(hash64(b"turnpike"), 0x21d5_017e_407e_2850, "FNV-1a + SplitMix64, checked independently");
    }
}
