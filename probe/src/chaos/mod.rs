//! Fault injection for game days (feature `chaos`): add latency, fail a
//! share of calls, or hang them, on one dependency or one route, switched
//! at runtime. Off until something sets a fault; absent from builds
//! without the feature.
//!
//! A [`Chaos`] is one named switch. Wrap a dependency call with
//! [`Chaos::wrap`], or an HTTP service with [`Chaos::layer`]; set the fault
//! from code, from an environment variable ([`Chaos::from_env`]) or through
//! the bearer-token-guarded endpoint [`Chaos::router`] serves.
//!
//! ```
//! use std::time::Duration;
//! use probity_probe::chaos::{Chaos, Fault};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let payments = Chaos::new("payments");
//! // The fortnightly drill: +500 ms on every call to payments.
//! payments.set(Fault::latency(Duration::from_millis(500)));
//! let charged = payments.wrap(async { "charged" }).await;
//! assert_eq!(charged, Ok("charged"));
//! payments.clear();
//! # }
//! ```
//!
//! The fault syntax, used by the environment variable, the endpoint and
//! [`Fault`]'s `Display`: comma-separated `latency=<duration>`,
//! `jitter=<duration>` (uniform, added to the latency), `error=<0..1>`,
//! `hang`; `off` for none. Durations are `250ms`, `2s` or `1.5s`:
//! `PROBITY_CHAOS_PAYMENTS="latency=8s,jitter=200ms,error=0.05"`.

mod endpoint;

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tower::{Layer, Service};

use crate::refuse::{ResponseFuture, refuse};

/// What to do to each call. The default is nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Fault {
    /// Added before the call.
    pub latency: Duration,
    /// A uniform extra delay in `0..=jitter`, added to `latency`.
    pub jitter: Duration,
    /// The share of calls failed without running them, `0.0..=1.0`.
    pub error_rate: f64,
    /// Never complete (until the caller's own timeout gives up).
    pub hang: bool,
}

impl Fault {
    /// No fault.
    pub fn none() -> Self {
        Self::default()
    }

    /// A fixed delay on every call.
    pub fn latency(latency: Duration) -> Self {
        Self {
            latency,
            ..Self::default()
        }
    }

    /// Fail this share of calls (clamped to `0.0..=1.0`).
    pub fn errors(rate: f64) -> Self {
        Self::default().with_errors(rate)
    }

    /// Calls never complete.
    pub fn hang() -> Self {
        Self {
            hang: true,
            ..Self::default()
        }
    }

    /// Adds up to `jitter` (uniform) to the delay.
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Also fails this share of calls.
    pub fn with_errors(mut self, rate: f64) -> Self {
        self.error_rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self
    }

    /// Whether it does anything.
    pub fn is_active(&self) -> bool {
        self.hang || self.error_rate > 0.0 || !self.latency.is_zero() || !self.jitter.is_zero()
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.hang {
            parts.push("hang".to_owned());
        }
        if !self.latency.is_zero() {
            parts.push(format!("latency={}", millis(self.latency)));
        }
        if !self.jitter.is_zero() {
            parts.push(format!("jitter={}", millis(self.jitter)));
        }
        if self.error_rate > 0.0 {
            parts.push(format!("error={}", self.error_rate));
        }
        if parts.is_empty() {
            f.write_str("off")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// A fault description that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid fault {input:?}: {problem} (expected e.g. \"latency=500ms,jitter=100ms,error=0.1\", \"hang\" or \"off\")"
)]
pub struct ParseFaultError {
    input: String,
    problem: String,
}

impl std::str::FromStr for Fault {
    type Err = ParseFaultError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |problem: String| ParseFaultError {
            input: input.to_owned(),
            problem,
        };
        let mut fault = Self::none();
        let trimmed = input.trim();
        if trimmed.is_empty() || trimmed == "off" {
            return Ok(fault);
        }
        for part in trimmed.split(',').map(str::trim) {
            match part.split_once('=') {
                None if part == "hang" => fault.hang = true,
                Some(("latency", v)) => fault.latency = duration(v).map_err(err)?,
                Some(("jitter", v)) => fault.jitter = duration(v).map_err(err)?,
                Some(("error", v)) => {
                    let rate: f64 = v
                        .parse()
                        .map_err(|_| err(format!("error={v} is not a number")))?;
                    if !(0.0..=1.0).contains(&rate) {
                        return Err(err(format!("error={v} is outside 0..1")));
                    }
                    fault.error_rate = rate;
                }
                _ => return Err(err(format!("unknown part {part:?}"))),
            }
        }
        Ok(fault)
    }
}

