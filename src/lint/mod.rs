//! `probity lint`: reads manifests, evaluates the policies with the shared
//! engine, and reports findings with their exact location.

pub mod input;
pub mod policies;
pub mod report;
pub mod yaml;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::policy::{Classified, Finding, Workload, evaluate, workload};
use input::Input;
use policies::Policy;
use yaml::Pos;

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

    /// 0 clean, 1 violations, 2 input errors.
    pub fn exit_code(&self) -> u8 {
        if !self.errors.is_empty() {
            2
        } else if self.violations() > 0 {
            1
        } else {
            0
        }
    }
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
    for input in inputs {
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
            for (prefix, object) in workload::objects(&doc.value) {
                lint_object(
                    &input.name,
                    &doc,
                    &prefix,
                    object,
                    policies,
                    &namespaces,
                    &mut report,
                );
            }
        }
    }
    report
}

fn lint_object(
    file: &str,
    doc: &yaml::Document,
    prefix: &str,
    object: &Value,
    policies: &[Policy],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    report: &mut Report,
) {
    let at = |pointer: &str| Some(doc.locate(&format!("{prefix}{pointer}")));
    let workload = match Workload::classify(object) {
        Ok(Classified::Workload(w)) => w,
        Ok(Classified::OtherKind(_)) => return,
        Ok(Classified::NotKubernetes) => {
            report.notes.push(Problem {
                file: file.to_owned(),
                pos: at(""),
                message:
                    "skipped a document that is not a Kubernetes object (no apiVersion and kind)"
                        .to_owned(),
            });
            return;
        }
        Err(e) => {
            report.errors.push(Problem {
                file: file.to_owned(),
                pos: at(&e.path),
                message: format!("{e}"),
            });
            return;
        }
    };
    if let Some(owner) = &workload.controller {
        report.notes.push(Problem {
            file: file.to_owned(),
            pos: at(""),
            message: format!(
                "skipped {} {}: it is judged through its controller {owner}",
                workload.kind.as_str(),
                workload.name
            ),
        });
        return;
    }
    report.workloads += 1;
    let object_ref = ObjectRef {
        kind: workload.kind.as_str(),
        name: workload.name.clone(),
        namespace: workload.namespace.clone(),
    };
    let mut found: Vec<Located> = Vec::new();
    for policy in policies
        .iter()
        .filter(|p| p.applies_to(&workload, namespaces))
    {
        for finding in evaluate(&policy.spec, &workload) {
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
