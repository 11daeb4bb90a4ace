use super::{Cx, Finding, rule};
use crate::image::Reference;

rule! {
    /// ## What it does
    /// Flags images tagged `latest`, and images with neither tag nor digest,
    /// which the runtime pulls as `latest`.
    ///
    /// ## Why it matters
    /// `latest` names whatever was pushed last. Two replicas started an hour
    /// apart can run different code under the same spec, and a rollback
    /// rolls back to nothing. One replica that pulled a different `latest`
    /// is enough to poison a consumer group.
    ///
    /// ## Example
    /// ```yaml
    /// containers:
    ///   - name: web
    ///     image: ghcr.io/acme/web          # implicit latest
    /// ```
    ///
    /// ## Fix
    /// Use a version tag, ideally with its digest:
    /// `image: ghcr.io/acme/web:1.4.2@sha256:…`.
    id: "PRB001",
    name: "image-latest-tag",
    help: "use a version tag, ideally pinned: image: app:1.4.2@sha256:…",
}

pub(super) fn check(cx: &Cx<'_>, image: &Reference, out: &mut Vec<Finding>) {
    if !cx.policy.images.forbid_latest || !image.is_latest() {
        return;
    }
    let message = match image.tag() {
        Some(_) => format!("image {} uses the `latest` tag", image.name()),
        None => format!(
            "image {} has no tag or digest, so it pulls `latest`",
            image.name()
        ),
    };
    out.push(cx.finding(&META, cx.image_field, message));
}
