//! An adaptive concurrency limit: the bulkhead's size follows the
//! dependency's latency, a gradient controller in the manner of Netflix's
//! concurrency-limits. The limit falls when latency rises above the
//! measured minimum and grows (by about its square root per window) when it
//! does not, between a floor and a ceiling.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Settings of an adaptive limit; see [`Bulkhead::adaptive`](super::Bulkhead::adaptive).
///
/// Defaults: start at the floor, windows of 100 ms holding at least 10
/// calls, latency tolerance 1.5 (latency up to 1.5x the minimum does not
/// lower the limit), increases smoothed by 0.2, the minimum re-measured
/// every 60 s, a 10% cut when a call is reported [dropped](super::BulkheadPermit::dropped).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptiveLimit {
    pub(crate) initial: u32,
    pub(crate) min: u32,
    pub(crate) max: u32,
    pub(crate) tolerance: f64,
    pub(crate) smoothing: f64,
    pub(crate) window: Duration,
    pub(crate) min_samples: u32,
    pub(crate) baseline_reset: Duration,
    pub(crate) drop_factor: f64,
}

impl AdaptiveLimit {
    /// A limit between `min` and `max` (each at least 1; `max` at least
    /// `min`).
    pub fn new(min: u32, max: u32) -> Self {
        let min = min.max(1);
        Self {
            initial: min,
            min,
            max: max.max(min),
            tolerance: 1.5,
            smoothing: 0.2,
            window: Duration::from_millis(100),
            min_samples: 10,
            baseline_reset: Duration::from_secs(60),
            drop_factor: 0.9,
        }
    }

    /// Where the limit starts (clamped to the floor and ceiling).
    pub fn initial(mut self, limit: u32) -> Self {
        self.initial = limit.clamp(self.min, self.max);
        self
    }

    /// How much slower than the minimum calls may get before the limit
    /// falls (at least 1.0).
    pub fn tolerance(mut self, factor: f64) -> Self {
        self.tolerance = factor.max(1.0);
        self
    }

    /// The limit is recomputed once per window that holds at least
    /// `min_samples` finished calls.
    pub fn window(mut self, window: Duration, min_samples: u32) -> Self {
        self.window = window;
        self.min_samples = min_samples.max(1);
        self
    }

    /// How often the minimum latency is measured afresh, so that a
    /// dependency that got slower for good is not held to its old best.
    pub fn baseline_reset(mut self, every: Duration) -> Self {
        self.baseline_reset = every;
        self
    }

    pub(crate) fn initial_limit(&self) -> u32 {
        self.initial.clamp(self.min, self.max)
    }
}

/// The controller: pure, fed with each finished call.
#[derive(Debug)]
pub(crate) struct Controller {
    config: AdaptiveLimit,
    limit: f64,
    baseline: Option<(Duration, Instant)>,
    window_start: Instant,
    sum: Duration,
    samples: u32,
    max_inflight: u32,
    dropped: bool,
}

impl Controller {
    pub(crate) fn new(config: AdaptiveLimit, now: Instant) -> Self {
        Self {
            limit: f64::from(config.initial_limit()),
            config,
            baseline: None,
            window_start: now,
            sum: Duration::ZERO,
            samples: 0,
            max_inflight: 0,
            dropped: false,
        }
    }

    /// The latency everything is compared with.
    #[cfg(test)]
    fn baseline(&self) -> Option<Duration> {
        self.baseline.map(|(b, _)| b)
    }

    /// One finished call: its latency, the calls in flight when it
    /// started (itself included), and whether it was dropped. Returns the
    /// new limit when a window closed.
    pub(crate) fn sample(
        &mut self,
        latency: Duration,
        inflight: u32,
        dropped: bool,
        now: Instant,
    ) -> Option<u32> {
        self.sum = self.sum.saturating_add(latency);
        self.samples += 1;
        self.max_inflight = self.max_inflight.max(inflight);
        self.dropped |= dropped;
        let c = self.config;
        if now.saturating_duration_since(self.window_start) < c.window
            || self.samples < c.min_samples
        {
            return None;
        }
        let average = self.sum / self.samples;
        let baseline = match self.baseline {
            Some((b, since)) if now.saturating_duration_since(since) < c.baseline_reset => {
                let b = b.min(average);
                self.baseline = Some((b, since));
                b
            }
            _ => {
                self.baseline = Some((average, now));
                average
            }
        };
        let limit = self.limit;
        let next = if self.dropped {
            limit * c.drop_factor
        } else {
            let gradient = if average.is_zero() {
                1.0
            } else {
                (c.tolerance * baseline.as_secs_f64() / average.as_secs_f64()).clamp(0.5, 1.0)
            };
            let target = limit * gradient + limit.sqrt();
            if target > limit {
                // Grow only when the limit is what holds calls back.
                if f64::from(self.max_inflight) * 2.0 < limit {
                    limit
                } else {
                    limit * (1.0 - c.smoothing) + target * c.smoothing
                }
            } else {
                target
            }
        };
        self.limit = next.clamp(f64::from(c.min), f64::from(c.max));
        self.window_start = now;
        self.sum = Duration::ZERO;
        self.samples = 0;
        self.max_inflight = 0;
        self.dropped = false;
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "clamped to [min, max] of u32"
        )]
        Some(self.limit.round() as u32)
    }
}

/// The shared state of an adaptive bulkhead.
#[derive(Debug)]
pub(crate) struct Adaptive {
    pub(crate) limit: AtomicU32,
    pub(crate) inflight: AtomicU32,
    pub(crate) controller: Mutex<Controller>,
    pub(crate) released: Notify,
}

