//! Retries that do not multiply an outage: exponential backoff with full
//! jitter, an attempt cap, a shared [`RetryBudget`], never sleeping past
//! the deadline, only for results the classifier calls retryable, and the
//! attempt count propagated (`x-probity-attempt`) so that a downstream can
//! refuse to retry requests that are already retries (3 layers x 3
//! attempts would be 27x load).
//!
//! [`RetryPolicy`] is a [`tower::retry::Policy`] for `http::Request`s with
//! a cloneable body; use it with `tower::retry::RetryLayer`.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use probity_probe::retry::{Backoff, RetryBudget, RetryPolicy};
//!
//! let budget = Arc::new(RetryBudget::new(Duration::from_secs(10), 1, 0.2));
//! let policy = RetryPolicy::new(3, Backoff::new(Duration::from_millis(50), Duration::from_secs(1)))
//!     .budget(budget)
//!     .retry_if(|r: &Result<http::Response<String>, std::io::Error>| match r {
//!         Ok(resp) => resp.status().is_server_error(),
//!         Err(_) => true,
//!     });
//! let layer = tower::retry::RetryLayer::new(policy);
//! # drop(layer);
//! ```

mod backoff;
mod budget;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};

pub use backoff::{Backoff, Jitter};
pub use budget::RetryBudget;

/// Distance between the seeds of successive clones (the golden-ratio
/// increment), so that their jitter sequences are unrelated.
const SEED_STEP: u64 = 0x9e37_79b9_7f4a_7c15;

/// The header carrying the attempt number (1 for the original request).
pub const ATTEMPT_HEADER: &str = "x-probity-attempt";

/// The response header saying "already retried downstream: do not retry
/// this failure" (value `1`), set by [`AttemptLayer`].
pub const NO_RETRY_HEADER: &str = "x-probity-no-retry";

/// What [`AttemptLayer`] knows about the inbound request being served.
#[derive(Debug)]
struct Inbound {
    attempt: u32,
    /// An outbound retry policy gave up on a retryable failure.
    gave_up: AtomicBool,
}

tokio::task_local! {
    static INBOUND: Arc<Inbound>;
}

/// The attempt number of the inbound request being served, as set by
/// [`AttemptLayer`]; 1 outside one.
pub fn inbound_attempt() -> u32 {
    INBOUND.try_with(|i| i.attempt).unwrap_or(1)
}

/// Writes the inbound attempt number on an outbound request's headers
/// when the request being served is itself a retry, so that the next
/// layer's [`RetryPolicy::refuse_nested`] sees it too: one retry at the
/// edge then never fans out into retries further down. Returns whether it
/// wrote one.
pub fn propagate_attempt(headers: &mut http::HeaderMap) -> bool {
    let attempt = inbound_attempt();
    if attempt <= 1 {
        return false;
    }
    headers.insert(ATTEMPT_HEADER, HeaderValue::from(attempt));
    true
}

fn note_gave_up() {
    let _ = INBOUND.try_with(|i| i.gave_up.store(true, Ordering::Release));
}

/// Whether a response says its sender already retried and gave up
/// (`x-probity-no-retry: 1`); for [`RetryPolicy::exhausted_if`].
pub fn downstream_gave_up<B, E>(result: &Result<Response<B>, E>) -> bool {
    result.as_ref().is_ok_and(|r| {
        r.headers()
            .get(NO_RETRY_HEADER)
            .is_some_and(|v| v.as_bytes() == b"1")
    })
}

type Retryable<Res, E> = Arc<dyn Fn(&Result<Res, E>) -> bool + Send + Sync>;

/// A retry policy; one clone per request keeps its attempt count.
pub struct RetryPolicy<Res, E> {
    max_attempts: u32,
    backoff: Backoff,
    budget: Option<Arc<RetryBudget>>,
    retryable: Retryable<Res, E>,
    exhausted: Option<Retryable<Res, E>>,
    refuse_nested: bool,
    attempt: u32,
    previous: Duration,
    deposited: bool,
    rng: fastrand::Rng,
    /// Seeds for per-request clones: each clone draws the next one, so
    /// requests get different jitter and a seeded policy stays repeatable.
    seeds: Arc<AtomicU64>,
}

impl<Res, E> Clone for RetryPolicy<Res, E> {
    fn clone(&self) -> Self {
        Self {
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            budget: self.budget.clone(),
            retryable: Arc::clone(&self.retryable),
            exhausted: self.exhausted.clone(),
            refuse_nested: self.refuse_nested,
            attempt: 1,
            previous: Duration::ZERO,
            deposited: false,
            rng: fastrand::Rng::with_seed(self.seeds.fetch_add(SEED_STEP, Ordering::Relaxed)),
            seeds: Arc::clone(&self.seeds),
        }
    }
}

impl<Res, E> std::fmt::Debug for RetryPolicy<Res, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("budget", &self.budget)
            .field("refuse_nested", &self.refuse_nested)
            .finish_non_exhaustive()
    }
}

