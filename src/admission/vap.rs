//! The ValidatingAdmissionPolicy backstop: each policy's static rules
//! (no `:latest`, digest present, registry allowed, required probes
//! present) compiled to CEL, which the API server evaluates in-process. With
//! it the webhooks can fail open (`failurePolicy: Ignore`): a webhook
//! outage never blocks the cluster, and these rules still hold.
//!
//! What CEL does not check (the backstop is deliberately narrower than the
//! webhook): probe paths, timeouts and windows (PRB104-PRB109) and
//! malformed references (PRB004). On UPDATE it denies only violations the
//! update introduces (unless `admission.existingViolations: Deny`), so it
//! never blocks an edit the webhook would admit. Exemption annotations are
//! parsed as the engine parses them, and honoured only for the rules the
//! policy lets annotations exempt.

use serde_json::{Value, json};

use crate::policy::Policy;
use crate::policy::{ExistingViolations, Mode, Profile, Severity, WorkloadKind, rules};

/// Label on every generated object.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "probity-operator");
/// Label naming the policy an object was generated from.
pub const POLICY_LABEL: &str = "probity.dev/policy";

/// True unless the object names, as its controller, an owner of a kind and
/// group that creates objects of its kind (the engine's
/// `Workload::controller`): Pods under a ReplicaSet, StatefulSet,
/// DaemonSet, Job or ReplicationController; ReplicaSets under a Deployment;
/// Jobs under a CronJob. Ephemeral containers are never in an owner's
/// template, so adding one is judged whoever owns the Pod.
const NOT_CONTROLLED: &str = "(has(request.subResource) && request.subResource == 'ephemeralcontainers') || \
    !has(object.metadata.ownerReferences) || \
    !object.metadata.ownerReferences.exists(o, has(o.controller) && o.controller && (\
    (object.kind == 'Pod' && ((o.apiVersion.startsWith('apps/') && o.kind in ['ReplicaSet', 'StatefulSet', 'DaemonSet']) \
    || (o.apiVersion.startsWith('batch/') && o.kind == 'Job') || (o.apiVersion == 'v1' && o.kind == 'ReplicationController'))) \
    || (object.kind == 'ReplicaSet' && o.apiVersion.startsWith('apps/') && o.kind == 'Deployment') \
    || (object.kind == 'Job' && o.apiVersion.startsWith('batch/') && o.kind == 'CronJob')))";

/// Every image a pod spec (`{spec}`) pulls: app, init and ephemeral
/// containers, and image volumes.
const IMAGES: &str = "{spec}.containers.map(c, c.image) \
    + (has({spec}.initContainers) ? {spec}.initContainers.map(c, c.image) : []) \
    + (has({spec}.ephemeralContainers) ? {spec}.ephemeralContainers.map(c, c.image) : []) \
    + (has({spec}.volumes) ? {spec}.volumes.filter(v, has(v.image) && has(v.image.reference)).map(v, v.image.reference) : [])";

/// A CEL string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A regular expression matching `s` literally.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The name of a generated object for `policy`: a DNS subdomain, unique per
/// policy (namespaces hold no dots), at most 253 characters.
pub fn object_name(policy: &Policy) -> String {
    let raw = match (&policy.namespace, policy.cluster) {
        (_, true) => format!(
            "probity-crpol.{}",
            policy.name.trim_start_matches("ClusterReadinessPolicy/")
        ),
        (Some(ns), false) => format!(
            "probity-rpol.{ns}.{}",
            policy.name.rsplit('/').next().unwrap_or_default()
        ),
        (None, false) => format!(
            "probity-rpol.{}",
            policy.name.rsplit('/').next().unwrap_or_default()
        ),
    };
    raw.chars().take(253).collect()
}

fn resource_rules(kinds: &[WorkloadKind]) -> Value {
    let all = WorkloadKind::ALL;
    let kinds: Vec<WorkloadKind> = if kinds.is_empty() {
        all.to_vec()
    } else {
        kinds.to_vec()
    };
    let mut rules = Vec::new();
    for (group, members) in [
        (
            "apps",
            &[
                WorkloadKind::Deployment,
                WorkloadKind::StatefulSet,
                WorkloadKind::DaemonSet,
                WorkloadKind::ReplicaSet,
            ][..],
        ),
        ("batch", &[WorkloadKind::Job, WorkloadKind::CronJob][..]),
        (
            "",
            &[WorkloadKind::Pod, WorkloadKind::ReplicationController][..],
        ),
    ] {
        let mut resources: Vec<String> = members
            .iter()
            .filter(|k| kinds.contains(k))
            .map(|k| format!("{}s", k.as_str().to_ascii_lowercase()))
            .collect();
        // Debug containers are added through this subresource of a Pod.
        if kinds.contains(&WorkloadKind::Pod) && group.is_empty() {
            resources.push("pods/ephemeralcontainers".to_owned());
        }
        if !resources.is_empty() {
            rules.push(json!({
                "apiGroups": [group], "apiVersions": ["v1"],
                "operations": ["CREATE", "UPDATE"], "resources": resources,
            }));
        }
    }
    Value::Array(rules)
}

