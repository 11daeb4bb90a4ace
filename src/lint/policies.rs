//! Policies for `probity lint`: the built-in default, or the
//! `ReadinessPolicy` / `ClusterReadinessPolicy` documents of `--policy`
//! files, with their kinds, selectors and namespaces respected.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde_json::Value;

use super::input::Input;
use super::yaml::{self, Pos};
use crate::policy::spec::{ClusterReadinessPolicySpec, ExemptionRules, ReadinessPolicySpec};
use crate::policy::{Workload, selector};

/// The API group and version of probity's policies.
pub const API_VERSION: &str = "probity.dev/v1alpha1";

/// A policy with what decides where it applies.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// `ReadinessPolicy/ns/name`, `ClusterReadinessPolicy/name` or `default`.
    pub name: String,
    /// The rules and workload selection.
    pub spec: ReadinessPolicySpec,
    /// For a ReadinessPolicy, its namespace.
    pub namespace: Option<String>,
    /// For a ClusterReadinessPolicy, its namespace selector.
    pub namespace_selector: Option<LabelSelector>,
    /// Whether this is a ClusterReadinessPolicy.
    pub cluster: bool,
}

impl Policy {
    /// The built-in policy used when `--policy` is not given. Unlike a
    /// policy in the cluster, it lets an annotation exempt any rule.
    pub fn builtin() -> Self {
        Self {
            name: "default".to_owned(),
            spec: ReadinessPolicySpec {
                exemptions: ExemptionRules::any(),
                ..ReadinessPolicySpec::default()
            },
            namespace: None,
            namespace_selector: None,
            cluster: true,
        }
    }

    /// Whether this policy applies to `workload`. A namespaced policy
    /// applies in its namespace; a manifest without a namespace matches
    /// any, since it is decided at apply time. `namespace_labels` gives the
    /// labels of namespaces defined alongside; any other namespace carries
    /// only `kubernetes.io/metadata.name`, as the API server sets it.
    pub fn applies_to(
        &self,
        workload: &Workload,
        namespace_labels: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> bool {
        if !self.spec.matches(workload.kind, &workload.labels) {
            return false;
        }
        match (&workload.namespace, self.cluster) {
            (Some(ns), false) => self.namespace.as_ref().is_none_or(|own| own == ns),
            (Some(ns), true) => self.namespace_selector.as_ref().is_none_or(|sel| {
                let implicit: BTreeMap<String, String> =
                    [("kubernetes.io/metadata.name".to_owned(), ns.clone())].into();
                let labels = namespace_labels.get(ns).unwrap_or(&implicit);
                selector::matches(sel, labels)
            }),
            (None, _) => true,
        }
    }
}

/// A policy document that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{}:{}: {message}", pos.line, pos.col)]
pub struct BadPolicy {
    /// The policy file.
    pub file: String,
    /// Where in it.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
}

/// Reads every policy document of `input`. Other documents are errors: a
/// policy file holds policies only.
pub fn load(input: &Input) -> Result<Vec<Policy>, BadPolicy> {
    let mut policies = Vec::new();
    let bad = |pos: Pos, message: String| BadPolicy {
        file: input.name.clone(),
        pos,
        message,
    };
    for doc in yaml::read_stream(&input.text) {
        let doc = doc.map_err(|e| bad(e.pos, e.message))?;
        let kind = doc
            .value
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let api_version = doc
            .value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let cluster = match kind {
            "ReadinessPolicy" => false,
            "ClusterReadinessPolicy" => true,
            _ => {
                return Err(bad(
                    doc.pos,
                    format!("expected a ReadinessPolicy or ClusterReadinessPolicy, found {kind:?}"),
                ));
            }
        };
        if api_version != API_VERSION {
            return Err(bad(
                doc.locate("/apiVersion"),
                format!("{kind} must have apiVersion {API_VERSION}, found {api_version:?}"),
            ));
        }
        let meta: ObjectMeta = typed(&doc, "/metadata")
            .map_err(|(pos, m)| bad(pos, m))?
            .unwrap_or_default();
        let name = meta.name.unwrap_or_default();
        let (spec, namespace_selector) = if cluster {
            let spec: ClusterReadinessPolicySpec = typed(&doc, "/spec")
                .map_err(|(pos, m)| bad(pos, m))?
                .unwrap_or_default();
            (spec.policy, spec.namespace_selector)
        } else {
            (
                typed(&doc, "/spec")
                    .map_err(|(pos, m)| bad(pos, m))?
                    .unwrap_or_default(),
                None,
            )
        };
        for (pointer, sel) in [
            ("/spec/match/selector", spec.match_.selector.as_ref()),
            ("/spec/namespaceSelector", namespace_selector.as_ref()),
        ] {
            if let Some(sel) = sel {
                selector::validate(sel).map_err(|e| bad(doc.locate(pointer), e.to_string()))?;
            }
        }
        let namespace = if cluster { None } else { meta.namespace };
        let display = match (&namespace, cluster) {
            (_, true) => format!("ClusterReadinessPolicy/{name}"),
            (Some(ns), false) => format!("ReadinessPolicy/{ns}/{name}"),
            (None, false) => format!("ReadinessPolicy/{name}"),
        };
        policies.push(Policy {
            name: display,
            spec,
            namespace,
            namespace_selector,
            cluster,
        });
    }
    if policies.is_empty() {
        return Err(bad(
            Pos { line: 1, col: 1 },
            "no policy documents".to_owned(),
        ));
    }
    Ok(policies)
}

/// Deserialises the node at `pointer`, locating type errors.
fn typed<T: serde::de::DeserializeOwned>(
    doc: &yaml::Document,
    pointer: &str,
) -> Result<Option<T>, (Pos, String)> {
    crate::policy::typed::at(&doc.value, pointer).map_err(|e| {
        let field = e.pointer.trim_start_matches('/').replace('/', ".");
        (doc.locate(&e.pointer), format!("{field}: {}", e.message))
    })
}
