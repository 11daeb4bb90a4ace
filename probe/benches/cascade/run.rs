//! One configuration, one timeline: start payments and orders, drive the
//! open-model load, flip the fault at the phase boundaries, and watch the
//! breaker and the probes.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use probity_probe::breaker::{CircuitBreaker, State};
use probity_probe::chaos::{Chaos, Fault};
use probity_probe::deadline::ENVOY_TIMEOUT_MS;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::http::{BoxError, HttpClient};
use crate::scenario::{Config, Phase, Scenario};
use crate::services;

/// Which endpoint a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    Catalog,
    Checkout,
}

/// How a request ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// 200.
    Ok,
    /// 202: the fallback ("order accepted, payment pending").
    Degraded,
    /// Another status, no answer within the client timeout, or a
    /// connection error.
    Failed,
}

/// One request: when it was due (since the start), how long it took from
/// then (so a late send counts against the server, not for it), and how it
/// ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    pub(crate) endpoint: Endpoint,
    /// Which replica it was sent to (0 with one).
    pub(crate) replica: usize,
    /// The request's number; a checkout's order id is `order-<n>`.
    pub(crate) n: u64,
    pub(crate) due: Duration,
    pub(crate) latency: Duration,
    pub(crate) outcome: Outcome,
}

/// Everything observed in one configuration's run.
#[derive(Debug)]
pub(crate) struct ConfigRun {
    pub(crate) config: Config,
    pub(crate) samples: Vec<Sample>,
    pub(crate) peak_in_flight: [u64; 3],
    /// Breaker transitions: when, and the new state.
    pub(crate) breaker: Vec<(Duration, State)>,
    /// `/readyz` answers that differ from the previous one: when, ready.
    pub(crate) readiness: Vec<(Duration, bool)>,
    /// `/livez` polls per phase: (answered 200, asked).
    pub(crate) livez: [(u32, u32); 3],
}

/// Runs `config` through the whole timeline on a runtime of its own, so
/// nothing of one configuration outlives its run.
pub(crate) fn run(config: Config, scenario: &Scenario) -> Result<ConfigRun, BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(timeline(config, scenario));
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}

async fn timeline(config: Config, scenario: &Scenario) -> Result<ConfigRun, BoxError> {
    let chaos = Chaos::new("payments").seed(42);
    chaos.set(healthy_fault(scenario));
    let (payments, _ledger) = services::payments(&chaos).await?;
    let orders = services::orders(config, scenario, payments, None).await?;
    let client = HttpClient::new();
    // Let the readiness check pass before the clock starts.
    wait_ready(&client, orders.addr).await?;

    let start = Instant::now();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let mut load = start_load(start, scenario, &client, &[orders.addr], &samples);
    let breaker = record_transitions(orders.breaker.as_ref(), start);
    let end = start + scenario.total();
    let readiness = tokio::spawn(watch_readiness(client.clone(), orders.addr, start, end));
    let livez = tokio::spawn(watch_livez(
        client.clone(),
        orders.addr,
        start,
        end,
        scenario.clone(),
    ));

    tokio::time::sleep_until(start + scenario.healthy).await;
    orders
        .in_flight
        .phase
        .store(Phase::Slow.index(), Ordering::Release);
    chaos.set(Fault::latency(scenario.slowed).with_jitter(scenario.jitter));
    tokio::time::sleep_until(start + scenario.healthy + scenario.slow).await;
    orders
        .in_flight
        .phase
        .store(Phase::Recovered.index(), Ordering::Release);
    chaos.set(healthy_fault(scenario));

    while let Some(done) = load.join_next().await {
        done?;
    }
    let readiness = readiness.await?;
    let livez = livez.await?;
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(PoisonError::into_inner));
    let breaker = std::mem::take(&mut *breaker.lock().unwrap_or_else(PoisonError::into_inner));
    Ok(ConfigRun {
        config,
        samples,
        peak_in_flight: Phase::ALL.map(|p| orders.in_flight.peak(p)),
        breaker,
        readiness,
        livez,
    })
}

/// Both endpoints' open-model load from `start`, round robin over `addrs`.
pub(crate) fn start_load(
    start: Instant,
    scenario: &Scenario,
    client: &HttpClient,
    addrs: &[SocketAddr],
    samples: &Arc<Mutex<Vec<Sample>>>,
) -> JoinSet<()> {
    let mut load = JoinSet::new();
    for (endpoint, rps) in [
        (Endpoint::Catalog, scenario.catalog_rps),
        (Endpoint::Checkout, scenario.checkout_rps),
    ] {
        load.spawn(drive(
            endpoint,
            rps,
            start,
            scenario.clone(),
            client.clone(),
            addrs.to_vec(),
            Arc::clone(samples),
        ));
    }
    load
}

