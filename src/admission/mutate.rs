//! The mutating webhook: for policies with `images.pin: Admission`, rewrite
//! each `repo:tag` to `repo:tag@sha256:...` as the registry resolves it now.
//!
//! Already-pinned images are untouched. On UPDATE only images the update
//! changes are pinned: pinning an image the workload already ran would
//! change its pod template and roll it on a mere scale or relabel.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Value, json};

use super::review::{Operation, Request, Response};
use super::validate::{
    MAX_WARNING_CHARS, Owners, is_ephemeral_update, truncate_chars, workload_of,
};
use crate::image::{Digest, Reference};
use crate::policy::{Classified, PinMode, Policy, RegistryUnavailable};
use crate::registry::{Resolve, ResolveError};

/// Fallback when the deadline is unknown.
const DEFAULT_BUDGET: Duration = Duration::from_secs(2);
/// Distinct images one review may ask the registries about; the rest are
/// refused through the policy's `registryUnavailable` (a review is attacker
/// input, and each image is a registry call).
pub const MAX_IMAGES_PER_REVIEW: usize = 64;
/// Registry lookups one review runs at once.
const LOOKUPS_AT_ONCE: usize = 8;
/// Warnings returned per review; the rest are counted in one more.
const MAX_WARNINGS: usize = super::validate::MAX_WARNINGS;
/// Bound on the `pinned` audit annotation.
const MAX_AUDIT_BYTES: usize = 4096;

