//! A policy resolved from either kind (or the built-in default), with what
//! decides where it applies: what lint, the webhooks and the controller
//! evaluate.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::spec::{ExemptionRules, ReadinessPolicySpec};
use super::{Workload, selector};

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
