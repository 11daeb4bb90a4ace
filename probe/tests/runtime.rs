//! Real runtimes: a stalled runtime fails `/livez`, and a hung check never
//! slows a probe down.

#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "these tests block the runtime and measure wall time on purpose"
)]

mod support;

use std::time::{Duration, Instant};

use probity_probe::health::{CheckOptions, Health};
use support::{eventually, get, serve};
use tower::ServiceExt as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_runtime_fails_livez_and_recovers() {
    // The service's own runtime, on its own thread; the probes are served
    // from the test's runtime so that they can answer during the stall.
    let (stall, mut stalls) = tokio::sync::mpsc::unbounded_channel::<Duration>();
    let (built, health) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let app = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        app.block_on(async move {
            let health = Health::builder()
                .watchdog(Duration::from_millis(200))
                .build()
                .expect("valid");
            built.send(health).expect("test alive");
            while let Some(d) = stalls.recv().await {
                std::thread::sleep(d); // blocks the whole runtime
            }
        });
    });
    let health = health.recv().expect("registry built");
    let addr = serve(health.router()).await;
    eventually("livez ok", || async {
        get(addr, "/livez").await.status == 200
    })
    .await;

    stall
        .send(Duration::from_millis(1500))
        .expect("app thread alive");
    eventually("livez fails during the stall", || async {
        get(addr, "/livez").await.status == 503
    })
    .await;
    let body = get(addr, "/livez").await.body;
    assert_eq!(
        body,
        "[-]watchdog failed: reason withheld\nlivez check failed\n"
    );
    assert_eq!(
        get(addr, "/readyz").await.status,
        200,
        "a stall is a liveness matter"
    );
    eventually("livez recovers after the stall", || async {
        get(addr, "/livez").await.status == 200
    })
    .await;

    drop(stall);
    thread.join().expect("app thread");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_check_never_blocks_a_probe() {
    let health = Health::builder()
        .readiness_with(
            "hangs",
            std::future::pending::<Result<(), String>>,
            // Hangs for a minute per attempt: any answer well inside that
            // proves the probe did not wait for it, however loaded the
            // machine is.
            CheckOptions::new()
                .interval(Duration::from_secs(120))
                .timeout(Duration::from_secs(60)),
        )
        .build()
        .expect("valid");
    let router = health.router::<()>();
    let mut took = Vec::with_capacity(2000);
    for i in 0..2000 {
        let path = if i % 2 == 0 {
            "/readyz?verbose"
        } else {
            "/livez"
        };
        let request = http::Request::get(path)
            .body(axum::body::Body::empty())
            .expect("request");
        let started = Instant::now();
        let response = router.clone().oneshot(request).await.expect("infallible");
        took.push(started.elapsed());
        assert!(response.status() == 200 || response.status() == 503);
    }
    took.sort();
    let p99 = took[took.len() * 99 / 100];
    assert!(
        p99 < Duration::from_secs(1),
        "probe p99 {p99:?} while a check hangs"
    );

    // And over real HTTP, while the check is stuck in its timeout.
    let addr = serve(health.router()).await;
    for _ in 0..20 {
        let started = Instant::now();
        let reply = get(addr, "/readyz").await;
        assert_eq!(reply.status, 503);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
