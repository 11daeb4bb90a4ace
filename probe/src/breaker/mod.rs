//! Circuit breaker: stop calling a dependency that is failing or slow, and
//! let a few trial calls find out when it has recovered.
//!
//! ```
//! use std::time::Duration;
//! use probity_probe::breaker::{CircuitBreaker, State, Verdict};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let breaker = CircuitBreaker::builder()
//!     .count_window(20)
//!     .minimum_calls(5)
//!     .failure_rate(0.5)
//!     .slow_call(Duration::from_secs(2), 0.8)
//!     .build()
//!     .expect("valid");
//! for _ in 0..5 {
//!     let permit = breaker.try_acquire().expect("closed");
//!     permit.record(Verdict::Failure);
//! }
//! assert_eq!(breaker.state(), State::Open);
//! assert!(breaker.try_acquire().is_err());
//! # }
//! ```
//!
//! The closed path takes no lock: admission is one atomic load, recording
//! a handful of atomic adds. Permits are drop guards: a call whose future
//! is dropped releases its permit and counts as [`OnCancel`] says.

mod builder;
mod config;
pub mod error;
#[cfg(feature = "redis")]
mod fleet;
mod layer;
mod permit;
mod state;
mod window;

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

pub use builder::Builder;
pub use config::{Config, HalfOpen, OnCancel, Window};
pub use error::Open;
pub use layer::{CircuitBreakerLayer, CircuitBreakerService, Classify, ResponseFuture};
pub use permit::{OwnedPermit, Permit};
pub use state::{State, Transition, Verdict};
pub use window::Snapshot;

use permit::{PermitKind, SharedRef, permit};

use window::{CountWindow, Outcome, TimeWindow};

/// A circuit breaker. Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    shared: Arc<Shared>,
}

#[derive(Debug)]
enum Windowed {
    Count(CountWindow),
    Time(TimeWindow),
}

#[derive(Debug)]
struct Shared {
    config: Config,
    origin: Instant,
    state: AtomicU8,
    /// Bumped on every transition; permits from an older generation are
    /// not counted.
    generation: AtomicU64,
    /// While open: when trials may start, in ms since `origin`.
    open_until: AtomicU64,
    /// Longest Retry-After hint seen since the last opening, in ms.
    hint_ms: AtomicU64,
    /// Whether the current opening comes from this replica's own calls
    /// (its window or a failed trial) rather than from its peers.
    own_evidence: AtomicBool,
    /// Who sends the trial when an open period ends: [`Gate`].
    gate: AtomicU8,
    /// How long past the open period a gated breaker waits for the fleet's
    /// verdict before it sends a trial of its own, in ms.
    gate_patience_ms: AtomicU64,
    window: Windowed,
    /// A count window and no slow-call timing: a closed call needs no
    /// clock, only the window.
    untimed_count: bool,
    slow: Mutex<SlowPath>,
    events: broadcast::Sender<Transition>,
    current: watch::Sender<State>,
}

#[derive(Debug)]
struct SlowPath {
    consecutive_openings: u32,
    rng: fastrand::Rng,
    /// Single probe: the current trial's id and lease end.
    trial: Option<(u64, Instant)>,
    next_trial: u64,
    /// Probes(n): trials admitted, and their outcomes so far.
    admitted: u32,
    results: Snapshot,
}

impl CircuitBreaker {
    /// Starts a configuration.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The current state.
    pub fn state(&self) -> State {
        State::from_code(self.shared.state.load(Ordering::Acquire))
    }

