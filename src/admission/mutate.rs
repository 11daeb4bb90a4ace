//! The mutating webhook: for policies with `images.pin: Admission`, rewrite
//! each `repo:tag` to `repo:tag@sha256:...` as the registry resolves it now.
//!
//! Already-pinned images are untouched. On UPDATE only images the update
//! changes are pinned: pinning an image the workload already ran would
//! change its pod template and roll it on a mere scale or relabel.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::review::{Operation, Request, Response};
use super::validate::{MAX_WARNING_CHARS, truncate_chars, workload_of};
use crate::lint::policies::Policy;
use crate::policy::workload::unpinned_images;
use crate::policy::{Digest, PinMode, Reference, RegistryUnavailable};

/// Why a tag could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{image}: {reason}")]
pub struct ResolveError {
    /// The image as written.
    pub image: String,
    /// What went wrong (registry down, tag unknown, unauthorized, timed out).
    pub reason: String,
}

/// Resolves tags to digests; the registry client implements it.
pub trait Resolve: Send + Sync {
    /// The digest `reference`'s tag points at now.
    fn resolve<'a>(
        &'a self,
        reference: &'a Reference,
    ) -> BoxFuture<'a, Result<Digest, ResolveError>>;
}

/// Fallback when the deadline is unknown.
const DEFAULT_BUDGET: Duration = Duration::from_secs(2);

/// Decides a mutating request; the deadline scope it runs in bounds every
/// registry call.
pub async fn mutate(
    request: &Request,
    policies: &[Policy],
    namespace_labels: &BTreeMap<String, String>,
    resolver: Option<&dyn Resolve>,
) -> Response {
    if !matches!(request.operation, Operation::Create | Operation::Update)
        || request.sub_resource.is_some()
    {
        return Response::allow();
    }
    let Some(object) = &request.object else {
        return Response::allow();
    };
    let Ok(Some(workload)) = workload_of(request, object) else {
        // Unreadable objects are the validating webhook's to deny.
        return Response::allow();
    };
    let ns = workload.namespace.clone().unwrap_or_default();
    let ns_map: BTreeMap<String, BTreeMap<String, String>> =
        [(ns.clone(), namespace_labels.clone())].into();
    let pinning: Vec<&Policy> = policies
        .iter()
        .filter(|p| p.spec.images.pin == PinMode::Admission && p.applies_to(&workload, &ns_map))
        .collect();
    if pinning.is_empty() {
        return Response::allow();
    }
    let fail_closed = pinning
        .iter()
        .any(|p| p.spec.admission.registry_unavailable == RegistryUnavailable::Deny);

    // Images to pin: (pointer of the image field, image as written).
    let old = match request.operation {
        Operation::Update => request.old_object.as_ref(),
        _ => None,
    };
    let targets: Vec<(String, String, Reference)> = unpinned_images(object, workload.pod_pointer)
        .into_iter()
        .filter(|found| !unchanged(old, &found.list, found.container))
        .map(|found| (found.pointer(), found.image.to_owned(), found.reference))
        .collect();
    if targets.is_empty() {
        return Response::allow();
    }

    // One registry call per distinct image.
    let references: BTreeMap<&str, &Reference> = targets
        .iter()
        .map(|(_, image, reference)| (image.as_str(), reference))
        .collect();
    let all_failed = |reason: &str| -> HashMap<String, Result<Digest, ResolveError>> {
        references
            .keys()
            .map(|image| {
                let error = ResolveError {
                    image: (*image).to_owned(),
                    reason: reason.to_owned(),
                };
                ((*image).to_owned(), Err(error))
            })
            .collect()
    };
    let resolved = match resolver {
        None => all_failed("no registry client is configured"),
        Some(resolver) => {
            let budget = probity_probe::deadline::remaining().unwrap_or(DEFAULT_BUDGET);
            let calls = references.iter().map(|(image, reference)| async {
                ((*image).to_owned(), resolver.resolve(reference).await)
            });
            match tokio::time::timeout(budget, futures::future::join_all(calls)).await {
                Ok(results) => results.into_iter().collect(),
                Err(_) => all_failed(&format!(
                    "the registry did not answer within the admission budget ({} ms)",
                    budget.as_millis()
                )),
            }
        }
    };

    let mut patch = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    let mut pinned = Vec::new();
    for (pointer, image, _) in &targets {
        match resolved.get(image) {
            Some(Ok(digest)) => {
                let value = format!("{image}@{digest}");
                patch.push(json!({"op": "replace", "path": pointer, "value": value}));
                pinned.push(value);
            }
            Some(Err(e)) => failures.push(e.to_string()),
            None => failures.push(format!("{image}: not resolved")),
        }
    }
    failures.sort();
    failures.dedup();
    if !failures.is_empty() && fail_closed {
        return Response::deny(format!(
            "probity: cannot pin images to digests (the policy fails closed): {}",
            failures.join("; ")
        ));
    }
    let mut response = Response::allow();
    for failure in &failures {
        response.warnings.push(truncate_chars(
            format!("probity: not pinned: {failure}"),
            MAX_WARNING_CHARS,
        ));
    }
    if !patch.is_empty() {
        response.patch = Some(Value::Array(patch));
        response
            .audit
            .insert("pinned".to_owned(), pinned.join(", "));
    }
    response
}

