//! Answers given by a layer without calling the service it wraps.

use std::future::Future;
use std::pin::Pin;

use http::{HeaderValue, Response, StatusCode, header};

/// The boxed response future of the refusing layers.
pub(crate) type ResponseFuture<R, E> = Pin<Box<dyn Future<Output = Result<Response<R>, E>> + Send>>;

/// A ready response with `status`, a plain-text `body` and, when given, a
/// `Retry-After` in seconds.
pub(crate) fn refuse<R, E>(
    status: StatusCode,
    body: &'static str,
    retry_after: Option<u64>,
) -> ResponseFuture<R, E>
where
    R: From<&'static str> + Send + 'static,
    E: Send + 'static,
{
    let mut response = Response::new(R::from(body));
    *response.status_mut() = status;
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    Box::pin(std::future::ready(Ok(response)))
}
