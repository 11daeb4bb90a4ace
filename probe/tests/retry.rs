//! Retries over real HTTP: the budget caps a retry storm, and attempts are
//! numbered on the wire.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use probity_probe::retry::{
    AttemptLayer, Backoff, NO_RETRY_HEADER, RetryBudget, RetryPolicy, downstream_gave_up,
    inbound_attempt, propagate_attempt,
};
use tower::{ServiceBuilder, ServiceExt as _};

/// A downstream that always fails, counting calls and recording the
/// highest attempt number it saw.
async fn failing_downstream() -> (std::net::SocketAddr, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let max_attempt = Arc::new(AtomicUsize::new(0));
    let (c, m) = (Arc::clone(&calls), Arc::clone(&max_attempt));
    let app = Router::new()
        .route(
            "/pay",
            get(move || {
                let (c, m) = (Arc::clone(&c), Arc::clone(&m));
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    m.fetch_max(inbound_attempt() as usize, Ordering::SeqCst);
                    (http::StatusCode::INTERNAL_SERVER_ERROR, "down")
                }
            }),
        )
        .layer(AttemptLayer);
    (support::serve(app).await, calls, max_attempt)
}

type Reply = Result<u16, std::io::Error>;

/// Sends `req` (its path and headers) with the test's raw client.
async fn send(
    addr: std::net::SocketAddr,
    req: &http::Request<()>,
) -> std::io::Result<support::Reply> {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let borrowed: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    support::request(addr, "GET", req.uri().path(), &borrowed).await
}

fn client(
    addr: std::net::SocketAddr,
    policy: RetryPolicy<u16, std::io::Error>,
) -> impl tower::Service<http::Request<()>, Response = u16, Error = std::io::Error, Future: Send> + Clone
{
    ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(policy))
        .service_fn(move |req: http::Request<()>| async move {
            send(addr, &req).await.map(|r| r.status)
        })
}

fn retry_5xx(r: &Reply) -> bool {
    r.as_ref().map_or(true, |s| *s >= 500)
}

#[tokio::test]
async fn the_budget_caps_a_retry_storm() {
    let (addr, calls, max_attempt) = failing_downstream().await;
    let budget = Arc::new(RetryBudget::new(Duration::from_secs(10), 0, 0.2));
    let policy = RetryPolicy::new(
        3,
        Backoff::new(Duration::from_millis(1), Duration::from_millis(5)),
    )
    .budget(budget)
    .retry_if(retry_5xx)
    .seed(7);
    let svc = client(addr, policy);
    let original = 100;
    for _ in 0..original {
        let status = svc
            .clone()
            .oneshot(http::Request::get("/pay").body(()).expect("request"))
            .await;
        assert_eq!(status.expect("reply"), 500);
    }
    let total = calls.load(Ordering::SeqCst);
    eprintln!("{original} requests, 3 attempts each allowed, 20% budget: {total} downstream calls");
    assert!(
        total <= original * 12 / 10,
        "{total} > (1 + 0.2) x {original}"
    );
    assert!(total > original, "the budget allowed some retries");
    assert!(
        max_attempt.load(Ordering::SeqCst) >= 2,
        "retries carry their attempt number"
    );
}

