//! Workloads as the rules see them: kind, identity, labels, annotations,
//! controller owner and the pod spec, read from any JSON-shaped object
//! (a linted manifest, an AdmissionReview object, a cached API object).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use super::spec::WorkloadKind;

/// A workload ready for evaluation.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Its kind.
    pub kind: WorkloadKind,
    /// `metadata.name` (or `generateName`, or empty).
    pub name: String,
    /// `metadata.namespace`, when set.
    pub namespace: Option<String>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// Exemption annotations found on the workload and its pod template,
    /// with the JSON pointer of each.
    pub exemptions: Vec<(String, String)>,
    /// The controlling owner (`kind/name`), when the controller
    /// ownerReference names a kind that creates objects of this kind, of
    /// the expected API group (see [`creates`]): the object may then be
    /// judged through that owner. Any other ownerReference is ignored, so
    /// the object is judged on its own.
    pub controller: Option<Controller>,
    /// The pod spec.
    pub pod: PodSpec,
    /// JSON pointer of the pod spec inside the object.
    pub pod_pointer: &'static str,
}

/// A controller ownerReference that may stand for the object (see
/// [`creates`]); shown as `Kind/name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    /// The owner's kind.
    pub kind: String,
    /// The owner's name (in the object's namespace).
    pub name: String,
    /// The owner's UID, as the reference states it.
    pub uid: String,
}

impl std::fmt::Display for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// A fingerprint of what a Pod must share with its controller's pod
/// template to be judged through it: each init and app container's name,
/// image and probes, in order. `pod_spec` is a Pod's `spec` or a
/// template's `spec.template.spec`, as the API server serves them (both
/// defaulted the same way).
pub fn pod_fingerprint(pod_spec: &Value) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for list in ["initContainers", "containers"] {
        list.hash(&mut hasher);
        for container in pod_spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for field in [
                "name",
                "image",
                "readinessProbe",
                "livenessProbe",
                "startupProbe",
            ] {
                field.hash(&mut hasher);
                match container.get(field) {
                    Some(value) => value.to_string().hash(&mut hasher),
                    None => 0u8.hash(&mut hasher),
                }
            }
        }
    }
    hasher.finish()
}

/// The [`pod_fingerprint`] that `object`, of `kind`, carries: a Pod's own
/// containers, or the pod template's of a kind that creates Pods
/// (ReplicaSet, StatefulSet, DaemonSet, Job, ReplicationController);
/// `None` for other kinds.
pub fn fingerprint_of(kind: WorkloadKind, object: &Value) -> Option<u64> {
    match kind {
        WorkloadKind::Pod => object.get("spec").map(pod_fingerprint),
        WorkloadKind::ReplicaSet
        | WorkloadKind::StatefulSet
        | WorkloadKind::DaemonSet
        | WorkloadKind::Job
        | WorkloadKind::ReplicationController => {
            object.pointer("/spec/template/spec").map(pod_fingerprint)
        }
        WorkloadKind::Deployment | WorkloadKind::CronJob => None,
    }
}

