//! `probity`: keeps Kubernetes workloads on pinned images and honest probes.

mod cli;
mod lint_cmd;
mod operator_cmd;
mod pin_cmd;
mod telemetry;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let default_level = match cli.command {
        cli::Command::Operator(_) => "info",
        _ => "warn",
    };
    let level = cli.log_level.as_deref().unwrap_or(default_level);
    if let Err(err) = telemetry::init(cli.log_format, level) {
        eprintln!("probity: {err:#}");
        return ExitCode::from(2);
    }
    match &cli.command {
        cli::Command::Lint(args) => ExitCode::from(lint_cmd::run(args)),
        cli::Command::Operator(args) => ExitCode::from(operator_cmd::run(args)),
        cli::Command::Pin(args) => ExitCode::from(pin_cmd::run(args)),
        cli::Command::WebhookConfig(args) => ExitCode::from(lint_cmd::webhook_config(args)),
        cli::Command::Vap(args) => ExitCode::from(lint_cmd::vap(args)),
        cli::Command::Crd { reference } => {
            use std::io::Write as _;
            let text = if *reference {
                probity::policy::crd_reference()
            } else {
                probity::policy::crds_yaml()
            };
            let mut out = std::io::stdout().lock();
            match out.write_all(text.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("probity: writing standard output: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
