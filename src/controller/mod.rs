//! `probity operator`, the controller half: keeps every `ReadinessPolicy`
//! and `ClusterReadinessPolicy` status true, publishes Events on violating
//! workloads, and detects digest drift and synchronized restarts from pod
//! status.
//!
//! - Workloads of every kind are watched into slim reflector stores; an
//!   event triggers a reconcile of exactly the policies that match the
//!   object, and a policy reconcile re-evaluates only the workloads whose
//!   `resourceVersion` changed since it last looked.
//! - Policies are watched with a generation predicate, so the operator's
//!   own status writes do not trigger it again.
//! - Only the leader (a `coordination.k8s.io` Lease) writes status and
//!   Events; standbys keep warm caches and take over within a lease
//!   duration.

mod backstop;
pub mod drift;
mod guard;
pub mod leader;
mod metrics;
mod policy_object;
mod reconcile;
mod store;
mod webhooks;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt as _, StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt as _, predicates, watcher};
use kube::{Api, Client, ResourceExt as _};
use probity_probe::health::{CheckOptions, Health};

use crate::policy::{ClusterReadinessPolicy, ReadinessPolicy, WorkloadKind};
pub use leader::{Leadership, LeaseOptions};
use metrics::{Metrics, ResourceLabel};
use reconcile::{EventJob, PolicyObject};
use store::{PodIndex, Slim, WorkloadKey};
pub use webhooks::{TlsSource, WebhookOptions};

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "probity-operator";

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
        }
    }
}

/// Why the operator stopped.
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
    Health(String),
    /// A reconcile could not read its caches.
    #[error("caches: {0}")]
    Cache(String),
    /// The webhooks could not be served.
    #[error("webhooks: {0}")]
    Webhook(String),
    /// A leader's write did not finish within its leadership fence.
    #[error("{0}")]
    Fenced(#[from] leader::Fenced),
    /// A reconcile panicked (a bug); it is retried like any failure.
    #[error("{what} panicked: {message}")]
    Panicked {
        /// Which reconcile.
        what: String,
        /// The panic message.
        message: String,
    },
}

type Stop = Shared<BoxFuture<'static, ()>>;

/// A tag's digest (or why not), and when it was asked.
type TagAnswer = (Result<String, String>, Instant);

/// State shared by the reconcilers.
pub(crate) struct Context {
    client: Client,
    options: Options,
    workloads: HashMap<WorkloadKind, Store<Slim>>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    pods: PodIndex,
    policies: Store<ReadinessPolicy>,
    cluster_policies: Store<ClusterReadinessPolicy>,
    cache: reconcile::EvalCache,
    seen_events: Mutex<HashMap<(String, String), std::collections::BTreeMap<String, u64>>>,
    events: mpsc::UnboundedSender<EventJob>,
    failures: Mutex<HashMap<String, u32>>,
    leadership: Leadership,
    metrics: Arc<Metrics>,
    synced: Arc<AtomicBool>,
    synced_tx: tokio::sync::watch::Sender<bool>,
    /// Set when each policy watch (namespaced, cluster) has listed once.
    policy_lists: [Arc<AtomicBool>; 2],
    backstop: Option<backstop::Backstop>,
    /// Tag -> digest answers for `images.pin: Report`, with when.
    tags: Mutex<HashMap<String, TagAnswer>>,
}

impl Context {
    fn store(&self, kind: WorkloadKind) -> Option<&Store<Slim>> {
        self.workloads.get(&kind)
    }

    /// Waits until [`report_sync`] has seen every store listed. Only that
    /// one task waits on the stores themselves: a store's readiness wakes a
    /// single waiter.
    async fn wait_synced(&self) -> Result<(), Error> {
        let mut rx = self.synced_tx.subscribe();
        rx.wait_for(|synced| *synced)
            .await
            .map(drop)
            .map_err(|e| Error::Cache(e.to_string()))
    }

    async fn wait_stores(&self) -> Result<(), Error> {
        for store in self.workloads.values() {
            store
                .wait_until_ready()
                .await
                .map_err(|e| Error::Cache(e.to_string()))?;
        }
        self.namespaces
            .wait_until_ready()
            .await
            .map_err(|e| Error::Cache(e.to_string()))
    }