/// An object of a supported kind whose fields do not have the types
/// Kubernetes requires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name}: {path}: {message}")]
pub struct InvalidWorkload {
    /// The object's kind.
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// JSON pointer of the offending field.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

/// The annotation carrying exemptions:
/// `probity.dev/exempt: "PRB104,PRB107: reason"`.
pub const EXEMPT_ANNOTATION: &str = "probity.dev/exempt";

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// Whether an owner of `owner_api_version` and `owner_kind` is a controller
/// that creates objects of `kind`: Pods come from ReplicaSets, StatefulSets,
/// DaemonSets (`apps`), Jobs (`batch`) and ReplicationControllers (core);
/// ReplicaSets from Deployments; Jobs from CronJobs. Only such an owner can
/// stand for the object: an ownerReference is written by whoever writes the
/// object, so naming a ConfigMap, a CronJob or a custom resource as a Pod's
/// controller proves nothing.
pub fn creates(owner_api_version: &str, owner_kind: &str, kind: WorkloadKind) -> bool {
    let group = group_of(owner_api_version);
    match kind {
        WorkloadKind::Pod => matches!(
            (group, owner_kind),
            ("apps", "ReplicaSet" | "StatefulSet" | "DaemonSet")
                | ("batch", "Job")
                | ("", "ReplicationController")
        ),
        WorkloadKind::ReplicaSet => (group, owner_kind) == ("apps", "Deployment"),
        WorkloadKind::Job => (group, owner_kind) == ("batch", "CronJob"),
        _ => false,
    }
}

/// What an object in a manifest is, before evaluation.
#[derive(Debug)]
pub enum Classified {
    /// A workload.
    Workload(Box<Workload>),
    /// A Kubernetes object of a kind probity does not judge.
    OtherKind(String),
    /// Not a Kubernetes object (no `apiVersion` and `kind`).
    NotKubernetes,
}

impl Workload {
    /// Reads `object`.
    ///
    /// # Errors
    ///
    /// When a workload's metadata or pod spec has fields of the wrong type.
    pub fn classify(object: &Value) -> Result<Classified, InvalidWorkload> {
        let (Some(api_version), Some(kind)) = (
            object.get("apiVersion").and_then(Value::as_str),
            object.get("kind").and_then(Value::as_str),
        ) else {
            return Ok(Classified::NotKubernetes);
        };
        let Some(workload_kind) = WorkloadKind::from_kind(kind) else {
            return Ok(Classified::OtherKind(kind.to_owned()));
        };
        let expected_group = match workload_kind.api_version() {
            "v1" => "",
            v => group_of(v),
        };
        let group = group_of(api_version);
        if group != expected_group && !(group == "extensions" && expected_group == "apps") {
            return Ok(Classified::OtherKind(format!("{api_version} {kind}")));
        }

        let meta: ObjectMeta = read(object, "/metadata", kind, "")?.unwrap_or_default();
        let name = meta
            .name
            .clone()
            .or_else(|| meta.generate_name.clone())
            .unwrap_or_default();
        let pod_pointer = match workload_kind {
            WorkloadKind::Pod => "/spec",
            WorkloadKind::CronJob => "/spec/jobTemplate/spec/template/spec",
            _ => "/spec/template/spec",
        };
        let template_meta_pointer = pod_pointer.strip_suffix("/spec").unwrap_or("");
        let pod: PodSpec = read(object, pod_pointer, kind, &name)?.unwrap_or_default();

        let mut exemptions = Vec::new();
        if let Some(v) = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(EXEMPT_ANNOTATION))
        {
            exemptions.push((annotation_pointer("/metadata"), v.clone()));
        }
        if workload_kind != WorkloadKind::Pod {
            let template_meta: Option<ObjectMeta> = read(
                object,
                &format!("{template_meta_pointer}/metadata"),
                kind,
                &name,
            )?;
            if let Some(v) = template_meta
                .as_ref()
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get(EXEMPT_ANNOTATION))
            {
                exemptions.push((
                    annotation_pointer(&format!("{template_meta_pointer}/metadata")),
                    v.clone(),
                ));
            }
        }
        let controller = meta
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .filter(|o| creates(&o.api_version, &o.kind, workload_kind))
            .map(|o| Controller {
                kind: o.kind.clone(),
                name: o.name.clone(),
                uid: o.uid.clone(),
            });

        Ok(Classified::Workload(Box::new(Self {
            kind: workload_kind,
            name,
            namespace: meta.namespace,
            labels: meta.labels.unwrap_or_default(),
            exemptions,
            controller,
            pod,
            pod_pointer,
        })))
    }
}

fn annotation_pointer(meta: &str) -> String {
    // JSON pointer escaping: '/' in the key becomes "~1".
    format!(
        "{meta}/annotations/{}",
        EXEMPT_ANNOTATION.replace('~', "~0").replace('/', "~1")
    )
}

fn read<T: serde::de::DeserializeOwned>(
    object: &Value,
    pointer: &str,
    kind: &str,
    name: &str,
) -> Result<Option<T>, InvalidWorkload> {
    super::typed::at(object, pointer).map_err(|e| InvalidWorkload {
        kind: kind.to_owned(),
        name: name.to_owned(),
        path: e.pointer,
        message: e.message,
    })
}

