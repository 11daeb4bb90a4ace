//! Workload caches: one reflector store per kind, holding a slim copy of
//! each object (no managedFields, no status, only the fields evaluation
//! reads, serialised), so 10,000 Deployments cost megabytes, not hundreds.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::DynamicObject;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

use super::drift::PodObservation;
use crate::policy::WorkloadKind;
use crate::policy::workload::{EXEMPT_ANNOTATION, creates, fingerprint_of};

/// A cached workload (or pod).
#[derive(Debug, Clone)]
pub(crate) struct Slim {
    /// Name, namespace, uid, resourceVersion, labels, controller owner.
    pub(crate) meta: ObjectMeta,
    /// The object as evaluation reads it, as JSON text. Kept for objects
    /// with a controller owner too: they are judged on their own when the
    /// owner does not stand for them (see `Context::stands_for`).
    pub(crate) body: Box<str>,
    /// For a Pod, the fingerprint of its containers; for a kind that
    /// creates Pods, of its pod template's (`pod_fingerprint`).
    pub(crate) print: Option<u64>,
    /// For pods: the workload they belong to and what their status says.
    pub(crate) pod: Option<Arc<PodInfo>>,
}

/// A pod as the runtime rules see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodInfo {
    pub(crate) owner: Option<WorkloadKey>,
    pub(crate) observation: PodObservation,
}

/// A workload by kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct WorkloadKey {
    pub(crate) kind: WorkloadKind,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl kube::Resource for Slim {
    type DynamicType = WorkloadKind;
    type Scope = NamespaceResourceScope;

    fn kind(dt: &WorkloadKind) -> Cow<'_, str> {
        Cow::Borrowed(dt.as_str())
    }

    fn group(dt: &WorkloadKind) -> Cow<'_, str> {
        Cow::Borrowed(dt.api_version().rsplit_once('/').map_or("", |(g, _)| g))
    }

    fn version(_: &WorkloadKind) -> Cow<'_, str> {
        Cow::Borrowed("v1")
    }

    fn plural(dt: &WorkloadKind) -> Cow<'_, str> {
        Cow::Owned(format!("{}s", dt.as_str().to_ascii_lowercase()))
    }

    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

impl Slim {
    pub(crate) fn controller(&self) -> Option<&OwnerReference> {
        self.meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
    }

    pub(crate) fn key(&self, kind: WorkloadKind) -> WorkloadKey {
        WorkloadKey {
            kind,
            namespace: self.meta.namespace.clone().unwrap_or_default(),
            name: self.meta.name.clone().unwrap_or_default(),
        }
    }

    /// The slim form of `object`. `previous` is the cached form of the same
    /// object, `owner_of_rs` resolves a ReplicaSet to its Deployment.
    pub(crate) fn from_dynamic(
        kind: WorkloadKind,
        object: DynamicObject,
        previous: Option<&Slim>,
        owner_of_rs: &dyn Fn(&str, &str) -> Option<String>,
        now: i64,
    ) -> Self {
        let DynamicObject {
            metadata, mut data, ..
        } = object;
        let controller: Option<Vec<OwnerReference>> = metadata
            .owner_references
            .as_ref()
            .map(|refs| {
                // Only a controller of a kind that creates this kind
                // stands for the object; any other is ignored, so the
                // object is judged on its own.
                refs.iter()
                    .filter(|o| {
                        o.controller == Some(true) && creates(&o.api_version, &o.kind, kind)
                    })
                    .cloned()
                    .collect()
            })
            .filter(|refs: &Vec<OwnerReference>| !refs.is_empty());
        let exempt: Option<BTreeMap<String, String>> = metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(EXEMPT_ANNOTATION))
            .map(|v| [(EXEMPT_ANNOTATION.to_owned(), v.clone())].into());
        let meta = ObjectMeta {
            name: metadata.name,
            namespace: metadata.namespace,
            uid: metadata.uid,
            resource_version: metadata.resource_version,
            generation: metadata.generation,
            labels: metadata.labels,
            owner_references: controller,
            ..ObjectMeta::default()
        };
        let pod = (kind == WorkloadKind::Pod).then(|| {
            // `data` holds everything but metadata.
            data["metadata"] = json!({"name": meta.name, "labels": meta.labels});
            let previous = previous
                .and_then(|p| p.pod.as_ref())
                .map(|p| &p.observation);
            let observation = PodObservation::from_pod(&data, previous, now);
            Arc::new(PodInfo {
                owner: pod_owner(&meta, &observation, owner_of_rs),
                observation,
            })
        });
        let print = fingerprint_of(kind, &data);
        let body = {
            let spec = data.get_mut("spec").map(Value::take).unwrap_or(Value::Null);
            let doc = json!({
                "apiVersion": kind.api_version(),
                "kind": kind.as_str(),
                "metadata": {
                    "name": meta.name,
                    "namespace": meta.namespace,
                    "labels": meta.labels,
                    "annotations": exempt,
                },
                "spec": spec,
            });
            doc.to_string().into_boxed_str()
        };
        Self {
            meta,
            body,
            print,
            pod,
        }
    }
}

