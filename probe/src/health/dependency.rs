//! The dependency inventory: every outbound edge answers what its timeout
//! is, what trips its breaker and what the caller does when it trips.

use std::time::Duration;

use crate::breaker::CircuitBreaker;
use crate::bulkhead::Bulkhead;

/// How the fleet sees a dependency, for `/dependencies`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FleetView {
    pub(crate) replicas: usize,
    pub(crate) open: usize,
    pub(crate) required: usize,
}

/// One outbound dependency and the defences around it.
///
/// ```
/// use std::time::Duration;
/// use probity_probe::breaker::CircuitBreaker;
/// use probity_probe::bulkhead::Bulkhead;
/// use probity_probe::health::{Dependency, Health};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let payments = Dependency::new("payments")
///     .timeout(Duration::from_millis(800))
///     .breaker(CircuitBreaker::builder().build().expect("valid"))
///     .bulkhead(Bulkhead::new(32, Duration::ZERO))
///     .retry("2 attempts, 20% retry budget")
///     .fallback("queue the charge and confirm by email");
/// let health = Health::builder().dependency(payments).build().expect("valid");
/// # drop(health);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Dependency {
    pub(crate) name: String,
    pub(crate) timeout: Option<Duration>,
    pub(crate) breaker: Option<CircuitBreaker>,
    pub(crate) bulkhead: Option<Bulkhead>,
    pub(crate) retry: Option<String>,
    pub(crate) fallback: Option<String>,
    pub(crate) critical: bool,
}

impl Dependency {
    /// A dependency called `name` (a-z, 0-9, `-`, `_`, `.`).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            timeout: None,
            breaker: None,
            bulkhead: None,
            retry: None,
            fallback: None,
            critical: false,
        }
    }

    /// Its share of the deadline: the timeout of one call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The breaker guarding it; its state shows in `/readyz?verbose`.
    pub fn breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// The bulkhead bounding it; shown in `/readyz` as
    /// `bulkhead:<name>`, failing readiness when full only for a
    /// [critical](Dependency::critical) dependency.
    pub fn bulkhead(mut self, bulkhead: Bulkhead) -> Self {
        self.bulkhead = Some(bulkhead);
        self
    }

    /// How calls are retried, in words.
    pub fn retry(mut self, policy: impl Into<String>) -> Self {
        self.retry = Some(policy.into());
        self
    }

    /// What the caller does when the breaker is open, in words.
    pub fn fallback(mut self, what: impl Into<String>) -> Self {
        self.fallback = Some(what.into());
        self
    }

    /// An open breaker or a full bulkhead fails readiness. Off by
    /// default: either usually means the service is coping (failing fast,
    /// serving a fallback), and when the dependency is shared every replica
    /// would leave rotation together, taking the endpoints that do not
    /// need it down too.
    pub fn critical(mut self) -> Self {
        self.critical = true;
        self
    }

    /// What is missing: `no timeout`, `no fallback` (with a breaker but
    /// nothing to do when it opens), `no breaker`.
    pub fn problems(&self) -> Vec<&'static str> {
        let mut problems = Vec::new();
        if self.timeout.is_none() {
            problems.push("no timeout");
        }
        if self.breaker.is_none() {
            problems.push("no breaker");
        }
        if self.fallback.is_none() {
            problems.push("no fallback");
        }
        problems
    }

    pub(crate) fn to_json(&self, fleet: Option<FleetView>) -> serde_json::Value {
        let breaker = self.breaker.as_ref().map(|b| {
            let s = b.snapshot();
            let mut json = serde_json::json!({
                "state": b.state().as_str(),
                "trips": b.config().describe(),
                "window": {"calls": s.calls, "failures": s.failures, "slow": s.slow},
            });
            if let Some(v) = fleet {
                json["fleet"] = serde_json::json!({
                    "replicas": v.replicas,
                    "peersOpen": v.open,
                    "quorum": v.required,
                });
            }
            json
        });
        let bulkhead = self.bulkhead.as_ref().map(|b| {
            serde_json::json!({
                "maxConcurrent": b.max_concurrent(),
                "adaptive": b.is_adaptive(),
                "inUse": b.in_use(),
                "maxWaitSeconds": b.max_wait().as_secs_f64(),
            })
        });
        serde_json::json!({
            "name": self.name,
            "critical": self.critical,
            "timeoutSeconds": self.timeout.map(|t| t.as_secs_f64()),
            "breaker": breaker,
            "bulkhead": bulkhead,
            "retry": self.retry,
            "fallback": self.fallback,
            "problems": self.problems(),
        })
    }
}
