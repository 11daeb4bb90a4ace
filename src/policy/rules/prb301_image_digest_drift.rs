use super::rule;

rule! {
    /// ## What it does
    /// Compares the image digests the kubelet reports
    /// (`status.containerStatuses[].imageID`) across the pods of one
    /// workload revision (the same `pod-template-hash` or
    /// `controller-revision-hash`), container by container, and flags the
    /// pods whose digest differs from the rest. A runtime rule: the operator
    /// evaluates it from pod status; `probity lint` cannot see it.
    ///
    /// ## Why it matters
    /// Replicas of one revision are meant to be identical. When a tag moves
    /// while pods are being scheduled (`:latest`, or any mutable tag), nodes
    /// pull different images under the same name: one replica runs different
    /// code, writes a different format, and poisons a consumer group or a
    /// cache while every dashboard shows one version.
    ///
    /// ## Example
    /// ```yaml
    /// # web-7d9c-a  imageID: registry/web@sha256:1111...
    /// # web-7d9c-b  imageID: registry/web@sha256:1111...
    /// # web-7d9c-c  imageID: registry/web@sha256:2222...   <- flagged
    /// ```
    ///
    /// ## Fix
    /// Pin the image by digest (`image: registry/web:1.4@sha256:...`) so
    /// every node pulls the same bytes, then roll the workload.
    id: "PRB301",
    name: "image-digest-drift",
    help: "pin the image by digest and roll the workload so every replica runs the same image",
}
