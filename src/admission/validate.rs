//! The validating webhook's decision: every matching policy, evaluated with
//! the shared engine. Enforce denies, Audit warns, exemptions are recorded.
//!
//! UPDATE semantics: a violation blocks an update when the update introduces
//! it, or changes the container it is about (the update keeps it). A
//! violation the workload already had, in a container the update leaves
//! unchanged, is a warning, so scaling or relabelling an old workload is
//! never blocked by an old mistake. A policy with
//! `admission.existingViolations: Deny` blocks those too.

use std::collections::{BTreeMap, BTreeSet};

use super::review::{Object, Operation, Request, Response};
use crate::policy::Policy;
use crate::policy::{
    Classified, ExistingViolations, Finding, Mode, Severity, Workload, WorkloadKind, evaluate,
};

/// Kubernetes shows at most this many characters of one warning.
pub const MAX_WARNING_CHARS: usize = 120;
/// Warnings returned per request; the rest are summarised in one more.
pub const MAX_WARNINGS: usize = 20;
/// Bound on a denial message, well inside what clients display.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// The workload in a request, ready for evaluation: `None` when the request
/// is not about a workload probity judges on its own.
///
/// # Errors
///
/// When the object is of a supported kind but unreadable.
pub fn workload_of<'a>(
    request: &Request,
    object: &'a Object,
    owners: &dyn Owners,
) -> Result<Option<&'a Workload>, String> {
    let w = match object {
        Ok(Classified::Workload(w)) => w,
        Ok(_) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    // Judged through its controller (a Deployment's ReplicaSet, a CronJob's
    // Job, a controller's Pod): reported once, there, when the controller
    // really stands for it. Ephemeral containers are in no owner's
    // template, so a Pod whose ephemeral containers change is judged
    // itself.
    if let Some(owner) = &w.controller
        && !is_ephemeral_update(request)
    {
        let namespace = w.namespace.as_deref().unwrap_or_default();
        let print = if w.kind == WorkloadKind::Pod {
            w.fingerprint()
        } else {
            None
        };
        if sent_by_its_controller(request, w.kind)
            || owners.owner_matches(namespace, &owner.kind, &owner.name, &owner.uid, print)
        {
            return Ok(None);
        }
    }
    Ok(Some(w))
}

/// Whether a workload's controller stands for it: the controller is known
/// (the operator's caches) with the UID the reference states and, for a
/// Pod, a pod template with the same containers (`pod_print`).
pub trait Owners: Send + Sync {
    /// See the trait.
    fn owner_matches(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
        uid: &str,
        pod_print: Option<u64>,
    ) -> bool;
}

/// No controller is known: every object is judged on its own.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoOwners;

impl Owners for NoOwners {
    fn owner_matches(&self, _: &str, _: &str, _: &str, _: &str, _: Option<u64>) -> bool {
        false
    }
}

/// The built-in controllers, as kube-controller-manager authenticates them
/// (one service account per controller, or itself). Nobody else can send
/// requests under these names, so what they create comes from a template
/// already judged.
fn sent_by_its_controller(request: &Request, kind: WorkloadKind) -> bool {
    let user = request.user_info.username.as_str();
    if user == "system:kube-controller-manager" {
        return true;
    }
    let Some(controller) = user.strip_prefix("system:serviceaccount:kube-system:") else {
        return false;
    };
    match kind {
        WorkloadKind::Pod => matches!(
            controller,
            "replicaset-controller"
                | "statefulset-controller"
                | "daemon-set-controller"
                | "job-controller"
                | "replication-controller"
        ),
        WorkloadKind::ReplicaSet => controller == "deployment-controller",
        WorkloadKind::Job => controller == "cronjob-controller",
        _ => false,
    }
}

/// An UPDATE of `pods/ephemeralcontainers` (`kubectl debug`): the object is
/// the whole Pod, and its new ephemeral containers pull images.
pub(crate) fn is_ephemeral_update(request: &Request) -> bool {
    request.sub_resource.as_deref() == Some("ephemeralcontainers")
}

