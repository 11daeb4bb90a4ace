//! The shutdown drain over real HTTP: readiness fails first, requests are
//! still served during the drain delay, in-flight requests finish, new
//! connections are refused, and the deadline and a second request bound it.

#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "the drain is measured in wall time, as a client would see it"
)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing;
use probity_probe::health::{Drain, Health, Phase};
use support::{eventually, request};
use tokio::task::JoinHandle;

async fn start(delay: Duration, deadline: Duration) -> (SocketAddr, Health, JoinHandle<Drain>) {
    let health = Health::builder()
        .drain(delay, deadline)
        .build()
        .expect("valid");
    let app = Router::new()
        .route("/work", routing::get(|| async { "done" }))
        .route(
            "/slow/{ms}",
            routing::get(
                |axum::extract::Path(ms): axum::extract::Path<u64>| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    "slow done"
                },
            ),
        )
        .merge(health.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = axum::serve(listener, app).with_graceful_shutdown(health.shutdown_signal());
    let h = health.clone();
    let task = tokio::spawn(async move { h.serve_until_drained(server).await.expect("serve") });
    (addr, health, task)
}

async fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    request(addr, "GET", path, &[])
        .await
        .map(|r| (r.status, r.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_first_then_in_flight_requests_finish_and_new_ones_are_refused() {
    let (addr, health, server) = start(Duration::from_millis(600), Duration::from_secs(10)).await;
    assert_eq!(get(addr, "/readyz").await.expect("ready").0, 200);

    let in_flight = tokio::spawn(async move { get(addr, "/slow/1500").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let began = Instant::now();
    health.begin_shutdown();

    let ready = get(addr, "/readyz?verbose").await.expect("still serving");
    assert_eq!(ready.0, 503);
    assert!(
        ready.1.contains("[-]shutdown failed: reason withheld\n"),
        "{}",
        ready.1
    );
    assert_eq!(
        get(addr, "/work")
            .await
            .expect("served during the drain delay"),
        (200, "done".into())
    );
    assert_eq!(
        get(addr, "/livez").await.expect("livez").0,
        200,
        "draining is not dying"
    );
    assert_eq!(health.phase(), Phase::Draining);

    eventually("new connections refused after the delay", || async {
        get(addr, "/work").await.is_err()
    })
    .await;
    assert!(
        began.elapsed() >= Duration::from_millis(600),
        "refused after {:?}",
        began.elapsed()
    );

    let finished = in_flight
        .await
        .expect("join")
        .expect("in-flight request completes");
    assert_eq!(finished, (200, "slow done".into()));
    assert_eq!(server.await.expect("join"), Drain::Complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_deadline_bounds_in_flight_requests() {
    let (addr, health, server) =
        start(Duration::from_millis(100), Duration::from_millis(300)).await;
    let _stuck = tokio::spawn(async move { get(addr, "/slow/60000").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let began = Instant::now();
    health.begin_shutdown();
    assert_eq!(server.await.expect("join"), Drain::DeadlineExceeded);
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(health.phase(), Phase::DeadlineExceeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_request_aborts_the_drain() {
    let (addr, health, server) = start(Duration::from_secs(30), Duration::from_secs(30)).await;
    let _stuck = tokio::spawn(async move { get(addr, "/slow/60000").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    health.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(health.phase(), Phase::Draining);
    health.begin_shutdown();
    assert_eq!(server.await.expect("join"), Drain::Aborted);
    assert_eq!(health.phase(), Phase::Aborted);
}
