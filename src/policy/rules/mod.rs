//! The rules: one file each, evaluated per container by [`evaluate`].
//!
//! Image rules (PRB0xx) apply to every kind and to init containers; probe
//! rules (PRB1xx) to the main containers of long-running kinds. Ephemeral
//! containers are never judged.

mod handler;
mod prb001_image_latest_tag;
mod prb002_image_not_pinned;
mod prb003_image_registry_not_allowed;
mod prb004_image_reference_invalid;
mod prb101_readiness_probe_missing;
mod prb102_liveness_probe_missing;
mod prb103_startup_probe_missing;
mod prb104_liveness_same_as_readiness;
mod prb105_probe_path_mismatch;
mod prb106_probe_timeout_out_of_bounds;
mod prb107_liveness_window_too_short;
mod prb108_liveness_fires_before_readiness;
mod prb109_probe_port_not_declared;
mod prb301_image_digest_drift;
mod prb302_tag_moved;
mod prb303_synchronized_restarts;
mod prb900_invalid_exemption;

use k8s_openapi::api::core::v1::{Container, Probe};

use super::reference::Reference;
use super::spec::ReadinessPolicySpec;
use super::workload::Workload;

/// What every rule declares about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleMeta {
    /// Stable id, `PRB001`.
    pub id: &'static str,
    /// Stable kebab-case name, `image-latest-tag`.
    pub name: &'static str,
    /// One line on how to fix a finding.
    pub help: &'static str,
    /// The long explanation (What it does / Why it matters / Example / Fix),
    /// in Markdown; `probity lint --explain` prints it.
    pub explanation: &'static str,
}

/// Declares a rule's [`RuleMeta`] from its doc comment, so the rustdoc and
/// `--explain` text are one and the same.
macro_rules! rule {
    ($(#[doc = $doc:literal])* id: $id:literal, name: $name:literal, help: $help:literal $(,)?) => {
        $(#[doc = $doc])*
        pub(crate) const META: $crate::policy::rules::RuleMeta = $crate::policy::rules::RuleMeta {
            id: $id,
            name: $name,
            help: $help,
            explanation: concat!($($doc, "\n"),*),
        };
    };
}
use rule;

/// Every rule, in id order.
pub const ALL: [&RuleMeta; 17] = [
    &prb001_image_latest_tag::META,
    &prb002_image_not_pinned::META,
    &prb003_image_registry_not_allowed::META,
    &prb004_image_reference_invalid::META,
    &prb101_readiness_probe_missing::META,
    &prb102_liveness_probe_missing::META,
    &prb103_startup_probe_missing::META,
    &prb104_liveness_same_as_readiness::META,
    &prb105_probe_path_mismatch::META,
    &prb106_probe_timeout_out_of_bounds::META,
    &prb107_liveness_window_too_short::META,
    &prb108_liveness_fires_before_readiness::META,
    &prb109_probe_port_not_declared::META,
    &prb301_image_digest_drift::META,
    &prb302_tag_moved::META,
    &prb303_synchronized_restarts::META,
    &prb900_invalid_exemption::META,
];

/// PRB301, evaluated by the operator from pod status.
pub const IMAGE_DIGEST_DRIFT: &RuleMeta = &prb301_image_digest_drift::META;

/// PRB302, evaluated by the operator from the registry and pod status.
pub const TAG_MOVED: &RuleMeta = &prb302_tag_moved::META;

/// PRB303, evaluated by the operator from pod status.
pub const SYNCHRONIZED_RESTARTS: &RuleMeta = &prb303_synchronized_restarts::META;

/// The rule with this id (`PRB104`) or name (`liveness-same-as-readiness`),
/// case-insensitively.
pub fn find(id_or_name: &str) -> Option<&'static RuleMeta> {
    ALL.into_iter()
        .find(|r| r.id.eq_ignore_ascii_case(id_or_name) || r.name.eq_ignore_ascii_case(id_or_name))
}

/// The rules only the operator can evaluate, from pod status; manifests
/// alone never show them.
pub const RUNTIME: [&RuleMeta; 3] = [IMAGE_DIGEST_DRIFT, TAG_MOVED, SYNCHRONIZED_RESTARTS];

impl RuleMeta {
    /// Whether this is a runtime rule (see [`RUNTIME`]).
    pub fn is_runtime(&self) -> bool {
        RUNTIME.iter().any(|r| r.id == self.id)
    }

    /// The explanation with the one leading space of each doc line removed.
    pub fn explain(&self) -> String {
        let mut text = String::with_capacity(self.explanation.len());
        for line in self.explanation.lines() {
            text.push_str(line.strip_prefix(' ').unwrap_or(line));
            text.push('\n');
        }
        text
    }
}

/// One violation of one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule.
    pub rule: &'static RuleMeta,
    /// The container, when the finding is about one.
    pub container: Option<String>,
    /// What is wrong, in one sentence.
    pub message: String,
    /// JSON pointer, inside the object, of the field the finding is about
    /// (or of the nearest field that exists).
    pub pointer: String,
    /// The workload's stated reason, when it exempts itself from the rule.
    pub exempt: Option<String>,
}

