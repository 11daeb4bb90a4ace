//! `probity crd`: the CRDs as YAML, or their Markdown field reference.

use super::Exit;

pub(super) fn run(reference: bool) -> Exit {
    let text = if reference {
        probity::policy::crd_reference()
    } else {
        probity::policy::crds_yaml()
    };
    super::output::print(&text)
}
