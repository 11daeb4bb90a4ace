//! `probity`: keeps Kubernetes workloads on pinned images and honest probes.

mod cli;
mod telemetry;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    if let Err(err) = telemetry::init(cli.log_format, &cli.log_level) {
        eprintln!("probity: {err:#}");
        return ExitCode::from(2);
    }
    match cli.command {
        None => {
            // No subcommand: show what there is, like `kubectl` does.
            let _ = <cli::Cli as clap::CommandFactory>::command().print_help();
            ExitCode::from(2)
        }
    }
}
