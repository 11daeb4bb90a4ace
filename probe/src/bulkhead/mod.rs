//! Bulkhead: bounded concurrency for one dependency, so that a slow
//! dependency holds at most `max_concurrent` callers instead of all of them.
//!
//! ```
//! use std::time::Duration;
//! use probity_probe::bulkhead::{Bulkhead, Full};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let bulkhead = Bulkhead::new(2, Duration::ZERO); // fail fast when full
//! let a = bulkhead.acquire().await.expect("slot");
//! let b = bulkhead.acquire().await.expect("slot");
//! assert_eq!(bulkhead.acquire().await.expect_err("full"), Full { max_concurrent: 2 });
//! drop(a);
//! assert!(bulkhead.acquire().await.is_ok());
//! # drop(b);
//! # }
//! ```
//!
//! A `Bulkhead` is a [`crate::health::Saturation`] source:
//! register it with the health registry and a full bulkhead makes the pod
//! unready, with hysteresis.
//!
//! [`Bulkhead::adaptive`] sizes itself from the dependency's latency
//! instead of a hand-picked number ([`AdaptiveLimit`]).

mod adaptive;
mod layer;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub use adaptive::AdaptiveLimit;
pub use layer::{BulkheadLayer, BulkheadService};

use adaptive::Adaptive;

use crate::health::{Load, Saturation};

/// The bulkhead had no free slot within its maximum wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bulkhead full: {max_concurrent} calls in flight")]
pub struct Full {
    /// The bulkhead's size.
    pub max_concurrent: u32,
}

/// Bounded concurrency with a bounded wait. Cheap to clone; clones share
/// the slots.
#[derive(Debug, Clone)]
pub struct Bulkhead {
    kind: Kind,
    max_wait: Duration,
}

#[derive(Debug, Clone)]
enum Kind {
    Fixed {
        semaphore: Arc<Semaphore>,
        max_concurrent: u32,
    },
    Adaptive(Arc<Adaptive>),
}

/// A slot; dropping it frees the slot, also when the future holding it is
/// cancelled. For an adaptive bulkhead, the time it was held is the call's
/// latency.
#[derive(Debug)]
pub struct BulkheadPermit {
    slot: Slot,
}

#[derive(Debug)]
enum Slot {
    Fixed(#[allow(dead_code, reason = "held for its drop")] OwnedSemaphorePermit),
    Adaptive {
        shared: Arc<Adaptive>,
        started: Instant,
        inflight: u32,
        dropped: bool,
        unused: bool,
    },
}

impl BulkheadPermit {
    /// The call was dropped by the dependency or timed out: an adaptive
    /// bulkhead cuts its limit. No effect on a fixed one.
    pub fn dropped(mut self) {
        if let Slot::Adaptive { dropped, .. } = &mut self.slot {
            *dropped = true;
        }
    }

    /// The slot was given back without a call to the dependency (a breaker
    /// refused it, say): an adaptive bulkhead takes no latency sample from
    /// it, since a refusal in microseconds is not the dependency getting
    /// faster. No effect on a fixed one.
    pub fn unused(mut self) {
        if let Slot::Adaptive { unused, .. } = &mut self.slot {
            *unused = true;
        }
    }
}

impl Drop for BulkheadPermit {
    fn drop(&mut self) {
        if let Slot::Adaptive {
            shared,
            started,
            inflight,
            dropped,
            unused,
        } = &self.slot
        {
            let sample = (!*unused).then_some((*started, *inflight, *dropped));
            shared.release(sample);
        }
    }
}

impl Bulkhead {
    /// `max_concurrent` calls at once; a caller waits up to `max_wait` for
    /// a slot (zero: fail at once). A size of zero is raised to one.
    pub fn new(max_concurrent: u32, max_wait: Duration) -> Self {
        let max_concurrent = max_concurrent.max(1);
        Self {
            kind: Kind::Fixed {
                semaphore: Arc::new(Semaphore::new(max_concurrent as usize)),
                max_concurrent,
            },
            max_wait,
        }
    }

