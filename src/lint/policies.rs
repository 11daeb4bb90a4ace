//! Policies for `probity lint`: the built-in default, or the
//! `ReadinessPolicy` / `ClusterReadinessPolicy` documents of `--policy`
//! files, with their kinds, selectors and namespaces respected.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::manifest::Input;
use crate::manifest::yaml::{self, Pos};
use crate::policy::selector;
use crate::policy::spec::ClusterReadinessPolicySpec;

pub use crate::policy::resolved::{API_VERSION, Policy};

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
        if let Some(id) = spec.severity.keys().find(|id| {
            !crate::policy::rules::ALL
                .iter()
                .any(|r| r.id == id.as_str())
        }) {
            let pointer = format!(
                "/spec/severity/{}",
                id.replace('~', "~0").replace('/', "~1")
            );
            return Err(bad(
                doc.locate(&pointer),
                format!("severity names unknown rule {id:?} (keys are rule ids such as PRB108)"),
            ));
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