/// How an annotation may spell the rule `id`: its id or its name, in any
/// case (the engine's `rules::find`), lowercased.
fn spellings(id: &str) -> Vec<String> {
    rules::ALL
        .iter()
        .filter(|r| r.id == id)
        .flat_map(|r| [r.id.to_ascii_lowercase(), r.name.to_owned()])
        .collect()
}

/// A CEL list literal of strings.
fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| lit(i)).collect();
    format!("[{}]", quoted.join(", "))
}

/// CEL that is true when an exemption annotation exempts rule `id`, parsed
/// as the engine parses it (PRB900): clauses split on `;`, ids before the
/// first `:` split on `,` and trimmed, a reason after it. A clause counts
/// only with a reason and when every id in it is one the policy lets
/// annotations exempt; false when the policy does not allow `id` at all.
fn exempts(policy: &Policy, id: &str) -> String {
    let allowed: Vec<String> = rules::ALL
        .iter()
        .filter(|r| r.id != "PRB900" && policy.spec.exemptions.allows(r.id))
        .flat_map(|r| spellings(r.id))
        .collect();
    if !allowed.iter().any(|a| a.eq_ignore_ascii_case(id)) {
        return "false".to_owned();
    }
    let ids = "c.trim().substring(0, c.trim().indexOf(':')).split(',')";
    format!(
        "variables.exemptClauses.exists(c, c.trim().indexOf(':') > 0 \
         && c.trim().substring(c.trim().indexOf(':') + 1).trim() != '' \
         && {ids}.all(i, i.trim() == '' || i.trim().lowerAscii() in {allowed}) \
         && {ids}.exists(i, i.trim().lowerAscii() in {mine}))",
        allowed = list(&allowed),
        mine = list(&spellings(id)),
    )
}

/// One validation. `body` is written against `{images}` (every image the
/// pod pulls, as `i`: init, app and ephemeral containers, image volumes)
/// and `{pod_containers}` (app containers); it must hold for the object
/// unless exempt. With `lenient`,
/// an UPDATE of an object that already broke the rule passes: the backstop
/// only stops what an update introduces.
fn rule(policy: &Policy, id: &str, body: &str, message: &str, lenient: bool) -> Value {
    let on = |containers: &str, pod_containers: &str| {
        body.replace("{images}", containers)
            .replace("{pod_containers}", pod_containers)
    };
    let mut expression = format!(
        "{} || {}",
        exempts(policy, id),
        on("variables.images", "variables.podSpec.containers")
    );
    if lenient {
        expression.push_str(&format!(
            " || !({})",
            on("variables.oldImages", "variables.oldPodContainers")
        ));
    }
    json!({
        "expression": expression,
        "message": format!("{id}: {message} (probity backstop)"),
        "reason": "Forbidden",
    })
}

