//! The webhook HTTPS server: `/validate` and `/mutate` over rustls, with a
//! graceful stop that finishes in-flight reviews. Anyone who can reach the
//! port can send it bytes, so every resource a peer can claim is bounded:
//! connections ([`MAX_CONNECTIONS`]; more are closed on accept), HTTP/2
//! streams per connection, handshake, header and body-read time, body size
//! ([`MAX_BODY_BYTES`]), and reviews evaluated at once ([`MAX_REVIEWS`], a
//! probity-probe bulkhead: beyond it a review waits briefly, then gets 503
//! with `Retry-After`). The content type and the caches' readiness are
//! checked before the body is read. Bodies past [`SMALL_BODY_BYTES`] share
//! [`LARGE_BODIES_BYTES`]; one that does not fit gets 503 at once.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::post;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use probity_probe::bulkhead::Bulkhead;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use super::mutate;
use super::review::{self, Request, Response};
use super::validate;
use crate::policy::Policy;
use crate::registry::Resolve;

/// Largest AdmissionReview accepted: an object and its old version of up
/// to 1.5 MiB each (etcd's default limit), JSON-encoded.
pub const MAX_BODY_BYTES: usize = 6 * 1024 * 1024;
/// Reviews evaluated at once.
pub const MAX_REVIEWS: u32 = 64;
/// Bodies up to this size need only a review slot; a typical review is a
/// few KiB.
pub const SMALL_BODY_BYTES: usize = 256 * 1024;
/// Bytes of larger bodies held at once (a body without a Content-Length
/// counts as [`MAX_BODY_BYTES`]); a large body that does not fit gets 503
/// at once, so a burst of huge reviews cannot starve ordinary ones or grow
/// memory past [`MAX_REVIEWS`] x [`SMALL_BODY_BYTES`] plus this.
pub const LARGE_BODIES_BYTES: usize = 24 * 1024 * 1024;
/// How long a review waits for a free slot before it gets 503.
const REVIEW_WAIT: Duration = Duration::from_millis(250);
/// Connections served at once; more are closed as they are accepted.
pub const MAX_CONNECTIONS: usize = 512;
/// Concurrent HTTP/2 streams on one connection.
const MAX_STREAMS: u32 = 64;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Time to receive a whole body once its headers are in.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the webhooks get the policies, namespace labels and controllers
/// to judge by.
pub trait PolicySource: validate::Owners + Send + Sync + 'static {
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
    /// Too many reviews at once: answered 503 before any work.
    Shed,
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
            Self::Shed => "shed",
        }
    }
}

