//! Workload caches: one reflector store per kind, holding a slim copy of
//! each object (no managedFields, no status, only the fields evaluation
//! reads, serialised), so 10,000 Deployments cost megabytes, not hundreds.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::runtime::watcher::Event;
use serde::Deserialize as _;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::drift::PodObservation;
use crate::policy::WorkloadKind;
use crate::policy::workload::{EXEMPT_ANNOTATION, creates, fingerprint_of_spec};

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
    pub(crate) fn from_watched(
        kind: WorkloadKind,
        object: Watched,
        previous: Option<&Slim>,
        owner_of_rs: &dyn Fn(&str, &str) -> Option<String>,
        now: i64,
    ) -> Self {
        let Watched {
            metadata,
            spec,
            status,
        } = object;
        // Only a controller of a kind that creates this kind stands for the
        // object; any other is ignored, so the object is judged on its own.
        let controller = metadata
            .owner_references
            .map(|refs| {
                refs.into_iter()
                    .filter(|o| {
                        o.controller == Some(true) && creates(&o.api_version, &o.kind, kind)
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|refs| !refs.is_empty());
        let exempt = metadata.annotations;
        let meta = ObjectMeta {
            owner_references: controller,
            annotations: None,
            ..metadata
        };
        let pod = (kind == WorkloadKind::Pod).then(|| {
            // What the observation reads: the name, labels and status (the
            // spec is fingerprinted below, typed).
            let status = status
                .as_deref()
                .and_then(|v| serde_json::from_str::<Value>(v.get()).ok())
                .unwrap_or(Value::Null);
            let data = json!({
                "metadata": {"name": meta.name, "labels": meta.labels},
                "status": status,
            });
            let previous = previous
                .and_then(|p| p.pod.as_ref())
                .map(|p| &p.observation);
            let observation = PodObservation::from_pod(&data, previous, now);
            Arc::new(PodInfo {
                owner: pod_owner(&meta, &observation, owner_of_rs),
                observation,
            })
        });
        let print = spec
            .as_deref()
            .and_then(|spec| fingerprint_of_spec(kind, spec.get()));
        // What evaluation reads, the spec written out as the text it came
        // in: no JSON tree is built for it.
        #[derive(serde::Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            api_version: &'a str,
            kind: &'a str,
            metadata: BodyMeta<'a>,
            spec: Option<&'a RawValue>,
        }
        #[derive(serde::Serialize)]
        struct BodyMeta<'a> {
            name: &'a Option<String>,
            namespace: &'a Option<String>,
            labels: &'a Option<BTreeMap<String, String>>,
            annotations: &'a Option<BTreeMap<String, String>>,
        }
        let body = serde_json::to_string(&Body {
            api_version: kind.api_version(),
            kind: kind.as_str(),
            metadata: BodyMeta {
                name: &meta.name,
                namespace: &meta.namespace,
                labels: &meta.labels,
                annotations: &exempt,
            },
            spec: spec.as_deref(),
        })
        .unwrap_or_default();
        Self {
            meta,
            body: body.into_boxed_str(),
            print,
            pod,
        }
    }
}

/// A workload as the watch delivers it, read in one pass without a JSON
/// tree: the metadata evaluation uses (no managedFields, only the exemption
/// annotation), the spec and status as their text.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Watched {
    #[serde(default, deserialize_with = "slim_meta")]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: Option<Box<RawValue>>,
    #[serde(default)]
    status: Option<Box<RawValue>>,
}

impl Watched {
    /// `object` as the watch would deliver it (tests and fixtures).
    #[cfg(test)]
    pub(crate) fn from_value(object: &Value) -> Self {
        serde_json::from_str(&object.to_string()).expect("a workload")
    }
}

impl kube::Resource for Watched {
    type DynamicType = WorkloadKind;
    type Scope = NamespaceResourceScope;

    fn kind(dt: &WorkloadKind) -> Cow<'_, str> {
        <Slim as kube::Resource>::kind(dt)
    }

    fn group(dt: &WorkloadKind) -> Cow<'_, str> {
        <Slim as kube::Resource>::group(dt)
    }

    fn version(dt: &WorkloadKind) -> Cow<'_, str> {
        <Slim as kube::Resource>::version(dt)
    }

    fn plural(dt: &WorkloadKind) -> Cow<'_, str> {
        <Slim as kube::Resource>::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// The metadata fields [`Slim`] keeps; every other field (managedFields