/// The CEL validations of `policy`'s static rules.
pub fn validations(policy: &Policy) -> Vec<Value> {
    let spec = &policy.spec;
    let lenient = spec.admission.existing_violations == ExistingViolations::Warn;
    let mut out = Vec::new();
    let tagged = "i.matches('^[^@]*:[^/@]+(@.*)?$')";
    let latest = "i.matches('^[^@]*:latest(@.*)?$')";
    if spec.images.forbid_latest {
        out.push(rule(
            policy,
            "PRB001",
            &format!("{{images}}.all(i, !{latest} && ({tagged} || i.contains('@')))"),
            "images must name a tag other than latest, or a digest",
            lenient,
        ));
    }
    if spec.images.require_digest {
        out.push(rule(
            policy,
            "PRB002",
            "{images}.all(i, i.matches('@sha(256:[a-f0-9]{64}|384:[a-f0-9]{96}|512:[a-f0-9]{128})$'))",
            "images must be pinned by digest (image@sha256:...)",
            lenient,
        ));
    }
    if !spec.images.allowed_registries.is_empty() {
        let alternatives: Vec<String> = spec
            .images
            .allowed_registries
            .iter()
            .map(|r| regex_escape(r.trim_end_matches('/')))
            .collect();
        let pattern = format!("^({})([/:@]|$)", alternatives.join("|"));
        // References without a registry host are docker.io's, and
        // single-name ones are under library/.
        let normalised = "(i.matches('^[^/]*[.:][^/]*/') || i.startsWith('localhost/') \
             ? i \
             : 'docker.io/' + (i.split('@')[0].split(':')[0].contains('/') ? '' : 'library/') + i)";
        out.push(rule(
            policy,
            "PRB003",
            &format!("{{images}}.all(i, {normalised}.matches({}))", lit(&pattern)),
            &format!(
                "images must come from an allowed registry ({})",
                spec.images.allowed_registries.join(", ")
            ),
            lenient,
        ));
    }
    let (readiness, liveness, startup) = match spec.profile {
        Profile::Server => (
            spec.probes.readiness.required,
            spec.probes.liveness.required,
            spec.probes.startup.required,
        ),
        Profile::Consumer => (false, true, true),
    };
    for (required, id, field) in [
        (readiness, "PRB101", "readinessProbe"),
        (liveness, "PRB102", "livenessProbe"),
        (startup, "PRB103", "startupProbe"),
    ] {
        if required {
            out.push(rule(
                policy,
                id,
                &format!("(!variables.longRunning || {{pod_containers}}.all(c, has(c.{field})))"),
                &format!("every container needs a {field}"),
                lenient,
            ));
        }
    }
    // Warnings are never denied, and rules turned off are not judged.
    out.retain(|v| {
        let id = v["message"].as_str().and_then(|m| m.split(':').next());
        id.is_none_or(|id| spec.severity_of(id) == Severity::Error)
    });
    out
}

/// The ValidatingAdmissionPolicy and its binding for `policy`;
/// `excluded_namespaces` are never matched (kube-system, probity's own).
/// Labelled with the policy only: the operator adds [`MANAGED_BY`] to the
/// ones it applies (and sweeps only those), so objects applied from
/// `probity vap` output by a pipeline are never its to delete.
pub fn backstop(policy: &Policy, excluded_namespaces: &[String]) -> (Value, Value) {
    let name = object_name(policy);
    let labels = json!({POLICY_LABEL: policy_label(policy)});
    let variables = json!([
        {"name": "podSpec", "expression":
            "object.kind == 'Pod' ? object.spec : (object.kind == 'CronJob' ? object.spec.jobTemplate.spec.template.spec : object.spec.template.spec)"},
        {"name": "images", "expression": IMAGES.replace("{spec}", "variables.podSpec")},
        {"name": "longRunning", "expression": "!(object.kind in ['Job', 'CronJob'])"},
        {"name": "oldPodSpec", "expression":
            "oldObject == null ? null : (oldObject.kind == 'Pod' ? oldObject.spec : (oldObject.kind == 'CronJob' ? oldObject.spec.jobTemplate.spec.template.spec : oldObject.spec.template.spec))"},
        {"name": "oldPodContainers", "expression":
            "oldObject == null ? [] : variables.oldPodSpec.containers"},
        {"name": "oldImages", "expression":
            format!("oldObject == null ? [] : {}", IMAGES.replace("{spec}", "variables.oldPodSpec"))},
        {"name": "exemptClauses", "expression":
            "(has(object.metadata.annotations) && 'probity.dev/exempt' in object.metadata.annotations ? object.metadata.annotations['probity.dev/exempt'].split(';') : []) + (object.kind != 'Pod' && object.kind != 'CronJob' && has(object.spec.template.metadata) && has(object.spec.template.metadata.annotations) && 'probity.dev/exempt' in object.spec.template.metadata.annotations ? object.spec.template.metadata.annotations['probity.dev/exempt'].split(';') : [])"},
    ]);
    let vap = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": resource_rules(&policy.spec.match_.kinds),
                "matchPolicy": "Equivalent",
            },
            // Objects a known controller owns are judged through their
            // owner. CEL cannot look the owner up, so a reference of the
            // right kind and group is trusted here; the webhook and the
            // audit check that it exists with that UID.
            "matchConditions": [{
                "name": "not-controlled",
                "expression": NOT_CONTROLLED,
            }],
            "variables": variables,
            "validations": validations(policy),
        },
    });
    let mut expressions = vec![json!({
        "key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": excluded_namespaces,
    })];
    let mut namespace_selector = json!({});
    match (
        &policy.namespace,
        policy.cluster,
        &policy.namespace_selector,
    ) {
        (Some(ns), false, _) => expressions.push(json!({
            "key": "kubernetes.io/metadata.name", "operator": "In", "values": [ns],
        })),
        (_, true, Some(selector)) => {
            namespace_selector = serde_json::to_value(selector).unwrap_or_default();
        }
        _ => {}
    }
    let existing = namespace_selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    expressions.extend(existing);
    namespace_selector["matchExpressions"] = Value::Array(expressions);
    let mut match_resources = json!({"namespaceSelector": namespace_selector});
    if let Some(selector) = &policy.spec.match_.selector {
        match_resources["objectSelector"] = serde_json::to_value(selector).unwrap_or_default();
    }
    let actions = match policy.spec.mode {
        Mode::Enforce => json!(["Deny"]),
        // Audit: the webhook already warns; the backstop only records.
        Mode::Audit => json!(["Audit"]),
    };
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "policyName": name,
            "validationActions": actions,
            "matchResources": match_resources,
        },
    });
    (vap, binding)
}

