//! One policy reconcile: evaluate the matched workloads (only those that
//! changed since the last look), add runtime findings from pod status,
//! write a bounded status, queue Events.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::drift::{self, PodObservation};
use super::metrics::{KindLabel, ReconcileLabels, RuleLabels};
use super::store::WorkloadKey;
use super::{Context, Error, FIELD_MANAGER, Stop};
use crate::lint::policies::Policy;
use crate::policy::rules::RuleMeta;
use crate::policy::status::{MAX_LISTED_VIOLATIONS, PolicyStatus, ResolvedImage, ViolationRef};
use crate::policy::{
    Classified, ClusterReadinessPolicy, PinMode, ReadinessPolicy, Workload, WorkloadKind, evaluate,
    selector,
};

/// What the reconciler needs of either policy kind.
pub(crate) trait PolicyObject:
    Resource<DynamicType = ()>
    + Clone
    + DeserializeOwned
    + Serialize
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const KIND: &'static str;
    const PLURAL: &'static str;
    fn policy(&self) -> Policy;
    fn status(&self) -> Option<&PolicyStatus>;
    fn api(client: kube::Client, namespace: Option<&str>) -> Api<Self>;
}

impl PolicyObject for ReadinessPolicy {
    const KIND: &'static str = "ReadinessPolicy";
    const PLURAL: &'static str = "readinesspolicies";
    fn policy(&self) -> Policy {
        Policy {
            name: format!(
                "ReadinessPolicy/{}/{}",
                self.namespace().unwrap_or_default(),
                self.name_any()
            ),
            spec: self.spec.clone(),
            namespace: self.namespace(),
            namespace_selector: None,
            cluster: false,
        }
    }
    fn status(&self) -> Option<&PolicyStatus> {
        self.status.as_ref()
    }
    fn api(client: kube::Client, namespace: Option<&str>) -> Api<Self> {
        Api::namespaced(client, namespace.unwrap_or("default"))
    }
}

impl PolicyObject for ClusterReadinessPolicy {
    const KIND: &'static str = "ClusterReadinessPolicy";
    const PLURAL: &'static str = "clusterreadinesspolicies";
    fn policy(&self) -> Policy {
        Policy {
            name: format!("ClusterReadinessPolicy/{}", self.name_any()),
            spec: self.spec.policy.clone(),
            namespace: None,
            namespace_selector: self.spec.namespace_selector.clone(),
            cluster: true,
        }
    }
    fn status(&self) -> Option<&PolicyStatus> {
        self.status.as_ref()
    }
    fn api(client: kube::Client, _: Option<&str>) -> Api<Self> {
        Api::all(client)
    }
}

/// A finding as cached per workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    rule: &'static RuleMeta,
    container: Option<String>,
    message: String,
    exempt: bool,
}

#[derive(Debug)]
struct Cached {
    resource_version: Box<str>,
    findings: Arc<[Found]>,
}

#[derive(Debug, Default)]
struct PolicyCache {
    generation: i64,
    entries: HashMap<(WorkloadKind, String), Cached>,
}

/// Evaluation results per policy (by uid) and workload (by kind and uid),
/// valid while the policy's generation and the workload's resourceVersion
/// stay the same.
#[derive(Debug, Default)]
pub(crate) struct EvalCache {
    policies: Mutex<HashMap<String, PolicyCache>>,
}

/// An Event to publish on a workload.
#[derive(Debug)]
pub(crate) struct EventJob {
    key: (String, String),
    rule: String,
    fingerprint: u64,
    regarding: ObjectReference,
    reason: String,
    note: String,
}

/// [`reconcile`], with a panic caught and returned as an error, so the
/// policy is retried and the operator keeps running.
pub(crate) async fn reconcile_guarded<P: PolicyObject>(
    obj: Arc<P>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let what = format!("reconcile of {} {}", P::KIND, obj.name_any());
    super::guard::catch_panic(what, reconcile(obj, ctx)).await
}

