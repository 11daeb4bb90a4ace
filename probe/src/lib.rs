//! `probity-probe`: honest liveness, deep readiness and the resilience
//! primitives readiness reports on, for Rust services on Kubernetes.
//!
//! This crate has no Kubernetes client dependency: it is what a service
//! embeds to answer the kubelet's probes truthfully.
//!
//! - [`health`]: a registry of background checks served as `/livez`
//!   (the process only: runtime watchdog, progress heartbeats), `/readyz`
//!   (dependencies, saturation, startup, shutdown) and `/startupz`, in
//!   kube-apiserver's format, with shutdown draining, and the dependency
//!   inventory (`/dependencies`).
//! - [`breaker`]: circuit breaker (failure and slow-call rates, lock-free
//!   closed path, half-open with a lease), plain and as a tower layer.
//! - [`bulkhead`]: bounded concurrency with a bounded wait; a saturation
//!   source for readiness.
//! - [`deadline`]: budgets carried in a task-local, read from and written
//!   to `grpc-timeout` / `x-envoy-expected-rq-timeout-ms`.
//! - [`retry`]: backoff with jitter, a shared retry budget, attempt
//!   propagation.
//! - [`shed`]: load shedding with 503 and `Retry-After`.
//! - `chaos` (feature `chaos`): fault injection for game days.
//! - `shared` (feature `redis`): breaker state shared across replicas
//!   through Redis, with a quorum and one trial per open period.
//! - `queue` (feature `queue`): a durable queue on Redis Streams for the
//!   "accept now, do later" fallback, and its consumer.
//!
//! ```
//! use std::time::Duration;
//! use probity_probe::health::{Health, TcpCheck};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let health = Health::builder()
//!     .readiness("postgres", TcpCheck::new("127.0.0.1:5432"))
//!     .drain(Duration::from_secs(5), Duration::from_secs(20))
//!     .build()?;
//! let app = axum::Router::new()
//!     .route("/orders", axum::routing::get(|| async { "[]" }))
//!     .merge(health.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = axum::serve(listener, app).with_graceful_shutdown(health.shutdown_signal());
//! # health.begin_shutdown(); health.begin_shutdown();
//! health.serve_until_drained(server).await?;
//! # Ok(())
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod breaker;
pub mod bulkhead;
#[cfg_attr(docsrs, doc(cfg(feature = "chaos")))]
#[cfg(feature = "chaos")]
pub mod chaos;
pub mod deadline;
pub mod health;
#[cfg_attr(docsrs, doc(cfg(feature = "queue")))]
#[cfg(feature = "queue")]
pub mod queue;
mod refuse;
pub mod retry;
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
#[cfg(feature = "redis")]
pub mod shared;
pub mod shed;

pub use health::{Health, HealthBuilder};
