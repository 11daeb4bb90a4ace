//! The two services: `payments` (slowed by fault injection) and `orders`
//! in one of the four configurations.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use probity_probe::breaker::{CircuitBreaker, HalfOpen, Verdict};
use probity_probe::bulkhead::{AdaptiveLimit, Bulkhead};
use probity_probe::chaos::Chaos;
use probity_probe::deadline::{self, DeadlineLayer};
use probity_probe::health::{CheckOptions, Dependency, Health, TcpCheck};
use probity_probe::queue::{Consumer, Enqueued, RedisQueue};
use probity_probe::shared::{Fleet, Quorum};
use probity_probe::shed::LoadShedLayer;

use crate::http::{BoxError, HttpClient, serve};
use crate::scenario::{Config, Phase, Scenario};

/// The header carrying an order's id: the idempotency key of its charge.
pub(crate) const ORDER_ID: &str = "idempotency-key";

/// What payments saw: charges per idempotency key, and calls arriving in
/// each phase.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    charges: Mutex<HashMap<String, (u32, tokio::time::Instant)>>,
    pub(crate) calls: [AtomicU64; 3],
    pub(crate) phase: AtomicUsize,
}

impl Ledger {
    /// Times each key was charged, and when it was first.
    pub(crate) fn charges(&self) -> HashMap<String, (u32, tokio::time::Instant)> {
        self.charges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// `payments`: `POST /charge` answers "charged" after the fault's delay,
/// and records the charge under its idempotency key.
pub(crate) async fn payments(chaos: &Chaos) -> std::io::Result<(SocketAddr, Arc<Ledger>)> {
    let ledger = Arc::new(Ledger::default());
    let counted = Arc::clone(&ledger);
    let app = Router::new()
        .route(
            "/charge",
            post(
                |State(ledger): State<Arc<Ledger>>, headers: HeaderMap| async move {
                    if let Some(key) = headers.get(ORDER_ID).and_then(|v| v.to_str().ok()) {
                        ledger
                            .charges
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .entry(key.to_owned())
                            .or_insert((0, tokio::time::Instant::now()))
                            .0 += 1;
                    }
                    "charged"
                },
            ),
        )
        .with_state(Arc::clone(&ledger))
        .layer(chaos.layer())
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let ledger = Arc::clone(&counted);
            async move {
                let phase = ledger.phase.load(Ordering::Acquire).min(2);
                ledger.calls[phase].fetch_add(1, Ordering::AcqRel);
                next.run(req).await
            }
        }));
    Ok((serve(app).await?, ledger))
}

/// Outbound calls to payments in flight, and the peak of each phase.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    now: AtomicU64,
    peaks: [AtomicU64; 3],
    pub(crate) phase: AtomicUsize,
}

impl InFlight {
    fn enter(self: &Arc<Self>) -> InFlightGuard {
        let now = self.now.fetch_add(1, Ordering::AcqRel) + 1;
        let phase = self.phase.load(Ordering::Acquire).min(2);
        self.peaks[phase].fetch_max(now, Ordering::AcqRel);
        InFlightGuard(Arc::clone(self))
    }

    pub(crate) fn peak(&self, phase: Phase) -> u64 {
        self.peaks[phase.index()].load(Ordering::Acquire)
    }
}

struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a replica of a fleet adds: Redis for shared breaker state (when
/// `share`) and the queue its fallback writes charges to.
#[derive(Clone)]
pub(crate) struct Extras {
    pub(crate) redis: String,
    pub(crate) replica: String,
    pub(crate) share: bool,
    pub(crate) queue: RedisQueue,
}

/// One running `orders` and what the run observes of it.
pub(crate) struct Orders {
    pub(crate) addr: SocketAddr,
    pub(crate) breaker: Option<CircuitBreaker>,
    pub(crate) in_flight: Arc<InFlight>,
    /// Kept for as long as the replica runs.
    pub(crate) _fleet: Option<Fleet>,
    pub(crate) consumer: Option<probity_probe::queue::Backlog>,
}

#[derive(Clone)]
struct Edge {
    config: Config,
    client: HttpClient,
    charge: String,
    breaker: Option<CircuitBreaker>,
    bulkhead: Option<Bulkhead>,
    in_flight: Arc<InFlight>,
    timeout: Duration,
    call_timeout: Duration,
    catalog_work: Duration,
    queue: Option<RedisQueue>,
}

const HEADROOM: Duration = Duration::from_millis(50);

/// Starts `orders` in `config` in front of payments at `payments`; as a
/// replica of a fleet with `extras`.
pub(crate) async fn orders(
    config: Config,
    scenario: &Scenario,
    payments: SocketAddr,
    extras: Option<&Extras>,
) -> Result<Orders, BoxError> {
    // The server's capacity: a fixed pool of workers, requests queue for
    // one (first come, first served) as they would for a thread pool.
    let workers = Bulkhead::new(scenario.workers, Duration::from_secs(3_600));
    let breaker = if config.is_probity() {
        Some(
            CircuitBreaker::builder()
                .count_window(20)
                .minimum_calls(10)
                .failure_rate(0.5)
                .slow_call(Duration::from_millis(500), 0.5)
                .open_for(Duration::from_secs(2), 2.0, Duration::from_secs(8))
                .half_open(HalfOpen::SingleProbe {
                    lease: scenario.call_timeout * 2,
                })
                .build()?,
        )
    } else {
        None
    };
    let bulkhead = match config {
        Config::Probity => Some(Bulkhead::new(scenario.bulkhead, Duration::ZERO)),
        Config::ProbityAdaptive => Some(Bulkhead::adaptive(
            AdaptiveLimit::new(scenario.adaptive.0, scenario.adaptive.1).initial(scenario.bulkhead),
            Duration::ZERO,
        )),
        _ => None,
    };
    let in_flight = Arc::new(InFlight::default());
    let fleet = match (extras, &breaker) {
        (Some(x), Some(b)) if x.share => Some(
            Fleet::builder(&x.redis, "lab-orders")
                .replica(&x.replica)
                .breaker("payments", b, Quorum::Share(0.5))
                .build()?,
        ),
        _ => None,
    };

    let mut health = Health::builder()
        .readiness_with(
            "payments-reachable",
            TcpCheck::new(payments.to_string()),
            CheckOptions::new()
                .interval(Duration::from_secs(1))
                .timeout(Duration::from_millis(500))
                .debounce(2, 2),
        )
        .drain(Duration::from_secs(1), Duration::from_secs(2));
    if let Some(fleet) = &fleet {
        health = health.fleet(fleet.clone());
    }
    if let Some(breaker) = &breaker {
        let mut dependency = Dependency::new("payments")
            .timeout(scenario.call_timeout)
            .breaker(breaker.clone())
            .fallback("order accepted, payment pending");
        if let Some(bulkhead) = &bulkhead {
            dependency = dependency.bulkhead(bulkhead.clone());
        }
        health = health
            .saturation("workers", workers.clone())
            .dependency(dependency);
    }
    let health = health.build()?;

    let edge = Edge {
        config,
        client: HttpClient::new(),
        charge: format!("http://{payments}/charge"),
        breaker: breaker.clone(),
        bulkhead,
        in_flight: Arc::clone(&in_flight),
        timeout: scenario.timeout,
        call_timeout: scenario.call_timeout,
        catalog_work: scenario.catalog_work,
        queue: extras.map(|x| x.queue.clone()),
    };
    let consumer = match (extras, &breaker) {
        (Some(x), Some(b)) => Some(start_consumer(&edge, x, b.clone())?),
        _ => None,
    };

    let mut api = Router::new()
        .route("/catalog", get(catalog))
        .route("/checkout", post(checkout))
        .with_state(edge)
        .layer(middleware::from_fn_with_state(workers.clone(), on_a_worker));
    if config.is_probity() {
        let mut shed = LoadShedLayer::new()
            .bulkhead(workers)
            .health(health.clone())
            .min_budget(Duration::from_millis(50));
        if let Some(breaker) = &breaker {
            shed = shed.breaker(breaker.clone());
        }
        api = api
            .layer(shed)
            .layer(DeadlineLayer::new(scenario.timeout).floor(Duration::from_millis(10)));
    }
    // Probes bypass the worker pool, as probity's router is meant to be
    // mounted (or on its own admin port).
    let addr = serve(api.merge(health.router())).await?;
    Ok(Orders {
        addr,
        breaker,
        in_flight,
        _fleet: fleet,
        consumer,
    })
}

/// The replica's consumer of the charge queue: charges under the
/// payments breaker with the order id as the idempotency key.
fn start_consumer(
    edge: &Edge,
    extras: &Extras,
    breaker: CircuitBreaker,
) -> Result<probity_probe::queue::Backlog, BoxError> {
    let builder = Consumer::builder(extras.queue.clone(), extras.replica.clone())
        .breaker(breaker)
        .deadline(edge.call_timeout)
        .attempts(20)
        .backoff(Duration::from_millis(500), Duration::from_secs(4))
        .visibility(edge.call_timeout * 5)
        .batch(32, Duration::from_millis(200))
        .concurrency(32);
    let backlog = builder.backlog(10_000);
    let consumer = builder.build()?;
    let edge = edge.clone();
    tokio::spawn(async move {
        consumer
            .run(move |d| {
                let edge = edge.clone();
                async move {
                    let mut headers = HeaderMap::new();
                    if let Ok(v) = http::HeaderValue::from_str(&d.key) {
                        headers.insert(ORDER_ID, v);
                    }
                    match charge(&edge, headers).await {
                        Ok(true) => Ok(()),
                        Ok(false) => Err("payments refused".to_owned()),
                        Err(e) => Err(e.to_string()),
                    }
                }
            })
            .await;
    });
    Ok(backlog)
}

/// Runs the request on a worker: waits for one in arrival order, and keeps
/// it until the handler is done, even when the client has gone (a thread
/// does not stop because its caller hung up). The deadline goes along.
async fn on_a_worker(State(workers): State<Bulkhead>, req: Request, next: Next) -> Response {
    let budget = deadline::remaining();
    let job = async move {
        let Ok(_worker) = workers.acquire().await else {
            return (StatusCode::SERVICE_UNAVAILABLE, "no worker\n").into_response();
        };
        next.run(req).await
    };
    let task = tokio::spawn(async move {
        match budget {
            Some(budget) => deadline::scope(budget, job).await,
            None => job.await,
        }
    });
    task.await
        .unwrap_or_else(|_| (StatusCode::INTERNAL_SERVER_ERROR, "worker failed\n").into_response())
}

async fn catalog(State(edge): State<Edge>) -> &'static str {
    tokio::time::sleep(edge.catalog_work).await;
    "catalog\n"
}

