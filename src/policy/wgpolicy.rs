//! Findings as the Kubernetes Policy working group's `PolicyReport`
//! (`wgpolicyk8s.io/v1alpha2`), the shape Policy Reporter and other report
//! tools read: one report per policy and namespace. The summary counts are
//! exact; the results are capped (most severe first) and the report says
//! how many were left out, so a report never grows with the cluster.

use serde_json::{Value, json};

use super::rules::{Finding, RuleMeta};
use super::spec::Severity;

/// The reports' API version.
pub const API_VERSION: &str = "wgpolicyk8s.io/v1alpha2";

/// The annotation counting the results left out of a capped report.
pub const OMITTED_ANNOTATION: &str = "probity.dev/results-omitted";

/// The object a result is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Subject {
    /// `apps/v1`.
    pub api_version: String,
    /// `Deployment`.
    pub kind: String,
    /// Its namespace, when known.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Its UID, when known.
    pub uid: Option<String>,
}

/// One result: a finding about a subject.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    /// What it is about.
    pub subject: Subject,
    /// The rule.
    pub rule: &'static RuleMeta,
    /// `fail`, `warn` or `skip` ([`result_of`]).
    pub result: &'static str,
    /// What is wrong.
    pub message: &'a str,
    /// The container, when the finding is about one.
    pub container: Option<&'a str>,
    /// JSON pointer of the field, when known.
    pub pointer: Option<&'a str>,
    /// The exemption's reason, for a skipped result.
    pub exemption: Option<&'a str>,
}

impl<'a> Item<'a> {
    /// The result `finding` is, about `subject`.
    pub fn of(subject: Subject, finding: &'a Finding) -> Self {
        Self {
            subject,
            rule: finding.rule,
            result: result_of(finding),
            message: &finding.message,
            container: finding.container.as_deref(),
            pointer: Some(&finding.pointer),
            exemption: finding.exempt.as_deref(),
        }
    }
}

/// What one report is about, and how many results it may list.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    /// The report's name.
    pub name: &'a str,
    /// Its namespace (`None`: decided when it is applied).
    pub namespace: Option<&'a str>,
    /// The policy's name as results name it (`ReadinessPolicy/shop/web`).
    pub policy: &'a str,
    /// Matched workloads with no fail or warn result.
    pub pass: usize,
    /// Most results listed.
    pub max_results: usize,
}

/// The result a finding is: `skip` when exempt, `warn` for a warning,
/// else `fail`.
pub fn result_of(finding: &Finding) -> &'static str {
    match (&finding.exempt, finding.severity) {
        (Some(_), _) => "skip",
        (None, Severity::Warning) => "warn",
        (None, _) => "fail",
    }
}

fn rank(result: &str) -> u8 {
    match result {
        "fail" => 0,
        "warn" => 1,
        _ => 2,
    }
}

fn category(id: &str) -> &'static str {
    match id.get(..4) {
        Some("PRB0") => "Images",
        Some("PRB1") => "Probes",
        Some("PRB3") => "Runtime",
        _ => "Exemptions",
    }
}