    /// A bulkhead whose size follows the dependency's latency between the
    /// limit's floor and ceiling; a caller waits up to `max_wait` for a slot.
    ///
    /// ```
    /// use std::time::Duration;
    /// use probity_probe::bulkhead::{AdaptiveLimit, Bulkhead};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let payments = Bulkhead::adaptive(AdaptiveLimit::new(4, 64).initial(16), Duration::ZERO);
    /// let slot = payments.acquire().await.expect("below the limit");
    /// assert_eq!(payments.max_concurrent(), 16);
    /// drop(slot); // its latency feeds the limit
    /// # }
    /// ```
    pub fn adaptive(limit: AdaptiveLimit, max_wait: Duration) -> Self {
        Self {
            kind: Kind::Adaptive(Arc::new(Adaptive::new(limit))),
            max_wait,
        }
    }

    /// Takes a slot, waiting up to the maximum wait.
    ///
    /// # Errors
    ///
    /// [`Full`] when no slot freed up in time.
    pub async fn acquire(&self) -> Result<BulkheadPermit, Full> {
        if let Some(permit) = self.try_acquire() {
            return Ok(permit);
        }
        let full = Full {
            max_concurrent: self.max_concurrent(),
        };
        if self.max_wait.is_zero() {
            return Err(full);
        }
        match &self.kind {
            Kind::Fixed { semaphore, .. } => {
                match tokio::time::timeout(self.max_wait, Arc::clone(semaphore).acquire_owned())
                    .await
                {
                    Ok(Ok(permit)) => Ok(BulkheadPermit {
                        slot: Slot::Fixed(permit),
                    }),
                    _ => Err(full),
                }
            }
            Kind::Adaptive(shared) => {
                let deadline = crate::deadline::saturating_add(Instant::now(), self.max_wait);
                loop {
                    let released = shared.released.notified();
                    if let Some(permit) = self.try_acquire() {
                        return Ok(permit);
                    }
                    if tokio::time::timeout_at(deadline, released).await.is_err() {
                        return self.try_acquire().ok_or(Full {
                            max_concurrent: self.max_concurrent(),
                        });
                    }
                }
            }
        }
    }

    /// Takes a slot if one is free now.
    pub fn try_acquire(&self) -> Option<BulkheadPermit> {
        match &self.kind {
            Kind::Fixed { semaphore, .. } => {
                Arc::clone(semaphore)
                    .try_acquire_owned()
                    .ok()
                    .map(|permit| BulkheadPermit {
                        slot: Slot::Fixed(permit),
                    })
            }
            Kind::Adaptive(shared) => shared.try_take().map(|inflight| BulkheadPermit {
                slot: Slot::Adaptive {
                    shared: Arc::clone(shared),
                    started: Instant::now(),
                    inflight,
                    dropped: false,
                    unused: false,
                },
            }),
        }
    }

    /// Slots in use.
    pub fn in_use(&self) -> u32 {
        match &self.kind {
            Kind::Fixed {
                semaphore,
                max_concurrent,
            } => {
                let free = u32::try_from(semaphore.available_permits()).unwrap_or(u32::MAX);
                max_concurrent.saturating_sub(free)
            }
            Kind::Adaptive(shared) => shared.inflight.load(std::sync::atomic::Ordering::Acquire),
        }
    }

    /// Whether every slot is taken.
    pub fn is_full(&self) -> bool {
        self.in_use() >= self.max_concurrent()
    }

    /// The bulkhead's size now (an adaptive bulkhead's current limit).
    pub fn max_concurrent(&self) -> u32 {
        match &self.kind {
            Kind::Fixed { max_concurrent, .. } => *max_concurrent,
            Kind::Adaptive(shared) => shared.limit.load(std::sync::atomic::Ordering::Acquire),
        }
    }

