use super::handler::{Handler, handler};
use super::{Cx, Finding, ProbeKind, rule};

rule! {
    /// ## What it does
    /// Flags containers whose liveness probe uses the same handler as their
    /// readiness probe: the same HTTP path and port (named ports resolved),
    /// the same TCP port, the same gRPC port and service, or the same
    /// command.
    ///
    /// ## Why it matters
    /// Readiness is deep: it fails when a dependency is slow or a pool is
    /// full, and that is right, because it only takes the pod out of
    /// rotation. When liveness checks the same thing, a slow dependency
    /// makes the kubelet restart every healthy replica at once, and the
    /// restarts add cold caches and connection storms to the outage.
    ///
    /// ## Example
    /// ```yaml
    /// readinessProbe: {httpGet: {path: /health, port: http}}
    /// livenessProbe:  {httpGet: {path: /health, port: 8080}}   # same handler
    /// ```
    ///
    /// ## Fix
    /// Point liveness at a shallow endpoint that reports only on the process
    /// (`/livez`), and keep dependency checks in readiness (`/readyz`).
    id: "PRB104",
    name: "liveness-same-as-readiness",
    help: "point livenessProbe at a shallow endpoint (/livez) that does not check dependencies",
}

pub(super) fn check(cx: &Cx<'_>, out: &mut Vec<Finding>) {
    if !cx.policy.probes.distinct_liveness {
        return;
    }
    let (Some(live), Some(ready)) = (
        cx.probe(ProbeKind::Liveness),
        cx.probe(ProbeKind::Readiness),
    ) else {
        return;
    };
    let handler_live = handler(live, cx.container);
    if handler_live != Handler::None && handler_live == handler(ready, cx.container) {
        let message = format!(
            "livenessProbe of {} checks the same {} as its readinessProbe: a slow dependency \
             would restart healthy pods",
            cx.container.name,
            describe(&handler_live)
        );
        out.push(cx.finding(&META, ProbeKind::Liveness.field(), message));
    }
}

fn describe(h: &Handler) -> String {
    use super::handler::Port;
    let port = |p: &Port| match p {
        Port::Number(n) => n.to_string(),
        Port::Unresolved(name) => name.clone(),
    };
    match h {
        Handler::Http { path, port: p, .. } => format!("HTTP endpoint {path} on port {}", port(p)),
        Handler::Tcp { port: p, .. } => format!("TCP port {}", port(p)),
        Handler::Grpc { port, service } if service.is_empty() => {
            format!("gRPC health on port {port}")
        }
        Handler::Grpc { port, service } => format!("gRPC service {service:?} on port {port}"),
        Handler::Exec { argv } => format!("command {argv:?}"),
        Handler::None => "handler".to_owned(),
    }
}
