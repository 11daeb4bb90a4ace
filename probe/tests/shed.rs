//! Load shedding over real HTTP: 503 + Retry-After, and no work done.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use probity_probe::breaker::CircuitBreaker;
use probity_probe::bulkhead::Bulkhead;
use probity_probe::deadline::DeadlineLayer;
use probity_probe::health::{Health, Phase};
use probity_probe::shed::LoadShedLayer;
use support::request;

fn app(shed: LoadShedLayer, work: &Arc<AtomicUsize>) -> Router {
    let work = Arc::clone(work);
    Router::new()
        .route(
            "/work",
            get(move || {
                work.fetch_add(1, Ordering::SeqCst);
                async { "done" }
            }),
        )
        .layer(shed)
        .layer(DeadlineLayer::new(Duration::from_secs(30)))
}

#[tokio::test]
async fn sheds_when_saturated_draining_or_out_of_budget_without_doing_work() {
    let work = Arc::new(AtomicUsize::new(0));
    let bulkhead = Bulkhead::new(1, Duration::ZERO);
    let health = Health::builder()
        .drain(Duration::from_millis(200), Duration::from_secs(30))
        .build()
        .expect("valid");
    let shed = LoadShedLayer::new()
        .bulkhead(bulkhead.clone())
        .health(health.clone())
        .min_budget(Duration::from_millis(200))
        .retry_after(Duration::from_secs(10), Some(3));
    let addr = support::serve(app(shed, &work)).await;

    let ok = request(addr, "GET", "/work", &[]).await.expect("request");
    assert_eq!((ok.status, ok.body.as_str()), (200, "done"));
    assert_eq!(work.load(Ordering::SeqCst), 1);

    let held = bulkhead.try_acquire().expect("slot");
    let full = request(addr, "GET", "/work", &[]).await.expect("request");
    assert_eq!((full.status, full.body.as_str()), (503, "overloaded\n"));
    let after: u64 = full
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((8..=12).contains(&after), "10 s ± 20%, got {after}");
    drop(held);

    let short = request(
        addr,
        "GET",
        "/work",
        &[("x-envoy-expected-rq-timeout-ms", "100")],
    )
    .await
    .expect("request");
    assert_eq!(
        (short.status, short.body.as_str()),
        (503, "deadline too short\n")
    );

    // During the drain delay load balancers still send traffic: served.
    health.begin_shutdown();
    let draining = request(addr, "GET", "/work", &[]).await.expect("request");
    assert_eq!((draining.status, draining.body.as_str()), (200, "done"));
    assert_eq!(work.load(Ordering::SeqCst), 2);

    // Past it, what still arrives is sent elsewhere.
    health.reached(Phase::Stopping).await;
    let stopping = request(addr, "GET", "/work", &[]).await.expect("request");
    assert_eq!(
        (stopping.status, stopping.body.as_str()),
        (503, "shutting down\n")
    );
    assert_eq!(work.load(Ordering::SeqCst), 2, "shed requests did no work");
}

#[tokio::test]
async fn retry_after_follows_an_open_breaker() {
    let breaker = CircuitBreaker::builder()
        .minimum_calls(1)
        .open_for(Duration::from_secs(40), 1.0, Duration::from_secs(60))
        .jitter(0.0, None)
        .build()
        .expect("valid");
    breaker
        .try_acquire()
        .expect("closed")
        .record(probity_probe::breaker::Verdict::Failure);
    let shed = LoadShedLayer::new()
        .breaker(breaker)
        .retry_after(Duration::from_secs(1), Some(1));
    for _ in 0..20 {
        let s = shed.retry_after_secs();
        assert!((32..=48).contains(&s), "40 s ± 20%, got {s}");
    }
}
