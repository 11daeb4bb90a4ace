//! `probity`: keeps Kubernetes workloads on pinned images and honest probes.

mod cli;
mod lint_cmd;
mod telemetry;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if let Err(err) = telemetry::init(cli.log_format, &cli.log_level) {
        eprintln!("probity: {err:#}");
        return ExitCode::from(2);
    }
    match &cli.command {
        cli::Command::Lint(args) => ExitCode::from(lint_cmd::run(args)),
    }
}