/// An image of a workload that carries no digest yet.
#[derive(Debug, Clone)]
pub struct UnpinnedImage<'a> {
    /// JSON pointer of the list holding it (`/spec/template/spec/containers`,
    /// `.../ephemeralContainers`, `.../volumes`).
    pub list: String,
    /// Index in that list.
    pub index: usize,
    /// The container (or volume) object.
    pub container: &'a Value,
    /// Where the image is inside it: `image`, or `image/reference` for an
    /// image volume.
    pub field: &'static str,
    /// The image as written.
    pub image: &'a str,
    /// The image, parsed.
    pub reference: super::Reference,
}

impl UnpinnedImage<'_> {
    /// JSON pointer of the image field.
    pub fn pointer(&self) -> String {
        format!("{}/{}/{}", self.list, self.index, self.field)
    }
}

/// Every image of `object` that parses and has no digest: init, app and
/// ephemeral containers, then image volumes; `pod_pointer` is the
/// workload's [`Workload::pod_pointer`].
pub fn unpinned_images<'a>(object: &'a Value, pod_pointer: &str) -> Vec<UnpinnedImage<'a>> {
    let mut out = Vec::new();
    for (list_field, field) in [
        ("initContainers", "image"),
        ("containers", "image"),
        ("ephemeralContainers", "image"),
        ("volumes", "image/reference"),
    ] {
        let list = format!("{pod_pointer}/{list_field}");
        let Some(items) = object.pointer(&list).and_then(Value::as_array) else {
            continue;
        };
        for (index, item) in items.iter().enumerate() {
            let Some(image) = item.pointer(&format!("/{field}")).and_then(Value::as_str) else {
                continue;
            };
            match super::Reference::parse(image) {
                Ok(reference) if !reference.is_pinned() => out.push(UnpinnedImage {
                    list: list.clone(),
                    index,
                    container: item,
                    field,
                    image,
                    reference,
                }),
                _ => {}
            }
        }
    }
    out
}

