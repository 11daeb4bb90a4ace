//! The inbound side: read the caller's budget, clamp it, and run the
//! request inside a deadline scope.

use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderName, Request, Response, StatusCode};
use tower::{Layer, Service};

use crate::refuse::{ResponseFuture, refuse};

use super::{ENVOY_TIMEOUT_MS, GRPC_TIMEOUT, parse_grpc_timeout, parse_millis, scope};

/// Reads the inbound budget from `grpc-timeout`,
/// `x-envoy-expected-rq-timeout-ms` or a header of your own (milliseconds),
/// the smallest when several are present; clamps it to a server maximum
/// (also the budget of requests that carry none); answers `504` with
/// `budget exhausted` at once when less than the floor is left; and runs
/// the request in a [`scope`] so [`remaining`](super::remaining) and
/// [`propagate`](super::propagate) work in handlers.
///
/// ```
/// use std::time::Duration;
/// use probity_probe::deadline::{self, DeadlineLayer};
///
/// let app: axum::Router = axum::Router::new()
///     .route("/quote", axum::routing::get(|| async {
///         format!("{:?} left", deadline::remaining())
///     }))
///     .layer(DeadlineLayer::new(Duration::from_secs(10)).floor(Duration::from_millis(20)));
/// # drop(app);
/// ```
#[derive(Debug, Clone)]
pub struct DeadlineLayer {
    max: Duration,
    floor: Duration,
    header: Option<HeaderName>,
}

impl DeadlineLayer {
    /// Budgets are clamped to `max`; requests without one get `max`.
    pub fn new(max: Duration) -> Self {
        Self {
            max,
            floor: Duration::ZERO,
            header: None,
        }
    }

    /// Requests with less than `floor` left are refused at once.
    pub fn floor(mut self, floor: Duration) -> Self {
        self.floor = floor;
        self
    }

    /// Also read a budget in milliseconds from `header`.
    pub fn header(mut self, header: HeaderName) -> Self {
        self.header = Some(header);
        self
    }

    /// The budget of a request with these headers.
    pub fn budget(&self, headers: &http::HeaderMap) -> Duration {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        [
            text(GRPC_TIMEOUT).and_then(parse_grpc_timeout),
            text(ENVOY_TIMEOUT_MS).and_then(parse_millis),
            self.header
                .as_ref()
                .and_then(|h| text(h.as_str()))
                .and_then(parse_millis),
        ]
        .into_iter()
        .flatten()
        .min()
        .map_or(self.max, |budget| budget.min(self.max))
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            config: self.clone(),
        }
    }
}

/// The service [`DeadlineLayer`] produces.
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    config: DeadlineLayer,
}

impl<S, B, R> Service<Request<B>> for DeadlineService<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: From<&'static str> + Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = ResponseFuture<R, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let budget = self.config.budget(req.headers());
        if budget < self.config.floor || budget.is_zero() {
            tracing::debug!(?budget, floor = ?self.config.floor, "refusing request: budget exhausted");
            return refuse(StatusCode::GATEWAY_TIMEOUT, "budget exhausted\n", None);
        }
        let fut = self.inner.call(req);
        Box::pin(scope(budget, fut))
    }
}