/// The label value naming `policy`: label values are at most 63
/// characters of `[A-Za-z0-9._-]`.
pub fn policy_label(policy: &Policy) -> String {
    let raw: String = object_name(policy)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '.'
            }
        })
        .collect();
    let trimmed: String = raw.chars().take(63).collect();
    trimmed.trim_end_matches(['.', '_', '-']).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ReadinessPolicySpec;

    fn policy(spec: ReadinessPolicySpec) -> Policy {
        Policy {
            name: "ClusterReadinessPolicy/strict".to_owned(),
            spec,
            namespace: None,
            namespace_selector: None,
            cluster: true,
        }
    }

    #[test]
    fn default_policy_compiles_image_and_probe_rules() {
        let p = policy(ReadinessPolicySpec::default());
        let ids: Vec<String> = validations(&p)
            .iter()
            .map(|v| v["message"].as_str().unwrap_or_default()[..6].to_owned())
            .collect();
        assert_eq!(ids, ["PRB001", "PRB002", "PRB101", "PRB102"]);
        let (vap, binding) = backstop(&p, &["kube-system".to_owned()]);
        assert_eq!(vap["metadata"]["name"], "probity-crpol.strict");
        assert!(
            vap["metadata"]["labels"][MANAGED_BY.0].is_null()
                && binding["metadata"]["labels"][MANAGED_BY.0].is_null(),
            "not marked as the operator's: {vap}"
        );
        assert_eq!(binding["spec"]["policyName"], "probity-crpol.strict");
        assert_eq!(binding["spec"]["validationActions"], json!(["Audit"]));
        assert_eq!(
            binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(["kube-system"])
        );
    }

    #[test]
    fn registries_become_an_anchored_pattern() {
        let mut spec = ReadinessPolicySpec::default();
        spec.images.allowed_registries = vec![
            "registry.internal:5000".to_owned(),
            "ghcr.io/acme".to_owned(),
        ];
        let rules = validations(&policy(spec));
        let prb003 = rules
            .iter()
            .find(|r| {
                r["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("PRB003"))
            })
            .map(|r| r["expression"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        assert!(
            prb003.contains(r"'^(registry\\.internal:5000|ghcr\\.io/acme)([/:@]|$)'"),
            "{prb003}"
        );
    }

    #[test]
    fn consumers_need_liveness_and_startup_not_readiness() {
        let spec = ReadinessPolicySpec {
            profile: Profile::Consumer,
            ..ReadinessPolicySpec::default()
        };
        let messages: Vec<String> = validations(&policy(spec))
            .iter()
            .map(|v| v["message"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert!(messages.iter().any(|m| m.starts_with("PRB102")));
        assert!(messages.iter().any(|m| m.starts_with("PRB103")));
        assert!(!messages.iter().any(|m| m.starts_with("PRB101")));
    }

    #[test]
    fn namespaced_policies_bind_to_their_namespace() {
        let p = Policy {
            name: "ReadinessPolicy/shop/web".to_owned(),
            spec: ReadinessPolicySpec {
                mode: Mode::Enforce,
                ..ReadinessPolicySpec::default()
            },
            namespace: Some("shop".to_owned()),
            namespace_selector: None,
            cluster: false,
        };
        let (_, binding) = backstop(&p, &[]);
        assert_eq!(binding["metadata"]["name"], "probity-rpol.shop.web");
        assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
        assert_eq!(
            binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][1]["values"],
            json!(["shop"])
        );
    }
}
