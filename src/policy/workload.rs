//! Workloads as the rules see them: kind, identity, labels, annotations,
//! controller owner and the pod spec, read from any JSON-shaped object
//! (a linted manifest, an AdmissionReview object, a cached API object).

use std::collections::BTreeMap;

use serde::Deserialize as _;
use serde_json::Value;

use super::object::{Head, Parts};
use super::pod::{PodSpec, again};
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

/// The [`PodSpec::fingerprint`] of the pod spec that `spec` (the JSON text
/// of an object's `spec`), of `kind`, carries: a Pod's own, or the pod
/// template's of a kind that creates Pods (ReplicaSet, StatefulSet,
/// DaemonSet, Job, ReplicationController); `None` for other kinds and
/// unreadable specs. Read typed, without a JSON tree.
pub fn fingerprint_of_spec(kind: WorkloadKind, spec: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Template {
        template: Option<Inner>,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        spec: Option<PodSpec>,
    }
    let pod_spec = match kind {
        WorkloadKind::Pod => serde_json::from_str::<PodSpec>(spec).ok()?,
        WorkloadKind::ReplicaSet
        | WorkloadKind::StatefulSet
        | WorkloadKind::DaemonSet
        | WorkloadKind::Job
        | WorkloadKind::ReplicationController => {
            serde_json::from_str::<Template>(spec)
                .ok()?
                .template?
                .spec?
        }
        WorkloadKind::Deployment | WorkloadKind::CronJob => return None,
    };
    Some(pod_spec.fingerprint())
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
#[derive(Debug, Clone)]
pub enum Classified {
    /// A workload.
    Workload(Box<Workload>),
    /// A Kubernetes object of a kind probity does not judge.
    OtherKind(String),
    /// Not a Kubernetes object (no `apiVersion` and `kind`).
    NotKubernetes,
}

impl Workload {
    /// Reads `object`, a JSON tree (a manifest, a cached object).
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
        let workload_kind = match kind_of(api_version, kind) {
            Ok(k) => k,
            Err(other) => return Ok(other),
        };
        let parts = match Parts::deserialize(object) {
            Ok(parts) => parts,
            Err(_) => {
                let name = object
                    .pointer("/metadata/name")
                    .or_else(|| object.pointer("/metadata/generateName"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                return Err(located::<Parts>(
                    kind,
                    name,
                    serde_path_to_error::deserialize(object),
                ));
            }
        };
        Ok(Self::build(workload_kind, parts))
    }

    /// Reads `text`, one JSON object (an AdmissionReview's `object`), in one
    /// pass without building a JSON tree; run it under
    /// [`with_element_budget`](super::pod::with_element_budget) when the
    /// text is a stranger's.
    ///
    /// # Errors
    ///
    /// When a workload's metadata or pod spec has fields of the wrong type,
    /// or holds more elements than the budget.
    pub fn classify_json(text: &str) -> Result<Classified, InvalidWorkload> {
        // Each pass over the text gets the budget the first one started with.
        let parts = match again(|| serde_json::from_str::<Parts>(text)) {
            Ok(parts) => parts,
            Err(e) => {
                // Whether it matters depends on what the object is.
                let head: Head = serde_json::from_str(text).map_err(|_| InvalidWorkload {
                    kind: "object".to_owned(),
                    name: String::new(),
                    path: String::new(),
                    message: e.to_string(),
                })?;
                let (Some(api_version), Some(kind)) = (head.api_version.0, head.kind.0) else {
                    return Ok(Classified::NotKubernetes);
                };
                if let Err(other) = kind_of(&api_version, &kind) {
                    return Ok(other);
                }
                let name = head
                    .metadata
                    .and_then(|m| m.name.0.or(m.generate_name.0))
                    .unwrap_or_default();
                let de = &mut serde_json::Deserializer::from_str(text);
                let tracked = again(|| serde_path_to_error::deserialize(de));
                return Err(located::<Parts>(&kind, &name, tracked));
            }
        };
        let (Some(api_version), Some(kind)) = (&parts.api_version.0, &parts.kind.0) else {
            return Ok(Classified::NotKubernetes);
        };
        match kind_of(api_version, kind) {
            Ok(workload_kind) => Ok(Self::build(workload_kind, parts)),
            Err(other) => Ok(other),
        }
    }

    fn build(kind: WorkloadKind, parts: Parts) -> Classified {
        let Parts { metadata, spec, .. } = parts;
        let name = metadata.name.or(metadata.generate_name).unwrap_or_default();
        let (pod_pointer, template) = match kind {
            WorkloadKind::Pod => ("/spec", None),
            WorkloadKind::CronJob => (
                "/spec/jobTemplate/spec/template/spec",
                spec.job_template
                    .as_ref()
                    .and_then(|j| j.spec.as_ref())
                    .and_then(|j| j.template.as_ref()),
            ),
            _ => ("/spec/template/spec", spec.template.as_ref()),
        };
        let mut exemptions = Vec::new();
        if let Some(v) = metadata.exempt {
            exemptions.push((annotation_pointer("/metadata"), v));
        }
        let template_meta_pointer = pod_pointer.strip_suffix("/spec").unwrap_or("");
        if let Some(v) = template.and_then(|t| t.metadata.exempt.clone()) {
            exemptions.push((
                annotation_pointer(&format!("{template_meta_pointer}/metadata")),
                v,
            ));
        }
        let pod = match kind {
            WorkloadKind::Pod => spec.into_pod(),
            WorkloadKind::CronJob => spec
                .job_template
                .and_then(|j| j.spec)
                .and_then(|j| j.template)
                .map(|t| t.spec)
                .unwrap_or_default(),
            _ => spec.template.map(|t| t.spec).unwrap_or_default(),
        };
        let controller = metadata
            .controller
            .filter(|o| creates(&o.api_version, &o.kind, kind))
            .map(|o| Controller {
                kind: o.kind,
                name: o.name,
                uid: o.uid,
            });
        Classified::Workload(Box::new(Self {
            kind,
            name,
            namespace: metadata.namespace,
            labels: metadata.labels,
            exemptions,
            controller,
            pod,
            pod_pointer,
        }))
    }

    /// [`PodSpec::fingerprint`] for a Pod or a kind that creates Pods from
    /// its template; `None` for Deployments and CronJobs.
    pub fn fingerprint(&self) -> Option<u64> {
        match self.kind {
            WorkloadKind::Deployment | WorkloadKind::CronJob => None,
            _ => Some(self.pod.fingerprint()),
        }
    }
}

/// The kind an object of `api_version` and `kind` is, or how it is
/// classified when it is no workload.
fn kind_of(api_version: &str, kind: &str) -> Result<WorkloadKind, Classified> {
    let Some(workload_kind) = WorkloadKind::from_kind(kind) else {
        return Err(Classified::OtherKind(kind.to_owned()));
    };
    let expected_group = match workload_kind.api_version() {
        "v1" => "",
        v => group_of(v),
    };
    let group = group_of(api_version);
    if group != expected_group && !(group == "extensions" && expected_group == "apps") {
        return Err(Classified::OtherKind(format!("{api_version} {kind}")));
    }
    Ok(workload_kind)
}

/// The error of a path-tracked decode that failed, located.
fn located<T>(
    kind: &str,
    name: &str,
    result: Result<T, serde_path_to_error::Error<serde_json::Error>>,
) -> InvalidWorkload {
    let (path, message) = match result {
        Ok(_) => (String::new(), "unreadable".to_owned()),
        Err(e) => (
            super::typed::pointer_of("", e.path()),
            e.into_inner().to_string(),
        ),
    };
    InvalidWorkload {
        kind: kind.to_owned(),
        name: name.to_owned(),
        path,
        message,
    }
}

fn annotation_pointer(meta: &str) -> String {
    // JSON pointer escaping: '/' in the key becomes "~1".
    format!(
        "{meta}/annotations/{}",
        EXEMPT_ANNOTATION.replace('~', "~0").replace('/', "~1")
    )
}

/// An image of a workload that carries no digest yet.
#[derive(Debug, Clone)]
pub struct UnpinnedImage<'a> {
    /// JSON pointer of the list holding it (`/spec/template/spec/containers`,
    /// `.../ephemeralContainers`, `.../volumes`).
    pub list: String,
    /// The list's field name (`containers`, `volumes`).
    pub list_field: &'static str,
    /// Index in that list.
    pub index: usize,
    /// The container's (or volume's) name.
    pub name: &'a str,
    /// Where the image is inside it: `image`, or `image/reference` for an
    /// image volume.
    pub field: &'static str,
    /// The image as written.
    pub image: &'a str,
    /// The image, parsed.
    pub reference: crate::image::Reference,
}

impl UnpinnedImage<'_> {
    /// JSON pointer of the image field.
    pub fn pointer(&self) -> String {
        format!("{}/{}/{}", self.list, self.index, self.field)
    }
}