/// A breaker's transitions: when (since `start`), and the new state.
pub(crate) type Transitions = Arc<Mutex<Vec<(Duration, State)>>>;

/// Records `breaker`'s transitions from now on (nothing without one).
pub(crate) fn record_transitions(breaker: Option<&CircuitBreaker>, start: Instant) -> Transitions {
    let seen = Transitions::default();
    if let Some(b) = breaker {
        let mut events = b.subscribe();
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(t) => seen
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((start.elapsed(), t.to)),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }
    seen
}

fn healthy_fault(scenario: &Scenario) -> Fault {
    Fault::latency(scenario.fast).with_jitter(scenario.jitter)
}

pub(crate) async fn wait_ready(client: &HttpClient, addr: SocketAddr) -> Result<(), BoxError> {
    for _ in 0..100 {
        if probe(client, addr, "/readyz").await == Some(200) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(format!("orders on {addr} did not become ready within 10 s").into())
}

/// The status of one probe, with the kubelet's default 1 s timeout.
async fn probe(client: &HttpClient, addr: SocketAddr, path: &str) -> Option<u16> {
    let req = http::Request::get(format!("http://{addr}{path}"))
        .body(String::new())
        .ok()?;
    match tokio::time::timeout(Duration::from_secs(1), client.send(req)).await {
        Ok(Ok(r)) => Some(r.status().as_u16()),
        _ => None,
    }
}

/// The open model: request `i` is due at `start + i / rps` and is sent
/// then, whether or not earlier ones have returned; round robin over
/// `addrs`. Checkouts carry the order id `order-<i>`.
pub(crate) async fn drive(
    endpoint: Endpoint,
    rps: u32,
    start: Instant,
    scenario: Scenario,
    client: HttpClient,
    addrs: Vec<SocketAddr>,
    samples: Arc<Mutex<Vec<Sample>>>,
) {
    let total = scenario.total();
    let count = (total.as_secs_f64() * f64::from(rps)) as u64;
    let (method, path) = match endpoint {
        Endpoint::Catalog => (http::Method::GET, "/catalog"),
        Endpoint::Checkout => (http::Method::POST, "/checkout"),
    };
    let uris: Vec<String> = addrs.iter().map(|a| format!("http://{a}{path}")).collect();
    let budget = scenario.client_timeout.as_millis().to_string();
    let mut inflight = JoinSet::new();
    for i in 0..count {
        let due = Duration::from_secs_f64(i as f64 / f64::from(rps));
        tokio::time::sleep_until(start + due).await;
        let replica = (i as usize) % uris.len().max(1);
        let mut req = http::Request::builder()
            .method(method.clone())
            .uri(uris[replica].as_str())
            .header(ENVOY_TIMEOUT_MS, budget.as_str());
        if endpoint == Endpoint::Checkout {
            req = req.header(services::ORDER_ID, format!("order-{i}"));
        }
        let req = req.body(String::new());
        let (client, samples) = (client.clone(), Arc::clone(&samples));
        let timeout = scenario.client_timeout;
        inflight.spawn(async move {
            let status = match req {
                Ok(req) => tokio::time::timeout(timeout, client.send(req)).await,
                Err(_) => Ok(Err(std::io::Error::other("unbuildable request"))),
            };
            let outcome = match status.map(|r| r.map(|r| r.status().as_u16())) {
                Ok(Ok(200)) => Outcome::Ok,
                Ok(Ok(202)) => Outcome::Degraded,
                _ => Outcome::Failed,
            };
            let latency = start.elapsed().saturating_sub(due);
            samples
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Sample {
                    endpoint,
                    replica,
                    n: i,
                    due,
                    latency,
                    outcome,
                });
        });
        // Reap finished requests as we go so the set stays small.
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}
}

/// Polls `/readyz` every 100 ms and records each change.
async fn watch_readiness(
    client: HttpClient,
    addr: SocketAddr,
    start: Instant,
    end: Instant,
) -> Vec<(Duration, bool)> {
    let mut changes = Vec::new();
    let mut last = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while Instant::now() < end {
        tick.tick().await;
        let ready = probe(&client, addr, "/readyz").await == Some(200);
        if last != Some(ready) {
            changes.push((start.elapsed(), ready));
            last = Some(ready);
        }
    }
    changes
}

/// Polls `/livez` every second, as a kubelet would.
async fn watch_livez(
    client: HttpClient,
    addr: SocketAddr,
    start: Instant,
    end: Instant,
    scenario: Scenario,
) -> [(u32, u32); 3] {
    let mut counts = [(0, 0); 3];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while Instant::now() < end {
        tick.tick().await;
        let phase = scenario.phase_at(start.elapsed()).index();
        let ok = probe(&client, addr, "/livez").await == Some(200);
        counts[phase].1 += 1;
        counts[phase].0 += u32::from(ok);
    }
    counts
}