    /// Whether the size follows latency.
    pub fn is_adaptive(&self) -> bool {
        matches!(self.kind, Kind::Adaptive(_))
    }

    /// How long a caller may wait for a slot.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }
}

impl Saturation for Bulkhead {
    fn load(&self) -> Load {
        Load {
            in_use: u64::from(self.in_use()),
            capacity: u64::from(self.max_concurrent()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_up_to_max_wait_then_fails() {
        let b = Bulkhead::new(1, Duration::from_millis(100));
        let held = b.acquire().await.expect("slot");
        assert_eq!(b.in_use(), 1);
        let started = tokio::time::Instant::now();
        assert_eq!(
            b.acquire().await.expect_err("full"),
            Full { max_concurrent: 1 }
        );
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.acquire().await.map(drop) });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        assert_eq!(waiter.await.expect("join"), Ok(()));
        assert_eq!(b.in_use(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_adaptive_bulkhead_admits_up_to_its_limit_and_follows_latency() {
        let b = Bulkhead::adaptive(
            AdaptiveLimit::new(2, 64)
                .initial(8)
                .window(Duration::from_millis(100), 8),
            Duration::from_millis(50),
        );
        assert!(b.is_adaptive());
        let held: Vec<_> = (0..8).map(|_| b.try_acquire().expect("below 8")).collect();
        assert!(b.is_full());
        assert_eq!(
            b.load(),
            Load {
                in_use: 8,
                capacity: 8
            }
        );
        // A waiter gets the slot a finished call frees.
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.acquire().await.map(drop) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(held);
        assert_eq!(waiter.await.expect("join"), Ok(()));
        // Calls eight times slower than the first window: the limit falls.
        for latency in [10, 80, 80, 80] {
            tokio::time::advance(Duration::from_millis(100)).await;
            let slots: Vec<_> = (0..8).filter_map(|_| b.try_acquire()).collect();
            tokio::time::advance(Duration::from_millis(latency)).await;
            drop(slots);
        }
        assert!(b.max_concurrent() < 8, "{}", b.max_concurrent());
        assert_eq!(b.in_use(), 0);
        // Slots given back unused (refused before the call) say nothing:
        // a thousand of them in microseconds do not lower the baseline.
        let limit = b.max_concurrent();
        for _ in 0..1000 {
            b.try_acquire().expect("slot").unused();
        }
        tokio::time::advance(Duration::from_millis(200)).await;
        for _ in 0..20 {
            b.try_acquire().expect("slot").unused();
        }
        assert_eq!(
            b.max_concurrent(),
            limit,
            "no window closed on unused slots"
        );
        // Calls at the first window's latency again: the limit holds or
        // grows, as it would not had the unused slots set the minimum.
        for _ in 0..5 {
            tokio::time::advance(Duration::from_millis(100)).await;
            let slots: Vec<_> = (0..64).filter_map(|_| b.try_acquire()).collect();
            tokio::time::advance(Duration::from_millis(10)).await;
            drop(slots);
        }
        assert!(
            b.max_concurrent() >= limit,
            "{} < {limit}",
            b.max_concurrent()
        );
        let err = {
            let _all: Vec<_> = (0..64).filter_map(|_| b.try_acquire()).collect();
            b.acquire().await.expect_err("full")
        };
        assert_eq!(err.max_concurrent, b.max_concurrent());
    }

    #[tokio::test]
    async fn cancelled_waiters_and_dropped_permits_leave_nothing_held() {
        let b = Bulkhead::new(2, Duration::from_secs(10));
        let one = b.acquire().await.expect("slot");
        let two = b.acquire().await.expect("slot");
        let waiting = b.acquire();
        drop(tokio::time::timeout(Duration::from_millis(10), waiting).await);
        drop((one, two));
        assert_eq!(b.in_use(), 0);
        assert_eq!(
            b.load(),
            Load {
                in_use: 0,
                capacity: 2
            }
        );
    }
}
