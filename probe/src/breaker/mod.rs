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

mod config;
pub mod error;
mod layer;
mod window;

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

pub use config::{Config, HalfOpen, OnCancel, Window};
pub use error::Open;
pub use layer::{CircuitBreakerLayer, CircuitBreakerService, Classify, ResponseFuture};
pub use window::Snapshot;

use window::{CountWindow, Outcome, TimeWindow};

/// Breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Calls flow; outcomes are counted.
    Closed,
    /// Calls are rejected until the open duration passes.
    Open,
    /// Trial calls decide between closing and reopening.
    HalfOpen,
    /// Opened by hand: rejects until [`CircuitBreaker::reset`].
    ForcedOpen,
    /// Disabled by hand: admits everything, counts nothing.
    Disabled,
}

impl State {
    const ALL: [State; 5] = [
        State::Closed,
        State::Open,
        State::HalfOpen,
        State::ForcedOpen,
        State::Disabled,
    ];

    /// `closed`, `open`, `half-open`, `forced-open` or `disabled`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
            State::ForcedOpen => "forced-open",
            State::Disabled => "disabled",
        }
    }

    /// Whether calls are being rejected.
    pub fn is_open(self) -> bool {
        matches!(self, State::Open | State::ForcedOpen)
    }

    fn code(self) -> u8 {
        self as u8
    }

    fn from_code(code: u8) -> State {
        State::ALL
            .get(usize::from(code))
            .copied()
            .unwrap_or(State::Closed)
    }
}

/// How a finished call counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The dependency did its job.
    Success,
    /// The dependency failed.
    Failure,
    /// The dependency failed and asked to be left alone this long
    /// (`Retry-After`); the longest hint since the last opening extends
    /// the next open period, up to the maximum.
    FailureRetryAfter(Duration),
    /// Says nothing about the dependency (a validation error, a 404).
    Ignore,
}

/// A state change, as sent to [`CircuitBreaker::subscribe`] receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// State before.
    pub from: State,
    /// State after.
    pub to: State,
    /// The window when it happened.
    pub snapshot: Snapshot,
}

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
    window: Windowed,
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

/// Builds a [`CircuitBreaker`].
#[derive(Debug, Clone, Default)]
pub struct Builder {
    config: Config,
}

impl Builder {
    /// Judge by the last `n` calls.
    pub fn count_window(mut self, n: u32) -> Self {
        self.config.window = Window::Count(n);
        self
    }

    /// Judge by the calls of the last `seconds` seconds.
    pub fn time_window(mut self, seconds: u32) -> Self {
        self.config.window = Window::Time(seconds);
        self
    }

    /// Calls the window must hold before the breaker may open.
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.config.minimum_calls = n;
        self
    }

    /// Open when the failure rate reaches `rate` (0 < rate <= 1).
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.config.failure_rate = rate;
        self
    }

    /// Calls slower than `slower_than` are slow, even when they succeed;
    /// open when the slow rate reaches `rate`.
    pub fn slow_call(mut self, slower_than: Duration, rate: f64) -> Self {
        self.config.slow_call = Some((slower_than, rate));
        self
    }

    /// Stay open `base`, multiplied by `backoff` for each consecutive
    /// opening (1.0 disables it), up to `max`.
    pub fn open_for(mut self, base: Duration, backoff: f64, max: Duration) -> Self {
        self.config.open_base = base;
        self.config.backoff = backoff.max(1.0);
        self.config.open_max = max;
        self
    }

    /// Jitter of the open duration as a fraction (default 0.1), and an
    /// optional seed for repeatable tests.
    pub fn jitter(mut self, fraction: f64, seed: Option<u64>) -> Self {
        self.config.jitter = fraction.clamp(0.0, 1.0);
        self.config.seed = seed;
        self
    }

    /// How the half-open state admits trials.
    pub fn half_open(mut self, mode: HalfOpen) -> Self {
        self.config.half_open = mode;
        self
    }

    /// What a dropped, unfinished call counts as.
    pub fn on_cancel(mut self, outcome: OnCancel) -> Self {
        self.config.on_cancel = outcome;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// [`error::Misconfigured`] for a rate outside `(0, 1]`, a zero window,
    /// minimum or probe count, or an open duration of zero or above its
    /// maximum.
    pub fn build(self) -> Result<CircuitBreaker, error::Misconfigured> {
        self.config.validate()?;
        let config = self.config;
        let window = match config.window {
            Window::Count(n) => Windowed::Count(CountWindow::new(n)),
            Window::Time(n) => Windowed::Time(TimeWindow::new(n)),
        };
        let rng = match config.seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        Ok(CircuitBreaker {
            shared: Arc::new(Shared {
                origin: Instant::now(),
                state: AtomicU8::new(State::Closed.code()),
                generation: AtomicU64::new(0),
                open_until: AtomicU64::new(0),
                hint_ms: AtomicU64::new(0),
                window,
                slow: Mutex::new(SlowPath {
                    consecutive_openings: 0,
                    rng,
                    trial: None,
                    next_trial: 0,
                    admitted: 0,
                    results: Snapshot::default(),
                }),
                events: broadcast::channel(64).0,
                current: watch::Sender::new(State::Closed),
                config,
            }),
        })
    }
}

