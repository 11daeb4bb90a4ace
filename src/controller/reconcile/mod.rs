//! One policy reconcile: evaluate the matched workloads (only those that
//! changed since the last look), add runtime findings from pod status,
//! write a bounded status, queue Events.

mod evaluate;
mod events;
mod reports;
mod status;
mod tags;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use kube::ResourceExt as _;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use probity_probe::retry::Backoff;
use serde_json::json;
use tokio::time::Instant;

pub(crate) use self::evaluate::EvalCache;
use self::evaluate::{Outcome, evaluate_matched};
use self::events::queue_events;
pub(crate) use self::events::{EventJob, publish_events};
pub(crate) use self::reports::{Reports, sweep as sweep_reports};
use self::status::build_status;
pub(crate) use self::tags::TagSnapshot;
use self::tags::{resolve_tags, split_listed};
use super::metrics::{KindLabel, ReconcileLabels, RuleLabels};
use super::{Context, Error, FIELD_MANAGER};
pub(crate) use crate::controller::policy_object::PolicyObject;
use crate::policy::{PinMode, selector};

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
        let evaluate = |tags: Option<&TagSnapshot>| {
            evaluate_matched(&ctx, &policy, &uid, generation, now, window, tags)
        };
        let empty = TagSnapshot::new();
        outcome = evaluate(report.then_some(&empty));
        if report {
            // The tags are known once matched: resolve the ones whose
            // registry the policy (or the operator) allows, then judge
            // PRB302.
            let (listed, unlisted) = split_listed(&ctx, &policy, &outcome.tags);
            let mut snapshot = resolve_tags(&ctx, &listed, &BTreeSet::new()).await;
            snapshot.extend(unlisted.into_iter().map(|image| {
                let why = crate::registry::ResolveError {
                    image: image.clone(),
                    reason: "not asked: its registry is not in spec.images.allowedRegistries"
                        .to_owned(),
                };
                (image, Err(why))
            }));
            outcome = evaluate(Some(&snapshot));
            // A pod on another digest than the cached answer may have
            // pulled the tag after it moved: ask again before saying where
            // the tag points now.
            let recheck: BTreeSet<String> = outcome.moved.intersection(&listed).cloned().collect();
            if !recheck.is_empty() {
                let again = resolve_tags(&ctx, &recheck, &recheck).await;
                let changed = again
                    .iter()
                    .any(|(image, answer)| snapshot.get(image) != Some(answer));
                snapshot.extend(again);
                if changed {
                    outcome = evaluate(Some(&snapshot));
                }
            }
            tags = Some(snapshot);
        }
    }
    let status = build_status(
        &*obj,
        &outcome,
        invalid.as_ref().map(ToString::to_string),
        tags.as_ref(),
        &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now()),
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
            .fenced(reports::sync(&ctx, &*obj, &policy, &outcome))
            .await
        {
            Ok(synced) => synced?,
            Err(super::leader::Fenced::NotLeader) => {}
            Err(e) => return Err(Error::Fenced(e)),
        }
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
    ctx.failures
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&uid);
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

/// Retries a failed reconcile with probity-probe's exponential backoff
/// with full jitter, per policy: up to 0.5 s, 1 s, 2 s ... a minute.
pub(crate) fn error_policy<P: PolicyObject>(obj: Arc<P>, err: &Error, ctx: Arc<Context>) -> Action {
    let uid = obj.meta().uid.clone().unwrap_or_default();
    let attempt = ctx
        .failures
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(uid)
        .and_modify(|n| *n = n.saturating_add(1))
        .or_insert(1)
        .to_owned();
    let delay = requeue_after(attempt, &mut fastrand::Rng::new());
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

/// The delay before retry number `attempt` of a failed reconcile.
fn requeue_after(attempt: u32, rng: &mut fastrand::Rng) -> Duration {
    let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
    // Never a hot loop, whatever the jitter draws.
    backoff
        .delay(attempt, Duration::ZERO, rng, None)
        .max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::controller::Options;
    use crate::policy::ReadinessPolicy;

    #[tokio::test]
    async fn a_reconcile_patches_the_status_it_built_and_requeues_for_the_resync() {
        let (ctx, _caches, mut api, _jobs) = Context::test(Options::new("test"));
        ctx.synced.set();
        let policy: ReadinessPolicy = serde_json::from_value(json!({
            "apiVersion": "probity.dev/v1alpha1", "kind": "ReadinessPolicy",
            "metadata": {"name": "p", "namespace": "shop", "uid": "u-1", "generation": 3},
            "spec": {},
        }))
        .expect("policy");
        let task = tokio::spawn(reconcile(Arc::new(policy), Arc::clone(&ctx)));

        let call = api.next("the status patch").await;
        assert_eq!(call.method, http::Method::PATCH);
        assert!(
            call.path.starts_with(
                "/apis/probity.dev/v1alpha1/namespaces/shop/readinesspolicies/p/status?"
            ),
            "{}",
            call.path
        );
        assert!(
            call.path.contains("fieldManager=probity-operator"),
            "{}",
            call.path
        );
        let status = &call.body["status"];
        assert_eq!(status["observedGeneration"], 3, "{status}");
        assert_eq!(status["matched"], 0, "{status}");
        assert_eq!(status["violating"], 0, "{status}");
        let reply = json!({
            "apiVersion": "probity.dev/v1alpha1", "kind": "ReadinessPolicy",
            "metadata": {"name": "p", "namespace": "shop", "uid": "u-1", "generation": 3},
            "spec": {}, "status": status,
        });
        call.reply(200, &reply);

        let action = task.await.expect("joined").expect("reconciled");
        assert_eq!(action, Action::requeue(ctx.options.resync));
        assert!(api.idle(), "one write, nothing else");
    }

    #[test]
    fn failed_reconciles_back_off_within_bounds() {
        let mut rng = fastrand::Rng::with_seed(7);
        for attempt in 1..=40 {
            let ceiling = Duration::from_millis(500)
                .saturating_mul(1 << (attempt - 1).min(20))
                .min(Duration::from_secs(60));
            for _ in 0..50 {
                let delay = requeue_after(attempt, &mut rng);
                assert!(delay >= Duration::from_millis(100), "{attempt}: {delay:?}");
                assert!(
                    delay <= ceiling.max(Duration::from_millis(100)),
                    "{attempt}: {delay:?}"
                );
            }
        }
        // Late attempts spread over the whole minute.
        let late: Vec<Duration> = (0..200).map(|_| requeue_after(30, &mut rng)).collect();
        assert!(late.iter().any(|d| *d > Duration::from_secs(30)));
        assert!(late.iter().any(|d| *d < Duration::from_secs(30)));
    }
}
