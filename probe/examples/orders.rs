//! An orders service with honest probes.
//!
//! - `/readyz` follows a Postgres-like dependency at `DEP_ADDR` (default
//!   `127.0.0.1:5432`) within seconds: a TCP check every second, failing
//!   after 2 misses, recovering after 2 successes.
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
//!   delay, then in-flight requests finish.
//!
//! ```sh
//! PORT=8080 DEP_ADDR=127.0.0.1:5432 cargo run -p probity-probe --example orders
//! curl -s 'localhost:8080/readyz?verbose'
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
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
        .drain(Duration::from_secs(5), Duration::from_secs(20))
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
    let app = api.merge(health.router());
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving");
    let server = axum::serve(listener, app).with_graceful_shutdown(health.shutdown_signal());
    let drained = health.serve_until_drained(server).await?;
    tracing::info!(?drained, "stopped");
    Ok(())
}

/// One query against the dependency: a TCP round trip stands in for SQL.
async fn list_orders(
    breaker: &CircuitBreaker,
    bulkhead: &Bulkhead,
    addr: &str,
) -> (StatusCode, String) {
    let Ok(_slot) = bulkhead.acquire().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "overloaded\n".into());
    };
    let permit = match breaker.try_acquire() {
        Ok(permit) => permit,
        Err(open) => return (StatusCode::SERVICE_UNAVAILABLE, format!("{open}\n")),
    };
    // This call's share of the budget: what is left, at most 800 ms.
    let timeout = deadline::remaining()
        .unwrap_or(Duration::from_millis(800))
        .min(Duration::from_millis(800));
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_conn)) => {
            permit.record(Verdict::Success);
            (StatusCode::OK, "[]\n".into())
        }
        Ok(Err(e)) => {
            permit.record(Verdict::Failure);
            (StatusCode::BAD_GATEWAY, format!("database: {e}\n"))
        }
        Err(_) => {
            permit.record(Verdict::Failure);
            (StatusCode::GATEWAY_TIMEOUT, "database: timed out\n".into())
        }
    }
}
