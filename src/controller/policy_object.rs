//! What the reconciler and the backstop need of either policy kind.

use kube::{Api, Resource, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::policy::Policy;
use crate::policy::status::PolicyStatus;
use crate::policy::{ClusterReadinessPolicy, ReadinessPolicy};

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
