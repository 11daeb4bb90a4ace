//! A permit to make one call, and how its outcome is recorded.

use super::*;

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
pub(super) enum SharedRef<'a> {
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
pub(super) enum PermitKind {
    Closed,
    Trial(u64),
    Uncounted,
}

#[inline]
pub(super) fn permit(shared: SharedRef<'_>, kind: PermitKind) -> Permit<'_> {
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

impl<'a> Permit<'a> {
    /// A closed-path permit of a breaker with a count window and no
    /// slow-call timing.
    #[inline(always)]
    pub(super) fn closed_untimed(shared: SharedRef<'a>) -> Self {
        Permit {
            generation: shared.generation.load(Ordering::Acquire),
            shared,
            started: None,
            kind: PermitKind::Closed,
            done: false,
        }
    }
}

impl Permit<'_> {
    /// Records how the call went.
    #[inline(always)]
    pub fn record(mut self, verdict: Verdict) {
        self.done = true;
        // The closed path's common case: one success, no timing. Inlined
        // into the caller, so the permit stays in registers.
        if verdict == Verdict::Success
            && self.kind == PermitKind::Closed
            && self.started.is_none()
            && let Windowed::Count(w) = &self.shared.window
            && self.shared.generation.load(Ordering::Relaxed) == self.generation
        {
            w.record(Outcome::Success);
            return;
        }
        self.record_slow(verdict);
    }

    #[inline(never)]
    fn record_slow(self, verdict: Verdict) {
        self.finish(Some(verdict));
    }

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
            self.cancelled();
        }
    }
}

impl Permit<'_> {
    #[cold]
    #[inline(never)]
    fn cancelled(&mut self) {
        self.done = true;
        self.finish(None);
    }
}
