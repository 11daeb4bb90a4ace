//! What pinning needs of a registry: a tag's digest now, or a recent one
//! from the cache. The registry client implements it; the webhook and the
//! controller's tests use their own.

use futures::future::BoxFuture;

use crate::image::{Digest, Reference};

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
    /// Whether `registry` may be asked whatever the policies list (the
    /// operator's `--registry-allow`).
    fn always_allowed(&self, registry: &str) -> bool {
        let _ = registry;
        false
    }

    /// A digest answered recently, without asking the registry.
    fn cached(&self, reference: &Reference) -> Option<Digest> {
        let _ = reference;
        None
    }

    /// The digest `reference`'s tag points at now.
    fn resolve<'a>(
        &'a self,
        reference: &'a Reference,
    ) -> BoxFuture<'a, Result<Digest, ResolveError>>;
}
