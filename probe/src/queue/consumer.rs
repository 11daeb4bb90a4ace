//! The consumer loop: redeliveries first, then new messages; each handled
//! under a deadline and the dependency's breaker; acknowledged, retried
//! with backoff, or dead-lettered.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{FutureExt as _, StreamExt as _};
use tokio::time::Instant;

use super::{Broker, Delivery, Depth, Redelivery};
use crate::breaker::{CircuitBreaker, Verdict};
use crate::health::{Heartbeat, Load, Saturation};

/// What became of one delivery, as the handler says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Done: acknowledge it.
    Done,
    /// Failed for now (the dependency is down, slow, refusing): deliver it
    /// again after the backoff, up to the attempt limit.
    Retry(String),
    /// Can never succeed (a payload the handler cannot read): dead-letter
    /// it now. It does not count against the dependency's breaker.
    Reject(String),
}

impl<E: fmt::Display> From<Result<(), E>> for Handled {
    fn from(result: Result<(), E>) -> Self {
        match result {
            Ok(()) => Handled::Done,
            Err(e) => Handled::Retry(e.to_string()),
        }
    }
}

/// Counts of what a consumer did, shared with its [`Backlog`].
#[derive(Debug, Default)]
struct Counters {
    done: AtomicU64,
    retried: AtomicU64,
    dead: AtomicU64,
    waiting: AtomicU64,
    pending: AtomicU64,
    broker_errors: AtomicU64,
}

/// The queue's depth as the consumer last read it: a saturation source for
/// readiness (messages waiting or pending, against a capacity), and what
/// the consumer has done so far. Reading it does no I/O.
#[derive(Debug, Clone)]
pub struct Backlog {
    counters: Arc<Counters>,
    capacity: u64,
}

impl Backlog {
    /// Waiting and pending, as last read.
    pub fn depth(&self) -> Depth {
        Depth {
            waiting: self.counters.waiting.load(Ordering::Acquire),
            pending: self.counters.pending.load(Ordering::Acquire),
        }
    }

    /// Messages acknowledged.
    pub fn done(&self) -> u64 {
        self.counters.done.load(Ordering::Acquire)
    }

    /// Deliveries that failed and will be retried.
    pub fn retried(&self) -> u64 {
        self.counters.retried.load(Ordering::Acquire)
    }

    /// Messages moved to the dead letters.
    pub fn dead_lettered(&self) -> u64 {
        self.counters.dead.load(Ordering::Acquire)
    }

    /// Broker operations that failed (Redis unreachable, timeouts).
    pub fn broker_errors(&self) -> u64 {
        self.counters.broker_errors.load(Ordering::Acquire)
    }
}

impl Saturation for Backlog {
    fn load(&self) -> Load {
        let d = self.depth();
        Load {
            in_use: d.waiting.saturating_add(d.pending),
            capacity: self.capacity,
        }
    }
}

/// Builds a [`Consumer`]; see [`Consumer::builder`].
#[derive(Debug)]
pub struct ConsumerBuilder<B> {
    broker: Arc<B>,
    name: String,
    deadline: Duration,
    attempts: u32,
    redelivery: Redelivery,
    batch: usize,
    concurrency: usize,
    wait: Duration,
    breaker: Option<CircuitBreaker>,
    heartbeat: Option<Heartbeat>,
    counters: Arc<Counters>,
}

/// A consumer of a [`Broker`]'s messages.
#[derive(Debug)]
pub struct Consumer<B> {
    broker: Arc<B>,
    name: String,
    deadline: Duration,
    attempts: u32,
    redelivery: Redelivery,
    batch: usize,
    concurrency: usize,
    wait: Duration,
    breaker: Option<CircuitBreaker>,
    heartbeat: Option<Heartbeat>,
    counters: Arc<Counters>,
}

impl<B: Broker> ConsumerBuilder<B> {
    /// The backlog of the consumer this builds, before it exists: register
    /// it as a saturation source with the health registry whose heartbeat
    /// the consumer then beats.
    pub fn backlog(&self, capacity: u64) -> Backlog {
        Backlog {
            counters: Arc::clone(&self.counters),
            capacity: capacity.max(1),
        }
    }

    /// Each handler run gets this budget (default 5 s), as a
    /// [`deadline::scope`](crate::deadline::scope) and a timeout.
    pub fn deadline(mut self, budget: Duration) -> Self {
        self.deadline = budget;
        self
    }

    /// Deliveries before a message is dead-lettered (default 5).
    pub fn attempts(mut self, n: u32) -> Self {
        self.attempts = n;
        self
    }