    /// Whether the workload caches and both policy caches are synced: what
    /// the webhooks need before they can judge anything.
    pub(crate) fn policies_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
            && self.policy_lists.iter().all(|l| l.load(Ordering::Acquire))
    }

    fn namespace_labels(&self, ns: &str) -> std::collections::BTreeMap<String, String> {
        let mut labels = self
            .namespaces
            .get(&ObjectRef::new(ns))
            .map(|n| n.labels().clone())
            .unwrap_or_default();
        labels
            .entry("kubernetes.io/metadata.name".to_owned())
            .or_insert_with(|| ns.to_owned());
        labels
    }

    /// Whether the controller `owner_kind`/`owner_name` with `owner_uid`
    /// is in the caches with that UID and, when `pod_print` is given (a
    /// Pod), its pod template has those containers: only then may it stand
    /// for the object. An ownerReference is written by whoever writes the
    /// object; this is the proof.
    pub(crate) fn owner_matches(
        &self,
        namespace: &str,
        owner_kind: &str,
        owner_name: &str,
        owner_uid: &str,
        pod_print: Option<u64>,
    ) -> bool {
        let Some(kind) = WorkloadKind::from_kind(owner_kind) else {
            return false;
        };
        let Some(owner) = self
            .store(kind)
            .and_then(|s| s.get(&ObjectRef::new_with(owner_name, kind).within(namespace)))
        else {
            return false;
        };
        owner.meta.uid.as_deref() == Some(owner_uid)
            && pod_print.is_none_or(|print| owner.print == Some(print))
    }

    /// Whether the cached object `slim` of `kind` is judged through its
    /// controller (see [`Context::owner_matches`]).
    pub(crate) fn stands_for(&self, kind: WorkloadKind, slim: &Slim) -> bool {
        let Some(owner) = slim.controller() else {
            return false;
        };
        let print = if kind == WorkloadKind::Pod {
            // A Pod without a fingerprint cannot be matched to a template.
            let Some(print) = slim.print else {
                return false;
            };
            Some(print)
        } else {
            None
        };
        self.owner_matches(
            slim.meta.namespace.as_deref().unwrap_or_default(),
            &owner.kind,
            &owner.name,
            &owner.uid,
            print,
        )
    }

    fn owner_of_rs(&self, ns: &str, rs: &str) -> Option<String> {
        let store = self.store(WorkloadKind::ReplicaSet)?;
        let slim = store.get(&ObjectRef::new_with(rs, WorkloadKind::ReplicaSet).within(ns))?;
        let owner = slim.controller()?;
        (owner.kind == "Deployment").then(|| owner.name.clone())
    }
}

