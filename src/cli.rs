//! Command-line surface.

use clap::{Parser, Subcommand, ValueEnum};

/// Stop one slow dependency from taking a platform down: pinned image
/// digests and honest probes, enforced in CI and in the cluster.
#[derive(Debug, Parser)]
#[command(name = "probity", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "PROBITY_LOG_FORMAT")]
    pub(crate) log_format: LogFormat,

    /// Log filter, in `tracing` env-filter syntax (e.g. `info,probity=debug`).
    #[arg(long, global = true, default_value = "info", env = "PROBITY_LOG")]
    pub(crate) log_level: String,

    #[command(subcommand)]
    pub(crate) command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {}

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
        let cli = Cli::try_parse_from(["probity", "--log-format", "json"]).expect("parse");
        assert_eq!(cli.log_format, LogFormat::Json);
        let err = Cli::try_parse_from(["probity", "--log-format", "xml"]).expect_err("bad value");
        assert!(
            err.to_string().contains("possible values: text, json"),
            "{err}"
        );
    }
}
