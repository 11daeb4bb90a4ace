//! Liveness signals about the process itself: the runtime watchdog and the
//! progress heartbeats of critical loops.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Milliseconds since a fixed origin, stored in an atomic so that the hot
/// path (a beat, a probe read) takes no lock.
#[derive(Debug)]
pub(crate) struct Stamp {
    origin: Instant,
    millis: AtomicU64,
    /// Whether the last evaluation found it silent, to log transitions once.
    flagged: AtomicBool,
}

impl Stamp {
    pub(crate) fn new(origin: Instant) -> Self {
        let stamp = Self {
            origin,
            millis: AtomicU64::new(0),
            flagged: AtomicBool::new(false),
        };
        stamp.touch();
        stamp
    }

    pub(crate) fn touch(&self) {
        let ms = Instant::now()
            .saturating_duration_since(self.origin)
            .as_millis();
        self.millis
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Release);
    }

    /// Time since the last touch.
    pub(crate) fn silence(&self, now: Instant) -> Duration {
        let last = self.origin + Duration::from_millis(self.millis.load(Ordering::Acquire));
        now.saturating_duration_since(last)
    }

    /// Records whether it is silent now; true when that changed.
    pub(crate) fn flag(&self, silent: bool) -> bool {
        self.flagged.swap(silent, Ordering::AcqRel) != silent
    }
}

/// A registered heartbeat: a critical loop proves progress by beating.
#[derive(Debug)]
pub(crate) struct Beat {
    pub(crate) name: String,
    pub(crate) max_silence: Duration,
    pub(crate) stamp: Stamp,
}

/// The handle a critical loop beats. Cloning shares the heartbeat; dropping
/// every handle leaves it registered, so a loop that exits is reported as
/// silent rather than forgotten.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::time::Duration;
/// use probity_probe::health::Health;
///
/// let health = Health::builder().build().expect("valid");
/// let beat = health.heartbeat("consumer-loop", Duration::from_secs(30));
/// for _message in 0..3 {
///     // ... poll the broker, handle the message ...
///     beat.beat();
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Heartbeat {
    pub(crate) inner: Arc<Beat>,
}

impl Heartbeat {
    /// Records progress now.
    pub fn beat(&self) {
        self.inner.stamp.touch();
    }

    /// The heartbeat's name, as shown on `/livez`.
    pub fn name(&self) -> &str {
        &self.inner.name
    }
}

/// Runtime watchdog settings: a task ticks every `period`; `/livez` fails
/// when no tick has happened for `max_stall`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Watchdog {
    pub(crate) period: Duration,
    pub(crate) max_stall: Duration,
}

impl Default for Watchdog {
    fn default() -> Self {
        Self {
            period: Duration::from_millis(500),
            max_stall: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silence_grows_until_touched() {
        let stamp = Stamp::new(Instant::now());
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(stamp.silence(Instant::now()), Duration::from_secs(3));
        stamp.touch();
        assert_eq!(stamp.silence(Instant::now()), Duration::ZERO);
    }
}
