//! Retries over real HTTP: the budget caps a retry storm, and attempts are
//! numbered on the wire.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use probity_probe::retry::{AttemptLayer, Backoff, RetryBudget, RetryPolicy, inbound_attempt};
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

fn client(
    addr: std::net::SocketAddr,
    policy: RetryPolicy<u16, std::io::Error>,
) -> impl tower::Service<http::Request<()>, Response = u16, Error = std::io::Error, Future: Send> + Clone
{
    ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(policy))
        .service_fn(move |req: http::Request<()>| async move {
            let headers: Vec<(String, String)> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
                .collect();
            let borrowed: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            support::request(addr, "GET", req.uri().path(), &borrowed)
                .await
                .map(|r| r.status)
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
            svc.oneshot(http::Request::get("/pay").body(()).expect("request"))
                .await
        }
    });
    let status = AttemptLayer
        .layer_ready(handler)
        .oneshot(inbound)
        .await
        .expect("reply");
    assert_eq!(status, 500);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no nested retries");
}

trait LayerReady {
    fn layer_ready<S>(self, inner: S) -> probity_probe::retry::AttemptService<S>;
}

impl LayerReady for AttemptLayer {
    fn layer_ready<S>(self, inner: S) -> probity_probe::retry::AttemptService<S> {
        tower::Layer::layer(&self, inner)
    }
}
