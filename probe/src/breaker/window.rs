//! Sliding windows of call outcomes, lock-free, with an O(1) snapshot.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

/// What one call did, as the window counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Success,
    Failure,
    SlowSuccess,
    SlowFailure,
}

impl Outcome {
    fn failed(self) -> bool {
        matches!(self, Outcome::Failure | Outcome::SlowFailure)
    }

    fn slow(self) -> bool {
        matches!(self, Outcome::SlowSuccess | Outcome::SlowFailure)
    }

    fn code(self) -> u8 {
        match self {
            Outcome::Success => 1,
            Outcome::Failure => 2,
            Outcome::SlowSuccess => 3,
            Outcome::SlowFailure => 4,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Outcome::Success),
            2 => Some(Outcome::Failure),
            3 => Some(Outcome::SlowSuccess),
            4 => Some(Outcome::SlowFailure),
            _ => None,
        }
    }
}

/// Totals over the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Calls in the window.
    pub calls: u32,
    /// Failed calls.
    pub failures: u32,
    /// Slow calls, failed or not.
    pub slow: u32,
}

impl Snapshot {
    /// Failed calls over calls, 0 with no calls.
    pub fn failure_rate(&self) -> f64 {
        ratio(self.failures, self.calls)
    }

    /// Slow calls over calls, 0 with no calls.
    pub fn slow_rate(&self) -> f64 {
        ratio(self.slow, self.calls)
    }
}

fn ratio(n: u32, d: u32) -> f64 {
    if d == 0 {
        0.0
    } else {
        f64::from(n) / f64::from(d)
    }
}