/// Observes every review (webhook name, outcome, time taken).
pub type Observer = Arc<dyn Fn(&'static str, Outcome, Duration) + Send + Sync>;

/// Observes every connection that completes its TLS handshake, with the
/// protocol it negotiated (`h2` or `http/1.1`): how often the API server
/// opens a new connection shows whether it reuses them.
pub type ConnectionObserver = Arc<dyn Fn(&'static str) + Send + Sync>;

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

/// The webhooks and the slots their reviews take.
#[derive(Clone)]
struct Served {
    webhooks: Webhooks,
    reviews: Bulkhead,
    /// [`LARGE_BODIES_BYTES`], in KiB.
    large_bodies: Arc<Semaphore>,
}

/// The `/validate` and `/mutate` routes, evaluating at most
/// [`MAX_REVIEWS`] reviews at once.
pub fn router(webhooks: Webhooks) -> Router {
    router_with_limit(webhooks, Bulkhead::new(MAX_REVIEWS, REVIEW_WAIT))
}

fn router_with_limit(webhooks: Webhooks, reviews: Bulkhead) -> Router {
    Router::new()
        .route("/validate", post(validate_handler))
        .route("/mutate", post(mutate_handler))
        .with_state(Served {
            webhooks,
            reviews,
            large_bodies: Arc::new(Semaphore::new(LARGE_BODIES_BYTES / 1024)),
        })
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

/// Checks the content type and readiness, takes a review slot, reads the
/// body within its time and size limits and decodes it, or says why not.
async fn accept(
    served: &Served,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Request, probity_probe::bulkhead::BulkheadPermit), Rejection> {
    let reject = |outcome, status, message: String| Rejection {
        outcome,
        status,
        message,
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/json") {
        let shown: String = content_type.chars().take(64).collect();
        return Err(reject(
            Outcome::Malformed,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type must be application/json, got {shown:?}"),
        ));
    }
    if !served.webhooks.source.ready() {
        return Err(reject(
            Outcome::NotReady,
            StatusCode::SERVICE_UNAVAILABLE,
            "probity's caches are not synced yet".to_owned(),
        ));
    }
    let too_large = || {
        reject(
            Outcome::Malformed,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("an AdmissionReview is at most {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let permit = served.reviews.acquire().await.map_err(|full| {
        reject(
            Outcome::Shed,
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{full}; try again"),
        )
    })?;
    let read = read_body(body, declared, &served.large_bodies);
    let (bytes, large) = match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Err(_) => {
            return Err(reject(
                Outcome::Malformed,
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s",
                    BODY_TIMEOUT.as_secs()
                ),
            ));
        }
        Ok(Err(BodyError::TooLarge)) => return Err(too_large()),
        Ok(Err(BodyError::Busy)) => {
            return Err(reject(
                Outcome::Shed,
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many large reviews at once ({} MiB of bodies over {} KiB held); \
                     try again",
                    LARGE_BODIES_BYTES >> 20,
                    SMALL_BODY_BYTES >> 10
                ),
            ));
        }
        Ok(Err(BodyError::Unreadable)) => {
            return Err(reject(
                Outcome::Malformed,
                StatusCode::BAD_REQUEST,
                "the body could not be read".to_owned(),
            ));
        }
        Ok(Ok(read)) => read,
    };
    let request = review::decode(&bytes)
        .map_err(|e| reject(Outcome::Malformed, StatusCode::BAD_REQUEST, e.to_string()))?;
    // The body is read; what the review keeps is its typed objects.
    drop((bytes, large));
    Ok((request, permit))
}

/// Why a body was not read.
enum BodyError {
    TooLarge,
    /// It is large and [`LARGE_BODIES_BYTES`] are held by others.
    Busy,
    Unreadable,
}

/// Reads a body of at most [`MAX_BODY_BYTES`]. Past [`SMALL_BODY_BYTES`]
/// (declared, or as it arrives) it needs a share of
/// [`LARGE_BODIES_BYTES`], held with the bytes until they are decoded.
async fn read_body(
    mut body: Body,
    declared: Option<u64>,
    large: &Arc<Semaphore>,
) -> Result<(Vec<u8>, Option<tokio::sync::OwnedSemaphorePermit>), BodyError> {
    use http_body_util::BodyExt as _;
    let take = |bytes: u64| {
        let kib =
            u32::try_from(bytes.min(MAX_BODY_BYTES as u64).div_ceil(1024)).unwrap_or(u32::MAX);
        Arc::clone(large)
            .try_acquire_many_owned(kib)
            .map_err(|_| BodyError::Busy)
    };
    // Content-Length is binding (hyper never reads past it).
    let mut permit = match declared {
        Some(n) if n > SMALL_BODY_BYTES as u64 => Some(take(n)?),
        _ => None,
    };
    let capacity = declared.map_or(0, |n| n.min(MAX_BODY_BYTES as u64));
    let mut out = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| BodyError::Unreadable)?.into_data() else {
            continue;
        };
        let len = out.len() + data.len();
        if len > MAX_BODY_BYTES {
            return Err(BodyError::TooLarge);
        }
        if len > SMALL_BODY_BYTES && permit.is_none() {
            // Undeclared and growing: as large as it may get.
            permit = Some(take(MAX_BODY_BYTES as u64)?);
        }
        out.extend_from_slice(&data);
    }
    Ok((out, permit))
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

/// A review to answer: the request, its namespace's labels, and the slot
/// it holds until answered.
type Prepared = (
    Request,
    BTreeMap<String, String>,
    probity_probe::bulkhead::BulkheadPermit,
);

/// The review, or the error answer (already observed).
async fn prepare(
    served: &Served,
    name: &'static str,
    headers: &HeaderMap,
    body: Body,
    started: Instant,
) -> Result<Prepared, Box<HttpResponse>> {
    let (request, permit) = accept(served, headers, body).await.map_err(|r| {
        observe(&served.webhooks, name, r.outcome, started);
        let mut response = error(r.status, r.message);
        if r.outcome == Outcome::Shed {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
        }
        Box::new(response)
    })?;
    let labels = request
        .namespace
        .as_deref()
        .map(|ns| served.webhooks.source.namespace_labels(ns))
        .unwrap_or_default();
    Ok((request, labels, permit))
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
    State(served): State<Served>,
    headers: HeaderMap,
    body: Body,
) -> HttpResponse {
    let started = Instant::now();
    let (request, labels, _slot) = match prepare(&served, "validate", &headers, body, started).await
    {
        Ok(prepared) => prepared,
        Err(response) => return *response,
    };
    let webhooks = &served.webhooks;
    let owners: &dyn validate::Owners = &*webhooks.source;
    let response = validate::validate(&request, &webhooks.source.policies(), &labels, owners);
    answer(webhooks, "validate", started, &request, response)
}

