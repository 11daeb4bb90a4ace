//! `probity-probe`: honest liveness, deep readiness and the resilience
//! primitives readiness reports on, for Rust services on Kubernetes.
//!
//! This crate has no Kubernetes client dependency: it is what a service
//! embeds to answer the kubelet's probes truthfully.
