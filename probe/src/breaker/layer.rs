//! The breaker as a tower layer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{BoxError, Layer, Service};

use super::{CircuitBreaker, OwnedPermit, Verdict};

/// Decides how a service's result counts: `Fn(&Result<Response, Error>) ->
/// Verdict`. The default counts every `Err` as a failure.
pub trait Classify<T, E>: Send + Sync + 'static {
    /// The verdict for one result.
    fn classify(&self, result: &Result<T, E>) -> Verdict;
}

impl<T, E, F> Classify<T, E> for F
where
    F: Fn(&Result<T, E>) -> Verdict + Send + Sync + 'static,
{
    fn classify(&self, result: &Result<T, E>) -> Verdict {
        self(result)
    }
}

/// Every `Err` is a failure, every `Ok` a success.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrIsFailure;

impl<T, E> Classify<T, E> for ErrIsFailure {
    fn classify(&self, result: &Result<T, E>) -> Verdict {
        if result.is_ok() {
            Verdict::Success
        } else {
            Verdict::Failure
        }
    }
}

/// Wraps a service in a [`CircuitBreaker`]. Rejected calls fail with
/// [`Open`](super::Open) (boxed) without reaching the service.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use probity_probe::breaker::{CircuitBreaker, CircuitBreakerLayer, Open};
/// use tower::{ServiceBuilder, ServiceExt as _};
///
/// let breaker = CircuitBreaker::builder().minimum_calls(1).build().expect("valid");
/// let svc = ServiceBuilder::new()
///     .layer(CircuitBreakerLayer::new(breaker.clone()))
///     .service_fn(|_: ()| async { Err::<(), _>("boom") });
/// assert!(svc.clone().oneshot(()).await.is_err());
/// let err = svc.oneshot(()).await.expect_err("open");
/// assert!(err.is::<Open>());
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = ErrIsFailure> {
    breaker: CircuitBreaker,
    classify: Arc<C>,
}

impl CircuitBreakerLayer {
    /// Counts every `Err` as a failure.
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self {
            breaker,
            classify: Arc::new(ErrIsFailure),
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// Counts results as `classify` says.
    pub fn with_classifier<C2>(self, classify: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer {
            breaker: self.breaker,
            classify: Arc::new(classify),
        }
    }
}

impl<S, C> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            breaker: self.breaker.clone(),
            classify: Arc::clone(&self.classify),
        }
    }
}

/// The service [`CircuitBreakerLayer`] produces.
#[derive(Debug, Clone)]
pub struct CircuitBreakerService<S, C = ErrIsFailure> {
    inner: S,
    breaker: CircuitBreaker,
    classify: Arc<C>,
}

impl<S, C, Req> Service<Req> for CircuitBreakerService<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.breaker.admit_owned() {
            Ok(permit) => ResponseFuture {
                future: Some(self.inner.call(req)),
                permit: Some(permit),
                classify: Arc::clone(&self.classify),
                rejected: None,
            },
            Err(open) => ResponseFuture {
                future: None,
                permit: None,
                classify: Arc::clone(&self.classify),
                rejected: Some(open),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of [`CircuitBreakerService`]. Dropping it before
    /// it completes releases its permit.
    pub struct ResponseFuture<F, C> {
        #[pin]
        future: Option<F>,
        permit: Option<OwnedPermit>,
        classify: Arc<C>,
        rejected: Option<super::Open>,
    }
}

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("rejected", &self.rejected)
            .finish_non_exhaustive()
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(future) = this.future.as_pin_mut() else {
            return Poll::Ready(Err(match this.rejected.take() {
                Some(open) => open.into(),
                None => "circuit breaker future polled after completion".into(),
            }));
        };
        let result = std::task::ready!(future.poll(cx));
        if let Some(permit) = this.permit.take() {
            permit.record(this.classify.classify(&result));
        }
        Poll::Ready(result.map_err(Into::into))
    }
}
