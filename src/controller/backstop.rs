//! Keeps each policy's ValidatingAdmissionPolicy backstop (and binding) in
//! sync: applied by the leader with server-side apply when a policy's
//! generation changes, re-created when someone deleted it, deleted when the
//! policy is gone. A replica that becomes leader forgets what it applied
//! before (another leader may have changed it since), and an API server
//! without the API is asked again every few minutes (it may be upgraded).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt as _};
use serde_json::json;
use tokio::time::Instant;

use super::policy_object::PolicyObject;
use super::{Context, Error, FIELD_MANAGER, Stop};
use crate::admission::vap;

/// The backstop's state in the operator.
#[derive(Debug, Default)]
pub(crate) struct Backstop {
    /// Namespaces the bindings never match.
    pub(crate) exclude: Vec<String>,
    /// Generation last applied, by object name.
    applied: Mutex<HashMap<String, (String, i64)>>,
    /// When the API server last said it has no ValidatingAdmissionPolicy
    /// API.
    unsupported: Mutex<Option<Instant>>,
}

/// How long an API server without the API is left alone before it is asked
/// again.
const REPROBE: Duration = Duration::from_secs(300);

impl Backstop {
    pub(crate) fn new(exclude: Vec<String>) -> Self {
        Self {
            exclude,
            ..Self::default()
        }
    }

    fn unsupported(&self) -> bool {
        self.unsupported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < REPROBE)
    }

    fn applied(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, i64)>> {
        self.applied.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets every applied generation, so each policy's backstop is
    /// applied again on its next reconcile.
    pub(crate) fn forget_applied(&self) {
        self.applied().clear();
    }
}

/// Applies `obj`'s backstop unless this generation already was.
pub(crate) async fn sync<P: PolicyObject>(ctx: &Context, obj: &P) -> Result<(), Error> {
    let Some(backstop) = &ctx.backstop else {
        return Ok(());
    };
    if backstop.unsupported() {
        return Ok(());
    }
    let policy = obj.policy();
    let name = vap::object_name(&policy);
    let stamp = (
        obj.meta().uid.clone().unwrap_or_default(),
        obj.meta().generation.unwrap_or(0),
    );
    if backstop.applied().get(&name) == Some(&stamp) {
        return Ok(());
    }
    let (mut policy_object, mut binding) = vap::backstop(&policy, &backstop.exclude);
    // The operator's own, which its sweep may delete.
    for object in [&mut policy_object, &mut binding] {
        object["metadata"]["labels"][vap::MANAGED_BY.0] = vap::MANAGED_BY.1.into();
    }
    // Cluster-scoped owners only: a namespaced owner of a cluster-scoped
    // object is invalid, so ReadinessPolicy backstops are swept instead.
    if obj.namespace().is_none() {
        let owner = json!([{
            "apiVersion": P::api_version(&()), "kind": P::KIND,
            "name": obj.name_any(), "uid": stamp.0, "controller": true,
        }]);
        policy_object["metadata"]["ownerReferences"] = owner.clone();
        binding["metadata"]["ownerReferences"] = owner;
    }
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(ctx.client.clone());
    match policies
        .patch(&name, &apply, &Patch::Apply(&policy_object))
        .await
    {
        Err(kube::Error::Api(e)) if e.code == 404 => {
            *backstop
                .unsupported
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
            tracing::warn!(
                "the API server has no admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy; \
                 no backstop (Kubernetes 1.30 or newer needed); asking again in 5 minutes"
            );
            return Ok(());
        }
        other => {
            other?;
        }
    }
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(ctx.client.clone());
    bindings
        .patch(&name, &apply, &Patch::Apply(&binding))
        .await?;
    backstop.applied().insert(name, stamp);
    Ok(())
}

