//! An orders service with honest probes.
//!
//! - `/readyz` follows a database at `DEP_ADDR` (default `127.0.0.1:5432`)
//!   within seconds: a TCP check every second, failing after 2 misses,
//!   recovering after 2 successes. Queries use a stand-in line protocol
//!   (a query line out, a result line back); `make demo` serves one.
//! - `/livez` reports only the process: the runtime watchdog and the
//!   heartbeat of the consumer loop. It stays 200 while the dependency is
//!   down.
//! - `/startupz` passes once the (simulated) cache warm-up is done.
//! - `GET /orders` calls the dependency under a deadline budget (from
//!   `grpc-timeout` / `x-envoy-expected-rq-timeout-ms`, at most 2 s), a
//!   bulkhead of 16 and a circuit breaker; `/readyz?verbose` shows the
//!   breaker and bulkhead, `GET /dependencies` the whole edge. Requests are
//!   shed with 503 + Retry-After when the bulkhead is full or the budget
//!   is too short.
//! - SIGTERM: `/readyz` fails at once, requests are served for the drain
//!   delay (`DRAIN_DELAY` seconds, default 5), then in-flight requests
//!   finish.
//!
//! ```sh
//! HOST=127.0.0.1 PORT=8080 DEP_ADDR=127.0.0.1:5432 cargo run -p probity-probe --example orders
//! curl -s 'localhost:8080/readyz?verbose'
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use probity_probe::breaker::{CircuitBreaker, Verdict};
use probity_probe::bulkhead::Bulkhead;
use probity_probe::deadline::{self, DeadlineLayer};
use probity_probe::health::{CheckOptions, Dependency, Health, ProbeTarget, TcpCheck};
use probity_probe::shed::LoadShedLayer;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let port: u16 = match std::env::var("PORT") {
        Ok(p) => p.parse().map_err(|e| format!("PORT={p:?}: {e}"))?,
        Err(_) => 8080,
    };
    let dep = std::env::var("DEP_ADDR").unwrap_or_else(|_| "127.0.0.1:5432".into());
    let drain_delay: u64 = match std::env::var("DRAIN_DELAY") {
        Ok(s) => s.parse().map_err(|e| format!("DRAIN_DELAY={s:?}: {e}"))?,
        Err(_) => 5,
    };

    let breaker = CircuitBreaker::builder()
        .count_window(50)
        .minimum_calls(10)
        .slow_call(Duration::from_millis(500), 0.8)
        .build()?;
    let bulkhead = Bulkhead::new(16, Duration::from_millis(10));

    let warmed = Arc::new(AtomicBool::new(false));
    let warm = Arc::clone(&warmed);
    let health = Health::builder()
        .readiness_with(
            "postgres",
            TcpCheck::new(dep.clone()),
            CheckOptions::new()
                .interval(Duration::from_secs(1))
                .timeout(Duration::from_millis(500))
                .debounce(2, 2),
        )
        .startup("cache-warmup", move || {
            let warm = Arc::clone(&warm);
            async move {
                if warm.load(Ordering::Acquire) {
                    Ok(())
                } else {
                    Err("cache still warming")
                }
            }
        })
        .dependency(
            Dependency::new("postgres-queries")
                .timeout(Duration::from_millis(800))
                .breaker(breaker.clone())
                .bulkhead(bulkhead.clone())
                .fallback("answer 503 with Retry-After; clients retry later"),
        )
        .drain(Duration::from_secs(drain_delay), Duration::from_secs(20))
        .probe_target(ProbeTarget::port(port))
        .build()?;

    // Simulated warm-up.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        warmed.store(true, Ordering::Release);
    });

    // The consumer loop proves progress without depending on its broker.
    let beat = health.heartbeat("consumer-loop", Duration::from_secs(30));
    tokio::spawn(async move {
        loop {
            // ... poll the broker, handle messages ...
            tokio::time::sleep(Duration::from_millis(500)).await;
            beat.beat();
        }
    });

    println!("{}", health.recommended_probes());
    let (b, bh, addr) = (breaker.clone(), bulkhead.clone(), dep);
    let orders = get(move || {
        let (breaker, bulkhead, addr) = (b.clone(), bh.clone(), addr.clone());
        async move { list_orders(&breaker, &bulkhead, &addr).await }
    });
    let api = Router::new()
        .route("/orders", orders)
        .layer(
            LoadShedLayer::new()
                .bulkhead(bulkhead)
                .breaker(breaker)
                .health(health.clone())
                .min_budget(Duration::from_millis(50)),
        )
        .layer(DeadlineLayer::new(Duration::from_secs(2)).floor(Duration::from_millis(10)));
    let app = api
        .merge(health.router())
        .merge(health.dependencies_router());
    let host = std::env::var("HOST").unwrap_or_else(|_| "0.0.0.0".into());
    let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving");
    let server = axum::serve(listener, app).with_graceful_shutdown(health.shutdown_signal());
    let drained = health.serve_until_drained(server).await?;
    tracing::info!(?drained, "stopped");
    Ok(())
}

/// One query against the dependency. The stand-in speaks a line
/// protocol: a query line out, a result line back. A real service would
/// use its database client here.
async fn list_orders(breaker: &CircuitBreaker, bulkhead: &Bulkhead, addr: &str) -> Response {
    let Ok(_slot) = bulkhead.acquire().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "overloaded\n").into_response();
    };
    let permit = match breaker.try_acquire() {
        Ok(permit) => permit,
        // Fail fast and say when to come back.
        Err(open) => {
            let wait = open.retry_after;
            let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, format!("{secs}"))],
                format!("{open}\n"),
            )
                .into_response();
        }
    };
    // This call's share of the budget: what is left, at most 800 ms.
    let timeout = deadline::remaining()
        .unwrap_or(Duration::from_millis(800))
        .min(Duration::from_millis(800));
    match tokio::time::timeout(timeout, query(addr)).await {
        Ok(Ok(_rows)) => {
            permit.record(Verdict::Success);
            (StatusCode::OK, "[]\n").into_response()
        }
        Ok(Err(e)) => {
            permit.record(Verdict::Failure);
            (StatusCode::BAD_GATEWAY, format!("database: {e}\n")).into_response()
        }
        Err(_) => {
            permit.record(Verdict::Failure);
            (StatusCode::GATEWAY_TIMEOUT, "database: timed out\n").into_response()
        }
    }
}

async fn query(addr: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.write_all(b"SELECT id FROM orders\n").await?;
    let mut reply = String::new();
    if tokio::io::BufReader::new(conn)
        .read_line(&mut reply)
        .await?
        == 0
    {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(reply)
}
