//! The policy engine: pure functions from manifests to violations, shared by
//! `probity lint`, the admission webhook and the controller. One rule, one
//! implementation, three entry points.

pub mod reference;
pub mod rules;
pub mod selector;
pub mod spec;
pub mod typed;
pub mod workload;

pub use reference::{Digest, InvalidReference, Reference};
pub use rules::{Finding, RuleMeta, evaluate};
pub use spec::{
    ClusterReadinessPolicySpec, ImageRules, Match, Mode, PinMode, ProbeRule, ProbeRules, Profile,
    ReadinessPolicySpec, WorkloadKind,
};
pub use workload::{Classified, InvalidWorkload, Workload};