/// The `PolicyReport` of `items` under `scope`; `timestamp` is the
/// results' time in seconds since the epoch.
pub fn report(scope: &Scope<'_>, items: &[Item<'_>], timestamp: i64) -> Value {
    let mut ordered: Vec<&Item<'_>> = items.iter().collect();
    ordered.sort_by(|a, b| {
        (
            rank(a.result),
            &a.subject,
            a.rule.id,
            a.pointer,
            a.container,
        )
            .cmp(&(
                rank(b.result),
                &b.subject,
                b.rule.id,
                b.pointer,
                b.container,
            ))
    });
    let mut summary = json!({"pass": scope.pass, "fail": 0, "warn": 0, "error": 0, "skip": 0});
    for item in &ordered {
        summary[item.result] = json!(summary[item.result].as_u64().unwrap_or(0) + 1);
    }
    let results: Vec<Value> = ordered
        .iter()
        .take(scope.max_results)
        .map(|item| {
            let subject = &item.subject;
            let mut resource = json!({
                "apiVersion": subject.api_version, "kind": subject.kind, "name": subject.name,
            });
            if let Some(ns) = &subject.namespace {
                resource["namespace"] = json!(ns);
            }
            if let Some(uid) = &subject.uid {
                resource["uid"] = json!(uid);
            }
            let mut properties = serde_json::Map::new();
            for (key, value) in [
                ("pointer", item.pointer),
                ("container", item.container),
                ("exemption", item.exemption),
            ] {
                if let Some(value) = value {
                    properties.insert(key.to_owned(), json!(value));
                }
            }
            json!({
                "source": "probity",
                "policy": scope.policy,
                "rule": item.rule.id,
                "category": category(item.rule.id),
                "result": item.result,
                "severity": if item.result == "fail" { "high" } else { "medium" },
                "scored": true,
                "message": item.message,
                "resources": [resource],
                "properties": properties,
                "timestamp": {"seconds": timestamp, "nanos": 0},
            })
        })
        .collect();
    let omitted = ordered.len().saturating_sub(scope.max_results);
    let mut metadata = json!({
        "name": scope.name,
        "labels": {"app.kubernetes.io/managed-by": "probity"},
        "annotations": {OMITTED_ANNOTATION: omitted.to_string()},
    });
    if let Some(ns) = scope.namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": "PolicyReport",
        "metadata": metadata,
        "summary": summary,
        "results": results,
    })
}

/// A DNS-1123 name from `text`: lowercase letters, digits and `-`, at
/// most 253 characters, starting and ending with a letter or digit.
pub fn object_name(text: &str) -> String {
    let mut name: String = text
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while name.contains("--") {
        name = name.replace("--", "-");
    }
    let name: String = name.trim_matches('-').chars().take(253).collect();
    name.trim_end_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rules;

    fn finding(id: &str, exempt: bool, severity: Severity) -> Finding {
        Finding {
            rule: rules::find(id).expect("rule"),
            container: Some("app".to_owned()),
            message: format!("{id} message"),
            pointer: "/spec/template/spec/containers/0/image".to_owned(),
            exempt: exempt.then(|| "reason".to_owned()),
            severity,
        }
    }

    fn subject(name: &str) -> Subject {
        Subject {
            api_version: "apps/v1".to_owned(),
            kind: "Deployment".to_owned(),
            namespace: Some("shop".to_owned()),
            name: name.to_owned(),
            uid: Some(format!("uid-{name}")),
        }
    }

    #[test]
    fn summaries_are_exact_and_results_capped_most_severe_first() {
        let skip = finding("PRB104", true, Severity::Error);
        let warn = finding("PRB108", false, Severity::Warning);
        let fail = finding("PRB001", false, Severity::Error);
        let findings = vec![
            Item::of(subject("a"), &skip),
            Item::of(subject("b"), &warn),
            Item::of(subject("c"), &fail),
            Item::of(subject("d"), &fail),
        ];
        let scope = Scope {
            name: "probity-rpol-web",
            namespace: Some("shop"),
            policy: "ReadinessPolicy/shop/web",
            pass: 7,
            max_results: 2,
        };
        let report = report(&scope, &findings, 1_765_000_000);
        assert_eq!(
            report["summary"],
            json!({"pass": 7, "fail": 2, "warn": 1, "error": 0, "skip": 1})
        );
        let results = report["results"].as_array().expect("results");
        assert_eq!(results.len(), 2);
        assert_eq!(results[0]["result"], "fail");
        assert_eq!(results[0]["resources"][0]["name"], "c");
        assert_eq!(results[0]["resources"][0]["uid"], "uid-c");
        assert_eq!(results[0]["rule"], "PRB001");
        assert_eq!(results[0]["category"], "Images");
        assert_eq!(results[0]["timestamp"]["seconds"], 1_765_000_000);
        assert_eq!(report["metadata"]["annotations"][OMITTED_ANNOTATION], "2");
        assert_eq!(report["metadata"]["namespace"], "shop");
        assert_eq!(report["apiVersion"], API_VERSION);
    }

    #[test]
    fn names_are_dns_labels() {
        assert_eq!(
            object_name("probity-ReadinessPolicy/shop/only_web"),
            "probity-readinesspolicy-shop-only-web"
        );
        assert_eq!(object_name("--a..b--"), "a-b");
        assert_eq!(object_name(&"x".repeat(400)).len(), 253);
    }
}
