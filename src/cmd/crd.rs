//! `probity crd`: the CRDs as YAML, their Markdown field reference, or
//! applied to the cluster.

use std::time::Duration;

use anyhow::Context as _;

use super::{Exit, on_cluster};

pub(super) fn run(reference: bool, apply: bool) -> Exit {
    if apply {
        return apply_crds();
    }
    let text = if reference {
        probity::policy::crd_reference()
    } else {
        probity::policy::crds_yaml()
    };
    super::output::print(&text)
}

/// Runs `probity crd --apply`.
fn apply_crds() -> Exit {
    on_cluster(|client| async move {
        probity::controller::install_crds(&client, Duration::from_secs(60))
            .await
            .context("applying the CRDs")?;
        for crd in probity::policy::crds() {
            println!(
                "applied customresourcedefinition/{}",
                kube::ResourceExt::name_any(&crd)
            );
        }
        Ok(())
    })
}
