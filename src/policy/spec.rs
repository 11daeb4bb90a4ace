//! The policy a workload is judged against: the spec of `ReadinessPolicy`
//! and `ClusterReadinessPolicy`, and the built-in default `probity lint`
//! uses. Doc comments here become the CRD's OpenAPI descriptions.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::PolicyStatus;

/// What a policy requires of the workloads it matches. Omitted fields take
/// the built-in defaults, so an empty spec is the default policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema, CustomResource)]
#[serde(rename_all = "camelCase")]
#[kube(
    group = "probity.dev",
    version = "v1alpha1",
    kind = "ReadinessPolicy",
    namespaced,
    status = "PolicyStatus",
    shortname = "rpol",
    category = "probity",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Matched", type_ = "integer", json_path = ".status.matched"),
    printcolumn(name = "Violating", type_ = "integer", json_path = ".status.violating"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = paths_differ(),
    validation = registry_hosts(),
    validation = severity_keys(),
    doc = "Pinned images and honest probes for the workloads of one namespace."
)]
pub struct ReadinessPolicySpec {
    /// Audit reports violations (admission warnings, status, events);
    /// Enforce also denies them at admission.
    #[serde(default)]
    pub mode: Mode,
    /// Which workloads the policy applies to.
    #[serde(default, rename = "match")]
    pub match_: Match,
    /// The kind of workload: a Server receives traffic through a Service; a
    /// Consumer (queue worker) does not, so readiness is optional and
    /// liveness and startup probes are required.
    #[serde(default)]
    pub profile: Profile,
    /// Rules for container images.
    #[serde(default)]
    pub images: ImageRules,
    /// Rules for probes.
    #[serde(default)]
    pub probes: ProbeRules,
    /// How the admission webhooks apply the policy.
    #[serde(default)]
    pub admission: AdmissionRules,
    /// Which rules a workload may exempt itself from.
    #[serde(default)]
    pub exemptions: ExemptionRules,
    /// Severity per rule id (`PRB108: Warning`). Error, the default,
    /// counts as a violation and Enforce denies it; Warning is reported
    /// (lint output, admission warnings) but never fails a lint run, is
    /// never denied and is not counted as a violation; Off skips the rule.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub severity: BTreeMap<String, Severity>,
}

/// How much a rule's findings count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Severity {
    /// A violation: fails `probity lint`, denied in Enforce mode.
    #[default]
    Error,
    /// Reported, never failing or denying.
    Warning,
    /// Not evaluated.
    Off,
}

impl Severity {
    /// `error`, `warning` or `off`, as machine formats write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Warning => "warning",
            Self::Off => "off",
        }
    }
}

/// Which rules a workload's `probity.dev/exempt` annotation may exempt. The
/// annotation is written by whoever can edit the workload, so by default it
/// may only exempt the probe rules; the image rules hold unless the policy
/// lists them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExemptionRules {
    /// Rule ids an annotation may exempt (`PRB104`). Absent: the probe rules
    /// PRB101-PRB109 only; the image rules PRB001-PRB004 only when listed.
    /// Empty: no exemptions at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), inner(regex(pattern = r"^PRB[0-9]{3}$")))]
    pub allowed_rules: Option<Vec<String>>,
}

impl ExemptionRules {
    /// Every rule may be exempted (`probity lint`'s built-in default: CI
    /// owners review exemptions in the change that adds them).
    pub fn any() -> Self {
        Self {
            allowed_rules: Some(super::rules::ALL.iter().map(|r| r.id.to_owned()).collect()),
        }
    }

    /// Whether an annotation may exempt the rule `id` (`PRB104`).
    pub fn allows(&self, id: &str) -> bool {
        match &self.allowed_rules {
            Some(listed) => listed.iter().any(|r| r == id),
            None => id.starts_with("PRB1"),
        }
    }
}

/// How the admission webhooks apply a policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdmissionRules {
    /// On UPDATE in Enforce mode, violations the workload already had in
    /// containers the update leaves unchanged: Warn admits the update with
    /// a warning, so a compliant edit (a scale, a label) is never blocked by
    /// an old mistake; Deny blocks it as a CREATE would be.
    #[serde(default)]
    pub existing_violations: ExistingViolations,
    /// With `images.pin: Admission`, when the registry cannot resolve a
    /// tag in time: Allow admits the workload unpinned with a warning (fail
    /// open); Deny rejects it with the reason (fail closed).
    #[serde(default)]
    pub registry_unavailable: RegistryUnavailable,
}

/// What an UPDATE meets for violations it did not introduce.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ExistingViolations {
    /// Admit with a warning.
    #[default]
    Warn,
    /// Deny, as on CREATE.
    Deny,
}