    /// The window's totals now.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot(Instant::now())
    }

    /// Every transition from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Transition> {
        self.shared.events.subscribe()
    }

    /// The current state, as a watch channel.
    pub fn watch(&self) -> watch::Receiver<State> {
        self.shared.current.subscribe()
    }

    /// Time until an open breaker admits a trial; zero when not open.
    pub fn remaining_open(&self) -> Duration {
        match self.state() {
            State::Open => {
                let until = self.shared.open_until.load(Ordering::Acquire);
                Duration::from_millis(until.saturating_sub(self.shared.now_ms(Instant::now())))
            }
            State::ForcedOpen => self.shared.config.open_base,
            _ => Duration::ZERO,
        }
    }

    /// Asks to make a call.
    ///
    /// # Errors
    ///
    /// [`Open`] with the time until a call may be admitted.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Open> {
        self.acquire_with(SharedRef::Borrowed(&self.shared))
    }

    /// Like [`CircuitBreaker::try_acquire`], with a permit that owns a
    /// reference to the breaker.
    ///
    /// # Errors
    ///
    /// [`Open`] with the time until a call may be admitted.
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit, Open> {
        self.acquire_with(SharedRef::Owned(Arc::clone(&self.shared)))
    }

    #[inline]
    fn acquire_with<'a>(&self, shared: SharedRef<'a>) -> Result<Permit<'a>, Open> {
        let s = &self.shared;
        let state = State::from_code(s.state.load(Ordering::Acquire));
        match state {
            State::Closed => Ok(permit(shared, PermitKind::Closed)),
            State::Disabled => Ok(permit(shared, PermitKind::Uncounted)),
            State::ForcedOpen => Err(Open {
                retry_after: s.config.open_base,
            }),
            State::Open | State::HalfOpen => {
                let now = Instant::now();
                if state == State::Open {
                    let until = s.open_until.load(Ordering::Acquire);
                    let now_ms = s.now_ms(now);
                    if now_ms < until {
                        return Err(Open {
                            retry_after: Duration::from_millis(until - now_ms),
                        });
                    }
                }
                self.admit_trial(shared, now)
            }
        }
    }

    fn admit_trial<'a>(&self, shared: SharedRef<'a>, now: Instant) -> Result<Permit<'a>, Open> {
        let s = &self.shared;
        let mut slow = s.slow.lock().unwrap_or_else(PoisonError::into_inner);
        let state = State::from_code(s.state.load(Ordering::Acquire));
        match state {
            State::Open => {
                let now_ms = s.now_ms(now);
                let until = s.open_until.load(Ordering::Acquire);
                if now_ms < until {
                    drop(slow);
                    return self.acquire_with(shared);
                }
                if let Some(retry_after) = s.gated(now_ms, until) {
                    return Err(Open { retry_after });
                }
                s.transition(&mut slow, State::Open, State::HalfOpen, now);
            }
            State::HalfOpen => {}
            _ => {
                drop(slow);
                return self.acquire_with(shared);
            }
        }
        match s.config.half_open {
            HalfOpen::SingleProbe { lease } => {
                if let Some((_, lease_end)) = slow.trial
                    && now < lease_end
                {
                    return Err(Open {
                        retry_after: lease_end - now,
                    });
                }
                let id = slow.next_trial;
                slow.next_trial += 1;
                slow.trial = Some((id, crate::deadline::saturating_add(now, lease)));
                drop(slow);
                Ok(permit(shared, PermitKind::Trial(id)))
            }
            HalfOpen::Probes(n) => {
                if slow.admitted >= n {
                    return Err(Open {
                        retry_after: Duration::from_millis(100),
                    });
                }
                slow.admitted += 1;
                let id = slow.next_trial;
                slow.next_trial += 1;
                drop(slow);
                Ok(permit(shared, PermitKind::Trial(id)))
            }
        }
    }

    /// Opens the breaker until [`CircuitBreaker::reset`].
    pub fn force_open(&self) {
        self.shared.manual(State::ForcedOpen);
    }

    /// Admits every call and counts none, until [`CircuitBreaker::reset`].
    pub fn disable(&self) {
        self.shared.manual(State::Disabled);
    }

    /// Closes the breaker with an empty window and no backoff history.
    pub fn reset(&self) {
        self.shared.manual(State::Closed);
    }

    /// Runs `call` under the breaker; an `Err` counts as a failure.
    ///
    /// ```
    /// # use probity_probe::breaker::{CircuitBreaker, Rejected};
    /// let breaker = CircuitBreaker::builder().build().expect("valid");
    /// let n: Result<u32, Rejected<std::num::ParseIntError>> = breaker.call(|| "7".parse());
    /// assert_eq!(n.ok(), Some(7));
    /// ```
    ///
    /// On the closed path this is one state check before the call and one
    /// window write after it, with no permit to carry.
    ///
    /// # Errors
    ///
    /// `Err(Rejected::Open)` without running `call` when the breaker is
    /// open; otherwise the call's own error as `Rejected::Inner`.
    #[inline]
    pub fn call<T, E>(&self, call: impl FnOnce() -> Result<T, E>) -> Result<T, Rejected<E>> {
        self.call_with(err_is_failure, call)
    }

    /// Like [`CircuitBreaker::call`], counting the result as `classify`
    /// says.
    ///
    /// # Errors
    ///
    /// As [`CircuitBreaker::call`].
    #[inline]
    pub fn call_with<T, E>(
        &self,
        classify: impl FnOnce(&Result<T, E>) -> Verdict,
        call: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, Rejected<E>> {
        // The closed path on its own, so its permit is never merged with
        // one from `try_acquire` and stays in registers.
        if self.closed_untimed() {
            let permit = Permit::closed_untimed(SharedRef::Borrowed(&self.shared));
            let result = call();
            permit.record(classify(&result));
            return result.map_err(Rejected::Inner);
        }
        self.call_acquired(classify, call)
    }

    fn call_acquired<T, E>(
        &self,
        classify: impl FnOnce(&Result<T, E>) -> Verdict,
        call: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, Rejected<E>> {
        let permit = self.try_acquire().map_err(Rejected::Open)?;
        let result = call();
        permit.record(classify(&result));
        result.map_err(Rejected::Inner)
    }

    /// Runs the future `call` makes under the breaker; an `Err` counts as
    /// a failure, and dropping the future before it finishes counts as the
    /// breaker's [`OnCancel`].
    ///
    /// # Errors
    ///
    /// `Err(Rejected::Open)` without calling `call` when the breaker is
    /// open; otherwise the call's own error as `Rejected::Inner`.
    pub async fn call_async<F, Fut, T, E>(&self, call: F) -> Result<T, Rejected<E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        self.call_async_with(err_is_failure, call).await
    }

    /// Like [`CircuitBreaker::call_async`], counting the result as
    /// `classify` says.
    ///
    /// # Errors
    ///
    /// As [`CircuitBreaker::call_async`].
    pub async fn call_async_with<F, Fut, T, E, C>(
        &self,
        classify: C,
        call: F,
    ) -> Result<T, Rejected<E>>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
        C: FnOnce(&Result<T, E>) -> Verdict,
    {
        let permit = self.admit().map_err(Rejected::Open)?;
        let result = call().await;
        permit.record(classify(&result));
        result.map_err(Rejected::Inner)
    }

    /// Admission with the closed, untimed case first: one load of the
    /// state, no clock.
    #[inline(always)]
    fn admit(&self) -> Result<Permit<'_>, Open> {
        if self.closed_untimed() {
            return Ok(Permit::closed_untimed(SharedRef::Borrowed(&self.shared)));
        }
        self.try_acquire()
    }

    /// [`CircuitBreaker::admit`] with a permit that owns a reference to the
    /// breaker (the tower layer's).
    #[inline]
    pub(crate) fn admit_owned(&self) -> Result<OwnedPermit, Open> {
        if self.closed_untimed() {
            return Ok(Permit::closed_untimed(SharedRef::Owned(Arc::clone(
                &self.shared,
            ))));
        }
        self.try_acquire_owned()
    }

    #[inline(always)]
    fn closed_untimed(&self) -> bool {
        let s = &self.shared;
        s.untimed_count && s.state.load(Ordering::Acquire) == State::Closed.code()
    }
}

