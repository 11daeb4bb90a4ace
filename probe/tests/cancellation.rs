//! Cancellation safety: calls dropped at random points under load leave no
//! permit held and no breaker wedged half-open.

use std::time::Duration;

use probity_probe::breaker::{CircuitBreaker, CircuitBreakerLayer, HalfOpen, State, Verdict};
use probity_probe::bulkhead::{Bulkhead, BulkheadLayer};
use tower::{ServiceBuilder, ServiceExt as _};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_calls_release_everything() {
    let breaker = CircuitBreaker::builder()
        .count_window(20)
        .minimum_calls(5)
        .open_for(Duration::from_millis(20), 1.0, Duration::from_millis(20))
        .half_open(HalfOpen::SingleProbe {
            lease: Duration::from_secs(3600),
        })
        .jitter(0.0, None)
        .build()
        .expect("valid");
    let bulkhead = Bulkhead::new(8, Duration::from_millis(2));
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(breaker.clone()))
        .layer(BulkheadLayer::new(bulkhead.clone()))
        .service_fn(|work: (u64, bool)| async move {
            tokio::time::sleep(Duration::from_micros(work.0)).await;
            if work.1 {
                Ok(())
            } else {
                Err("dependency error")
            }
        });

    let mut events = breaker.subscribe();
    let mut rng = fastrand::Rng::with_seed(42);
    for round in 0..20 {
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let svc = svc.clone();
            let work = (rng.u64(0..3000), rng.bool() || round % 3 == 0);
            let cancel_after = Duration::from_micros(rng.u64(0..3000));
            tasks.push(tokio::spawn(async move {
                let _ = tokio::time::timeout(cancel_after, svc.oneshot(work)).await;
            }));
        }
        for t in tasks {
            t.await.expect("join");
        }
        assert_eq!(bulkhead.in_use(), 0, "round {round}: bulkhead slots leaked");
    }

    assert!(
        !matches!(
            events.try_recv(),
            Err(tokio::sync::broadcast::error::TryRecvError::Empty)
        ),
        "the storm opened the breaker at least once"
    );

    // Whatever state the storm left, the breaker must still make progress:
    // with a 1-hour lease, a trial permit leaked by a cancelled call would
    // wedge it half-open.
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut closed = false;
    for _ in 0..100 {
        match breaker.try_acquire() {
            Ok(permit) => permit.record(Verdict::Success),
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
        if breaker.state() == State::Closed {
            closed = true;
            break;
        }
    }
    assert!(closed, "breaker stuck in {:?}", breaker.state());
}