    /// Backoff between deliveries of a failed message: `base x 2^(n-1)` up
    /// to `cap` (default 1 s up to 1 min).
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.redelivery.base = base;
        self.redelivery.cap = cap.max(base);
        self
    }

    /// How long a message may stay with another consumer before this one
    /// takes it over (default 30 s); longer than the deadline.
    pub fn visibility(mut self, timeout: Duration) -> Self {
        self.redelivery.visibility = timeout;
        self
    }

    /// Messages taken per read (default 16) and how long a read waits for
    /// new ones (default 1 s).
    pub fn batch(mut self, max: usize, wait: Duration) -> Self {
        self.batch = max;
        self.wait = wait;
        self
    }

    /// Handler runs at once (default 8), within a batch.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// The dependency's breaker: while it is open the consumer takes
    /// nothing, and each handler run is one call through it.
    pub fn breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Beaten on every turn of the loop (the consumer profile's liveness:
    /// a loop that stops turning fails `/livez`).
    pub fn heartbeat(mut self, heartbeat: Heartbeat) -> Self {
        self.heartbeat = Some(heartbeat);
        self
    }

    /// Validates the settings.
    ///
    /// # Errors
    ///
    /// A message naming the setting: zero attempts, batch or wait, a
    /// visibility timeout not above the deadline (another consumer would
    /// take over messages still being handled), or an empty or overlong
    /// consumer name.
    pub fn build(self) -> Result<Consumer<B>, String> {
        if self.attempts == 0
            || self.batch == 0
            || self.concurrency == 0
            || self.wait.is_zero()
            || self.deadline.is_zero()
        {
            return Err(
                "attempts, batch, concurrency, wait and deadline must be above zero".to_owned(),
            );
        }
        if self.redelivery.visibility <= self.deadline {
            return Err(format!(
                "visibility timeout {:?} must be above the deadline {:?}",
                self.redelivery.visibility, self.deadline
            ));
        }
        if self.name.is_empty() || self.name.len() > 128 {
            return Err(format!(
                "consumer name {:?} must be 1 to 128 bytes",
                self.name
            ));
        }
        Ok(Consumer {
            broker: self.broker,
            name: self.name,
            deadline: self.deadline,
            attempts: self.attempts,
            redelivery: self.redelivery,
            batch: self.batch,
            concurrency: self.concurrency,
            wait: self.wait,
            breaker: self.breaker,
            heartbeat: self.heartbeat,
            counters: self.counters,
        })
    }
}

impl<B: Broker> Consumer<B> {
    /// A consumer called `name` (unique in its group: the pod name) of
    /// `broker`.
    pub fn builder(broker: B, name: impl Into<String>) -> ConsumerBuilder<B> {
        ConsumerBuilder {
            broker: Arc::new(broker),
            name: name.into(),
            deadline: Duration::from_secs(5),
            attempts: 5,
            redelivery: Redelivery {
                base: Duration::from_secs(1),
                cap: Duration::from_secs(60),
                visibility: Duration::from_secs(30),
            },
            batch: 16,
            concurrency: 8,
            wait: Duration::from_secs(1),
            breaker: None,
            heartbeat: None,
            counters: Arc::default(),
        }
    }

    /// The backlog as a saturation source: readiness degrades (or fails,
    /// as registered) when `capacity` messages wait or are pending.
    pub fn backlog(&self, capacity: u64) -> Backlog {
        Backlog {
            counters: Arc::clone(&self.counters),
            capacity: capacity.max(1),
        }
    }

    fn beat(&self) {
        if let Some(h) = &self.heartbeat {
            h.beat();
        }
    }

    fn broker_error(&self, what: &str, e: &super::Error) {
        self.counters.broker_errors.fetch_add(1, Ordering::AcqRel);
        tracing::warn!(consumer = %self.name, error = %e, "queue {what} failed");
    }

    /// Runs until `stop` completes. A handler run that `stop` interrupts
    /// leaves its message pending, to be delivered again after the
    /// visibility timeout.
    pub async fn run_until<H, Fut, R>(self, handler: H, stop: impl Future<Output = ()>)
    where
        H: Fn(Delivery) -> Fut,
        Fut: Future<Output = R>,
        R: Into<Handled>,
    {
        tokio::select! {
            () = self.run(handler) => {}
            () = stop => {}
        }
    }

