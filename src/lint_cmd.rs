//! `probity lint`: the glue between the command line and the library.

use std::io::Write as _;

use probity::manifest::input::{self, Input};
use probity::lint::policies::{self, Policy};
use probity::lint::{self, Problem, Report, report};
use probity::policy::rules;

use crate::cli::LintArgs;

/// Runs `probity lint` and returns its exit status.
pub(crate) fn run(args: &LintArgs) -> u8 {
    if let Some(rule) = &args.explain {
        return explain(rule);
    }
    let policies = match load_policies(args) {
        Ok(p) => p,
        Err(message) => {
            eprintln!("error: {message}");
            return 2;
        }
    };
    let (inputs, unreadable) = input::collect(&args.paths);
    let mut result = lint::lint(&inputs, &policies);
    let unreadable = unreadable.into_iter().map(|u| Problem {
        file: u.name,
        pos: None,
        message: u.message,
    });
    result.errors.splice(0..0, unreadable);
    emit(&result, args)
}

fn emit(result: &Report, args: &LintArgs) -> u8 {
    let code = result.exit_code();
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr().lock();
    match report::write(result, args.format, args.quiet, &mut out, &mut err) {
        // A reader that closed the pipe (`| head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => code,
        Err(e) => {
            let _ = writeln!(err, "error: writing output: {e}");
            2
        }
        Ok(()) => code,
    }
}

fn load_policies(args: &LintArgs) -> Result<Vec<Policy>, String> {
    if args.policy.is_empty() {
        return Ok(vec![Policy::builtin()]);
    }
    let (inputs, unreadable) = input::collect(&args.policy);
    if let Some(u) = unreadable.first() {
        return Err(format!("policy {u}"));
    }
    let mut all = Vec::new();
    for input in &inputs {
        all.extend(load_one(input)?);
    }
    Ok(all)
}

/// `probity webhook-config`: both webhook configurations as YAML.
pub(crate) fn webhook_config(args: &crate::cli::WebhookConfigArgs) -> u8 {
    use probity::admission::config::{Endpoint, WebhookConfig};
    let ca_bundle = match &args.ca_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(pem) => Some(pem),
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                return 2;
            }
        },
        None => None,
    };
    let config = WebhookConfig {
        name: args.name.clone(),
        endpoint: match &args.url {
            Some(url) => Endpoint::Url(url.clone()),
            None => Endpoint::Service {
                namespace: args.namespace.clone(),
                name: args.service.clone(),
                port: args.service_port,
            },
        },
        namespace: args.namespace.clone(),
        failure_policy: args.failure_policy.clone(),
        timeout_seconds: args.timeout_seconds,
        ca_bundle,
    };
    let text = probity::emit::document(&config.validating())
        + &probity::emit::document(&config.mutating());
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("error: writing output: {e}");
            2
        }
    }
}

/// `probity vap`: the backstop objects of every policy in `args.paths`.
pub(crate) fn vap(args: &crate::cli::VapArgs) -> u8 {
    let (inputs, unreadable) = input::collect(&args.paths);
    if let Some(u) = unreadable.first() {
        eprintln!("error: {u}");
        return 2;
    }
    let mut text = String::new();
    for input in &inputs {
        let policies = match load_one(input) {
            Ok(p) => p,
            Err(message) => {
                eprintln!("error: {message}");
                return 2;
            }
        };
        for policy in &policies {
            let (vap, binding) = probity::admission::vap::backstop(policy, &args.exclude_namespace);
            text.push_str(&probity::emit::document(&vap));
            text.push_str(&probity::emit::document(&binding));
        }
    }
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("error: writing output: {e}");
            2
        }
    }
}

fn load_one(input: &Input) -> Result<Vec<Policy>, String> {
    policies::load(input).map_err(|e| format!("policy {e}"))
}

fn explain(rule: &str) -> u8 {
    let mut out = std::io::stdout().lock();
    let text = if rule.eq_ignore_ascii_case("all") {
        rules::ALL
            .iter()
            .map(|r| format!("{} [{}] {}\n", r.id, r.name, r.help))
            .collect::<String>()
    } else {
        match rules::find(rule) {
            Some(r) => format!("# {} {}\n\n{}", r.id, r.name, r.explain()),
            None => {
                eprintln!("error: unknown rule {rule:?}; `probity lint --explain all` lists them");
                return 2;
            }
        }
    };
    match out.write_all(text.as_bytes()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(_) => 2,
    }
}
