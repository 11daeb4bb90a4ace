//! Retry storms: edge -> mid -> back -> a leaf that fails everything, each
//! layer retrying up to 3 attempts. Leaf calls per original request, with
//! naive retries and with each of probity's defences added in turn.

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use probity_probe::retry::{
    self, AttemptLayer, Backoff, RetryBudget, RetryPolicy, downstream_gave_up,
};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt as _};

use crate::http::{BoxError, HttpClient, serve};

/// What each layer's retry policy has.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Variant {
    pub(crate) name: &'static str,
    /// Retry budget: share of recent requests (floor 1 retry/s).
    pub(crate) budget: Option<f64>,
    /// Do not retry while serving a retry, and pass the attempt number
    /// on (`x-probity-attempt`).
    pub(crate) refuse_nested: bool,
    /// Do not retry a failure a downstream already gave up on
    /// (`x-probity-no-retry`).
    pub(crate) honour_give_up: bool,
}

pub(crate) const VARIANTS: [Variant; 5] = [
    Variant {
        name: "naive: up to 3 attempts per layer",
        budget: None,
        refuse_nested: false,
        honour_give_up: false,
    },
    Variant {
        name: "+ attempt propagation (a retry is never retried below)",
        budget: None,
        refuse_nested: true,
        honour_give_up: false,
    },
    Variant {
        name: "+ retry budget, 20% per layer",
        budget: Some(0.2),
        refuse_nested: true,
        honour_give_up: false,
    },
    Variant {
        name: "+ give-up propagation (probity)",
        budget: Some(0.2),
        refuse_nested: true,
        honour_give_up: true,
    },
    Variant {
        name: "probity with a 10% budget",
        budget: Some(0.1),
        refuse_nested: true,
        honour_give_up: true,
    },
];

/// One variant's result.
#[derive(Debug)]
pub(crate) struct StormRun {
    pub(crate) variant: Variant,
    pub(crate) originals: u64,
    pub(crate) calls: [u64; 3],
    pub(crate) leaf_calls: u64,
}

/// Runs every variant with `rps` originals a second for `length`.
pub(crate) fn run_all(rps: u32, length: Duration) -> Result<Vec<StormRun>, BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut runs = Vec::new();
    for variant in VARIANTS {
        eprintln!("[lab] retry storm: {}", variant.name);
        runs.push(runtime.block_on(storm(variant, rps, length))?);
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(runs)
}

#[derive(Clone)]
struct Layer {
    next: String,
    calls: Arc<AtomicU64>,
    policy: RetryPolicy<http::Response<String>, std::io::Error>,
    /// Pass the inbound attempt number on (with `refuse_nested`).
    propagate: bool,
    client: HttpClient,
}

async fn storm(variant: Variant, rps: u32, length: Duration) -> Result<StormRun, BoxError> {
    let leaf_calls = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&leaf_calls);
    let leaf = Router::new()
        .route(
            "/work",
            get(move || {
                let counted = Arc::clone(&counted);
                async move {
                    counted.fetch_add(1, Ordering::Relaxed);
                    (StatusCode::SERVICE_UNAVAILABLE, "leaf down\n")
                }
            }),
        )
        .layer(AttemptLayer);
    let mut next = serve(leaf).await?;
    let mut calls = Vec::new();
    for _ in 0..3 {
        let layer = Layer {
            next: format!("http://{next}/work"),
            calls: Arc::new(AtomicU64::new(0)),
            policy: policy(variant),
            propagate: variant.refuse_nested,
            client: HttpClient::new(),
        };
        calls.push(Arc::clone(&layer.calls));
        let app = Router::new()
            .route("/work", get(forward))
            .with_state(layer)
            .layer(AttemptLayer);
        next = serve(app).await?;
    }
    let originals = drive(next, rps, length).await;
    // calls[0] is the back layer (next to the leaf), calls[2] the edge.
    let calls = [2, 1, 0].map(|i| calls[i].load(Ordering::Relaxed));
    Ok(StormRun {
        variant,
        originals,
        calls,
        leaf_calls: leaf_calls.load(Ordering::Relaxed),
    })
}

fn policy(variant: Variant) -> RetryPolicy<http::Response<String>, std::io::Error> {
    let mut policy = RetryPolicy::new(
        3,
        Backoff::new(Duration::from_millis(5), Duration::from_millis(50)),
    )
    .retry_if(|r: &Reply| r.as_ref().map_or(true, |r| r.status().is_server_error()))
    .refuse_nested(variant.refuse_nested);
    if let Some(share) = variant.budget {
        policy = policy.budget(Arc::new(RetryBudget::new(
            Duration::from_secs(10),
            1,
            share,
        )));
    }
    if variant.honour_give_up {
        policy = policy.exhausted_if(downstream_gave_up);
    }
    policy
}

/// One layer: call the next one (with retries), answer 200 or 502.
async fn forward(State(layer): State<Layer>) -> (StatusCode, &'static str) {
    layer.calls.fetch_add(1, Ordering::Relaxed);
    match call_next(&layer).await {
        Ok(r) if r.status().is_success() => (StatusCode::OK, "done\n"),
        _ => (StatusCode::BAD_GATEWAY, "downstream failed\n"),
    }
}

type Reply = Result<http::Response<String>, std::io::Error>;

/// The retried call, boxed so the handler's future is plainly `Send`.
fn call_next(layer: &Layer) -> std::pin::Pin<Box<dyn Future<Output = Reply> + Send>> {
    let client = layer.client.clone();
    let svc = ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(layer.policy.clone()))
        .service_fn(move |req: http::Request<String>| {
            let client = client.clone();
            async move { client.send(req).await }
        });
    let mut req = http::Request::get(layer.next.as_str()).body(String::new());
    if layer.propagate
        && let Ok(req) = &mut req
    {
        retry::propagate_attempt(req.headers_mut());
    }
    Box::pin(async move { svc.oneshot(req.map_err(std::io::Error::other)?).await })
}

/// Open-model load on the edge; returns the number of originals sent.
async fn drive(edge: SocketAddr, rps: u32, length: Duration) -> u64 {
    let client = HttpClient::new();
    let count = (length.as_secs_f64() * f64::from(rps)) as u64;
    let start = Instant::now();
    let mut inflight = JoinSet::new();
    for i in 0..count {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / f64::from(rps))).await;
        let client = client.clone();
        let uri = format!("http://{edge}/work");
        inflight.spawn(async move {
            if let Ok(req) = http::Request::get(uri).body(String::new()) {
                let _ = tokio::time::timeout(Duration::from_secs(10), client.send(req)).await;
            }
        });
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}
    count
}

/// The storm table.
pub(crate) fn markdown(runs: &[StormRun]) -> String {
    let mut out = String::from(
        "| retries at each of 3 layers | originals | edge calls | mid calls | back calls | leaf calls | leaf calls per original |\n|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in runs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.2}x |",
            r.variant.name,
            r.originals,
            r.calls[0],
            r.calls[1],
            r.calls[2],
            r.leaf_calls,
            r.leaf_calls as f64 / r.originals.max(1) as f64
        );
    }
    out
}
