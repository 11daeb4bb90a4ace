//! Fault injection over real HTTP: the layer delays and fails requests as
//! set, and the guarded endpoint switches faults at runtime.

#![cfg(feature = "chaos")]
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "injected latency is measured in wall time"
)]

mod support;

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use probity_probe::chaos::{self, Chaos, Fault};

const TOKEN: &str = "drill-token-0123456789";

async fn app(chaos: &Chaos) -> std::net::SocketAddr {
    let api = Router::new()
        .route("/pay", get(|| async { "paid" }))
        .layer(chaos.layer());
    let admin = chaos::router(TOKEN, [chaos.clone()]).expect("strong token");
    support::serve(api.merge(admin)).await
}

#[tokio::test]
async fn the_layer_delays_and_fails_requests_as_set() {
    let chaos = Chaos::new("payments").seed(1);
    let addr = app(&chaos).await;

    let reply = support::get(addr, "/pay").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "paid"));

    chaos.set(Fault::latency(Duration::from_millis(300)));
    let start = Instant::now();
    let reply = support::get(addr, "/pay").await;
    assert_eq!(reply.status, 200);
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );

    chaos.set(Fault::errors(1.0));
    let reply = support::get(addr, "/pay").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("x-probity-chaos"), Some("injected"));

    chaos.set(Fault::hang());
    let hung = tokio::time::timeout(Duration::from_millis(500), support::get(addr, "/pay")).await;
    assert!(hung.is_err(), "a hung request does not answer");

    chaos.clear();
    assert_eq!(support::get(addr, "/pay").await.status, 200);
}

#[tokio::test]
async fn the_endpoint_needs_the_token_and_switches_faults() {
    let chaos = Chaos::new("payments");
    let addr = app(&chaos).await;
    let auth = format!("Bearer {TOKEN}");
    let with_token = [("Authorization", auth.as_str())];

    for headers in [
        &[][..],
        &[("Authorization", "Bearer wrong-token-0000000000")][..],
    ] {
        let reply = support::request_with_body(addr, "PUT", "/chaos/payments", headers, "hang")
            .await
            .expect("reply");
        assert_eq!(reply.status, 401);
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    }
    assert!(!chaos.fault().is_active(), "nothing set without the token");

    let reply = support::request_with_body(
        addr,
        "PUT",
        "/chaos/payments",
        &with_token,
        "latency=250ms,error=0.5",
    )
    .await
    .expect("reply");
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, "payments: latency=250ms,error=0.5\n");
    assert_eq!(
        chaos.fault(),
        Fault::latency(Duration::from_millis(250)).with_errors(0.5)
    );

    let reply = support::request(addr, "GET", "/chaos", &with_token)
        .await
        .expect("reply");
    assert_eq!(reply.body, "payments: latency=250ms,error=0.5\n");

    let reply = support::request_with_body(addr, "PUT", "/chaos/payments", &with_token, "slow")
        .await
        .expect("reply");
    assert_eq!(reply.status, 400);
    assert!(
        reply.body.contains("unknown part \"slow\""),
        "{}",
        reply.body
    );
    assert!(chaos.fault().is_active(), "a bad request changes nothing");

    let reply = support::request(addr, "GET", "/chaos/ledger", &with_token)
        .await
        .expect("reply");
    assert_eq!(reply.status, 404);

    let reply = support::request(addr, "DELETE", "/chaos/payments", &with_token)
        .await
        .expect("reply");
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "payments: off\n")
    );
    assert!(!chaos.fault().is_active());

    assert!(chaos::router("short", [chaos.clone()]).is_err());
}
