//! The tower glue of [`LoadShedLayer`]: refuse with `503` and
//! `Retry-After` when it says so, call the inner service otherwise.

use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use tower::{Layer, Service};

use super::LoadShedLayer;
use crate::refuse::{ResponseFuture, refuse};

// === impl LoadShedLayer ===

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            config: self.clone(),
        }
    }
}

/// The service [`LoadShedLayer`] produces.
#[derive(Debug, Clone)]
pub struct LoadShed<S> {
    inner: S,
    config: LoadShedLayer,
}

// === impl LoadShed ===

impl<S, B, R> Service<Request<B>> for LoadShed<S>
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
        let Some(reason) = self.config.should_shed() else {
            return Box::pin(self.inner.call(req));
        };
        let body = reason.body();
        tracing::debug!(reason = body.trim_end(), "shedding request");
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            body,
            Some(self.config.retry_after_secs()),
        )
    }
}