/// The workload a pod belongs to: its controller, or for a ReplicaSet that
/// a Deployment controls, the Deployment.
fn pod_owner(
    meta: &ObjectMeta,
    observation: &PodObservation,
    owner_of_rs: &dyn Fn(&str, &str) -> Option<String>,
) -> Option<WorkloadKey> {
    let owner = meta.owner_references.as_ref()?.first()?;
    let namespace = meta.namespace.clone().unwrap_or_default();
    let kind = WorkloadKind::from_kind(&owner.kind)?;
    if kind == WorkloadKind::ReplicaSet {
        if let Some(deployment) = owner_of_rs(&namespace, &owner.name) {
            return Some(WorkloadKey {
                kind: WorkloadKind::Deployment,
                namespace,
                name: deployment,
            });
        }
        // The ReplicaSet is not cached (yet): a Deployment names its
        // ReplicaSets `<deployment>-<pod-template-hash>`.
        if let Some(hash) = &observation.revision
            && let Some(deployment) = owner.name.strip_suffix(&format!("-{hash}"))
        {
            return Some(WorkloadKey {
                kind: WorkloadKind::Deployment,
                namespace,
                name: deployment.to_owned(),
            });
        }
    }
    Some(WorkloadKey {
        kind,
        namespace,
        name: owner.name.clone(),
    })
}

/// Pods by the workload they belong to, kept beside the pod store.
#[derive(Debug, Default)]
pub(crate) struct PodIndex {
    by_owner: Mutex<HashMap<WorkloadKey, BTreeSet<String>>>,
    /// Built during a relist and swapped in when it completes.
    pending: Mutex<Option<HashMap<WorkloadKey, BTreeSet<String>>>>,
}

impl PodIndex {
    /// Applies a watch event; returns the workloads whose pods changed.
    pub(crate) fn apply(&self, event: &Event<Slim>) -> Vec<WorkloadKey> {
        let owner_and_name = |pod: &Slim| {
            let owner = pod.pod.as_ref()?.owner.clone()?;
            Some((owner, pod.meta.name.clone().unwrap_or_default()))
        };
        match event {
            Event::Apply(pod) => {
                let Some((owner, name)) = owner_and_name(pod) else {
                    return Vec::new();
                };
                self.by_owner
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry(owner.clone())
                    .or_default()
                    .insert(name);
                vec![owner]
            }
            Event::Delete(pod) => {
                let Some((owner, name)) = owner_and_name(pod) else {
                    return Vec::new();
                };
                let mut map = self.by_owner.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(set) = map.get_mut(&owner) {
                    set.remove(&name);
                    if set.is_empty() {
                        map.remove(&owner);
                    }
                }
                vec![owner]
            }
            Event::Init => {
                *self.pending.lock().unwrap_or_else(PoisonError::into_inner) = Some(HashMap::new());
                Vec::new()
            }
            Event::InitApply(pod) => {
                if let Some((owner, name)) = owner_and_name(pod)
                    && let Some(map) = self
                        .pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .as_mut()
                {
                    map.entry(owner).or_default().insert(name);
                }
                Vec::new()
            }
            Event::InitDone => {
                let fresh = self
                    .pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                if let Some(fresh) = fresh {
                    *self.by_owner.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
                }
                Vec::new()
            }
        }
    }

