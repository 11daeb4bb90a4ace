//! `images.pin: Report`: the tags of matched workloads, resolved per
//! registry within per-tag budgets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::PoisonError;
use std::time::Duration;

use tokio::time::Instant;

use crate::controller::Context;
use crate::image::Digest;
use crate::policy::Policy;
use crate::registry::ResolveError;

/// The tags whose registry `policy` lists in `images.allowedRegistries`,
/// or the operator's `--registry-allow` allows, and the others, which are
/// never looked up: an image string is the workload author's, and so would
/// be the request the operator sends.
pub(super) fn split_listed(
    ctx: &Context,
    policy: &Policy,
    tags: &BTreeSet<String>,
) -> (BTreeSet<String>, BTreeSet<String>) {
    use crate::registry::Resolve as _;
    tags.iter().cloned().partition(|image| {
        crate::image::Reference::parse(image).is_ok_and(|reference| {
            policy.spec.images.lists_registry_of(&reference)
                || ctx
                    .options
                    .registry
                    .as_ref()
                    .is_some_and(|r| r.always_allowed(reference.registry()))
        })
    })
}

/// Tag -> digest answers, as of the last resolution.
pub(crate) type TagSnapshot = HashMap<String, Result<Digest, ResolveError>>;

/// Budget of one tag lookup.
pub(super) const TAG_BUDGET: Duration = Duration::from_secs(5);
/// Lookups in flight per registry.
pub(super) const PER_REGISTRY: usize = 4;
/// Registries asked at once.
pub(super) const REGISTRIES_AT_ONCE: usize = 8;

/// A tag a pod contradicts is asked again at most this often, whatever
/// the TTL: pod events cannot turn into a stream of registry requests.
pub(super) const RECHECK_AT_MOST: Duration = Duration::from_secs(1);

/// Resolves the tags not resolved within the tag TTL (`--registry-cache-ttl`),
/// and those in `recheck` (pods run another digest than the cached answer,
/// so the tag may have moved since) not resolved within [`RECHECK_AT_MOST`],
/// each within its own budget, a few at a time per registry, and returns
/// every current answer.
pub(super) async fn resolve_tags(
    ctx: &Context,
    wanted: &BTreeSet<String>,
    recheck: &BTreeSet<String>,
) -> TagSnapshot {
    use futures::StreamExt as _;
    let fresh = |ctx: &Context| -> (TagSnapshot, Vec<String>) {
        let tags = ctx.tags.lock().unwrap_or_else(PoisonError::into_inner);
        let mut snapshot = TagSnapshot::new();
        let mut stale = Vec::new();
        for image in wanted {
            let ttl = if recheck.contains(image) {
                RECHECK_AT_MOST.min(ctx.options.tag_ttl)
            } else {
                ctx.options.tag_ttl
            };
            match tags.get(image) {
                Some((answer, at)) if at.elapsed() < ttl => {
                    snapshot.insert(image.clone(), answer.clone());
                }
                _ => stale.push(image.clone()),
            }
        }
        (snapshot, stale)
    };
    let (mut snapshot, stale) = fresh(ctx);
    let Some(registry) = ctx.options.registry.as_ref() else {
        return snapshot;
    };
    if stale.is_empty() {
        return snapshot;
    }
    // Grouped by registry, each group with its own few slots, and each
    // lookup with its own budget: a registry that hangs holds only its own
    // slots and time, never another registry's (whose breaker would then
    // hear of timeouts that were not its own).
    let mut by_registry: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for image in stale {
        let registry = crate::image::Reference::parse(&image)
            .map(|r| r.registry().to_owned())
            .unwrap_or_default();
        by_registry.entry(registry).or_default().push(image);
    }
    let lookup = |image: String| async move {
        let answer = match crate::image::Reference::parse(&image) {
            Ok(reference) => {
                probity_probe::deadline::scope(TAG_BUDGET, registry.digest(&reference)).await
            }
            Err(e) => Err(ResolveError {
                image: image.clone(),
                reason: e.to_string(),
            }),
        };
        (image, answer)
    };
    let groups = by_registry.into_values().map(|images| {
        futures::stream::iter(images)
            .map(lookup)
            .buffer_unordered(PER_REGISTRY)
            .collect::<Vec<_>>()
    });
    let answers: Vec<(String, Result<Digest, ResolveError>)> = futures::stream::iter(groups)
        .buffer_unordered(REGISTRIES_AT_ONCE)
        .flat_map(futures::stream::iter)
        .collect()
        .await;
    {
        let mut tags = ctx.tags.lock().unwrap_or_else(PoisonError::into_inner);
        for (image, answer) in &answers {
            tags.insert(image.clone(), (answer.clone(), Instant::now()));
        }
        // Bounded: forget answers nobody asked for in a while.
        let keep = ctx.options.tag_ttl * 10;
        tags.retain(|_, (_, at)| at.elapsed() < keep);
    }
    snapshot.extend(answers);
    snapshot
}
