use super::handler::{Handler, Port, handler};
use super::{Cx, Finding, ProbeKind, rule};

rule! {
    /// ## What it does
    /// Flags probes aimed at a port the container does not declare: a named
    /// port missing from `ports`, or a number that is not one of the
    /// declared `containerPort`s (checked only when the container declares
    /// ports).
    ///
    /// ## Why it matters
    /// A probe on the wrong port fails forever: readiness never passes and
    /// the rollout stalls, or liveness restarts the pod in a loop. A renamed
    /// port is the usual cause, and nothing else catches it before deploy.
    ///
    /// ## Example
    /// ```yaml
    /// ports: [{name: http, containerPort: 8080}]
    /// readinessProbe: {httpGet: {path: /readyz, port: web}}
    /// ```
    ///
    /// ## Fix
    /// Use a declared port name, or declare the port the probe needs.
    id: "PRB109",
    name: "probe-port-not-declared",
    help: "probe a port declared in the container's ports",
}

pub(super) fn check(cx: &Cx<'_>, out: &mut Vec<Finding>) {
    let declared: Vec<i32> = cx
        .container
        .ports
        .iter()
        .map(|p| p.container_port)
        .collect();
    for kind in ProbeKind::ALL {
        let Some(probe) = cx.probe(kind) else {
            continue;
        };
        let (port, field) = match handler(probe, cx.container) {
            Handler::Http { port, .. } => (port, "httpGet/port"),
            Handler::Tcp { port, .. } => (port, "tcpSocket/port"),
            Handler::Grpc { port, .. } => (Port::Number(port), "grpc/port"),
            Handler::Exec { .. } | Handler::None => continue,
        };
        let problem = match port {
            Port::Unresolved(name) => {
                format!("named port {name:?}, which the container does not declare")
            }
            Port::Number(n) if !declared.is_empty() && !declared.contains(&n) => {
                format!("port {n}, which is not among the declared ports {declared:?}")
            }
            Port::Number(_) => continue,
        };
        let message = format!(
            "{} of {} targets {problem}",
            kind.field(),
            cx.container.name
        );
        out.push(cx.finding(&META, &format!("{}/{field}", kind.field()), message));
    }
}