/// Admission to one call. Record the outcome with [`Permit::record`];
/// dropping it unrecorded counts as the breaker's [`OnCancel`].
#[derive(Debug)]
#[must_use = "a permit records the call's outcome; dropping it counts as cancelled"]
pub struct Permit<'a> {
    shared: SharedRef<'a>,
    generation: u64,
    started: Option<Instant>,
    kind: PermitKind,
    done: bool,
}

/// The breaker a permit belongs to: borrowed on the direct path (no
/// reference-count traffic), owned where the permit must be `'static`.
#[derive(Debug)]
enum SharedRef<'a> {
    Borrowed(&'a Shared),
    Owned(Arc<Shared>),
}

impl std::ops::Deref for SharedRef<'_> {
    type Target = Shared;

    #[inline]
    fn deref(&self) -> &Shared {
        match self {
            SharedRef::Borrowed(s) => s,
            SharedRef::Owned(s) => s,
        }
    }
}

/// A permit that owns a reference to its breaker, for futures that must
/// be `'static` (the tower layer).
pub type OwnedPermit = Permit<'static>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermitKind {
    Closed,
    Trial(u64),
    Uncounted,
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
                if s.now_ms(now) < s.open_until.load(Ordering::Acquire) {
                    drop(slow);
                    return self.acquire_with(shared);
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

    /// Runs `call` under the breaker, classifying its result with
    /// `classify`.
    ///
    /// # Errors
    ///
    /// `Err(Rejected::Open)` without running `call` when the breaker is
    /// open; otherwise the call's own error as `Rejected::Inner`.
    pub async fn call<F, T, E, C>(&self, classify: C, call: F) -> Result<T, Rejected<E>>
    where
        F: std::future::Future<Output = Result<T, E>>,
        C: FnOnce(&Result<T, E>) -> Verdict,
    {
        let permit = self.try_acquire().map_err(Rejected::Open)?;
        let result = call.await;
        permit.record(classify(&result));
        result.map_err(Rejected::Inner)
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

#[inline]
fn permit(shared: SharedRef<'_>, kind: PermitKind) -> Permit<'_> {
    let generation = shared.generation.load(Ordering::Acquire);
    let started =
        (shared.config.slow_call.is_some() && kind != PermitKind::Uncounted).then(Instant::now);
    Permit {
        shared,
        generation,
        started,
        kind,
        done: false,
    }
}

impl Permit<'_> {
    /// Records how the call went.
    #[inline]
    pub fn record(mut self, verdict: Verdict) {
        self.done = true;
        // The closed path's common case: one success, no timing.
        if verdict == Verdict::Success
            && self.kind == PermitKind::Closed
            && self.started.is_none()
            && let Windowed::Count(w) = &self.shared.window
            && self.shared.generation.load(Ordering::Relaxed) == self.generation
        {
            w.record(Outcome::Success);
            return;
        }
        self.finish(Some(verdict));
    }

    #[inline]
    fn finish(&self, verdict: Option<Verdict>) {
        let s = &self.shared;
        let verdict = match verdict {
            Some(v) => v,
            None => match s.config.on_cancel {
                OnCancel::Ignore => Verdict::Ignore,
                OnCancel::Failure => Verdict::Failure,
            },
        };
        if let Verdict::FailureRetryAfter(hint) = verdict {
            let ms = u64::try_from(hint.min(s.config.open_max).as_millis()).unwrap_or(u64::MAX);
            s.hint_ms.fetch_max(ms, Ordering::AcqRel);
        }
        let failed = matches!(verdict, Verdict::Failure | Verdict::FailureRetryAfter(_));
        let slow = match (self.started, s.config.slow_call) {
            (Some(started), Some((threshold, _))) => started.elapsed() > threshold,
            _ => false,
        };
        let outcome = match (failed, slow) {
            (false, false) => Outcome::Success,
            (true, false) => Outcome::Failure,
            (false, true) => Outcome::SlowSuccess,
            (true, true) => Outcome::SlowFailure,
        };
        let ignored = verdict == Verdict::Ignore;
        match self.kind {
            PermitKind::Uncounted => {}
            PermitKind::Closed => {
                if ignored || s.generation.load(Ordering::Acquire) != self.generation {
                    return;
                }
                let now = match s.window {
                    Windowed::Count(ref w) => {
                        w.record(outcome);
                        None
                    }
                    Windowed::Time(ref w) => {
                        let now = Instant::now();
                        w.record(s.second(now), outcome);
                        Some(now)
                    }
                };
                if outcome != Outcome::Success {
                    s.evaluate(now.unwrap_or_else(Instant::now));
                }
            }
            PermitKind::Trial(id) => s.trial_done(id, self.generation, outcome, ignored),
        }
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            self.finish(None);
        }
    }
}

impl Shared {
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
