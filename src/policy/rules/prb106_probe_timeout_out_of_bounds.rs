use super::handler::Timing;
use super::{Cx, Finding, ProbeKind, rule};

rule! {
    /// ## What it does
    /// Flags probes whose `timeoutSeconds` (default 1) exceeds the policy's
    /// `maxTimeoutSeconds` (usually set for readiness).
    ///
    /// ## Why it matters
    /// A readiness probe that waits 30 s for an answer keeps a pod that
    /// cannot answer in rotation for 30 s per attempt. A slow answer is the
    /// answer: the endpoint should reply from cached check results in
    /// milliseconds, and the timeout should say so.
    ///
    /// ## Example
    /// ```yaml
    /// # probes.readiness.maxTimeoutSeconds: 5
    /// readinessProbe: {httpGet: {path: /readyz, port: 8080}, timeoutSeconds: 30}
    /// ```
    ///
    /// ## Fix
    /// Lower `timeoutSeconds`, and make the endpoint fast (run checks in the
    /// background, serve their last result).
    id: "PRB106",
    name: "probe-timeout-out-of-bounds",
    help: "lower timeoutSeconds; a probe endpoint should answer from cached results",
}

pub(super) fn check(cx: &Cx<'_>, out: &mut Vec<Finding>) {
    for kind in ProbeKind::ALL {
        let (Some(max), Some(probe)) = (kind.rule(cx.policy).max_timeout_seconds, cx.probe(kind))
        else {
            continue;
        };
        let timeout = Timing::of(probe).timeout;
        if timeout > max {
            let message = format!(
                "{} of {} has timeoutSeconds {timeout}, above the maximum of {max}",
                kind.field(),
                cx.container.name
            );
            out.push(cx.finding(&META, &format!("{}/timeoutSeconds", kind.field()), message));
        }
    }
}
