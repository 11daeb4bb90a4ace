//! `probity lint`: the glue between the command line and the library.

use probity::lint::policies::{self, Policy};
use probity::lint::{self, Outcome, Problem, report, select};
use probity::manifest::{self, Input};
use probity::policy::rules;

use super::cli::LintArgs;
use super::{Exit, Output};

/// Runs `probity lint`.
pub(super) fn run(args: &LintArgs) -> Exit {
    if let Some(rule) = &args.explain {
        return explain(rule);
    }
    let mut policies = match load_policies(&args.policy) {
        Ok(p) => p,
        Err(message) => {
            eprintln!("error: {message}");
            return Exit::Error;
        }
    };
    match select::deselected(&args.select, &args.ignore) {
        Ok(off) => select::apply(&mut policies, &off),
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Error;
        }
    }
    let mut out = match &args.output {
        None => Output::stdout(),
        Some(path) => match Output::file(path) {
            Ok(out) => out,
            Err(e) => {
                eprintln!("error: --output {}: {e}", path.display());
                return Exit::Error;
            }
        },
    };
    let (inputs, unreadable) = manifest::collect(&args.paths);
    // Line formats are printed as they are found; the others are one
    // document.
    let line_format: Option<&lint::Render> = match args.format {
        report::Format::Text => Some(&report::render_text),
        report::Format::Github => Some(&report::render_github),
        _ => None,
    };
    let mut result = match line_format {
        Some(render) => lint::lint_rendered(&inputs, &policies, render, &mut |text| {
            out.print(text);
        }),
        None => lint::lint(&inputs, &policies),
    };
    let unreadable = unreadable.into_iter().map(|u| Problem {
        file: u.name,
        pos: None,
        message: u.message,
    });
    result.errors.splice(0..0, unreadable);
    let exit = match result.outcome() {
        Outcome::Clean => Exit::Success,
        Outcome::Violations => Exit::Findings,
        Outcome::Errors => Exit::Error,
    };
    let mut err = std::io::stderr().lock();
    let _ = match args.format {
        report::Format::Text => report::text_end(&result, args.quiet, &mut out, &mut err),
        report::Format::Github => report::github_end(&result, args.quiet, &mut out, &mut err),
        format => report::write(&result, format, args.quiet, &mut out, &mut err),
    };
    out.finish(exit)
}

/// The policies in `paths`, or the built-in one when there are none.
fn load_policies(paths: &[std::path::PathBuf]) -> Result<Vec<Policy>, String> {
    if paths.is_empty() {
        return Ok(vec![Policy::builtin()]);
    }
    let (inputs, unreadable) = manifest::collect(paths);
    if let Some(u) = unreadable.first() {
        return Err(format!("policy {u}"));
    }
    let mut all = Vec::new();
    for input in &inputs {
        all.extend(load_one(input)?);
    }
    Ok(all)
}

/// The policies in one input.
pub(super) fn load_one(input: &Input) -> Result<Vec<Policy>, String> {
    policies::load(input).map_err(|e| format!("policy {e}"))
}

fn explain(rule: &str) -> Exit {
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
                return Exit::Error;
            }
        }
    };
    super::output::print(&text)
}
