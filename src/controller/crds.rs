//! Installing the CRDs and waiting until they are established.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt as _};

use super::{Error, FIELD_MANAGER};

/// Applies the CRDs with server-side apply and waits until they are
/// established.
///
/// # Errors
///
/// When the API server rejects them or they are not established in time.
pub async fn install_crds(client: &Client, timeout: Duration) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    for crd in crate::policy::crds() {
        let name = crd.name_any();
        api.patch(&name, &apply, &Patch::Apply(&crd)).await?;
        let established = kube::runtime::wait::await_condition(
            api.clone(),
            &name,
            kube::runtime::conditions::is_crd_established(),
        );
        match tokio::time::timeout(timeout, established).await {
            Ok(Ok(_)) => {}
            Ok(Err(source)) => return Err(Error::CrdWait { name, source }),
            Err(_) => return Err(Error::CrdNotEstablished { name, timeout }),
        }
    }
    Ok(())
}