fn pending(why: &'static str) -> Response {
    (
        StatusCode::ACCEPTED,
        format!("order accepted, payment pending ({why})\n"),
    )
        .into_response()
}

/// The order's id as the charge's idempotency key.
fn order_headers(inbound: &HeaderMap) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(id) = inbound.get(ORDER_ID) {
        headers.insert(ORDER_ID, id.clone());
    }
    headers
}

async fn checkout(State(edge): State<Edge>, inbound: HeaderMap) -> Response {
    match edge.config {
        Config::Naive => match charge(&edge, order_headers(&inbound)).await {
            Ok(true) => (StatusCode::OK, "charged\n").into_response(),
            _ => (StatusCode::BAD_GATEWAY, "payments failed\n").into_response(),
        },
        Config::TimeoutOnly => {
            match tokio::time::timeout(edge.timeout, charge(&edge, order_headers(&inbound))).await {
                Ok(Ok(true)) => (StatusCode::OK, "charged\n").into_response(),
                Ok(_) => (StatusCode::BAD_GATEWAY, "payments failed\n").into_response(),
                Err(_) => (StatusCode::GATEWAY_TIMEOUT, "payments timed out\n").into_response(),
            }
        }
        Config::Probity | Config::ProbityNoBulkhead | Config::ProbityAdaptive => {
            let response = guarded_checkout(&edge, &inbound).await;
            match (response.status(), &edge.queue) {
                (StatusCode::ACCEPTED, Some(queue)) => enqueue(queue, &inbound).await,
                _ => response,
            }
        }
    }
}

/// The fallback made good: the charge goes to the queue, and the order is
/// accepted only once it is there.
async fn enqueue(queue: &RedisQueue, inbound: &HeaderMap) -> Response {
    let Some(key) = inbound.get(ORDER_ID).and_then(|v| v.to_str().ok()) else {
        return (StatusCode::BAD_REQUEST, "no order id\n").into_response();
    };
    match queue.enqueue(key, b"{}").await {
        Ok(Enqueued::Accepted(_) | Enqueued::Duplicate(_)) => (
            StatusCode::ACCEPTED,
            "order accepted, payment pending (queued)\n",
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot queue the charge: {e}\n"),
        )
            .into_response(),
    }
}

/// The probity configurations: budget, bulkhead, breaker, then the call
/// with the remaining budget (at most its share); every refusal or failure
/// falls back to accepting the order with the payment pending.
async fn guarded_checkout(edge: &Edge, inbound: &HeaderMap) -> Response {
    let mut headers = order_headers(inbound);
    let timeout = match deadline::propagate(&mut headers, HEADROOM) {
        Ok(budget) => budget.map_or(edge.call_timeout, |b| b.min(edge.call_timeout)),
        Err(_) => return pending("budget spent"),
    };
    let slot = match &edge.bulkhead {
        Some(bulkhead) => match bulkhead.try_acquire() {
            Some(slot) => Some(slot),
            None => return pending("bulkhead full"),
        },
        None => None,
    };
    let Some(breaker) = &edge.breaker else {
        return pending("no breaker");
    };
    let Ok(permit) = breaker.try_acquire() else {
        if let Some(slot) = slot {
            slot.unused();
        }
        return pending("breaker open");
    };
    match tokio::time::timeout(timeout, charge(edge, headers)).await {
        Ok(Ok(true)) => {
            permit.record(Verdict::Success);
            (StatusCode::OK, "charged\n").into_response()
        }
        Ok(_) => {
            permit.record(Verdict::Failure);
            pending("payments failed")
        }
        Err(_) => {
            permit.record(Verdict::Failure);
            if let Some(slot) = slot {
                slot.dropped();
            }
            pending("payments timed out")
        }
    }
}

/// One call to payments; true when it charged.
async fn charge(edge: &Edge, headers: HeaderMap) -> Result<bool, BoxError> {
    let _counted = edge.in_flight.enter();
    let mut req = http::Request::post(edge.charge.as_str()).body(String::new())?;
    req.headers_mut().extend(headers);
    let response = edge.client.send(req).await?;
    Ok(response.status().is_success())
}
