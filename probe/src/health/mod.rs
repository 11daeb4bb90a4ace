//! Health endpoints: an honest shallow `/livez`, a deep `/readyz`,
//! `/startupz`, and shutdown draining.
//!
//! A [`Health`] registry runs every check in the background on its own
//! jittered interval, one run at a time, bounded by its timeout. Probe
//! requests only read the cached results, so a probe costs the same
//! whether a dependency answers in 1 ms or hangs, and the kubelet cannot
//! flood a struggling dependency.
//!
//! | probe | passes when |
//! |---|---|
//! | `/livez` | the runtime makes progress, every heartbeat beat recently, process checks pass |
//! | `/readyz` | startup is done, no shutdown is under way, critical readiness checks pass with fresh results, no saturation source is saturated |
//! | `/startupz` | every startup check has succeeded once (they then stop running) |
//!
//! ```
//! use std::time::Duration;
//! use probity_probe::health::{CheckOptions, Health, TcpCheck};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let health = Health::builder()
//!     .readiness_with(
//!         "postgres",
//!         TcpCheck::new("127.0.0.1:5432"),
//!         CheckOptions::new().interval(Duration::from_secs(2)).debounce(3, 2),
//!     )
//!     .startup("migrations", || async { Ok::<(), String>(()) })
//!     .build()?;
//! let consumer = health.heartbeat("consumer-loop", Duration::from_secs(30));
//! consumer.beat();
//! let app: axum::Router = axum::Router::new().merge(health.router());
//! # drop(app);
//! # Ok(())
//! # }
//! ```

mod check;
mod dependency;
mod error;
#[cfg(feature = "grpc")]
mod grpc;
mod http;
mod liveness;
#[cfg(feature = "metrics")]
mod metrics;
mod recommend;
mod report;
mod runner;
mod saturation;
mod shutdown;
mod state;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

pub use check::{
    Check, CheckFuture, CheckKind, CheckOptions, Criticality, Failure, Process, TcpCheck, process,
};
pub use dependency::Dependency;
pub use error::Misconfigured;
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
#[cfg(feature = "grpc")]
pub use grpc::GrpcHealth;
pub use liveness::Heartbeat;
pub use recommend::ProbeTarget;
pub use report::{CheckReport, CheckStatus, Probe, Report};
pub use saturation::{Load, Saturation, Thresholds};
pub use shutdown::{Drain, Phase};

use liveness::{Beat, Stamp, Watchdog};
use saturation::Gate;
use state::CheckState;

/// Which probe a check serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `/livez`: the process only.
    Liveness,
    /// `/readyz`: whether this pod should get traffic.
    Readiness,
    /// `/startupz`: one-time initialisation; stops running once passed.
    Startup,
}

struct Registered {
    name: String,
    scope: Scope,
    options: CheckOptions,
    check: Arc<dyn Check>,
    state: Mutex<CheckState>,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("name", &self.name)
            .field("scope", &self.scope)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Inner {
    origin: Instant,
    checks: Vec<Registered>,
    gates: Vec<Gate>,
    dependencies: Vec<Dependency>,
    heartbeats: RwLock<Vec<Arc<Beat>>>,
    watchdog: Option<(Watchdog, Stamp)>,
    phase: watch::Sender<Phase>,
    signals: std::sync::Once,
    show_reasons: bool,
    drain_delay: Duration,
    drain_deadline: Duration,
    target: ProbeTarget,
    #[cfg(feature = "redis")]
    fleet: Option<crate::shared::Fleet>,
    /// Unknown `?exclude=` names already logged (bounded).
    unknown_excludes: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// Distinct unknown `?exclude=` names logged; later ones are not.
const LOGGED_UNKNOWN_EXCLUDES: usize = 32;

impl Inner {
    /// How the fleet sees the shared dependency `name`, if any.
    #[allow(
        clippy::unused_self,
        unused_variables,
        reason = "without the fleet there is none"
    )]
    fn fleet_view(&self, name: &str) -> Option<dependency::FleetView> {
        #[cfg(feature = "redis")]
        if let Some(v) = self.fleet.as_ref().and_then(|f| f.view(name)) {
            return Some(dependency::FleetView {
                replicas: v.replicas,
                open: v.open,
                required: v.required,
            });
        }
        None
    }

