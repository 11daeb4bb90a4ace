//! The admin server: `/livez`, `/readyz`, `/startupz` and `/metrics`, and
//! the health registry whose drain the operator's shutdown follows.

use std::sync::Arc;
use std::time::Duration;

use probity_probe::health::{CheckOptions, Health};

use super::leader::Leadership;
use super::metrics::Metrics;
use super::{Error, Options, Stop, Synced};

/// `/livez`, `/readyz`, `/startupz` (probity-probe) and `/metrics`.
pub(super) async fn admin_server(
    options: &Options,
    leadership: &Leadership,
    synced: &Synced,
    metrics: &Arc<Metrics>,
    stop: Stop,
) -> Result<(Health, tokio::task::JoinHandle<()>), Error> {
    let caches = |synced: Synced| {
        move || {
            let synced = synced.clone();
            async move {
                if synced.is_set() {
                    Ok(())
                } else {
                    Err("caches not synced yet")
                }
            }
        }
    };
    let lead = leadership.clone();
    let health = Health::builder()
        .startup("informers-synced", caches(synced.clone()))
        .readiness_with(
            "caches",
            caches(synced.clone()),
            CheckOptions::new()
                .interval(Duration::from_secs(1))
                .timeout(Duration::from_millis(500)),
        )
        .readiness_with(
            "leader",
            move || {
                let lead = lead.clone();
                async move {
                    if lead.is_leader() {
                        Ok(())
                    } else {
                        Err(format!(
                            "standby (leader: {})",
                            lead.holder().unwrap_or_else(|| "none".to_owned())
                        ))
                    }
                }
            },
            CheckOptions::new()
                .interval(Duration::from_secs(1))
                .timeout(Duration::from_millis(500))
                .non_critical(),
        )
        // Nothing secret here; the leader line names the current holder.
        .show_reasons(true)
        .drain(options.drain_delay, options.drain_deadline)
        .build()
        .map_err(Error::Health)?;
    health.register_metrics(
        &mut metrics
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let leader_gauge = metrics.leader.clone();
    let lead = leadership.clone();
    let encode = Arc::clone(metrics);
    let router = health.router().route(
        "/metrics",
        axum::routing::get(move || {
            let encode = Arc::clone(&encode);
            leader_gauge.set(i64::from(lead.is_leader()));
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    encode.encode(),
                )
            }
        }),
    );
    let addr = options.admin_addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Admin { addr, source })?;
    tracing::info!(%addr, "admin endpoint listening (/livez /readyz /startupz /metrics)");
    Ok((
        health,
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(stop)
                .await
            {
                tracing::error!(error = %e, "admin endpoint failed");
            }
        }),
    ))
}
