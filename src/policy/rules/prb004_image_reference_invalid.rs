use super::{Cx, Finding, rule};
use crate::image::InvalidReference;

rule! {
    /// ## What it does
    /// Flags image references that do not follow the OCI / Docker reference
    /// grammar: uppercase repositories, malformed tags, digests of the wrong
    /// length or algorithm, empty images.
    ///
    /// ## Why it matters
    /// The kubelet cannot pull such an image: the pod sits in
    /// `InvalidImageName` and never starts. Catching it in CI is cheaper than
    /// catching it in a rollout.
    ///
    /// ## Example
    /// ```yaml
    /// image: ghcr.io/Acme/Web:1.0
    /// ```
    ///
    /// ## Fix
    /// Repositories are lowercase; tags are up to 128 of `[A-Za-z0-9_.-]`;
    /// digests are `sha256:` followed by 64 lowercase hex digits.
    id: "PRB004",
    name: "image-reference-invalid",
    help: "write a valid reference: [registry/]repository[:tag][@sha256:<64 hex>]",
}

pub(super) fn check(cx: &Cx<'_>, image: &str, err: &InvalidReference, out: &mut Vec<Finding>) {
    let message = if image.is_empty() {
        "container has no image".to_owned()
    } else {
        format!("image {image:?} is not a valid reference: {err}")
    };
    out.push(cx.finding(&META, cx.image_field, message));
}
