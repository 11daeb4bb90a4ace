//! Load shedding: refuse work early, with `503` and a jittered
//! `Retry-After`, instead of queueing it behind work that is already late.
//!
//! A request is shed, without reaching the inner service, when
//! - the bulkhead it would run in is full,
//! - the service is shutting down past its drain delay (a request that
//!   arrives on a connection kept open after that is told to go
//!   elsewhere; during the delay, while endpoint removal propagates and
//!   load balancers still send traffic, requests are served), or
//! - its remaining deadline is below the floor the work needs.
//!
//! `Retry-After` is the breaker's remaining open time when a breaker is
//! attached and open, the configured value otherwise, jittered by ±20%
//! (rounded up to whole seconds, at least 1).
//!
//! ```
//! use std::time::Duration;
//! use probity_probe::bulkhead::Bulkhead;
//! use probity_probe::shed::LoadShedLayer;
//!
//! let bulkhead = Bulkhead::new(64, Duration::ZERO);
//! let app: axum::Router = axum::Router::new()
//!     .route("/orders", axum::routing::post(|| async { "created" }))
//!     .layer(LoadShedLayer::new().bulkhead(bulkhead).min_budget(Duration::from_millis(50)));
//! # drop(app);
//! ```

mod layer;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub use layer::LoadShed;

use crate::breaker::CircuitBreaker;
use crate::bulkhead::Bulkhead;
use crate::health::{Health, Phase};

/// Why a request was shed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The bulkhead is full.
    Saturated,
    /// A shutdown is under way.
    Draining,
    /// The remaining deadline cannot cover the work.
    Budget,
}

impl Reason {
    /// The response body.
    fn body(self) -> &'static str {
        match self {
            Reason::Saturated => "overloaded\n",
            Reason::Draining => "shutting down\n",
            Reason::Budget => "deadline too short\n",
        }
    }
}

/// Sheds requests before they do work; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct LoadShedLayer {
    bulkhead: Option<Bulkhead>,
    health: Option<Health>,
    breaker: Option<CircuitBreaker>,
    min_budget: Option<Duration>,
    retry_after: Duration,
    rng: Arc<Mutex<fastrand::Rng>>,
}

impl Default for LoadShedLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl LoadShedLayer {
    /// Sheds nothing until a source is attached; `Retry-After` 1 s.
    pub fn new() -> Self {
        Self {
            bulkhead: None,
            health: None,
            breaker: None,
            min_budget: None,
            retry_after: Duration::from_secs(1),
            rng: Arc::new(Mutex::new(fastrand::Rng::new())),
        }
    }

    /// Shed when this bulkhead is full.
    pub fn bulkhead(mut self, bulkhead: Bulkhead) -> Self {
        self.bulkhead = Some(bulkhead);
        self
    }

    /// Shed once this registry's shutdown is past its drain delay. During
    /// the delay requests are served: readiness already fails, but load
    /// balancers have not all seen it yet.
    pub fn health(mut self, health: Health) -> Self {
        self.health = Some(health);
        self
    }

    /// Derive `Retry-After` from this breaker's remaining open time.
    pub fn breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Shed requests whose remaining deadline is below `floor`.
    pub fn min_budget(mut self, floor: Duration) -> Self {
        self.min_budget = Some(floor);
        self
    }

    /// `Retry-After` when no breaker says otherwise, and a jitter seed.
    pub fn retry_after(mut self, after: Duration, seed: Option<u64>) -> Self {
        self.retry_after = after;
        if let Some(seed) = seed {
            self.rng = Arc::new(Mutex::new(fastrand::Rng::with_seed(seed)));
        }
        self
    }

    /// Whether a request would be shed now, and why.
    pub fn should_shed(&self) -> Option<Reason> {
        if self
            .health
            .as_ref()
            .is_some_and(|h| h.phase() >= Phase::Stopping)
        {
            return Some(Reason::Draining);
        }
        if self.bulkhead.as_ref().is_some_and(Bulkhead::is_full) {
            return Some(Reason::Saturated);
        }
        if let Some(floor) = self.min_budget
            && crate::deadline::remaining().is_some_and(|left| left < floor)
        {
            return Some(Reason::Budget);
        }
        None
    }

    /// The jittered `Retry-After`, in whole seconds.
    pub fn retry_after_secs(&self) -> u64 {
        let base = match &self.breaker {
            Some(b) if b.state().is_open() => b.remaining_open().max(Duration::from_millis(1)),
            _ => self.retry_after,
        };
        let factor = 0.8
            + 0.4
                * self
                    .rng
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .f64();
        base.mul_f64(factor).as_secs_f64().ceil().max(1.0) as u64
    }
}
