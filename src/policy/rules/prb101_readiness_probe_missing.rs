use super::{Cx, Finding, ProbeKind, rule};
use crate::policy::spec::Profile;

rule! {
    /// ## What it does
    /// Flags containers of a Server workload without a readiness probe when
    /// the policy requires one (`probes.readiness.required`). Consumer
    /// workloads receive no traffic through a Service and are exempt.
    ///
    /// ## Why it matters
    /// Without readiness, a pod gets traffic the moment its process starts,
    /// and keeps getting it while its dependencies are down or its pools are
    /// full. Readiness is how a pod says "not now" without being restarted.
    ///
    /// ## Example
    /// ```yaml
    /// containers:
    ///   - name: web
    ///     image: ghcr.io/acme/web:1.4.2@sha256:…
    ///     livenessProbe: {httpGet: {path: /livez, port: 8080}}
    /// ```
    ///
    /// ## Fix
    /// Add a readiness probe on an endpoint that checks what the pod needs to
    /// serve: `readinessProbe: {httpGet: {path: /readyz, port: 8080}}`.
    id: "PRB101",
    name: "readiness-probe-missing",
    help: "add readinessProbe: {httpGet: {path: /readyz, port: <port>}}",
}

pub(super) fn check(cx: &Cx<'_>, out: &mut Vec<Finding>) {
    let required = cx.policy.profile == Profile::Server && cx.policy.probes.readiness.required;
    if required && cx.probe(ProbeKind::Readiness).is_none() {
        let message = format!("container {} has no readinessProbe", cx.container.name);
        out.push(cx.finding(&META, "", message));
    }
}
