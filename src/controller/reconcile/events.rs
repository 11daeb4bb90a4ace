//! Events on violating workloads: queued when a rule's findings change,
//! published one at a time while leader.

use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Arc, PoisonError};

use futures::StreamExt as _;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::evaluate::{Found, Outcome};
use crate::controller::{Context, Stop};
use crate::policy::Policy;

/// An Event to publish on a workload.
#[derive(Debug)]
pub(crate) struct EventJob {
    pub(super) key: (String, String),
    pub(super) rule: String,
    pub(super) fingerprint: u64,
    pub(super) regarding: ObjectReference,
    pub(super) reason: String,
    pub(super) note: String,
}

pub(super) fn fingerprint(found: &[&Found]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for f in found {
        f.container.hash(&mut hasher);
        f.message.hash(&mut hasher);
    }
    hasher.finish()
}

/// Queues one Event per workload, rule and policy, again only when the
/// findings for that rule change.
pub(super) fn queue_events(ctx: &Context, policy: &Policy, policy_uid: &str, outcome: &Outcome) {
    let mut seen = ctx
        .seen_events
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let mut current: HashSet<String> = HashSet::new();
    for (workload, found) in &outcome.violations {
        current.insert(workload.uid.clone());
        let mut by_rule: BTreeMap<&'static str, Vec<&Found>> = BTreeMap::new();
        for f in found {
            by_rule.entry(f.rule.id).or_default().push(f);
        }
        let key = (policy_uid.to_owned(), workload.uid.clone());
        let entry = seen.entry(key.clone()).or_default();
        entry.retain(|rule, _| by_rule.contains_key(rule.as_str()));
        for (rule, found) in by_rule {
            let print = fingerprint(&found);
            if entry.get(rule) == Some(&print) {
                continue;
            }
            let Some(first) = found.first() else {
                continue;
            };
            let mut note = format!("{rule} {}: ", first.rule.name);
            for (i, f) in found.iter().enumerate() {
                if i > 0 {
                    note.push_str("; ");
                }
                if let Some(c) = &f.container {
                    note.push_str(&format!("container {c}: "));
                }
                note.push_str(&f.message);
            }
            note.push_str(&format!(" (policy {})", policy.name));
            let reason = camel_case(first.rule.name);
            let k = workload.key.kind;
            let _ = ctx.events.unbounded_send(EventJob {
                key: key.clone(),
                rule: rule.to_owned(),
                fingerprint: print,
                regarding: ObjectReference {
                    api_version: Some(k.api_version().to_owned()),
                    kind: Some(k.as_str().to_owned()),
                    name: Some(workload.key.name.clone()),
                    namespace: Some(workload.key.namespace.clone()),
                    uid: Some(workload.uid.clone()),
                    ..ObjectReference::default()
                },
                reason,
                note: truncate(note, 1000),
            });
        }
    }
    seen.retain(|(p, w), _| p != policy_uid || current.contains(w));
}

/// Records a published Event, so the same findings are not queued again.
fn remember(ctx: &Context, key: (String, String), rule: String, fingerprint: u64) {
    ctx.seen_events
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(key)
        .or_default()
        .insert(rule, fingerprint);
}

