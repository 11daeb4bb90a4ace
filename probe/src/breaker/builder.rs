//! The breaker's builder: thresholds, windows and half-open policy.

use super::*;

/// Builds a [`CircuitBreaker`].
#[derive(Debug, Clone, Default)]
pub struct Builder {
    pub(super) config: Config,
}

impl Builder {
    /// Judge by the last `n` calls.
    pub fn count_window(mut self, n: u32) -> Self {
        self.config.window = Window::Count(n);
        self
    }

    /// Judge by the calls of the last `seconds` seconds.
    pub fn time_window(mut self, seconds: u32) -> Self {
        self.config.window = Window::Time(seconds);
        self
    }

    /// Calls the window must hold before the breaker may open.
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.config.minimum_calls = n;
        self
    }

    /// Open when the failure rate reaches `rate` (0 < rate <= 1).
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.config.failure_rate = rate;
        self
    }

    /// Calls slower than `slower_than` are slow, even when they succeed;
    /// open when the slow rate reaches `rate`.
    pub fn slow_call(mut self, slower_than: Duration, rate: f64) -> Self {
        self.config.slow_call = Some((slower_than, rate));
        self
    }

    /// Stay open `base`, multiplied by `backoff` for each consecutive
    /// opening (1.0 disables it), up to `max`.
    pub fn open_for(mut self, base: Duration, backoff: f64, max: Duration) -> Self {
        self.config.open_base = base;
        self.config.backoff = backoff.max(1.0);
        self.config.open_max = max;
        self
    }

    /// Jitter of the open duration as a fraction (default 0.1), and an
    /// optional seed for repeatable tests.
    pub fn jitter(mut self, fraction: f64, seed: Option<u64>) -> Self {
        self.config.jitter = fraction.clamp(0.0, 1.0);
        self.config.seed = seed;
        self
    }

    /// How the half-open state admits trials.
    pub fn half_open(mut self, mode: HalfOpen) -> Self {
        self.config.half_open = mode;
        self
    }

    /// What a dropped, unfinished call counts as.
    pub fn on_cancel(mut self, outcome: OnCancel) -> Self {
        self.config.on_cancel = outcome;
        self
    }

    /// Validates the configuration.
    ///
    /// # Errors
    ///
    /// [`error::Misconfigured`] for a rate outside `(0, 1]`, a zero window,
    /// minimum or probe count, or an open duration of zero or above its
    /// maximum.
    pub fn build(self) -> Result<CircuitBreaker, error::Misconfigured> {
        self.config.validate()?;
        let config = self.config;
        let window = match config.window {
            Window::Count(n) => Windowed::Count(CountWindow::new(n)),
            Window::Time(n) => Windowed::Time(TimeWindow::new(n)),
        };
        let rng = match config.seed {
            Some(seed) => fastrand::Rng::with_seed(seed),
            None => fastrand::Rng::new(),
        };
        Ok(CircuitBreaker {
            shared: Arc::new(Shared {
                origin: Instant::now(),
                state: AtomicU8::new(State::Closed.code()),
                generation: AtomicU64::new(0),
                open_until: AtomicU64::new(0),
                hint_ms: AtomicU64::new(0),
                own_evidence: AtomicBool::new(false),
                gate: AtomicU8::new(Gate::Local as u8),
                gate_patience_ms: AtomicU64::new(0),
                untimed_count: config.slow_call.is_none() && matches!(window, Windowed::Count(_)),
                window,
                slow: Mutex::new(SlowPath {
                    consecutive_openings: 0,
                    rng,
                    trial: None,
                    next_trial: 0,
                    admitted: 0,
                    results: Snapshot::default(),
                }),
                events: broadcast::channel(64).0,
                current: watch::Sender::new(State::Closed),
                config,
            }),
        })
    }
}
