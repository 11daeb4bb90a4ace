//! Circuit breaker configuration.

use std::time::Duration;

use super::error::Misconfigured;

/// Which calls the breaker judges by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last `n` calls.
    Count(u32),
    /// The calls of the last `n` seconds (one bucket a second).
    Time(u32),
}

/// How a half-open breaker admits trial calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalfOpen {
    /// One trial at a time. A trial that has not finished within `lease`
    /// no longer blocks: another may start, so a hung trial cannot wedge
    /// the breaker half-open.
    SingleProbe {
        /// How long a trial holds the breaker.
        lease: Duration,
    },
    /// Up to `n` trials; once all have finished, the breaker closes if
    /// their failure and slow rates are below the thresholds and reopens
    /// otherwise.
    Probes(u32),
}

/// What a call whose future is dropped before it finished counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnCancel {
    /// Not counted (the default): a caller giving up says nothing about
    /// the dependency.
    #[default]
    Ignore,
    /// Counted as a failure.
    Failure,
}

/// Circuit breaker settings; see [`CircuitBreaker::builder`](super::CircuitBreaker::builder).
///
/// Defaults: last 100 calls, at least 20 before judging, open at a 50%
/// failure rate, no slow-call rule, open 5 s (doubling on consecutive
/// openings up to 60 s, ±10% jitter), single-probe half-open with a 10 s
/// lease, cancelled calls ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub(crate) window: Window,
    pub(crate) minimum_calls: u32,
    pub(crate) failure_rate: f64,
    pub(crate) slow_call: Option<(Duration, f64)>,
    pub(crate) open_base: Duration,
    pub(crate) open_max: Duration,
    pub(crate) backoff: f64,
    pub(crate) jitter: f64,
    pub(crate) seed: Option<u64>,
    pub(crate) half_open: HalfOpen,
    pub(crate) on_cancel: OnCancel,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            window: Window::Count(100),
            minimum_calls: 20,
            failure_rate: 0.5,
            slow_call: None,
            open_base: Duration::from_secs(5),
            open_max: Duration::from_secs(60),
            backoff: 2.0,
            jitter: 0.1,
            seed: None,
            half_open: HalfOpen::SingleProbe {
                lease: Duration::from_secs(10),
            },
            on_cancel: OnCancel::Ignore,
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), Misconfigured> {
        let in_range = |what, value: f64| {
            if value > 0.0 && value <= 1.0 {
                Ok(())
            } else {
                Err(Misconfigured::Threshold { what, value })
            }
        };
        in_range("failure rate", self.failure_rate)?;
        if let Some((_, rate)) = self.slow_call {
            in_range("slow-call rate", rate)?;
        }
        let (Window::Count(n) | Window::Time(n)) = self.window;
        if n == 0 {
            return Err(Misconfigured::Zero { what: "window" });
        }
        if self.minimum_calls == 0 {
            return Err(Misconfigured::Zero {
                what: "minimum calls",
            });
        }
        if self.half_open == HalfOpen::Probes(0) {
            return Err(Misconfigured::Zero {
                what: "half-open probes",
            });
        }
        if self.open_base.is_zero() || self.open_max < self.open_base {
            return Err(Misconfigured::OpenDuration {
                base: self.open_base,
                max: self.open_max,
            });
        }
        Ok(())
    }

    /// How long to stay open after `openings` consecutive openings: the base
    /// times `backoff^openings`, capped at the maximum, then scaled by
    /// `jitter_unit` (uniform in [0, 1): `1 ± jitter`) and capped again.
    /// Computed in `f64` and capped before converting, so no count of
    /// openings, however long an outage, can overflow.
    pub(crate) fn open_duration(&self, openings: u32, jitter_unit: f64) -> Duration {
        let max = self.open_max.as_secs_f64();
        let exponent = i32::try_from(openings).unwrap_or(i32::MAX);
        // `f64::min` ignores NaN (zero base times an infinite factor).
        let mut secs = (self.open_base.as_secs_f64() * self.backoff.powi(exponent)).min(max);
        if self.jitter > 0.0 {
            secs = (secs * (1.0 + self.jitter * (jitter_unit * 2.0 - 1.0))).min(max);
        }
        Duration::try_from_secs_f64(secs.max(0.0)).map_or(self.open_max, |d| d.min(self.open_max))
    }

    /// Whether a snapshot's rates trip the breaker.
    pub(crate) fn trips(&self, s: super::Snapshot) -> bool {
        s.failure_rate() >= self.failure_rate
            || self
                .slow_call
                .is_some_and(|(_, rate)| s.slow_rate() >= rate)
    }

    /// A human description of what trips the breaker, for `/dependencies`.
    pub fn describe(&self) -> String {
        let window = match self.window {
            Window::Count(n) => format!("the last {n} calls"),
            Window::Time(n) => format!("the last {n} s"),
        };
        let mut rule = format!("failure rate >= {}%", self.failure_rate * 100.0);
        if let Some((slow, rate)) = self.slow_call {
            rule.push_str(&format!(
                " or calls slower than {slow:?} >= {}%",
                rate * 100.0
            ));
        }
        format!(
            "{rule} over {window} (at least {} calls); open {:?} up to {:?}",
            self.minimum_calls, self.open_base, self.open_max
        )
    }
}
