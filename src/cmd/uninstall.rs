//! `probity uninstall`: the chart's pre-delete hook.

use std::time::Duration;

use anyhow::Context as _;
use probity::controller::uninstall::{self, Uninstall};

use super::cli::UninstallArgs;
use super::{Exit, on_cluster};

/// Runs `probity uninstall`: each step on stdout, the error chain on
/// stderr.
pub(super) fn run(args: &UninstallArgs) -> Exit {
    let what = Uninstall {
        webhook_configuration: args.webhook_configuration.clone(),
        deployment: args.deployment.clone(),
        namespace: args.namespace.clone(),
        timeout: Duration::from_secs(args.timeout),
    };
    on_cluster(|client| async move {
        uninstall::run(&client, &what, &mut |line| println!("{line}"))
            .await
            .context("uninstall")
    })
}
