//! The admission webhooks inside `probity operator`: served by every
//! replica from the same caches the controller reads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::metrics::{AdmissionLabels, Metrics, ProtocolLabel, WebhookLabel};
use super::reconcile::PolicyObject as _;
use super::{Context, Error, Stop};
use crate::admission::certs::{self, SelfManaged};
use crate::admission::server::{self, Observer, Outcome, PolicySource, Webhooks};
use crate::admission::tls::{self, CertStore};
use crate::policy::Policy;
use crate::registry::Resolve;

/// Where the serving certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// PEM files (a mounted Secret), reloaded when they change.
    Files {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// A CA and certificate the operator keeps in a Secret.
    SelfManaged(SelfManaged),
}

/// How the webhooks are served.
#[derive(Clone)]
pub struct WebhookOptions {
    /// Listen address.
    pub addr: SocketAddr,
    /// Certificate source.
    pub tls: TlsSource,
    /// Budget of one mutating review (registry calls included).
    pub budget: Duration,
    /// Tag-to-digest resolution for `images.pin: Admission`.
    pub resolver: Option<Arc<dyn Resolve>>,
    /// When set, a client must present a certificate signed by this CA
    /// file (PEM), read at start.
    pub client_ca: Option<PathBuf>,
}

impl std::fmt::Debug for WebhookOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookOptions")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .field("budget", &self.budget)
            .field("resolver", &self.resolver.is_some())
            .field("client_ca", &self.client_ca)
            .finish()
    }
}

/// The controller's caches, as the webhooks see them.
struct Caches(Arc<Context>);

impl crate::admission::validate::Owners for Caches {
    fn owner_matches(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
        uid: &str,
        pod_print: Option<u64>,
    ) -> bool {
        self.0.owner_matches(namespace, kind, name, uid, pod_print)
    }
}

impl PolicySource for Caches {
    fn ready(&self) -> bool {
        self.0.policies_synced()
    }

    fn policies(&self) -> Arc<[Policy]> {
        let namespaced = self.0.policies.state().into_iter().map(|p| p.policy());
        let cluster = self
            .0
            .cluster_policies
            .state()
            .into_iter()
            .map(|p| p.policy());
        namespaced.chain(cluster).collect()
    }

    fn namespace_labels(&self, ns: &str) -> BTreeMap<String, String> {
        self.0.namespace_labels(ns)
    }
}

fn observer(metrics: &Arc<Metrics>) -> Observer {
    let metrics = Arc::clone(metrics);
    Arc::new(
        move |webhook: &'static str, outcome: Outcome, took: Duration| {
            metrics
                .admission
                .get_or_create(&AdmissionLabels {
                    webhook: webhook.to_owned(),
                    result: outcome.as_str().to_owned(),
                })
                .inc();
            metrics
                .admission_duration
                .get_or_create(&WebhookLabel {
                    webhook: webhook.to_owned(),
                })
                .observe(took.as_secs_f64());
        },
    )
}

/// Binds the webhook port, loads the first certificate, and serves until
/// `stop`; in-flight reviews then get `deadline`.
pub(crate) async fn start(
    ctx: &Arc<Context>,
    options: &WebhookOptions,
    stop: Stop,
    deadline: Duration,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let addr = options.addr;
    let (store, maintainer): (CertStore, tokio::task::JoinHandle<()>) = match &options.tls {
        TlsSource::Files { cert, key } => {
            let pair = tls::read_files(cert, key)?;
            let store = CertStore::new(&pair)?;
            let task = tokio::spawn(tls::watch_files(
                store.clone(),
                cert.clone(),
                key.clone(),
                Duration::from_secs(2),
            ));
            (store, task)
        }
        TlsSource::SelfManaged(opts) => {
            let (store, bundle) = loop {
                match certs::initial(&ctx.client, opts).await {
                    Ok(found) => break found,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot set up the webhook certificate; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_secs(2)) => {}
                            () = stop.clone() => return Err(Error::StoppedBeforeCertificate),
                        }
                    }
                }
            };
            let task = tokio::spawn(certs::maintain(
                ctx.client.clone(),
                opts.clone(),
                store.clone(),
                bundle,
            ));
            (store, task)
        }
    };
    let client_cas = options
        .client_ca
        .as_deref()
        .map(tls::read_client_cas)
        .transpose()?;
    let config = store.server_config(client_cas.as_deref())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Admin { addr, source })?;
    let webhooks = Webhooks {
        source: Arc::new(Caches(Arc::clone(ctx))),
        resolver: options.resolver.clone(),
        mutate_budget: options.budget,
        observer: Some(observer(&ctx.metrics)),
    };
    ctx.metrics
        .registry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .register_collector(Box::new(super::metrics::CertificateExpiry(store.clone())));
    let metrics = Arc::clone(&ctx.metrics);
    let connections: server::ConnectionObserver = Arc::new(move |protocol: &'static str| {
        metrics
            .webhook_connections
            .get_or_create(&ProtocolLabel {
                protocol: protocol.to_owned(),
            })
            .inc();
    });
    tracing::info!(%addr, "admission webhooks listening (/validate /mutate)");
    // Reviews get a runtime of their own: a reconcile or a burst of watch
    // events never holds a worker a review waits for. Two workers, so a
    // huge review being decoded does not hold up the small ones.
    let listener = listener
        .into_std()
        .map_err(|source| Error::Admin { addr, source })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("probity-admission")
        .build()
        .map_err(|source| Error::Admin { addr, source })?;
    let (stopped, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let relay = tokio::spawn(async move {
        stop.await;
        let _ = stopped.send(());
    });
    let (done, finished) = tokio::sync::oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("probity-admission".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => {
                        server::serve(
                            listener,
                            config,
                            server::router(webhooks),
                            // A dropped sender (the operator's runtime
                            // going away) stops serving too.
                            async move {
                                let _ = stop_rx.await;
                            },
                            deadline,
                            Some(connections),
                        )
                        .await;
                    }
                    Err(e) => tracing::error!(%addr, error = %e, "webhook listener unusable"),
                }
            });
            // Served connections have drained by now; what is left is
            // aborted.
            runtime.shutdown_timeout(Duration::from_secs(1));
            let _ = done.send(());
        })
        .map_err(|source| Error::Admin { addr, source })?;
    Ok(tokio::spawn(async move {
        // Sent, or the thread is gone (it panicked): either way, finished.
        let _ = finished.await;
        relay.abort();
        maintainer.abort();
    }))
}
