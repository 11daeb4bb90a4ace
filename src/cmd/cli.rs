//! Command-line surface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use probity::lint::report::Format;

/// Stop one slow dependency from taking a platform down: pinned image
/// digests and honest probes, enforced in CI and in the cluster.
#[derive(Debug, Parser)]
#[command(name = "probity", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PROBITY_LOG_FORMAT")]
    pub(crate) log_format: LogFormat,

    /// Log filter, in `tracing` env-filter syntax (e.g. `info,probity=debug`).
    /// Default: `info` for `operator`, `warn` otherwise.
    #[arg(long, global = true, env = "PROBITY_LOG")]
    pub(crate) log_level: Option<String>,

    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Check manifests for `:latest`, unpinned images and dishonest probes.
    ///
    /// Exit status: 0 clean, 1 violations, 2 usage or input errors.
    Lint(LintArgs),
    /// Print the ReadinessPolicy and ClusterReadinessPolicy
    /// CustomResourceDefinitions as YAML (`probity crd | kubectl apply -f -`).
    Crd {
        /// Print a Markdown field reference instead.
        #[arg(long, conflicts_with = "apply")]
        reference: bool,
        /// Apply them to the cluster ($KUBECONFIG or the in-cluster
        /// service account) with server-side apply, forcing ownership, and
        /// wait until they are established: what the chart's CRD hook runs
        /// on install and upgrade.
        #[arg(long)]
        apply: bool,
    },
    /// Remove what the operator made outside its chart: the webhook
    /// configurations, then (after scaling the operator to zero and waiting
    /// for its pods) the admission backstops it applied. The chart runs it
    /// as a pre-delete hook.
    Uninstall(UninstallArgs),
    /// Check an installation: each operator pod's /readyz answers 200 and
    /// admission denies a `:latest` Deployment (server-side dry run) in a
    /// namespace an Enforce policy covers. The chart's `helm test` runs it.
    ///
    /// Exit status: 0 both hold, 1 one does not within --timeout.
    Selftest(SelftestArgs),
    /// Run the operator: keep ReadinessPolicy status, Events and drift
    /// detection current. Uses $KUBECONFIG or the in-cluster service account.
    Operator(Box<OperatorArgs>),
    /// Pin image tags in manifest files to the digests their registries
    /// serve now (`repo:tag` -> `repo:tag@sha256:...`), in place, keeping
    /// comments and formatting.
    ///
    /// Exit status: 0 every image pinned, 1 some image left unpinned (or
    /// would change, with --dry-run), 2 usage or input errors.
    Pin(PinArgs),
    /// Print the Validating- and MutatingWebhookConfiguration for the
    /// operator's webhooks, with safe defaults (kube-system and the
    /// operator's namespace excluded, failurePolicy Ignore, sideEffects
    /// None, matchPolicy Equivalent).
    WebhookConfig(WebhookConfigArgs),
    /// Print the ValidatingAdmissionPolicy backstop (policy + binding) of
    /// each ReadinessPolicy / ClusterReadinessPolicy in the files, for
    /// GitOps; the operator keeps the same objects in sync by itself.
    ///
    /// Exit status: 0 printed, 2 unreadable or invalid policies.
    Vap(VapArgs),
    /// Print a shell completion script (`probity completions bash >
    /// /etc/bash_completion.d/probity`; zsh: a file `_probity` on $fpath;
    /// fish: ~/.config/fish/completions/probity.fish).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `probity pin`.
#[derive(Debug, Args)]
pub(crate) struct PinArgs {
    /// Files or directories (*.yaml, *.yml, *.json, recursively); `-` reads
    /// standard input and writes the result to standard output.
    #[arg(value_name = "PATH", required = true)]
    pub(crate) paths: Vec<PathBuf>,

    /// Print a diff of what would change; write nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,

    /// Registry credentials: a Docker config file (default:
    /// $DOCKER_CONFIG/config.json or ~/.docker/config.json, when present).
    #[arg(long, value_name = "FILE")]
    pub(crate) registry_config: Option<PathBuf>,

    /// A registry (`host[:port]`) that may be reached over plain HTTP;
    /// loopback registries always may. Repeatable or comma-separated.
    #[arg(long, value_name = "HOST", value_delimiter = ',')]
    pub(crate) insecure_registry: Vec<String>,

    /// Seconds allowed per registry call.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub(crate) timeout: u64,
}

/// `probity selftest`.
#[derive(Debug, Args)]
pub(crate) struct SelftestArgs {
    /// The operator's metrics Service: /readyz is asked of each ready
    /// endpoint it lists, pod to pod (no cluster DNS or Service proxy
    /// needed).
    #[arg(long, value_name = "NAME")]
    pub(crate) service: String,