fn duration(v: &str) -> Result<Duration, String> {
    let (number, unit) = if let Some(n) = v.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1.0)
    } else {
        return Err(format!("{v:?} needs a unit (ms or s)"));
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{v:?} is not a duration"))?;
    if !value.is_finite() || value < 0.0 || value * unit > 86_400.0 {
        return Err(format!("{v:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(value * unit))
}

/// The call was failed on purpose.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("chaos: injected failure on {0}")]
pub struct Injected(pub Arc<str>);

/// One named fault switch; clones share it.
#[derive(Clone)]
pub struct Chaos {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    label: Arc<str>,
    fault: RwLock<Fault>,
    rng: Mutex<fastrand::Rng>,
}

impl fmt::Debug for Chaos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chaos")
            .field("name", &self.inner.name)
            .field("fault", &self.fault())
            .finish()
    }
}

impl Chaos {
    /// A switch called `name`, off.
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        let label: Arc<str> = Arc::from(name.as_str());
        Self {
            inner: Arc::new(Inner {
                name,
                label,
                fault: RwLock::new(Fault::none()),
                rng: Mutex::new(fastrand::Rng::new()),
            }),
        }
    }

    /// A switch called `name`, set from `PROBITY_CHAOS_<NAME>` (upper
    /// case, `-` and `.` as `_`) when that variable is present.
    ///
    /// # Errors
    ///
    /// When the variable is present but not a valid fault: a typo in a
    /// drill should stop the start, not run without the fault.
    pub fn from_env(name: impl Into<String>) -> Result<Self, ParseFaultError> {
        let chaos = Self::new(name);
        if let Ok(value) = std::env::var(chaos.env_var()) {
            chaos.set(value.parse()?);
        }
        Ok(chaos)
    }

    /// The environment variable [`Chaos::from_env`] reads.
    pub fn env_var(&self) -> String {
        let upper: String = self
            .inner
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("PROBITY_CHAOS_{upper}")
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Seeds the jitter and error draws, for repeatable runs.
    pub fn seed(self, seed: u64) -> Self {
        *self
            .inner
            .rng
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = fastrand::Rng::with_seed(seed);
        self
    }

    /// Sets the fault for every call from now on.
    pub fn set(&self, fault: Fault) {
        *self
            .inner
            .fault
            .write()
            .unwrap_or_else(PoisonError::into_inner) = fault;
        if fault.is_active() {
            tracing::warn!(target: "probity_probe::chaos", name = %self.inner.name, %fault, "chaos fault set");
        } else {
            tracing::info!(target: "probity_probe::chaos", name = %self.inner.name, "chaos fault cleared");
        }
    }

    /// Removes the fault.
    pub fn clear(&self) {
        self.set(Fault::none());
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        *self
            .inner
            .fault
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies the fault to one call: waits, hangs, or decides to fail it.
    ///
    /// # Errors
    ///
    /// [`Injected`] for the share of calls the fault fails.
    pub async fn inject(&self) -> Result<(), Injected> {
        let fault = self.fault();
        if !fault.is_active() {
            return Ok(());
        }
        if fault.hang {
            std::future::pending::<()>().await;
        }
        let (extra, fail) = {
            let mut rng = self
                .inner
                .rng
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let extra = if fault.jitter.is_zero() {
                Duration::ZERO
            } else {
                fault.jitter.mul_f64(rng.f64())
            };
            (
                extra,
                fault.error_rate > 0.0 && rng.f64() < fault.error_rate,
            )
        };
        let delay = fault.latency + extra;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if fail {
            return Err(Injected(Arc::clone(&self.inner.label)));
        }
        Ok(())
    }

    /// Runs `call` under the fault: after the delay, unless failed or hung.
    ///
    /// # Errors
    ///
    /// [`Injected`] when the fault fails the call; `call` is not run then.
    pub async fn wrap<F: Future>(&self, call: F) -> Result<F::Output, Injected> {
        self.inject().await?;
        Ok(call.await)
    }

    /// A tower layer applying the fault to every request of an HTTP
    /// service; a failed request is answered `503` with
    /// `x-probity-chaos: injected` without calling the service.
    pub fn layer(&self) -> ChaosLayer {
        ChaosLayer {
            chaos: self.clone(),
        }
    }
}

/// The layer [`Chaos::layer`] returns.
#[derive(Debug, Clone)]
pub struct ChaosLayer {
    chaos: Chaos,
}

impl<S> Layer<S> for ChaosLayer {
    type Service = ChaosService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ChaosService {
            inner,
            chaos: self.chaos.clone(),
        }
    }
}

/// The service [`ChaosLayer`] produces.
#[derive(Debug, Clone)]
pub struct ChaosService<S> {
    inner: S,
    chaos: Chaos,
}

impl<S, B, R> Service<Request<B>> for ChaosService<S>
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: From<&'static str> + Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = ResponseFuture<R, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if !self.chaos.fault().is_active() {
            return Box::pin(self.inner.call(req));
        }
        // The ready clone serves this request; the fresh one waits its turn.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let chaos = self.chaos.clone();
        Box::pin(async move {
            if chaos.inject().await.is_err() {
                let mut response = refuse::<R, S::Error>(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "chaos: injected failure\n",
                    None,
                )
                .await?;
                response.headers_mut().insert(
                    "x-probity-chaos",
                    http::HeaderValue::from_static("injected"),
                );
                return Ok(response);
            }
            inner.call(req).await
        })
    }
}

