//! probity: keeps Kubernetes workloads on pinned images and honest probes.
//!
//! The library half of the `probity` binary: the policy engine every entry
//! point shares, and the manifest reader and reporters of `probity lint`.
//!
//! ```
//! use probity::policy::{Classified, ReadinessPolicySpec, Workload, evaluate};
//!
//! let manifest = serde_json::json!({
//!     "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
//!     "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}},
//! });
//! let Classified::Workload(workload) = Workload::classify(&manifest)? else { unreachable!() };
//! let ids: Vec<&str> = evaluate(&ReadinessPolicySpec::default(), &workload)
//!     .iter()
//!     .map(|f| f.rule.id)
//!     .collect();
//! assert_eq!(ids, ["PRB001", "PRB002", "PRB101", "PRB102"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod admission;
pub mod controller;
pub mod emit;
pub mod image;
pub mod lint;
pub mod manifest;
pub mod pin;
pub mod policy;
pub mod registry;
