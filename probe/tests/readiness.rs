//! Readiness, liveness and startup semantics under paused time: debounce,
//! staleness, timeouts, heartbeats, startup gating, saturation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use probity_probe::health::{
    CheckOptions, CheckStatus, Health, Load, Misconfigured, Probe, Report, Thresholds, process,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Every second, 100 ms timeout, no jitter: runs at t = 0, 1, 2, ...
fn every_second() -> CheckOptions {
    CheckOptions::new()
        .interval(secs(1))
        .timeout(Duration::from_millis(100))
}

fn status(report: &Report, name: &str) -> (CheckStatus, Option<String>) {
    let line = report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no line {name} in {report:?}"));
    (line.status, line.reason.clone())
}

/// A check that passes while the flag is set, counting its runs.
fn switch(
    up: &Arc<AtomicBool>,
    runs: &Arc<AtomicUsize>,
) -> impl probity_probe::health::Check + use<> {
    let (up, runs) = (Arc::clone(up), Arc::clone(runs));
    move || {
        runs.fetch_add(1, Ordering::SeqCst);
        let ok = up.load(Ordering::SeqCst);
        async move { if ok { Ok(()) } else { Err("down") } }
    }
}

/// Sleeps to just after the run at `t` seconds (runs take no time).
async fn until(start: tokio::time::Instant, t: f64) {
    tokio::time::sleep_until(start + Duration::from_secs_f64(t + 0.5)).await;
}

#[tokio::test(start_paused = true)]
async fn readiness_flips_after_n_failures_and_back_after_m_successes() {
    let (up, runs) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicUsize::new(0)),
    );
    let start = tokio::time::Instant::now();
    let health = Health::builder()
        .readiness_with("db", switch(&up, &runs), every_second().debounce(3, 2))
        .jitter(0.0, None)
        .build()
        .expect("valid");
    until(start, 0.0).await;
    assert!(health.report(Probe::Readiness, &[]).ok);

    up.store(false, Ordering::SeqCst);
    for t in 1..=2 {
        until(start, f64::from(t)).await;
        let r = health.report(Probe::Readiness, &[]);
        assert!(r.ok, "still ready after {t} failures: {r:?}");
    }
    until(start, 3.0).await;
    let r = health.report(Probe::Readiness, &[]);
    assert!(!r.ok);
    assert_eq!(status(&r, "db"), (CheckStatus::Failed, Some("down".into())));
    assert_eq!(r.checks[0].consecutive_failures, 3);

    up.store(true, Ordering::SeqCst);
    until(start, 4.0).await;
    assert!(
        !health.report(Probe::Readiness, &[]).ok,
        "one success is not enough"
    );
    until(start, 5.0).await;
    assert!(
        health.report(Probe::Readiness, &[]).ok,
        "two successes recover"
    );
    assert!(
        health.report(Probe::Liveness, &[]).ok,
        "liveness never looked at db"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 6);
}

#[tokio::test(start_paused = true)]
async fn a_hung_check_fails_with_timeout_and_is_run_once_at_a_time() {
    let started = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&started);
    let health = Health::builder()
        .readiness_with(
            "hangs",
            move || {
                counter.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<Result<(), String>>()
            },
            every_second().debounce(1, 1),
        )
        .jitter(0.0, None)
        .build()
        .expect("valid");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let r = health.report(Probe::Readiness, &[]);
    assert_eq!(
        status(&r, "hangs"),
        (CheckStatus::Failed, Some("timeout".into()))
    );
    tokio::time::sleep(secs(10)).await;
    // One run per interval + timeout: never overlapping.
    assert_eq!(started.load(Ordering::SeqCst), 10);
}

#[tokio::test(start_paused = true)]
async fn stale_results_fail_readiness() {
    let health = Health::builder()
        .readiness_with(
            "db",
            || async { Ok::<(), String>(()) },
            CheckOptions::new()
                .interval(secs(60))
                .timeout(secs(1))
                .stale_after(secs(5)),
        )
        .jitter(0.0, None)
        .build()
        .expect("valid");
    tokio::time::sleep(secs(4)).await;
    assert!(health.report(Probe::Readiness, &[]).ok);
    tokio::time::sleep(secs(2)).await;
    let r = health.report(Probe::Readiness, &[]);
    assert!(!r.ok);
    assert_eq!(
        status(&r, "db"),
        (
            CheckStatus::Failed,
            Some("stale: last result 6.0s old".into())
        )
    );
}

#[tokio::test(start_paused = true)]
async fn heartbeat_silence_fails_liveness_until_it_beats_again() {
    let health = Health::builder().build().expect("valid");
    let beat = health.heartbeat("consumer-loop", secs(30));
    tokio::time::sleep(secs(29)).await;
    assert!(health.report(Probe::Liveness, &[]).ok);
    tokio::time::sleep(secs(2)).await;
    let r = health.report(Probe::Liveness, &[]);
    assert!(!r.ok);
    assert_eq!(
        status(&r, "consumer-loop"),
        (CheckStatus::Failed, Some("no beat for 31.0s".into()))
    );
    assert!(
        health.report(Probe::Readiness, &[]).ok,
        "a silent loop is a liveness matter"
    );
    beat.beat();
    assert!(health.report(Probe::Liveness, &[]).ok);
    assert_eq!(
        health.heartbeat("consumer-loop", secs(1)).name(),
        "consumer-loop"
    );
}

