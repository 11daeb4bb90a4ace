use super::handler::Timing;
use super::{Cx, Finding, ProbeKind, rule};

rule! {
    /// ## What it does
    /// Compares how long each probe takes to act on a pod that stopped
    /// answering: `failureThreshold` x `periodSeconds` + `timeoutSeconds`.
    /// Flags liveness when it acts sooner than readiness. Without a startup
    /// probe the initial delays count too, since both probes then start
    /// together.
    ///
    /// ## Why it matters
    /// An overloaded pod answers probes slowly. Readiness should take it out
    /// of rotation so it can recover; if liveness fires first, the kubelet
    /// restarts a pod that only needed a breather, and its load moves to the
    /// next replica, which then fails the same way.
    ///
    /// ## Example
    /// ```yaml
    /// readinessProbe: {httpGet: {path: /readyz, port: 8080}, periodSeconds: 10, failureThreshold: 6}
    /// livenessProbe:  {httpGet: {path: /livez,  port: 8080}, periodSeconds: 5,  failureThreshold: 3}
    /// ```
    /// Readiness needs 61 s, liveness restarts after 16 s.
    ///
    /// ## Fix
    /// Give liveness the longer window: raise its `failureThreshold` or
    /// `periodSeconds`, or lower readiness'.
    id: "PRB108",
    name: "liveness-fires-before-readiness",
    help: "make the livenessProbe window (failureThreshold x periodSeconds + timeout) the longer one",
}

pub(super) fn check(cx: &Cx<'_>, out: &mut Vec<Finding>) {
    if !cx.policy.probes.liveness_outlasts_readiness {
        return;
    }
    let (Some(live), Some(ready)) = (
        cx.probe(ProbeKind::Liveness),
        cx.probe(ProbeKind::Readiness),
    ) else {
        return;
    };
    let (l, r) = (Timing::of(live), Timing::of(ready));
    let name = &cx.container.name;
    let message = if l.time_to_fail() < r.time_to_fail() {
        format!(
            "livenessProbe of {name} restarts an unresponsive pod after {}s, before readinessProbe \
             takes it out of rotation ({}s)",
            l.time_to_fail(),
            r.time_to_fail()
        )
    } else if cx.probe(ProbeKind::Startup).is_none()
        && i64::from(l.initial_delay) + l.time_to_fail()
            < i64::from(r.initial_delay) + r.time_to_fail()
    {
        format!(
            "livenessProbe of {name} can restart a starting pod after {}s, before readinessProbe \
             has judged it ({}s, initial delays included)",
            i64::from(l.initial_delay) + l.time_to_fail(),
            i64::from(r.initial_delay) + r.time_to_fail()
        )
    } else {
        return;
    };
    out.push(cx.finding(&META, ProbeKind::Liveness.field(), message));
}
