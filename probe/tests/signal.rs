//! Real signals. Alone in its test binary: it sends SIGTERM to its own
//! process.

use std::time::Duration;

use probity_probe::health::{Drain, Health, Phase, Probe};

fn kill(signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_starts_the_drain_and_a_second_signal_aborts_it() {
    let health = Health::builder()
        .drain(Duration::from_secs(30), Duration::from_secs(30))
        .build()
        .expect("valid");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = axum::serve(listener, health.router::<()>())
        .with_graceful_shutdown(health.shutdown_signal());
    let h = health.clone();
    let serving = tokio::spawn(async move { h.serve_until_drained(server).await.expect("serve") });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(health.report(Probe::Readiness, &[]).ok);

    kill("-TERM");
    for _ in 0..500 {
        if health.phase() == Phase::Draining {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(health.phase(), Phase::Draining);
    assert!(!health.report(Probe::Readiness, &[]).ok);

    kill("-INT");
    let drained = tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .expect("second signal ends the drain at once")
        .expect("join");
    assert_eq!(drained, Drain::Aborted);
}