/// What admission does when a tag cannot be resolved to a digest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RegistryUnavailable {
    /// Admit unpinned, with a warning.
    #[default]
    Allow,
    /// Deny with the reason.
    Deny,
}

/// The spec of a `ClusterReadinessPolicy`: a `ReadinessPolicy` spec that
/// applies across namespaces.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema, CustomResource)]
#[serde(rename_all = "camelCase")]
#[kube(
    group = "probity.dev",
    version = "v1alpha1",
    kind = "ClusterReadinessPolicy",
    status = "PolicyStatus",
    shortname = "crpol",
    category = "probity",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Matched", type_ = "integer", json_path = ".status.matched"),
    printcolumn(name = "Violating", type_ = "integer", json_path = ".status.violating"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = paths_differ(),
    validation = registry_hosts(),
    validation = severity_keys(),
    doc = "Pinned images and honest probes for workloads across namespaces."
)]
pub struct ClusterReadinessPolicySpec {
    /// Namespaces whose workloads the policy applies to, by label; absent
    /// selects every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// The rules, as in a `ReadinessPolicy`.
    #[serde(flatten)]
    pub policy: ReadinessPolicySpec,
}

/// Cross-field rule: with `distinctLiveness`, readiness and liveness paths
/// must differ, or every compliant workload would violate PRB104.
fn paths_differ() -> kube::core::Rule {
    kube::core::Rule::new(
        "!has(self.spec.probes) || !self.spec.probes.distinctLiveness || \
     !has(self.spec.probes.readiness.path) || !has(self.spec.probes.liveness.path) || \
     self.spec.probes.readiness.path != self.spec.probes.liveness.path",
    )
    .message(
        "spec.probes: readiness.path and liveness.path must differ while distinctLiveness is true",
    )
}

/// Registries are host[:port] names with an optional path prefix, not URLs.
fn registry_hosts() -> kube::core::Rule {
    kube::core::Rule::new(
        "!has(self.spec.images) || !has(self.spec.images.allowedRegistries) || \
     self.spec.images.allowedRegistries.all(r, r != '' && !r.contains('://'))",
    )
    .message(
        "spec.images.allowedRegistries: use registry names such as ghcr.io, ghcr.io/acme or \
         registry.internal:5000, without a scheme",
    )
}

/// Severity is keyed by rule id (at most 64: the schema's maxProperties).
fn severity_keys() -> kube::core::Rule {
    kube::core::Rule::new(
        "!has(self.spec.severity) || self.spec.severity.all(k, k.matches('^PRB[0-9]{3}$'))",
    )
    .message("spec.severity: keys are rule ids such as PRB108")
}

/// Whether violations are only reported or also denied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Mode {
    /// Report violations; admission allows with warnings.
    #[default]
    Audit,
    /// Admission denies workloads that violate the policy.
    Enforce,
}

/// The kind of workload the probe rules are tuned for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Profile {
    /// Serves traffic: readiness and liveness probes required.
    #[default]
    Server,
    /// Consumes from a queue without a Service: liveness and startup probes
    /// required, readiness optional.
    Consumer,
}

/// Which workloads a policy matches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Match {
    /// Workload kinds; empty matches every supported kind.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<WorkloadKind>,
    /// Workload label selector; absent matches every workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// A kind of workload probity understands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum WorkloadKind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// apps/v1 ReplicaSet.
    ReplicaSet,
    /// batch/v1 Job.
    Job,
    /// batch/v1 CronJob.
    CronJob,
    /// v1 Pod.
    Pod,
    /// v1 ReplicationController.
    ReplicationController,
}

impl WorkloadKind {
    /// Every kind, in a stable order.
    pub const ALL: [Self; 8] = [
        Self::Deployment,
        Self::StatefulSet,
        Self::DaemonSet,
        Self::ReplicaSet,
        Self::Job,
        Self::CronJob,
        Self::Pod,
        Self::ReplicationController,
    ];

    /// The kind name as in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deployment => "Deployment",
            Self::StatefulSet => "StatefulSet",
            Self::DaemonSet => "DaemonSet",
            Self::ReplicaSet => "ReplicaSet",
            Self::Job => "Job",
            Self::CronJob => "CronJob",
            Self::Pod => "Pod",
            Self::ReplicationController => "ReplicationController",
        }
    }

    /// The kind named `kind`, when probity handles it.
    pub fn from_kind(kind: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// The `apiVersion` manifests of this kind use.
    pub fn api_version(self) -> &'static str {
        match self {
            Self::Deployment | Self::StatefulSet | Self::DaemonSet | Self::ReplicaSet => "apps/v1",
            Self::Job | Self::CronJob => "batch/v1",
            Self::Pod | Self::ReplicationController => "v1",
        }
    }

    /// Long-running workloads get probe rules; run-to-completion ones
    /// (Job, CronJob) only image rules.
    pub fn is_long_running(self) -> bool {
        !matches!(self, Self::Job | Self::CronJob)
    }
}

