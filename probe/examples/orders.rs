//! An orders service with honest probes.
//!
//! - `/readyz` follows a Postgres-like dependency at `DEP_ADDR` (default
//!   `127.0.0.1:5432`) within seconds: a TCP check every second, failing
//!   after 2 misses, recovering after 2 successes.
//! - `/livez` reports only the process: the runtime watchdog and the
//!   heartbeat of the consumer loop. It stays 200 while the dependency is
//!   down.
//! - `/startupz` passes once the (simulated) cache warm-up is done.
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
use axum::routing::get;
use probity_probe::health::{CheckOptions, Health, ProbeTarget, TcpCheck};

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

    let warmed = Arc::new(AtomicBool::new(false));
    let warm = Arc::clone(&warmed);
    let health = Health::builder()
        .readiness_with(
            "postgres",
            TcpCheck::new(dep),
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
    let app = Router::new()
        .route("/orders", get(|| async { "[]\n" }))
        .merge(health.router());
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving");
    let server = axum::serve(listener, app).with_graceful_shutdown(health.shutdown_signal());
    let drained = health.serve_until_drained(server).await?;
    tracing::info!(?drained, "stopped");
    Ok(())
}
