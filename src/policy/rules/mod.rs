//! The rules: one file each, evaluated per container by [`evaluate`].
//!
//! Image rules (PRB0xx) apply to every kind and to every image a pod
//! pulls: init, app and ephemeral containers, and image volumes. Probe rules
//! (PRB1xx) apply to the app containers of long-running kinds.

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

use super::pod::{Container, Probe};

use super::spec::{ReadinessPolicySpec, Severity};
use super::workload::Workload;
use crate::image::Reference;

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

/// PRB004, also what the operator reports for a workload it cannot read.
pub const IMAGE_REFERENCE_INVALID: &RuleMeta = &prb004_image_reference_invalid::META;

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
    /// How much it counts, from the policy's `severity` (never Off: such
    /// rules are not evaluated).
    pub severity: Severity,
}

/// Per-container context handed to the rules.
pub(crate) struct Cx<'a> {
    pub(crate) policy: &'a ReadinessPolicySpec,
    pub(crate) container: &'a Container,
    /// Pointer of the container, `/spec/template/spec/containers/0`.
    pub(crate) pointer: String,
    /// The field holding the image under `pointer`: `image`, or
    /// `reference` for an image volume.
    pub(crate) image_field: &'static str,
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
            severity: Severity::Error,
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
    let allows = |id: &str| policy.exemptions.allows(id);
    let exemptions = prb900_invalid_exemption::parse_all(&workload.exemptions, &allows, &mut out);
    let pod = &workload.pod;
    for (field, containers, probe_rules) in [
        ("initContainers", &pod.init_containers, false),
        (
            "containers",
            &pod.containers,
            workload.kind.is_long_running(),
        ),
        // Ephemeral containers pull images too; only the image rules apply.
        ("ephemeralContainers", &pod.ephemeral_containers, false),
    ] {
        for (i, container) in containers.iter().enumerate() {
            let cx = Cx {
                policy,
                container,
                pointer: format!("{}/{field}/{i}", workload.pod_pointer),
                image_field: "image",
            };
            check_image(&cx, &mut out);
            if probe_rules {
                check_probes(&cx, &mut out);
            }
        }
    }
    // Image volumes too, seen by the image rules as containers named after
    // them.
    for (i, volume) in pod.volumes.iter().enumerate() {
        let Some(reference) = volume.image.as_ref().and_then(|v| v.reference.clone()) else {
            continue;
        };
        let container = Container {
            name: format!("volume {}", volume.name),
            image: Some(reference),
            ..Container::default()
        };
        let cx = Cx {
            policy,
            container: &container,
            pointer: format!("{}/volumes/{i}/image", workload.pod_pointer),
            image_field: "reference",
        };
        check_image(&cx, &mut out);
    }
    out.retain_mut(|finding| {
        if let Some(reason) = exemptions.get(finding.rule.id) {
            finding.exempt = Some(reason.clone());
        }
        finding.severity = policy.severity_of(finding.rule.id);
        finding.severity != Severity::Off
    });
    out
}

