//! `probity lint`: reads manifests, evaluates the policies with the shared
//! engine, and reports findings with their exact location.

pub mod policies;
pub mod report;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::manifest::Input;
use crate::manifest::yaml::{self, Pos};
use crate::policy::{Classified, Finding, Workload, evaluate, workload};
use policies::Policy;

/// The object a finding is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// Its kind.
    pub kind: &'static str,
    /// Its name.
    pub name: String,
    /// Its namespace, when the manifest sets one.
    pub namespace: Option<String>,
}

/// A finding at its place in a file.
#[derive(Debug, Clone)]
pub struct Located {
    /// The file (`<stdin>` for standard input).
    pub file: String,
    /// Where in it.
    pub pos: Pos,
    /// The workload.
    pub object: ObjectRef,
    /// The policy that produced it.
    pub policy: String,
    /// The finding.
    pub finding: Finding,
}

/// An input error or a note about a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub file: String,
    /// Where, when known.
    pub pos: Option<Pos>,
    /// What.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pos {
            Some(p) => write!(f, "{}:{}:{}: {}", self.file, p.line, p.col, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Everything one run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Sources read.
    pub files: usize,
    /// Workloads judged.
    pub workloads: usize,
    /// Findings, in file order.
    pub findings: Vec<Located>,
    /// Input errors: unreadable files, broken documents, ill-typed fields.
    pub errors: Vec<Problem>,
    /// Documents skipped, and why.
    pub notes: Vec<Problem>,
}

impl Report {
    /// Findings that are not exempt.
    pub fn violations(&self) -> usize {
        self.findings
            .iter()
            .filter(|f| f.finding.exempt.is_none())
            .count()
    }

    /// What the run amounts to: input errors outrank violations.
    pub fn outcome(&self) -> Outcome {
        if !self.errors.is_empty() {
            Outcome::Errors
        } else if self.violations() > 0 {
            Outcome::Violations
        } else {
            Outcome::Clean
        }
    }
}

/// What a lint run amounts to (`probity lint` exits 0, 1 and 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing found.
    Clean,
    /// Findings that are not exempt.
    Violations,
    /// Some input could not be read or understood.
    Errors,
}

/// Lints `inputs` against `policies`.
pub fn lint(inputs: &[Input], policies: &[Policy]) -> Report {
    let namespaces = if policies.iter().any(|p| p.namespace_selector.is_some()) {
        namespace_labels(inputs)
    } else {
        BTreeMap::new()
    };
    let mut report = Report {
        files: inputs.len(),
        ..Report::default()
    };
    let mut owners = Owners::default();
    let mut deferred: Vec<(usize, yaml::Document, Vec<String>)> = Vec::new();
    for (file_index, input) in inputs.iter().enumerate() {
        for doc in yaml::read_stream(&input.text) {
            let doc = match doc {
                Ok(doc) => doc,
                Err(e) => {
                    report.errors.push(Problem {
                        file: input.name.clone(),
                        pos: Some(e.pos),
                        message: e.message,
                    });
                    continue;
                }
            };
            let mut controlled = Vec::new();
            for (prefix, object) in workload::objects(&doc.value) {
                let Some(workload) = classify(&input.name, &doc, &prefix, object, &mut report)
                else {
                    continue;
                };
                owners.record(&workload, object);
                if workload.controller.is_some() {
                    controlled.push(prefix);
                } else {
                    judge(
                        &input.name,
                        &doc,
                        &prefix,
                        &workload,
                        policies,
                        &namespaces,
                        &mut report,
                    );
                }
            }
            if !controlled.is_empty() {
                deferred.push((file_index, doc, controlled));
            }
        }
    }
    // Objects that name a controller are judged through it only when the
    // inputs hold that owner (with the same UID, and for a Pod the same
    // containers); otherwise on their own.
    let mut judged_late = false;
    for (file_index, doc, prefixes) in &deferred {
        let file = &inputs[*file_index].name;
        for prefix in prefixes {
            let Some(object) = doc.value.pointer(prefix) else {
                continue;
            };
            let Ok(Classified::Workload(workload)) = Workload::classify(object) else {
                continue;
            };
            match workload
                .controller
                .as_ref()
                .filter(|c| owners.stands_for(c, &workload))
            {
                Some(owner) => report.notes.push(Problem {
                    file: file.clone(),
                    pos: Some(doc.locate(prefix)),
                    message: format!(
                        "skipped {} {}: it is judged through its controller {owner}",
                        workload.kind.as_str(),
                        workload.name
                    ),
                }),
                None => {
                    judged_late = true;
                    judge(
                        file,
                        doc,
                        prefix,
                        &workload,
                        policies,
                        &namespaces,
                        &mut report,
                    );
                }
            }
        }
    }
    if judged_late {
        let order: BTreeMap<&str, usize> = inputs
            .iter()
            .enumerate()
            .map(|(i, input)| (input.name.as_str(), i))
            .collect();
        report
            .findings
            .sort_by_key(|f| (order.get(f.file.as_str()).copied(), f.pos));
    }
    report
}