fn err_is_failure<T, E>(result: &Result<T, E>) -> Verdict {
    match result {
        Ok(_) => Verdict::Success,
        Err(_) => Verdict::Failure,
    }
}

/// The error of [`CircuitBreaker::call`].
#[derive(Debug, thiserror::Error)]
pub enum Rejected<E> {
    /// The breaker was open; the call did not run.
    #[error(transparent)]
    Open(Open),
    /// The call ran and failed.
    #[error("{0}")]
    Inner(E),
}

/// Who may send the trial when an open period ends. Only the fleet
/// (feature `redis`) sets anything but `Local`; the closed path never reads
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
#[repr(u8)]
pub(crate) enum Gate {
    /// This breaker decides alone.
    Local = 0,
    /// Another replica may hold the fleet's probe lease: stay open until
    /// its verdict arrives (or the patience runs out).
    Fleet = 1,
    /// This replica holds the lease: send the trial.
    Probe = 2,
}

impl Shared {
    /// While the fleet decides the trial: how long to keep rejecting.
    #[inline]
    fn gated(&self, now_ms: u64, until: u64) -> Option<Duration> {
        if self.gate.load(Ordering::Acquire) != Gate::Fleet as u8 {
            return None;
        }
        let patience = self.gate_patience_ms.load(Ordering::Acquire);
        let waited = now_ms.saturating_sub(until);
        (waited < patience).then(|| Duration::from_millis((patience - waited).min(100)))
    }

