//! Evaluation of the matched workloads, cached per policy generation and
//! workload resourceVersion, with runtime findings from pod status.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use kube::ResourceExt as _;
use kube::runtime::reflector::ObjectRef;

use super::tags::TagSnapshot;
use crate::controller::Context;
use crate::controller::drift::{self, PodObservation};
use crate::controller::store::WorkloadKey;
use crate::policy::Policy;
use crate::policy::rules::RuleMeta;
use crate::policy::{Classified, Severity, Workload, WorkloadKind, evaluate, selector};

/// A finding as cached per workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub(super) rule: &'static RuleMeta,
    pub(super) container: Option<String>,
    pub(super) message: String,
    pub(super) exempt: bool,
    /// The policy's severity for the rule is Warning: reported, never
    /// counted as a violation.
    pub(super) warning: bool,
}

// === impl Found ===

impl From<crate::policy::Finding> for Found {
    fn from(f: crate::policy::Finding) -> Self {
        Self {
            rule: f.rule,
            container: f.container,
            message: f.message,
            exempt: f.exempt.is_some(),
            warning: f.severity == crate::policy::Severity::Warning,
        }
    }
}

/// Runtime findings are never exempt: they are about pods, not the spec.
impl From<drift::RuntimeFinding> for Found {
    fn from(f: drift::RuntimeFinding) -> Self {
        Self {
            rule: f.rule,
            container: f.container,
            message: f.message,
            exempt: false,
            warning: false,
        }
    }
}

#[derive(Debug)]
pub(super) struct Cached {
    pub(super) resource_version: Box<str>,
    pub(super) findings: Arc<[Found]>,
}

#[derive(Debug, Default)]
pub(super) struct PolicyCache {
    pub(super) generation: i64,
    pub(super) entries: HashMap<(WorkloadKind, String), Cached>,
}

/// Evaluation results per policy (by uid) and workload (by kind and uid),
/// valid while the policy's generation and the workload's resourceVersion
/// stay the same.
#[derive(Debug, Default)]
pub(crate) struct EvalCache {
    pub(super) policies: Mutex<HashMap<String, PolicyCache>>,
}

