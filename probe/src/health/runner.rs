//! Background tasks: one loop per check, and the runtime watchdog.
//!
//! Each task holds only a weak reference between runs, so dropping the last
//! [`Health`](super::Health) stops them.

use std::panic::AssertUnwindSafe;
use std::sync::{PoisonError, Weak};
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::time::Instant;

use super::state::{Observed, Status};
use super::{Inner, Scope};

/// Spreads check runs so that replicas started together do not probe a
/// dependency in lockstep.
#[derive(Debug)]
pub(crate) struct Jitter {
    fraction: f64,
    rng: fastrand::Rng,
}

impl Jitter {
    pub(crate) fn new(fraction: f64, seed: u64) -> Self {
        Self {
            fraction,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// `base` scaled by a factor in `[1 - fraction, 1 + fraction]`.
    pub(crate) fn apply(&mut self, base: Duration) -> Duration {
        if self.fraction <= 0.0 {
            return base;
        }
        let factor = 1.0 + self.fraction * (self.rng.f64() * 2.0 - 1.0);
        base.mul_f64(factor.max(0.0))
    }

    /// A first delay in `[0, fraction x base]`, so that checks registered
    /// together do not all run at the same instant.
    fn initial(&mut self, base: Duration) -> Duration {
        base.mul_f64(self.fraction * self.rng.f64())
    }
}

pub(crate) async fn run_check(inner: Weak<Inner>, index: usize, mut jitter: Jitter) {
    let Some(first) = inner
        .upgrade()
        .and_then(|i| i.checks.get(index).map(|c| c.options.interval))
    else {
        return;
    };
    tokio::time::sleep(jitter.initial(first)).await;
    loop {
        let Some(health) = inner.upgrade() else {
            return;
        };
        let Some(reg) = health.checks.get(index) else {
            return;
        };
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            reg.options.timeout,
            AssertUnwindSafe(reg.check.check()).catch_unwind(),
        )
        .await;
        let failure = match outcome {
            Ok(Ok(Ok(()))) => None,
            Ok(Ok(Err(failure))) => Some(failure.reason().to_owned()),
            Ok(Err(_panic)) => Some("check panicked".to_owned()),
            Err(_elapsed) => Some("timeout".to_owned()),
        };
        let done = Instant::now();
        let (transition, finished_startup) = {
            let mut state = reg.state.lock().unwrap_or_else(PoisonError::into_inner);
            let transition = state.record(Observed {
                at: done,
                duration: done.saturating_duration_since(started),
                failure: failure.clone(),
            });
            #[cfg(feature = "redis")]
            if let Some(fleet) = &health.fleet
                && reg.options.fleet_floor.is_some()
            {
                fleet.set_failing(&reg.name, state.status == Status::Failing);
            }
            (
                transition,
                reg.scope == Scope::Startup && state.ever_succeeded,
            )
        };
        if let Some(t) = transition {
            let scope = scope_name(reg.scope);
            match (t.to, &failure) {
                (Status::Failing, Some(reason)) => {
                    tracing::warn!(check = %reg.name, scope, %reason, "health check failing");
                }
                _ => tracing::info!(check = %reg.name, scope, "health check passing"),
            }
        }
        let wait = jitter.apply(reg.options.interval);
        drop(health);
        if finished_startup {
            return;
        }
        tokio::time::sleep(wait).await;
    }
}

pub(crate) async fn run_watchdog(inner: Weak<Inner>) {
    loop {
        let period = {
            let Some(health) = inner.upgrade() else {
                return;
            };
            let Some((watchdog, stamp)) = &health.watchdog else {
                return;
            };
            stamp.touch();
            watchdog.period
        };
        tokio::time::sleep(period).await;
    }
}

pub(crate) fn scope_name(scope: Scope) -> &'static str {
    match scope {
        Scope::Liveness => "liveness",
        Scope::Readiness => "readiness",
        Scope::Startup => "startup",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_fraction_and_is_repeatable_with_a_seed() {
        let base = Duration::from_secs(10);
        let mut a = Jitter::new(0.1, 7);
        let mut b = Jitter::new(0.1, 7);
        for _ in 0..1000 {
            let d = a.apply(base);
            assert!(
                d >= Duration::from_secs(9) && d <= Duration::from_secs(11),
                "{d:?}"
            );
            assert_eq!(d, b.apply(base));
        }
        assert_eq!(Jitter::new(0.0, 1).apply(base), base);
    }
}
