//! Backoff delays with jitter.

use std::time::Duration;

/// How retry delays are spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// A uniform delay in `[0, min(cap, base x 2^attempt)]` (the default):
    /// retries of many clients spread out instead of arriving together.
    #[default]
    Full,
    /// A uniform delay in `[base, 3 x previous delay]`, capped.
    Decorrelated,
}

/// Exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub(crate) base: Duration,
    pub(crate) cap: Duration,
    pub(crate) jitter: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(50),
            cap: Duration::from_secs(2),
            jitter: Jitter::Full,
        }
    }
}

impl Backoff {
    /// Starts at `base`, never above `cap`, full jitter.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            jitter: Jitter::Full,
        }
    }

    /// Chooses the jitter.
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The delay before retry number `retry` (1 for the first retry),
    /// given the previous delay, never past `deadline_left`.
    pub fn delay(
        &self,
        retry: u32,
        previous: Duration,
        rng: &mut fastrand::Rng,
        deadline_left: Option<Duration>,
    ) -> Duration {
        let d = match self.jitter {
            Jitter::Full => {
                let exp = self
                    .base
                    .saturating_mul(1u32 << retry.saturating_sub(1).min(30));
                exp.min(self.cap).mul_f64(rng.f64())
            }
            Jitter::Decorrelated => {
                let hi = previous.max(self.base).saturating_mul(3).min(self.cap);
                let lo = self.base.min(hi);
                lo + (hi - lo).mul_f64(rng.f64())
            }
        };
        let d = d.min(self.cap);
        deadline_left.map_or(d, |left| d.min(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn delays_stay_within_zero_and_cap_and_never_pass_the_deadline(
            base_ms in 1u64..1000, cap_ms in 1u64..10_000, retry in 1u32..64,
            prev_ms in 0u64..20_000, seed: u64, left_ms in proptest::option::of(0u64..5000),
            decorrelated: bool,
        ) {
            let b = Backoff::new(Duration::from_millis(base_ms), Duration::from_millis(cap_ms))
                .jitter(if decorrelated { Jitter::Decorrelated } else { Jitter::Full });
            let mut rng = fastrand::Rng::with_seed(seed);
            let left = left_ms.map(Duration::from_millis);
            let d = b.delay(retry, Duration::from_millis(prev_ms), &mut rng, left);
            prop_assert!(d <= b.cap);
            if let Some(left) = left {
                prop_assert!(d <= left);
            }
        }
    }

    #[test]
    fn full_jitter_grows_exponentially_up_to_the_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut rng = fastrand::Rng::with_seed(3);
        let mut max = |retry| {
            (0..2000)
                .map(|_| b.delay(retry, Duration::ZERO, &mut rng, None))
                .max()
                .unwrap_or_default()
        };
        assert!(max(1) <= Duration::from_millis(100) && max(1) > Duration::from_millis(90));
        assert!(max(3) <= Duration::from_millis(400) && max(3) > Duration::from_millis(360));
        assert!(max(10) <= Duration::from_secs(1) && max(10) > Duration::from_millis(900));
    }
}