/// Per-container context handed to the rules.
pub(crate) struct Cx<'a> {
    pub(crate) policy: &'a ReadinessPolicySpec,
    pub(crate) container: &'a Container,
    /// Pointer of the container, `/spec/template/spec/containers/0`.
    pub(crate) pointer: String,
}

impl Cx<'_> {
    pub(crate) fn finding(&self, rule: &'static RuleMeta, field: &str, message: String) -> Finding {
        let pointer = if field.is_empty() {
            self.pointer.clone()
        } else {
            format!("{}/{field}", self.pointer)
        };
        Finding {
            rule,
            container: Some(self.container.name.clone()),
            message,
            pointer,
            exempt: None,
        }
    }

    pub(crate) fn probe(&self, which: ProbeKind) -> Option<&Probe> {
        match which {
            ProbeKind::Readiness => self.container.readiness_probe.as_ref(),
            ProbeKind::Liveness => self.container.liveness_probe.as_ref(),
            ProbeKind::Startup => self.container.startup_probe.as_ref(),
        }
    }
}

/// The three probes of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProbeKind {
    Readiness,
    Liveness,
    Startup,
}

impl ProbeKind {
    pub(crate) const ALL: [Self; 3] = [Self::Readiness, Self::Liveness, Self::Startup];

    /// The container field, `readinessProbe`.
    pub(crate) fn field(self) -> &'static str {
        match self {
            Self::Readiness => "readinessProbe",
            Self::Liveness => "livenessProbe",
            Self::Startup => "startupProbe",
        }
    }

    pub(crate) fn rule(self, policy: &ReadinessPolicySpec) -> &super::spec::ProbeRule {
        match self {
            Self::Readiness => &policy.probes.readiness,
            Self::Liveness => &policy.probes.liveness,
            Self::Startup => &policy.probes.startup,
        }
    }
}

/// Evaluates `policy` against `workload`. The caller decides whether the
/// policy matches and whether a controlled object is judged (see
/// [`Workload::controller`]); this only applies rules.
pub fn evaluate(policy: &ReadinessPolicySpec, workload: &Workload) -> Vec<Finding> {
    let mut out = Vec::new();
    let exemptions = prb900_invalid_exemption::parse_all(&workload.exemptions, &mut out);
    let pod = &workload.pod;
    let groups = [
        (
            "initContainers",
            pod.init_containers.as_deref().unwrap_or_default(),
            false,
        ),
        (
            "containers",
            pod.containers.as_slice(),
            workload.kind.is_long_running(),
        ),
    ];
    for (field, containers, probe_rules) in groups {
        for (i, container) in containers.iter().enumerate() {
            let cx = Cx {
                policy,
                container,
                pointer: format!("{}/{field}/{i}", workload.pod_pointer),
            };
            check_image(&cx, &mut out);
            if probe_rules {
                check_probes(&cx, &mut out);
            }
        }
    }
    for finding in &mut out {
        if let Some(reason) = exemptions.get(finding.rule.id) {
            finding.exempt = Some(reason.clone());
        }
    }
    out
}

fn check_image(cx: &Cx<'_>, out: &mut Vec<Finding>) {
    let image = cx.container.image.as_deref().unwrap_or_default();
    match Reference::parse(image) {
        Ok(reference) => {
            prb001_image_latest_tag::check(cx, &reference, out);
            prb002_image_not_pinned::check(cx, &reference, out);
            prb003_image_registry_not_allowed::check(cx, &reference, out);
        }
        Err(err) => prb004_image_reference_invalid::check(cx, image, &err, out),
    }
}

fn check_probes(cx: &Cx<'_>, out: &mut Vec<Finding>) {
    prb101_readiness_probe_missing::check(cx, out);
    prb102_liveness_probe_missing::check(cx, out);
    prb103_startup_probe_missing::check(cx, out);
    prb104_liveness_same_as_readiness::check(cx, out);
    prb105_probe_path_mismatch::check(cx, out);
    prb106_probe_timeout_out_of_bounds::check(cx, out);
    prb107_liveness_window_too_short::check(cx, out);
    prb108_liveness_fires_before_readiness::check(cx, out);
    prb109_probe_port_not_declared::check(cx, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_are_unique_sorted_and_explained() {
        for pair in ALL.windows(2) {
            assert!(
                pair[0].id < pair[1].id,
                "{} before {}",
                pair[0].id,
                pair[1].id
            );
        }
        let mut names: Vec<&str> = ALL.iter().map(|r| r.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        for rule in ALL {
            let text = rule.explain();
            for heading in [
                "## What it does",
                "## Why it matters",
                "## Example",
                "## Fix",
            ] {
                assert!(text.contains(heading), "{} lacks {heading}", rule.id);
            }
            assert!(!rule.help.is_empty());
        }
        assert_eq!(
            find("prb104").map(|r| r.name),
            Some("liveness-same-as-readiness")
        );
        assert_eq!(find("image-latest-tag").map(|r| r.id), Some("PRB001"));
        assert!(find("PRB999").is_none());
    }
}