/// Runs the operator until `stop` resolves.
///
/// # Errors
///
/// When the admin endpoint cannot be bound or the health registry is
/// invalid. API errors are retried with backoff, never returned.
pub async fn run(
    client: Client,
    options: Options,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let started = Instant::now();
    let stop: Stop = stop.boxed().shared();
    let metrics = Arc::new(Metrics::new());
    let synced = Arc::new(AtomicBool::new(false));

    let (leadership, lease_task) = match &options.lease {
        Some(lease) => {
            let (l, task) = leader::spawn(client.clone(), lease.clone(), stop.clone());
            (l, Some(task))
        }
        None => (Leadership::always(), None),
    };

    let admin = admin_server(&options, &leadership, &synced, &metrics, stop.clone()).await?;

    // Policy stores, filled by the controllers' own watchers.
    let (policies, policies_writer) = reflector::store::<ReadinessPolicy>();
    let (cluster_policies, cluster_writer) = reflector::store::<ClusterReadinessPolicy>();
    let (namespaces, ns_writer) = reflector::store::<PartialObjectMeta<Namespace>>();

    let mut workloads = HashMap::new();
    let mut writers = Vec::new();
    for kind in WorkloadKind::ALL {
        let writer = reflector::store::Writer::new(kind);
        workloads.insert(kind, writer.as_reader());
        writers.push((kind, writer));
    }

    let (events_tx, events_rx) = mpsc::unbounded();
    let (rp_tx, rp_rx) = mpsc::unbounded::<ObjectRef<ReadinessPolicy>>();
    let (crp_tx, crp_rx) = mpsc::unbounded::<ObjectRef<ClusterReadinessPolicy>>();

    let ctx = Arc::new(Context {
        client: client.clone(),
        options: options.clone(),
        workloads,
        namespaces,
        pods: PodIndex::default(),
        policies: policies.clone(),
        cluster_policies: cluster_policies.clone(),
        cache: reconcile::EvalCache::default(),
        seen_events: Mutex::new(HashMap::new()),
        events: events_tx,
        failures: Mutex::new(HashMap::new()),
        leadership: leadership.clone(),
        metrics: Arc::clone(&metrics),
        synced: Arc::clone(&synced),
        synced_tx: tokio::sync::watch::Sender::new(false),
        policy_lists: [
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        ],
        backstop: options.backstop.clone().map(backstop::Backstop::new),
        tags: Mutex::new(HashMap::new()),
    });

    let triggers = Triggers {
        rp: rp_tx,
        crp: crp_tx,
    };
    let mut tasks = Vec::new();
    for (kind, writer) in writers {
        tasks.push(tokio::spawn(watch_workloads(
            Arc::clone(&ctx),
            kind,
            writer,
            triggers.clone(),
            stop.clone(),
        )));
    }
    tasks.push(tokio::spawn(watch_namespaces(
        Arc::clone(&ctx),
        ns_writer,
        triggers.clone(),
        stop.clone(),
    )));
    tasks.push(tokio::spawn(reconcile::publish_events(
        Arc::clone(&ctx),
        events_rx,
        options.identity.clone(),
        stop.clone(),
    )));
    if ctx.backstop.is_some() {
        tasks.push(tokio::spawn(backstop::sweep(
            Arc::clone(&ctx),
            Duration::from_secs(10),
            stop.clone(),
        )));
    }
    tasks.push(tokio::spawn(report_sync(
        Arc::clone(&ctx),
        started,
        stop.clone(),
    )));

    let config = controller::Config::default().debounce(options.debounce);
    let rp_controller = policy_controller(
        &ctx,
        policies_writer,
        rp_rx,
        config.clone(),
        Arc::clone(&ctx.policy_lists[0]),
        stop.clone(),
    )
    .run(
        reconcile::reconcile_guarded::<ReadinessPolicy>,
        reconcile::error_policy::<ReadinessPolicy>,
        Arc::clone(&ctx),
    )
    .for_each(|_| futures::future::ready(()));
    let crp_controller = policy_controller(
        &ctx,
        cluster_writer,
        crp_rx,
        config,
        Arc::clone(&ctx.policy_lists[1]),
        stop.clone(),
    )
    .run(
        reconcile::reconcile_guarded::<ClusterReadinessPolicy>,
        reconcile::error_policy::<ClusterReadinessPolicy>,
        Arc::clone(&ctx),
    )
    .for_each(|_| futures::future::ready(()));

    let webhook_task = match &options.webhooks {
        Some(w) => Some(webhooks::start(&ctx, w, stop.clone()).await?),
        None => None,
    };

    tracing::info!(identity = %options.identity, admin = %options.admin_addr, "operator started");
    futures::join!(rp_controller, crp_controller);
    stop.clone().await;
    for task in tasks {
        task.abort();
    }
    if let Some(task) = lease_task {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), admin).await;
    if let Some(task) = webhook_task {
        let _ = tokio::time::timeout(Duration::from_secs(11), task).await;
    }
    tracing::info!("operator stopped");
    Ok(())
}

fn policy_controller<P: PolicyObject>(
    ctx: &Context,
    writer: reflector::store::Writer<P>,
    triggers: mpsc::UnboundedReceiver<ObjectRef<P>>,
    config: controller::Config,
    listed: Arc<AtomicBool>,
    stop: Stop,
) -> Controller<P> {
    let (client, leadership, metrics) = (&ctx.client, &ctx.leadership, &ctx.metrics);
    let reader = writer.as_reader();
    let restarts = metrics
        .watch_restarts
        .get_or_create(&ResourceLabel {
            resource: P::PLURAL.to_owned(),
        })
        .clone();
    let policies = reflector::reflector(
        writer,
        watcher(Api::<P>::all(client.clone()), watcher::Config::default()).default_backoff(),
    )
    .inspect_err(move |e| {
        restarts.inc();
        tracing::warn!(error = %e, resource = P::PLURAL, "policy watch failed; retrying");
    })
    .inspect_ok(move |event| {
        if matches!(event, watcher::Event::InitDone) {
            listed.store(true, Ordering::Release);
        }
    })
    .applied_objects()
    // Our own status writes change resourceVersion, never generation.
    .predicate_filter(predicates::generation, Default::default());
    let leader_changes = tokio_stream_from_watch(leadership.changes());
    Controller::for_stream(policies, reader)
        .with_config(config)
        .reconcile_on(triggers)
        .reconcile_all_on(leader_changes)
        .graceful_shutdown_on(stop)
}

