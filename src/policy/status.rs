//! The status the operator writes on `ReadinessPolicy` and
//! `ClusterReadinessPolicy`: bounded, whatever the cluster's size.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How many violations status lists; the rest are counted in
/// `violationsOmitted`.
pub const MAX_LISTED_VIOLATIONS: usize = 50;

/// What the operator last observed for a policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: the policy is evaluated (reasons `Evaluated`,
    /// `InvalidSelector`). `Compliant`: no matched workload
    /// violates it (reasons `NoViolations`, `ViolationsFound`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Workloads the policy applies to (controlled objects, such as a
    /// Deployment's ReplicaSets, are judged through their owner).
    #[serde(default)]
    pub matched: i64,
    /// Matched workloads with no violation.
    #[serde(default)]
    pub compliant: i64,
    /// Matched workloads with at least one violation that is not exempt.
    #[serde(default)]
    pub violating: i64,
    /// Matched workloads whose only findings are exempted by annotation.
    #[serde(default)]
    pub exempt: i64,
    /// The first violations, sorted by namespace, kind, name, container and
    /// rule; at most 50.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<ViolationRef>,
    /// Violations not listed because of the bound.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub violations_omitted: i64,
    /// With `images.pin: Report`: the digest each tag of the matched
    /// workloads resolves to now, sorted by image; at most 50.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ResolvedImage>,
    /// Resolved images not listed because of the bound.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub images_omitted: i64,
}

/// A tag and the digest its registry serves now.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedImage {
    /// The image as the workloads name it (`registry/app:1.4`).
    pub image: String,
    /// `sha256:...`, when the registry answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Why it could not be resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// One violation in a policy's status.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ViolationRef {
    /// The workload's namespace.
    #[serde(default)]
    pub namespace: String,
    /// The workload's kind.
    pub kind: String,
    /// The workload's name.
    pub name: String,
    /// The container, when the violation is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The rule id, `PRB001`.
    pub rule: String,
    /// What is wrong.
    pub message: String,
}