    /// Whether `name` is an unknown exclude not logged before (and there
    /// is room to remember it).
    fn note_unknown_exclude(&self, name: &str) -> bool {
        let mut seen = self
            .unknown_excludes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.len() < LOGGED_UNKNOWN_EXCLUDES && seen.insert(name.to_owned())
    }
}

/// The health registry. Cheap to clone; background checks stop when the
/// last clone is dropped.
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

/// Builds a [`Health`] registry; see [`Health::builder`].
pub struct HealthBuilder {
    checks: Vec<(String, Scope, CheckOptions, Arc<dyn Check>)>,
    gates: Vec<(String, Arc<dyn Saturation>, Thresholds)>,
    dependencies: Vec<Dependency>,
    watchdog: Option<Watchdog>,
    show_reasons: bool,
    drain_delay: Duration,
    drain_deadline: Duration,
    jitter: f64,
    seed: Option<u64>,
    target: ProbeTarget,
    #[cfg(feature = "redis")]
    fleet: Option<crate::shared::Fleet>,
}

impl std::fmt::Debug for HealthBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let checks: Vec<_> = self
            .checks
            .iter()
            .map(|(name, scope, ..)| (name, scope))
            .collect();
        let gates: Vec<_> = self.gates.iter().map(|(name, _, t)| (name, t)).collect();
        f.debug_struct("HealthBuilder")
            .field("checks", &checks)
            .field("saturation", &gates)
            .field("watchdog", &self.watchdog)
            .field("drain_delay", &self.drain_delay)
            .field("drain_deadline", &self.drain_deadline)
            .finish_non_exhaustive()
    }
}

impl Default for HealthBuilder {
    fn default() -> Self {
        Self {
            checks: Vec::new(),
            gates: Vec::new(),
            dependencies: Vec::new(),
            watchdog: Some(Watchdog::default()),
            show_reasons: false,
            drain_delay: Duration::from_secs(5),
            drain_deadline: Duration::from_secs(20),
            jitter: 0.1,
            seed: None,
            target: ProbeTarget::default(),
            #[cfg(feature = "redis")]
            fleet: None,
        }
    }
}

impl HealthBuilder {
    /// Registers a check with default [`CheckOptions`].
    pub fn check(self, scope: Scope, name: impl Into<String>, check: impl Check) -> Self {
        self.check_with(scope, name, check, CheckOptions::default())
    }

    /// Registers a check.
    pub fn check_with(
        mut self,
        scope: Scope,
        name: impl Into<String>,
        check: impl Check,
        options: CheckOptions,
    ) -> Self {
        self.checks
            .push((name.into(), scope, options, Arc::new(check)));
        self
    }

    /// A readiness check with default options.
    pub fn readiness(self, name: impl Into<String>, check: impl Check) -> Self {
        self.check(Scope::Readiness, name, check)
    }

    /// A readiness check.
    pub fn readiness_with(
        self,
        name: impl Into<String>,
        check: impl Check,
        options: CheckOptions,
    ) -> Self {
        self.check_with(Scope::Readiness, name, check, options)
    }

    /// A liveness check; it must be a [`process`] check.
    pub fn liveness(self, name: impl Into<String>, check: impl Check) -> Self {
        self.check(Scope::Liveness, name, check)
    }

    /// A startup check with default options, except that it runs every
    /// second until it first succeeds.
    pub fn startup(self, name: impl Into<String>, check: impl Check) -> Self {
        let options = CheckOptions::default()
            .interval(Duration::from_secs(1))
            .timeout(Duration::from_millis(900));
        self.check_with(Scope::Startup, name, check, options)
    }

    /// A startup check.
    pub fn startup_with(
        self,
        name: impl Into<String>,
        check: impl Check,
        options: CheckOptions,
    ) -> Self {
        self.check_with(Scope::Startup, name, check, options)
    }

    /// A saturation source for readiness with the default thresholds
    /// (unready at 0.9, ready again at 0.7).
    pub fn saturation(self, name: impl Into<String>, source: impl Saturation) -> Self {
        self.saturation_with(name, source, Thresholds::default())
    }

    /// A saturation source for readiness.
    pub fn saturation_with(
        mut self,
        name: impl Into<String>,
        source: impl Saturation,
        thresholds: Thresholds,
    ) -> Self {
        self.gates.push((name.into(), Arc::new(source), thresholds));
        self
    }