impl Adaptive {
    pub(crate) fn new(config: AdaptiveLimit) -> Self {
        Self {
            limit: AtomicU32::new(config.initial_limit()),
            inflight: AtomicU32::new(0),
            controller: Mutex::new(Controller::new(config, Instant::now())),
            released: Notify::new(),
        }
    }

    /// Takes a slot when fewer than the limit are in flight; returns the
    /// count in flight, this one included.
    pub(crate) fn try_take(&self) -> Option<u32> {
        let mut current = self.inflight.load(Ordering::Acquire);
        loop {
            if current >= self.limit.load(Ordering::Acquire) {
                return None;
            }
            match self.inflight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(current + 1),
                Err(seen) => current = seen,
            }
        }
    }

    /// Frees a slot; `sample` is the call's start, the count in flight then
    /// and whether it was dropped, or `None` for a slot used for no call.
    pub(crate) fn release(&self, sample: Option<(Instant, u32, bool)>) {
        self.inflight.fetch_sub(1, Ordering::AcqRel);
        let Some((started, inflight, dropped)) = sample else {
            self.released.notify_one();
            return;
        };
        let now = Instant::now();
        let latency = now.saturating_duration_since(started);
        let next = self
            .controller
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sample(latency, inflight, dropped, now);
        if let Some(limit) = next {
            let before = self.limit.swap(limit, Ordering::AcqRel);
            if limit != before {
                tracing::debug!(before, limit, "adaptive concurrency limit changed");
            }
            if limit > before {
                self.released.notify_waiters();
            }
        }
        self.released.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Runs `windows` windows of 10 calls each taking `latency`, with
    /// `inflight` calls in flight (`None`: the limit itself), returning the
    /// limit after each window.
    async fn script(
        c: &mut Controller,
        latency: Duration,
        inflight: Option<u32>,
        windows: usize,
    ) -> Vec<u32> {
        let mut limits = Vec::new();
        let mut limit = c.limit.round() as u32;
        for _ in 0..windows {
            tokio::time::advance(ms(10)).await;
            for _ in 0..9 {
                assert_eq!(
                    c.sample(latency, inflight.unwrap_or(limit), false, Instant::now()),
                    None
                );
            }
            tokio::time::advance(ms(90)).await;
            limit = c
                .sample(latency, inflight.unwrap_or(limit), false, Instant::now())
                .expect("a window closed");
            limits.push(limit);
        }
        limits
    }

    #[tokio::test(start_paused = true)]
    async fn grows_while_latency_holds_and_falls_when_it_rises() {
        let config = AdaptiveLimit::new(4, 200).initial(20);
        let mut c = Controller::new(config, Instant::now());
        let steady = script(&mut c, ms(20), None, 120).await;
        assert!(steady.windows(2).all(|w| w[1] >= w[0]), "{steady:?}");
        assert_eq!(
            *steady.last().expect("limits"),
            200,
            "reaches the ceiling: {steady:?}"
        );
        assert_eq!(c.baseline(), Some(ms(20)));

        // Eight times slower: the gradient bottoms out at 0.5.
        let slow = script(&mut c, ms(160), None, 30).await;
        assert!(slow.windows(2).all(|w| w[1] <= w[0]), "{slow:?}");
        assert!(slow[0] <= 120, "falls at once, not smoothed: {slow:?}");
        assert_eq!(
            *slow.last().expect("limits"),
            4,
            "down to its fixed point, the floor: {slow:?}"
        );

        // Within tolerance (1.5x): no cut.
        let mut c = Controller::new(config, Instant::now());
        script(&mut c, ms(20), None, 5).await;
        let before = c.limit;
        let mild = script(&mut c, ms(28), None, 5).await;
        assert!(f64::from(mild[0]) >= before, "{before} -> {mild:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn twice_as_slow_settles_between_floor_and_ceiling() {
        let config = AdaptiveLimit::new(1, 1000).initial(100).tolerance(1.0);
        let mut c = Controller::new(config, Instant::now());
        script(&mut c, ms(10), None, 1).await;
        let limits = script(&mut c, ms(20), None, 60).await;
        // L = 0.5 L + sqrt(L) at gradient 0.5 ... here 0.5: fixed point 4;
        // tolerance 1 makes 2x slower exactly gradient 0.5.
        let last = *limits.last().expect("limits");
        assert!((3..=5).contains(&last), "{limits:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_caller_does_not_grow_the_limit() {
        let config = AdaptiveLimit::new(4, 200).initial(50);
        let mut c = Controller::new(config, Instant::now());
        let limits = script(&mut c, ms(20), Some(3), 20).await;
        assert!(limits.iter().all(|&l| l == 50), "{limits:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn drops_cut_the_limit_by_a_tenth_and_the_minimum_is_remeasured() {
        let config = AdaptiveLimit::new(2, 100)
            .initial(50)
            .baseline_reset(Duration::from_secs(5));
        let mut c = Controller::new(config, Instant::now());
        for _ in 0..9 {
            c.sample(ms(10), 50, false, Instant::now());
        }
        tokio::time::advance(ms(100)).await;
        assert_eq!(c.sample(ms(10), 50, true, Instant::now()), Some(45));
        // Slower for good: after the reset the new latency is the minimum
        // and the limit grows again.
        script(&mut c, ms(100), None, 60).await;
        assert_eq!(c.baseline(), Some(ms(100)));
        let after = script(&mut c, ms(100), None, 10).await;
        assert!(after.windows(2).all(|w| w[1] >= w[0]), "{after:?}");
    }
}