/// Reconciles one policy.
pub(crate) async fn reconcile<P: PolicyObject>(
    obj: Arc<P>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.wait_synced().await?;
    let policy = obj.policy();
    let uid = obj.meta().uid.clone().unwrap_or_default();
    let generation = obj.meta().generation.unwrap_or(0);
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let window = i64::try_from(ctx.options.restart_window.as_secs()).unwrap_or(300);

    let invalid = [
        policy.spec.match_.selector.as_ref(),
        policy.namespace_selector.as_ref(),
    ]
    .into_iter()
    .flatten()
    .find_map(|s| selector::validate(s).err());

    let report = policy.spec.images.pin == PinMode::Report && ctx.options.registry.is_some();
    let mut outcome = Outcome::default();
    let mut tags: Option<TagSnapshot> = None;
    if invalid.is_none() {
        let empty = TagSnapshot::new();
        let first = report.then_some(&empty);
        outcome = evaluate_matched(&ctx, &policy, &uid, generation, now, window, first);
        if report {
            // The tags are known once matched: resolve the ones whose
            // registry the policy (or the operator) allows, then judge
            // PRB302.
            let (listed, unlisted) = split_listed(&ctx, &policy, &outcome.tags);
            let mut snapshot = resolve_tags(&ctx, &listed).await;
            snapshot.extend(unlisted.into_iter().map(|image| {
                let why =
                    "not asked: its registry is not in spec.images.allowedRegistries".to_owned();
                (image, Err(why))
            }));
            outcome = evaluate_matched(
                &ctx,
                &policy,
                &uid,
                generation,
                now,
                window,
                Some(&snapshot),
            );
            tags = Some(snapshot);
        }
    }
    let status = build_status(
        &*obj,
        &outcome,
        invalid.as_ref().map(ToString::to_string),
        tags.as_ref(),
    );

    if ctx.leadership.is_leader() {
        if obj.status() != Some(&status) {
            let api = P::api(ctx.client.clone(), obj.namespace().as_deref());
            let patch = json!({
                "apiVersion": "probity.dev/v1alpha1",
                "kind": P::KIND,
                "status": status,
            });
            let name = obj.name_any();
            let params = PatchParams::apply(FIELD_MANAGER).force();
            match ctx
                .leadership
                .fenced(api.patch_status(&name, &params, &Patch::Apply(&patch)))
                .await
            {
                Ok(written) => {
                    written?;
                }
                Err(super::leader::Fenced::NotLeader) => {}
                Err(e) => return Err(Error::Fenced(e)),
            }
        }
        queue_events(&ctx, &policy, &uid, &outcome);
        match ctx
            .leadership
            .fenced(super::backstop::sync(&ctx, &*obj))
            .await
        {
            Ok(synced) => synced?,
            Err(super::leader::Fenced::NotLeader) => {}
            Err(e) => return Err(Error::Fenced(e)),
        }
    }
    record_violation_metrics(&ctx, &policy.name, &outcome);
    if let Ok(mut failures) = ctx.failures.lock() {
        failures.remove(&uid);
    }
    let kind = P::KIND.to_owned();
    ctx.metrics
        .reconciles
        .get_or_create(&ReconcileLabels {
            kind: kind.clone(),
            result: "ok".to_owned(),
        })
        .inc();
    ctx.metrics
        .reconcile_duration
        .get_or_create(&KindLabel { kind })
        .observe(started.elapsed().as_secs_f64());
    tracing::debug!(
        policy = %policy.name,
        matched = outcome.matched,
        violating = outcome.violating,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "reconciled"
    );
    Ok(if report {
        Action::requeue(
            ctx.options
                .tag_ttl
                .max(Duration::from_secs(1))
                .min(ctx.options.resync),
        )
    } else if outcome.restart_findings {
        Action::requeue(ctx.options.restart_window.min(ctx.options.resync))
    } else {
        Action::requeue(ctx.options.resync)
    })
}

/// Retries a failed reconcile with exponential backoff and jitter, per
/// policy: 0.5 s, 1 s, 2 s ... up to a minute.
pub(crate) fn error_policy<P: PolicyObject>(obj: Arc<P>, err: &Error, ctx: Arc<Context>) -> Action {
    let uid = obj.meta().uid.clone().unwrap_or_default();
    let attempt = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(uid).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    let base = Duration::from_millis(500).saturating_mul(1 << attempt.min(7).saturating_sub(1));
    let delay = base
        .min(Duration::from_secs(60))
        .mul_f64(0.5 + fastrand::f64() * 0.5);
    tracing::warn!(
        policy = %obj.name_any(),
        kind = P::KIND,
        error = %err,
        retry_in_ms = delay.as_millis() as u64,
        "reconcile failed"
    );
    ctx.metrics
        .reconciles
        .get_or_create(&ReconcileLabels {
            kind: P::KIND.to_owned(),
            result: "error".to_owned(),
        })
        .inc();
    ctx.metrics
        .reconcile_errors
        .get_or_create(&KindLabel {
            kind: P::KIND.to_owned(),
        })
        .inc();
    Action::requeue(delay)
}

