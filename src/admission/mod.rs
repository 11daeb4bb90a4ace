//! `probity operator`, the enforcement half: the validating and mutating
//! admission webhooks, served over rustls by every replica.
//!
//! - [`validate`]: every policy matching a workload, evaluated with the
//!   shared engine; Enforce denies listing every violation, Audit admits
//!   with warnings.
//! - [`mutate`]: `images.pin: Admission` rewrites tags to `tag@digest`.
//! - [`tls`]: the serving certificate, from files (reloaded when they
//!   change) or self-managed in a Secret.

pub mod certs;
pub mod config;
pub mod mutate;
pub mod review;
pub mod server;
pub mod tls;
pub mod validate;
pub mod vap;

pub use crate::registry::{Resolve, ResolveError};
pub use review::{DecodeError, Operation, Request, Response};
pub use server::{PolicySource, Webhooks};
