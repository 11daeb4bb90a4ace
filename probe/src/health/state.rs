//! The debounce state machine of one check: plain, synchronous code.

use std::time::Duration;

use tokio::time::Instant;

/// The debounced status of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// No result yet.
    Pending,
    Passing,
    Failing,
}

/// The last run of a check.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    pub(crate) at: Instant,
    pub(crate) duration: Duration,
    /// `None` when the run succeeded.
    pub(crate) failure: Option<String>,
}

/// A change of debounced status, returned so the caller can log it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Transition {
    pub(crate) from: Status,
    pub(crate) to: Status,
}

#[derive(Debug, Clone)]
pub(crate) struct CheckState {
    failures_to_fail: u32,
    successes_to_recover: u32,
    pub(crate) status: Status,
    pub(crate) consecutive_failures: u32,
    pub(crate) consecutive_successes: u32,
    pub(crate) last: Option<Observed>,
    pub(crate) ever_succeeded: bool,
    pub(crate) transitions: u64,
}

impl CheckState {
    pub(crate) fn new(failures_to_fail: u32, successes_to_recover: u32) -> Self {
        Self {
            failures_to_fail: failures_to_fail.max(1),
            successes_to_recover: successes_to_recover.max(1),
            status: Status::Pending,
            consecutive_failures: 0,
            consecutive_successes: 0,
            last: None,
            ever_succeeded: false,
            transitions: 0,
        }
    }

    /// Records one run. From `Pending` the first result decides at once (the
    /// check was never passing, so there is nothing to debounce); after that
    /// it takes `failures_to_fail` failures in a row to fail and
    /// `successes_to_recover` successes in a row to pass again.
    pub(crate) fn record(&mut self, observed: Observed) -> Option<Transition> {
        let ok = observed.failure.is_none();
        self.last = Some(observed);
        if ok {
            self.ever_succeeded = true;
            self.consecutive_successes = self.consecutive_successes.saturating_add(1);
            self.consecutive_failures = 0;
        } else {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            self.consecutive_successes = 0;
        }
        let next = match (self.status, ok) {
            (Status::Pending, true) => Status::Passing,
            (Status::Pending, false) => Status::Failing,
            (Status::Passing, false) if self.consecutive_failures >= self.failures_to_fail => {
                Status::Failing
            }
            (Status::Failing, true) if self.consecutive_successes >= self.successes_to_recover => {
                Status::Passing
            }
            (current, _) => current,
        };
        if next == self.status {
            return None;
        }
        let transition = Transition {
            from: self.status,
            to: next,
        };
        self.status = next;
        self.transitions += 1;
        Some(transition)
    }

    /// Age of the last result at `now`.
    pub(crate) fn age(&self, now: Instant) -> Option<Duration> {
        self.last
            .as_ref()
            .map(|o| now.saturating_duration_since(o.at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(state: &mut CheckState, ok: bool) -> Option<Transition> {
        state.record(Observed {
            at: Instant::now(),
            duration: Duration::ZERO,
            failure: (!ok).then(|| "down".to_owned()),
        })
    }

    #[test]
    fn first_result_decides_then_debounce_applies() {
        let mut s = CheckState::new(3, 2);
        assert_eq!(s.status, Status::Pending);
        assert_eq!(
            run(&mut s, true),
            Some(Transition {
                from: Status::Pending,
                to: Status::Passing
            })
        );
        assert_eq!(run(&mut s, false), None);
        assert_eq!(run(&mut s, false), None);
        assert_eq!(s.status, Status::Passing);
        assert!(run(&mut s, false).is_some());
        assert_eq!(s.status, Status::Failing);
        assert_eq!(run(&mut s, true), None);
        assert_eq!(s.status, Status::Failing);
        assert!(run(&mut s, true).is_some());
        assert_eq!(s.status, Status::Passing);
        assert_eq!(s.transitions, 3);
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let mut s = CheckState::new(2, 1);
        run(&mut s, true);
        run(&mut s, false);
        run(&mut s, true);
        run(&mut s, false);
        assert_eq!(s.status, Status::Passing);
        assert_eq!(s.consecutive_failures, 1);
    }

    #[test]
    fn pending_failure_fails_at_once_and_zero_thresholds_mean_one() {
        let mut s = CheckState::new(0, 0);
        run(&mut s, false);
        assert_eq!(s.status, Status::Failing);
        assert!(!s.ever_succeeded);
        run(&mut s, true);
        assert_eq!(s.status, Status::Passing);
        assert!(s.ever_succeeded);
    }
}
