//! End-to-end tests: one binary, so one shared control plane
//! (`probity_testenv::shared`) serves every module and each test isolates
//! itself in its own namespace. Tests that need a control plane of their own
//! (one they stop, or one whose writes they block) start it themselves.

#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "end-to-end tests wait on real processes in wall time"
)]

mod common;

mod admission;
mod attacks;
mod chart;
mod control_plane;
mod images;
mod operator;
mod operator_apiserver_restart;
mod operator_crd;
mod operator_drain;
mod operator_failover;
mod operator_tags;
mod pin_cli;
mod policy_report;
mod registry_auth;
