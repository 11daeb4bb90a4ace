//! The policy engine: pure functions from manifests to violations, shared by
//! `probity lint`, the admission webhook and the controller. One rule, one
//! implementation, three entry points.

pub mod crd;
pub(crate) mod object;
pub mod pod;
pub mod resolved;
pub mod rules;
pub mod selector;
pub mod spec;
pub mod status;
pub mod typed;
pub mod wgpolicy;
pub mod workload;

pub use crd::{crd_reference, crds, crds_yaml};
pub use resolved::{API_VERSION, Policy};
pub use rules::{Finding, RuleMeta, evaluate};
pub use spec::{
    AdmissionRules, ClusterReadinessPolicySpec, ExistingViolations, ImageRules, Match, Mode,
    PinMode, ProbeRule, ProbeRules, Profile, ReadinessPolicySpec, RegistryUnavailable, Severity,
    WorkloadKind,
};
pub use spec::{ClusterReadinessPolicy, ReadinessPolicy};
pub use status::{PolicyStatus, ResolvedImage, ViolationRef};
pub use workload::{Classified, Controller, InvalidWorkload, Workload};
