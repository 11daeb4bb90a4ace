//! Saturation signals: a pool or bulkhead that is nearly full makes the pod
//! unready, with hysteresis so readiness does not flap at the threshold.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Units in use out of a capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Units in use (connections checked out, permits held).
    pub in_use: u64,
    /// Total units; zero means unknown and never saturates.
    pub capacity: u64,
}

impl Load {
    /// `in_use / capacity`, 0 when the capacity is zero.
    pub fn ratio(&self) -> f64 {
        if self.capacity == 0 {
            0.0
        } else {
            self.in_use as f64 / self.capacity as f64
        }
    }
}

/// A source of [`Load`], read on every readiness probe: it must be cheap
/// (atomics, a pool's counters).
pub trait Saturation: Send + Sync + 'static {
    /// The current load.
    fn load(&self) -> Load;
}

impl<F> Saturation for F
where
    F: Fn() -> Load + Send + Sync + 'static,
{
    fn load(&self) -> Load {
        self()
    }
}

/// Enter and exit thresholds on the in-use ratio.
///
/// Unready once the ratio reaches `enter`, ready again only when it falls to
/// `exit` or below. Defaults: enter 0.9, exit 0.7.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub(crate) enter: f64,
    pub(crate) exit: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            enter: 0.9,
            exit: 0.7,
        }
    }
}

impl Thresholds {
    /// Unready at `ratio >= enter`, ready again at `ratio <= exit`.
    /// [`HealthBuilder::build`](super::HealthBuilder::build) rejects
    /// `exit > enter` and values outside `0.0..=1.0`.
    pub fn new(enter: f64, exit: f64) -> Self {
        Self { enter, exit }
    }

    pub(crate) fn is_valid(&self) -> bool {
        (0.0..=1.0).contains(&self.enter)
            && (0.0..=1.0).contains(&self.exit)
            && self.exit <= self.enter
    }
}

/// A saturation source with its hysteresis state.
pub(crate) struct Gate {
    pub(crate) name: String,
    source: Arc<dyn Saturation>,
    thresholds: Thresholds,
    saturated: AtomicBool,
    /// Saturation fails readiness; otherwise it is reported as degraded.
    pub(crate) critical: bool,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("name", &self.name)
            .field("thresholds", &self.thresholds)
            .finish_non_exhaustive()
    }
}

impl Gate {
    pub(crate) fn new(name: String, source: Arc<dyn Saturation>, thresholds: Thresholds) -> Self {
        Self {
            name,
            source,
            thresholds,
            saturated: AtomicBool::new(false),
            critical: true,
        }
    }

    /// Reported as degraded, not failing, when saturated.
    pub(crate) fn non_critical(mut self) -> Self {
        self.critical = false;
        self
    }

    /// Reads the source and applies hysteresis. Returns the load, whether
    /// the gate is saturated now, and whether that changed.
    pub(crate) fn evaluate(&self) -> (Load, bool, bool) {
        let load = self.source.load();
        let ratio = load.ratio();
        let was = self.saturated.load(Ordering::Acquire);
        let now = if was {
            ratio > self.thresholds.exit
        } else {
            ratio >= self.thresholds.enter
        };
        let changed = now != was
            && self
                .saturated
                .compare_exchange(was, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        (load, now, changed)
    }
}

#[cfg(feature = "deadpool")]
mod deadpool_pool {
    use super::{Load, Saturation};

    /// A `deadpool` pool's checked-out objects out of its `max_size`.
    #[cfg_attr(docsrs, doc(cfg(feature = "deadpool")))]
    impl<M: deadpool::managed::Manager + 'static> Saturation for deadpool::managed::Pool<M>
    where
        M::Type: Send,
        M::Error: Send,
    {
        fn load(&self) -> Load {
            let status = self.status();
            Load {
                in_use: status.size.saturating_sub(status.available) as u64,
                capacity: status.max_size as u64,
            }
        }
    }
}

#[cfg(feature = "sqlx")]
mod sqlx_pool {
    use super::{Load, Saturation};

    /// A `sqlx` pool's connections in use out of `max_connections`.
    #[cfg_attr(docsrs, doc(cfg(feature = "sqlx")))]
    impl<DB: sqlx::Database> Saturation for sqlx::Pool<DB> {
        fn load(&self) -> Load {
            Load {
                in_use: u64::from(self.size()).saturating_sub(self.num_idle() as u64),
                capacity: u64::from(self.options().get_max_connections()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn hysteresis_enters_at_enter_and_leaves_at_exit() {
        let in_use = Arc::new(AtomicU64::new(0));
        let src = Arc::clone(&in_use);
        let gate = Gate::new(
            "pool".into(),
            Arc::new(move || Load {
                in_use: src.load(Ordering::Relaxed),
                capacity: 10,
            }),
            Thresholds::default(),
        );
        let at = |n: u64| {
            in_use.store(n, Ordering::Relaxed);
            let (_, saturated, _) = gate.evaluate();
            saturated
        };
        assert!(!at(8));
        assert!(at(9), "0.9 enters");
        assert!(at(8), "0.8 is above exit: still saturated");
        assert!(!at(7), "0.7 exits");
        assert!(!at(8), "0.8 is below enter: still ready");
        assert!(at(10));
    }

    #[test]
    fn zero_capacity_never_saturates_and_thresholds_validate() {
        assert_eq!(
            Load {
                in_use: 5,
                capacity: 0
            }
            .ratio(),
            0.0
        );
        assert!(Thresholds::default().is_valid());
        assert!(!Thresholds::new(0.5, 0.7).is_valid());
        assert!(!Thresholds::new(1.5, 0.7).is_valid());
    }
}
