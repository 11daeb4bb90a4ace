//! The policy engine: pure functions from manifests to violations, shared by
//! `probity lint`, the admission webhook and the controller. One rule, one
//! implementation, three entry points.

pub mod reference;
pub mod rules;
pub mod selector;
pub mod spec;
pub mod status;
pub mod typed;
pub mod workload;

pub use reference::{Digest, InvalidReference, Reference};
pub use rules::{Finding, RuleMeta, evaluate};
pub use spec::{ClusterReadinessPolicy, ReadinessPolicy};
pub use spec::{
    ClusterReadinessPolicySpec, ImageRules, Match, Mode, PinMode, ProbeRule, ProbeRules, Profile,
    ReadinessPolicySpec, WorkloadKind,
};
pub use status::{PolicyStatus, ViolationRef};
pub use workload::{Classified, InvalidWorkload, Workload};

/// The CustomResourceDefinitions of `ReadinessPolicy` and
/// `ClusterReadinessPolicy`, as `probity crd` prints them and `crds/` holds
/// them.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    use kube::CustomResourceExt as _;
    vec![ReadinessPolicy::crd(), ClusterReadinessPolicy::crd()]
}

/// [`crds`] as a YAML stream.
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| crate::emit::document(&serde_json::to_value(crd).unwrap_or_default()))
        .collect()
}
