//! The operator's Prometheus metrics.

use std::sync::{Mutex, PoisonError};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels naming a policy kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabel {
    pub(crate) kind: String,
}

/// Labels of a reconcile outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReconcileLabels {
    pub(crate) kind: String,
    pub(crate) result: String,
}

/// Labels of a violation count.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RuleLabels {
    pub(crate) policy: String,
    pub(crate) rule: String,
}

/// Labels of a watched resource.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResourceLabel {
    pub(crate) resource: String,
}

/// Labels of an admission review.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AdmissionLabels {
    pub(crate) webhook: String,
    pub(crate) result: String,
}

/// Labels naming a webhook.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct WebhookLabel {
    pub(crate) webhook: String,
}

/// Labels naming a negotiated protocol.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ProtocolLabel {
    pub(crate) protocol: String,
}

/// Every metric the operator exports, and the registry holding them.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) registry: Mutex<Registry>,
    pub(crate) reconciles: Family<ReconcileLabels, Counter>,
    pub(crate) reconcile_errors: Family<KindLabel, Counter>,
    pub(crate) reconcile_duration: Family<KindLabel, Histogram>,
    pub(crate) violations: Family<RuleLabels, Gauge>,
    pub(crate) watch_restarts: Family<ResourceLabel, Counter>,
    pub(crate) events: Counter,
    pub(crate) leader: Gauge,
    pub(crate) admission: Family<AdmissionLabels, Counter>,
    pub(crate) admission_duration: Family<WebhookLabel, Histogram>,
    pub(crate) webhook_connections: Family<ProtocolLabel, Counter>,
    pub(crate) backstops_missing: Gauge,
    pub(crate) policy_report_writes: Counter,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        // No registry prefix: probity-probe's health metrics already carry
        // theirs.
        let mut registry = Registry::default();
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "probity_reconciles",
            "Policy reconciliations by policy kind and result (ok, error)",
            reconciles.clone(),
        );
        let reconcile_errors = Family::<KindLabel, Counter>::default();
        registry.register(
            "probity_reconcile_errors",
            "Policy reconciliations that failed and were retried",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "probity_reconcile_duration_seconds",
            "Time to evaluate a policy and write its status",
            reconcile_duration.clone(),
        );
        let violations = Family::<RuleLabels, Gauge>::default();
        registry.register(
            "probity_policy_violations",
            "Violations currently found, by policy and rule",
            violations.clone(),
        );
        let watch_restarts = Family::<ResourceLabel, Counter>::default();
        registry.register(
            "probity_watch_restarts",
            "Watch streams that failed and were restarted with backoff, by resource",
            watch_restarts.clone(),
        );
        let events = Counter::default();
        registry.register(
            "probity_events_published",
            "Kubernetes Events published on violating workloads",
            events.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "probity_leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        let admission = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "probity_admission_reviews",
            "Admission reviews by webhook (validate, mutate) and result",
            admission.clone(),
        );
        let admission_duration = Family::<WebhookLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00005, 2.0, 18))
        });
        registry.register(
            "probity_admission_duration_seconds",
            "Time to answer an admission review, registry calls included",
            admission_duration.clone(),
        );
        let webhook_connections = Family::<ProtocolLabel, Counter>::default();
        registry.register(
            "probity_webhook_connections",
            "TLS connections accepted by the webhook server, by negotiated protocol (h2, http/1.1)",
            webhook_connections.clone(),
        );
        let backstops_missing = Gauge::default();
        registry.register(
            "probity_backstops_missing",
            "Policies whose admission backstop was missing at the leader's last sweep (re-created then), or all of them while the API server lacks ValidatingAdmissionPolicy",
            backstops_missing.clone(),
        );
        let policy_report_writes = Counter::default();
        registry.register(
            "probity_policy_report_writes",
            "PolicyReports written because their content changed",
            policy_report_writes.clone(),
        );
        registry.register_collector(Box::new(super::process::ProcessCollector));
        Self {
            registry: Mutex::new(registry),
            admission,
            admission_duration,
            webhook_connections,
            backstops_missing,
            policy_report_writes,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            violations,
            watch_restarts,
            events,
            leader,
        }
    }

    /// The text exposition format.
    pub(crate) fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

/// `probity_webhook_certificate_expiry_timestamp_seconds`: when the
/// certificate the webhooks serve right now expires, read on each scrape.
#[derive(Debug)]
pub(crate) struct CertificateExpiry(pub(crate) crate::admission::tls::CertStore);

impl prometheus_client::collector::Collector for CertificateExpiry {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric as _;
        let Some(not_after) = self.0.not_after() else {
            return Ok(());
        };
        let gauge = prometheus_client::metrics::gauge::ConstGauge::new(not_after);
        gauge.encode(encoder.encode_descriptor(
            "probity_webhook_certificate_expiry_timestamp_seconds",
            "When the serving certificate of the webhooks expires (seconds since the epoch)",
            None,
            gauge.metric_type(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The `probity_*` and `process_*` names in `text`.
    fn names(text: &str) -> BTreeSet<String> {
        let bytes = text.as_bytes();
        text.match_indices('p')
            .filter(|(at, _)| {
                let rest = &text[*at..];
                (rest.starts_with("probity_") || rest.starts_with("process_"))
                    && (*at == 0
                        || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_'))
            })
            .map(|(at, _)| {
                text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect()
            })
            .collect()
    }

    /// What the metrics and collectors register (counters gain `_total`,
    /// histograms `_bucket`, `_sum` and `_count` when exposed).
    fn exported() -> BTreeSet<String> {
        let code = |text: &'static str| text.split("#[cfg(test)]").next().unwrap_or_default();
        let mut all = names(code(include_str!("metrics.rs")));
        all.extend(names(code(include_str!("process.rs"))));
        all.extend(names(include_str!("../../probe/src/health/metrics.rs")));
        all
    }

    #[test]
    fn the_charts_alerts_and_dashboard_query_only_exported_metrics() {
        let exported = exported();
        for (file, text) in [
            (
                "prometheusrule.yaml",
                include_str!("../../charts/probity/templates/prometheusrule.yaml"),
            ),
            (
                "probity.json",
                include_str!("../../charts/probity/dashboards/probity.json"),
            ),
        ] {
            let queried = names(text);
            assert!(queried.len() > 5, "{file}: {queried:?}");
            for name in queried {
                let base = ["_total", "_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(&name);
                assert!(
                    exported.contains(base) || exported.contains(&name),
                    "{file} queries {name}, which the operator does not export"
                );
            }
        }
        assert!(!exported.contains("probity_made_up"), "the check can fail");
    }
}
