//! Test fixtures: a [`Context`] whose client talks to a mock API server the
//! test answers request by request, and writable caches behind its stores.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::channel::{mpsc, oneshot};
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;

use super::leader::Leadership;
use super::metrics::Metrics;
use super::reconcile::EventJob;
use super::store::{PodIndex, Slim};
use super::{Context, Options, Synced};
use crate::policy::{ClusterReadinessPolicy, ReadinessPolicy, WorkloadKind};

type Exchange = (
    http::Request<kube::client::Body>,
    oneshot::Sender<http::Response<String>>,
);

/// The other end of the test client: every request it sends waits here
/// until the test answers it.
pub(crate) struct ApiServer {
    requests: mpsc::UnboundedReceiver<Exchange>,
}

/// One request the client sent, to inspect and answer.
pub(crate) struct Call {
    pub(crate) method: http::Method,
    pub(crate) path: String,
    pub(crate) body: serde_json::Value,
    respond: oneshot::Sender<http::Response<String>>,
}

/// The writers behind the context's stores.
pub(crate) struct Caches {
    pub(crate) policies: Writer<ReadinessPolicy>,
    pub(crate) cluster_policies: Writer<ClusterReadinessPolicy>,
    pub(crate) namespaces: Writer<PartialObjectMeta<Namespace>>,
    pub(crate) workloads: HashMap<WorkloadKind, Writer<Slim>>,
}

// === impl ApiServer ===

impl ApiServer {
    /// The next request, or a panic naming what was expected.
    pub(crate) async fn next(&mut self, expected: &str) -> Call {
        use futures::StreamExt as _;
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), self.requests.next());
        let Ok(Some((request, respond))) = next.await else {
            panic!("the client sent no request; expected {expected}");
        };
        let (parts, body) = request.into_parts();
        let bytes = http_body_util::BodyExt::collect(body)
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        Call {
            method: parts.method,
            path: parts.uri.to_string(),
            body: serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
            respond,
        }
    }

    /// Whether a request is waiting, without waiting for one.
    pub(crate) fn idle(&mut self) -> bool {
        self.requests.try_recv().is_err()
    }
}

// === impl Call ===

impl Call {
    /// Answers with `status` and a JSON body.
    pub(crate) fn reply(self, status: u16, body: &serde_json::Value) {
        let response = http::Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(body.to_string())
            .unwrap_or_default();
        let _ = self.respond.send(response);
    }
}

// === impl Caches ===

impl Caches {
    pub(crate) fn policy(&mut self, value: serde_json::Value) {
        let policy = serde_json::from_value(value).expect("a ReadinessPolicy");
        self.policies
            .apply_watcher_event(&watcher::Event::Apply(policy));
    }

    pub(crate) fn cluster_policy(&mut self, value: serde_json::Value) {
        let policy = serde_json::from_value(value).expect("a ClusterReadinessPolicy");
        self.cluster_policies
            .apply_watcher_event(&watcher::Event::Apply(policy));
    }

    pub(crate) fn namespace(&mut self, name: &str, labels: serde_json::Value) {
        let ns = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        }))
        .expect("a Namespace");
        self.namespaces
            .apply_watcher_event(&watcher::Event::Apply(ns));
    }

    /// Caches `object` (a workload of `kind`, as the API server would send
    /// it) in its slim form, as the watcher does.
    pub(crate) fn workload(&mut self, kind: WorkloadKind, object: serde_json::Value) {
        let object = super::store::Watched::from_value(&object);
        let slim = Slim::from_watched(kind, object, None, &|_, _| None, 0);
        self.writer(kind)
            .apply_watcher_event(&watcher::Event::Apply(slim));
    }

    /// Removes the cached workload of `kind` named `namespace/name`.
    pub(crate) fn delete_workload(&mut self, kind: WorkloadKind, namespace: &str, name: &str) {
        let reader = self.writer(kind).as_reader();
        let key = kube::runtime::reflector::ObjectRef::new_with(name, kind).within(namespace);
        let slim = reader.get(&key).expect("a cached workload");
        self.writer(kind)
            .apply_watcher_event(&watcher::Event::Delete((*slim).clone()));
    }

    fn writer(&mut self, kind: WorkloadKind) -> &mut Writer<Slim> {
        self.workloads
            .get_mut(&kind)
            .expect("a writer per workload kind")
    }
}

/// A client whose every request waits for the test to answer it.
pub(crate) fn client() -> (kube::Client, ApiServer) {
    let (tx, requests) = mpsc::unbounded::<Exchange>();
    let service = tower::service_fn(move |request: http::Request<kube::client::Body>| {
        let tx = tx.clone();
        async move {
            let (respond, answer) = oneshot::channel();
            tx.unbounded_send((request, respond))
                .map_err(|_| "the test's API server is gone".to_owned())?;
            answer
                .await
                .map_err(|_| "the test dropped the request".to_owned())
        }
    });
    (
        kube::Client::new(service, "default"),
        ApiServer { requests },
    )
}

// === impl Context ===

impl Context {
    /// A context on a mock API server, with empty caches, leading always.
    pub(crate) fn test(
        options: Options,
    ) -> (
        Arc<Context>,
        Caches,
        ApiServer,
        mpsc::UnboundedReceiver<EventJob>,
    ) {
        let (client, api) = client();
        let policies = Writer::<ReadinessPolicy>::default();
        let cluster_policies = Writer::<ClusterReadinessPolicy>::default();
        let namespaces = Writer::<PartialObjectMeta<Namespace>>::default();
        let writers: HashMap<WorkloadKind, Writer<Slim>> = WorkloadKind::ALL
            .into_iter()
            .map(|kind| (kind, Writer::<Slim>::new(kind)))
            .collect();
        let workloads = writers
            .iter()
            .map(|(kind, writer)| (*kind, writer.as_reader()))
            .collect();
        let (events, jobs) = mpsc::unbounded();
        let ctx = Arc::new(Context {
            client,
            backstop: options.backstop.clone().map(super::backstop::Backstop::new),
            reports: options.policy_reports.map(super::reconcile::Reports::new),
            options,
            workloads,
            namespaces: namespaces.as_reader(),
            pods: PodIndex::default(),
            policies: policies.as_reader(),
            cluster_policies: cluster_policies.as_reader(),
            cache: super::reconcile::EvalCache::default(),
            seen_events: Mutex::new(HashMap::new()),
            events,
            failures: Mutex::new(HashMap::new()),
            leadership: Leadership::always(),
            metrics: Arc::new(Metrics::new()),
            synced: Synced::default(),
            policies_listed: Synced::default(),
            cluster_policies_listed: Synced::default(),
            tags: Mutex::new(HashMap::new()),
        });
        let caches = Caches {
            policies,
            cluster_policies,
            namespaces,
            workloads: writers,
        };
        (ctx, caches, api, jobs)
    }
}