    /// Registers an outbound dependency: its breaker state appears in
    /// `/readyz` as `breaker:<name>` and its bulkhead as the saturation
    /// source `bulkhead:<name>` (an open breaker or a full bulkhead fails
    /// readiness only when the dependency is
    /// [critical](Dependency::critical); otherwise it shows as degraded),
    /// and the whole edge in `GET /dependencies`.
    pub fn dependency(mut self, dependency: Dependency) -> Self {
        self.dependencies.push(dependency);
        self
    }

    /// `/livez` fails when the Tokio runtime has not run the watchdog task
    /// for `max_stall` (default 10 s; the task ticks every 500 ms).
    pub fn watchdog(mut self, max_stall: Duration) -> Self {
        let period = (max_stall / 20).max(Duration::from_millis(1));
        self.watchdog = Some(Watchdog { period, max_stall });
        self
    }

    /// No runtime watchdog.
    pub fn without_watchdog(mut self) -> Self {
        self.watchdog = None;
        self
    }

    /// Show failure reasons in probe bodies. Off by default: reasons can
    /// carry hostnames and errors, and probe endpoints are often reachable
    /// more widely than logs. Reasons are always logged at transitions.
    pub fn show_reasons(mut self, show: bool) -> Self {
        self.show_reasons = show;
        self
    }

    /// After a shutdown signal, keep serving with `/readyz` failing for
    /// `delay` (default 5 s) so that endpoint removal reaches every load
    /// balancer, then stop accepting and give in-flight requests up to
    /// `deadline` (default 20 s).
    pub fn drain(mut self, delay: Duration, deadline: Duration) -> Self {
        self.drain_delay = delay;
        self.drain_deadline = deadline;
        self
    }

    /// Jitter of check intervals, as a fraction (default 0.1: each wait is
    /// the interval ±10%), and an optional seed that makes it repeatable.
    pub fn jitter(mut self, fraction: f64, seed: Option<u64>) -> Self {
        self.jitter = fraction.clamp(0.0, 1.0);
        self.seed = seed;
        self
    }

    /// The fleet this replica shares breaker state with: `/readyz` gains
    /// the non-critical line `shared` (degraded while Redis is
    /// unreachable and every breaker decides alone), breaker lines and
    /// `/dependencies` show how many live replicas report each shared
    /// dependency open, and readiness checks with a
    /// [fleet floor](CheckOptions::fleet_floor) publish their state to the
    /// fleet.
    #[cfg(feature = "redis")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
    pub fn fleet(mut self, fleet: crate::shared::Fleet) -> Self {
        self.fleet = Some(fleet);
        self
    }

    /// Where the kubelet reaches the probes, for
    /// [`Health::recommended_probes`] (default: HTTP on port 8080).
    pub fn probe_target(mut self, target: ProbeTarget) -> Self {
        self.target = target;
        self
    }

