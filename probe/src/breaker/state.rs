//! The breaker's states and what the outside sees of them.

use std::time::Duration;

use super::Snapshot;

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

    pub(super) fn code(self) -> u8 {
        self as u8
    }

    pub(super) fn from_code(code: u8) -> State {
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
