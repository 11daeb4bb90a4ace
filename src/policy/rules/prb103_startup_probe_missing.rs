use super::{Cx, Finding, ProbeKind, rule};
use crate::policy::spec::Profile;

rule! {
    /// ## What it does
    /// Flags containers without a startup probe when the policy requires one
    /// (`probes.startup.required`, and always for the Consumer profile).
    ///
    /// ## Why it matters
    /// Without a startup probe, liveness must tolerate the slowest start
    /// (cache warm-up, migrations), which makes it slow to catch a hang for
    /// the rest of the pod's life. A startup probe holds liveness off until
    /// start-up is done, so liveness can stay tight.
    ///
    /// ## Example
    /// ```yaml
    /// containers:
    ///   - name: worker
    ///     livenessProbe: {httpGet: {path: /livez, port: 8080}, initialDelaySeconds: 120}
    /// ```
    ///
    /// ## Fix
    /// `startupProbe: {httpGet: {path: /startupz, port: 8080}, periodSeconds: 5,
    /// failureThreshold: 60}` and drop the liveness initial delay.
    id: "PRB103",
    name: "startup-probe-missing",
    help: "add startupProbe: {httpGet: {path: /startupz, port: <port>}, failureThreshold: <n>}",
}

pub(super) fn check(cx: &Cx<'_>, out: &mut Vec<Finding>) {
    let required = cx.policy.profile == Profile::Consumer || cx.policy.probes.startup.required;
    if required && cx.probe(ProbeKind::Startup).is_none() {
        let message = format!("container {} has no startupProbe", cx.container.name);
        out.push(cx.finding(&META, "", message));
    }
}