async fn mutate_handler(
    State(served): State<Served>,
    headers: HeaderMap,
    body: Body,
) -> HttpResponse {
    let started = Instant::now();
    let (request, labels, _slot) = match prepare(&served, "mutate", &headers, body, started).await {
        Ok(prepared) => prepared,
        Err(response) => return *response,
    };
    let webhooks = &served.webhooks;
    let policies = webhooks.source.policies();
    let response = probity_probe::deadline::scope(
        webhooks.mutate_budget,
        mutate::mutate(
            &request,
            &policies,
            &labels,
            webhooks.resolver.as_deref(),
            &*webhooks.source,
        ),
    )
    .await;
    answer(webhooks, "mutate", started, &request, response)
}

/// Serves `app` over TLS on `listener` until `stop` resolves, then lets
/// in-flight requests finish (for at most `deadline`).
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    stop: impl Future<Output = ()> + Send,
    deadline: Duration,
    on_connection: Option<ConnectionObserver>,
) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(64 * 1024)
        // Rapid reset: a peer that opens and cancels streams in a loop.
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(64))
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let builder = Arc::new(builder);
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
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
        let Ok(slot) = Arc::clone(&connections).try_acquire_owned() else {
            tracing::debug!(%peer, "webhook connection refused: {MAX_CONNECTIONS} already open");
            drop(tcp);
            continue;
        };
        // Small request/response exchanges: without this, Nagle's
        // algorithm and delayed ACKs add 40 ms to some reviews.
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(app.clone());
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let on_connection = on_connection.clone();
        tokio::spawn(async move {
            let _slot = slot;
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
            if let Some(observe) = &on_connection {
                observe(match tls.get_ref().1.alpn_protocol() {
                    Some(b"h2") => "h2",
                    _ => "http/1.1",
                });
            }
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "webhook connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(deadline, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?deadline,
            "webhook connections still open at the drain deadline; closing them"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tower::ServiceExt as _;

    use super::*;

    struct Source(AtomicBool);

    impl validate::Owners for Source {
        fn owner_matches(&self, _: &str, _: &str, _: &str, _: &str, _: Option<u64>) -> bool {
            false
        }
    }

    impl PolicySource for Source {
        fn ready(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
        fn policies(&self) -> Arc<[Policy]> {
            Arc::from(vec![Policy::builtin()])
        }
        fn namespace_labels(&self, _: &str) -> BTreeMap<String, String> {
            BTreeMap::new()
        }
    }

    fn app(ready: bool, reviews: Bulkhead) -> Router {
        let webhooks = Webhooks {
            source: Arc::new(Source(AtomicBool::new(ready))),
            resolver: None,
            mutate_budget: Duration::from_secs(1),
            observer: None,
        };
        router_with_limit(webhooks, reviews)
    }

    fn stalled() -> Body {
        Body::from_stream(futures::stream::pending::<
            Result<axum::body::Bytes, std::io::Error>,
        >())
    }

    fn post(body: Body, content_type: &str) -> http::Request<Body> {
        http::Request::post("/validate")
            .header(header::CONTENT_TYPE, content_type)
            .body(body)
            .expect("request")
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_and_content_type_are_checked_before_the_body_is_read() {
        let reviews = Bulkhead::new(4, REVIEW_WAIT);
        let not_ready = app(false, reviews.clone())
            .oneshot(post(stalled(), "application/json"))
            .await
            .expect("infallible");
        assert_eq!(not_ready.status(), StatusCode::SERVICE_UNAVAILABLE);
        let wrong_type = app(true, reviews)
            .oneshot(post(stalled(), "text/plain"))
            .await
            .expect("infallible");
        assert_eq!(wrong_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_times_out_and_frees_its_slot() {
        let reviews = Bulkhead::new(1, Duration::ZERO);
        let started = tokio::time::Instant::now();
        let stalled = app(true, reviews.clone())
            .oneshot(post(stalled(), "application/json"))
            .await
            .expect("infallible");
        assert_eq!(stalled.status(), StatusCode::REQUEST_TIMEOUT);
        let waited = started.elapsed();
        assert!(
            waited >= BODY_TIMEOUT && waited < BODY_TIMEOUT + Duration::from_secs(1),
            "{waited:?}"
        );
        assert_eq!(reviews.in_use(), 0, "the slot is free again");
    }

    #[tokio::test(start_paused = true)]
    async fn beyond_the_limit_reviews_are_shed_with_retry_after() {
        let reviews = Bulkhead::new(2, Duration::from_millis(100));
        let _held = (reviews.try_acquire(), reviews.try_acquire());
        let shed = app(true, reviews)
            .oneshot(post(Body::from("{}"), "application/json"))
            .await
            .expect("infallible");
        assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            shed.headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
    }

    #[tokio::test]
    async fn oversized_bodies_are_refused_by_their_length_or_as_they_grow() {
        let reviews = Bulkhead::new(4, REVIEW_WAIT);
        let declared = http::Request::post("/validate")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, (MAX_BODY_BYTES + 1).to_string())
            .body(stalled())
            .expect("request");
        let response = app(true, reviews.clone())
            .oneshot(declared)
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let big = Body::from(vec![b' '; MAX_BODY_BYTES + 1]);
        let response = app(true, reviews)
            .oneshot(post(big, "application/json"))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test(start_paused = true)]
    async fn large_bodies_share_a_budget_and_small_ones_keep_their_way() {
        let router = app(true, Bulkhead::new(16, Duration::ZERO));
        let large = || {
            http::Request::post("/validate")
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CONTENT_LENGTH, MAX_BODY_BYTES.to_string())
                .body(stalled())
                .expect("request")
        };
        let fits = LARGE_BODIES_BYTES / MAX_BODY_BYTES;
        let held: Vec<_> = (0..fits)
            .map(|_| tokio::spawn(router.clone().oneshot(large())))
            .collect();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let refused = router.clone().oneshot(large()).await.expect("infallible");
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(refused.headers().contains_key(header::RETRY_AFTER));
        let undeclared = Body::from(vec![b' '; SMALL_BODY_BYTES + 1]);
        let growing = router
            .clone()
            .oneshot(post(undeclared, "application/json"))
            .await
            .expect("infallible");
        assert_eq!(
            growing.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "an undeclared body is charged once it grows past the small size"
        );
        let review = r#"{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u", "operation": "CREATE"}}"#;
        let small = router
            .clone()
            .oneshot(post(Body::from(review), "application/json"))
            .await
            .expect("infallible");
        assert_eq!(small.status(), StatusCode::OK, "a small review still fits");
        for h in held {
            h.abort();
        }
    }

    /// A CA and two leaves it signs: a server certificate for 127.0.0.1
    /// and a client certificate.
    fn pki() -> (
        rustls::pki_types::CertificateDer<'static>,
        super::super::tls::PemPair,
        super::super::tls::PemPair,
    ) {
        use rcgen::{
            BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
            SanType,
        };
        let ca_key = KeyPair::generate().expect("key");
        let mut ca = CertificateParams::default();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca.self_signed(&ca_key).expect("CA");
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |eku: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().expect("key");
            let mut params = CertificateParams::default();
            params.subject_alt_names =
                vec![SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]))];
            params.extended_key_usages = vec![eku];
            let cert = params.signed_by(&key, &issuer).expect("leaf");
            super::super::tls::PemPair {
                cert: cert.pem(),
                key: key.serialize_pem(),
            }
        };
        (
            ca_cert.der().clone(),
            leaf(ExtendedKeyUsagePurpose::ServerAuth),
            leaf(ExtendedKeyUsagePurpose::ClientAuth),
        )
    }

    /// Connects over TLS (with `client` as the client certificate) and
    /// returns the response's first line, or why there is none.
    async fn get(
        port: u16,
        ca: &rustls::pki_types::CertificateDer<'static>,
        client: Option<&super::super::tls::PemPair>,
    ) -> Result<String, String> {
        use rustls::pki_types::pem::PemObject as _;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).map_err(|e| e.to_string())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let config = match client {
            None => builder.with_no_client_auth(),
            Some(pair) => {
                let chain = rustls::pki_types::CertificateDer::pem_slice_iter(pair.cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pair.key.as_bytes())
                    .map_err(|e| e.to_string())?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| e.to_string())?
            }
        };
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let name =
            rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        tls.read_to_end(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&response);
        Ok(text.lines().next().unwrap_or_default().to_owned())
    }

    #[tokio::test]
    async fn with_a_client_ca_only_its_clients_are_served() {
        let (ca, server_pair, client_pair) = pki();
        let store = super::super::tls::CertStore::new(&server_pair).expect("store");
        let config = store
            .server_config(Some(std::slice::from_ref(&ca)))
            .expect("config");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            config,
            app(true, Bulkhead::new(4, REVIEW_WAIT)),
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(10),
            None,
        ));
        let served = get(port, &ca, Some(&client_pair)).await;
        assert_eq!(
            served.as_deref(),
            Ok("HTTP/1.1 415 Unsupported Media Type"),
            "a client of the CA reaches the webhook"
        );
        let refused = get(port, &ca, None).await;
        assert!(
            refused.is_err(),
            "no client certificate, no answer: {refused:?}"
        );
        // A client certificate another CA signed.
        let (_, _, stranger) = pki();
        let refused = get(port, &ca, Some(&stranger)).await;
        assert!(refused.is_err(), "a stranger's certificate: {refused:?}");
        let _ = stop.send(());
        let _ = server.await;
    }
}
