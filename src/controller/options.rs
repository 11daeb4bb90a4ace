//! How the operator runs, and why it stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::leader::LeaseOptions;
use super::webhooks::WebhookOptions;

/// How the operator runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where `/livez`, `/readyz`, `/startupz` and `/metrics` are served.
    pub admin_addr: SocketAddr,
    /// Leader election; `None` runs as the only writer.
    pub lease: Option<LeaseOptions>,
    /// This replica's name in Events and the lease.
    pub identity: String,
    /// PRB303 fires when most replicas restarted within this window.
    pub restart_window: Duration,
    /// Quiet time before a triggered policy is reconciled, so a burst of
    /// workload changes costs one status write.
    pub debounce: Duration,
    /// Every policy is re-evaluated at least this often.
    pub resync: Duration,
    /// The admission webhooks; `None` serves none.
    pub webhooks: Option<WebhookOptions>,
    /// Keep a ValidatingAdmissionPolicy backstop per policy, its bindings
    /// never matching these namespaces; `None` keeps none.
    pub backstop: Option<Vec<String>>,
    /// Registry client for `images.pin: Report` (PRB302) and the mutating
    /// webhook.
    pub registry: Option<Arc<crate::registry::RegistryClient>>,
    /// How long a resolved tag is trusted before `images.pin: Report`
    /// policies ask the registry again.
    pub tag_ttl: Duration,
    /// After the first shutdown request, how long `/readyz` fails while
    /// everything keeps working, so endpoint removal propagates first.
    pub drain_delay: Duration,
    /// After the drain delay, how long in-flight admission reviews get.
    pub drain_deadline: Duration,
    /// Write wg-policy PolicyReports, listing at most this many results
    /// each; `None`: none.
    pub policy_reports: Option<usize>,
}

impl Options {
    /// Defaults for a replica named `identity`.
    pub fn new(identity: &str) -> Self {
        Self {
            admin_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            lease: None,
            identity: identity.to_owned(),
            restart_window: Duration::from_secs(300),
            debounce: Duration::from_millis(500),
            resync: Duration::from_secs(600),
            webhooks: None,
            backstop: None,
            registry: None,
            tag_ttl: Duration::from_secs(60),
            drain_delay: Duration::from_secs(5),
            drain_deadline: Duration::from_secs(10),
            policy_reports: None,
        }
    }
}

/// Why the operator stopped, or a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The admin endpoint could not be served.
    #[error("admin endpoint {addr}: {source}")]
    Admin {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The health registry was misconfigured.
    #[error("health checks: {0}")]
    Health(#[source] probity_probe::health::Misconfigured),
    /// A CRD the operator applied was not established in time.
    #[error("CRD {name} not established after {timeout:?}")]
    CrdNotEstablished {
        /// The CRD.
        name: String,
        /// How long it was given.
        timeout: Duration,
    },
    /// Watching a CRD for its Established condition failed.
    #[error("waiting for CRD {name}: {source}")]
    CrdWait {
        /// The CRD.
        name: String,
        /// Why.
        source: kube::runtime::wait::Error,
    },
    /// A cache stopped before it synced: the operator is shutting down.
    #[error("{what} stopped before it synced")]
    Stopped {
        /// Which cache.
        what: &'static str,
    },
    /// The webhook's serving certificate or client CA could not be used.
    #[error("webhook TLS: {0}")]
    Tls(#[from] crate::admission::tls::TlsError),
    /// The operator was stopped while it waited for its first webhook
    /// certificate.
    #[error("stopped before the webhook certificate was ready")]
    StoppedBeforeCertificate,
    /// A leader's write did not finish within its leadership fence.
    #[error("{0}")]
    Fenced(#[from] super::leader::Fenced),
    /// A reconcile panicked (a bug); it is retried like any failure.
    #[error("{what} panicked: {message}")]
    Panicked {
        /// Which reconcile.
        what: String,
        /// The panic message.
        message: String,
    },
}
