use super::{Cx, Finding, ProbeKind, rule};
use crate::policy::spec::Profile;

rule! {
    /// ## What it does
    /// Flags containers without a liveness probe when the policy requires
    /// one (`probes.liveness.required`, and always for the Consumer profile).
    ///
    /// ## Why it matters
    /// A process can be running and stuck: a deadlocked runtime, a consumer
    /// loop that stopped polling. Without liveness the kubelet never notices,
    /// and for a queue consumer nothing else will either, since no Service
    /// routes around it.
    ///
    /// ## Example
    /// ```yaml
    /// containers:
    ///   - name: worker
    ///     image: ghcr.io/acme/worker:2.0@sha256:…
    /// ```
    ///
    /// ## Fix
    /// Add a shallow liveness probe that reports only on the process itself
    /// (runtime progress, loop heartbeats), never on dependencies:
    /// `livenessProbe: {httpGet: {path: /livez, port: 8080}}`.
    id: "PRB102",
    name: "liveness-probe-missing",
    help: "add a shallow livenessProbe: {httpGet: {path: /livez, port: <port>}}",
}

pub(super) fn check(cx: &Cx<'_>, out: &mut Vec<Finding>) {
    let required = cx.policy.profile == Profile::Consumer || cx.policy.probes.liveness.required;
    if required && cx.probe(ProbeKind::Liveness).is_none() {
        let message = format!("container {} has no livenessProbe", cx.container.name);
        out.push(cx.finding(&META, "", message));
    }
}
