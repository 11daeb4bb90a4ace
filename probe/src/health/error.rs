//! Configuration errors, reported by [`HealthBuilder::build`](super::HealthBuilder::build).

use std::time::Duration;

/// A registry configuration that would lie to the kubelet or could not run.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum Misconfigured {
    /// A dependency check registered for liveness.
    #[error(
        "check {name:?} talks to a dependency and cannot serve liveness: a liveness probe that \
         fails when a dependency is slow restarts healthy pods. Register it for readiness, or \
         wrap it in `process(..)` if it only looks at this process"
    )]
    DependencyInLiveness {
        /// The check's name.
        name: String,
    },
    /// Two checks, heartbeats or saturation sources share a name.
    #[error("{name:?} is registered twice; names identify checks in /livez, /readyz and /startupz")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// A name that cannot appear in a probe path.
    #[error("{name:?} is not a valid check name: use 1-63 characters of a-z, 0-9, '-', '_' or '.'")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// An interval, timeout or delay of zero.
    #[error("{what} of {name:?} must be greater than zero")]
    ZeroDuration {
        /// The check, or `watchdog` / `drain`.
        name: String,
        /// Which setting.
        what: &'static str,
    },
    /// A debounce threshold of zero.
    #[error("debounce thresholds of {name:?} must be at least 1")]
    ZeroThreshold {
        /// The check's name.
        name: String,
    },
    /// A timeout no shorter than the interval would run checks back to back.
    #[error("timeout of {name:?} ({timeout:?}) must be shorter than its interval ({interval:?})")]
    TimeoutNotBelowInterval {
        /// The check's name.
        name: String,
        /// The timeout given.
        timeout: Duration,
        /// The interval given.
        interval: Duration,
    },
    /// Saturation thresholds out of range or inverted.
    #[error(
        "saturation thresholds of {name:?} need 0 <= exit <= enter <= 1 (got enter {enter}, exit {exit})"
    )]
    Thresholds {
        /// The saturation source's name.
        name: String,
        /// Enter threshold given.
        enter: f64,
        /// Exit threshold given.
        exit: f64,
    },
    /// `build` was called outside a Tokio runtime, so checks cannot run.
    #[error(
        "Health::builder().build() must run inside a Tokio runtime: it starts the background checks"
    )]
    NoRuntime,
}