    /// Names of the pods of `owner`.
    pub(crate) fn pods_of(&self, owner: &WorkloadKey) -> Vec<String> {
        self.by_owner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(owner)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Maps a watch event's objects with `f`.
pub(crate) fn map_event<A, B>(event: Event<A>, mut f: impl FnMut(A) -> B) -> Event<B> {
    match event {
        Event::Apply(o) => Event::Apply(f(o)),
        Event::Delete(o) => Event::Delete(f(o)),
        Event::Init => Event::Init,
        Event::InitApply(o) => Event::InitApply(f(o)),
        Event::InitDone => Event::InitDone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dynamic(value: Value) -> DynamicObject {
        serde_json::from_value(value).expect("object")
    }

    #[test]
    fn slim_keeps_what_evaluation_reads_and_nothing_else() {
        let object = dynamic(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                "labels": {"app": "web"},
                "annotations": {"probity.dev/exempt": "PRB002: vendor image", "big": "x".repeat(1000)},
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
            },
            "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
            "status": {"replicas": 3},
        }));
        let slim = Slim::from_dynamic(WorkloadKind::Deployment, object, None, &|_, _| None, 0);
        assert!(slim.meta.managed_fields.is_none());
        assert!(slim.meta.annotations.is_none());
        let body: Value = serde_json::from_str(&slim.body).expect("json");
        assert_eq!(
            body["metadata"]["annotations"],
            json!({"probity.dev/exempt": "PRB002: vendor image"})
        );
        assert!(body.get("status").is_none());
        assert_eq!(
            body["spec"]["template"]["spec"]["containers"][0]["image"],
            "nginx"
        );
    }

    #[test]
    fn pods_resolve_to_their_deployment() {
        let pod = |owner: Value| {
            dynamic(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "web-5d8f-x", "namespace": "shop",
                    "labels": {"pod-template-hash": "5d8f"}, "ownerReferences": [owner]},
                "spec": {"containers": []},
            }))
        };
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f",
            "uid": "r", "controller": true});
        let slim = Slim::from_dynamic(WorkloadKind::Pod, pod(rs.clone()), None, &|_, _| None, 0);
        assert!(
            slim.body.contains("\"containers\""),
            "kept, in case the owner does not stand for the pod: {}",
            slim.body
        );
        assert!(slim.print.is_some());
        let owner = slim
            .pod
            .as_ref()
            .and_then(|p| p.owner.clone())
            .expect("owner");
        assert_eq!(
            (owner.kind, owner.name.as_str()),
            (WorkloadKind::Deployment, "web")
        );
        let observation = &slim.pod.as_ref().expect("pod").observation;
        assert_eq!(observation.name, "web-5d8f-x");
        assert_eq!(observation.revision.as_deref(), Some("5d8f"));

        let cached = |_: &str, rs: &str| (rs == "web-5d8f").then(|| "frontend".to_owned());
        let slim = Slim::from_dynamic(WorkloadKind::Pod, pod(rs), None, &cached, 0);
        let owner = slim
            .pod
            .as_ref()
            .and_then(|p| p.owner.clone())
            .expect("owner");
        assert_eq!(owner.name, "frontend");

        let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db",
            "uid": "s", "controller": true});
        let slim = Slim::from_dynamic(WorkloadKind::Pod, pod(sts), None, &|_, _| None, 0);
        let owner = slim
            .pod
            .as_ref()
            .and_then(|p| p.owner.clone())
            .expect("owner");
        assert_eq!(
            (owner.kind, owner.name.as_str()),
            (WorkloadKind::StatefulSet, "db")
        );
    }

    #[test]
    fn pods_under_a_fake_controller_are_judged_on_their_own() {
        for owner in [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "1", "controller": true}),
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "name": "c", "uid": "1", "controller": true}),
            json!({"apiVersion": "example.com/v1", "kind": "ReplicaSet", "name": "c", "uid": "1", "controller": true}),
        ] {
            let pod = dynamic(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "shop", "ownerReferences": [owner.clone()]},
                "spec": {"containers": [{"name": "app", "image": "evil:latest"}]},
            }));
            let slim = Slim::from_dynamic(WorkloadKind::Pod, pod, None, &|_, _| None, 0);
            assert!(
                slim.body.contains("evil:latest"),
                "{owner}: kept for evaluation"
            );
            assert!(slim.controller().is_none(), "{owner}: not a controller");
            assert!(slim.pod.as_ref().and_then(|p| p.owner.clone()).is_none());
        }
    }
}
