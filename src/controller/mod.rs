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

mod admin;
mod backstop;
mod context;
mod crds;
pub mod drift;
#[cfg(test)]
mod fixtures;
mod guard;
pub mod leader;
mod metrics;
mod options;
mod policy_object;
mod process;
mod reconcile;
mod store;
pub mod uninstall;
mod watch;
mod webhooks;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::channel::mpsc;
use futures::future::{BoxFuture, Shared};
use futures::{FutureExt as _, Stream, StreamExt as _};
use k8s_openapi::api::core::v1::Namespace;
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::controller;
use kube::runtime::reflector::{self, ObjectRef};
use probity_probe::health::{Health, Phase};
use tokio::time::Instant;

use crate::policy::{ClusterReadinessPolicy, ReadinessPolicy, WorkloadKind};
pub use leader::{Leadership, LeaseOptions};
use metrics::Metrics;
use store::PodIndex;
pub use webhooks::{TlsSource, WebhookOptions};

use admin::admin_server;
pub(crate) use context::{Context, Synced};
pub use crds::install_crds;
pub use options::{Error, Options};
use watch::{Triggers, policy_controller, report_sync, watch_namespaces, watch_workloads};

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "probity-operator";

type Stop = Shared<BoxFuture<'static, ()>>;

/// Runs the operator until its shutdown completes.
///
/// `shutdown` yields one item per shutdown request (a signal). The first
/// starts the drain probity-probe's services follow: `/readyz` fails at
/// once while everything keeps working for [`Options::drain_delay`], then
/// watchers, reconcilers and the lease stop and in-flight admission reviews
/// get [`Options::drain_deadline`]. A second request stops at once.
///
/// # Errors
///
/// When the admin endpoint cannot be bound, the health registry is
/// invalid, or the webhooks cannot be served. API errors are retried with
/// backoff, never returned.
pub async fn run(
    client: Client,
    options: Options,
    shutdown: impl Stream<Item = ()> + Send + 'static,
) -> Result<(), Error> {
    let started = Instant::now();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop: Stop = async move {
        let mut stop_rx = stop_rx;
        let _ = stop_rx.wait_for(|stopped| *stopped).await;
    }
    .boxed()
    .shared();
    let metrics = Arc::new(Metrics::new());
    let synced = Synced::default();

    let (leadership, lease_task) = match &options.lease {
        Some(lease) => {
            let (l, task) = leader::spawn(client.clone(), lease.clone(), stop.clone());
            (l, Some(task))
        }
        None => (Leadership::always(), None),
    };

    let (health, admin) =
        admin_server(&options, &leadership, &synced, &metrics, stop.clone()).await?;
    let requests = tokio::spawn(follow_shutdown(health.clone(), shutdown, stop_tx));
    // Past the drain deadline, or a second request: wait for nothing more.
    let hard_stop = health.reached(Phase::DeadlineExceeded).shared();

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
        synced: synced.clone(),
        policies_listed: Synced::default(),
        cluster_policies_listed: Synced::default(),
        backstop: options.backstop.clone().map(backstop::Backstop::new),
        reports: options.policy_reports.map(reconcile::Reports::new),
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
    if ctx.reports.is_some() {
        tasks.push(tokio::spawn(reconcile::sweep_reports(
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
        ctx.policies_listed.clone(),
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
        ctx.cluster_policies_listed.clone(),
        stop.clone(),
    )
    .run(
        reconcile::reconcile_guarded::<ClusterReadinessPolicy>,
        reconcile::error_policy::<ClusterReadinessPolicy>,
        Arc::clone(&ctx),
    )
    .for_each(|_| futures::future::ready(()));

    let webhook_task = match &options.webhooks {
        Some(w) => Some(webhooks::start(&ctx, w, stop.clone(), options.drain_deadline).await?),
        None => None,
    };

    tracing::info!(identity = %options.identity, admin = %options.admin_addr, "operator started");
    futures::join!(rp_controller, crp_controller);
    stop.clone().await;
    for task in tasks {
        task.abort();
    }
    let finish = |task: tokio::task::JoinHandle<()>, limit: Duration| {
        let hard_stop = hard_stop.clone();
        async move {
            let abort = task.abort_handle();
            tokio::select! {
                _ = tokio::time::timeout(limit, task) => {}
                () = hard_stop => abort.abort(),
            }
        }
    };
    // The lease is released, and in-flight reviews answered, side by side.
    let lease = async {
        if let Some(task) = lease_task {
            finish(task, Duration::from_secs(5)).await;
        }
    };
    let webhooks = async {
        if let Some(task) = webhook_task {
            finish(task, options.drain_deadline + Duration::from_secs(1)).await;
        }
    };
    futures::join!(lease, webhooks, finish(admin, Duration::from_secs(5)));
    requests.abort();
    tracing::info!("operator stopped");
    Ok(())
}

/// Turns shutdown requests into the health registry's drain, and its
/// "stop accepting work" moment into `stop`.
async fn follow_shutdown(
    health: Health,
    shutdown: impl Stream<Item = ()> + Send + 'static,
    stop: tokio::sync::watch::Sender<bool>,
) {
    let stopping = health.reached(Phase::Stopping);
    tokio::pin!(shutdown, stopping);
    let mut requests_open = true;
    loop {
        tokio::select! {
            () = &mut stopping => {
                tracing::info!("drain delay over: stopping watchers, reconcilers and the lease");
                let _ = stop.send(true);
                break;
            }
            request = shutdown.next(), if requests_open => match request {
                Some(()) => health.begin_shutdown(),
                None => requests_open = false,
            },
        }
    }
    // A second request still aborts the rest of the drain.
    while shutdown.next().await.is_some() {
        health.begin_shutdown();
    }
}