impl Workload {
    /// Every image of the pod spec, as (list field, image field, name,
    /// image) in list order: init, app and ephemeral containers, then
    /// image volumes.
    pub fn images(&self) -> impl Iterator<Item = (&'static str, &'static str, usize, &str, &str)> {
        let containers = [
            ("initContainers", &self.pod.init_containers),
            ("containers", &self.pod.containers),
            ("ephemeralContainers", &self.pod.ephemeral_containers),
        ]
        .into_iter()
        .flat_map(|(list, items)| {
            items.iter().enumerate().filter_map(move |(i, c)| {
                Some((list, "image", i, c.name.as_str(), c.image.as_deref()?))
            })
        });
        let volumes = self.pod.volumes.iter().enumerate().filter_map(|(i, v)| {
            let image = v.image.as_ref()?.reference.as_deref()?;
            Some(("volumes", "image/reference", i, v.name.as_str(), image))
        });
        containers.chain(volumes)
    }

    /// The image of the container (or volume) called `name` in list
    /// `list_field`.
    pub fn image_of(&self, list_field: &str, name: &str) -> Option<&str> {
        self.images()
            .find(|(list, _, _, n, _)| *list == list_field && *n == name)
            .map(|(.., image)| image)
    }

    /// Every image that parses and has no digest, in [`Self::images`]
    /// order.
    pub fn unpinned_images(&self) -> Vec<UnpinnedImage<'_>> {
        self.images()
            .filter_map(|(list_field, field, index, name, image)| {
                let reference = crate::image::Reference::parse(image).ok()?;
                (!reference.is_pinned()).then(|| UnpinnedImage {
                    list: format!("{}/{list_field}", self.pod_pointer),
                    list_field,
                    index,
                    name,
                    field,
                    image,
                    reference,
                })
            })
            .collect()
    }
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
