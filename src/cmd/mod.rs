//! The binary's own code: the command line ([`cli`]), one module per
//! subcommand, and what they share (exit statuses, standard output, logging).
//! Everything here is glue between arguments and the library.

pub(crate) mod cli;
mod crd;
mod lint;
mod operator;
mod output;
mod pin;
mod selftest;
mod telemetry;
mod uninstall;
mod vap;
mod webhook_config;

use std::process::ExitCode;

use clap::Parser as _;

pub(crate) use output::Output;

/// The exit statuses every subcommand shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// 0: done, nothing found.
    Success,
    /// 1: the command worked and found something: lint violations, or
    /// images left unpinned.
    Findings,
    /// 1: the operator stopped on a fatal error.
    Failed,
    /// 2: usage, input or output errors.
    Error,
}

// === impl Exit ===

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        match exit {
            Exit::Success => ExitCode::SUCCESS,
            Exit::Findings | Exit::Failed => ExitCode::from(1),
            Exit::Error => ExitCode::from(2),
        }
    }
}

/// Parses the command line, sets up logging and runs the subcommand.
pub(crate) fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let default_level = match cli.command {
        cli::Command::Operator(_) => "info",
        _ => "warn",
    };
    let level = cli.log_level.as_deref().unwrap_or(default_level);
    if let Err(err) = telemetry::init(cli.log_format, level) {
        eprintln!("probity: {err:#}");
        return Exit::Error.into();
    }
    let exit = match &cli.command {
        cli::Command::Lint(args) => lint::run(args),
        cli::Command::Operator(args) => operator::run(args),
        cli::Command::Pin(args) => pin::run(args),
        cli::Command::WebhookConfig(args) => webhook_config::run(args),
        cli::Command::Vap(args) => vap::run(args),
        cli::Command::Crd { reference, apply } => crd::run(*reference, *apply),
        cli::Command::Uninstall(args) => uninstall::run(args),
        cli::Command::Selftest(args) => selftest::run(args),
        cli::Command::Completions { shell } => completions(*shell),
    };
    exit.into()
}

/// `probity completions SHELL`.
fn completions(shell: clap_complete::Shell) -> Exit {
    use clap::CommandFactory as _;
    let mut text = Vec::new();
    clap_complete::generate(shell, &mut cli::Cli::command(), "probity", &mut text);
    output::print(&String::from_utf8_lossy(&text))
}

/// Runs `work` with a client for the cluster ($KUBECONFIG or the pod's
/// service account), on a runtime of its own: 0 when it succeeds, 1 with
/// the error chain on stderr when not.
pub(crate) fn on_cluster<F, Fut>(work: F) -> Exit
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return Exit::Error;
        }
    };
    let result = runtime.block_on(async {
        let client = anyhow::Context::context(
            kube::Client::try_default().await,
            "connecting to the cluster (set KUBECONFIG or run in a pod)",
        )?;
        work(client).await
    });
    match result {
        Ok(()) => Exit::Success,
        Err(e) => {
            eprintln!("error: {e:#}");
            Exit::Failed
        }
    }
}
