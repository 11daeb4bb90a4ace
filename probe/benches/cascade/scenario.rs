//! What is run: the timeline, the load, and the four configurations of
//! `orders`.

use std::time::Duration;

/// The phases of the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Healthy,
    Slow,
    Recovered,
}

impl Phase {
    pub(crate) const ALL: [Phase; 3] = [Phase::Healthy, Phase::Slow, Phase::Recovered];

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Phase::Healthy => "healthy",
            Phase::Slow => "slow",
            Phase::Recovered => "recovered",
        }
    }
}

/// How `orders` defends itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Config {
    /// No timeouts, unbounded concurrency toward payments.
    Naive,
    /// A 2 s timeout on the payments call, nothing else.
    TimeoutOnly,
    /// Deadline budget, breaker with a slow-call rule, a payments
    /// bulkhead, load shedding and a fallback.
    Probity,
    /// The same without the payments bulkhead.
    ProbityNoBulkhead,
    /// The same with an adaptive bulkhead instead of the hand-picked size.
    ProbityAdaptive,
}

impl Config {
    pub(crate) const ALL: [Config; 5] = [
        Config::Naive,
        Config::TimeoutOnly,
        Config::Probity,
        Config::ProbityNoBulkhead,
        Config::ProbityAdaptive,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Config::Naive => "naive",
            Config::TimeoutOnly => "timeout only",
            Config::Probity => "probity",
            Config::ProbityNoBulkhead => "probity without bulkhead",
            Config::ProbityAdaptive => "probity, adaptive bulkhead",
        }
    }

    pub(crate) fn is_probity(self) -> bool {
        matches!(
            self,
            Config::Probity | Config::ProbityNoBulkhead | Config::ProbityAdaptive
        )
    }
}

/// The knobs of one run. `full()` is the published scenario; `smoke()` a
/// few seconds of the same machinery for `cargo test`.
#[derive(Debug, Clone)]
pub(crate) struct Scenario {
    pub(crate) healthy: Duration,
    pub(crate) slow: Duration,
    pub(crate) recovered: Duration,
    /// Payments latency when healthy: `fast` plus up to `jitter`.
    pub(crate) fast: Duration,
    pub(crate) jitter: Duration,
    /// Payments latency in the slow phase (plus up to `jitter`).
    pub(crate) slowed: Duration,
    pub(crate) catalog_rps: u32,
    pub(crate) checkout_rps: u32,
    /// The orders server's workers (a thread pool's size): requests queue
    /// for one, in arrival order.
    pub(crate) workers: u32,
    /// Local work of `/catalog` (a cache read).
    pub(crate) catalog_work: Duration,
    /// The load generator gives up after this long (a client's or an
    /// ingress's timeout); also the budget it sends.
    pub(crate) client_timeout: Duration,
    /// Timeout of the timeout-only configuration, and the probity
    /// configurations' inbound budget cap.
    pub(crate) timeout: Duration,
    /// probity: one payments call's share of the budget.
    pub(crate) call_timeout: Duration,
    /// probity: the payments bulkhead.
    pub(crate) bulkhead: u32,
    /// The adaptive bulkhead's floor and ceiling.
    pub(crate) adaptive: (u32, u32),
}

impl Scenario {
    pub(crate) fn full() -> Self {
        Self {
            healthy: Duration::from_secs(30),
            slow: Duration::from_secs(60),
            recovered: Duration::from_secs(30),
            fast: Duration::from_millis(190),
            jitter: Duration::from_millis(20),
            slowed: Duration::from_millis(7_990),
            catalog_rps: 50,
            checkout_rps: 50,
            workers: 48,
            catalog_work: Duration::from_millis(5),
            client_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(1),
            bulkhead: 20,
            adaptive: (4, 100),
        }
    }

    pub(crate) fn smoke() -> Self {
        Self {
            healthy: Duration::from_secs(2),
            slow: Duration::from_secs(3),
            recovered: Duration::from_secs(2),
            slowed: Duration::from_millis(2_500),
            catalog_rps: 20,
            checkout_rps: 20,
            workers: 16,
            client_timeout: Duration::from_secs(3),
            timeout: Duration::from_millis(800),
            call_timeout: Duration::from_millis(400),
            bulkhead: 8,
            ..Self::full()
        }
    }

    pub(crate) fn total(&self) -> Duration {
        self.healthy + self.slow + self.recovered
    }

    /// The phase a request scheduled `at` after the start belongs to.
    pub(crate) fn phase_at(&self, at: Duration) -> Phase {
        if at < self.healthy {
            Phase::Healthy
        } else if at < self.healthy + self.slow {
            Phase::Slow
        } else {
            Phase::Recovered
        }
    }

    /// Payments' mean latency in a phase.
    pub(crate) fn payments_latency(&self, phase: Phase) -> Duration {
        let base = if phase == Phase::Slow {
            self.slowed
        } else {
            self.fast
        };
        base + self.jitter / 2
    }
}