    /// The Service's namespace.
    #[arg(
        long,
        env = "POD_NAMESPACE",
        default_value = "default",
        value_name = "NS"
    )]
    pub(crate) service_namespace: String,

    /// The admin port /readyz is served on.
    #[arg(long, default_value_t = 8080, value_name = "PORT")]
    pub(crate) port: u16,

    /// A namespace an Enforce policy covers, where a `:latest` Deployment
    /// must be denied.
    #[arg(long, value_name = "NS")]
    pub(crate) namespace: String,

    /// Seconds both checks may take, together.
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=600))]
    pub(crate) timeout: u64,
}

/// `probity uninstall`.
#[derive(Debug, Args)]
pub(crate) struct UninstallArgs {
    /// Name of the validating and mutating webhook configurations.
    #[arg(long, value_name = "NAME")]
    pub(crate) webhook_configuration: String,

    /// The operator's Deployment, scaled to zero before its backstops are
    /// removed (a running operator re-creates them).
    #[arg(long, value_name = "NAME")]
    pub(crate) deployment: Option<String>,

    /// The Deployment's namespace.
    #[arg(
        long,
        env = "POD_NAMESPACE",
        default_value = "default",
        value_name = "NS"
    )]
    pub(crate) namespace: String,

    /// Seconds the operator's pods may take to go.
    #[arg(long, default_value_t = 90, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) timeout: u64,
}

/// `probity webhook-config`.
#[derive(Debug, Args)]
pub(crate) struct WebhookConfigArgs {
    /// Name of both configuration objects.
    #[arg(long, default_value = "probity", value_name = "NAME")]
    pub(crate) name: String,

    /// The operator's namespace (excluded, with kube-system).
    #[arg(long, default_value = "probity", value_name = "NS")]
    pub(crate) namespace: String,

    /// More namespaces the webhooks never see (give the operator the same
    /// list, so its backstops skip them too). Repeatable or comma-separated.
    #[arg(long, value_name = "NS", value_delimiter = ',')]
    pub(crate) exclude_namespace: Vec<String>,

    /// The webhook Service, in --namespace.
    #[arg(
        long,
        default_value = "probity-webhook",
        value_name = "NAME",
        conflicts_with = "url"
    )]
    pub(crate) service: String,

    /// The webhook Service's port.
    #[arg(long, default_value_t = 443, value_name = "PORT")]
    pub(crate) service_port: u16,

    /// Reach the webhooks at this URL prefix instead of a Service
    /// (`https://127.0.0.1:8443`, for local runs).
    #[arg(long, value_name = "URL")]
    pub(crate) url: Option<String>,

    /// What the API server does when the webhooks cannot answer.
    #[arg(long, default_value = "Ignore", value_parser = ["Ignore", "Fail"])]
    pub(crate) failure_policy: String,

    /// Seconds the API server waits for an answer.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=30))]
    pub(crate) timeout_seconds: u8,

    /// Embed this PEM CA bundle (default: left to the operator's
    /// self-managed certificates or cert-manager's CA injector).
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_file: Option<PathBuf>,
}

/// `probity vap`.
#[derive(Debug, Args)]
pub(crate) struct VapArgs {
    /// Policy files or directories; `-` reads standard input.
    #[arg(value_name = "PATH", required = true)]
    pub(crate) paths: Vec<PathBuf>,

    /// Namespaces the bindings never match. Repeatable or comma-separated.
    #[arg(
        long,
        value_name = "NS",
        value_delimiter = ',',
        default_value = "kube-system"
    )]
    pub(crate) exclude_namespace: Vec<String>,
}

