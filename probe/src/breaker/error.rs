//! Errors of the circuit breaker.

use std::time::Duration;

/// The breaker rejected the call without running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit open: retry in {retry_after:?}")]
pub struct Open {
    /// When a call may be admitted again, at the earliest.
    pub retry_after: Duration,
}

/// A breaker configuration that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Misconfigured {
    /// A rate threshold outside `(0, 1]`.
    #[error("{what} threshold must be in (0, 1], got {value}")]
    Threshold {
        /// Which threshold.
        what: &'static str,
        /// The value given.
        value: f64,
    },
    /// A window, minimum-calls or probe count of zero.
    #[error("{what} must be at least 1")]
    Zero {
        /// Which setting.
        what: &'static str,
    },
    /// An open duration of zero, or a maximum below the base.
    #[error("open duration must be positive and at most its maximum ({base:?} > {max:?})")]
    OpenDuration {
        /// Base open duration.
        base: Duration,
        /// Maximum open duration.
        max: Duration,
    },
}