/// Decides a validating request against `policies`; `namespace_labels` are
/// the labels of the request's namespace.
pub fn validate(
    request: &Request,
    policies: &[Policy],
    namespace_labels: &BTreeMap<String, String>,
    owners: &dyn Owners,
) -> Response {
    if !matches!(request.operation, Operation::Create | Operation::Update)
        || (request.sub_resource.is_some() && !is_ephemeral_update(request))
    {
        return Response::allow();
    }
    let Some(object) = &request.object else {
        return Response::allow();
    };
    let workload = match workload_of(request, object, owners) {
        Ok(Some(w)) => w,
        Ok(None) => return Response::allow(),
        Err(e) => return Response::deny(format!("probity cannot evaluate the object: {e}")),
    };
    let old = match (request.operation, &request.old_object) {
        (Operation::Update, Some(old)) => workload_of(request, old, owners).ok().flatten(),
        _ => None,
    };
    let ns = workload.namespace.clone().unwrap_or_default();
    let ns_map: BTreeMap<String, BTreeMap<String, String>> =
        [(ns, namespace_labels.clone())].into();

    let mut denials: Vec<String> = Vec::new();
    let mut warnings: BTreeSet<String> = BTreeSet::new();
    let mut exempt: BTreeSet<String> = BTreeSet::new();
    for policy in policies {
        if !policy.applies_to(workload, &ns_map) {
            continue;
        }
        let findings = evaluate(&policy.spec, workload);
        let old_findings = old.map(|o| evaluate(&policy.spec, o));
        for finding in &findings {
            if let Some(reason) = &finding.exempt {
                exempt.insert(format!("{}: {reason}", finding.rule.id));
                warnings.insert(warning(finding, "exempt"));
                continue;
            }
            let blocking = policy.spec.mode == Mode::Enforce
                && finding.severity == Severity::Error
                && match (&old_findings, policy.spec.admission.existing_violations) {
                    (Some(before), ExistingViolations::Warn) => {
                        introduced_or_kept(finding, before, workload, old)
                    }
                    _ => true,
                };
            if blocking {
                denials.push(denial_line(finding, &policy.name));
            } else {
                let tag = match (finding.severity, policy.spec.mode) {
                    (Severity::Warning, _) => "warning",
                    (_, Mode::Audit) => "audit",
                    (_, Mode::Enforce) => "existing",
                };
                warnings.insert(warning(finding, tag));
            }
        }
    }

    let mut response = if denials.is_empty() {
        Response::allow()
    } else {
        denials.sort();
        denials.dedup();
        Response::deny(denial_message(workload, &denials))
    };
    response.warnings = bounded_warnings(warnings);
    if !exempt.is_empty() {
        response.audit.insert(
            "exempt".to_owned(),
            exempt.into_iter().collect::<Vec<_>>().join("; "),
        );
    }
    response
}

/// Whether an UPDATE introduces `finding` or keeps it in a container it
/// changes.
fn introduced_or_kept(
    finding: &Finding,
    before: &[Finding],
    new: &Workload,
    old: Option<&Workload>,
) -> bool {
    let had_it = before.iter().any(|b| {
        b.exempt.is_none()
            && b.rule.id == finding.rule.id
            && b.container == finding.container
            && b.message == finding.message
    });
    if !had_it {
        return true;
    }
    let Some(old) = old else {
        return true;
    };
    // The container the finding is about, compared by name so that adding
    // a sidecar does not count as changing the others; every field of it
    // counts (its digest).
    let scope = |w: &Workload| -> Option<u64> {
        let list = list_of(&finding.pointer)?;
        let name = finding.container.as_deref()?;
        let containers = match list {
            "initContainers" => &w.pod.init_containers,
            "containers" => &w.pod.containers,
            _ => &w.pod.ephemeral_containers,
        };
        containers.iter().find(|c| c.name == name).map(|c| c.digest)
    };
    match (scope(new), scope(old)) {
        (Some(new), Some(old)) => new != old,
        // An exemption annotation: its value.
        _ if new.exemptions.iter().any(|(p, _)| *p == finding.pointer) => {
            let value = |w: &Workload| {
                w.exemptions
                    .iter()
                    .find(|(p, _)| *p == finding.pointer)
                    .map(|(_, v)| v.clone())
            };
            value(new) != value(old)
        }
        // An image volume: its image.
        _ => {
            let volume = |w: &Workload| {
                finding
                    .container
                    .as_deref()
                    .and_then(|c| c.strip_prefix("volume "))
                    .and_then(|name| w.image_of("volumes", name).map(str::to_owned))
            };
            volume(new) != volume(old)
        }
    }
}