/// The objects in `value` with their JSON pointers: the value itself, or the
/// items of a `List` (`kind: List` or any `*List`).
pub fn objects(value: &Value) -> Vec<(String, &Value)> {
    let is_list = value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"));
    match value.get("items").and_then(Value::as_array) {
        Some(items) if is_list => items
            .iter()
            .enumerate()
            .map(|(i, item)| (format!("/items/{i}"), item))
            .collect(),
        _ => vec![(String::new(), value)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn workload(v: Value) -> Workload {
        match Workload::classify(&v).expect("valid") {
            Classified::Workload(w) => *w,
            other => panic!("not a workload: {other:?}"),
        }
    }

    #[test]
    fn pod_spec_location_per_kind() {
        let spec = json!({"containers": [{"name": "c", "image": "x"}]});
        let dep = workload(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"}, "spec": {"template": {"spec": spec}}}));
        assert_eq!(dep.pod.containers[0].name, "c");
        assert_eq!(dep.pod_pointer, "/spec/template/spec");
        let cron = workload(json!({"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "c"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": spec}}}}}));
        assert_eq!(cron.pod.containers.len(), 1);
        let pod = workload(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec}),
        );
        assert_eq!(pod.pod_pointer, "/spec");
        let rc = workload(json!({"apiVersion": "v1", "kind": "ReplicationController",
            "metadata": {"name": "r"}, "spec": {"template": {"spec": spec}}}));
        assert_eq!(rc.kind, WorkloadKind::ReplicationController);
        assert_eq!(rc.pod_pointer, "/spec/template/spec");
        assert!(
            rc.kind.is_long_running(),
            "probe rules apply to ReplicationControllers"
        );
    }

    #[test]
    fn other_kinds_and_non_kubernetes() {
        let svc = Workload::classify(&json!({"apiVersion": "v1", "kind": "Service"})).expect("ok");
        assert!(matches!(svc, Classified::OtherKind(k) if k == "Service"));
        let crd_named_like_a_workload =
            Workload::classify(&json!({"apiVersion": "example.com/v1", "kind": "Deployment"}))
                .expect("ok");
        assert!(matches!(
            crd_named_like_a_workload,
            Classified::OtherKind(_)
        ));
        let values = Workload::classify(&json!({"replicaCount": 2})).expect("ok");
        assert!(matches!(values, Classified::NotKubernetes));
    }

    #[test]
    fn wrong_field_type_is_located() {
        let err = Workload::classify(&json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": [
                {"name": "c", "image": "x", "ports": [{"containerPort": "http"}]}]}}}}))
        .expect_err("containerPort must be an integer");
        assert_eq!(
            err.path,
            "/spec/template/spec/containers/0/ports/0/containerPort"
        );
        assert!(err.to_string().starts_with("Deployment d: "), "{err}");
    }

    #[test]
    fn controller_owner_and_exemptions() {
        let rs = workload(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "web-abc", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "u", "controller": true}],
                "annotations": {"probity.dev/exempt": "PRB002: internal"}},
            "spec": {"template": {"metadata": {"annotations": {"probity.dev/exempt": "PRB104: x"}},
                "spec": {"containers": []}}}}));
        assert_eq!(
            rs.controller.as_ref().map(ToString::to_string).as_deref(),
            Some("Deployment/web")
        );
        assert_eq!(rs.exemptions.len(), 2);
        assert_eq!(
            rs.exemptions[0].0,
            "/metadata/annotations/probity.dev~1exempt"
        );
        assert_eq!(
            rs.exemptions[1].0,
            "/spec/template/metadata/annotations/probity.dev~1exempt"
        );
    }

    #[test]
    fn only_owners_that_create_the_kind_count_as_controllers() {
        let pod = |owner: Value| {
            workload(json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "ownerReferences": [owner]},
                "spec": {"containers": []}}))
        };
        let owner = |api_version: &str, kind: &str| json!({"apiVersion": api_version, "kind": kind, "name": "o", "uid": "u", "controller": true});
        for (api_version, kind) in [
            ("apps/v1", "ReplicaSet"),
            ("apps/v1", "StatefulSet"),
            ("apps/v1", "DaemonSet"),
            ("batch/v1", "Job"),
            ("v1", "ReplicationController"),
        ] {
            let p = pod(owner(api_version, kind));
            assert_eq!(
                p.controller.as_ref().map(ToString::to_string),
                Some(format!("{kind}/o")),
                "{api_version} {kind}"
            );
        }
        for (api_version, kind) in [
            ("v1", "ConfigMap"),
            ("batch/v1", "CronJob"),
            ("apps/v1", "Deployment"),
            ("argoproj.io/v1alpha1", "Rollout"),
            ("example.com/v1", "ReplicaSet"),
            ("v1", "Job"),
        ] {
            let p = pod(owner(api_version, kind));
            assert_eq!(
                p.controller, None,
                "a Pod under {api_version} {kind} is judged as a Pod"
            );
        }
        let not_controller = pod(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "name": "o", "uid": "u"}));
        assert_eq!(
            not_controller.controller, None,
            "controller: true is required"
        );
        let rs_under_cronjob = workload(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": "r", "ownerReferences": [owner("batch/v1", "CronJob")]},
            "spec": {"template": {"spec": {"containers": []}}}}));
        assert_eq!(rs_under_cronjob.controller, None);
        let deployment_under_anything =
            workload(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "ownerReferences": [owner("batch/v1", "CronJob")]},
            "spec": {"template": {"spec": {"containers": []}}}}));
        assert_eq!(
            deployment_under_anything.controller, None,
            "nothing creates Deployments"
        );
    }

    #[test]
    fn lists_expand_to_items() {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": [{"kind": "Pod"}, {"kind": "Service"}]});
        let objs = objects(&list);
        assert_eq!(objs.len(), 2);
        assert_eq!(objs[1].0, "/items/1");
        let dep_list = json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "items": []});
        assert!(objects(&dep_list).is_empty());
        let plain = json!({"kind": "Pod", "items": [1]});
        assert_eq!(objects(&plain).len(), 1);
    }
}
