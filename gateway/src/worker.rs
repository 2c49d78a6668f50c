//! Proxy worker threads, nginx's model: each worker is an OS thread with its own
//! single-threaded Tokio runtime, accepting on the shared listening socket and serving
//! every connection it accepts to the end on that same thread, upstream connections
//! included (see [`PerWorker`]). Nothing of a request crosses threads, so there are no
//! cross-thread wake-ups, no work stealing and no contended pool locks on the request
//! path; the benchmark (bench/README.md) measured this against one multi-threaded
//! runtime.
//!
//! Code that runs outside a worker (the control plane's runtime, health checkers,
//! tests serving on their own runtime) is "worker 0".

use std::cell::Cell;
use std::sync::OnceLock;

thread_local! {
    static INDEX: Cell<usize> = const { Cell::new(0) };
}

/// The calling thread's worker number: 1 to N on proxy workers, 0 elsewhere.
pub(crate) fn index() -> usize {
    INDEX.with(Cell::get)
}

/// Marks the calling thread as proxy worker `n` (1-based).
pub(crate) fn enter(n: usize) {
    INDEX.with(|i| i.set(n));
}

/// The number of workers when the operator does not choose: one per core (read once:
/// finding it out reads cgroup files).
pub fn default_count() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
}

/// Most per-worker slots kept: more workers than cores gain nothing.
const MAX_SLOTS: usize = 64;

/// How many per-worker slots a per-worker value has: worker 0 and one per core.
pub(crate) fn slots() -> usize {
    default_count().min(MAX_SLOTS) + 1
}

/// The calling worker's slot among [`slots`]; workers beyond them share slots
/// round-robin (correct, only slower).
pub(crate) fn slot() -> usize {
    index() % slots()
}

/// One value per worker, made on first use by the worker that uses it, so that a
/// worker's keep-alive connections live on its own runtime (see [`slot`]).
#[derive(Debug)]
pub(crate) struct PerWorker<T> {
    slots: Box<[OnceLock<T>]>,
}

impl<T> PerWorker<T> {
    pub(crate) fn new() -> Self {
        PerWorker { slots: (0..slots()).map(|_| OnceLock::new()).collect() }
    }

    /// The calling worker's value, made with `make` the first time.
    pub(crate) fn get(&self, make: impl FnOnce() -> T) -> &T {
        self.slots[slot()].get_or_init(make)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_worker_gets_its_own_value_and_keeps_it() {
        let per = std::sync::Arc::new(PerWorker::<std::thread::ThreadId>::new());
        let main = *per.get(|| std::thread::current().id());
        assert_eq!(index(), 0, "outside a worker is worker 0");
        let per2 = per.clone();
        let worker = std::thread::spawn(move || {
            enter(1);
            assert_eq!(index(), 1);
            let first = *per2.get(|| std::thread::current().id());
            assert_eq!(*per2.get(|| unreachable!()), first, "made once");
            first
        })
        .join()
        .unwrap();
        if per.slots.len() > 1 {
            assert_ne!(worker, main, "worker 1 does not share worker 0's value");
        }
        assert_eq!(index(), 0, "entering a worker marks only that thread");
    }
}
