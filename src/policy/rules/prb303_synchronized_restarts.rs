use super::rule;

rule! {
    /// ## What it does
    /// Watches `restartCount` in pod status and flags a workload when most
    /// of its replicas (more than half, at least two) restarted within one
    /// window (5 minutes by default). A runtime rule: the operator
    /// evaluates it from pod status; `probity lint` cannot see it.
    ///
    /// ## Why it matters
    /// Replicas rarely fail independently at the same moment. When they
    /// restart together, the usual cause is a liveness probe that checks a
    /// shared dependency: the database slows down, every liveness probe
    /// times out, and the kubelet restarts healthy pods, adding cold starts
    /// and reconnect storms to the outage.
    ///
    /// ## Example
    /// ```yaml
    /// livenessProbe:
    ///   httpGet: {path: /health, port: 8080}   # /health pings the database
    /// ```
    ///
    /// ## Fix
    /// Make liveness shallow (the process itself: `/livez`) and move
    /// dependency checks to readiness, which takes a pod out of rotation
    /// without restarting it.
    id: "PRB303",
    name: "synchronized-restarts",
    help: "make liveness check only the process; put dependency checks in readiness",
}
