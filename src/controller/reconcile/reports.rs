//! wg-policy `PolicyReport`s (`--policy-reports`): after each reconcile the
//! leader writes one report per policy and namespace it matched workloads
//! in, named as the policy's backstop, labelled with the policy and owned
//! by it. A report is written only when its content changed (so a storm of
//! workload updates costs a write per debounced reconcile at most), deleted
//! when the policy stops matching in its namespace, and swept once the
//! policy is gone. An API server without the report CRDs is asked again
//! every few minutes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash as _, Hasher as _};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt as _};
use serde_json::json;
use tokio::time::Instant;

use super::evaluate::{Found, Outcome};
use crate::admission::vap;
use crate::controller::policy_object::PolicyObject;
use crate::controller::{Context, Error, FIELD_MANAGER, Stop};
use crate::policy::wgpolicy::{self, Item, Scope, Subject};

/// How long an API server without the report API is left alone.
const REPROBE: Duration = Duration::from_secs(300);

/// The reports' state in the operator.
#[derive(Debug)]
pub(crate) struct Reports {
    /// Results listed per report.
    pub(crate) max_results: usize,
    /// Per policy (uid): the namespaces it has a report in, and a
    /// fingerprint of each report's content as last written.
    written: Mutex<HashMap<String, BTreeMap<String, u64>>>,
    unsupported: Mutex<Option<Instant>>,
}

impl Reports {
    pub(crate) fn new(max_results: usize) -> Self {
        Self {
            max_results,
            written: Mutex::new(HashMap::new()),
            unsupported: Mutex::new(None),
        }
    }

    fn unsupported(&self) -> bool {
        self.unsupported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < REPROBE)
    }

    fn written(&self) -> std::sync::MutexGuard<'_, HashMap<String, BTreeMap<String, u64>>> {
        self.written.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets what was written, so a new leader writes every report once.
    pub(crate) fn forget_written(&self) {
        self.written().clear();
    }
}

fn resource() -> ApiResource {
    ApiResource {
        group: "wgpolicyk8s.io".to_owned(),
        version: "v1alpha2".to_owned(),
        api_version: wgpolicy::API_VERSION.to_owned(),
        kind: "PolicyReport".to_owned(),
        plural: "policyreports".to_owned(),
    }
}

fn subject(key: &crate::controller::store::WorkloadKey, uid: &str) -> Subject {
    Subject {
        api_version: key.kind.api_version().to_owned(),
        kind: key.kind.as_str().to_owned(),
        namespace: Some(key.namespace.clone()),
        name: key.name.clone(),
        uid: (!uid.is_empty()).then(|| uid.to_owned()),
    }
}

fn item(subject: Subject, found: &Found) -> Item<'_> {
    Item {
        subject,
        rule: found.rule,
        result: if found.exempt {
            "skip"
        } else if found.warning {
            "warn"
        } else {
            "fail"
        },
        message: &found.message,
        container: found.container.as_deref(),
        pointer: None,
        exemption: None,
    }
}

/// The reports `outcome` calls for, by namespace, without timestamps (for
/// fingerprints) and with them.
fn desired<P: PolicyObject>(
    obj: &P,
    policy: &crate::policy::Policy,
    outcome: &Outcome,
    max_results: usize,
    now: i64,
) -> BTreeMap<String, serde_json::Value> {
    let name = vap::object_name(policy);
    let mut by_ns: BTreeMap<&str, Vec<Item<'_>>> = BTreeMap::new();
    let mut flagged: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
    for (workload, findings) in &outcome.reported {
        let ns = workload.key.namespace.as_str();
        for found in findings {
            let item = item(subject(&workload.key, &workload.uid), found);
            if item.result != "skip" {
                flagged.entry(ns).or_default().insert(&workload.uid);
            }
            by_ns.entry(ns).or_default().push(item);
        }
    }
    let owner = json!([{
        "apiVersion": P::api_version(&()), "kind": P::KIND,
        "name": obj.name_any(), "uid": obj.meta().uid.clone().unwrap_or_default(),
        "controller": true,
    }]);
    outcome
        .matched_in
        .iter()
        .map(|(ns, matched)| {
            let scope = Scope {
                name: &name,
                namespace: Some(ns),
                policy: &policy.name,
                pass: matched.saturating_sub(flagged.get(ns.as_str()).map_or(0, HashSet::len)),
                max_results,
            };
            let items = by_ns.get(ns.as_str()).map_or(&[][..], Vec::as_slice);
            let mut report = wgpolicy::report(&scope, items, now);
            report["metadata"]["labels"] = json!({
                vap::MANAGED_BY.0: vap::MANAGED_BY.1,
                vap::POLICY_LABEL: vap::policy_label(policy),
            });
            report["metadata"]["ownerReferences"] = owner.clone();
            (ns.clone(), report)
        })
        .collect()
}