/// `probity operator`.
#[derive(Debug, Args)]
pub(crate) struct OperatorArgs {
    /// Address of /livez, /readyz, /startupz and /metrics.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "0.0.0.0:8080",
        env = "PROBITY_ADMIN_ADDR"
    )]
    pub(crate) admin_addr: std::net::SocketAddr,

    /// Elect a leader on a Lease so several replicas can run; only the
    /// leader writes status and Events.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub(crate) leader_election: bool,

    /// Name of the leader Lease.
    #[arg(long, default_value = "probity-operator", value_name = "NAME")]
    pub(crate) lease_name: String,

    /// Namespace of the leader Lease (default: $POD_NAMESPACE, else `default`).
    #[arg(
        long,
        env = "POD_NAMESPACE",
        default_value = "default",
        value_name = "NS"
    )]
    pub(crate) lease_namespace: String,

    /// Seconds a lease stays valid without renewal; the renew deadline is
    /// two thirds of it.
    #[arg(long, default_value_t = 15, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(2..=600))]
    pub(crate) lease_duration: u64,

    /// This replica's identity in the Lease and in Events (default:
    /// $POD_NAME, else the host name and process id).
    #[arg(long, env = "POD_NAME", value_name = "NAME")]
    pub(crate) identity: Option<String>,

    /// PRB303 window: most replicas restarting within it is flagged.
    #[arg(long, default_value_t = 300, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(10..))]
    pub(crate) restart_window: u64,

    /// Seconds between the first SIGTERM and the end of work: /readyz fails
    /// at once while webhooks and caches keep serving, so endpoint removal
    /// reaches the API server first. A second signal stops at once.
    #[arg(long, default_value_t = 5, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(0..=300))]
    pub(crate) drain_delay: u64,

    /// Seconds in-flight admission reviews get after the drain delay.
    #[arg(long, default_value_t = 10, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=300))]
    pub(crate) drain_deadline: u64,

    /// Apply the CRDs at start (for local runs; Helm installs them otherwise).
    #[arg(long)]
    pub(crate) install_crds: bool,

    /// Serve the admission webhooks (/validate, /mutate) over HTTPS on this
    /// address; without it no webhooks are served.
    #[arg(
        long,
        value_name = "ADDR",
        env = "PROBITY_WEBHOOK_ADDR",
        help_heading = "Webhooks"
    )]
    pub(crate) webhook_addr: Option<std::net::SocketAddr>,

    /// Serving certificate chain (PEM), e.g. a mounted cert-manager Secret;
    /// reloaded when it changes. Without it the operator manages its own CA
    /// and certificate in --tls-secret.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key_file",
        help_heading = "Webhooks"
    )]
    pub(crate) tls_cert_file: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert-file.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_cert_file",
        help_heading = "Webhooks"
    )]
    pub(crate) tls_key_file: Option<PathBuf>,

    /// Require a client certificate signed by this CA (PEM) on the webhook
    /// port: the API server's, configured with an AdmissionConfiguration
    /// kubeconfig for the webhook. Read at start.
    #[arg(long, value_name = "FILE", help_heading = "Webhooks")]
    pub(crate) client_ca_file: Option<PathBuf>,

    /// Self-managed certificates: the Secret (in the lease namespace) that
    /// holds the CA and serving certificate.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "probity-webhook-tls",
        help_heading = "Webhooks"
    )]
    pub(crate) tls_secret: String,

    /// Self-managed certificates: DNS names to cover (the webhook Service,
    /// `svc.ns.svc`). Repeatable or comma-separated.
    #[arg(
        long,
        value_name = "NAME",
        value_delimiter = ',',
        help_heading = "Webhooks"
    )]
    pub(crate) tls_dns_name: Vec<String>,

    /// Self-managed certificates: IP addresses to cover. Repeatable or
    /// comma-separated.
    #[arg(
        long,
        value_name = "IP",
        value_delimiter = ',',
        help_heading = "Webhooks"
    )]
    pub(crate) tls_ip_address: Vec<std::net::IpAddr>,

    /// Self-managed certificates: lifetime of a serving certificate; it is
    /// renewed after two thirds of it.
    #[arg(long, value_name = "SECONDS", default_value_t = 31_536_000, value_parser = clap::value_parser!(u64).range(10..), help_heading = "Webhooks")]
    pub(crate) tls_cert_validity: u64,

    /// Self-managed certificates: the ValidatingWebhookConfiguration whose
    /// caBundle the operator keeps current (empty: none).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "probity",
        help_heading = "Webhooks"
    )]
    pub(crate) validating_webhook_configuration: String,

    /// Self-managed certificates: the MutatingWebhookConfiguration whose
    /// caBundle the operator keeps current (empty: none).
    #[arg(
        long,
        value_name = "NAME",
        default_value = "probity",
        help_heading = "Webhooks"
    )]
    pub(crate) mutating_webhook_configuration: String,

    /// Time budget of one mutating review, registry calls included; keep it
    /// under the webhook's timeoutSeconds.
    #[arg(long, value_name = "MS", default_value_t = 2500, value_parser = clap::value_parser!(u64).range(50..=29_000), help_heading = "Webhooks")]
    pub(crate) admission_budget_ms: u64,

    /// Keep a ValidatingAdmissionPolicy per policy with its static rules in
    /// CEL, so they hold while the webhooks are down (failurePolicy Ignore).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL", help_heading = "Webhooks")]
    pub(crate) vap_backstop: bool,

    /// Namespaces admission never judges, besides kube-system and the
    /// lease namespace: the backstops' bindings skip them, as the webhook
    /// configurations' namespace selectors should. Repeatable or
    /// comma-separated.
    #[arg(
        long,
        value_name = "NS",
        value_delimiter = ',',
        help_heading = "Webhooks"
    )]
    pub(crate) exclude_namespace: Vec<String>,

    /// Write wg-policy PolicyReports (`wgpolicyk8s.io/v1alpha2`): one per
    /// policy and namespace, exact summaries, capped results, owned by the
    /// policy. Needs the report CRDs (chart: policyReports.installCRDs).
    #[arg(long, help_heading = "Reports")]
    pub(crate) policy_reports: bool,

    /// Results listed per PolicyReport (the summary counts them all).
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1000), help_heading = "Reports")]
    pub(crate) policy_report_max_results: u64,

    /// Registry credentials for digest pinning: a Docker config file
    /// (`config.json`, or a mounted `.dockerconfigjson`).
    #[arg(
        long,
        value_name = "FILE",
        env = "PROBITY_REGISTRY_CONFIG",
        help_heading = "Registries"
    )]
    pub(crate) registry_config: Option<PathBuf>,

    /// A registry (`host[:port]`) that may be reached over plain HTTP;
    /// loopback registries always may. Repeatable or comma-separated.
    #[arg(
        long,
        value_name = "HOST",
        value_delimiter = ',',
        help_heading = "Registries"
    )]
    pub(crate) insecure_registry: Vec<String>,

    /// A registry (`host[:port]`) the operator may ask for digests whatever
    /// the policies list, at any address (private and loopback ones too).
    /// Without it only registries in a pinning policy's
    /// `images.allowedRegistries` are contacted, and only at public
    /// addresses (`--insecure-registry` hosts may be private too).
    /// Repeatable or comma-separated.
    #[arg(
        long,
        value_name = "REGISTRY",
        value_delimiter = ',',
        help_heading = "Registries"
    )]
    pub(crate) registry_allow: Vec<String>,

    /// A token service a registry may send the operator to, as
    /// `REGISTRY=HOST` (`docker.io=auth.docker.io` is built in); others
    /// must be the registry's own host. Repeatable.
    #[arg(
        long,
        value_name = "REGISTRY=HOST",
        value_parser = parse_token_host,
        help_heading = "Registries"
    )]
    pub(crate) registry_token_host: Vec<(String, String)>,

    /// Seconds a resolved tag -> digest answer is reused; `images.pin:
    /// Report` policies re-check their tags this often, and sooner (at most
    /// once a second) when a pod runs another digest than the answer.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 60,
        help_heading = "Registries"
    )]
    pub(crate) registry_cache_ttl: u64,
}