/// The container list a pointer inside a container is in.
fn list_of(pointer: &str) -> Option<&'static str> {
    ["/initContainers/", "/containers/", "/ephemeralContainers/"]
        .into_iter()
        .find(|list| pointer.contains(list))
        .map(|list| list.trim_matches('/'))
}

fn denial_line(finding: &Finding, policy: &str) -> String {
    let container = finding
        .container
        .as_deref()
        .map(|c| format!("container {c}: "))
        .unwrap_or_default();
    format!(
        "{} [{}] {container}{} (fix: {}; policy {policy})",
        finding.rule.id, finding.rule.name, finding.message, finding.rule.help
    )
}

fn denial_message(workload: &Workload, lines: &[String]) -> String {
    let mut message = format!(
        "probity: {} {} violates {} rule{} in Enforce mode:",
        workload.kind.as_str(),
        workload.name,
        lines.len(),
        if lines.len() == 1 { "" } else { "s" },
    );
    for (i, line) in lines.iter().enumerate() {
        let more = format!("\n... and {} more", lines.len() - i);
        if message.len() + line.len() + 3 + more.len() > MAX_MESSAGE_BYTES {
            message.push_str(&more);
            break;
        }
        message.push_str("\n- ");
        message.push_str(line);
    }
    message
}

fn warning(finding: &Finding, tag: &str) -> String {
    let container = finding
        .container
        .as_deref()
        .map(|c| format!(" {c}"))
        .unwrap_or_default();
    truncate_chars(
        format!(
            "probity {tag}: {}{container}: {}",
            finding.rule.id, finding.message
        ),
        MAX_WARNING_CHARS,
    )
}

fn bounded_warnings(all: BTreeSet<String>) -> Vec<String> {
    let total = all.len();
    let mut out: Vec<String> = all.into_iter().take(MAX_WARNINGS).collect();
    if total > MAX_WARNINGS {
        out.push(format!(
            "probity: {} more findings not shown",
            total - MAX_WARNINGS
        ));
    }
    out
}