/// A fingerprint of a report's content, its results' timestamps aside.
fn fingerprint(report: &serde_json::Value) -> u64 {
    let mut report = report.clone();
    if let Some(results) = report["results"].as_array_mut() {
        for result in results {
            result["timestamp"] = serde_json::Value::Null;
        }
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    report.to_string().hash(&mut hasher);
    hasher.finish()
}

/// Writes `obj`'s reports that changed and deletes those of namespaces it
/// no longer matches in. The leader calls it after each reconcile.
pub(crate) async fn sync<P: PolicyObject>(
    ctx: &Context,
    obj: &P,
    policy: &crate::policy::Policy,
    outcome: &Outcome,
) -> Result<(), Error> {
    let Some(reports) = &ctx.reports else {
        return Ok(());
    };
    if reports.unsupported() {
        return Ok(());
    }
    let uid = obj.meta().uid.clone().unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let wanted = desired(obj, policy, outcome, reports.max_results, now);
    let previous = reports.written().get(&uid).cloned().unwrap_or_default();
    let name = vap::object_name(policy);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut written = BTreeMap::new();
    for (ns, report) in &wanted {
        let print = fingerprint(report);
        if previous.get(ns) != Some(&print) {
            let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &resource());
            match api.patch(&name, &params, &Patch::Apply(report)).await {
                Err(kube::Error::Api(e))
                    if e.code == 404
                        && e.message.contains("could not find the requested resource") =>
                {
                    *reports
                        .unsupported
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                    tracing::warn!(
                        "the API server has no wgpolicyk8s.io/v1alpha2 PolicyReport; no policy \
                         reports (install the chart with policyReports.installCRDs); asking again \
                         in 5 minutes"
                    );
                    return Ok(());
                }
                other => {
                    other?;
                }
            }
            ctx.metrics.policy_report_writes.inc();
        }
        written.insert(ns.clone(), print);
    }
    for ns in previous.keys().filter(|ns| !wanted.contains_key(*ns)) {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), ns, &resource());
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    reports.written().insert(uid, written);
    Ok(())
}

/// Deletes the reports of policies that no longer exist, every `every`
/// while this replica leads.
pub(crate) async fn sweep(ctx: std::sync::Arc<Context>, every: Duration, stop: Stop) {
    let forget = |ctx: &Context| {
        if let Some(reports) = &ctx.reports {
            reports.forget_written();
        }
    };
    crate::controller::leader::while_leading(ctx, every, stop, forget, |ctx| async move {
        if ctx.reports.as_ref().is_none_or(Reports::unsupported) {
            return;
        }
        if let Err(e) = sweep_once(&ctx).await {
            tracing::warn!(error = %e, "sweeping the reports of deleted policies failed; retrying");
        }
    })
    .await;
}

async fn sweep_once(ctx: &Context) -> Result<(), Error> {
    let policies = ctx.all_policies();
    if let Some(reports) = &ctx.reports {
        reports
            .written()
            .retain(|uid, _| policies.iter().any(|(live, _)| live == uid));
    }
    let live: HashSet<String> = policies
        .iter()
        .map(|(_, policy)| vap::policy_label(policy))
        .collect();
    let api: Api<DynamicObject> = Api::all_with(ctx.client.clone(), &resource());
    let selector = format!("{}={}", vap::MANAGED_BY.0, vap::MANAGED_BY.1);
    let listed = api
        .list_metadata(&ListParams::default().labels(&selector))
        .await?;
    for report in listed.items {
        let policy = report
            .labels()
            .get(vap::POLICY_LABEL)
            .cloned()
            .unwrap_or_default();
        if live.contains(&policy) {
            continue;
        }
        let Some(ns) = report.namespace() else {
            continue;
        };
        let name = report.name_any();
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &resource());
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                tracing::info!(namespace = %ns, %name, "deleted the policy report of a deleted policy");
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