    /// Validates the configuration and starts the background checks and the
    /// watchdog on the current Tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Misconfigured`] when a dependency check is registered for liveness,
    /// a name repeats or is not path-safe, a duration or debounce threshold
    /// is zero, a timeout is not below its interval, saturation thresholds
    /// are inverted, or no Tokio runtime is running.
    pub fn build(self) -> Result<Health, Misconfigured> {
        let mut names = std::collections::HashSet::new();
        let mut claim = |name: &str| -> Result<(), Misconfigured> {
            if !valid_name(name) {
                return Err(Misconfigured::InvalidName { name: name.into() });
            }
            if !names.insert(name.to_owned()) {
                return Err(Misconfigured::DuplicateName { name: name.into() });
            }
            Ok(())
        };
        for (name, scope, options, check) in &self.checks {
            claim(name)?;
            if *scope == Scope::Liveness && check.kind() == CheckKind::Dependency {
                return Err(Misconfigured::DependencyInLiveness { name: name.clone() });
            }
            validate_options(name, options)?;
        }
        for dep in &self.dependencies {
            claim(&dep.name)?;
        }
        for (name, _, thresholds) in &self.gates {
            claim(name)?;
            if !thresholds.is_valid() {
                return Err(Misconfigured::Thresholds {
                    name: name.clone(),
                    enter: thresholds.enter,
                    exit: thresholds.exit,
                });
            }
        }
        #[cfg(feature = "redis")]
        if self.fleet.is_some() {
            claim("shared")?;
        }
        for reserved in ["watchdog", "startup", "shutdown"] {
            claim(reserved)?;
        }
        if let Some(w) = &self.watchdog
            && w.max_stall.is_zero()
        {
            return Err(Misconfigured::ZeroDuration {
                name: "watchdog".into(),
                what: "max_stall",
            });
        }
        if self.drain_deadline.is_zero() {
            return Err(Misconfigured::ZeroDuration {
                name: "drain".into(),
                what: "deadline",
            });
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| Misconfigured::NoRuntime)?;

        let origin = Instant::now();
        let inner = Arc::new(Inner {
            origin,
            checks: self
                .checks
                .into_iter()
                .map(|(name, scope, options, check)| Registered {
                    state: Mutex::new(CheckState::new(
                        options.failures_to_fail,
                        options.successes_to_recover,
                    )),
                    name,
                    scope,
                    options,
                    check,
                })
                .collect(),
            gates: self
                .gates
                .into_iter()
                .map(|(name, source, thresholds)| Gate::new(name, source, thresholds))
                .chain(self.dependencies.iter().filter_map(|d| {
                    let bulkhead: Arc<dyn Saturation> = Arc::new(d.bulkhead.clone()?);
                    let gate = Gate::new(
                        format!("bulkhead:{}", d.name),
                        bulkhead,
                        Thresholds::default(),
                    );
                    Some(if d.critical {
                        gate
                    } else {
                        gate.non_critical()
                    })
                }))
                .collect(),
            dependencies: self.dependencies,
            heartbeats: RwLock::new(Vec::new()),
            watchdog: self.watchdog.map(|w| (w, Stamp::new(origin))),
            phase: watch::Sender::new(Phase::Serving),
            signals: std::sync::Once::new(),
            show_reasons: self.show_reasons,
            drain_delay: self.drain_delay,
            drain_deadline: self.drain_deadline,
            target: self.target,
            #[cfg(feature = "redis")]
            fleet: self.fleet,
            unknown_excludes: std::sync::Mutex::default(),
        });
        let mut rng = match self.seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        for index in 0..inner.checks.len() {
            let jitter = runner::Jitter::new(self.jitter, rng.u64(..));
            runtime.spawn(runner::run_check(Arc::downgrade(&inner), index, jitter));
        }
        if inner.watchdog.is_some() {
            runtime.spawn(runner::run_watchdog(Arc::downgrade(&inner)));
        }
        Ok(Health { inner })
    }
}

fn valid_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

fn validate_options(name: &str, o: &CheckOptions) -> Result<(), Misconfigured> {
    for (what, d) in [("interval", o.interval), ("timeout", o.timeout)] {
        if d.is_zero() {
            return Err(Misconfigured::ZeroDuration {
                name: name.into(),
                what,
            });
        }
    }
    if o.failures_to_fail == 0 || o.successes_to_recover == 0 {
        return Err(Misconfigured::ZeroThreshold { name: name.into() });
    }
    if o.timeout >= o.interval {
        return Err(Misconfigured::TimeoutNotBelowInterval {
            name: name.into(),
            timeout: o.timeout,
            interval: o.interval,
        });
    }
    Ok(())
}

impl Health {
    /// Starts a registry; finish with [`HealthBuilder::build`].
    pub fn builder() -> HealthBuilder {
        HealthBuilder::default()
    }

    /// Registers a progress heartbeat: `/livez` fails when the returned
    /// handle has not been beaten for `max_silence`. The clock starts now.
    ///
    /// Registering a name twice returns the existing heartbeat.
    pub fn heartbeat(&self, name: impl Into<String>, max_silence: Duration) -> Heartbeat {
        let name = name.into();
        let mut beats = self
            .inner
            .heartbeats
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(existing) = beats.iter().find(|b| b.name == name) {
            return Heartbeat {
                inner: Arc::clone(existing),
            };
        }
        let beat = Arc::new(Beat {
            name,
            max_silence,
            stamp: Stamp::new(self.inner.origin),
        });
        beats.push(Arc::clone(&beat));
        Heartbeat { inner: beat }
    }

    /// Evaluates a probe from the cached results, as the endpoints do.
    /// `exclude` names checks to leave out (`?exclude=`).
    pub fn report(&self, probe: Probe, exclude: &[&str]) -> Report {
        report::evaluate(&self.inner, probe, exclude, None)
    }

    /// The current shutdown phase.
    pub fn phase(&self) -> Phase {
        *self.inner.phase.borrow()
    }
}