impl<Res, E> RetryPolicy<Res, E> {
    /// At most `max_attempts` attempts in all (1 = no retries); every
    /// `Err` is retryable until [`RetryPolicy::retry_if`] says otherwise.
    pub fn new(max_attempts: u32, backoff: Backoff) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            backoff,
            budget: None,
            retryable: Arc::new(|r: &Result<Res, E>| r.is_err()),
            exhausted: None,
            refuse_nested: false,
            attempt: 1,
            previous: Duration::ZERO,
            deposited: false,
            rng: fastrand::Rng::new(),
            seeds: Arc::new(AtomicU64::new(fastrand::u64(..))),
        }
    }

    /// Which results to retry.
    pub fn retry_if(mut self, f: impl Fn(&Result<Res, E>) -> bool + Send + Sync + 'static) -> Self {
        self.retryable = Arc::new(f);
        self
    }

    /// Results saying a downstream already retried and gave up (for HTTP:
    /// [`downstream_gave_up`]): never retried here, and the request being
    /// served answers with the same mark (see [`AttemptLayer`]).
    pub fn exhausted_if(
        mut self,
        f: impl Fn(&Result<Res, E>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.exhausted = Some(Arc::new(f));
        self
    }

    /// Shares a retry budget (one per dependency).
    pub fn budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Do not retry while serving an inbound request that is itself a
    /// retry (see [`AttemptLayer`]).
    pub fn refuse_nested(mut self, refuse: bool) -> Self {
        self.refuse_nested = refuse;
        self
    }

    /// Seeds the jitter, for repeatable tests; the per-request clones tower
    /// makes draw their seeds from it in order.
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = fastrand::Rng::with_seed(seed);
        self.seeds = Arc::new(AtomicU64::new(seed));
        self
    }

    /// Decides whether to retry after `result`, returning the delay. A
    /// retryable failure that is not retried (attempts, budget, deadline,
    /// nested, or a downstream that already gave up) is noted for
    /// [`AttemptLayer`].
    pub fn next_delay(&mut self, result: &Result<Res, E>) -> Option<Duration> {
        if !self.deposited {
            self.deposited = true;
            if let Some(b) = &self.budget {
                b.deposit();
            }
        }
        if self.exhausted.as_ref().is_some_and(|f| f(result)) {
            note_gave_up();
            return None;
        }
        if !(self.retryable)(result) {
            return None;
        }
        let delay = self.delay_if_allowed();
        if delay.is_none() {
            note_gave_up();
        }
        delay
    }

    fn delay_if_allowed(&mut self) -> Option<Duration> {
        if self.attempt >= self.max_attempts {
            return None;
        }
        if self.refuse_nested && inbound_attempt() > 1 {
            return None;
        }
        let left = crate::deadline::remaining();
        let delay = self
            .backoff
            .delay(self.attempt, self.previous, &mut self.rng, left);
        if left.is_some_and(|left| delay >= left) {
            return None; // the retry could not finish in time
        }
        if let Some(b) = &self.budget
            && !b.withdraw()
        {
            return None;
        }
        self.attempt += 1;
        self.previous = delay;
        Some(delay)
    }
}

impl<B, Res, E> tower::retry::Policy<Request<B>, Res, E> for RetryPolicy<Res, E>
where
    B: Clone,
{
    type Future = tokio::time::Sleep;

    fn retry(&mut self, req: &mut Request<B>, result: &mut Result<Res, E>) -> Option<Self::Future> {
        let delay = self.next_delay(result)?;
        let attempt = self.attempt.max(inbound_attempt());
        req.headers_mut()
            .insert(ATTEMPT_HEADER, HeaderValue::from(attempt));
        Some(tokio::time::sleep(delay))
    }

    fn clone_request(&mut self, req: &Request<B>) -> Option<Request<B>> {
        let mut clone = Request::new(req.body().clone());
        *clone.method_mut() = req.method().clone();
        *clone.uri_mut() = req.uri().clone();
        *clone.version_mut() = req.version();
        *clone.headers_mut() = req.headers().clone();
        Some(clone)
    }
}

/// Inbound: reads `x-probity-attempt` and makes it available to
/// [`inbound_attempt`] (and so to [`RetryPolicy::refuse_nested`]) while
/// the request is served; when an outbound [`RetryPolicy`] gave up during
/// the request and the answer is a failure (5xx or 429), marks it
/// `x-probity-no-retry: 1` so the caller does not retry it. Outbound calls
/// must run in the request's task (not a spawned one) to be seen.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttemptLayer;

impl<S> Layer<S> for AttemptLayer {
    type Service = AttemptService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttemptService { inner }
    }
}

/// The service [`AttemptLayer`] produces.
#[derive(Debug, Clone)]
pub struct AttemptService<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for AttemptService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let attempt = req
            .headers()
            .get(ATTEMPT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(1)
            .max(1);
        let inbound = Arc::new(Inbound {
            attempt,
            gave_up: AtomicBool::new(false),
        });
        let call = INBOUND.scope(Arc::clone(&inbound), self.inner.call(req));
        Box::pin(async move {
            let mut response = call.await?;
            let status = response.status();
            let failed = status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS;
            if failed && inbound.gave_up.load(Ordering::Acquire) {
                response
                    .headers_mut()
                    .insert(NO_RETRY_HEADER, HeaderValue::from_static("1"));
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delays(policy: &RetryPolicy<(), ()>) -> Vec<Duration> {
        let mut p = policy.clone();
        std::iter::from_fn(|| p.next_delay(&Err(()))).collect()
    }

    #[test]
    fn clones_of_a_seeded_policy_are_repeatable_and_differ_from_each_other() {
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let a = RetryPolicy::new(6, backoff).seed(9);
        let b = RetryPolicy::new(6, backoff).seed(9);
        let (a1, a2) = (delays(&a), delays(&a));
        assert_eq!(a1.len(), 5);
        assert_ne!(a1, a2, "two requests do not retry in lockstep");
        assert_eq!(
            (a1, a2),
            (delays(&b), delays(&b)),
            "the same seed gives the same delays"
        );
    }
}