#[tokio::test]
async fn without_a_budget_every_request_is_tried_max_attempts_times() {
    let (addr, calls, max_attempt) = failing_downstream().await;
    let policy = RetryPolicy::new(
        3,
        Backoff::new(Duration::from_millis(1), Duration::from_millis(5)),
    )
    .retry_if(retry_5xx);
    let svc = client(addr, policy);
    for _ in 0..10 {
        let _ = svc
            .clone()
            .oneshot(http::Request::get("/pay").body(()).expect("request"))
            .await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 30);
    assert_eq!(max_attempt.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_retried_request_does_not_retry_downstream_when_refusing_nested() {
    let (addr, calls, _) = failing_downstream().await;
    let policy = RetryPolicy::new(
        3,
        Backoff::new(Duration::from_millis(1), Duration::from_millis(5)),
    )
    .retry_if(retry_5xx)
    .refuse_nested(true);
    // Serve as if handling an inbound retry: attempt 2.
    let svc = client(addr, policy);
    let inbound = http::Request::get("/")
        .header("x-probity-attempt", "2")
        .body(())
        .expect("request");
    let handler = tower::service_fn(move |_req: http::Request<()>| {
        let svc = svc.clone();
        async move {
            let status = svc
                .oneshot(http::Request::get("/pay").body(()).expect("request"))
                .await?;
            Ok::<_, std::io::Error>(
                http::Response::builder()
                    .status(status)
                    .body(String::new())
                    .expect("response"),
            )
        }
    });
    let reply = AttemptLayer
        .layer_ready(handler)
        .oneshot(inbound)
        .await
        .expect("reply");
    assert_eq!(reply.status(), 500);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no nested retries");
    assert_eq!(
        reply.headers().get(NO_RETRY_HEADER).map(|v| v.as_bytes()),
        Some(&b"1"[..]),
        "the refusal is passed up"
    );
}

/// An HTTP client over the test's raw client: the retry policy sees the
/// whole response, headers included.
fn http_client(
    addr: std::net::SocketAddr,
    policy: RetryPolicy<http::Response<String>, std::io::Error>,
) -> impl tower::Service<
    http::Request<()>,
    Response = http::Response<String>,
    Error = std::io::Error,
    Future: Send,
> + Clone {
    ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(policy))
        .service_fn(move |req: http::Request<()>| async move {
            let reply = send(addr, &req).await?;
            let mut response = http::Response::builder().status(reply.status);
            for (k, v) in &reply.headers {
                response = response.header(k, v);
            }
            response.body(reply.body).map_err(std::io::Error::other)
        })
}

fn retry_5xx_response(r: &Result<http::Response<String>, std::io::Error>) -> bool {
    r.as_ref().map_or(true, |r| r.status().is_server_error())
}

/// edge -> middle -> failing leaf. The middle retries 3 times and gives
/// up; whether the edge retries too depends on `exhausted_if`.
async fn leaf_calls_through_two_layers(edge_honours_mark: bool) -> (usize, usize) {
    let (leaf, leaf_calls, _) = failing_downstream().await;
    let middle_calls = Arc::new(AtomicUsize::new(0));
    let backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(5));
    let to_leaf = http_client(
        leaf,
        RetryPolicy::new(3, backoff).retry_if(retry_5xx_response),
    );
    let counted = Arc::clone(&middle_calls);
    let middle = Router::new()
        .route(
            "/checkout",
            get(move || {
                let (svc, counted) = (to_leaf.clone(), Arc::clone(&counted));
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let reply = svc
                        .oneshot(http::Request::get("/pay").body(()).expect("request"))
                        .await;
                    match reply {
                        Ok(r) if r.status().is_success() => http::StatusCode::OK,
                        _ => http::StatusCode::BAD_GATEWAY,
                    }
                }
            }),
        )
        .layer(AttemptLayer);
    let middle = support::serve(middle).await;
    let mut edge_policy = RetryPolicy::new(3, backoff).retry_if(retry_5xx_response);
    if edge_honours_mark {
        edge_policy = edge_policy.exhausted_if(downstream_gave_up);
    }
    let reply = http_client(middle, edge_policy)
        .oneshot(http::Request::get("/checkout").body(()).expect("request"))
        .await
        .expect("reply");
    assert_eq!(reply.status(), 502);
    assert_eq!(
        reply.headers().get(NO_RETRY_HEADER).map(|v| v.as_bytes()),
        Some(&b"1"[..]),
        "the middle layer says it gave up"
    );
    (
        middle_calls.load(Ordering::SeqCst),
        leaf_calls.load(Ordering::SeqCst),
    )
}

#[tokio::test]
async fn a_failure_already_retried_downstream_is_not_retried_again() {
    assert_eq!(
        leaf_calls_through_two_layers(false).await,
        (3, 9),
        "without the mark: 3 x 3"
    );
    assert_eq!(
        leaf_calls_through_two_layers(true).await,
        (1, 3),
        "with it only the layer next to the failure retries"
    );
}

#[tokio::test]
async fn a_retry_passes_its_attempt_number_to_every_outbound_call() {
    let outbound = |attempt: &'static str| {
        let handler = tower::service_fn(|_req: http::Request<()>| async {
            let mut headers = http::HeaderMap::new();
            let wrote = propagate_attempt(&mut headers);
            let seen = headers
                .get("x-probity-attempt")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned();
            Ok::<_, std::io::Error>(
                http::Response::builder()
                    .status(if wrote { 200 } else { 204 })
                    .body(seen)
                    .expect("response"),
            )
        });
        let inbound = http::Request::get("/")
            .header("x-probity-attempt", attempt)
            .body(())
            .expect("request");
        AttemptLayer.layer_ready(handler).oneshot(inbound)
    };
    let retry = outbound("3").await.expect("reply");
    assert_eq!((retry.status().as_u16(), retry.body().as_str()), (200, "3"));
    let original = outbound("1").await.expect("reply");
    assert_eq!(
        (original.status().as_u16(), original.body().as_str()),
        (204, "none"),
        "an original request adds nothing"
    );
    assert!(
        !propagate_attempt(&mut http::HeaderMap::new()),
        "outside a request"
    );
}

trait LayerReady {
    fn layer_ready<S>(self, inner: S) -> probity_probe::retry::AttemptService<S>;
}

impl LayerReady for AttemptLayer {
    fn layer_ready<S>(self, inner: S) -> probity_probe::retry::AttemptService<S> {
        tower::Layer::layer(&self, inner)
    }
}