fn yes() -> bool {
    true
}

/// Rules for container images (every kind, init containers included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageRules {
    /// Reject the `latest` tag and references with neither tag nor digest
    /// (PRB001).
    #[serde(default = "yes")]
    pub forbid_latest: bool,
    /// Require an `@sha256:` digest (PRB002).
    #[serde(default = "yes")]
    pub require_digest: bool,
    /// Registries images may come from (`ghcr.io`, `registry.internal:5000`);
    /// empty allows any (PRB003). `docker.io` covers references without a
    /// registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 255)))]
    pub allowed_registries: Vec<String>,
    /// Digest pinning: Off; Report resolves tags and records digests in
    /// status; Admission rewrites `tag` to `tag@digest` when workloads are
    /// admitted.
    #[serde(default)]
    pub pin: PinMode,
}

impl Default for ImageRules {
    fn default() -> Self {
        Self {
            forbid_latest: true,
            require_digest: true,
            allowed_registries: Vec::new(),
            pin: PinMode::Off,
        }
    }
}

impl ImageRules {
    /// Whether `image` comes from a registry in `allowedRegistries` (a
    /// registry, or a registry and a path prefix: `ghcr.io/acme`). False
    /// when the list is empty.
    pub fn lists_registry_of(&self, image: &crate::image::Reference) -> bool {
        let name = image.name();
        self.allowed_registries.iter().any(|entry| {
            let entry = entry.trim_end_matches('/');
            name == entry
                || name
                    .strip_prefix(entry)
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

/// How tags are resolved to digests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PinMode {
    /// No resolution.
    #[default]
    Off,
    /// Resolve tags and record the digests in status.
    Report,
    /// Rewrite tags to `tag@digest` at admission.
    Admission,
}

/// Rules for probes (long-running workloads only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeRules {
    /// The readiness probe.
    #[serde(default = "ProbeRule::readiness")]
    pub readiness: ProbeRule,
    /// The liveness probe.
    #[serde(default = "ProbeRule::liveness")]
    pub liveness: ProbeRule,
    /// The startup probe.
    #[serde(default)]
    pub startup: ProbeRule,
    /// Liveness must not use the same handler as readiness (PRB104): a
    /// liveness probe that checks dependencies restarts healthy pods.
    #[serde(default = "yes")]
    pub distinct_liveness: bool,
    /// An overloaded pod must be taken out of rotation before liveness
    /// restarts it (PRB108).
    #[serde(default = "yes")]
    pub liveness_outlasts_readiness: bool,
}

impl Default for ProbeRules {
    fn default() -> Self {
        Self {
            readiness: ProbeRule::readiness(),
            liveness: ProbeRule::liveness(),
            startup: ProbeRule::default(),
            distinct_liveness: true,
            liveness_outlasts_readiness: true,
        }
    }
}

/// Requirements on one probe.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeRule {
    /// The probe must be present (PRB101-PRB103). The Consumer profile
    /// requires liveness and startup and never readiness, whatever this says.
    #[serde(default)]
    pub required: bool,
    /// HTTP probes must use this path (PRB105).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Upper bound on timeoutSeconds (PRB106; readiness only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_timeout_seconds: Option<i32>,
    /// Lower bound on failureThreshold x periodSeconds (PRB107; liveness
    /// only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub min_failure_window_seconds: Option<i32>,
}

impl ProbeRule {
    fn readiness() -> Self {
        Self {
            required: true,
            max_timeout_seconds: Some(5),
            ..Self::default()
        }
    }

    fn liveness() -> Self {
        Self {
            required: true,
            min_failure_window_seconds: Some(30),
            ..Self::default()
        }
    }
}

impl ReadinessPolicySpec {
    /// The severity of rule `id` under this policy.
    pub fn severity_of(&self, id: &str) -> Severity {
        self.severity.get(id).copied().unwrap_or_default()
    }

    /// Whether this policy applies to a workload of `kind` with `labels`.
    pub fn matches(
        &self,
        kind: WorkloadKind,
        labels: &std::collections::BTreeMap<String, String>,
    ) -> bool {
        let kind_ok = self.match_.kinds.is_empty() || self.match_.kinds.contains(&kind);
        kind_ok
            && self
                .match_
                .selector
                .as_ref()
                .is_none_or(|s| super::selector::matches(s, labels))
    }
}