fn parse_token_host(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((registry, host))
            if !registry.is_empty() && !host.is_empty() && !host.contains('/') =>
        {
            Ok((registry.to_owned(), host.to_owned()))
        }
        _ => Err(format!(
            "expected REGISTRY=HOST, such as docker.io=auth.docker.io; got {value:?}"
        )),
    }
}

/// `probity lint`.
#[derive(Debug, Args)]
pub(crate) struct LintArgs {
    /// Files or directories (searched recursively for *.yaml, *.yml,
    /// *.json); `-` reads standard input.
    #[arg(value_name = "PATH", required_unless_present = "explain")]
    pub(crate) paths: Vec<PathBuf>,

    /// ReadinessPolicy / ClusterReadinessPolicy documents to apply instead of
    /// the built-in default policy. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub(crate) policy: Vec<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,

    /// Write the findings to FILE instead of standard output (notes,
    /// errors and the summary still go to standard error).
    #[arg(long, short, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,

    /// Rules to evaluate: ids (`PRB104`), id prefixes (`PRB1`: the probe
    /// rules), names, or `ALL` (the default). Repeatable or
    /// comma-separated.
    #[arg(long, value_name = "RULE", value_delimiter = ',')]
    pub(crate) select: Vec<String>,

    /// Rules to leave out, as for --select; the more specific of the two
    /// wins (`--select PRB1 --ignore PRB108`). Repeatable or
    /// comma-separated.
    #[arg(long, value_name = "RULE", value_delimiter = ',')]
    pub(crate) ignore: Vec<String>,

    /// Print only findings and errors: no notes, no summary.
    #[arg(long, short)]
    pub(crate) quiet: bool,

    /// Explain a rule (by id or name) and exit; `all` lists every rule.
    #[arg(long, value_name = "RULE", conflicts_with_all = ["paths", "policy", "select", "ignore", "output"])]
    pub(crate) explain: Option<String>,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn log_format_parses() {
        let cli =
            Cli::try_parse_from(["probity", "--log-format", "json", "lint", "-"]).expect("parse");
        assert_eq!(cli.log_format, LogFormat::Json);
        let err = Cli::try_parse_from(["probity", "--log-format", "xml", "lint", "-"])
            .expect_err("bad value");
        assert!(
            err.to_string().contains("possible values: text, json"),
            "{err}"
        );
    }

    #[test]
    fn lint_needs_paths_unless_explaining() {
        assert!(Cli::try_parse_from(["probity", "lint"]).is_err());
        assert!(Cli::try_parse_from(["probity", "lint", "--explain", "PRB001"]).is_ok());
        assert!(Cli::try_parse_from(["probity", "lint", "--explain", "PRB001", "x.yaml"]).is_err());
    }
}
