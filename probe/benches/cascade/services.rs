//! The two services: `payments` (slowed by fault injection) and `orders`
//! in one of the four configurations.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use probity_probe::breaker::{CircuitBreaker, HalfOpen, Verdict};
use probity_probe::bulkhead::Bulkhead;
use probity_probe::chaos::Chaos;
use probity_probe::deadline::{self, DeadlineLayer};
use probity_probe::health::{CheckOptions, Dependency, Health, TcpCheck};
use probity_probe::shed::LoadShedLayer;

use crate::http::{BoxError, HttpClient, serve};
use crate::scenario::{Config, Phase, Scenario};

/// `payments`: `POST /charge` answers "charged" after the fault's delay.
pub(crate) async fn payments(chaos: &Chaos) -> std::io::Result<SocketAddr> {
    let app = Router::new()
        .route("/charge", post(|| async { "charged" }))
        .layer(chaos.layer());
    serve(app).await
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

/// One running `orders` and what the run observes of it.
pub(crate) struct Orders {
    pub(crate) addr: SocketAddr,
    pub(crate) breaker: Option<CircuitBreaker>,
    pub(crate) in_flight: Arc<InFlight>,
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
}

const HEADROOM: Duration = Duration::from_millis(50);

/// Starts `orders` in `config` in front of payments at `payments`.
pub(crate) async fn orders(
    config: Config,
    scenario: &Scenario,
    payments: SocketAddr,
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
    let bulkhead =
        (config == Config::Probity).then(|| Bulkhead::new(scenario.bulkhead, Duration::ZERO));
    let in_flight = Arc::new(InFlight::default());

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
    })
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

async fn checkout(State(edge): State<Edge>) -> Response {
    match edge.config {
        Config::Naive => match charge(&edge, HeaderMap::new()).await {
            Ok(true) => (StatusCode::OK, "charged\n").into_response(),
            _ => (StatusCode::BAD_GATEWAY, "payments failed\n").into_response(),
        },
        Config::TimeoutOnly => {
            match tokio::time::timeout(edge.timeout, charge(&edge, HeaderMap::new())).await {
                Ok(Ok(true)) => (StatusCode::OK, "charged\n").into_response(),
                Ok(_) => (StatusCode::BAD_GATEWAY, "payments failed\n").into_response(),
                Err(_) => (StatusCode::GATEWAY_TIMEOUT, "payments timed out\n").into_response(),
            }
        }
        Config::Probity | Config::ProbityNoBulkhead => guarded_checkout(&edge).await,
    }
}

/// The probity configurations: budget, bulkhead, breaker, then the call
/// with the remaining budget (at most its share); every refusal or failure
/// falls back to accepting the order with the payment pending.
async fn guarded_checkout(edge: &Edge) -> Response {
    let mut headers = HeaderMap::new();
    let timeout = match deadline::propagate(&mut headers, HEADROOM) {
        Ok(budget) => budget.map_or(edge.call_timeout, |b| b.min(edge.call_timeout)),
        Err(_) => return pending("budget spent"),
    };
    let _slot = match &edge.bulkhead {
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
