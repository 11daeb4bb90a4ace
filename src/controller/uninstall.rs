//! Removes what the operator made outside its chart, in the order that
//! never blocks the cluster: the webhook configurations first (nothing
//! calls a webhook that is going away), then the operator itself is
//! scaled to zero and its pods waited for (a running leader re-creates
//! deleted backstops), then the backstops it applied (they would keep
//! denying with nobody to update them). The chart runs this as a
//! pre-delete hook (`probity uninstall`), so `helm uninstall` leaves
//! nothing behind.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt as _};

use crate::admission::vap;

/// What to remove.
#[derive(Debug, Clone)]
pub struct Uninstall {
    /// The validating and mutating webhook configurations' name.
    pub webhook_configuration: String,
    /// The operator's Deployment, scaled to zero before the backstops go.
    pub deployment: Option<String>,
    /// Its namespace.
    pub namespace: String,
    /// How long its pods may take to go.
    pub timeout: Duration,
}

/// Why an uninstall stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("{action}: {source}")]
    Api {
        /// What was being done.
        action: String,
        /// The API server's answer.
        #[source]
        source: kube::Error,
    },
    /// Operator pods still ran after the timeout; their backstops were
    /// left, since a running leader would re-create them.
    #[error(
        "pods of deployment {namespace}/{deployment} still running after {timeout:?}: {pods:?}; \
         backstops kept (a running operator re-creates them)"
    )]
    PodsRemain {
        /// The Deployment's namespace.
        namespace: String,
        /// The Deployment.
        deployment: String,
        /// How long was waited.
        timeout: Duration,
        /// The pods left.
        pods: Vec<String>,
    },
}

fn api_error(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let action = action.into();
    move |source| Error::Api { action, source }
}

/// Runs the uninstall; `report` hears each step done, as a line.
///
/// # Errors
///
/// When a request fails (an object already gone is not a failure), or
/// the operator's pods outlive `timeout`.
pub async fn run(
    client: &Client,
    what: &Uninstall,
    report: &mut dyn FnMut(String),
) -> Result<(), Error> {
    let name = &what.webhook_configuration;
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    if delete(&validating, name).await? {
        report(format!("deleted validatingwebhookconfiguration/{name}"));
    }
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    if delete(&mutating, name).await? {
        report(format!("deleted mutatingwebhookconfiguration/{name}"));
    }
    if let Some(deployment) = &what.deployment {
        stop_operator(client, what, deployment, report).await?;
    }
    let selector = format!("{}={}", vap::MANAGED_BY.0, vap::MANAGED_BY.1);
    let params = ListParams::default().labels(&selector);
    // Bindings first, so no policy is left half-bound.
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    delete_listed(&bindings, &params, report).await?;
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    delete_listed(&policies, &params, report).await
}

/// Deletes every object `params` lists, saying so for each.
async fn delete_listed<K>(
    api: &Api<K>,
    params: &ListParams,
    report: &mut dyn FnMut(String),
) -> Result<(), Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let kind = K::kind(&K::DynamicType::default()).to_ascii_lowercase();
    let listed = api
        .list_metadata(params)
        .await
        .map_err(api_error(format!("listing the backstops' {kind}s")))?;
    for object in listed.items {
        let name = object.name_any();
        if delete(api, &name).await? {
            report(format!("deleted {kind}/{name}"));
        }
    }
    Ok(())
}

/// Deletes `name`; false when it was not there.
async fn delete<K>(api: &Api<K>, name: &str) -> Result<bool, Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(source) => Err(Error::Api {
            action: format!("deleting {}/{name}", K::kind(&K::DynamicType::default())),
            source,
        }),
    }
}

/// Scales the operator to zero and waits until none of its pods is left
/// (a terminating leader still reconciles through its drain delay).
async fn stop_operator(
    client: &Client,
    what: &Uninstall,
    deployment: &str,
    report: &mut dyn FnMut(String),
) -> Result<(), Error> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &what.namespace);
    let scale = serde_json::json!({"spec": {"replicas": 0}});
    let scaled = match deployments
        .patch(deployment, &PatchParams::default(), &Patch::Merge(&scale))
        .await
    {
        Ok(d) => d,
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(source) => {
            return Err(Error::Api {
                action: format!("scaling deployment {}/{deployment} to 0", what.namespace),
                source,
            });
        }
    };
    let selector = scaled
        .spec
        .and_then(|s| s.selector.match_labels)
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    report(format!(
        "scaled deployment {}/{deployment} to 0",
        what.namespace
    ));
    if selector.is_empty() {
        return Ok(());
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &what.namespace);
    let params = ListParams::default().labels(&selector);
    let started = tokio::time::Instant::now();
    loop {
        let left: Vec<String> = pods
            .list_metadata(&params)
            .await
            .map_err(api_error(format!("listing the pods of {deployment}")))?
            .items
            .into_iter()
            .map(|p| p.name_any())
            .collect();
        if left.is_empty() {
            report(format!(
                "its pods are gone after {:.1} s",
                started.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        if started.elapsed() >= what.timeout {
            return Err(Error::PodsRemain {
                namespace: what.namespace.clone(),
                deployment: deployment.to_owned(),
                timeout: what.timeout,
                pods: left,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
