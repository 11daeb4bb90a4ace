//! `grpc.health.v1.Health` served from the same registry, so Kubernetes
//! gRPC probes (`grpc: {port: 9090, service: livez}`) read the same results
//! as the HTTP endpoints.
//!
//! | service name | answers for |
//! |---|---|
//! | `""` or `readyz` | `/readyz` |
//! | `livez` | `/livez` |
//! | `startupz` | `/startupz` |
//! | `readyz/<check>` (also `livez/…`, `startupz/…`) | that one check |
//!
//! Unknown names: `Check` fails with `NOT_FOUND`; `Watch` sends
//! `SERVICE_UNKNOWN` and stays open, as the protocol asks, in case the
//! service appears later.

use std::pin::Pin;
use std::time::Duration;

use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::{Health as HealthProto, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use super::Health;
use super::report::{Probe, evaluate};

/// How often a `Watch` stream re-reads the registry; it sends only changes.
const WATCH_PERIOD: Duration = Duration::from_millis(250);

/// The `grpc.health.v1.Health` implementation over a [`Health`] registry;
/// see [`Health::grpc_service`].
#[derive(Debug, Clone)]
pub struct GrpcHealth {
    health: Health,
}

impl Health {
    /// A tonic service for `grpc.health.v1.Health` (`Check` and `Watch`)
    /// backed by this registry. Add it to a tonic server.
    pub fn grpc_service(&self) -> HealthServer<GrpcHealth> {
        HealthServer::new(GrpcHealth {
            health: self.clone(),
        })
    }
}

impl GrpcHealth {
    /// The status of a service name, or `None` when the name is unknown.
    fn status(&self, service: &str) -> Option<ServingStatus> {
        let (probe_name, check) = match service.split_once('/') {
            Some((probe, check)) => (probe, Some(check)),
            None => (service, None),
        };
        let probe = match probe_name {
            "" | "readyz" => Probe::Readiness,
            "livez" => Probe::Liveness,
            "startupz" => Probe::Startup,
            _ => return None,
        };
        if probe_name.is_empty() && check.is_some() {
            return None;
        }
        let report = evaluate(&self.health.inner, probe, &[], check);
        if check.is_some() && report.checks.is_empty() {
            return None;
        }
        Some(if report.ok {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        })
    }
}

fn response(status: ServingStatus) -> HealthCheckResponse {
    HealthCheckResponse {
        status: status as i32,
    }
}

#[tonic::async_trait]
impl HealthProto for GrpcHealth {
    async fn check(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        let service = request.into_inner().service;
        match self.status(&service) {
            Some(status) => Ok(Response::new(response(status))),
            None => Err(Status::not_found(format!("unknown service {service:?}"))),
        }
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send>>;

    async fn watch(
        &self,
        request: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let watcher = self.clone();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                let status = watcher
                    .status(&service)
                    .unwrap_or(ServingStatus::ServiceUnknown);
                if last != Some(status) {
                    if tx.send(Ok(response(status))).await.is_err() {
                        return; // the client went away
                    }
                    last = Some(status);
                }
                tokio::select! {
                    () = tokio::time::sleep(WATCH_PERIOD) => {}
                    () = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
