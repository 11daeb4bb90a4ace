//! The fleet scenario: three `orders` replicas behind a round-robin
//! client, one Redis, the same slow payments and timeline. Local-only
//! breakers against breakers sharing state with a quorum; in both, the
//! "payment pending" fallback queues the charge and each replica's consumer
//! charges it once payments is back.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use probity_probe::breaker::State;
use probity_probe::chaos::{Chaos, Fault};
use probity_probe::queue::RedisQueue;
use tokio::time::Instant;

use crate::http::{BoxError, HttpClient};
use crate::report::CatalogStats;
use crate::run::{
    Endpoint, Outcome, Sample, Transitions, record_transitions, start_load, wait_ready,
};
use crate::scenario::{Config, Phase, Scenario};
use crate::services::{self, Extras};

pub(crate) const REPLICAS: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sharing {
    Local,
    Quorum,
}

impl Sharing {
    pub(crate) const ALL: [Sharing; 2] = [Sharing::Local, Sharing::Quorum];

    fn name(self) -> &'static str {
        match self {
            Sharing::Local => "local-only breakers",
            Sharing::Quorum => "shared breakers (quorum of live peers)",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Sharing::Local => "local",
            Sharing::Quorum => "shared",
        }
    }
}

/// What one fleet run measured.
#[derive(Debug)]
pub(crate) struct FleetRun {
    sharing: Sharing,
    /// Per replica: from the slowdown until its breaker first opened.
    opened_after: Vec<Option<Duration>>,
    /// Per replica: trial calls (transitions to half-open) from the
    /// slowdown on.
    trials: Vec<usize>,
    /// Per replica: /catalog in the slow phase.
    catalog: Vec<CatalogStats>,
    /// Calls that reached payments, per phase.
    payments_calls: [u64; 3],
    /// Checkouts accepted with the charge queued, and what became of them.
    accepted: usize,
    charged: usize,
    duplicated: usize,
    lost: usize,
    /// Deliveries the consumers retried, and messages they dead-lettered.
    retried: u64,
    dead_lettered: u64,
    /// From the recovery until every queued charge was made.
    drained_after: Option<Duration>,
}

/// Runs both configurations, one after the other, against the Redis at
/// `redis`.
pub(crate) fn run(
    sharing: Sharing,
    scenario: &Scenario,
    redis: &str,
) -> Result<FleetRun, BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(timeline(sharing, scenario, redis));
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn timeline(
    sharing: Sharing,
    scenario: &Scenario,
    redis: &str,
) -> Result<FleetRun, BoxError> {
    let chaos = Chaos::new("payments").seed(7);
    let healthy = Fault::latency(scenario.fast).with_jitter(scenario.jitter);
    chaos.set(healthy);
    let (payments, ledger) = services::payments(&chaos).await?;
    let queue = RedisQueue::builder(
        redis,
        format!("lab:{}:{}:charges", std::process::id(), sharing.slug()),
    )
    .group("charges")
    .build()?;
    let mut replicas = Vec::new();
    for i in 0..REPLICAS {
        let extras = Extras {
            redis: redis.to_owned(),
            replica: format!("orders-{}-{i}", sharing.slug()),
            share: sharing == Sharing::Quorum,
            queue: queue.clone(),
        };
        replicas.push(services::orders(Config::Probity, scenario, payments, Some(&extras)).await?);
    }
    let client = HttpClient::new();
    for r in &replicas {
        wait_ready(&client, r.addr).await?;
    }
    let start = Instant::now();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let addrs: Vec<_> = replicas.iter().map(|r| r.addr).collect();
    // Three replicas take what one did: the same arrival rates, spread.
    let mut load = start_load(start, scenario, &client, &addrs, &samples);
    let transitions: Vec<Transitions> = replicas
        .iter()
        .map(|r| record_transitions(r.breaker.as_ref(), start))
        .collect();
    let set_phase = |phase: Phase| {
        ledger.phase.store(phase.index(), Ordering::Release);
        for r in &replicas {
            r.in_flight.phase.store(phase.index(), Ordering::Release);
        }
    };
    tokio::time::sleep_until(start + scenario.healthy).await;
    set_phase(Phase::Slow);
    chaos.set(Fault::latency(scenario.slowed).with_jitter(scenario.jitter));
    let recovered_at = start + scenario.healthy + scenario.slow;
    tokio::time::sleep_until(recovered_at).await;
    set_phase(Phase::Recovered);
    chaos.set(healthy);
    while let Some(done) = load.join_next().await {
        done?;
    }
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(PoisonError::into_inner));
    let accepted: Vec<String> = samples
        .iter()
        .filter(|s| s.endpoint == Endpoint::Checkout && s.outcome == Outcome::Degraded)
        .map(|s| format!("order-{}", s.n))
        .collect();
    // Drain: every accepted charge made, waiting up to a minute past the
    // timeline; timed by each key's first charge.
    let limit = Instant::now() + Duration::from_secs(60);
    while !accepted.iter().all(|k| ledger.charges().contains_key(k)) && Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let charges = ledger.charges();
    let drained_after = accepted
        .iter()
        .map(|k| {
            charges
                .get(k)
                .map(|(_, first)| first.saturating_duration_since(recovered_at))
        })
        .collect::<Option<Vec<_>>>()
        .map(|firsts| firsts.into_iter().max().unwrap_or_default());
    let summary = |seen: &Transitions| {
        let seen = seen.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let opened = seen
            .iter()
            .find(|(at, s)| *at >= scenario.healthy && s.is_open())
            .map(|(at, _)| *at - scenario.healthy);
        let trials = seen
            .iter()
            .filter(|(at, s)| *at >= scenario.healthy && *s == State::HalfOpen)
            .count();
        (opened, trials)
    };
    let per: Vec<_> = transitions.iter().map(summary).collect();
    Ok(FleetRun {
        sharing,
        opened_after: per.iter().map(|p| p.0).collect(),
        trials: per.iter().map(|p| p.1).collect(),
        catalog: (0..REPLICAS)
            .map(|i| {
                CatalogStats::of(samples.iter().filter(|s: &&Sample| {
                    s.replica == i && scenario.phase_at(s.due) == Phase::Slow
                }))
            })
            .collect(),
        payments_calls: [0, 1, 2].map(|p| ledger.calls[p].load(Ordering::Acquire)),
        charged: accepted.iter().filter(|k| charges.contains_key(*k)).count(),
        duplicated: accepted
            .iter()
            .filter(|k| charges.get(*k).is_some_and(|(n, _)| *n > 1))
            .count(),
        lost: accepted
            .iter()
            .filter(|k| !charges.contains_key(*k))
            .count(),
        accepted: accepted.len(),
        retried: replicas
            .iter()
            .filter_map(|r| r.consumer.as_ref())
            .map(|b| b.retried())
            .sum(),
        dead_lettered: replicas
            .iter()
            .filter_map(|r| r.consumer.as_ref())
            .map(|b| b.dead_lettered())
            .sum(),
        drained_after,
    })
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
}

