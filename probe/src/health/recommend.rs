//! Kubernetes probe settings that agree with the registry's configuration.

use std::fmt::Write as _;
use std::sync::PoisonError;
use std::time::Duration;

use super::Health;

/// Where the kubelet reaches the probe endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTarget {
    port: String,
    https: bool,
    startup_budget: Duration,
}

impl Default for ProbeTarget {
    fn default() -> Self {
        Self {
            port: "8080".into(),
            https: false,
            startup_budget: Duration::from_secs(60),
        }
    }
}

impl ProbeTarget {
    /// HTTP on a port number.
    pub fn port(port: u16) -> Self {
        Self {
            port: port.to_string(),
            ..Self::default()
        }
    }

    /// HTTP on a named container port (e.g. `http`).
    pub fn named_port(name: impl Into<String>) -> Self {
        Self {
            port: name.into(),
            ..Self::default()
        }
    }

    /// The kubelet connects with HTTPS (without verifying the certificate).
    pub fn https(mut self) -> Self {
        self.https = true;
        self
    }

    /// How long startup may take before the kubelet restarts the container
    /// (default 60 s).
    pub fn startup_budget(mut self, budget: Duration) -> Self {
        self.startup_budget = budget;
        self
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

impl Health {
    /// The container's `startupProbe`, `readinessProbe` and `livenessProbe`
    /// as YAML, consistent with this registry:
    ///
    /// - readiness is polled often enough that the kubelet sees `/readyz`
    ///   fail within half the drain delay, leaving the rest for endpoint
    ///   removal to propagate; the registry debounces dependency checks, so
    ///   the kubelet needs no long failure threshold of its own;
    /// - the liveness window is at least 30 s, longer than the watchdog
    ///   bound and every heartbeat's silence bound, and longer than the
    ///   readiness window, so an overloaded pod leaves rotation before it is
    ///   restarted;
    /// - the startup window covers the startup budget;
    /// - `terminationGracePeriodSeconds` (a pod field, given as a comment)
    ///   covers the drain delay and deadline.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use probity_probe::health::Health;
    /// let yaml = Health::builder().build().expect("valid").recommended_probes();
    /// assert!(yaml.contains("path: /readyz"));
    /// # }
    /// ```
    pub fn recommended_probes(&self) -> String {
        let inner = &self.inner;
        let target = &inner.target;
        let drain = ceil_secs(inner.drain_delay).max(1);
        let readiness_period = (drain / 4).clamp(1, 5);
        let readiness_failures = 2;
        let readiness_window = readiness_period * readiness_failures + 1;

        let mut liveness_floor = Duration::from_secs(30);
        if let Some((watchdog, _)) = &inner.watchdog {
            liveness_floor = liveness_floor.max(watchdog.max_stall * 2);
        }
        for beat in inner
            .heartbeats
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            liveness_floor = liveness_floor.max(beat.max_silence * 2);
        }
        let liveness_period = 10;
        let liveness_failures = ceil_secs(liveness_floor)
            .max(readiness_window)
            .div_ceil(liveness_period)
            .max(3);

        let startup_period = 2;
        let startup_failures = ceil_secs(target.startup_budget)
            .div_ceil(startup_period)
            .max(1);
        let grace = ceil_secs(inner.drain_delay) + ceil_secs(inner.drain_deadline) + 5;

        let port = if target.port.parse::<u16>().is_ok() {
            target.port.clone()
        } else {
            format!("{:?}", target.port)
        };
        let scheme = if target.https { ", scheme: HTTPS" } else { "" };
        let mut out = String::new();
        let mut probe = |field: &str, path: &str, period: u64, failures: u64| {
            let _ = writeln!(out, "{field}:");
            let _ = writeln!(out, "  httpGet: {{path: {path}, port: {port}{scheme}}}");
            let _ = writeln!(out, "  periodSeconds: {period}");
            let _ = writeln!(out, "  timeoutSeconds: 1");
            let _ = writeln!(out, "  failureThreshold: {failures}");
        };
        probe(
            "startupProbe",
            "/startupz",
            startup_period,
            startup_failures,
        );
        probe(
            "readinessProbe",
            "/readyz",
            readiness_period,
            readiness_failures,
        );
        probe(
            "livenessProbe",
            "/livez",
            liveness_period,
            liveness_failures,
        );
        let _ = writeln!(
            out,
            "# pod spec: terminationGracePeriodSeconds: {grace}  # drain delay {}s + deadline {}s + 5s",
            ceil_secs(inner.drain_delay),
            ceil_secs(inner.drain_deadline)
        );
        out
    }
}
