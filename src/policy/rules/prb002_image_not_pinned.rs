use super::{Cx, Finding, rule};
use crate::image::Reference;

rule! {
    /// ## What it does
    /// Flags images without an `@sha256:` digest when the policy requires
    /// one (`images.requireDigest`).
    ///
    /// ## Why it matters
    /// A tag is a pointer that can move: a re-pushed `1.4.2`, a compromised
    /// registry, or a node with a stale cache can each run content nobody
    /// reviewed. A digest names the content itself, so every replica runs
    /// exactly the same bytes.
    ///
    /// ## Example
    /// ```yaml
    /// image: ghcr.io/acme/web:1.4.2
    /// ```
    ///
    /// ## Fix
    /// Append the digest and keep the tag for readers:
    /// `image: ghcr.io/acme/web:1.4.2@sha256:…`
    /// (`crane digest ghcr.io/acme/web:1.4.2` prints the digest).
    id: "PRB002",
    name: "image-not-pinned",
    help: "append the digest: image: app:1.4.2@sha256:…",
}

pub(super) fn check(cx: &Cx<'_>, image: &Reference, out: &mut Vec<Finding>) {
    if cx.policy.images.require_digest && !image.is_pinned() {
        let message = format!("image {image} is not pinned to a digest");
        out.push(cx.finding(&META, cx.image_field, message));
    }
}
