//! The command line as users run it, without a cluster: `probity lint`'s
//! rules, formats and inputs, the probes `probity-probe` recommends, and the
//! committed fuzz corpora replayed through the fuzz targets' own code.

mod fuzz_corpus;
mod lint_cli;
mod lint_rules;
mod recommended_probes;
