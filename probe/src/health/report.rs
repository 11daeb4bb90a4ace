//! Evaluating a probe from cached results: O(number of checks), no I/O.

use std::sync::PoisonError;
use std::time::Duration;

use tokio::time::Instant;

use super::state::Status;
use super::{Criticality, Inner, Phase, Scope};

/// One of the three probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `/livez`
    Liveness,
    /// `/readyz`
    Readiness,
    /// `/startupz`
    Startup,
}

impl Probe {
    /// The endpoint name: `livez`, `readyz` or `startupz`.
    pub fn path_name(self) -> &'static str {
        match self {
            Probe::Liveness => "livez",
            Probe::Readiness => "readyz",
            Probe::Startup => "startupz",
        }
    }
}

/// The status of one line of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckStatus {
    /// Passing.
    Ok,
    /// Failing; fails the probe.
    Failed,
    /// A non-critical check failing: reported, does not fail the probe.
    Degraded,
    /// Left out with `?exclude=`.
    Excluded,
}

impl CheckStatus {
    /// `ok`, `failed`, `degraded` or `excluded`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Failed => "failed",
            CheckStatus::Degraded => "degraded",
            CheckStatus::Excluded => "excluded",
        }
    }
}

/// One check's line in a probe.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    /// The check's name.
    pub name: String,
    /// Its status for this probe.
    pub status: CheckStatus,
    /// Why it is failing or degraded, when known.
    pub reason: Option<String>,
    /// Extra state shown even when passing (a breaker's `closed`).
    pub detail: Option<String>,
    /// Age of the result the status comes from, for background checks.
    pub age: Option<Duration>,
    /// How long the last run took, for background checks.
    pub duration: Option<Duration>,
    /// Consecutive failed runs, for background checks.
    pub consecutive_failures: u32,
}

/// A probe's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Which probe.
    pub probe: Probe,
    /// Whether the probe passes.
    pub ok: bool,
    /// Every line, in registration order.
    pub checks: Vec<CheckReport>,
    /// `?exclude=` names that matched nothing.
    pub unknown_excludes: Vec<String>,
}