/// Deletes backstops whose policy no longer exists, every `every` while
/// this replica leads.
pub(crate) async fn sweep(ctx: std::sync::Arc<Context>, every: Duration, stop: Stop) {
    let forget = |ctx: &Context| {
        if let Some(backstop) = &ctx.backstop {
            backstop.forget_applied();
        }
    };
    super::leader::while_leading(ctx, every, stop, forget, |ctx| async move {
        let Some(backstop) = &ctx.backstop else {
            return;
        };
        if backstop.unsupported() {
            // No API, no backstop: every policy lacks one.
            let policies = ctx.policies.state().len() + ctx.cluster_policies.state().len();
            ctx.metrics
                .backstops_missing
                .set(i64::try_from(policies).unwrap_or(i64::MAX));
            return;
        }
        if let Err(e) = sweep_once(&ctx).await {
            tracing::warn!(error = %e, "sweeping stale admission policy backstops failed; retrying");
        }
    })
    .await;
}

async fn sweep_once(ctx: &Context) -> Result<(), Error> {
    let namespaced = ctx.policies.state();
    let cluster = ctx.cluster_policies.state();
    let wanted: HashSet<String> = namespaced
        .iter()
        .map(|p| vap::object_name(&p.policy()))
        .chain(cluster.iter().map(|p| vap::object_name(&p.policy())))
        .collect();
    let selector = format!("{}={}", vap::MANAGED_BY.0, vap::MANAGED_BY.1);
    let params = ListParams::default().labels(&selector);
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(ctx.client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(ctx.client.clone());
    let existing: HashSet<String> = policies
        .list_metadata(&params)
        .await?
        .items
        .into_iter()
        .map(|o| o.name_any())
        .collect();
    let missing = wanted.iter().filter(|n| !existing.contains(*n)).count();
    ctx.metrics
        .backstops_missing
        .set(i64::try_from(missing).unwrap_or(i64::MAX));
    // Deleted by someone else: applied again, whatever the memo says.
    for policy in &namespaced {
        recreate_if_missing(ctx, &**policy, &existing).await?;
    }
    for policy in &cluster {
        recreate_if_missing(ctx, &**policy, &existing).await?;
    }
    for stale in existing.iter().filter(|n| !wanted.contains(*n)) {
        // Binding first, so a policy is never left half-bound.
        let _ = bindings.delete(stale, &DeleteParams::default()).await;
        policies.delete(stale, &DeleteParams::default()).await?;
        if let Some(backstop) = &ctx.backstop {
            backstop.applied().remove(stale);
        }
        tracing::info!(name = %stale, "deleted the backstop of a deleted policy");
    }
    Ok(())
}

async fn recreate_if_missing<P: PolicyObject>(
    ctx: &Context,
    obj: &P,
    existing: &HashSet<String>,
) -> Result<(), Error> {
    let name = vap::object_name(&obj.policy());
    if existing.contains(&name) {
        return Ok(());
    }
    if let Some(backstop) = &ctx.backstop {
        backstop.applied().remove(&name);
    }
    tracing::info!(%name, "re-creating a missing admission policy backstop");
    sync(ctx, obj).await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::controller::Options;
    use crate::controller::fixtures::ApiServer;
    use crate::policy::ClusterReadinessPolicy;

    const VAPS: &str = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies";
    const BINDINGS: &str =
        "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings";

    fn context() -> (Arc<Context>, ApiServer) {
        let mut options = Options::new("test");
        options.backstop = Some(vec!["kube-system".to_owned()]);
        let (ctx, _caches, api, _jobs) = Context::test(options);
        (ctx, api)
    }

    fn policy(generation: i64) -> ClusterReadinessPolicy {
        serde_json::from_value(json!({
            "apiVersion": "probity.dev/v1alpha1", "kind": "ClusterReadinessPolicy",
            "metadata": {"name": "baseline", "uid": "c-1", "generation": generation},
            "spec": {"mode": "Enforce"},
        }))
        .expect("policy")
    }

    /// Answers the next request, which must be a server-side apply under
    /// `collection`, with what it sent; returns its body.
    async fn expect_apply(api: &mut ApiServer, collection: &str) -> Value {
        let call = api.next(collection).await;
        assert_eq!(call.method, http::Method::PATCH, "{}", call.path);
        assert!(
            call.path
                .starts_with(&format!("{collection}/probity-crpol.baseline?")),
            "{}",
            call.path
        );
        assert!(call.path.contains("force=true"), "{}", call.path);
        assert!(
            call.path.contains("fieldManager=probity-operator"),
            "{}",
            call.path
        );
        let body = call.body.clone();
        call.reply(200, &body);
        body
    }

    #[tokio::test]
    async fn a_generation_is_applied_once_policy_before_binding_owned_by_the_policy() {
        let (ctx, mut api) = context();
        let first = policy(1);
        let task = tokio::spawn({
            let (ctx, first) = (Arc::clone(&ctx), first.clone());
            async move { sync(&ctx, &first).await }
        });
        let object = expect_apply(&mut api, VAPS).await;
        let binding = expect_apply(&mut api, BINDINGS).await;
        task.await.expect("joined").expect("synced");
        for applied in [&object, &binding] {
            let owner = &applied["metadata"]["ownerReferences"][0];
            assert_eq!(owner["kind"], "ClusterReadinessPolicy", "{applied}");
            assert_eq!(owner["uid"], "c-1", "{applied}");
            assert_eq!(
                applied["metadata"]["labels"][vap::MANAGED_BY.0],
                vap::MANAGED_BY.1,
                "marked as the operator's, for its sweep: {applied}"
            );
        }
        let excluded = binding["spec"].to_string();
        assert!(excluded.contains("kube-system"), "{excluded}");

        // The same generation again: nothing sent.
        sync(&ctx, &first).await.expect("synced");
        assert!(api.idle(), "an applied generation is not applied again");

        // A new generation, or a new leader that forgot, applies again.
        for (generation, forget) in [(2, false), (2, true)] {
            if forget {
                ctx.backstop.as_ref().expect("backstop").forget_applied();
            }
            let next = policy(generation);
            let task = tokio::spawn({
                let ctx = Arc::clone(&ctx);
                async move { sync(&ctx, &next).await }
            });
            expect_apply(&mut api, VAPS).await;
            expect_apply(&mut api, BINDINGS).await;
            task.await.expect("joined").expect("synced");
        }
    }

    #[tokio::test]
    async fn a_sweep_counts_and_recreates_missing_backstops() {
        let mut options = Options::new("test");
        options.backstop = Some(vec!["kube-system".to_owned()]);
        let (ctx, mut caches, mut api, _jobs) = Context::test(options);
        caches.cluster_policy(serde_json::to_value(policy(1)).expect("json"));
        let task = tokio::spawn({
            let ctx = Arc::clone(&ctx);
            async move { sweep_once(&ctx).await }
        });
        let list = api.next("the list of backstops").await;
        assert!(list.path.starts_with(VAPS), "{}", list.path);
        assert!(
            list.path.contains("labelSelector="),
            "only the operator's: {}",
            list.path
        );
        list.reply(
            200,
            &json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
                    "metadata": {"resourceVersion": "1"}, "items": []}),
        );
        expect_apply(&mut api, VAPS).await;
        expect_apply(&mut api, BINDINGS).await;
        task.await.expect("joined").expect("swept");
        assert_eq!(ctx.metrics.backstops_missing.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn an_api_server_without_the_api_is_asked_again_only_after_a_while() {
        let (ctx, mut api) = context();
        let policy = policy(1);
        let attempt = |ctx: &Arc<Context>| {
            let (ctx, policy) = (Arc::clone(ctx), policy.clone());
            tokio::spawn(async move { sync(&ctx, &policy).await })
        };

        let task = attempt(&ctx);
        let call = api.next("the backstop apply").await;
        assert!(call.path.starts_with(VAPS), "{}", call.path);
        call.reply(
            404,
            &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "NotFound", "code": 404, "message": "the server could not find the requested resource"}),
        );
        task.await.expect("joined").expect("not an error");
        assert!(api.idle(), "no binding without the policy API");

        tokio::time::advance(REPROBE - Duration::from_secs(1)).await;
        attempt(&ctx).await.expect("joined").expect("skipped");
        assert!(api.idle(), "not asked again within {REPROBE:?}");

        tokio::time::advance(Duration::from_secs(2)).await;
        let task = attempt(&ctx);
        expect_apply(&mut api, VAPS).await;
        expect_apply(&mut api, BINDINGS).await;
        task.await.expect("joined").expect("synced");
    }
}
