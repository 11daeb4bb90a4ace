//! Evaluation of the matched workloads, cached per policy generation and
//! workload resourceVersion, with runtime findings from pod status.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt as _};

use super::tags::TagSnapshot;
use crate::controller::Context;
use crate::controller::drift::{self, PodObservation};
use crate::controller::store::WorkloadKey;
use crate::policy::Policy;
use crate::policy::rules::RuleMeta;
use crate::policy::{Classified, Workload, WorkloadKind, evaluate, selector};

/// A finding as cached per workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    pub(super) rule: &'static RuleMeta,
    pub(super) container: Option<String>,
    pub(super) message: String,
    pub(super) exempt: bool,
}

// === impl Found ===

impl From<crate::policy::Finding> for Found {
    fn from(f: crate::policy::Finding) -> Self {
        Self {
            rule: f.rule,
            container: f.container,
            message: f.message,
            exempt: f.exempt.is_some(),
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
    pub(super) restart_findings: bool,
    /// `images.pin: Report`: the tags of the matched workloads.
    pub(super) tags: BTreeSet<String>,
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
                    found.extend(tag_findings(body, &pods, tags, &mut outcome.tags));
                }
                let runtime = runtime_findings(&pods, now, window);
                outcome.restart_findings |= runtime
                    .iter()
                    .any(|f| f.rule.id == crate::policy::rules::SYNCHRONIZED_RESTARTS.id);
                found.extend(runtime);
            }
            outcome.matched += 1;
            let active: Vec<Found> = found.iter().filter(|f| !f.exempt).cloned().collect();
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
    let existing: HashSet<String> = ctx
        .policies
        .state()
        .iter()
        .filter_map(|p| p.meta().uid.clone())
        .chain(
            ctx.cluster_policies
                .state()
                .iter()
                .filter_map(|p| p.meta().uid.clone()),
        )
        .collect();
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
/// added to `wanted`.
pub(super) fn tag_findings(
    body: &str,
    pods: &[PodObservation],
    tags: &TagSnapshot,
    wanted: &mut BTreeSet<String>,
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
