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

mod layer;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use layer::{BulkheadLayer, BulkheadService};

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
    semaphore: Arc<Semaphore>,
    max_concurrent: u32,
    max_wait: Duration,
}

/// A slot; dropping it frees the slot, also when the future holding it is
/// cancelled.
#[derive(Debug)]
pub struct BulkheadPermit {
    _permit: OwnedSemaphorePermit,
}

impl Bulkhead {
    /// `max_concurrent` calls at once; a caller waits up to `max_wait` for
    /// a slot (zero: fail at once). A size of zero is raised to one.
    pub fn new(max_concurrent: u32, max_wait: Duration) -> Self {
        let max_concurrent = max_concurrent.max(1);
        Self {
            semaphore: Arc::new(Semaphore::new(max_concurrent as usize)),
            max_concurrent,
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
            max_concurrent: self.max_concurrent,
        };
        if self.max_wait.is_zero() {
            return Err(full);
        }
        match tokio::time::timeout(self.max_wait, Arc::clone(&self.semaphore).acquire_owned()).await
        {
            Ok(Ok(permit)) => Ok(BulkheadPermit { _permit: permit }),
            _ => Err(full),
        }
    }

    /// Takes a slot if one is free now.
    pub fn try_acquire(&self) -> Option<BulkheadPermit> {
        Arc::clone(&self.semaphore)
            .try_acquire_owned()
            .ok()
            .map(|permit| BulkheadPermit { _permit: permit })
    }

    /// Slots in use.
    pub fn in_use(&self) -> u32 {
        let free = u32::try_from(self.semaphore.available_permits()).unwrap_or(u32::MAX);
        self.max_concurrent.saturating_sub(free)
    }

    /// Whether every slot is taken.
    pub fn is_full(&self) -> bool {
        self.semaphore.available_permits() == 0
    }

    /// The bulkhead's size.
    pub fn max_concurrent(&self) -> u32 {
        self.max_concurrent
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
            capacity: u64::from(self.max_concurrent),
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
