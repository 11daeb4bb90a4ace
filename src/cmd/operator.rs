//! `probity operator`: arguments to [`Options`], signals to shutdown
//! requests, and the async runtime around [`controller::run`].

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::Stream;
use probity::admission::certs::SelfManaged;
use probity::admission::config::excluded_namespaces;
use probity::controller::{self, LeaseOptions, Options, TlsSource, WebhookOptions};
use probity::registry::{self, DockerConfig, RegistryClient};

use super::Exit;
use super::cli::OperatorArgs;

/// Runs until a shutdown completes: [`Exit::Success`] after a clean stop,
/// [`Exit::Failed`] on a fatal error.
pub(super) fn run(args: &OperatorArgs) -> Exit {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            eprintln!("probity: cannot start the async runtime: {e}");
            return Exit::Failed;
        }
    };
    match runtime.block_on(operate(args)) {
        Ok(()) => Exit::Success,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "operator failed");
            eprintln!("probity: {e:#}");
            Exit::Failed
        }
    }
}

async fn operate(args: &OperatorArgs) -> anyhow::Result<()> {
    // Listen first: a signal during start-up is a shutdown request too.
    let signals = signals().context("listening for SIGTERM and SIGINT")?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster (set KUBECONFIG or run in a pod)")?;
    if args.install_crds {
        controller::install_crds(&client, Duration::from_secs(60))
            .await
            .context("installing CRDs")?;
    }
    let options = options(args)?;
    controller::run(client, options, signals).await?;
    Ok(())
}

/// Everything the command line says about how the operator runs.
fn options(args: &OperatorArgs) -> anyhow::Result<Options> {
    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "probity".to_owned());
        format!("{host}-{}", std::process::id())
    });
    let mut options = Options::new(&identity);
    options.admin_addr = args.admin_addr;
    options.restart_window = Duration::from_secs(args.restart_window);
    options.drain_delay = Duration::from_secs(args.drain_delay);
    options.drain_deadline = Duration::from_secs(args.drain_deadline);
    if args.leader_election {
        let mut lease = LeaseOptions::new(&args.lease_name, &args.lease_namespace, &identity);
        lease.lease_duration = Duration::from_secs(args.lease_duration);
        lease.renew_deadline = lease.lease_duration.mul_f64(2.0 / 3.0);
        lease.retry_period = (lease.lease_duration / 7).max(Duration::from_millis(250));
        options.lease = Some(lease);
    }
    if args.vap_backstop {
        options.backstop = Some(excluded_namespaces(
            &args.lease_namespace,
            &args.exclude_namespace,
        ));
    }
    if args.policy_reports {
        options.policy_reports =
            Some(usize::try_from(args.policy_report_max_results).unwrap_or(100));
    }
    let registry = Arc::new(registry_client(args)?);
    if let Some(path) = &args.registry_config {
        // A mounted Secret changes in place: follow it.
        registry.reload_credentials(path.clone(), Duration::from_secs(10));
    }
    options.registry = Some(Arc::clone(&registry));
    options.tag_ttl = Duration::from_secs(args.registry_cache_ttl);
    if let Some(addr) = args.webhook_addr {
        options.webhooks = Some(webhook_options(args, addr, registry));
    }
    Ok(options)
}

fn registry_client(args: &OperatorArgs) -> anyhow::Result<RegistryClient> {
    let credentials = match &args.registry_config {
        Some(path) => DockerConfig::read(path).context("--registry-config")?,
        None => DockerConfig::default(),
    };
    Ok(RegistryClient::new(registry::Options {
        cache_ttl: Duration::from_secs(args.registry_cache_ttl),
        insecure: args.insecure_registry.clone(),
        credentials,
        // Registry names come from workloads: public addresses only,
        // except the registries the cluster admin named (`--registry-allow`,
        // `--insecure-registry`).
        reach: registry::Reach::public_except(
            &[
                args.registry_allow.as_slice(),
                args.insecure_registry.as_slice(),
            ]
            .concat(),
        ),
        token_hosts: args.registry_token_host.clone(),
        public_reasons: true,
        allow: args.registry_allow.clone(),
        // Mounted credentials only: no programs named by a Secret.
        credential_helpers: false,
    })?)
}

fn webhook_options(
    args: &OperatorArgs,
    addr: std::net::SocketAddr,
    registry: Arc<RegistryClient>,
) -> WebhookOptions {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    let tls = match (&args.tls_cert_file, &args.tls_key_file) {
        (Some(cert), Some(key)) => TlsSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        _ => TlsSource::SelfManaged(SelfManaged {
            namespace: args.lease_namespace.clone(),
            secret: args.tls_secret.clone(),
            dns_names: args.tls_dns_name.clone(),
            ip_addresses: args.tls_ip_address.clone(),
            validating_config: non_empty(&args.validating_webhook_configuration),
            mutating_config: non_empty(&args.mutating_webhook_configuration),
            validity: Duration::from_secs(args.tls_cert_validity),
        }),
    };
    WebhookOptions {
        addr,
        tls,
        budget: Duration::from_millis(args.admission_budget_ms),
        resolver: Some(registry),
        client_ca: args.client_ca_file.clone(),
    }
}

/// One item per SIGTERM (what the kubelet sends) or SIGINT: the first
/// starts the drain, the second aborts it.
fn signals() -> std::io::Result<impl Stream<Item = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate())?;
    let int = signal(SignalKind::interrupt())?;
    Ok(futures::stream::unfold(
        (term, int),
        |(mut term, mut int)| async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "shutdown signal received");
            Some(((), (term, int)))
        },
    ))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::super::cli::{Cli, Command};

    fn backstop_exclusions(flags: &[&str]) -> Option<Vec<String>> {
        let cli = Cli::try_parse_from(
            ["probity", "operator", "--lease-namespace", "probity-system"]
                .iter()
                .chain(flags),
        )
        .expect("arguments");
        let Command::Operator(args) = cli.command else {
            panic!("not the operator");
        };
        super::options(&args).expect("options").backstop
    }

    #[test]
    fn excluded_namespaces_reach_the_backstop() {
        assert_eq!(
            backstop_exclusions(&[]),
            Some(vec!["kube-system".to_owned(), "probity-system".to_owned()])
        );
        assert_eq!(
            backstop_exclusions(&["--exclude-namespace", "legacy,sandbox"]),
            Some(
                ["kube-system", "probity-system", "legacy", "sandbox"]
                    .map(str::to_owned)
                    .to_vec()
            )
        );
        assert_eq!(backstop_exclusions(&["--vap-backstop", "false"]), None);
    }
}
