//! Prometheus metrics per check, read from the registry on each scrape.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `probity_health_probe_up` | gauge: 1 passing, 0 failing | `probe` |
//! | `probity_health_check_up` | gauge: 1 ok or excluded, 0 failed or degraded | `probe`, `check` |
//! | `probity_health_check_consecutive_failures` | gauge | `check` |
//! | `probity_health_check_duration_seconds` | gauge: last run | `check` |
//! | `probity_health_check_transitions_total` | counter: debounced status changes | `check` |

use std::sync::PoisonError;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use super::Health;
use super::report::{CheckStatus, Probe, evaluate};

#[derive(Debug)]
struct HealthCollector {
    health: Health,
}

impl Health {
    /// Registers the registry's metrics with a prometheus-client
    /// [`Registry`]; values are read on each scrape.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let health = probity_probe::health::Health::builder().build().expect("valid");
    /// let mut registry = prometheus_client::registry::Registry::default();
    /// health.register_metrics(&mut registry);
    /// let mut text = String::new();
    /// prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    /// assert!(text.contains("probity_health_probe_up{probe=\"livez\"} 1"));
    /// # }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn register_metrics(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(HealthCollector {
            health: self.clone(),
        }));
    }
}

impl Collector for HealthCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> std::fmt::Result {
        let inner = &self.health.inner;
        let reports: Vec<_> = [Probe::Liveness, Probe::Readiness, Probe::Startup]
            .into_iter()
            .map(|p| evaluate(inner, p, &[], None))
            .collect();

        let mut probe_up = encoder.encode_descriptor(
            "probity_health_probe_up",
            "Whether the probe passes (1) or fails (0)",
            None,
            MetricType::Gauge,
        )?;
        for r in &reports {
            let labels = [("probe", r.probe.path_name())];
            ConstGauge::new(i64::from(r.ok)).encode(probe_up.encode_family(&labels)?)?;
        }

        let mut check_up = encoder.encode_descriptor(
            "probity_health_check_up",
            "Whether the check is ok (1) or failed or degraded (0)",
            None,
            MetricType::Gauge,
        )?;
        for r in &reports {
            for c in &r.checks {
                let labels = [("probe", r.probe.path_name()), ("check", c.name.as_str())];
                let up = matches!(c.status, CheckStatus::Ok | CheckStatus::Excluded);
                ConstGauge::new(i64::from(up)).encode(check_up.encode_family(&labels)?)?;
            }
        }

        let states: Vec<_> = inner
            .checks
            .iter()
            .map(|c| {
                let state = c.state.lock().unwrap_or_else(PoisonError::into_inner);
                (
                    c.name.as_str(),
                    state.consecutive_failures,
                    state.last.as_ref().map(|o| o.duration.as_secs_f64()),
                    state.transitions,
                )
            })
            .collect();
        let mut failures = encoder.encode_descriptor(
            "probity_health_check_consecutive_failures",
            "Consecutive failed runs of the check",
            None,
            MetricType::Gauge,
        )?;
        for (name, n, _, _) in &states {
            ConstGauge::new(i64::from(*n)).encode(failures.encode_family(&[("check", *name)])?)?;
        }
        let mut duration = encoder.encode_descriptor(
            "probity_health_check_duration_seconds",
            "Duration of the check's last run",
            None,
            MetricType::Gauge,
        )?;
        for (name, _, took, _) in &states {
            if let Some(took) = took {
                ConstGauge::new(*took).encode(duration.encode_family(&[("check", *name)])?)?;
            }
        }
        let mut transitions = encoder.encode_descriptor(
            "probity_health_check_transitions",
            "Debounced status changes of the check",
            None,
            MetricType::Counter,
        )?;
        for (name, _, _, n) in &states {
            ConstCounter::new(*n).encode(transitions.encode_family(&[("check", *name)])?)?;
        }
        Ok(())
    }
}
