//! The watchers: workloads and namespaces into their stores, each change
//! triggering the policies it concerns; the policy controllers; the sync
//! report.

use std::sync::Arc;

use futures::channel::mpsc;
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::controller;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt as _, predicates, watcher};
use kube::{Api, ResourceExt as _};
use tokio::time::Instant;

use super::metrics::ResourceLabel;
use super::reconcile::PolicyObject;
use super::store::{Slim, Watched, WorkloadKey};
use super::{Context, Stop, Synced};
use crate::policy::{ClusterReadinessPolicy, ReadinessPolicy, WorkloadKind};

pub(super) fn policy_controller<P: PolicyObject>(
    ctx: &Context,
    writer: reflector::store::Writer<P>,
    triggers: mpsc::UnboundedReceiver<ObjectRef<P>>,
    config: controller::Config,
    listed: Synced,
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
            listed.set();
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
pub(super) fn tokio_stream_from_watch(
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
pub(super) struct Triggers {
    pub(super) rp: mpsc::UnboundedSender<ObjectRef<ReadinessPolicy>>,
    pub(super) crp: mpsc::UnboundedSender<ObjectRef<ClusterReadinessPolicy>>,
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
pub(super) async fn watch_workloads(
    ctx: Arc<Context>,
    kind: WorkloadKind,
    writer: reflector::store::Writer<Slim>,
    triggers: Triggers,
    stop: Stop,
) {
    let api: Api<Watched> = Api::all_with(ctx.client.clone(), &kind);
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
            super::store::map_event(event, |object| {
                let meta = kube::Resource::meta(&object);
                let previous = meta
                    .name
                    .as_deref()
                    .zip(meta.namespace.as_deref())
                    .and_then(|(name, ns)| reader.get(&ObjectRef::new_with(name, kind).within(ns)));
                Slim::from_watched(
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

pub(super) fn reader_len(ctx: &Context, kind: WorkloadKind) -> usize {
    ctx.store(kind).map_or(0, Store::len)
}

/// Namespace labels decide where cluster policies apply.
pub(super) async fn watch_namespaces(
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
pub(super) async fn report_sync(ctx: Arc<Context>, started: Instant, stop: Stop) {
    tokio::select! {
        synced = ctx.wait_stores() => {
            if synced.is_ok() {
                ctx.synced.set();
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::controller::Options;

    fn triggers() -> (
        Triggers,
        mpsc::UnboundedReceiver<ObjectRef<ReadinessPolicy>>,
        mpsc::UnboundedReceiver<ObjectRef<ClusterReadinessPolicy>>,
    ) {
        let (rp, rp_rx) = mpsc::unbounded();
        let (crp, crp_rx) = mpsc::unbounded();
        (Triggers { rp, crp }, rp_rx, crp_rx)
    }

    fn names<K: kube::Resource>(rx: &mut mpsc::UnboundedReceiver<ObjectRef<K>>) -> Vec<String>
    where
        K::DynamicType: Eq + std::hash::Hash + Clone,
    {
        let mut out = Vec::new();
        while let Ok(r) = rx.try_recv() {
            out.push(r.name);
        }
        out.sort();
        out
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn rp(ns: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
        json!({
            "apiVersion": "probity.dev/v1alpha1", "kind": "ReadinessPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec,
        })
    }

    #[tokio::test]
    async fn a_workload_wakes_the_policies_of_its_namespace_that_match_it() {
        let (ctx, mut caches, _api, _jobs) = Context::test(Options::new("test"));
        caches.policy(rp("shop", "all", json!({})));
        caches.policy(rp(
            "shop",
            "deployments",
            json!({"match": {"kinds": ["Deployment"]}}),
        ));
        caches.policy(rp(
            "shop",
            "cronjobs",
            json!({"match": {"kinds": ["CronJob"]}}),
        ));
        caches.policy(rp(
            "shop",
            "team-a",
            json!({"match": {"selector": {"matchLabels": {"team": "a"}}}}),
        ));
        caches.policy(rp("other", "elsewhere", json!({})));
        let (t, mut rp_rx, mut crp_rx) = triggers();

        t.matching(
            &ctx,
            WorkloadKind::Deployment,
            "shop",
            &labels(&[("team", "b")]),
        );
        assert_eq!(names(&mut rp_rx), ["all", "deployments"]);
        t.matching(
            &ctx,
            WorkloadKind::Deployment,
            "shop",
            &labels(&[("team", "a")]),
        );
        assert_eq!(names(&mut rp_rx), ["all", "deployments", "team-a"]);
        t.matching(&ctx, WorkloadKind::StatefulSet, "nowhere", &labels(&[]));
        assert!(names(&mut rp_rx).is_empty(), "no policy in that namespace");
        assert!(names(&mut crp_rx).is_empty());
    }

    #[tokio::test]
    async fn cluster_policies_wake_for_workloads_in_namespaces_their_selector_picks() {
        let (ctx, mut caches, _api, _jobs) = Context::test(Options::new("test"));
        caches.namespace("prod-1", json!({"env": "prod"}));
        caches.namespace("dev-1", json!({"env": "dev"}));
        caches.cluster_policy(json!({
            "apiVersion": "probity.dev/v1alpha1", "kind": "ClusterReadinessPolicy",
            "metadata": {"name": "prod"},
            "spec": {"namespaceSelector": {"matchLabels": {"env": "prod"}}},
        }));
        caches.cluster_policy(json!({
            "apiVersion": "probity.dev/v1alpha1", "kind": "ClusterReadinessPolicy",
            "metadata": {"name": "by-name"},
            "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dev-1"}}},
        }));
        caches.cluster_policy(json!({
            "apiVersion": "probity.dev/v1alpha1", "kind": "ClusterReadinessPolicy",
            "metadata": {"name": "everywhere"}, "spec": {},
        }));
        let (t, mut rp_rx, mut crp_rx) = triggers();

        t.matching(&ctx, WorkloadKind::Deployment, "prod-1", &labels(&[]));
        assert_eq!(names(&mut crp_rx), ["everywhere", "prod"]);
        t.matching(&ctx, WorkloadKind::Deployment, "dev-1", &labels(&[]));
        assert_eq!(
            names(&mut crp_rx),
            ["by-name", "everywhere"],
            "a namespace's own name label is implied"
        );
        t.matching(&ctx, WorkloadKind::Pod, "unknown", &labels(&[]));
        assert_eq!(names(&mut crp_rx), ["everywhere"]);
        assert!(names(&mut rp_rx).is_empty());

        t.all(&ctx);
        assert_eq!(names(&mut crp_rx), ["by-name", "everywhere", "prod"]);
    }
}
