//! Prometheus text exposition of the registry.
#![cfg(feature = "metrics")]

use std::time::Duration;

use probity_probe::health::{CheckOptions, Health};

#[tokio::test(start_paused = true)]
async fn metrics_report_status_failures_and_transitions_per_check() {
    let health = Health::builder()
        .readiness_with(
            "db",
            || async { Err::<(), _>("down") },
            CheckOptions::new()
                .interval(Duration::from_secs(1))
                .timeout(Duration::from_millis(100)),
        )
        .jitter(0.0, None)
        .build()
        .expect("valid");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut registry = prometheus_client::registry::Registry::default();
    health.register_metrics(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    for line in [
        "probity_health_probe_up{probe=\"livez\"} 1",
        "probity_health_probe_up{probe=\"readyz\"} 0",
        "probity_health_check_up{probe=\"readyz\",check=\"db\"} 0",
        "probity_health_check_up{probe=\"readyz\",check=\"shutdown\"} 1",
        "probity_health_check_consecutive_failures{check=\"db\"} 3",
        "probity_health_check_duration_seconds{check=\"db\"} 0.0",
        "# TYPE probity_health_check_transitions counter",
        "probity_health_check_transitions_total{check=\"db\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}