#[derive(Debug, Default)]
struct Totals {
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

impl Totals {
    fn add(&self, o: Outcome) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if o.failed() {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        if o.slow() {
            self.slow.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn sub(&self, o: Outcome) {
        self.calls.fetch_sub(1, Ordering::Relaxed);
        if o.failed() {
            self.failures.fetch_sub(1, Ordering::Relaxed);
        }
        if o.slow() {
            self.slow.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            calls: self.calls.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            slow: self.slow.load(Ordering::Relaxed),
        }
    }

    fn take(&self) -> Snapshot {
        Snapshot {
            calls: self.calls.swap(0, Ordering::Relaxed),
            failures: self.failures.swap(0, Ordering::Relaxed),
            slow: self.slow.swap(0, Ordering::Relaxed),
        }
    }

    fn subtract(&self, s: Snapshot) {
        self.calls.fetch_sub(s.calls, Ordering::Relaxed);
        self.failures.fetch_sub(s.failures, Ordering::Relaxed);
        self.slow.fetch_sub(s.slow, Ordering::Relaxed);
    }
}

/// The last `size` calls. Each slot holds one outcome; recording swaps the
/// oldest out and adjusts the totals, so totals always equal the slots'
/// sum even under contention.
#[derive(Debug)]
pub(crate) struct CountWindow {
    slots: Box<[AtomicU8]>,
    /// `u64::MAX / len + 1`, for a division-free `head % len` (Lemire's
    /// fastmod): a hardware division would be most of the closed path.
    fastmod: u64,
    head: AtomicU32,
    totals: Totals,
}

impl CountWindow {
    pub(crate) fn new(size: u32) -> Self {
        let size = size.max(1);
        Self {
            slots: (0..size).map(|_| AtomicU8::new(0)).collect(),
            fastmod: (u64::MAX / u64::from(size)).wrapping_add(1),
            head: AtomicU32::new(0),
            totals: Totals::default(),
        }
    }

    #[inline]
    pub(crate) fn record(&self, outcome: Outcome) {
        // A plain load and store, not a locked add: two racing calls may
        // take the same slot, and then the window holds one call fewer than
        // its size for a moment. The slot swap below keeps the totals exact
        // either way. The counter wraps at 2^32; the one jump in slot order
        // that causes every 4 billion calls only reuses a slot early.
        let head = self.head.load(Ordering::Relaxed);
        self.head.store(head.wrapping_add(1), Ordering::Relaxed);
        let at = ((u128::from(self.fastmod.wrapping_mul(u64::from(head)))
            * self.slots.len() as u128)
            >> 64) as usize;
        let slot = &self.slots[at];
        let code = outcome.code();
        // The steady state (a success replacing a success) writes nothing.
        if slot.load(Ordering::Relaxed) == code {
            return;
        }
        let old = Outcome::from_code(slot.swap(code, Ordering::Relaxed));
        // Adjust only what changed; totals always equal the slots' sum.
        match old {
            None => self.totals.add(outcome),
            Some(old) if old != outcome => {
                self.totals.add(outcome);
                self.totals.sub(old);
            }
            Some(_) => {}
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        self.totals.snapshot()
    }

    pub(crate) fn reset(&self) {
        for slot in self.slots.iter() {
            if let Some(old) = Outcome::from_code(slot.swap(0, Ordering::Relaxed)) {
                self.totals.sub(old);
            }
        }
    }
}

/// Calls in the last `buckets` seconds, one bucket a second. The thread
/// that first records in a new second expires the buckets that fell out
/// of the window (amortised O(1) per call); the snapshot reads the totals.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    buckets: Box<[Bucket]>,
    /// The newest second any call was recorded in.
    newest: AtomicU64,
    totals: Totals,
}

#[derive(Debug, Default)]
struct Bucket {
    second: AtomicU64,
    totals: Totals,
}

impl TimeWindow {
    pub(crate) fn new(buckets: u32) -> Self {
        Self {
            buckets: (0..buckets.max(1)).map(|_| Bucket::default()).collect(),
            newest: AtomicU64::new(0),
            totals: Totals::default(),
        }
    }

    /// Expires buckets older than the window as of `second`.
    pub(crate) fn advance(&self, second: u64) {
        let newest = self.newest.load(Ordering::Acquire);
        if second <= newest
            || self
                .newest
                .compare_exchange(newest, second, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        let n = self.buckets.len() as u64;
        // Buckets for seconds newest+1 ..= second are reused: clear them.
        let first = (newest + 1).max(second.saturating_sub(n - 1));
        for s in first..=second {
            let bucket = &self.buckets[(s % n) as usize];
            bucket.second.store(s, Ordering::Release);
            let stale = bucket.totals.take();
            self.totals.subtract(stale);
        }
    }

    pub(crate) fn record(&self, second: u64, outcome: Outcome) {
        self.advance(second);
        let bucket = &self.buckets[(second % self.buckets.len() as u64) as usize];
        bucket.totals.add(outcome);
        self.totals.add(outcome);
    }

    pub(crate) fn snapshot(&self, second: u64) -> Snapshot {
        self.advance(second);
        self.totals.snapshot()
    }

    pub(crate) fn reset(&self) {
        for bucket in self.buckets.iter() {
            let stale = bucket.totals.take();
            self.totals.subtract(stale);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            Just(Outcome::Success),
            Just(Outcome::Failure),
            Just(Outcome::SlowSuccess),
            Just(Outcome::SlowFailure),
        ]
    }

    fn expected(outcomes: &[Outcome]) -> Snapshot {
        Snapshot {
            calls: outcomes.len() as u32,
            failures: outcomes.iter().filter(|o| o.failed()).count() as u32,
            slow: outcomes.iter().filter(|o| o.slow()).count() as u32,
        }
    }

    proptest! {
        #[test]
        fn count_window_equals_the_last_n_calls(size in 1u32..20, calls in prop::collection::vec(outcome(), 0..100)) {
            let w = CountWindow::new(size);
            for o in &calls {
                w.record(*o);
            }
            let start = calls.len().saturating_sub(size as usize);
            prop_assert_eq!(w.snapshot(), expected(&calls[start..]));
        }

        #[test]
        fn time_window_equals_the_calls_of_the_last_n_seconds(
            buckets in 1u32..10,
            calls in prop::collection::vec((0u64..4, outcome()), 0..100),
        ) {
            let w = TimeWindow::new(buckets);
            let mut second = 100;
            let mut log = Vec::new();
            for (gap, o) in &calls {
                second += gap;
                w.record(second, *o);
                log.push((second, *o));
            }
            for probe in [second, second + 1, second + u64::from(buckets)] {
                let live: Vec<Outcome> = log
                    .iter()
                    .filter(|(s, _)| *s + u64::from(buckets) > probe)
                    .map(|(_, o)| *o)
                    .collect();
                prop_assert_eq!(w.snapshot(probe), expected(&live));
            }
        }
    }

    proptest! {
        #[test]
        fn fastmod_equals_modulo(len in 1u32..100_000, head: u32) {
            let w = CountWindow::new(len);
            let at = ((u128::from(w.fastmod.wrapping_mul(u64::from(head))) * u128::from(len)) >> 64) as u32;
            prop_assert_eq!(at, head % len);
        }
    }

    #[test]
    fn reset_empties_both_windows() {
        let c = CountWindow::new(4);
        let t = TimeWindow::new(4);
        for _ in 0..6 {
            c.record(Outcome::Failure);
            t.record(7, Outcome::SlowFailure);
        }
        c.reset();
        t.reset();
        assert_eq!(c.snapshot(), Snapshot::default());
        assert_eq!(t.snapshot(7), Snapshot::default());
    }

    #[test]
    fn concurrent_records_keep_totals_consistent() {
        let w = std::sync::Arc::new(CountWindow::new(64));
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let w = std::sync::Arc::clone(&w);
                std::thread::spawn(move || {
                    for n in 0..10_000 {
                        w.record(if (n + i) % 3 == 0 {
                            Outcome::Failure
                        } else {
                            Outcome::Success
                        });
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let s = w.snapshot();
        assert_eq!(s.calls, 64);
        let in_slots = w
            .slots
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) == 2)
            .count() as u32;
        assert_eq!(s.failures, in_slots);
    }
}
