//! `probity webhook-config`: both webhook configurations as YAML.

use probity::admission::config::{Endpoint, WebhookConfig};

use super::Exit;
use super::cli::WebhookConfigArgs;

pub(super) fn run(args: &WebhookConfigArgs) -> Exit {
    let ca_bundle = match &args.ca_file {
        Some(path) => match std::fs::read_to_string(path) {
            Ok(pem) => Some(pem),
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                return Exit::Error;
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
        exclude_namespaces: args.exclude_namespace.clone(),
        failure_policy: args.failure_policy.clone(),
        timeout_seconds: args.timeout_seconds,
        ca_bundle,
    };
    let text = probity::emit::document(&config.validating())
        + &probity::emit::document(&config.mutating());
    super::output::print(&text)
}