#[derive(Debug, Default)]
pub(super) struct Outcome {
    pub(super) matched: i64,
    pub(super) compliant: i64,
    pub(super) violating: i64,
    pub(super) exempt: i64,
    /// Non-exempt findings per violating workload.
    pub(super) violations: Vec<(WorkloadRef, Vec<Found>)>,
    /// With policy reports on: every finding (exempt and warnings too) per
    /// workload that has one, and the matched workloads per namespace.
    pub(super) reported: Vec<(WorkloadRef, Vec<Found>)>,
    pub(super) matched_in: std::collections::BTreeMap<String, usize>,
    pub(super) restart_findings: bool,
    /// `images.pin: Report`: the tags of the matched workloads.
    pub(super) tags: BTreeSet<String>,
    /// The tags some pod runs another digest of than the snapshot says
    /// (PRB302 found).
    pub(super) moved: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub(super) struct WorkloadRef {
    pub(super) key: WorkloadKey,
    pub(super) uid: String,
}

pub(super) fn evaluate_matched(
    ctx: &Context,
    policy: &Policy,
    policy_uid: &str,
    generation: i64,
    now: i64,
    window: i64,
    tags: Option<&TagSnapshot>,
) -> Outcome {
    let kinds: Vec<WorkloadKind> = if policy.spec.match_.kinds.is_empty() {
        WorkloadKind::ALL.to_vec()
    } else {
        policy.spec.match_.kinds.clone()
    };
    let mut outcome = Outcome::default();
    let mut ns_cache: HashMap<String, bool> = HashMap::new();
    let mut caches = ctx
        .cache
        .policies
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let cache = caches.entry(policy_uid.to_owned()).or_default();
    if cache.generation != generation {
        cache.generation = generation;
        cache.entries.clear();
    }
    let mut live: HashSet<(WorkloadKind, String)> = HashSet::new();
    for kind in kinds {
        let Some(store) = ctx.store(kind) else {
            continue;
        };
        for slim in store.state() {
            let body = &*slim.body;
            // Judged through its owner, once, there.
            if ctx.stands_for(kind, &slim) {
                continue;
            }
            let namespace = slim.meta.namespace.clone().unwrap_or_default();
            if !policy.spec.matches(kind, slim.labels()) {
                continue;
            }
            let in_scope = if policy.cluster {
                *ns_cache.entry(namespace.clone()).or_insert_with(|| {
                    policy
                        .namespace_selector
                        .as_ref()
                        .is_none_or(|sel| selector::matches(sel, &ctx.namespace_labels(&namespace)))
                })
            } else {
                policy.namespace.as_deref() == Some(namespace.as_str())
            };
            if !in_scope {
                continue;
            }
            let uid = slim.meta.uid.clone().unwrap_or_default();
            let rv = slim.meta.resource_version.as_deref().unwrap_or_default();
            let id = (kind, uid.clone());
            live.insert(id.clone());
            let findings = match cache.entries.get(&id) {
                Some(c) if &*c.resource_version == rv => Arc::clone(&c.findings),
                _ => {
                    let findings: Arc<[Found]> = evaluate_body(policy, body).into();
                    cache.entries.insert(
                        id,
                        Cached {
                            resource_version: rv.into(),
                            findings: Arc::clone(&findings),
                        },
                    );
                    findings
                }
            };
            let key = slim.key(kind);
            let mut found: Vec<Found> = findings.to_vec();
            if kind.is_long_running() && kind != WorkloadKind::Pod {
                let pods = pod_observations(ctx, &key);
                if let Some(tags) = tags {
                    found.extend(tag_findings(
                        body,
                        &pods,
                        tags,
                        &mut outcome.tags,
                        &mut outcome.moved,
                    ));
                }
                let runtime = runtime_findings(&pods, now, window);
                outcome.restart_findings |= runtime
                    .iter()
                    .any(|f| f.rule.id == crate::policy::rules::SYNCHRONIZED_RESTARTS.id);
                found.extend(runtime);
            }
            // Runtime findings take the policy's severity here.
            found.retain_mut(|f| match policy.spec.severity_of(f.rule.id) {
                Severity::Off => false,
                Severity::Warning => {
                    f.warning = true;
                    true
                }
                Severity::Error => true,
            });
            outcome.matched += 1;
            if ctx.reports.is_some() {
                *outcome.matched_in.entry(namespace.clone()).or_default() += 1;
                if !found.is_empty() {
                    outcome.reported.push((
                        WorkloadRef {
                            key: key.clone(),
                            uid: uid.clone(),
                        },
                        found.clone(),
                    ));
                }
            }
            let active: Vec<Found> = found
                .iter()
                .filter(|f| !f.exempt && !f.warning)
                .cloned()
                .collect();
            if !active.is_empty() {
                outcome.violating += 1;
                outcome.violations.push((WorkloadRef { key, uid }, active));
            } else if !found.is_empty() {
                outcome.exempt += 1;
            } else {
                outcome.compliant += 1;
            }
        }
    }
    cache.entries.retain(|id, _| live.contains(id));
    // Forget policies that no longer exist.
    let existing: HashSet<String> = ctx.all_policies().into_iter().map(|(uid, _)| uid).collect();
    caches.retain(|uid, _| uid == policy_uid || existing.contains(uid));
    outcome
}

pub(super) fn evaluate_body(policy: &Policy, body: &str) -> Vec<Found> {
    let workload = match Workload::classify_json(body) {
        Ok(Classified::Workload(w)) => w,
        Ok(_) => return Vec::new(),
        // The API server accepted it, so this is a field we read more
        // strictly than it does; report it rather than hide it.
        Err(e) => {
            return vec![Found {
                rule: crate::policy::rules::IMAGE_REFERENCE_INVALID,
                container: None,
                message: format!("could not read the workload: {e}"),
                exempt: false,
                warning: false,
            }];
        }
    };
    evaluate(&policy.spec, &workload)
        .into_iter()
        .map(Found::from)
        .collect()
}

/// The observed pods of a workload.
pub(super) fn pod_observations(ctx: &Context, key: &WorkloadKey) -> Vec<PodObservation> {
    let names = ctx.pods.pods_of(key);
    if names.is_empty() {
        return Vec::new();
    }
    let Some(store) = ctx.store(WorkloadKind::Pod) else {
        return Vec::new();
    };
    names
        .iter()
        .filter_map(|name| {
            let pod =
                store.get(&ObjectRef::new_with(name, WorkloadKind::Pod).within(&key.namespace))?;
            Some(pod.pod.as_ref()?.observation.clone())
        })
        .collect()
}

/// PRB302 for one workload: each container whose tag (unpinned) now
/// resolves to a digest some of its pods do not run. Every such tag is
/// added to `wanted`, and those with a finding to `moved`.
pub(super) fn tag_findings(
    body: &str,
    pods: &[PodObservation],
    tags: &TagSnapshot,
    wanted: &mut BTreeSet<String>,
    moved: &mut BTreeSet<String>,
) -> Vec<Found> {
    let Ok(Classified::Workload(workload)) = Workload::classify_json(body) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for container in &workload.pod.containers {
        let Some(image) = container.image.as_deref() else {
            continue;
        };
        let pinned = crate::image::Reference::parse(image).map_or(true, |r| r.is_pinned());
        if pinned {
            continue;
        }
        wanted.insert(image.to_owned());
        if let Some(Ok(current)) = tags.get(image)
            && let Some(f) = drift::tag_moved(pods, &container.name, image, &current.to_string())
        {
            moved.insert(image.to_owned());
            out.push(f.into());
        }
    }
    out
}

pub(super) fn runtime_findings(pods: &[PodObservation], now: i64, window: i64) -> Vec<Found> {
    drift::digest_drift(pods)
        .into_iter()
        .chain(drift::synchronized_restarts(pods, now, window))
        .map(Found::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::controller::Options;
    use crate::controller::fixtures::Caches;
    use crate::controller::policy_object::PolicyObject as _;
    use crate::policy::ReadinessPolicy;

    const POLICY_UID: &str = "p-1";

    fn policy(caches: &mut Caches, generation: i64) -> Policy {
        let value = json!({
            "apiVersion": "probity.dev/v1alpha1", "kind": "ReadinessPolicy",
            "metadata": {"name": "p", "namespace": "shop", "uid": POLICY_UID,
                         "generation": generation},
            "spec": {},
        });
        caches.policy(value.clone());
        serde_json::from_value::<ReadinessPolicy>(value)
            .expect("policy")
            .policy()
    }

    /// A Deployment running `image`, with no probes.
    fn deployment(caches: &mut Caches, name: &str, version: &str, image: &str) {
        caches.workload(
            WorkloadKind::Deployment,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                             "resourceVersion": version},
                "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
            }),
        );
    }

    fn run(ctx: &Context, policy: &Policy, generation: i64) -> Outcome {
        evaluate_matched(ctx, policy, POLICY_UID, generation, 0, 600, None)
    }

    /// Replaces what the cache holds for `name` with "no findings", so a
    /// result served from the cache shows up as compliant.
    fn clear_cached_findings(ctx: &Context, name: &str) {
        let mut policies = ctx.cache.policies.lock().expect("cache");
        let entry = policies
            .get_mut(POLICY_UID)
            .and_then(|c| {
                c.entries
                    .get_mut(&(WorkloadKind::Deployment, format!("uid-{name}")))
            })
            .expect("a cached evaluation");
        entry.findings = Arc::from(Vec::new());
    }

    fn cached(ctx: &Context) -> usize {
        let policies = ctx.cache.policies.lock().expect("cache");
        policies.get(POLICY_UID).map_or(0, |c| c.entries.len())
    }

    #[tokio::test]
    async fn evaluations_are_reused_until_the_workload_or_the_policy_changes() {
        let (ctx, mut caches, _api, _jobs) = Context::test(Options::new("test"));
        let first = policy(&mut caches, 1);
        deployment(&mut caches, "web", "1", "registry.example/web:latest");

        let outcome = run(&ctx, &first, 1);
        assert_eq!((outcome.matched, outcome.violating), (1, 1));
        assert_eq!(cached(&ctx), 1);

        // Same resourceVersion, same generation: the cached answer.
        clear_cached_findings(&ctx, "web");
        let outcome = run(&ctx, &first, 1);
        assert_eq!((outcome.compliant, outcome.violating), (1, 0));

        // A new resourceVersion is evaluated again.
        deployment(&mut caches, "web", "2", "registry.example/web:latest");
        let outcome = run(&ctx, &first, 1);
        assert_eq!((outcome.compliant, outcome.violating), (0, 1));

        // A new policy generation drops every cached answer.
        clear_cached_findings(&ctx, "web");
        let second = policy(&mut caches, 2);
        let outcome = run(&ctx, &second, 2);
        assert_eq!((outcome.compliant, outcome.violating), (0, 1));
    }

    #[tokio::test]
    async fn the_cache_forgets_deleted_workloads_and_deleted_policies() {
        let (ctx, mut caches, _api, _jobs) = Context::test(Options::new("test"));
        let policy = policy(&mut caches, 1);
        deployment(&mut caches, "web", "1", "registry.example/web:latest");
        deployment(&mut caches, "api", "1", "registry.example/api:latest");
        assert_eq!(run(&ctx, &policy, 1).matched, 2);
        assert_eq!(cached(&ctx), 2);

        caches.delete_workload(WorkloadKind::Deployment, "shop", "api");
        assert_eq!(run(&ctx, &policy, 1).matched, 1);
        assert_eq!(cached(&ctx), 1, "the deleted workload's entry is gone");

        // Another policy's pass forgets the cache of one that no longer
        // exists in the store.
        let gone: ReadinessPolicy = serde_json::from_value(json!({
            "apiVersion": "probity.dev/v1alpha1", "kind": "ReadinessPolicy",
            "metadata": {"name": "p", "namespace": "shop", "uid": POLICY_UID},
            "spec": {},
        }))
        .expect("policy");
        caches
            .policies
            .apply_watcher_event(&kube::runtime::watcher::Event::Delete(gone));
        evaluate_matched(&ctx, &policy, "p-2", 1, 0, 600, None);
        assert_eq!(cached(&ctx), 0);
        let policies = ctx.cache.policies.lock().expect("cache");
        assert!(policies.contains_key("p-2") && !policies.contains_key(POLICY_UID));
    }
}
