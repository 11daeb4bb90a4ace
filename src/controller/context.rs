//! The state the reconcilers, watchers and webhooks share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt as _};
use tokio::time::Instant;

use super::leader::Leadership;
use super::metrics::Metrics;
use super::reconcile::EventJob;
use super::store::{PodIndex, Slim};
use super::{Error, Options};
use crate::policy::{ClusterReadinessPolicy, ReadinessPolicy, WorkloadKind};

/// A tag's digest (or why not), and when it was asked.
type TagAnswer = (
    Result<crate::image::Digest, crate::registry::ResolveError>,
    Instant,
);

/// State shared by the reconcilers.
pub(crate) struct Context {
    pub(super) client: Client,
    pub(super) options: Options,
    pub(super) workloads: HashMap<WorkloadKind, Store<Slim>>,
    pub(super) namespaces: Store<PartialObjectMeta<Namespace>>,
    pub(super) pods: PodIndex,
    pub(super) policies: Store<ReadinessPolicy>,
    pub(super) cluster_policies: Store<ClusterReadinessPolicy>,
    pub(super) cache: super::reconcile::EvalCache,
    pub(super) seen_events:
        Mutex<HashMap<(String, String), std::collections::BTreeMap<String, u64>>>,
    pub(super) events: mpsc::UnboundedSender<EventJob>,
    pub(super) failures: Mutex<HashMap<String, u32>>,
    pub(super) leadership: Leadership,
    pub(super) metrics: Arc<Metrics>,
    /// Every workload store and the namespaces have listed once.
    pub(super) synced: Synced,
    /// The `ReadinessPolicy` watch has listed once.
    pub(super) policies_listed: Synced,
    /// The `ClusterReadinessPolicy` watch has listed once.
    pub(super) cluster_policies_listed: Synced,
    pub(super) backstop: Option<super::backstop::Backstop>,
    /// With `--policy-reports`: what was written.
    pub(super) reports: Option<super::reconcile::Reports>,
    /// Tag -> digest answers for `images.pin: Report`, with when.
    pub(super) tags: Mutex<HashMap<String, TagAnswer>>,
}

impl Context {
    pub(super) fn store(&self, kind: WorkloadKind) -> Option<&Store<Slim>> {
        self.workloads.get(&kind)
    }

    /// Waits until `report_sync` has seen every store listed. Only that
    /// one task waits on the stores themselves: a store's readiness wakes a
    /// single waiter.
    pub(super) async fn wait_synced(&self) -> Result<(), Error> {
        self.synced.wait().await
    }

    pub(super) async fn wait_stores(&self) -> Result<(), Error> {
        for (kind, store) in &self.workloads {
            store.wait_until_ready().await.map_err(|_| Error::Stopped {
                what: kind.as_str(),
            })?;
        }
        self.namespaces
            .wait_until_ready()
            .await
            .map_err(|_| Error::Stopped { what: "Namespace" })
    }

    /// Whether the workload caches and both policy caches are synced: what
    /// the webhooks need before they can judge anything.
    pub(crate) fn policies_synced(&self) -> bool {
        self.synced.is_set()
            && self.policies_listed.is_set()
            && self.cluster_policies_listed.is_set()
    }

    /// Every policy in the caches, of both kinds, as resolved policies
    /// with their UIDs.
    pub(super) fn all_policies(&self) -> Vec<(String, crate::policy::Policy)> {
        use super::policy_object::PolicyObject as _;
        use kube::Resource as _;
        let namespaced = self.policies.state();
        let cluster = self.cluster_policies.state();
        namespaced
            .iter()
            .map(|p| (p.meta().uid.clone().unwrap_or_default(), p.policy()))
            .chain(
                cluster
                    .iter()
                    .map(|p| (p.meta().uid.clone().unwrap_or_default(), p.policy())),
            )
            .collect()
    }

    pub(super) fn namespace_labels(&self, ns: &str) -> std::collections::BTreeMap<String, String> {
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

    pub(super) fn owner_of_rs(&self, ns: &str, rs: &str) -> Option<String> {
        let store = self.store(WorkloadKind::ReplicaSet)?;
        let slim = store.get(&ObjectRef::new_with(rs, WorkloadKind::ReplicaSet).within(ns))?;
        let owner = slim.controller()?;
        (owner.kind == "Deployment").then(|| owner.name.clone())
    }
}

/// A one-way signal that a cache has listed: checked without waiting (the
/// webhooks, the readiness probe) or awaited (the reconcilers).
#[derive(Debug, Clone)]
pub(crate) struct Synced(Arc<tokio::sync::watch::Sender<bool>>);

// === impl Synced ===

impl Default for Synced {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::watch::Sender::new(false)))
    }
}

impl Synced {
    /// Marks it synced, waking every waiter; it stays so.
    pub(crate) fn set(&self) {
        self.0.send_replace(true);
    }

    /// Whether it is synced.
    pub(crate) fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until it is synced.
    pub(crate) async fn wait(&self) -> Result<(), Error> {
        let mut rx = self.0.subscribe();
        rx.wait_for(|synced| *synced)
            .await
            .map(drop)
            .map_err(|_| Error::Stopped {
                what: "sync signal",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::Synced;

    #[tokio::test]
    async fn a_synced_signal_wakes_waiters_and_stays_set() {
        let synced = Synced::default();
        assert!(!synced.is_set());
        let waiter = tokio::spawn({
            let synced = synced.clone();
            async move { synced.wait().await.is_ok() }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "waits while unset");
        synced.set();
        assert!(waiter.await.unwrap_or(false));
        assert!(synced.is_set());
        assert!(
            synced.wait().await.is_ok(),
            "a later waiter returns at once"
        );
    }
}
