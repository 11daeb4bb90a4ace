//! A policy's status, built from an evaluation as a pure function.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::evaluate::Outcome;
use super::tags::TagSnapshot;
use crate::controller::policy_object::PolicyObject;
use crate::policy::status::{MAX_LISTED_VIOLATIONS, PolicyStatus, ResolvedImage, ViolationRef};

pub(super) fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// The status of `obj` after `outcome`, at `now`: a condition whose status
/// stays keeps its transition time.
pub(super) fn build_status<P: PolicyObject>(
    obj: &P,
    outcome: &Outcome,
    invalid: Option<String>,
    tags: Option<&TagSnapshot>,
    now: &Time,
) -> PolicyStatus {
    let generation = obj.meta().generation;
    let mut violations: Vec<ViolationRef> = outcome
        .violations
        .iter()
        .flat_map(|(w, found)| {
            found.iter().map(move |f| ViolationRef {
                namespace: w.key.namespace.clone(),
                kind: w.key.kind.as_str().to_owned(),
                name: w.key.name.clone(),
                container: f.container.clone(),
                rule: f.rule.id.to_owned(),
                message: f.message.clone(),
            })
        })
        .collect();
    let total = violations.len();
    if total > MAX_LISTED_VIOLATIONS {
        violations.select_nth_unstable(MAX_LISTED_VIOLATIONS);
        violations.truncate(MAX_LISTED_VIOLATIONS);
    }
    violations.sort();
    let conditions = match &invalid {
        Some(why) => vec![condition(
            "Ready",
            false,
            "InvalidSelector",
            why.clone(),
            generation,
            now,
        )],
        None => vec![
            condition(
                "Ready",
                true,
                "Evaluated",
                format!("{} workloads matched", outcome.matched),
                generation,
                now,
            ),
            if outcome.violating == 0 {
                condition(
                    "Compliant",
                    true,
                    "NoViolations",
                    format!("all {} matched workloads comply", outcome.matched),
                    generation,
                    now,
                )
            } else {
                condition(
                    "Compliant",
                    false,
                    "ViolationsFound",
                    format!(
                        "{} of {} matched workloads violate the policy",
                        outcome.violating, outcome.matched
                    ),
                    generation,
                    now,
                )
            },
        ],
    };
    // A condition keeps its transition time while its status stays.
    let previous = obj
        .status()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let conditions = conditions
        .into_iter()
        .map(|mut c| {
            if let Some(old) = previous.iter().find(|o| o.type_ == c.type_)
                && old.status == c.status
            {
                c.last_transition_time = old.last_transition_time.clone();
            }
            c
        })
        .collect();
    PolicyStatus {
        observed_generation: generation,
        conditions,
        matched: outcome.matched,
        compliant: outcome.compliant,
        violating: outcome.violating,
        exempt: outcome.exempt,
        violations_omitted: i64::try_from(total.saturating_sub(MAX_LISTED_VIOLATIONS))
            .unwrap_or(i64::MAX),
        violations,
        images: tags
            .map(|t| {
                outcome
                    .tags
                    .iter()
                    .take(MAX_LISTED_VIOLATIONS)
                    .map(|image| match t.get(image) {
                        Some(Ok(digest)) => ResolvedImage {
                            image: image.clone(),
                            digest: Some(digest.to_string()),
                            error: None,
                        },
                        Some(Err(e)) => ResolvedImage {
                            image: image.clone(),
                            digest: None,
                            error: Some(e.reason.clone()),
                        },
                        None => ResolvedImage {
                            image: image.clone(),
                            digest: None,
                            error: Some("not resolved yet".to_owned()),
                        },
                    })
                    .collect()
            })
            .unwrap_or_default(),
        images_omitted: i64::try_from(outcome.tags.len().saturating_sub(MAX_LISTED_VIOLATIONS))
            .unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::reconcile::evaluate::{Found, WorkloadRef};
    use crate::controller::store::WorkloadKey;
    use crate::policy::{ReadinessPolicy, WorkloadKind};

    fn at(second: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(second).unwrap_or_default())
    }

    fn policy(status: Option<PolicyStatus>) -> ReadinessPolicy {
        let mut p: ReadinessPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "probity.dev/v1alpha1", "kind": "ReadinessPolicy",
            "metadata": {"name": "p", "namespace": "ns", "generation": 3},
            "spec": {},
        }))
        .expect("a policy");
        p.status = status;
        p
    }

    fn violating(workloads: usize) -> Outcome {
        let found = Found {
            rule: crate::policy::rules::IMAGE_REFERENCE_INVALID,
            container: Some("c".to_owned()),
            message: "m".to_owned(),
            exempt: false,
            warning: false,
        };
        Outcome {
            matched: i64::try_from(workloads).unwrap_or(i64::MAX),
            violating: i64::try_from(workloads).unwrap_or(i64::MAX),
            violations: (0..workloads)
                .map(|i| {
                    let key = WorkloadKey {
                        kind: WorkloadKind::Deployment,
                        namespace: "ns".to_owned(),
                        name: format!("w{i:03}"),
                    };
                    (
                        WorkloadRef {
                            key,
                            uid: format!("{i}"),
                        },
                        vec![found.clone()],
                    )
                })
                .collect(),
            ..Outcome::default()
        }
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_its_status_stays() {
        let first = build_status(&policy(None), &violating(1), None, None, &at(100));
        let compliant = |s: &PolicyStatus| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Compliant")
                .cloned()
                .expect("Compliant")
        };
        assert_eq!(compliant(&first).last_transition_time, at(100));
        assert_eq!(first.observed_generation, Some(3));
        let same = build_status(
            &policy(Some(first.clone())),
            &violating(2),
            None,
            None,
            &at(200),
        );
        assert_eq!(
            compliant(&same).last_transition_time,
            at(100),
            "still violating: the transition is the old one"
        );
        let fixed = build_status(
            &policy(Some(same)),
            &Outcome::default(),
            None,
            None,
            &at(300),
        );
        assert_eq!(compliant(&fixed).status, "True");
        assert_eq!(compliant(&fixed).last_transition_time, at(300));
    }

    #[test]
    fn violations_are_listed_up_to_the_bound_and_the_rest_counted() {
        let many = MAX_LISTED_VIOLATIONS + 7;
        let status = build_status(&policy(None), &violating(many), None, None, &at(1));
        assert_eq!(status.violations.len(), MAX_LISTED_VIOLATIONS);
        assert_eq!(status.violations_omitted, 7);
        assert!(
            status.violations.windows(2).all(|w| w[0] <= w[1]),
            "listed in order"
        );
        let invalid = build_status(
            &policy(None),
            &Outcome::default(),
            Some("bad selector".to_owned()),
            None,
            &at(1),
        );
        assert_eq!(invalid.conditions.len(), 1);
        assert_eq!(invalid.conditions[0].reason, "InvalidSelector");
    }
}
