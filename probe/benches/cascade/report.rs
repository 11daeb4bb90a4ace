//! Figures from the samples: per phase, per second, and the targets.

use std::fmt::Write as _;
use std::time::Duration;

use probity_probe::breaker::State;

use crate::run::{ConfigRun, Endpoint, Outcome, Sample};
use crate::scenario::{Config, Phase, Scenario};

/// `/catalog` in one phase or one second.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CatalogStats {
    pub(crate) requests: usize,
    pub(crate) ok: usize,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
}

impl CatalogStats {
    pub(crate) fn of<'a>(samples: impl Iterator<Item = &'a Sample>) -> Self {
        let mut latencies = Vec::new();
        let mut ok = 0;
        for s in samples.filter(|s| s.endpoint == Endpoint::Catalog) {
            latencies.push(s.latency);
            ok += usize::from(s.outcome == Outcome::Ok);
        }
        latencies.sort_unstable();
        Self {
            requests: latencies.len(),
            ok,
            p50: percentile(&latencies, 0.50),
            p99: percentile(&latencies, 0.99),
        }
    }

    pub(crate) fn success(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.ok as f64 / self.requests as f64
        }
    }
}

/// Nearest rank on sorted values.
fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// `/checkout` outcomes in one phase.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CheckoutStats {
    pub(crate) ok: usize,
    pub(crate) degraded: usize,
    pub(crate) failed: usize,
}

impl CheckoutStats {
    fn of<'a>(samples: impl Iterator<Item = &'a Sample>) -> Self {
        let mut stats = Self::default();
        for s in samples.filter(|s| s.endpoint == Endpoint::Checkout) {
            match s.outcome {
                Outcome::Ok => stats.ok += 1,
                Outcome::Degraded => stats.degraded += 1,
                Outcome::Failed => stats.failed += 1,
            }
        }
        stats
    }
}

/// One configuration's figures.
#[derive(Debug)]
pub(crate) struct Summary {
    pub(crate) config: Config,
    pub(crate) catalog: [CatalogStats; 3],
    pub(crate) checkout: [CheckoutStats; 3],
    pub(crate) peak_in_flight: [u64; 3],
    /// Seconds from the slowdown to the first opening after it.
    pub(crate) opened_after: Option<Duration>,
    /// Seconds from the recovery to the breaker closing for good.
    pub(crate) closed_after: Option<Duration>,
    pub(crate) breaker_transitions: usize,
    pub(crate) readiness: Vec<(Duration, bool)>,
    pub(crate) livez: [(u32, u32); 3],
    /// Per second of the timeline: `/catalog` p99 and success rate.
    pub(crate) per_second: Vec<CatalogStats>,
}

impl Summary {
    pub(crate) fn of(run: &ConfigRun, scenario: &Scenario) -> Self {
        let in_phase = |phase: Phase| {
            run.samples
                .iter()
                .filter(move |s| scenario.phase_at(s.due) == phase)
        };
        let slow_at = scenario.healthy;
        let recovered_at = scenario.healthy + scenario.slow;
        let opened_after = run
            .breaker
            .iter()
            .find(|(at, state)| *at >= slow_at && state.is_open())
            .map(|(at, _)| *at - slow_at);
        let closed_after = match run.breaker.last() {
            Some((at, State::Closed)) if *at >= recovered_at => Some(*at - recovered_at),
            _ => None,
        };
        let seconds = scenario.total().as_secs() as usize;
        let per_second = (0..seconds)
            .map(|s| CatalogStats::of(run.samples.iter().filter(|x| x.due.as_secs() as usize == s)))
            .collect();
        Self {
            config: run.config,
            catalog: Phase::ALL.map(|p| CatalogStats::of(in_phase(p))),
            checkout: Phase::ALL.map(|p| CheckoutStats::of(in_phase(p))),
            peak_in_flight: run.peak_in_flight,
            opened_after,
            closed_after,
            breaker_transitions: run.breaker.len(),
            readiness: run.readiness.clone(),
            livez: run.livez,
            per_second,
        }
    }

    /// Readiness changes after the first answer.
    fn readiness_changes(&self) -> usize {
        self.readiness.len().saturating_sub(1)
    }

    /// Time `/readyz` failed within `[from, to)`.
    fn unready_between(&self, from: Duration, to: Duration) -> Duration {
        let mut total = Duration::ZERO;
        for (i, (at, ready)) in self.readiness.iter().enumerate() {
            if *ready {
                continue;
            }
            let until = self.readiness.get(i + 1).map_or(to, |(next, _)| *next);
            let (a, b) = ((*at).max(from), until.min(to));
            if b > a {
                total += b - a;
            }
        }
        total
    }
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
}