/// A unit item each time this replica becomes leader, so it rewrites
/// whatever a previous leader left stale.
fn tokio_stream_from_watch(
    rx: tokio::sync::watch::Receiver<bool>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        loop {
            rx.changed().await.ok()?;
            if *rx.borrow_and_update() {
                return Some(((), rx));
            }
        }
    })
}

#[derive(Clone)]
struct Triggers {
    rp: mpsc::UnboundedSender<ObjectRef<ReadinessPolicy>>,
    crp: mpsc::UnboundedSender<ObjectRef<ClusterReadinessPolicy>>,
}

impl Triggers {
    /// Triggers the policies that match a workload of `kind` with
    /// `labels` in `namespace`.
    fn matching(
        &self,
        ctx: &Context,
        kind: WorkloadKind,
        namespace: &str,
        labels: &std::collections::BTreeMap<String, String>,
    ) {
        for policy in ctx.policies.state() {
            if policy.namespace().as_deref() == Some(namespace) && policy.spec.matches(kind, labels)
            {
                let _ = self.rp.unbounded_send(ObjectRef::from_obj(&*policy));
            }
        }
        let mut ns_labels = None;
        for policy in ctx.cluster_policies.state() {
            if !policy.spec.policy.matches(kind, labels) {
                continue;
            }
            let in_scope = policy.spec.namespace_selector.as_ref().is_none_or(|sel| {
                let labels = ns_labels.get_or_insert_with(|| ctx.namespace_labels(namespace));
                crate::policy::selector::matches(sel, labels)
            });
            if in_scope {
                let _ = self.crp.unbounded_send(ObjectRef::from_obj(&*policy));
            }
        }
    }

    fn all_cluster(&self, ctx: &Context) {
        for policy in ctx.cluster_policies.state() {
            let _ = self.crp.unbounded_send(ObjectRef::from_obj(&*policy));
        }
    }

    fn all(&self, ctx: &Context) {
        for policy in ctx.policies.state() {
            let _ = self.rp.unbounded_send(ObjectRef::from_obj(&*policy));
        }
        self.all_cluster(ctx);
    }

    /// Triggers the policies matching the workload `key`, as cached.
    fn workload(&self, ctx: &Context, key: &WorkloadKey) {
        let Some(store) = ctx.store(key.kind) else {
            return;
        };
        let reference = ObjectRef::new_with(&key.name, key.kind).within(&key.namespace);
        if let Some(slim) = store.get(&reference) {
            self.matching(ctx, key.kind, &key.namespace, slim.labels());
        }
    }
}

/// Watches one workload kind into its store, triggering the policies each
/// change concerns.
async fn watch_workloads(
    ctx: Arc<Context>,
    kind: WorkloadKind,
    writer: reflector::store::Writer<Slim>,
    triggers: Triggers,
    stop: Stop,
) {
    let gvk = match kind.api_version().rsplit_once('/') {
        Some((group, version)) => GroupVersionKind::gvk(group, version, kind.as_str()),
        None => GroupVersionKind::gvk("", kind.api_version(), kind.as_str()),
    };
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &ApiResource::from_gvk(&gvk));
    let reader = writer.as_reader();
    let restarts = ctx
        .metrics
        .watch_restarts
        .get_or_create(&ResourceLabel {
            resource: format!("{}s", kind.as_str().to_ascii_lowercase()),
        })
        .clone();
    let slim_ctx = Arc::clone(&ctx);
    let stream = watcher(api, watcher::Config::default().page_size(100))
        .default_backoff()
        .map_ok(move |event| {
            let now = k8s_openapi::jiff::Timestamp::now().as_second();
            store::map_event(event, |object| {
                let previous = object
                    .metadata
                    .name
                    .as_deref()
                    .zip(object.metadata.namespace.as_deref())
                    .and_then(|(name, ns)| reader.get(&ObjectRef::new_with(name, kind).within(ns)));
                Slim::from_dynamic(
                    kind,
                    object,
                    previous.as_deref(),
                    &|ns, rs| slim_ctx.owner_of_rs(ns, rs),
                    now,
                )
            })
        });
    let events = reflector::reflector(writer, stream).take_until(stop);
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                restarts.inc();
                tracing::warn!(kind = kind.as_str(), error = %e, "watch failed; retrying with backoff");
                continue;
            }
        };
        if kind == WorkloadKind::Pod {
            for owner in ctx.pods.apply(&event) {
                triggers.workload(&ctx, &owner);
            }
        }
        match &event {
            watcher::Event::Apply(obj) | watcher::Event::Delete(obj) => {
                if !ctx.stands_for(kind, obj) {
                    triggers.matching(
                        &ctx,
                        kind,
                        obj.meta.namespace.as_deref().unwrap_or_default(),
                        obj.labels(),
                    );
                }
            }
            watcher::Event::InitDone => {
                tracing::info!(
                    kind = kind.as_str(),
                    objects = reader_len(&ctx, kind),
                    "listed"
                );
                triggers.all(&ctx);
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
    }
}

