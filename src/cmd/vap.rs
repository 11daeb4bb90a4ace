//! `probity vap`: the backstop objects of every policy in the given files.

use probity::manifest;

use super::Exit;
use super::cli::VapArgs;

pub(super) fn run(args: &VapArgs) -> Exit {
    let (inputs, unreadable) = manifest::collect(&args.paths);
    if let Some(u) = unreadable.first() {
        eprintln!("error: {u}");
        return Exit::Error;
    }
    let mut text = String::new();
    for input in &inputs {
        let policies = match super::lint::load_one(input) {
            Ok(p) => p,
            Err(message) => {
                eprintln!("error: {message}");
                return Exit::Error;
            }
        };
        for policy in &policies {
            let (vap, binding) = probity::admission::vap::backstop(policy, &args.exclude_namespace);
            text.push_str(&probity::emit::document(&vap));
            text.push_str(&probity::emit::document(&binding));
        }
    }
    super::output::print(&text)
}