/// Whether the UPDATE leaves this container's image as it was.
fn unchanged(old: Option<&Value>, list_pointer: &str, container: &Value) -> bool {
    let Some(old) = old else {
        return false;
    };
    let name = container.get("name");
    old.pointer(list_pointer)
        .and_then(Value::as_array)
        .and_then(|list| list.iter().find(|c| c.get("name") == name))
        .is_some_and(|c| c.get("image") == container.get("image"))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::admission::review::Gvk;
    use crate::policy::ReadinessPolicySpec;

    const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    /// Answers from a table and counts calls; registry behaviour itself is
    /// tested against a real registry.
    #[derive(Default)]
    struct Table {
        calls: Mutex<Vec<String>>,
    }

    impl Resolve for Table {
        fn resolve<'a>(
            &'a self,
            reference: &'a Reference,
        ) -> BoxFuture<'a, Result<Digest, ResolveError>> {
            Box::pin(async move {
                if let Ok(mut calls) = self.calls.lock() {
                    calls.push(reference.to_string());
                }
                if reference.repository().contains("missing") {
                    return Err(ResolveError {
                        image: reference.to_string(),
                        reason: "registry unavailable".to_owned(),
                    });
                }
                Digest::parse(DIGEST).map_err(|e| ResolveError {
                    image: reference.to_string(),
                    reason: e.to_string(),
                })
            })
        }
    }

    fn deployment(images: &[&str]) -> Value {
        let containers: Vec<Value> = images
            .iter()
            .enumerate()
            .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
            .collect();
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"template": {"spec": {"containers": containers}}},
        })
    }

    fn request(op: Operation, object: Value, old: Option<Value>) -> Request {
        Request {
            uid: "u".to_owned(),
            kind: Gvk::default(),
            sub_resource: None,
            name: "web".to_owned(),
            namespace: Some("shop".to_owned()),
            operation: op,
            object: Some(object),
            old_object: old,
            dry_run: false,
        }
    }

    fn pin_policy(fail: RegistryUnavailable) -> Policy {
        let mut spec = ReadinessPolicySpec::default();
        spec.images.pin = PinMode::Admission;
        spec.admission.registry_unavailable = fail;
        Policy {
            name: "p".to_owned(),
            spec,
            namespace: None,
            namespace_selector: None,
            cluster: true,
        }
    }

    #[tokio::test]
    async fn pins_tags_and_leaves_digests_alone() {
        let table = Table::default();
        let pinned = format!("ghcr.io/acme/api:2@{DIGEST}");
        let object = deployment(&["nginx:1.27", &pinned, "nginx:1.27"]);
        let r = mutate(
            &request(Operation::Create, object, None),
            &[pin_policy(RegistryUnavailable::Allow)],
            &BTreeMap::new(),
            Some(&table),
        )
        .await;
        assert!(r.allowed);
        let patch = r.patch.unwrap_or_default();
        assert_eq!(
            patch,
            json!([
                {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": format!("nginx:1.27@{DIGEST}")},
                {"op": "replace", "path": "/spec/template/spec/containers/2/image", "value": format!("nginx:1.27@{DIGEST}")},
            ])
        );
        // One registry call per distinct image.
        assert_eq!(table.calls.lock().map(|c| c.len()).unwrap_or_default(), 1);
    }

    #[tokio::test]
    async fn without_a_pinning_policy_nothing_changes() {
        let mut p = pin_policy(RegistryUnavailable::Allow);
        p.spec.images.pin = PinMode::Off;
        let r = mutate(
            &request(Operation::Create, deployment(&["nginx:1.27"]), None),
            &[p],
            &BTreeMap::new(),
            Some(&Table::default()),
        )
        .await;
        assert_eq!(r, Response::allow());
    }

    #[tokio::test]
    async fn registry_failures_follow_the_policy() {
        let object = deployment(&["registry.local/missing:1"]);
        let open = mutate(
            &request(Operation::Create, object.clone(), None),
            &[pin_policy(RegistryUnavailable::Allow)],
            &BTreeMap::new(),
            Some(&Table::default()),
        )
        .await;
        assert!(open.allowed && open.patch.is_none());
        assert!(
            open.warnings[0].starts_with("probity: not pinned:"),
            "{open:?}"
        );
        let closed = mutate(
            &request(Operation::Create, object, None),
            &[pin_policy(RegistryUnavailable::Deny)],
            &BTreeMap::new(),
            Some(&Table::default()),
        )
        .await;
        assert!(!closed.allowed);
        assert!(
            closed
                .message
                .unwrap_or_default()
                .contains("registry unavailable")
        );
    }

    #[tokio::test]
    async fn updates_pin_only_changed_images() {
        let old = deployment(&["nginx:1.27", "redis:7"]);
        let new = deployment(&["nginx:1.27", "redis:7.2"]);
        let r = mutate(
            &request(Operation::Update, new, Some(old)),
            &[pin_policy(RegistryUnavailable::Allow)],
            &BTreeMap::new(),
            Some(&Table::default()),
        )
        .await;
        let patch = r.patch.unwrap_or_default();
        assert_eq!(patch.as_array().map(Vec::len), Some(1), "{patch}");
        assert_eq!(patch[0]["path"], "/spec/template/spec/containers/1/image");
    }
}
