use super::handler::Timing;
use super::{Cx, Finding, ProbeKind, rule};

rule! {
    /// ## What it does
    /// Flags liveness probes whose failure window, `failureThreshold` x
    /// `periodSeconds` (defaults 3 x 10 s), is shorter than the policy's
    /// `probes.liveness.minFailureWindowSeconds`.
    ///
    /// ## Why it matters
    /// A restart is the most expensive thing the kubelet can do to a pod. A
    /// window of a few seconds restarts pods for a GC pause or a noisy
    /// neighbour, and under load those restarts cascade.
    ///
    /// ## Example
    /// ```yaml
    /// livenessProbe: {httpGet: {path: /livez, port: 8080}, periodSeconds: 2, failureThreshold: 1}
    /// ```
    ///
    /// ## Fix
    /// Raise `failureThreshold` or `periodSeconds` until the window reaches
    /// the minimum.
    id: "PRB107",
    name: "liveness-window-too-short",
    help: "raise failureThreshold x periodSeconds of the livenessProbe to the minimum",
}

pub(super) fn check(cx: &Cx<'_>, out: &mut Vec<Finding>) {
    let (Some(min), Some(probe)) = (
        cx.policy.probes.liveness.min_failure_window_seconds,
        cx.probe(ProbeKind::Liveness),
    ) else {
        return;
    };
    let t = Timing::of(probe);
    if t.failure_window() < i64::from(min) {
        let message = format!(
            "livenessProbe of {} restarts after {} failure{} x {}s = {}s, below the minimum of {min}s",
            cx.container.name,
            t.failure_threshold,
            if t.failure_threshold == 1 { "" } else { "s" },
            t.period,
            t.failure_window()
        );
        let field = if probe.failure_threshold.is_some() {
            "livenessProbe/failureThreshold"
        } else {
            "livenessProbe"
        };
        out.push(cx.finding(&META, field, message));
    }
}