pub use endpoint::{WeakToken, router};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_print_the_same_syntax() {
        let fault: Fault = "latency=500ms, jitter=0.1s,error=0.25"
            .parse()
            .expect("valid");
        assert_eq!(fault.latency, Duration::from_millis(500));
        assert_eq!(fault.jitter, Duration::from_millis(100));
        assert!((fault.error_rate - 0.25).abs() < f64::EPSILON);
        assert_eq!(fault.to_string(), "latency=500ms,jitter=100ms,error=0.25");
        assert_eq!(fault.to_string().parse::<Fault>(), Ok(fault));
        assert_eq!("hang".parse::<Fault>(), Ok(Fault::hang()));
        assert_eq!("off".parse::<Fault>(), Ok(Fault::none()));
        assert_eq!(Fault::none().to_string(), "off");
        for bad in [
            "latency=5",
            "error=2",
            "error=x",
            "slow",
            "latency=-1s",
            "jitter=1e9s",
        ] {
            let err = bad.parse::<Fault>().expect_err(bad);
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn latency_jitter_errors_and_hangs() {
        let chaos = Chaos::new("payments").seed(7);
        let start = tokio::time::Instant::now();
        assert_eq!(chaos.wrap(async { 1 }).await, Ok(1));
        assert_eq!(start.elapsed(), Duration::ZERO, "off by default");

        chaos.set(
            Fault::latency(Duration::from_millis(300)).with_jitter(Duration::from_millis(100)),
        );
        for _ in 0..20 {
            let start = tokio::time::Instant::now();
            assert_eq!(chaos.wrap(async { 1 }).await, Ok(1));
            let took = start.elapsed();
            assert!(took >= Duration::from_millis(300), "{took:?}");
            assert!(took <= Duration::from_millis(400), "{took:?}");
        }

        chaos.set(Fault::errors(0.3));
        let failed = (0..1000)
            .filter(|_| {
                futures_util::FutureExt::now_or_never(chaos.inject()).is_some_and(|r| r.is_err())
            })
            .count();
        assert!((230..=370).contains(&failed), "{failed} of 1000 at 30%");
        let err = chaos.wrap(async { 1 }).await.err();
        if let Some(err) = err {
            assert_eq!(err.to_string(), "chaos: injected failure on payments");
        }

        chaos.set(Fault::hang());
        let hung = tokio::time::timeout(Duration::from_secs(3600), chaos.wrap(async { 1 })).await;
        assert!(hung.is_err(), "a hang outlasts any timeout");

        chaos.clear();
        assert_eq!(chaos.wrap(async { 1 }).await, Ok(1));
    }

    #[test]
    fn env_names_and_bad_env_values() {
        let chaos = Chaos::new("payments-db.v2");
        assert_eq!(chaos.env_var(), "PROBITY_CHAOS_PAYMENTS_DB_V2");
        assert!(!chaos.fault().is_active());
    }
}