/// The workloads among the inputs that can own others, by kind, namespace
/// and name: their UID when the manifest has one, and the fingerprint of
/// their pod template's containers (`Workload::fingerprint`).
#[derive(Debug, Default)]
struct Owners(BTreeMap<OwnerKey, (Option<String>, Option<u64>)>);

/// Kind, namespace (empty when the manifest sets none) and name.
type OwnerKey = (&'static str, String, String);

impl Owners {
    fn key(kind: &str, namespace: Option<&String>, name: &str) -> Option<OwnerKey> {
        let kind = crate::policy::WorkloadKind::from_kind(kind)?.as_str();
        Some((
            kind,
            namespace.cloned().unwrap_or_default(),
            name.to_owned(),
        ))
    }

    fn record(&mut self, workload: &Workload, object: &Value) {
        if workload.kind == crate::policy::WorkloadKind::Pod {
            return;
        }
        let Some(key) = Self::key(
            workload.kind.as_str(),
            workload.namespace.as_ref(),
            &workload.name,
        ) else {
            return;
        };
        let uid = object
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let template = workload.fingerprint();
        self.0.insert(key, (uid, template));
    }

    /// Whether `owner`, named by `workload`, is among the inputs and may
    /// stand for it.
    fn stands_for(&self, owner: &crate::policy::Controller, workload: &Workload) -> bool {
        let Some(key) = Self::key(&owner.kind, workload.namespace.as_ref(), &owner.name) else {
            return false;
        };
        let Some((uid, template)) = self.0.get(&key) else {
            return false;
        };
        if uid.as_ref().is_some_and(|uid| *uid != owner.uid) {
            return false;
        }
        workload.kind != crate::policy::WorkloadKind::Pod
            || template.is_some() && *template == workload.fingerprint()
    }
}

/// The workload `object` is, or `None` after noting why it is skipped.
fn classify(
    file: &str,
    doc: &yaml::Document,
    prefix: &str,
    object: &Value,
    report: &mut Report,
) -> Option<Box<Workload>> {
    let at = |pointer: &str| Some(doc.locate(&format!("{prefix}{pointer}")));
    match Workload::classify(object) {
        Ok(Classified::Workload(w)) => Some(w),
        Ok(Classified::OtherKind(_)) => None,
        Ok(Classified::NotKubernetes) => {
            report.notes.push(Problem {
                file: file.to_owned(),
                pos: at(""),
                message:
                    "skipped a document that is not a Kubernetes object (no apiVersion and kind)"
                        .to_owned(),
            });
            None
        }
        Err(e) => {
            report.errors.push(Problem {
                file: file.to_owned(),
                pos: at(&e.path),
                message: format!("{e}"),
            });
            None
        }
    }
}

/// Evaluates every policy that applies to `workload` and records the
/// findings at their place in `doc`.
fn judge(
    file: &str,
    doc: &yaml::Document,
    prefix: &str,
    workload: &Workload,
    policies: &[Policy],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    report: &mut Report,
) {
    report.workloads += 1;
    let object_ref = ObjectRef {
        kind: workload.kind.as_str(),
        name: workload.name.clone(),
        namespace: workload.namespace.clone(),
    };
    let mut found: Vec<Located> = Vec::new();
    for policy in policies
        .iter()
        .filter(|p| p.applies_to(workload, namespaces))
    {
        for finding in evaluate(&policy.spec, workload) {
            let duplicate = found.iter().any(|f| {
                f.finding.rule.id == finding.rule.id && f.finding.pointer == finding.pointer
            });
            if duplicate {
                continue;
            }
            found.push(Located {
                file: file.to_owned(),
                pos: doc.locate(&format!("{prefix}{}", finding.pointer)),
                object: object_ref.clone(),
                policy: policy.name.clone(),
                finding,
            });
        }
    }
    found.sort_by(|a, b| (a.pos, a.finding.rule.id).cmp(&(b.pos, b.finding.rule.id)));
    report.findings.extend(found);
}

/// Labels of the Namespace objects among the inputs.
fn namespace_labels(inputs: &[Input]) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for input in inputs {
        for doc in yaml::read_stream(&input.text).flatten() {
            for (_, object) in workload::objects(&doc.value) {
                if object.get("kind").and_then(Value::as_str) != Some("Namespace") {
                    continue;
                }
                let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str) else {
                    continue;
                };
                let mut labels: BTreeMap<String, String> = object
                    .pointer("/metadata/labels")
                    .and_then(Value::as_object)
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                            .collect()
                    })
                    .unwrap_or_default();
                labels.insert("kubernetes.io/metadata.name".to_owned(), name.to_owned());
                out.insert(name.to_owned(), labels);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Report {
        let inputs = [Input {
            name: "m.yaml".to_owned(),
            text: text.to_owned(),
            path: None,
        }];
        lint(&inputs, &[Policy::builtin()])
    }

    const RS: &str = "apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: web-5d8f, uid: rs-1}
spec:
  template:
    spec:
      containers: [{name: app, image: \"nginx:latest\"}]
";

    fn pod(owner_kind: &str, owner_api: &str, uid: &str, image: &str) -> String {
        format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: web-5d8f-x
  ownerReferences: [{{apiVersion: {owner_api}, kind: {owner_kind}, name: web-5d8f, uid: {uid}, controller: true}}]
spec:
  containers: [{{name: app, image: \"{image}\"}}]
"
        )
    }

    fn judged_pods(report: &Report) -> usize {
        report
            .findings
            .iter()
            .filter(|f| f.object.kind == "Pod")
            .count()
    }

    #[test]
    fn a_pod_is_judged_through_its_owner_only_when_the_inputs_hold_it() {
        let with_owner = run(&format!(
            "{RS}---\n{}",
            pod("ReplicaSet", "apps/v1", "rs-1", "nginx:latest")
        ));
        assert_eq!(judged_pods(&with_owner), 0, "{:?}", with_owner.findings);
        assert!(
            with_owner.notes.iter().any(|n| n
                .message
                .contains("judged through its controller ReplicaSet/web-5d8f")),
            "{:?}",
            with_owner.notes
        );
        assert!(
            with_owner
                .findings
                .iter()
                .any(|f| f.object.kind == "ReplicaSet")
        );

        let alone = run(&pod("ReplicaSet", "apps/v1", "rs-1", "nginx:latest"));
        assert!(
            judged_pods(&alone) > 0,
            "no owner in the inputs: judged as a Pod"
        );

        let other_uid = run(&format!(
            "{RS}---\n{}",
            pod("ReplicaSet", "apps/v1", "rs-2", "nginx:latest")
        ));
        assert!(
            judged_pods(&other_uid) > 0,
            "an owner with another UID is not this one"
        );

        let other_image = run(&format!(
            "{RS}---\n{}",
            pod("ReplicaSet", "apps/v1", "rs-1", "evil:latest")
        ));
        assert!(
            judged_pods(&other_image) > 0,
            "containers that are not the template's are judged on their own"
        );

        let fake_kind = run(&format!(
            "{RS}---\n{}",
            pod("ConfigMap", "v1", "rs-1", "nginx:latest")
        ));
        assert!(judged_pods(&fake_kind) > 0, "a ConfigMap creates no Pods");
    }

    #[test]
    fn replication_controllers_stand_for_their_pods() {
        let rc = "apiVersion: v1
kind: ReplicationController
metadata: {name: web-5d8f, uid: rs-1}
spec:
  template:
    spec:
      containers: [{name: app, image: \"nginx:latest\"}]
";
        let report = run(&format!(
            "{rc}---\n{}",
            pod("ReplicationController", "v1", "rs-1", "nginx:latest")
        ));
        assert_eq!(judged_pods(&report), 0, "{:?}", report.findings);
    }

    #[test]
    fn findings_stay_in_file_order_when_owned_objects_are_judged_late() {
        let text = format!(
            "{}---\n{}",
            pod("ReplicaSet", "apps/v1", "rs-1", "nginx:latest"),
            RS.replace("web-5d8f", "other")
        );
        let report = run(&text);
        let lines: Vec<usize> = report.findings.iter().map(|f| f.pos.line).collect();
        let mut sorted = lines.clone();
        sorted.sort_unstable();
        assert_eq!(lines, sorted);
        assert_eq!(report.findings.first().map(|f| f.object.kind), Some("Pod"));
    }
}