/// The fleet section of the results.
pub(crate) fn markdown(runs: &[FleetRun], scenario: &Scenario) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{REPLICAS} replicas of the probity configuration behind a round-robin client, one Redis, \
         the same timeline and load as above (spread over the replicas). Every \"payment pending\" \
         answer is given only once the charge is in the queue (a Redis Stream); each replica runs a \
         consumer that charges under its payments breaker, with the order id as the idempotency key \
         payments counts.\n"
    );
    out.push_str("| configuration | every replica stopped calling payments | opened after slowdown (per replica) | calls to payments, slow phase | trial calls (per replica) | /catalog slow-phase success / p99 (per replica) |\n|---|---:|---|---:|---|---|\n");
    for r in runs {
        let all = r
            .opened_after
            .iter()
            .copied()
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().max());
        let per: Vec<String> = r.opened_after.iter().map(|d| secs(*d)).collect();
        let catalog: Vec<String> = r
            .catalog
            .iter()
            .map(|c| {
                format!(
                    "{:.2}% / {:.1} ms",
                    c.success() * 100.0,
                    c.p99.as_secs_f64() * 1000.0
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} (total {}) | {} |",
            r.sharing.name(),
            secs(all),
            per.join(", "),
            r.payments_calls[Phase::Slow.index()],
            r.trials
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            r.trials.iter().sum::<usize>(),
            catalog.join("; "),
        );
    }
    out.push_str("\n### The queued charges\n\n| configuration | accepted (202, queued) | charged | charged twice | lost | retried deliveries | dead-lettered | all charged after recovery |\n|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in runs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.sharing.name(),
            r.accepted,
            r.charged,
            r.duplicated,
            r.lost,
            r.retried,
            r.dead_lettered,
            secs(r.drained_after)
        );
    }
    let _ = writeln!(
        out,
        "\nTrial calls count transitions to half-open from the slowdown on ({} s slow, open 2 s doubling to 8 s). \
         With shared state one replica takes the probe lease per open period and the others wait for its verdict.",
        scenario.slow.as_secs()
    );
    out
}

/// Fails the run when something expected did not happen at all.
pub(crate) fn check(run: &FleetRun) -> Result<(), BoxError> {
    if run.lost > 0 {
        return Err(format!(
            "{}: {} accepted charges were never made",
            run.sharing.name(),
            run.lost
        )
        .into());
    }
    if run.opened_after.iter().any(Option::is_none) {
        return Err(format!("{}: a replica's breaker never opened", run.sharing.name()).into());
    }
    Ok(())
}