#[tokio::test(start_paused = true)]
async fn startup_gates_readiness_and_startup_checks_stop_once_passed() {
    let (up, runs) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let start = tokio::time::Instant::now();
    let health = Health::builder()
        .startup_with("migrations", switch(&up, &runs), every_second())
        .readiness_with("db", || async { Ok::<(), String>(()) }, every_second())
        .jitter(0.0, None)
        .build()
        .expect("valid");
    until(start, 2.0).await;
    assert!(!health.report(Probe::Startup, &[]).ok);
    let r = health.report(Probe::Readiness, &[]);
    assert_eq!(
        status(&r, "startup"),
        (CheckStatus::Failed, Some("waiting for migrations".into()))
    );
    assert_eq!(status(&r, "db").0, CheckStatus::Ok);

    up.store(true, Ordering::SeqCst);
    until(start, 3.0).await;
    assert!(health.report(Probe::Startup, &[]).ok);
    assert!(health.report(Probe::Readiness, &[]).ok);
    let runs_at_start = runs.load(Ordering::SeqCst);
    assert_eq!(runs_at_start, 4);
    up.store(false, Ordering::SeqCst);
    tokio::time::sleep(secs(10)).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        runs_at_start,
        "startup checks stop after success"
    );
    assert!(health.report(Probe::Startup, &[]).ok);
}

#[tokio::test(start_paused = true)]
async fn saturation_fails_readiness_with_hysteresis() {
    let in_use = Arc::new(AtomicU64::new(0));
    let source = Arc::clone(&in_use);
    let health = Health::builder()
        .saturation_with(
            "db-pool",
            move || Load {
                in_use: source.load(Ordering::SeqCst),
                capacity: 20,
            },
            Thresholds::new(0.9, 0.7),
        )
        .build()
        .expect("valid");
    let ready_at = |n: u64| {
        in_use.store(n, Ordering::SeqCst);
        health.report(Probe::Readiness, &[])
    };
    assert!(ready_at(17).ok);
    let r = ready_at(18);
    assert_eq!(
        status(&r, "db-pool"),
        (
            CheckStatus::Failed,
            Some("saturated: 18 of 20 in use".into())
        )
    );
    assert!(!ready_at(15).ok, "0.75 is above the exit threshold");
    assert!(ready_at(14).ok);
    assert!(health.report(Probe::Liveness, &[]).ok);
}

#[tokio::test(start_paused = true)]
async fn non_critical_failures_degrade_without_failing() {
    let health = Health::builder()
        .readiness_with(
            "recommendations",
            || async { Err::<(), _>("503 from recommender") },
            every_second().non_critical(),
        )
        .build()
        .expect("valid");
    tokio::time::sleep(secs(2)).await;
    let r = health.report(Probe::Readiness, &[]);
    assert!(r.ok);
    assert_eq!(status(&r, "recommendations").0, CheckStatus::Degraded);
}

#[tokio::test]
async fn dependency_checks_are_rejected_for_liveness() {
    let err = Health::builder()
        .liveness("postgres", || async { Ok::<(), String>(()) })
        .build()
        .expect_err("dependency in liveness");
    assert_eq!(
        err,
        Misconfigured::DependencyInLiveness {
            name: "postgres".into()
        }
    );
    assert!(err.to_string().contains("restarts healthy pods"), "{err}");
    Health::builder()
        .liveness(
            "deadlock-detector",
            process(|| async { Ok::<(), String>(()) }),
        )
        .build()
        .expect("process checks may serve liveness");
}

#[tokio::test]
async fn configuration_errors_name_the_problem() {
    let ok = || async { Ok::<(), String>(()) };
    let cases: Vec<(probity_probe::HealthBuilder, &str)> = vec![
        (
            Health::builder().readiness("db", ok).readiness("db", ok),
            "registered twice",
        ),
        (
            Health::builder().readiness("Bad Name", ok),
            "not a valid check name",
        ),
        (
            Health::builder().readiness("shutdown", ok),
            "registered twice",
        ),
        (
            Health::builder().readiness_with("db", ok, CheckOptions::new().debounce(0, 1)),
            "at least 1",
        ),
        (
            Health::builder().readiness_with("db", ok, CheckOptions::new().timeout(secs(10))),
            "must be shorter than its interval",
        ),
        (
            Health::builder().saturation_with(
                "pool",
                || Load {
                    in_use: 0,
                    capacity: 1,
                },
                Thresholds::new(0.5, 0.8),
            ),
            "0 <= exit <= enter <= 1",
        ),
    ];
    for (builder, expected) in cases {
        let err = builder.build().expect_err(expected);
        assert!(err.to_string().contains(expected), "{err}");
    }
}

#[test]
fn building_outside_a_runtime_is_an_error() {
    assert_eq!(
        Health::builder().build().err(),
        Some(Misconfigured::NoRuntime)
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_registry_stops_its_checks() {
    let (up, runs) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicUsize::new(0)),
    );
    let health = Health::builder()
        .readiness_with("db", switch(&up, &runs), every_second())
        .build()
        .expect("valid");
    tokio::time::sleep(secs(3)).await;
    drop(health);
    tokio::time::sleep(secs(2)).await;
    let after_drop = runs.load(Ordering::SeqCst);
    tokio::time::sleep(secs(10)).await;
    assert_eq!(runs.load(Ordering::SeqCst), after_drop);
}
