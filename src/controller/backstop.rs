//! Keeps each policy's ValidatingAdmissionPolicy backstop (and binding) in
//! sync: applied by the leader with server-side apply when a policy's
//! generation changes, deleted when the policy is gone.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt as _};
use serde_json::json;

use super::reconcile::PolicyObject;
use super::{Context, Error, FIELD_MANAGER, Stop};
use crate::admission::vap;

/// The backstop's state in the operator.
#[derive(Debug, Default)]
pub(crate) struct Backstop {
    /// Namespaces the bindings never match.
    pub(crate) exclude: Vec<String>,
    /// Generation last applied, by object name.
    applied: Mutex<HashMap<String, (String, i64)>>,
    /// Set when the API server has no ValidatingAdmissionPolicy API.
    unsupported: AtomicBool,
}

impl Backstop {
    pub(crate) fn new(exclude: Vec<String>) -> Self {
        Self {
            exclude,
            ..Self::default()
        }
    }
}

/// Applies `obj`'s backstop unless this generation already was.
pub(crate) async fn sync<P: PolicyObject>(ctx: &Context, obj: &P) -> Result<(), Error> {
    let Some(backstop) = &ctx.backstop else {
        return Ok(());
    };
    if backstop.unsupported.load(Ordering::Relaxed) {
        return Ok(());
    }
    let policy = obj.policy();
    let name = vap::object_name(&policy);
    let stamp = (
        obj.meta().uid.clone().unwrap_or_default(),
        obj.meta().generation.unwrap_or(0),
    );
    if backstop
        .applied
        .lock()
        .is_ok_and(|a| a.get(&name) == Some(&stamp))
    {
        return Ok(());
    }
    let (mut policy_object, mut binding) = vap::backstop(&policy, &backstop.exclude);
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
            backstop.unsupported.store(true, Ordering::Relaxed);
            tracing::warn!(
                "the API server has no admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy; \
                 no backstop (Kubernetes 1.30 or newer needed)"
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
    if let Ok(mut applied) = backstop.applied.lock() {
        applied.insert(name, stamp);
    }
    Ok(())
}

/// Deletes backstops whose policy no longer exists, every `every` while
/// this replica leads.
pub(crate) async fn sweep(ctx: std::sync::Arc<Context>, every: Duration, stop: Stop) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.clone() => return,
        }
        let Some(backstop) = &ctx.backstop else {
            return;
        };
        if !ctx.leadership.is_leader()
            || !ctx.policies_synced()
            || backstop.unsupported.load(Ordering::Relaxed)
        {
            continue;
        }
        if let Err(e) = sweep_once(&ctx).await {
            tracing::warn!(error = %e, "sweeping stale admission policy backstops failed; retrying");
        }
    }
}

async fn sweep_once(ctx: &Context) -> Result<(), kube::Error> {
    let wanted: HashSet<String> = ctx
        .policies
        .state()
        .iter()
        .map(|p| vap::object_name(&p.policy()))
        .chain(
            ctx.cluster_policies
                .state()
                .iter()
                .map(|p| vap::object_name(&p.policy())),
        )
        .collect();
    let selector = format!("{}={}", vap::MANAGED_BY.0, vap::MANAGED_BY.1);
    let params = ListParams::default().labels(&selector);
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(ctx.client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(ctx.client.clone());
    for stale in policies
        .list_metadata(&params)
        .await?
        .items
        .into_iter()
        .map(|o| o.name_any())
        .filter(|n| !wanted.contains(n))
    {
        // Binding first, so a policy is never left half-bound.
        let _ = bindings.delete(&stale, &DeleteParams::default()).await;
        policies.delete(&stale, &DeleteParams::default()).await?;
        if let Some(backstop) = &ctx.backstop
            && let Ok(mut applied) = backstop.applied.lock()
        {
            applied.remove(&stale);
        }
        tracing::info!(name = %stale, "deleted the backstop of a deleted policy");
    }
    Ok(())
}