#[derive(Debug, Default)]
struct Outcome {
    matched: i64,
    compliant: i64,
    violating: i64,
    exempt: i64,
    /// Non-exempt findings per violating workload.
    violations: Vec<(WorkloadRef, Vec<Found>)>,
    restart_findings: bool,
    /// `images.pin: Report`: the tags of the matched workloads.
    tags: BTreeSet<String>,
}

#[derive(Debug, Clone)]
struct WorkloadRef {
    key: WorkloadKey,
    uid: String,
}

fn evaluate_matched(
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
    let Ok(mut caches) = ctx.cache.policies.lock() else {
        return outcome;
    };
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

fn evaluate_body(policy: &Policy, body: &str) -> Vec<Found> {
    let workload = match Workload::classify_json(body) {
        Ok(Classified::Workload(w)) => w,
        Ok(_) => return Vec::new(),
        // The API server accepted it, so this is a field we read more
        // strictly than it does; report it rather than hide it.
        Err(e) => {
            return vec![Found {
                rule: crate::policy::rules::find("PRB004").unwrap_or(crate::policy::rules::ALL[3]),
                container: None,
                message: format!("could not read the workload: {e}"),
                exempt: false,
            }];
        }
    };
    evaluate(&policy.spec, &workload)
        .into_iter()
        .map(|f| Found {
            rule: f.rule,
            container: f.container,
            message: f.message,
            exempt: f.exempt.is_some(),
        })
        .collect()
}

/// The observed pods of a workload.
fn pod_observations(ctx: &Context, key: &WorkloadKey) -> Vec<PodObservation> {
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
fn tag_findings(
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
        let pinned = crate::policy::Reference::parse(image).map_or(true, |r| r.is_pinned());
        if pinned {
            continue;
        }
        wanted.insert(image.to_owned());
        if let Some(Ok(current)) = tags.get(image)
            && let Some(f) = drift::tag_moved(pods, &container.name, image, current)
        {
            out.push(Found {
                rule: f.rule,
                container: f.container,
                message: f.message,
                exempt: false,
            });
        }
    }
    out
}

fn runtime_findings(pods: &[PodObservation], now: i64, window: i64) -> Vec<Found> {
    let mut out: Vec<Found> = drift::digest_drift(pods)
        .into_iter()
        .map(|f| Found {
            rule: f.rule,
            container: f.container,
            message: f.message,
            exempt: false,
        })
        .collect();
    out.extend(
        drift::synchronized_restarts(pods, now, window).map(|f| Found {
            rule: f.rule,
            container: f.container,
            message: f.message,
            exempt: false,
        }),
    );
    out
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    }
}