fn line(name: &str, failure: Option<String>) -> CheckReport {
    CheckReport {
        name: name.to_owned(),
        status: if failure.is_some() {
            CheckStatus::Failed
        } else {
            CheckStatus::Ok
        },
        reason: failure,
        detail: None,
        age: None,
        duration: None,
        consecutive_failures: 0,
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Evaluates `probe`. With `only`, the report holds that one line (or none
/// when no such check exists for the probe).
pub(crate) fn evaluate(
    inner: &Inner,
    probe: Probe,
    exclude: &[&str],
    only: Option<&str>,
) -> Report {
    let now = Instant::now();
    let mut checks = Vec::new();
    match probe {
        Probe::Liveness => {
            if let Some((watchdog, stamp)) = &inner.watchdog {
                let silence = stamp.silence(now);
                let stalled = silence > watchdog.max_stall;
                if stamp.flag(stalled) {
                    if stalled {
                        tracing::error!(stalled_for = %secs(silence), "tokio runtime stalled: liveness failing");
                    } else {
                        tracing::info!("tokio runtime making progress again");
                    }
                }
                checks.push(line(
                    "watchdog",
                    stalled.then(|| format!("runtime made no progress for {}", secs(silence))),
                ));
            }
            let beats = inner
                .heartbeats
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            for beat in beats.iter() {
                let silence = beat.stamp.silence(now);
                let silent = silence > beat.max_silence;
                if beat.stamp.flag(silent) {
                    if silent {
                        tracing::error!(heartbeat = %beat.name, silent_for = %secs(silence), "heartbeat silent: liveness failing");
                    } else {
                        tracing::info!(heartbeat = %beat.name, "heartbeat resumed");
                    }
                }
                checks.push(line(
                    &beat.name,
                    silent.then(|| format!("no beat for {}", secs(silence))),
                ));
            }
            drop(beats);
            background(inner, Scope::Liveness, now, &mut checks);
        }
        Probe::Readiness => {
            let pending_startup: Vec<&str> = inner
                .checks
                .iter()
                .filter(|c| c.scope == Scope::Startup)
                .filter(|c| {
                    !c.state
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .ever_succeeded
                })
                .map(|c| c.name.as_str())
                .collect();
            if inner.checks.iter().any(|c| c.scope == Scope::Startup) {
                checks.push(line(
                    "startup",
                    (!pending_startup.is_empty())
                        .then(|| format!("waiting for {}", pending_startup.join(", "))),
                ));
            }
            background(inner, Scope::Readiness, now, &mut checks);
            for gate in &inner.gates {
                let (load, saturated, changed) = gate.evaluate();
                if changed {
                    if saturated {
                        let effect = if gate.critical {
                            "readiness failing"
                        } else {
                            "reported, readiness unaffected"
                        };
                        tracing::warn!(source = %gate.name, in_use = load.in_use, capacity = load.capacity, effect, "saturated");
                    } else {
                        tracing::info!(source = %gate.name, in_use = load.in_use, capacity = load.capacity, "no longer saturated");
                    }
                }
                let mut report = line(
                    &gate.name,
                    saturated
                        .then(|| format!("saturated: {} of {} in use", load.in_use, load.capacity)),
                );
                if saturated && !gate.critical {
                    report.status = CheckStatus::Degraded;
                }
                checks.push(report);
            }
            for dep in &inner.dependencies {
                let Some(breaker) = &dep.breaker else {
                    continue;
                };
                let state = breaker.state();
                let open = state.is_open() || state == crate::breaker::State::HalfOpen;
                let failed = dep.critical && open;
                #[allow(unused_mut, reason = "only the fleet adds to it")]
                let mut detail = state.as_str().to_owned();
                #[cfg(feature = "redis")]
                if let Some(view) = inner.fleet.as_ref().and_then(|f| f.view(&dep.name)) {
                    detail.push_str(&format!(
                        "; {} of {} peers open, quorum {}",
                        view.open,
                        view.replicas - 1,
                        view.required
                    ));
                }
                checks.push(CheckReport {
                    detail: Some(detail),
                    ..line(
                        &format!("breaker:{}", dep.name),
                        failed.then(|| format!("circuit {}", state.as_str())),
                    )
                });
            }
            #[cfg(feature = "redis")]
            if let Some(fleet) = &inner.fleet {
                checks.push(shared_line(fleet));
            }
            let phase = *inner.phase.borrow();
            checks.push(line(
                "shutdown",
                (phase != Phase::Serving).then(|| "shutting down".to_owned()),
            ));
        }
        Probe::Startup => {
            for c in inner.checks.iter().filter(|c| c.scope == Scope::Startup) {
                let state = c.state.lock().unwrap_or_else(PoisonError::into_inner);
                let failure = (!state.ever_succeeded).then(|| {
                    state
                        .last
                        .as_ref()
                        .and_then(|o| o.failure.clone())
                        .unwrap_or_else(|| "no result yet".to_owned())
                });
                checks.push(CheckReport {
                    age: state.age(now),
                    duration: state.last.as_ref().map(|o| o.duration),
                    consecutive_failures: state.consecutive_failures,
                    ..line(&c.name, failure)
                });
            }
        }
    }

    if let Some(name) = only {
        checks.retain(|c| c.name == name);
    }
    let mut unknown_excludes = Vec::new();
    for name in exclude {
        match checks.iter_mut().find(|c| c.name == *name) {
            Some(c) => c.status = CheckStatus::Excluded,
            None if !unknown_excludes.iter().any(|u| u == name) => {
                unknown_excludes.push((*name).to_owned())
            }
            None => {}
        }
    }
    let ok = checks.iter().all(|c| c.status != CheckStatus::Failed);
    Report {
        probe,
        ok,
        checks,
        unknown_excludes,
    }
}

/// Lines for the background checks of `scope`, debounced, with staleness
/// applied to readiness.
fn background(inner: &Inner, scope: Scope, now: Instant, out: &mut Vec<CheckReport>) {
    for c in inner.checks.iter().filter(|c| c.scope == scope) {
        let state = c.state.lock().unwrap_or_else(PoisonError::into_inner);
        let age = state.age(now);
        let last_failure = state.last.as_ref().and_then(|o| o.failure.clone());
        let failure = match state.status {
            Status::Pending => Some("no result yet".to_owned()),
            Status::Failing => Some(last_failure.unwrap_or_else(|| "recovering".to_owned())),
            Status::Passing => match age {
                Some(age) if scope == Scope::Readiness && age > c.options.staleness() => {
                    Some(format!("stale: last result {} old", secs(age)))
                }
                _ => None,
            },
        };
        #[allow(unused_mut, reason = "only the fleet floor changes them")]
        let mut status = match (&failure, c.options.criticality) {
            (None, _) => CheckStatus::Ok,
            (Some(_), Criticality::Critical) => CheckStatus::Failed,
            (Some(_), Criticality::NonCritical) => CheckStatus::Degraded,
        };
        #[allow(unused_mut, reason = "only the fleet floor changes them")]
        let mut failure = failure;
        #[cfg(feature = "redis")]
        if status == CheckStatus::Failed
            && scope == Scope::Readiness
            && state.status == Status::Failing
            && let (Some(floor), Some(fleet)) = (c.options.fleet_floor, &inner.fleet)
            && let Some((failing, replicas)) = shared_failure(fleet, &c.name, floor)
        {
            status = CheckStatus::Degraded;
            failure = failure.map(|reason| {
                format!(
                    "{reason}; failing on {failing} of {replicas} replicas: shared outage, kept in rotation"
                )
            });
        }
        out.push(CheckReport {
            name: c.name.clone(),
            status,
            reason: failure,
            detail: None,
            age,
            duration: state.last.as_ref().map(|o| o.duration),
            consecutive_failures: state.consecutive_failures,
        });
    }
}

/// The `shared` line: whether breaker state is being shared.
#[cfg(feature = "redis")]
fn shared_line(fleet: &crate::shared::Fleet) -> CheckReport {
    use crate::shared::Link;
    let (status, reason) = match fleet.link() {
        Link::Up => (CheckStatus::Ok, None),
        Link::Connecting => (
            CheckStatus::Degraded,
            Some("connecting to redis; breakers decide alone".to_owned()),
        ),
        Link::Down(why) => (
            CheckStatus::Degraded,
            Some(format!("redis unreachable, breakers decide alone: {why}")),
        ),
    };
    CheckReport {
        name: "shared".to_owned(),
        status,
        reason,
        detail: Some(format!("{} replicas live", fleet.replicas())),
        age: None,
        duration: None,
        consecutive_failures: 0,
    }
}

/// When at least `floor` thousandths of the live replicas (this failing one
/// included, and at least two) fail check `name`: how many fail, of how many.
#[cfg(feature = "redis")]
fn shared_failure(fleet: &crate::shared::Fleet, name: &str, floor: u16) -> Option<(usize, usize)> {
    if fleet.link() != crate::shared::Link::Up {
        return None;
    }
    let (failing_peers, live_peers) = fleet.failing(name);
    let (failing, replicas) = (failing_peers + 1, live_peers + 1);
    (live_peers >= 1 && failing * 1000 >= usize::from(floor) * replicas)
        .then_some((failing, replicas))
}