/// `image-latest-tag` -> `ImageLatestTag`, the Event reason of a rule:
/// Events aggregate by reason, so each rule keeps its own.
pub(super) fn camel_case(name: &str) -> String {
    name.split('-')
        .map(|w| {
            let mut chars = w.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

pub(super) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max.saturating_sub(3);
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

/// Publishes queued Events while leader, one at a time, marking each as
/// seen only once the API server took it.
pub(crate) async fn publish_events(
    ctx: Arc<Context>,
    mut jobs: mpsc::UnboundedReceiver<EventJob>,
    identity: String,
    stop: Stop,
) {
    let recorder = Recorder::new(
        ctx.client.clone(),
        Reporter {
            controller: "probity".to_owned(),
            instance: Some(identity),
        },
    );
    let mut stop = stop;
    loop {
        let job = tokio::select! {
            job = jobs.next() => job,
            () = &mut stop => None,
        };
        let Some(job) = job else {
            return;
        };
        let already = ctx
            .seen_events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&job.key)
            .and_then(|m| m.get(&job.rule))
            .copied();
        if already == Some(job.fingerprint) {
            continue;
        }
        let event = Event {
            type_: EventType::Warning,
            reason: job.reason,
            note: Some(job.note),
            action: "Audit".to_owned(),
            secondary: None,
        };
        let published = match ctx
            .leadership
            .fenced(recorder.publish(&event, &job.regarding))
            .await
        {
            Ok(published) => published,
            Err(crate::controller::leader::Fenced::NotLeader) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "event not published");
                continue;
            }
        };
        match published {
            Ok(()) => {
                ctx.metrics.events.inc();
                remember(&ctx, job.key, job.rule, job.fingerprint);
            }
            Err(e) => tracing::warn!(
                workload = ?job.regarding.name,
                error = %e,
                "publishing an Event failed; it is retried on the next reconcile"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::evaluate::WorkloadRef;
    use super::*;
    use crate::controller::Options;
    use crate::controller::store::WorkloadKey;
    use crate::policy::{WorkloadKind, rules};

    fn found(rule: &str, container: &str, message: &str) -> Found {
        Found {
            rule: rules::find(rule).expect("a rule"),
            container: Some(container.to_owned()),
            message: message.to_owned(),
            exempt: false,
            warning: false,
        }
    }

    fn violating(uid: &str, found: Vec<Found>) -> (WorkloadRef, Vec<Found>) {
        let key = WorkloadKey {
            kind: WorkloadKind::Deployment,
            namespace: "shop".to_owned(),
            name: format!("web-{uid}"),
        };
        (
            WorkloadRef {
                key,
                uid: uid.to_owned(),
            },
            found,
        )
    }

    fn drain(jobs: &mut mpsc::UnboundedReceiver<EventJob>) -> Vec<EventJob> {
        let mut out = Vec::new();
        while let Ok(job) = jobs.try_recv() {
            out.push(job);
        }
        out
    }

    #[tokio::test]
    async fn one_event_per_workload_and_rule_again_only_when_its_findings_change() {
        let (ctx, _caches, _api, mut jobs) = Context::test(Options::new("test"));
        let policy = Policy::builtin();
        let outcome = |message: &str| Outcome {
            violations: vec![violating(
                "u1",
                vec![
                    found("PRB001", "web", message),
                    found("PRB001", "sidecar", "nginx:latest"),
                    found("PRB101", "web", "no readiness probe"),
                ],
            )],
            ..Outcome::default()
        };

        queue_events(&ctx, &policy, "p1", &outcome("nginx:latest"));
        let first = drain(&mut jobs);
        let rules: Vec<&str> = first.iter().map(|j| j.rule.as_str()).collect();
        assert_eq!(rules, ["PRB001", "PRB101"], "one Event per rule");
        assert_eq!(first[0].reason, "ImageLatestTag");
        assert!(
            first[0]
                .note
                .contains("container web: nginx:latest; container sidecar"),
            "{}",
            first[0].note
        );
        assert_eq!(first[0].regarding.uid.as_deref(), Some("u1"));
        for job in &first {
            remember(&ctx, job.key.clone(), job.rule.clone(), job.fingerprint);
        }

        queue_events(&ctx, &policy, "p1", &outcome("nginx:latest"));
        assert!(drain(&mut jobs).is_empty(), "nothing changed: no Event");

        queue_events(&ctx, &policy, "p1", &outcome("nginx:1-latest"));
        let changed = drain(&mut jobs);
        assert_eq!(changed.len(), 1, "only the rule whose findings changed");
        assert_eq!(changed[0].rule, "PRB001");
    }

    #[tokio::test]
    async fn a_workload_that_stops_violating_is_forgotten_and_warned_again_if_it_relapses() {
        let (ctx, _caches, _api, mut jobs) = Context::test(Options::new("test"));
        let policy = Policy::builtin();
        let bad = Outcome {
            violations: vec![violating(
                "u1",
                vec![found("PRB101", "web", "no readiness probe")],
            )],
            ..Outcome::default()
        };
        queue_events(&ctx, &policy, "p1", &bad);
        for job in drain(&mut jobs) {
            remember(&ctx, job.key.clone(), job.rule.clone(), job.fingerprint);
        }
        queue_events(&ctx, &policy, "p1", &Outcome::default());
        assert!(drain(&mut jobs).is_empty());
        queue_events(&ctx, &policy, "p1", &bad);
        assert_eq!(drain(&mut jobs).len(), 1, "a relapse is news again");
    }
}
