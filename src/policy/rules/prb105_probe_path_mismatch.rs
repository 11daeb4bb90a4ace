use super::handler::{Handler, handler};
use super::{Cx, Finding, ProbeKind, rule};

rule! {
    /// ## What it does
    /// Flags HTTP probes whose path differs from the one the policy sets
    /// (`probes.readiness.path`, `probes.liveness.path`,
    /// `probes.startup.path`).
    ///
    /// ## Why it matters
    /// A platform that standardises on `/livez` and `/readyz` (as
    /// kube-apiserver does) knows what each probe checks: shallow for
    /// liveness, deep for readiness. A probe on `/health` or `/` could check
    /// anything, often the wrong thing.
    ///
    /// ## Example
    /// ```yaml
    /// # probes.readiness.path: /readyz
    /// readinessProbe: {httpGet: {path: /health, port: 8080}}
    /// ```
    ///
    /// ## Fix
    /// Serve the standard endpoints (`probity-probe` does) and point the
    /// probes at them.
    id: "PRB105",
    name: "probe-path-mismatch",
    help: "point the probe at the path the policy names",
}

pub(super) fn check(cx: &Cx<'_>, out: &mut Vec<Finding>) {
    for kind in ProbeKind::ALL {
        let (Some(want), Some(probe)) = (kind.rule(cx.policy).path.as_deref(), cx.probe(kind))
        else {
            continue;
        };
        if let Handler::Http { path, .. } = handler(probe, cx.container)
            && path != want
        {
            let message = format!(
                "{} of {} probes {path}, the policy expects {want}",
                kind.field(),
                cx.container.name
            );
            out.push(cx.finding(&META, &format!("{}/httpGet/path", kind.field()), message));
        }
    }
}