/// Decides a mutating request; the deadline scope it runs in bounds every
/// registry call.
pub async fn mutate(
    request: &Request,
    policies: &[Policy],
    namespace_labels: &BTreeMap<String, String>,
    resolver: Option<&dyn Resolve>,
    owners: &dyn Owners,
) -> Response {
    // Pods' ephemeral containers arrive through their own subresource.
    if !matches!(request.operation, Operation::Create | Operation::Update)
        || (request.sub_resource.is_some() && !is_ephemeral_update(request))
    {
        return Response::allow();
    }
    let Some(object) = &request.object else {
        return Response::allow();
    };
    let Ok(Some(workload)) = workload_of(request, object, owners) else {
        // Unreadable objects are the validating webhook's to deny.
        return Response::allow();
    };
    let ns = workload.namespace.clone().unwrap_or_default();
    let ns_map: BTreeMap<String, BTreeMap<String, String>> =
        [(ns.clone(), namespace_labels.clone())].into();
    let pinning: Vec<&Policy> = policies
        .iter()
        .filter(|p| p.spec.images.pin == PinMode::Admission && p.applies_to(workload, &ns_map))
        .collect();
    if pinning.is_empty() {
        return Response::allow();
    }
    let fail_closed = pinning
        .iter()
        .any(|p| p.spec.admission.registry_unavailable == RegistryUnavailable::Deny);

    // Images to pin: (pointer of the image field, image as written).
    let old = match (request.operation, &request.old_object) {
        (Operation::Update, Some(Ok(Classified::Workload(old)))) => Some(&**old),
        _ => None,
    };
    let targets: Vec<(String, String, Reference)> = workload
        .unpinned_images()
        .into_iter()
        .filter(|found| {
            // An UPDATE that leaves this image as it was.
            old.and_then(|old| old.image_of(found.list_field, found.name)) != Some(found.image)
        })
        .map(|found| (found.pointer(), found.image.to_owned(), found.reference))
        .collect();
    if targets.is_empty() {
        return Response::allow();
    }

    // One registry call per distinct image, for at most
    // MAX_IMAGES_PER_REVIEW of them, a few at a time.
    let mut references: BTreeMap<&str, &Reference> = targets
        .iter()
        .map(|(_, image, reference)| (image.as_str(), reference))
        .collect();
    // A registry is contacted only when a pinning policy that matches the
    // object lists it, or the operator allows it: the image string is the
    // requester's, and so would be the request the operator sends.
    let unlisted: Vec<String> = references
        .iter()
        .filter(|(_, reference)| {
            !pinning
                .iter()
                .any(|p| p.spec.images.lists_registry_of(reference))
                && !resolver.is_some_and(|r| r.always_allowed(reference.registry()))
        })
        .map(|(image, _)| (*image).to_owned())
        .collect();
    for image in &unlisted {
        references.remove(image.as_str());
    }
    let too_many: Vec<String> = if references.len() > MAX_IMAGES_PER_REVIEW {
        let beyond: Vec<&str> = references
            .keys()
            .skip(MAX_IMAGES_PER_REVIEW)
            .copied()
            .collect();
        for image in &beyond {
            references.remove(image);
        }
        beyond.into_iter().map(str::to_owned).collect()
    } else {
        Vec::new()
    };
    let failed = |images: &mut dyn Iterator<Item = &str>, reason: &str| {
        images
            .map(|image| {
                let error = ResolveError {
                    image: image.to_owned(),
                    reason: reason.to_owned(),
                };
                (image.to_owned(), Err(error))
            })
            .collect::<HashMap<String, Result<Digest, ResolveError>>>()
    };
    let mut resolved = match resolver {
        None => failed(
            &mut references.keys().copied(),
            "no registry client is configured",
        ),
        // A dry run has no side effects, and a registry call is one.
        Some(resolver) if request.dry_run => references
            .iter()
            .map(|(image, reference)| {
                let answer = resolver.cached(reference).ok_or_else(|| ResolveError {
                    image: (*image).to_owned(),
                    reason: "not resolved recently, and a dry run asks no registry".to_owned(),
                });
                ((*image).to_owned(), answer)
            })
            .collect(),
        Some(resolver) => {
            use futures::StreamExt as _;
            let budget = probity_probe::deadline::remaining().unwrap_or(DEFAULT_BUDGET);
            // Owned, so the stream's futures borrow nothing from this frame
            // (the review future must be Send).
            let lookups: Vec<(String, Reference)> = references
                .iter()
                .map(|(image, reference)| ((*image).to_owned(), (*reference).clone()))
                .collect();
            let calls = futures::stream::iter(lookups)
                .map(|(image, reference)| async move {
                    let answer = resolver.resolve(&reference).await;
                    (image, answer)
                })
                .buffer_unordered(LOOKUPS_AT_ONCE)
                .collect::<Vec<_>>();
            match tokio::time::timeout(budget, calls).await {
                Ok(results) => results.into_iter().collect(),
                Err(_) => failed(
                    &mut references.keys().copied(),
                    &format!(
                        "the registry did not answer within the admission budget ({} ms)",
                        budget.as_millis()
                    ),
                ),
            }
        }
    };
    resolved.extend(failed(
        &mut unlisted.iter().map(String::as_str),
        "its registry is not in the allowedRegistries of a pinning policy, so it is not asked",
    ));
    resolved.extend(failed(
        &mut too_many.iter().map(String::as_str),
        &format!("more than {MAX_IMAGES_PER_REVIEW} distinct images in one object; not looked up"),
    ));

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
        return Response::deny(truncate_chars(
            format!(
                "probity: cannot pin images to digests (the policy fails closed): {}",
                failures.join("; ")
            ),
            super::validate::MAX_MESSAGE_BYTES,
        ));
    }
    let mut response = Response::allow();
    for failure in failures.iter().take(MAX_WARNINGS) {
        response.warnings.push(truncate_chars(
            format!("probity: not pinned: {failure}"),
            MAX_WARNING_CHARS,
        ));
    }
    if failures.len() > MAX_WARNINGS {
        response.warnings.push(format!(
            "probity: {} more images not pinned",
            failures.len() - MAX_WARNINGS
        ));
    }
    if !patch.is_empty() {
        response.patch = Some(Value::Array(patch));
        response.audit.insert(
            "pinned".to_owned(),
            truncate_chars(pinned.join(", "), MAX_AUDIT_BYTES),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use std::sync::{Mutex, PoisonError};

    use futures::future::BoxFuture;

    use super::*;
    use crate::admission::review::Gvk;
    use crate::policy::ReadinessPolicySpec;

    const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

    /// [`super::mutate`] with no controller known.
    async fn mutate(
        request: &Request,
        policies: &[Policy],
        namespace_labels: &BTreeMap<String, String>,
        resolver: Option<&dyn Resolve>,
    ) -> Response {
        super::mutate(
            request,
            policies,
            namespace_labels,
            resolver,
            &crate::admission::validate::NoOwners,
        )
        .await
    }

    /// Answers from a table and counts calls; registry behaviour itself is
    /// tested against a real registry.
    #[derive(Default)]
    struct Table {
        calls: Mutex<Vec<String>>,
        /// Only registries the policies list may be asked (as in the
        /// operator without `--registry-allow`).
        listed_only: bool,
        cache: Option<Digest>,
    }

    impl Resolve for Table {
        fn always_allowed(&self, _: &str) -> bool {
            !self.listed_only
        }

        fn cached(&self, _: &Reference) -> Option<Digest> {
            self.cache.clone()
        }

        fn resolve<'a>(
            &'a self,
            reference: &'a Reference,
        ) -> BoxFuture<'a, Result<Digest, ResolveError>> {
            Box::pin(async move {
                self.calls
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(reference.to_string());
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
            object: Some(crate::admission::review::read_object(&object)),
            old_object: old.as_ref().map(crate::admission::review::read_object),
            dry_run: false,
            user_info: Default::default(),
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
        assert_eq!(
            table
                .calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
            1
        );
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

    /// Counts how many lookups run at once.
    #[derive(Default)]
    struct Slow {
        now: std::sync::atomic::AtomicUsize,
        peak: std::sync::atomic::AtomicUsize,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Resolve for Slow {
        fn always_allowed(&self, _: &str) -> bool {
            true
        }

        fn resolve<'a>(
            &'a self,
            reference: &'a Reference,
        ) -> BoxFuture<'a, Result<Digest, ResolveError>> {
            use std::sync::atomic::Ordering::SeqCst;
            Box::pin(async move {
                self.calls.fetch_add(1, SeqCst);
                let now = self.now.fetch_add(1, SeqCst) + 1;
                self.peak.fetch_max(now, SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                self.now.fetch_sub(1, SeqCst);
                Digest::parse(DIGEST).map_err(|e| ResolveError {
                    image: reference.to_string(),
                    reason: e.to_string(),
                })
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_review_with_thousands_of_images_costs_a_bounded_number_of_lookups() {
        use std::sync::atomic::Ordering::SeqCst;
        let images: Vec<String> = (0..2_000)
            .map(|i| format!("r{i}.example/app:{i}"))
            .collect();
        let refs: Vec<&str> = images.iter().map(String::as_str).collect();
        let object = deployment(&refs);
        let slow = Slow::default();
        let open = probity_probe::deadline::scope(
            Duration::from_secs(10),
            mutate(
                &request(Operation::Create, object.clone(), None),
                &[pin_policy(RegistryUnavailable::Allow)],
                &BTreeMap::new(),
                Some(&slow),
            ),
        )
        .await;
        assert_eq!(slow.calls.load(SeqCst), MAX_IMAGES_PER_REVIEW);
        assert!(
            slow.peak.load(SeqCst) <= LOOKUPS_AT_ONCE,
            "{}",
            slow.peak.load(SeqCst)
        );
        assert!(open.allowed);
        let patched = open
            .patch
            .as_ref()
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        assert_eq!(patched, MAX_IMAGES_PER_REVIEW);
        assert_eq!(open.warnings.len(), MAX_WARNINGS + 1, "{:?}", open.warnings);
        assert!(
            open.warnings
                .iter()
                .all(|w| w.chars().count() <= MAX_WARNING_CHARS)
        );
        assert!(
            open.audit
                .get("pinned")
                .is_some_and(|a| a.chars().count() <= MAX_AUDIT_BYTES)
        );

        let closed = mutate(
            &request(Operation::Create, object, None),
            &[pin_policy(RegistryUnavailable::Deny)],
            &BTreeMap::new(),
            Some(&Slow::default()),
        )
        .await;
        assert!(!closed.allowed);
        let message = closed.message.unwrap_or_default();
        assert!(
            message.contains("more than 64 distinct images"),
            "{}",
            &message[..200]
        );
        assert!(message.chars().count() <= crate::admission::validate::MAX_MESSAGE_BYTES);
    }

    #[tokio::test]
    async fn only_listed_registries_are_asked() {
        let table = Table {
            listed_only: true,
            ..Table::default()
        };
        let mut policy = pin_policy(RegistryUnavailable::Allow);
        policy.spec.images.allowed_registries = vec!["ghcr.io/acme".to_owned()];
        let object = deployment(&[
            "ghcr.io/acme/api:2",
            "ghcr.io/other/api:2",
            "169.254.169.254/latest:1",
        ]);
        let r = mutate(
            &request(Operation::Create, object.clone(), None),
            &[policy],
            &BTreeMap::new(),
            Some(&table),
        )
        .await;
        assert_eq!(
            table
                .calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            ["ghcr.io/acme/api:2"]
        );
        assert_eq!(
            r.patch.as_ref().and_then(Value::as_array).map(Vec::len),
            Some(1)
        );
        assert_eq!(
            r.warnings
                .iter()
                .filter(|w| w.contains("not in the allowedRegistries"))
                .count(),
            2,
            "{:?}",
            r.warnings
        );

        // A pinning policy without an allowlist pins nothing, and says so.
        let table = Table {
            listed_only: true,
            ..Table::default()
        };
        let r = mutate(
            &request(Operation::Create, object, None),
            &[pin_policy(RegistryUnavailable::Allow)],
            &BTreeMap::new(),
            Some(&table),
        )
        .await;
        assert!(
            table
                .calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
        );
        assert!(r.patch.is_none());
        assert_eq!(r.warnings.len(), 3, "{:?}", r.warnings);
    }

    #[tokio::test]
    async fn dry_runs_are_answered_from_the_cache_only() {
        let mut req = request(Operation::Create, deployment(&["nginx:1.27"]), None);
        req.dry_run = true;
        let cold = Table::default();
        let r = mutate(
            &req,
            &[pin_policy(RegistryUnavailable::Allow)],
            &BTreeMap::new(),
            Some(&cold),
        )
        .await;
        assert!(
            cold.calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty(),
            "no registry call"
        );
        assert!(r.patch.is_none());
        assert!(
            r.warnings.iter().any(|w| w.contains("dry run")),
            "{:?}",
            r.warnings
        );
        let warm = Table {
            cache: Digest::parse(DIGEST).ok(),
            ..Table::default()
        };
        let r = mutate(
            &req,
            &[pin_policy(RegistryUnavailable::Allow)],
            &BTreeMap::new(),
            Some(&warm),
        )
        .await;
        assert!(
            warm.calls
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty()
        );
        assert_eq!(
            r.patch.as_ref().and_then(Value::as_array).map(Vec::len),
            Some(1)
        );
    }

    #[tokio::test]
    async fn image_volumes_and_new_debug_containers_are_pinned() {
        let mut object = deployment(&[&format!("nginx:1.27@{DIGEST}")]);
        object["spec"]["template"]["spec"]["volumes"] = json!([
            {"name": "cfg", "configMap": {"name": "c"}},
            {"name": "model", "image": {"reference": "quay.io/acme/model:1"}},
        ]);
        let r = mutate(
            &request(Operation::Create, object, None),
            &[pin_policy(RegistryUnavailable::Allow)],
            &BTreeMap::new(),
            Some(&Table::default()),
        )
        .await;
        assert_eq!(
            r.patch,
            Some(
                json!([{"op": "replace", "path": "/spec/template/spec/volumes/1/image/reference",
                         "value": format!("quay.io/acme/model:1@{DIGEST}")}])
            )
        );

        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "shop"},
            "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}});
        let mut debugged = pod.clone();
        debugged["spec"]["ephemeralContainers"] =
            json!([{"name": "debug", "image": "busybox:1.36"}]);
        let mut update = request(Operation::Update, debugged, Some(pod));
        update.sub_resource = Some("ephemeralcontainers".to_owned());
        let r = mutate(
            &update,
            &[pin_policy(RegistryUnavailable::Allow)],
            &BTreeMap::new(),
            Some(&Table::default()),
        )
        .await;
        assert_eq!(
            r.patch,
            Some(
                json!([{"op": "replace", "path": "/spec/ephemeralContainers/0/image",
                         "value": format!("busybox:1.36@{DIGEST}")}])
            ),
            "only the new debug container: the app container is unchanged"
        );
    }
}
