use super::rule;

rule! {
    /// ## What it does
    /// For policies with `images.pin: Report`, resolves each container's
    /// tag to the digest its registry serves now and compares it with the
    /// digest the pods report (`status.containerStatuses[].imageID`). Flags
    /// the workload when they differ: the tag moved after the pods pulled
    /// it. A runtime rule: the operator evaluates it; `probity lint` cannot
    /// see it.
    ///
    /// ## Why it matters
    /// A moved tag is a deploy nobody ran. The next pod that is scheduled,
    /// rescheduled or restarted on a new node pulls different code under
    /// the same name, and replicas silently diverge (PRB301 follows).
    ///
    /// ## Example
    /// ```yaml
    /// # image: registry/web:1.4
    /// # registry now: registry/web:1.4 -> sha256:2222...
    /// # pods run:     sha256:1111...            <- flagged
    /// ```
    ///
    /// ## Fix
    /// Pin the image by digest (`probity pin`, or `images.pin: Admission`)
    /// and roll out the digest you mean to run.
    id: "PRB302",
    name: "tag-moved",
    help: "pin the image by digest and roll out the digest you mean to run",
}
