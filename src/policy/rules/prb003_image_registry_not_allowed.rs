use super::{Cx, Finding, rule};
use crate::image::Reference;

rule! {
    /// ## What it does
    /// Flags images from a registry that `images.allowedRegistries` does not
    /// list. An entry is a registry host (`ghcr.io`, `registry.internal:5000`)
    /// or a registry with a path prefix (`ghcr.io/acme`). References without
    /// a registry come from `docker.io`.
    ///
    /// ## Why it matters
    /// Images from outside the registries you mirror and scan bypass your
    /// supply chain, and an outage of a public registry becomes your outage
    /// the next time a pod is rescheduled.
    ///
    /// ## Example
    /// ```yaml
    /// # allowedRegistries: [registry.internal:5000]
    /// image: nginx:1.27    # docker.io/library/nginx
    /// ```
    ///
    /// ## Fix
    /// Mirror the image into an allowed registry and reference it there, or
    /// add the registry to the policy.
    id: "PRB003",
    name: "image-registry-not-allowed",
    help: "pull from an allowed registry, or add this one to images.allowedRegistries",
}

pub(super) fn check(cx: &Cx<'_>, image: &Reference, out: &mut Vec<Finding>) {
    let allowed = &cx.policy.images.allowed_registries;
    if allowed.is_empty() {
        return;
    }
    let name = image.name();
    if !cx.policy.images.lists_registry_of(image) {
        let message = format!(
            "image {name} comes from {}, which is not an allowed registry ({})",
            image.registry(),
            allowed.join(", ")
        );
        out.push(cx.finding(&META, cx.image_field, message));
    }
}
