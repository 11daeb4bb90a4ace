//! What a check is: the [`Check`] trait, its options, and the checks that
//! ship with the crate.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

/// The future a [`Check`] returns.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Failure>> + Send + 'a>>;

/// Why a check failed. Shown in logs at the transition; withheld from probe
/// bodies unless the registry opts in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure(String);

impl Failure {
    /// A failure with this reason.
    pub fn new(reason: impl fmt::Display) -> Self {
        Self(reason.to_string())
    }

    /// The reason text.
    pub fn reason(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a check looks at. Liveness accepts only [`CheckKind::Process`]: a
/// liveness probe that depends on another service restarts healthy pods
/// when that service slows down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckKind {
    /// Talks to something outside the process (database, broker, HTTP API).
    Dependency,
    /// Looks only at the process itself (a deadlock detector, a local file).
    Process,
}

/// A health check, run in the background by the registry; probes read its
/// last result and never run it.
///
/// Async closures returning `Result<(), E: Display>` are checks of kind
/// [`CheckKind::Dependency`]; wrap one in [`process`] to declare that it
/// looks only at the process.
pub trait Check: Send + Sync + 'static {
    /// Runs the check once. The registry bounds it with the check's timeout
    /// and drops it when the timeout elapses.
    fn check(&self) -> CheckFuture<'_>;

    /// What the check looks at; [`CheckKind::Dependency`] unless overridden.
    fn kind(&self) -> CheckKind {
        CheckKind::Dependency
    }
}

impl<F, Fut, E> Check for F
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: fmt::Display,
{
    fn check(&self) -> CheckFuture<'_> {
        let fut = self();
        Box::pin(async move { fut.await.map_err(Failure::new) })
    }
}

/// A check that looks only at the process, so it may serve liveness.
#[derive(Debug, Clone)]
pub struct Process<C>(C);

/// Declares that `check` looks only at the process itself.
///
/// ```
/// use probity_probe::health::{process, Health};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let health = Health::builder()
///     .liveness("config-readable", process(|| async {
///         std::fs::metadata("/").map(|_| ())
///     }))
///     .build()
///     .expect("a process check may serve liveness");
/// # drop(health);
/// # }
/// ```
pub fn process<C: Check>(check: C) -> Process<C> {
    Process(check)
}

impl<C: Check> Check for Process<C> {
    fn check(&self) -> CheckFuture<'_> {
        self.0.check()
    }

    fn kind(&self) -> CheckKind {
        CheckKind::Process
    }
}

/// Succeeds when a TCP connection to the address opens: a cheap
/// reachability check for a database, cache or broker.
#[derive(Debug, Clone)]
pub struct TcpCheck {
    addr: String,
}

impl TcpCheck {
    /// Checks `addr` (`host:port`, resolved on every run).
    pub fn new(addr: impl Into<String>) -> Self {
        Self { addr: addr.into() }
    }
}

impl From<SocketAddr> for TcpCheck {
    fn from(addr: SocketAddr) -> Self {
        Self::new(addr.to_string())
    }
}

impl Check for TcpCheck {
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(async move {
            tokio::net::TcpStream::connect(&self.addr)
                .await
                .map(drop)
                .map_err(|e| Failure::new(format_args!("connect {}: {e}", self.addr)))
        })
    }
}

/// Whether a check fails its probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Criticality {
    /// A failure fails the probe.
    #[default]
    Critical,
    /// A failure is reported as degraded; the probe still passes.
    NonCritical,
}

/// How often a check runs, how long it may take and how it is debounced.
///
/// Defaults: interval 5 s (jittered by up to 10%), timeout 1 s, critical,
/// fail after 3 consecutive failures, recover after 1 success, results
/// stale after 3 intervals plus the timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckOptions {
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) criticality: Criticality,
    pub(crate) failures_to_fail: u32,
    pub(crate) successes_to_recover: u32,
    pub(crate) stale_after: Option<Duration>,
    /// Share of live replicas, in thousandths, that failing together makes
    /// a failure shared (degraded) rather than this replica's own.
    pub(crate) fleet_floor: Option<u16>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            criticality: Criticality::Critical,
            failures_to_fail: 3,
            successes_to_recover: 1,
            stale_after: None,
            fleet_floor: None,
        }
    }
}

impl CheckOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Time between the end of one run and the start of the next, before
    /// jitter.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// A run that takes longer fails with reason `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A fleet floor for a critical readiness check (needs
    /// [`HealthBuilder::fleet`](super::HealthBuilder::fleet)): while at
    /// least `share` of the live replicas, this one included and at least
    /// two, fail this check together, the failure is the fleet's, not this
    /// replica's, and is reported as degraded instead of failing readiness.
    /// Taking every endpoint out of the Service would turn a shared,
    /// partial outage into a total one (Envoy's panic threshold reasons the
    /// same way). A replica that fails it alone still leaves rotation.
    /// Without a reachable fleet the check fails as usual.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn fleet_floor(mut self, share: f64) -> Self {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "clamped to [0, 1000] first"
        )]
        let per_mille = (share.clamp(0.0, 1.0) * 1000.0).round() as u16;
        self.fleet_floor = Some(per_mille.max(1));
        self
    }

    /// Report failures as degraded without failing the probe.
    pub fn non_critical(mut self) -> Self {
        self.criticality = Criticality::NonCritical;
        self
    }

    /// Fail after `failures` consecutive failed runs; recover after
    /// `successes` consecutive good ones.
    pub fn debounce(mut self, failures: u32, successes: u32) -> Self {
        self.failures_to_fail = failures;
        self.successes_to_recover = successes;
        self
    }

    /// A result older than this fails readiness (default: 3 intervals plus
    /// the timeout).
    pub fn stale_after(mut self, age: Duration) -> Self {
        self.stale_after = Some(age);
        self
    }

    /// The staleness bound in effect.
    pub(crate) fn staleness(&self) -> Duration {
        self.stale_after.unwrap_or(self.interval * 3 + self.timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closures_are_dependency_checks_and_process_overrides() {
        let dep = || async { Err::<(), _>("refused") };
        assert_eq!(dep.kind(), CheckKind::Dependency);
        assert_eq!(dep.check().await, Err(Failure::new("refused")));
        let own = process(|| async { Ok::<(), String>(()) });
        assert_eq!(own.kind(), CheckKind::Process);
        assert_eq!(own.check().await, Ok(()));
    }

    #[tokio::test]
    async fn tcp_check_reports_the_address_it_could_not_reach() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        assert_eq!(TcpCheck::from(addr).check().await, Ok(()));
        drop(listener);
        let err = TcpCheck::from(addr).check().await.expect_err("closed port");
        assert!(
            err.reason().starts_with(&format!("connect {addr}: ")),
            "{err}"
        );
    }

    #[test]
    fn staleness_defaults_to_three_intervals_plus_timeout() {
        let o = CheckOptions::new()
            .interval(Duration::from_secs(2))
            .timeout(Duration::from_millis(500));
        assert_eq!(o.staleness(), Duration::from_millis(6500));
        assert_eq!(
            o.stale_after(Duration::from_secs(1)).staleness(),
            Duration::from_secs(1)
        );
    }
}