fn reader_len(ctx: &Context, kind: WorkloadKind) -> usize {
    ctx.store(kind).map_or(0, Store::len)
}

/// Namespace labels decide where cluster policies apply.
async fn watch_namespaces(
    ctx: Arc<Context>,
    writer: reflector::store::Writer<PartialObjectMeta<Namespace>>,
    triggers: Triggers,
    stop: Stop,
) {
    let api: Api<PartialObjectMeta<Namespace>> = Api::all(ctx.client.clone());
    let restarts = ctx
        .metrics
        .watch_restarts
        .get_or_create(&ResourceLabel {
            resource: "namespaces".to_owned(),
        })
        .clone();
    let stream = watcher(api, watcher::Config::default().page_size(100))
        .default_backoff()
        .modify(|ns| ns.managed_fields_mut().clear());
    let events = reflector::reflector(writer, stream).take_until(stop);
    futures::pin_mut!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                triggers.all_cluster(&ctx);
            }
            Ok(_) => {}
            Err(e) => {
                restarts.inc();
                tracing::warn!(error = %e, "namespace watch failed; retrying with backoff");
            }
        }
    }
}

/// Marks the caches synced once every store has listed.
async fn report_sync(ctx: Arc<Context>, started: Instant, stop: Stop) {
    tokio::select! {
        synced = ctx.wait_stores() => {
            if synced.is_ok() {
                ctx.synced.store(true, Ordering::Release);
                ctx.synced_tx.send_replace(true);
                let cached: usize = ctx.workloads.values().map(Store::len).sum();
                tracing::info!(
                    elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    objects = cached,
                    "caches synced"
                );
            }
        }
        () = stop => {}
    }
}

/// `/livez`, `/readyz`, `/startupz` (probity-probe) and `/metrics`.
async fn admin_server(
    options: &Options,
    leadership: &Leadership,
    synced: &Arc<AtomicBool>,
    metrics: &Arc<Metrics>,
    stop: Stop,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let caches = |synced: Arc<AtomicBool>| {
        move || {
            let synced = Arc::clone(&synced);
            async move {
                if synced.load(Ordering::Acquire) {
                    Ok(())
                } else {
                    Err("caches not synced yet")
                }
            }
        }
    };
    let lead = leadership.clone();
    let health = Health::builder()
        .startup("informers-synced", caches(Arc::clone(synced)))
        .readiness_with(
            "caches",
            caches(Arc::clone(synced)),
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
        .build()
        .map_err(|e| Error::Health(e.to_string()))?;
    if let Ok(mut registry) = metrics.registry.lock() {
        health.register_metrics(&mut registry);
    }
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
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::error!(error = %e, "admin endpoint failed");
        }
    }))
}

/// Applies the CRDs with server-side apply and waits until they are
/// established.
///
/// # Errors
///
/// When the API server rejects them or they are not established in time.
pub async fn install_crds(client: &Client, timeout: Duration) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    for crd in crate::policy::crds() {
        let name = crd.name_any();
        api.patch(&name, &apply, &Patch::Apply(&crd)).await?;
        let established = kube::runtime::wait::await_condition(
            api.clone(),
            &name,
            kube::runtime::conditions::is_crd_established(),
        );
        match tokio::time::timeout(timeout, established).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(Error::Cache(format!("waiting for CRD {name}: {e}"))),
            Err(_) => {
                return Err(Error::Cache(format!(
                    "CRD {name} not established after {timeout:?}"
                )));
            }
        }
    }
    Ok(())
}