    /// Runs the loop until the future is dropped.
    pub async fn run<H, Fut, R>(&self, handler: H)
    where
        H: Fn(Delivery) -> Fut,
        Fut: Future<Output = R>,
        R: Into<Handled>,
    {
        let mut trouble = 0u32;
        let mut rng = fastrand::Rng::new();
        let mut last_depth: Option<Instant> = None;
        loop {
            self.beat();
            if last_depth.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                match self.broker.depth().await {
                    Ok(d) => {
                        self.counters.waiting.store(d.waiting, Ordering::Release);
                        self.counters.pending.store(d.pending, Ordering::Release);
                    }
                    Err(e) => self.broker_error("depth", &e),
                }
                last_depth = Some(Instant::now());
            }
            if let Some(b) = &self.breaker {
                let wait = b.remaining_open();
                if b.state().is_open() && !wait.is_zero() {
                    tokio::time::sleep(wait.min(self.wait)).await;
                    continue;
                }
            }
            let batch = match self.take().await {
                Ok(batch) => {
                    trouble = 0;
                    batch
                }
                Err(e) => {
                    self.broker_error("read", &e);
                    trouble = trouble.saturating_add(1);
                    let pause = crate::retry::Backoff::new(
                        Duration::from_millis(100),
                        Duration::from_secs(5),
                    )
                    .delay(trouble, Duration::ZERO, &mut rng, None);
                    tokio::time::sleep(pause.max(Duration::from_millis(20))).await;
                    continue;
                }
            };
            futures_util::stream::iter(batch)
                .for_each_concurrent(self.concurrency, |d| self.handle(d, &handler))
                .await;
        }
    }

    /// One delivery: through the breaker (open: given back, no attempt
    /// spent), under the deadline, then settled.
    async fn handle<H, Fut, R>(&self, delivery: Delivery, handler: &H)
    where
        H: Fn(Delivery) -> Fut,
        Fut: Future<Output = R>,
        R: Into<Handled>,
    {
        self.beat();
        let permit = match &self.breaker {
            Some(b) => match b.try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    if let Err(e) = self.broker.release(&self.name, &delivery).await {
                        self.broker_error("release", &e);
                    }
                    return;
                }
            },
            None => None,
        };
        let run = crate::deadline::scope(
            self.deadline,
            AssertUnwindSafe(handler(delivery.clone())).catch_unwind(),
        );
        let handled = match tokio::time::timeout(self.deadline, run).await {
            Ok(Ok(r)) => r.into(),
            Ok(Err(_panic)) => Handled::Retry("handler panicked".to_owned()),
            Err(_) => Handled::Retry(format!("deadline of {:?} passed", self.deadline)),
        };
        if let Some(p) = permit {
            p.record(match handled {
                Handled::Done => Verdict::Success,
                Handled::Retry(_) => Verdict::Failure,
                Handled::Reject(_) => Verdict::Ignore,
            });
        }
        self.settle(&delivery, handled).await;
    }

    /// Redeliveries first, then new messages.
    async fn take(&self) -> Result<Vec<Delivery>, super::Error> {
        let mut batch = self
            .broker
            .due(&self.name, self.redelivery, self.batch)
            .await?;
        if batch.len() < self.batch {
            let wait = if batch.is_empty() {
                self.wait
            } else {
                Duration::from_millis(1)
            };
            batch.extend(
                self.broker
                    .receive(&self.name, self.batch - batch.len(), wait)
                    .await?,
            );
        }
        Ok(batch)
    }

    async fn settle(&self, d: &Delivery, handled: Handled) {
        let c = &self.counters;
        let result = match handled {
            Handled::Done => {
                c.done.fetch_add(1, Ordering::AcqRel);
                self.broker.ack(d).await
            }
            Handled::Retry(reason) if d.attempt >= self.attempts => {
                c.dead.fetch_add(1, Ordering::AcqRel);
                tracing::warn!(consumer = %self.name, key = %d.key, attempts = d.attempt, %reason, "message dead-lettered");
                let reason = format!("failed {} times; last: {reason}", d.attempt);
                self.broker.dead_letter(d, &reason).await
            }
            Handled::Retry(reason) => {
                c.retried.fetch_add(1, Ordering::AcqRel);
                tracing::info!(
                    consumer = %self.name,
                    key = %d.key,
                    attempt = d.attempt,
                    retry_in = ?self.redelivery.backoff(d.attempt),
                    %reason,
                    "message will be retried"
                );
                Ok(())
            }
            Handled::Reject(reason) => {
                c.dead.fetch_add(1, Ordering::AcqRel);
                tracing::warn!(consumer = %self.name, key = %d.key, %reason, "message rejected: dead-lettered");
                self.broker.dead_letter(d, &reason).await
            }
        };
        if let Err(e) = result {
            // Not settled: delivered again later (at least once).
            self.broker_error("settle", &e);
        }
    }
}