/// `s` cut to at most `max` characters, ending in `...` when cut.
pub(crate) fn truncate_chars(s: String, max: usize) -> String {
    if s.chars().count() <= max {
        return s;
    }
    let mut out: String = s.chars().take(max - 3).collect();
    out.push_str("...");
    out
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::admission::review::Gvk;
    use crate::policy::ReadinessPolicySpec;

    /// [`super::validate`] with no controller known.
    fn validate(
        request: &Request,
        policies: &[Policy],
        namespace_labels: &BTreeMap<String, String>,
    ) -> Response {
        super::validate(request, policies, namespace_labels, &NoOwners)
    }

    fn deployment(image: &str, replicas: i64) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "web", "image": image, "ports": [{"containerPort": 8080}],
                 "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}},
                 "livenessProbe": {"httpGet": {"path": "/livez", "port": 8080},
                                   "periodSeconds": 10, "failureThreshold": 6}},
            ]}}},
        })
    }

    fn request(op: Operation, object: Value, old: Option<Value>) -> Request {
        Request {
            uid: "u".to_owned(),
            kind: Gvk {
                group: "apps".to_owned(),
                version: "v1".to_owned(),
                kind: "Deployment".to_owned(),
            },
            sub_resource: None,
            name: "web".to_owned(),
            namespace: Some("shop".to_owned()),
            operation: op,
            object: Some(crate::admission::review::read_object(&object)),
            old_object: old.as_ref().map(crate::admission::review::read_object),
            dry_run: false,
            user_info: Default::default(),
        }
    }

    fn policy(mode: Mode) -> Policy {
        let spec = ReadinessPolicySpec {
            mode,
            ..ReadinessPolicySpec::default()
        };
        Policy {
            name: "ClusterReadinessPolicy/p".to_owned(),
            spec,
            namespace: None,
            namespace_selector: None,
            cluster: true,
        }
    }

    const PINNED: &str =
        "nginx:1.27@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn enforce_denies_listing_every_violation_with_its_fix() {
        let r = validate(
            &request(Operation::Create, deployment("nginx:latest", 1), None),
            &[policy(Mode::Enforce)],
            &BTreeMap::new(),
        );
        assert!(!r.allowed);
        let message = r.message.unwrap_or_default();
        assert!(
            message.contains("Deployment web violates 2 rules"),
            "{message}"
        );
        assert!(
            message.contains("- PRB001 [image-latest-tag] container web:"),
            "{message}"
        );
        assert!(message.contains("- PRB002 [image-not-pinned]"), "{message}");
        assert!(message.contains("fix: "), "{message}");
    }

    #[test]
    fn audit_allows_with_short_warnings() {
        let r = validate(
            &request(Operation::Create, deployment("nginx", 1), None),
            &[policy(Mode::Audit)],
            &BTreeMap::new(),
        );
        assert!(r.allowed);
        assert_eq!(r.warnings.len(), 2, "{:?}", r.warnings);
        assert!(
            r.warnings
                .iter()
                .all(|w| w.chars().count() <= MAX_WARNING_CHARS)
        );
        assert!(
            r.warnings[0].starts_with("probity audit: PRB001 web:"),
            "{:?}",
            r.warnings
        );
    }

    #[test]
    fn compliant_workloads_pass() {
        let r = validate(
            &request(Operation::Create, deployment(PINNED, 1), None),
            &[policy(Mode::Enforce)],
            &BTreeMap::new(),
        );
        assert_eq!(r, Response::allow());
    }

    #[test]
    fn updates_block_only_what_they_introduce_or_keep() {
        let p = [policy(Mode::Enforce)];
        let ns = BTreeMap::new();
        // Scaling a workload that already uses :latest: a warning.
        let scale = request(
            Operation::Update,
            deployment("nginx:latest", 3),
            Some(deployment("nginx:latest", 1)),
        );
        let r = validate(&scale, &p, &ns);
        assert!(r.allowed, "{r:?}");
        assert!(
            r.warnings
                .iter()
                .any(|w| w.starts_with("probity existing: PRB001")),
            "{r:?}"
        );
        // Changing the image to another unpinned tag keeps PRB002 in a
        // changed container: denied.
        let retag = request(
            Operation::Update,
            deployment("nginx:1.27", 1),
            Some(deployment("nginx:latest", 1)),
        );
        let r = validate(&retag, &p, &ns);
        assert!(!r.allowed);
        assert!(r.message.unwrap_or_default().contains("PRB002"));
        // Introducing :latest on a compliant workload: denied.
        let regress = request(
            Operation::Update,
            deployment("nginx:latest", 1),
            Some(deployment(PINNED, 1)),
        );
        assert!(!validate(&regress, &p, &ns).allowed);
        // The policy can make existing violations block too.
        let mut strict = policy(Mode::Enforce);
        strict.spec.admission.existing_violations = ExistingViolations::Deny;
        assert!(!validate(&scale, &[strict], &ns).allowed);
    }

    #[test]
    fn exemptions_are_recorded_not_denied() {
        let mut d = deployment("nginx:1.27", 1);
        d["metadata"]["annotations"] =
            json!({"probity.dev/exempt": "PRB002: pinned by the release pipeline"});
        let mut allowing = policy(Mode::Enforce);
        allowing.spec.exemptions.allowed_rules = Some(vec!["PRB002".to_owned()]);
        let r = validate(
            &request(Operation::Create, d.clone(), None),
            &[allowing],
            &BTreeMap::new(),
        );
        assert!(r.allowed, "{r:?}");
        assert_eq!(
            r.audit.get("exempt").map(String::as_str),
            Some("PRB002: pinned by the release pipeline")
        );
        assert!(
            r.warnings
                .iter()
                .any(|w| w.starts_with("probity exempt: PRB002"))
        );
        let by_default = validate(
            &request(Operation::Create, d, None),
            &[policy(Mode::Enforce)],
            &BTreeMap::new(),
        );
        assert!(
            !by_default.allowed,
            "image rules are not exemptible unless the policy lists them"
        );
        assert!(
            by_default.message.unwrap_or_default().contains("PRB900"),
            "the refused exemption is reported"
        );
        let r = validate(
            &request(
                Operation::Create,
                {
                    let mut d = deployment(PINNED, 1);
                    d["metadata"]["annotations"] =
                        json!({"probity.dev/exempt": "PRB002: pinned by the release pipeline"});
                    d
                },
                None,
            ),
            &[policy(Mode::Enforce)],
            &BTreeMap::new(),
        );
        assert!(
            !r.allowed,
            "a refused exemption is a violation even on a compliant workload"
        );
        let mut d = deployment(PINNED, 1);
        d["metadata"]["annotations"] = json!({"probity.dev/exempt": "PRB105: legacy path"});
        let r = validate(
            &request(Operation::Create, d, None),
            &[policy(Mode::Enforce)],
            &BTreeMap::new(),
        );
        assert!(r.allowed, "a probe rule may be exempted by default: {r:?}");
    }

    /// Knows one controller: Deployment `web` with UID `1`.
    struct OneOwner;

    impl Owners for OneOwner {
        fn owner_matches(
            &self,
            _: &str,
            kind: &str,
            name: &str,
            uid: &str,
            _: Option<u64>,
        ) -> bool {
            (kind, name, uid) == ("Deployment", "web", "1")
        }
    }

    #[test]
    fn controlled_objects_subresources_and_deletes_pass() {
        let mut rs = deployment("nginx:latest", 1);
        rs["kind"] = json!("ReplicaSet");
        rs["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "1", "controller": true}]);
        let p = [policy(Mode::Enforce)];
        let ns = BTreeMap::new();
        let create = request(Operation::Create, rs.clone(), None);
        assert!(
            super::validate(&create, &p, &ns, &OneOwner).allowed,
            "a known owner stands for it"
        );
        assert!(
            !validate(&create, &p, &ns).allowed,
            "an owner nobody knows does not"
        );
        let mut other_uid = rs.clone();
        other_uid["metadata"]["ownerReferences"][0]["uid"] = json!("2");
        let forged = request(Operation::Create, other_uid, None);
        assert!(
            !super::validate(&forged, &p, &ns, &OneOwner).allowed,
            "nor one with another UID"
        );
        let mut by_controller = request(Operation::Create, rs, None);
        by_controller.user_info.username =
            "system:serviceaccount:kube-system:deployment-controller".to_owned();
        assert!(
            validate(&by_controller, &p, &ns).allowed,
            "what the controller creates passes"
        );
        let mut scale = request(Operation::Update, deployment("nginx:latest", 2), None);
        scale.sub_resource = Some("scale".to_owned());
        assert!(validate(&scale, &p, &ns).allowed);
        let delete = request(Operation::Delete, deployment("nginx:latest", 2), None);
        assert!(validate(&delete, &p, &ns).allowed);
    }

    fn pod(image: &str, owner: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "shop", "ownerReferences": [owner]},
            "spec": {"containers": [{"name": "app", "image": image}]},
        })
    }

    fn pod_request(op: Operation, object: Value, old: Option<Value>) -> Request {
        let mut r = request(op, object, old);
        r.kind = Gvk {
            group: String::new(),
            version: "v1".to_owned(),
            kind: "Pod".to_owned(),
        };
        r
    }

    #[test]
    fn a_fake_controller_does_not_hide_a_pod() {
        let p = [policy(Mode::Enforce)];
        let ns = BTreeMap::new();
        for owner in [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "1", "controller": true}),
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "name": "c", "uid": "1", "controller": true}),
            json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "c", "uid": "1", "controller": true}),
        ] {
            let r = validate(
                &pod_request(Operation::Create, pod("nginx:latest", owner.clone()), None),
                &p,
                &ns,
            );
            assert!(!r.allowed, "a Pod under {owner} is judged as a Pod");
        }
    }

    #[test]
    fn new_ephemeral_containers_are_judged_whoever_owns_the_pod() {
        let p = [policy(Mode::Enforce)];
        let ns = BTreeMap::new();
        let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-1", "uid": "1", "controller": true});
        let before = pod(PINNED, rs.clone());
        let mut debugged = before.clone();
        debugged["spec"]["ephemeralContainers"] =
            json!([{"name": "debug", "image": "busybox:latest"}]);
        let mut update = pod_request(Operation::Update, debugged.clone(), Some(before.clone()));
        update.sub_resource = Some("ephemeralcontainers".to_owned());
        let r = validate(&update, &p, &ns);
        assert!(!r.allowed, "{r:?}");
        let message = r.message.unwrap_or_default();
        assert!(
            message.contains("PRB001") && message.contains("debug"),
            "{message}"
        );
        assert!(
            !message.contains("container app"),
            "what the update did not introduce is not denied: {message}"
        );

        let mut pinned = before.clone();
        pinned["spec"]["ephemeralContainers"] = json!([{"name": "debug", "image": PINNED}]);
        let mut update = pod_request(Operation::Update, pinned, Some(before));
        update.sub_resource = Some("ephemeralcontainers".to_owned());
        let r = validate(&update, &p, &ns);
        assert!(r.allowed, "a pinned debug image passes: {r:?}");
    }

    #[test]
    fn namespace_selectors_scope_cluster_policies() {
        let mut p = policy(Mode::Enforce);
        p.namespace_selector = serde_json::from_value(json!({"matchLabels": {"team": "a"}})).ok();
        let req = request(Operation::Create, deployment("nginx:latest", 1), None);
        assert!(validate(&req, std::slice::from_ref(&p), &BTreeMap::new()).allowed);
        let labels = [("team".to_owned(), "a".to_owned())].into();
        assert!(!validate(&req, &[p], &labels).allowed);
    }

    #[test]
    fn long_output_is_bounded() {
        let containers: Vec<Value> = (0..300)
            .map(|i| json!({"name": format!("c{i}"), "image": "nginx"}))
            .collect();
        let d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "big"},
            "spec": {"template": {"spec": {"containers": containers}}},
        });
        let enforce = validate(
            &request(Operation::Create, d.clone(), None),
            &[policy(Mode::Enforce)],
            &BTreeMap::new(),
        );
        let message = enforce.message.unwrap_or_default();
        assert!(message.len() <= MAX_MESSAGE_BYTES, "{}", message.len());
        assert!(message.ends_with("more"), "{message}");
        let audit = validate(
            &request(Operation::Create, d, None),
            &[policy(Mode::Audit)],
            &BTreeMap::new(),
        );
        assert_eq!(audit.warnings.len(), MAX_WARNINGS + 1);
    }
}