/// The Markdown results: tables, then each target with its figure.
pub(crate) fn markdown(summaries: &[Summary], scenario: &Scenario) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Timeline: {} s healthy (payments {} ms), {} s slow (payments {} s), {} s recovered. \
         Load (open model, fixed arrival rate): /catalog {} req/s, /checkout {} req/s. \
         orders has {} workers; the client gives up after {} s.\n",
        scenario.healthy.as_secs(),
        scenario.payments_latency(Phase::Healthy).as_millis(),
        scenario.slow.as_secs(),
        scenario.payments_latency(Phase::Slow).as_secs_f64(),
        scenario.recovered.as_secs(),
        scenario.catalog_rps,
        scenario.checkout_rps,
        scenario.workers,
        scenario.client_timeout.as_secs(),
    );

    out.push_str("### /catalog (calls nothing: the cascade's victim)\n\n");
    out.push_str("| configuration | phase | requests | success | p50 | p99 |\n|---|---|---:|---:|---:|---:|\n");
    phase_rows(&mut out, summaries, |s, phase| {
        let c = s.catalog[phase.index()];
        format!(
            "{} | {} | {} | {}",
            c.requests,
            pct(c.success()),
            ms(c.p50),
            ms(c.p99)
        )
    });
    out.push_str(
        "\nLatency is measured from when each request was due, failures included \
         (a request the client gave up on counts at the client timeout).\n\n",
    );

    out.push_str("### /checkout (calls payments)\n\n");
    out.push_str("| configuration | phase | charged (200) | degraded (202, payment pending) | failed |\n|---|---|---:|---:|---:|\n");
    phase_rows(&mut out, summaries, |s, phase| {
        let c = s.checkout[phase.index()];
        format!("{} | {} | {}", c.ok, c.degraded, c.failed)
    });

    let little = |phase: Phase| {
        f64::from(scenario.checkout_rps) * scenario.payments_latency(phase).as_secs_f64()
    };
    let _ = writeln!(
        out,
        "\n### Calls to payments in flight (peak)\n\nLittle's law for unbounded callers: \
         arrival rate x latency = {:.0} when healthy, {:.0} when slow ({:.0}x).\n",
        little(Phase::Healthy),
        little(Phase::Slow),
        little(Phase::Slow) / little(Phase::Healthy)
    );
    out.push_str("| configuration | healthy | slow | recovered |\n|---|---:|---:|---:|\n");
    for s in summaries {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            s.config.name(),
            s.peak_in_flight[0],
            s.peak_in_flight[1],
            s.peak_in_flight[2]
        );
    }

    out.push_str("\n### Breaker, readiness, liveness\n\n");
    out.push_str("| configuration | breaker open after slowdown | closed after recovery | breaker transitions | readiness changes | unready (slow phase) | /livez 200 |\n|---|---:|---:|---:|---:|---:|---:|\n");
    let slow_from = scenario.healthy;
    let slow_to = scenario.healthy + scenario.slow;
    for s in summaries {
        let (ok, asked) = s
            .livez
            .iter()
            .fold((0, 0), |(a, b), (ok, asked)| (a + ok, b + asked));
        let breaker = s.config.is_probity();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.1} s | {ok}/{asked} |",
            s.config.name(),
            if breaker {
                secs(s.opened_after)
            } else {
                "no breaker".into()
            },
            if breaker {
                secs(s.closed_after)
            } else {
                "-".into()
            },
            s.breaker_transitions,
            s.readiness_changes(),
            s.unready_between(slow_from, slow_to).as_secs_f64(),
        );
    }
    out.push('\n');
    out.push_str(&targets(summaries));
    out
}

/// One table row per configuration and phase: its name, the phase, then
/// `cells`.
fn phase_rows(out: &mut String, summaries: &[Summary], cells: impl Fn(&Summary, Phase) -> String) {
    for s in summaries {
        for phase in Phase::ALL {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                s.config.name(),
                phase.name(),
                cells(s, phase)
            );
        }
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

/// The targets for the probity configuration, and the collapse of the
/// others, in words with their numbers.
fn targets(summaries: &[Summary]) -> String {
    let mut out = String::from("### Targets\n\n");
    let slow = Phase::Slow.index();
    let healthy = Phase::Healthy.index();
    for s in summaries {
        let c = s.catalog[slow];
        let h = s.catalog[healthy];
        let ratio = c.p99.as_secs_f64() / h.p99.as_secs_f64().max(1e-9);
        match s.config {
            Config::Probity => {
                let _ = writeln!(
                    out,
                    "- probity, slow phase: /catalog success {} (target >= 99.9%: {}); p99 {} vs {} healthy = {ratio:.2}x (target <= 2x: {}); breaker opened {} after the slowdown (target <= 2 s: {}).",
                    pct(c.success()),
                    verdict(c.success() >= 0.999),
                    ms(c.p99),
                    ms(h.p99),
                    verdict(ratio <= 2.0),
                    secs(s.opened_after),
                    verdict(s.opened_after.is_some_and(|d| d <= Duration::from_secs(2))),
                );
            }
            _ => {
                let _ = writeln!(
                    out,
                    "- {}, slow phase: /catalog success {}, p99 {} ({ratio:.1}x its healthy p99); /checkout failed {} of {}.",
                    s.config.name(),
                    pct(c.success()),
                    ms(c.p99),
                    s.checkout[slow].failed,
                    s.checkout[slow].ok + s.checkout[slow].degraded + s.checkout[slow].failed,
                );
            }
        }
    }
    out
}