fn build_status<P: PolicyObject>(
    obj: &P,
    outcome: &Outcome,
    invalid: Option<String>,
    tags: Option<&TagSnapshot>,
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
        )],
        None => vec![
            condition(
                "Ready",
                true,
                "Evaluated",
                format!("{} workloads matched", outcome.matched),
                generation,
            ),
            if outcome.violating == 0 {
                condition(
                    "Compliant",
                    true,
                    "NoViolations",
                    format!("all {} matched workloads comply", outcome.matched),
                    generation,
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
                            digest: Some(digest.clone()),
                            error: None,
                        },
                        Some(Err(e)) => ResolvedImage {
                            image: image.clone(),
                            digest: None,
                            error: Some(e.clone()),
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

/// The tags whose registry `policy` lists in `images.allowedRegistries`,
/// or the operator's `--registry-allow` allows, and the others, which are
/// never looked up: an image string is the workload author's, and so would
/// be the request the operator sends.
fn split_listed(
    ctx: &Context,
    policy: &Policy,
    tags: &BTreeSet<String>,
) -> (BTreeSet<String>, BTreeSet<String>) {
    use crate::admission::Resolve as _;
    tags.iter().cloned().partition(|image| {
        crate::policy::Reference::parse(image).is_ok_and(|reference| {
            policy.spec.images.lists_registry_of(&reference)
                || ctx
                    .options
                    .registry
                    .as_ref()
                    .is_some_and(|r| r.always_allowed(reference.registry()))
        })
    })
}

/// Tag -> digest answers, as of the last resolution.
pub(crate) type TagSnapshot = HashMap<String, Result<String, String>>;

/// Budget of one tag lookup.
const TAG_BUDGET: Duration = Duration::from_secs(5);
/// Lookups in flight per registry.
const PER_REGISTRY: usize = 4;
/// Registries asked at once.
const REGISTRIES_AT_ONCE: usize = 8;

/// Resolves the tags not resolved within the tag TTL (`--registry-cache-ttl`),
/// each within its own budget, a few at a time per registry, and returns
/// every current answer.
async fn resolve_tags(ctx: &Context, wanted: &BTreeSet<String>) -> TagSnapshot {
    use futures::StreamExt as _;
    let fresh = |ctx: &Context| -> (TagSnapshot, Vec<String>) {
        let Ok(tags) = ctx.tags.lock() else {
            return (TagSnapshot::new(), Vec::new());
        };
        let mut snapshot = TagSnapshot::new();
        let mut stale = Vec::new();
        for image in wanted {
            match tags.get(image) {
                Some((answer, at)) if at.elapsed() < ctx.options.tag_ttl => {
                    snapshot.insert(image.clone(), answer.clone());
                }
                _ => stale.push(image.clone()),
            }
        }
        (snapshot, stale)
    };
    let (mut snapshot, stale) = fresh(ctx);
    let Some(registry) = ctx.options.registry.as_ref() else {
        return snapshot;
    };
    if stale.is_empty() {
        return snapshot;
    }
    // Grouped by registry, each group with its own few slots, and each
    // lookup with its own budget: a registry that hangs holds only its own
    // slots and time, never another registry's (whose breaker would then
    // hear of timeouts that were not its own).
    let mut by_registry: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for image in stale {
        let registry = crate::policy::Reference::parse(&image)
            .map(|r| r.registry().to_owned())
            .unwrap_or_default();
        by_registry.entry(registry).or_default().push(image);
    }
    let lookup = |image: String| async move {
        let answer = match crate::policy::Reference::parse(&image) {
            Ok(reference) => {
                probity_probe::deadline::scope(TAG_BUDGET, registry.digest(&reference))
                    .await
                    .map(|d| d.to_string())
                    .map_err(|e| e.reason)
            }
            Err(e) => Err(e.to_string()),
        };
        (image, answer)
    };
    let groups = by_registry.into_values().map(|images| {
        futures::stream::iter(images)
            .map(lookup)
            .buffer_unordered(PER_REGISTRY)
            .collect::<Vec<_>>()
    });
    let answers: Vec<(String, Result<String, String>)> = futures::stream::iter(groups)
        .buffer_unordered(REGISTRIES_AT_ONCE)
        .flat_map(futures::stream::iter)
        .collect()
        .await;
    if let Ok(mut tags) = ctx.tags.lock() {
        for (image, answer) in &answers {
            tags.insert(image.clone(), (answer.clone(), Instant::now()));
        }
        // Bounded: forget answers nobody asked for in a while.
        let keep = ctx.options.tag_ttl * 10;
        tags.retain(|_, (_, at)| at.elapsed() < keep);
    }
    snapshot.extend(answers);
    snapshot
}

fn fingerprint(found: &[&Found]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    for f in found {
        f.container.hash(&mut hasher);
        f.message.hash(&mut hasher);
    }
    hasher.finish()
}

/// Queues one Event per workload, rule and policy, again only when the
/// findings for that rule change.
fn queue_events(ctx: &Context, policy: &Policy, policy_uid: &str, outcome: &Outcome) {
    let Ok(mut seen) = ctx.seen_events.lock() else {
        return;
    };
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

/// `image-latest-tag` -> `ImageLatestTag`, the Event reason of a rule:
/// Events aggregate by reason, so each rule keeps its own.
fn camel_case(name: &str) -> String {
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

fn truncate(mut s: String, max: usize) -> String {
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

fn record_violation_metrics(ctx: &Context, policy: &str, outcome: &Outcome) {
    let mut counts: BTreeMap<&str, i64> = BTreeMap::new();
    for (_, found) in &outcome.violations {
        for f in found {
            *counts.entry(f.rule.id).or_default() += 1;
        }
    }
    for rule in crate::policy::rules::ALL {
        let labels = RuleLabels {
            policy: policy.to_owned(),
            rule: rule.id.to_owned(),
        };
        match counts.get(rule.id) {
            Some(n) => {
                ctx.metrics.violations.get_or_create(&labels).set(*n);
            }
            None => {
                ctx.metrics.violations.remove(&labels);
            }
        }
    }
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
            .ok()
            .and_then(|s| s.get(&job.key).and_then(|m| m.get(&job.rule)).copied());
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
            Err(super::leader::Fenced::NotLeader) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "event not published");
                continue;
            }
        };
        match published {
            Ok(()) => {
                ctx.metrics.events.inc();
                if let Ok(mut seen) = ctx.seen_events.lock() {
                    seen.entry(job.key)
                        .or_default()
                        .insert(job.rule, job.fingerprint);
                }
            }
            Err(e) => tracing::warn!(
                workload = ?job.regarding.name,
                error = %e,
                "publishing an Event failed; it is retried on the next reconcile"
            ),
        }
    }
}