    fn now_ms(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.origin).as_millis()).unwrap_or(u64::MAX)
    }

    fn second(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_secs()
    }

    fn snapshot(&self, now: Instant) -> Snapshot {
        match &self.window {
            Windowed::Count(w) => w.snapshot(),
            Windowed::Time(w) => w.snapshot(self.second(now)),
        }
    }

    /// After a failed or slow call while closed: open if the window says so.
    fn evaluate(&self, now: Instant) {
        let snap = self.snapshot(now);
        if snap.calls < self.config.minimum_calls || !self.config.trips(snap) {
            return;
        }
        let mut slow = self.slow.lock().unwrap_or_else(PoisonError::into_inner);
        if State::from_code(self.state.load(Ordering::Acquire)) == State::Closed {
            self.open(&mut slow, State::Closed, now);
        }
    }

    fn open(&self, slow: &mut SlowPath, from: State, now: Instant) {
        let c = &self.config;
        let jitter_unit = if c.jitter > 0.0 { slow.rng.f64() } else { 0.5 };
        let mut open = c.open_duration(slow.consecutive_openings, jitter_unit);
        let hint = Duration::from_millis(self.hint_ms.swap(0, Ordering::AcqRel));
        open = open.max(hint.min(c.open_max));
        slow.consecutive_openings = slow.consecutive_openings.saturating_add(1);
        let until = self
            .now_ms(now)
            .saturating_add(u64::try_from(open.as_millis()).unwrap_or(u64::MAX / 2));
        self.open_until.store(until, Ordering::Release);
        self.own_evidence.store(true, Ordering::Release);
        self.transition(slow, from, State::Open, now);
    }

    fn transition(&self, slow: &mut SlowPath, from: State, to: State, now: Instant) {
        let snapshot = self.snapshot(now);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.state.store(to.code(), Ordering::Release);
        slow.trial = None;
        slow.admitted = 0;
        slow.results = Snapshot::default();
        if to == State::Closed {
            match &self.window {
                Windowed::Count(w) => w.reset(),
                Windowed::Time(w) => w.reset(),
            }
        }
        match to {
            State::Open | State::ForcedOpen => {
                tracing::warn!(
                    from = from.as_str(),
                    calls = snapshot.calls,
                    failures = snapshot.failures,
                    slow = snapshot.slow,
                    "circuit breaker open"
                );
            }
            _ => tracing::info!(
                from = from.as_str(),
                to = to.as_str(),
                "circuit breaker state change"
            ),
        }
        self.current.send_replace(to);
        let _ = self.events.send(Transition { from, to, snapshot });
    }

    fn manual(&self, to: State) {
        let mut slow = self.slow.lock().unwrap_or_else(PoisonError::into_inner);
        let from = State::from_code(self.state.load(Ordering::Acquire));
        if to == State::Closed {
            slow.consecutive_openings = 0;
            self.hint_ms.store(0, Ordering::Release);
        }
        self.transition(&mut slow, from, to, Instant::now());
    }

    fn trial_done(&self, id: u64, generation: u64, outcome: Outcome, ignored: bool) {
        let mut slow = self.slow.lock().unwrap_or_else(PoisonError::into_inner);
        if self.generation.load(Ordering::Acquire) != generation {
            return; // a late trial from an earlier half-open period
        }
        let now = Instant::now();
        match self.config.half_open {
            HalfOpen::SingleProbe { .. } => {
                if slow.trial.map(|(t, _)| t) != Some(id) {
                    return; // its lease expired and another trial took over
                }
                if ignored {
                    slow.trial = None;
                } else if outcome == Outcome::Success {
                    slow.consecutive_openings = 0;
                    self.transition(&mut slow, State::HalfOpen, State::Closed, now);
                } else {
                    self.open(&mut slow, State::HalfOpen, now);
                }
            }
            HalfOpen::Probes(n) => {
                if ignored {
                    slow.admitted = slow.admitted.saturating_sub(1);
                    return;
                }
                let r = &mut slow.results;
                r.calls += 1;
                r.failures += u32::from(matches!(outcome, Outcome::Failure | Outcome::SlowFailure));
                r.slow += u32::from(matches!(
                    outcome,
                    Outcome::SlowSuccess | Outcome::SlowFailure
                ));
                if r.calls < n {
                    return;
                }
                if self.config.trips(*r) {
                    self.open(&mut slow, State::HalfOpen, now);
                } else {
                    slow.consecutive_openings = 0;
                    self.transition(&mut slow, State::HalfOpen, State::Closed, now);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
