//! The dependency inventory and breaker lines in readiness, over real HTTP.

mod support;

use std::time::Duration;

use probity_probe::breaker::CircuitBreaker;
use probity_probe::bulkhead::Bulkhead;
use probity_probe::health::{Dependency, Health};
use support::{get, request, serve};

fn breaker() -> CircuitBreaker {
    CircuitBreaker::builder()
        .count_window(50)
        .minimum_calls(10)
        .build()
        .expect("valid")
}

#[tokio::test]
async fn breakers_show_in_readiness_and_only_critical_ones_fail_it() {
    let (payments, ledger) = (breaker(), breaker());
    let bulkhead = Bulkhead::new(2, Duration::ZERO);
    let health = Health::builder()
        .dependency(
            Dependency::new("payments")
                .timeout(Duration::from_millis(800))
                .breaker(payments.clone())
                .bulkhead(bulkhead.clone())
                .retry("2 attempts, 20% retry budget")
                .fallback("queue the charge"),
        )
        .dependency(
            Dependency::new("ledger")
                .timeout(Duration::from_secs(1))
                .breaker(ledger.clone())
                .fallback("none: fail the order")
                .critical(),
        )
        .dependency(Dependency::new("search"))
        .build()
        .expect("valid");
    let addr = serve(health.router()).await;
    assert_eq!(
        get(addr, "/readyz?verbose").await.body,
        "[+]bulkhead:payments ok\n[+]breaker:payments ok (closed)\n[+]breaker:ledger ok (closed)\n[+]shutdown ok\nreadyz check passed\n"
    );

    payments.force_open();
    let reply = get(addr, "/readyz?verbose").await;
    assert_eq!(
        reply.status, 200,
        "an open breaker on a non-critical dependency is coping, not unready"
    );
    assert!(
        reply
            .body
            .contains("[+]breaker:payments ok (forced-open)\n"),
        "{}",
        reply.body
    );

    ledger.force_open();
    let reply = get(addr, "/readyz?verbose").await;
    assert_eq!(reply.status, 503);
    assert!(
        reply
            .body
            .contains("[-]breaker:ledger failed: reason withheld\n"),
        "{}",
        reply.body
    );
    ledger.reset();

    let _slots = (bulkhead.try_acquire(), bulkhead.try_acquire());
    let reply = get(addr, "/readyz/bulkhead:payments?verbose").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (
            200,
            "[+]bulkhead:payments degraded: reason withheld\nreadyz check passed\n"
        ),
        "a full bulkhead on a non-critical dependency is coping, not unready"
    );
}

#[tokio::test]
async fn a_critical_dependency_with_a_full_bulkhead_fails_readiness() {
    let bulkhead = Bulkhead::new(1, Duration::ZERO);
    let health = Health::builder()
        .dependency(
            Dependency::new("ledger")
                .bulkhead(bulkhead.clone())
                .critical(),
        )
        .build()
        .expect("valid");
    let addr = serve(health.router()).await;
    assert_eq!(get(addr, "/readyz").await.status, 200);
    let held = bulkhead.try_acquire();
    let reply = get(addr, "/readyz/bulkhead:ledger").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (
            503,
            "[-]bulkhead:ledger failed: reason withheld\nreadyz check failed\n"
        )
    );
    drop(held);
    assert_eq!(get(addr, "/readyz").await.status, 200, "free again: ready");
}

#[tokio::test]
async fn the_inventory_lists_every_edge_and_flags_missing_answers() {
    let health = Health::builder()
        .dependency(
            Dependency::new("payments")
                .timeout(Duration::from_millis(800))
                .breaker(breaker())
                .bulkhead(Bulkhead::new(8, Duration::from_millis(5)))
                .retry("2 attempts")
                .fallback("queue the charge"),
        )
        .dependency(Dependency::new("search").breaker(breaker()))
        .build()
        .expect("valid");
    let probes_only = serve(health.router()).await;
    let reply = request(probes_only, "GET", "/dependencies", &[])
        .await
        .expect("request");
    assert_eq!(
        reply.status, 404,
        "the inventory is mounted only when asked for"
    );
    let addr = serve(health.router().merge(health.dependencies_router())).await;
    let reply = request(addr, "GET", "/dependencies", &[])
        .await
        .expect("request");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_str(&reply.body).expect("JSON");
    assert_eq!(body["flagged"], 1);
    let payments = &body["dependencies"][0];
    assert_eq!(payments["name"], "payments");
    assert_eq!(payments["timeoutSeconds"], 0.8);
    assert_eq!(payments["breaker"]["state"], "closed");
    assert!(
        payments["breaker"]["trips"]
            .as_str()
            .is_some_and(|t| t.contains("failure rate >= 50%")),
        "{payments}"
    );
    assert_eq!(payments["bulkhead"]["maxConcurrent"], 8);
    assert_eq!(payments["fallback"], "queue the charge");
    assert_eq!(payments["problems"], serde_json::json!([]));
    let search = &body["dependencies"][1];
    assert_eq!(
        search["problems"],
        serde_json::json!(["no timeout", "no fallback"])
    );
}