fn check_image(cx: &Cx<'_>, out: &mut Vec<Finding>) {
    let image = cx.container.image.as_deref().unwrap_or_default();
    let parsed;
    let reference = match &cx.container.reference {
        Some(reference) => reference,
        None => {
            parsed = Reference::parse(image);
            &parsed
        }
    };
    match reference {
        Ok(reference) => {
            prb001_image_latest_tag::check(cx, reference, out);
            prb002_image_not_pinned::check(cx, reference, out);
            prb003_image_registry_not_allowed::check(cx, reference, out);
        }
        Err(err) => prb004_image_reference_invalid::check(cx, image, err, out),
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

#[cfg(test)]
mod pod_images_and_exemptions {
    use serde_json::json;

    use super::*;
    use crate::policy::spec::ExemptionRules;
    use crate::policy::{Classified, Workload};

    fn workload(object: serde_json::Value) -> Workload {
        match Workload::classify(&object) {
            Ok(Classified::Workload(w)) => *w,
            other => panic!("not a workload: {other:?}"),
        }
    }

    fn pointers(findings: &[Finding], id: &str) -> Vec<String> {
        findings
            .iter()
            .filter(|f| f.rule.id == id && f.exempt.is_none())
            .map(|f| f.pointer.clone())
            .collect()
    }

    #[test]
    fn ephemeral_containers_and_image_volumes_are_judged_by_the_image_rules() {
        let pod = workload(
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {
                "containers": [{"name": "app", "image": "app:1@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                    "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}},
                    "livenessProbe": {"httpGet": {"path": "/livez", "port": 8080}, "failureThreshold": 6},
                    "ports": [{"containerPort": 8080}]}],
                "ephemeralContainers": [{"name": "debug", "image": "busybox"}],
                "volumes": [{"name": "cfg", "configMap": {"name": "c"}},
                            {"name": "model", "image": {"reference": "quay.io/acme/model:latest"}}],
            }}),
        );
        let findings = evaluate(&ReadinessPolicySpec::default(), &pod);
        assert_eq!(
            pointers(&findings, "PRB001"),
            [
                "/spec/ephemeralContainers/0/image",
                "/spec/volumes/1/image/reference"
            ]
        );
        assert_eq!(
            pointers(&findings, "PRB002"),
            [
                "/spec/ephemeralContainers/0/image",
                "/spec/volumes/1/image/reference"
            ]
        );
        assert!(
            pointers(&findings, "PRB101").is_empty(),
            "ephemeral containers get no probe rules: {findings:?}"
        );
        let volume = findings
            .iter()
            .find(|f| f.pointer.starts_with("/spec/volumes"))
            .expect("volume finding");
        assert_eq!(volume.container.as_deref(), Some("volume model"));
    }

    fn exempted(allowed: Option<Vec<&str>>, annotation: &str) -> Vec<Finding> {
        let policy = ReadinessPolicySpec {
            exemptions: ExemptionRules {
                allowed_rules: allowed.map(|l| l.into_iter().map(str::to_owned).collect()),
            },
            ..ReadinessPolicySpec::default()
        };
        let deployment = workload(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "annotations": {"probity.dev/exempt": annotation}},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "nginx:latest"}]}}}}));
        evaluate(&policy, &deployment)
    }

    #[test]
    fn by_default_annotations_exempt_probe_rules_only() {
        let findings = exempted(None, "PRB001,PRB002: trust me");
        assert_eq!(
            pointers(&findings, "PRB001").len(),
            1,
            "image rules still hold"
        );
        let invalid: Vec<&Finding> = findings.iter().filter(|f| f.rule.id == "PRB900").collect();
        assert_eq!(invalid.len(), 1, "{findings:?}");
        assert!(
            invalid[0]
                .message
                .contains("does not let an annotation exempt PRB001")
        );

        let findings = exempted(None, "PRB101: a batch-like server; PRB102: same");
        assert!(pointers(&findings, "PRB101").is_empty());
        assert!(pointers(&findings, "PRB102").is_empty());
        assert!(findings.iter().all(|f| f.rule.id != "PRB900"));
    }

    #[test]
    fn a_policy_may_allow_image_rules_or_nothing() {
        let findings = exempted(
            Some(vec!["PRB001", "PRB002"]),
            "image-latest-tag, prb002 : vendor image",
        );
        assert!(
            pointers(&findings, "PRB001").is_empty(),
            "names and any case count: {findings:?}"
        );
        assert!(pointers(&findings, "PRB002").is_empty());

        let findings = exempted(Some(vec![]), "PRB101: no");
        assert_eq!(
            pointers(&findings, "PRB101").len(),
            1,
            "an empty list allows nothing"
        );
        assert!(findings.iter().any(|f| f.rule.id == "PRB900"));

        let findings = exempted(None, "PRB101,PRB001: one disallowed id spoils the clause");
        assert_eq!(pointers(&findings, "PRB101").len(), 1);
    }
}
