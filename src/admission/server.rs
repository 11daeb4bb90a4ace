//! The webhook HTTPS server: `/validate` and `/mutate` over rustls, with a
//! body limit, a strict content type, handshake and header timeouts, and a
//! graceful stop that finishes in-flight reviews.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::mutate::{self, Resolve};
use super::review::{self, Request, Response};
use super::validate;
use crate::lint::policies::Policy;

/// Largest AdmissionReview accepted: an object and its old version of up
/// to 1.5 MiB each (etcd's default limit), JSON-encoded.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the webhooks get the policies and namespace labels to judge by.
pub trait PolicySource: Send + Sync + 'static {
    /// Whether the caches are synced. Before that the webhooks answer 503,
    /// and the webhook configuration's failurePolicy decides.
    fn ready(&self) -> bool;
    /// Every policy, namespaced and cluster-wide.
    fn policies(&self) -> Arc<[Policy]>;
    /// The labels of namespace `ns`.
    fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String>;
}

/// What a review came to, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Admitted without warnings.
    Allowed,
    /// Admitted with warnings.
    Warned,
    /// Admitted with a patch.
    Patched,
    /// Denied.
    Denied,
    /// The body was not a usable AdmissionReview.
    Malformed,
    /// Caches not synced yet.
    NotReady,
}

impl Outcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Warned => "warned",
            Self::Patched => "patched",
            Self::Denied => "denied",
            Self::Malformed => "malformed",
            Self::NotReady => "not_ready",
        }
    }
}

/// Observes every review (webhook name, outcome, time taken).
pub type Observer = Arc<dyn Fn(&'static str, Outcome, Duration) + Send + Sync>;

/// The webhooks' shared state.
#[derive(Clone)]
pub struct Webhooks {
    /// Policies and namespaces.
    pub source: Arc<dyn PolicySource>,
    /// Tag-to-digest resolution for `images.pin: Admission`.
    pub resolver: Option<Arc<dyn Resolve>>,
    /// Budget of one mutating review, inside the webhook timeout.
    pub mutate_budget: Duration,
    /// Called after every review.
    pub observer: Option<Observer>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("resolver", &self.resolver.is_some())
            .field("mutate_budget", &self.mutate_budget)
            .finish_non_exhaustive()
    }
}

/// The `/validate` and `/mutate` routes.
pub fn router(webhooks: Webhooks) -> Router {
    Router::new()
        .route("/validate", post(validate_handler))
        .route("/mutate", post(mutate_handler))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(webhooks)
}

fn error(status: StatusCode, message: String) -> HttpResponse {
    (status, axum::Json(json!({"error": message}))).into_response()
}

/// Why a body was not reviewed.
struct Rejection {
    outcome: Outcome,
    status: StatusCode,
    message: String,
}

/// Checks the content type and decodes the review, or says why not.
fn accept(webhooks: &Webhooks, headers: &HeaderMap, body: &[u8]) -> Result<Request, Rejection> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(Rejection {
            outcome: Outcome::Malformed,
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: format!("content type must be application/json, got {content_type:?}"),
        });
    }
    let request = review::decode(body).map_err(|e| Rejection {
        outcome: Outcome::Malformed,
        status: StatusCode::BAD_REQUEST,
        message: e.to_string(),
    })?;
    if !webhooks.source.ready() {
        return Err(Rejection {
            outcome: Outcome::NotReady,
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "probity's caches are not synced yet".to_owned(),
        });
    }
    Ok(request)
}

fn observe(webhooks: &Webhooks, name: &'static str, outcome: Outcome, started: Instant) {
    if let Some(observer) = &webhooks.observer {
        observer(name, outcome, started.elapsed());
    }
}

fn outcome_of(response: &Response) -> Outcome {
    if !response.allowed {
        Outcome::Denied
    } else if response.patch.is_some() {
        Outcome::Patched
    } else if response.warnings.is_empty() {
        Outcome::Allowed
    } else {
        Outcome::Warned
    }
}

/// The request and its namespace's labels, or the error answer (already
/// observed).
fn prepare(
    webhooks: &Webhooks,
    name: &'static str,
    headers: &HeaderMap,
    body: &[u8],
    started: Instant,
) -> Result<(Request, BTreeMap<String, String>), Box<HttpResponse>> {
    let request = accept(webhooks, headers, body).map_err(|r| {
        observe(webhooks, name, r.outcome, started);
        Box::new(error(r.status, r.message))
    })?;
    let labels = request
        .namespace
        .as_deref()
        .map(|ns| webhooks.source.namespace_labels(ns))
        .unwrap_or_default();
    Ok((request, labels))
}

fn answer(
    webhooks: &Webhooks,
    name: &'static str,
    started: Instant,
    request: &Request,
    response: Response,
) -> HttpResponse {
    observe(webhooks, name, outcome_of(&response), started);
    axum::Json(response.into_review(&request.uid)).into_response()
}

async fn validate_handler(
    State(webhooks): State<Webhooks>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResponse {
    let started = Instant::now();
    let (request, labels) = match prepare(&webhooks, "validate", &headers, &body, started) {
        Ok(prepared) => prepared,
        Err(response) => return *response,
    };
    let response = validate::validate(&request, &webhooks.source.policies(), &labels);
    answer(&webhooks, "validate", started, &request, response)
}

async fn mutate_handler(
    State(webhooks): State<Webhooks>,
    headers: HeaderMap,
    body: Bytes,
) -> HttpResponse {
    let started = Instant::now();
    let (request, labels) = match prepare(&webhooks, "mutate", &headers, &body, started) {
        Ok(prepared) => prepared,
        Err(response) => return *response,
    };
    let policies = webhooks.source.policies();
    let response = probity_probe::deadline::scope(
        webhooks.mutate_budget,
        mutate::mutate(&request, &policies, &labels, webhooks.resolver.as_deref()),
    )
    .await;
    answer(&webhooks, "mutate", started, &request, response)
}

/// Serves `app` over TLS on `listener` until `stop` resolves, then lets
/// in-flight requests finish (for at most 10 s).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    stop: impl Future<Output = ()> + Send,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let builder = Arc::new(builder);
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, retry.
                    tracing::warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small request/response exchanges: without this, Nagle's
        // algorithm and delayed ACKs add 40 ms to some reviews.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "webhook TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "webhook TLS handshake timed out");
                    return;
                }
            };
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(Duration::from_secs(10), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("webhook connections still open after 10 s; closing them");
    }
}
