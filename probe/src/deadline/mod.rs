//! Deadline budgets: the time a request has left, set at the edge, carried
//! in a task-local, and written as the *remaining* budget on every outbound
//! call, so a downstream never works on a request its caller gave up on.
//! Remaining time, not wall-clock time, so clock skew does not matter.
//!
//! ```
//! use std::time::Duration;
//! use probity_probe::deadline;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! deadline::scope(Duration::from_secs(2), async {
//!     tokio::time::sleep(Duration::from_millis(500)).await;
//!     assert_eq!(deadline::remaining(), Some(Duration::from_millis(1500)));
//!     let mut headers = http::HeaderMap::new();
//!     let timeout = deadline::propagate(&mut headers, Duration::from_millis(100)).expect("budget left");
//!     assert_eq!(timeout, Some(Duration::from_millis(1400)));
//!     assert_eq!(headers["x-envoy-expected-rq-timeout-ms"], "1400");
//! })
//! .await;
//! assert_eq!(deadline::remaining(), None);
//! # }
//! ```

mod layer;
mod wire;

use std::future::Future;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, header};
use tokio::time::Instant;

pub use layer::{DeadlineLayer, DeadlineService};
pub use wire::{format_grpc_timeout, parse_grpc_timeout, parse_millis};

/// `grpc-timeout`, gRPC's budget header.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";
/// Envoy's budget header, in milliseconds; also what
/// [`propagate`] writes on HTTP calls.
pub const ENVOY_TIMEOUT_MS: &str = "x-envoy-expected-rq-timeout-ms";

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Not enough budget left for the work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("budget exhausted: {remaining:?} left, {needed:?} needed")]
pub struct Exhausted {
    /// What was left.
    pub remaining: Duration,
    /// What the work needed.
    pub needed: Duration,
}

/// Runs `fut` with `budget` from now. Inside an existing scope the earlier
/// deadline wins: a budget can only shrink on its way down. A budget longer
/// than a century (a hostile `grpc-timeout`, `Duration::MAX`) counts as a
/// century.
pub async fn scope<F: Future>(budget: Duration, fut: F) -> F::Output {
    let mut at = saturating_add(Instant::now(), budget);
    if let Some(outer) = deadline() {
        at = at.min(outer);
    }
    DEADLINE.scope(at, fut).await
}

/// `at + d`, with `d` capped at a century, so that no budget or lease,
/// however large, overflows an `Instant`.
pub(crate) fn saturating_add(at: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    at.checked_add(d.min(CENTURY)).unwrap_or(at)
}

/// The current deadline, if a [`scope`] set one.
pub fn deadline() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// Time left in the current scope; `None` outside any scope.
pub fn remaining() -> Option<Duration> {
    deadline().map(|d| d.saturating_duration_since(Instant::now()))
}

/// Fails when less than `needed` is left. Outside a scope there is no
/// deadline and the check passes.
///
/// # Errors
///
/// [`Exhausted`] with what was left.
pub fn check(needed: Duration) -> Result<(), Exhausted> {
    match remaining() {
        Some(remaining) if remaining < needed => Err(Exhausted { remaining, needed }),
        _ => Ok(()),
    }
}

/// Writes the remaining budget minus `headroom` to outbound request
/// headers: `grpc-timeout` when the request is gRPC (`content-type:
/// application/grpc…`), `x-envoy-expected-rq-timeout-ms` otherwise. Returns
/// the timeout to set on the call itself; `None` outside a scope.
///
/// # Errors
///
/// [`Exhausted`] when the budget does not cover the headroom: do not make
/// the call.
pub fn propagate(
    headers: &mut HeaderMap,
    headroom: Duration,
) -> Result<Option<Duration>, Exhausted> {
    let Some(remaining) = remaining() else {
        return Ok(None);
    };
    let budget = remaining
        .checked_sub(headroom)
        .filter(|b| !b.is_zero())
        .ok_or(Exhausted {
            remaining,
            needed: headroom,
        })?;
    let grpc = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    let (name, value) = if grpc {
        (GRPC_TIMEOUT, format_grpc_timeout(budget))
    } else {
        (ENVOY_TIMEOUT_MS, budget.as_millis().to_string())
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name, value);
    }
    Ok(Some(budget))
}

#[cfg_attr(docsrs, doc(cfg(feature = "reqwest")))]
#[cfg(feature = "reqwest")]
pub mod reqwest_ext {
    //! Deadline propagation for reqwest.

    use std::time::Duration;

    /// Why a budgeted request did not succeed.
    #[derive(Debug, thiserror::Error)]
    pub enum SendError {
        /// The budget ran out before the call; it was not made.
        #[error(transparent)]
        Exhausted(#[from] super::Exhausted),
        /// The request failed (including its budget timeout).
        #[error(transparent)]
        Request(#[from] reqwest::Error),
    }

    /// Sends `request` with the remaining budget minus `headroom`: the
    /// budget header for the downstream and the same value as the call's
    /// timeout. Outside a scope it is sent unchanged.
    ///
    /// # Errors
    ///
    /// [`SendError::Exhausted`] without sending when the budget is spent;
    /// otherwise reqwest's error.
    pub async fn send(
        request: reqwest::RequestBuilder,
        headroom: Duration,
    ) -> Result<reqwest::Response, SendError> {
        let (client, built) = request.build_split();
        let mut built = built?;
        if let Some(timeout) = super::propagate(built.headers_mut(), headroom)? {
            let t = built
                .timeout()
                .copied()
                .map_or(timeout, |own| own.min(timeout));
            *built.timeout_mut() = Some(t);
        }
        Ok(client.execute(built).await?)
    }
}