/// above all) is skipped unread, and of the annotations only the exemption.
fn slim_meta<'de, D: serde::Deserializer<'de>>(de: D) -> Result<ObjectMeta, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Wire {
        name: Option<String>,
        namespace: Option<String>,
        uid: Option<String>,
        resource_version: Option<String>,
        generation: Option<i64>,
        labels: Option<BTreeMap<String, String>>,
        #[serde(default, deserialize_with = "exemption")]
        annotations: Option<BTreeMap<String, String>>,
        owner_references: Option<Vec<OwnerReference>>,
    }
    let wire = Option::<Wire>::deserialize(de)?;
    Ok(wire.map_or_else(ObjectMeta::default, |w| ObjectMeta {
        name: w.name,
        namespace: w.namespace,
        uid: w.uid,
        resource_version: w.resource_version,
        generation: w.generation,
        labels: w.labels,
        annotations: w.annotations,
        owner_references: w.owner_references,
        ..ObjectMeta::default()
    }))
}

/// Of an annotations map, only [`EXEMPT_ANNOTATION`]; the other values are
/// skipped, not copied.
fn exemption<'de, D: serde::Deserializer<'de>>(
    de: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    struct Visitor;
    impl<'de> serde::de::Visitor<'de> for Visitor {
        type Value = Option<BTreeMap<String, String>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map of annotations")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
            de.deserialize_map(self)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut exempt = None;
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                if key == EXEMPT_ANNOTATION {
                    exempt = Some(map.next_value::<String>()?);
                } else {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok(exempt.map(|v| [(EXEMPT_ANNOTATION.to_owned(), v)].into()))
        }
    }
    de.deserialize_option(Visitor)
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

    fn dynamic(value: Value) -> Watched {
        Watched::from_value(&value)
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
        let slim = Slim::from_watched(WorkloadKind::Deployment, object, None, &|_, _| None, 0);
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
    fn null_and_missing_fields_read_as_absent() {
        let slim = Slim::from_watched(
            WorkloadKind::Deployment,
            dynamic(
                json!({"metadata": {"name": "web", "labels": null, "annotations": null,
                "ownerReferences": null}}),
            ),
            None,
            &|_, _| None,
            0,
        );
        let body: Value = serde_json::from_str(&slim.body).expect("json");
        assert_eq!(body["spec"], Value::Null);
        assert_eq!(body["metadata"]["name"], "web");
        assert!(slim.meta.labels.is_none() && slim.controller().is_none());
        let bare = Slim::from_watched(WorkloadKind::Pod, dynamic(json!({})), None, &|_, _| None, 0);
        assert!(bare.print.is_none() && bare.meta.name.is_none());
    }

    #[test]
    fn a_template_and_its_pods_share_a_fingerprint() {
        let spec = json!({"containers": [{"name": "web", "image": "nginx@sha256:aa",
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}}}]});
        let rs = dynamic(json!({"metadata": {"name": "web-1", "namespace": "shop"},
            "spec": {"replicas": 2, "template": {"metadata": {"labels": {"a": "b"}}, "spec": spec}}}));
        let pod = dynamic(json!({"metadata": {"name": "web-1-x", "namespace": "shop"},
            "spec": spec, "status": {"phase": "Running"}}));
        let rs = Slim::from_watched(WorkloadKind::ReplicaSet, rs, None, &|_, _| None, 0);
        let pod = Slim::from_watched(WorkloadKind::Pod, pod, None, &|_, _| None, 0);
        assert!(rs.print.is_some());
        assert_eq!(rs.print, pod.print);
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
        let slim = Slim::from_watched(WorkloadKind::Pod, pod(rs.clone()), None, &|_, _| None, 0);
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
        let slim = Slim::from_watched(WorkloadKind::Pod, pod(rs), None, &cached, 0);
        let owner = slim
            .pod
            .as_ref()
            .and_then(|p| p.owner.clone())
            .expect("owner");
        assert_eq!(owner.name, "frontend");

        let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db",
            "uid": "s", "controller": true});
        let slim = Slim::from_watched(WorkloadKind::Pod, pod(sts), None, &|_, _| None, 0);
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
            let slim = Slim::from_watched(WorkloadKind::Pod, pod, None, &|_, _| None, 0);
            assert!(
                slim.body.contains("evil:latest"),
                "{owner}: kept for evaluation"
            );
            assert!(slim.controller().is_none(), "{owner}: not a controller");
            assert!(slim.pod.as_ref().and_then(|p| p.owner.clone()).is_none());
        }
    }
}
