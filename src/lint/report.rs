//! Output formats of `probity lint`: text for people, JSON for scripts,
//! SARIF 2.1.0 for code-scanning tools, GitHub Actions annotations. All
//! write findings to stdout; text and GitHub write notes, errors and the
//! summary to stderr (GitHub also annotates input errors on stdout).

use std::io::{self, Write};

use serde_json::{Value, json};

use super::Report;
use crate::policy::Severity;
use crate::policy::rules;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `path:line:col: PRB001 [image-latest-tag] message`, with a help line.
    Text,
    /// One JSON document with findings, errors and a summary.
    Json,
    /// SARIF 2.1.0, for GitHub code scanning and other SARIF consumers.
    Sarif,
    /// GitHub Actions workflow commands (`::error file=...,line=...::`):
    /// annotations on the changed lines of a pull request.
    Github,
    /// A `List` of wg-policy `PolicyReport`s (`wgpolicyk8s.io/v1alpha2`),
    /// one per policy and namespace, as the operator writes them.
    #[value(name = "policyreport")]
    PolicyReport,
}

/// Writes `report` in `format`: findings to `out`, and for text the notes,
/// errors and summary to `err` (notes and summary only unless `quiet`).
///
/// # Errors
///
/// When writing fails (a closed pipe included; the caller decides).
pub fn write(
    report: &Report,
    format: Format,
    quiet: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<()> {
    match format {
        Format::Text => text(report, quiet, out, err),
        Format::Github => {
            let mut findings = String::new();
            render_github(&report.findings, &mut findings);
            out.write_all(findings.as_bytes())?;
            github_end(report, quiet, out, err)
        }
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &JsonReport::of(report))?;
            writeln!(out)?;
            problems(report, true, err)
        }
        Format::Sarif => {
            serde_json::to_writer_pretty(&mut *out, &to_sarif(report))?;
            writeln!(out)?;
            problems(report, true, err)
        }
        Format::PolicyReport => {
            serde_json::to_writer_pretty(&mut *out, &to_policy_reports(report))?;
            writeln!(out)?;
            problems(report, true, err)
        }
    }
}

fn text(report: &Report, quiet: bool, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<()> {
    let mut findings = String::new();
    render_text(&report.findings, &mut findings);
    out.write_all(findings.as_bytes())?;
    text_end(report, quiet, out, err)
}

/// Findings in the text format (the renderer [`super::lint_rendered`]
/// takes).
pub fn render_text(findings: &[super::Located], out: &mut String) {
    use std::fmt::Write as _;
    for l in findings {
        let f = &l.finding;
        let _ = write!(
            out,
            "{}:{}:{}: {} [{}] {}",
            l.file, l.pos.line, l.pos.col, f.rule.id, f.rule.name, f.message
        );
        let _ = match (&f.exempt, f.severity) {
            (Some(reason), _) => writeln!(out, " (exempt: {reason})"),
            (None, Severity::Warning) => writeln!(out, " (warning)\n  help: {}", f.rule.help),
            (None, _) => writeln!(out, "\n  help: {}", f.rule.help),
        };
    }
}

/// Findings as GitHub Actions workflow commands: `::error` for
/// violations, `::warning` for warnings, `::notice` for exempt findings.
pub fn render_github(findings: &[super::Located], out: &mut String) {
    use std::fmt::Write as _;
    for l in findings {
        let f = &l.finding;
        let (level, message) = match (&f.exempt, f.severity) {
            (Some(reason), _) => ("notice", format!("{} (exempt: {reason})", f.message)),
            (None, Severity::Warning) => ("warning", f.message.clone()),
            (None, _) => ("error", f.message.clone()),
        };
        let _ = writeln!(
            out,
            "::{level} {}line={},col={},title={}::{}",
            github_file(&l.file),
            l.pos.line,
            l.pos.col,
            github_property(&format!("{} [{}]", f.rule.id, f.rule.name)),
            github_data(&format!("{message}\nhelp: {}", f.rule.help)),
        );
    }
}

/// What the GitHub format prints after the findings: input errors as
/// annotations, then the text format's notes, errors and summary on
/// stderr.
///
/// # Errors
///
/// When writing fails.
pub fn github_end(
    report: &Report,
    quiet: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<()> {
    for e in &report.errors {
        let line = e
            .pos
            .map(|p| format!("line={},col={},", p.line, p.col))
            .unwrap_or_default();
        writeln!(
            out,
            "::error {}{line}title=probity::{}",
            github_file(&e.file),
            github_data(&e.message)
        )?;
    }
    text_end(report, quiet, out, err)
}

/// `file=PATH,` for a file, nothing for standard input.
fn github_file(file: &str) -> String {
    if file == "<stdin>" {
        return String::new();
    }
    format!(
        "file={},",
        github_property(file.strip_prefix("./").unwrap_or(file))
    )
}

/// A workflow command's message: `%`, CR and LF escaped.
fn github_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property value: also `:` and `,` escaped.
fn github_property(text: &str) -> String {
    github_data(text).replace(':', "%3A").replace(',', "%2C")
}

/// What the text format prints after the findings: notes and errors, and
/// the summary unless `quiet`.
///
/// # Errors
///
/// When writing fails.
pub fn text_end(
    report: &Report,
    quiet: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> io::Result<()> {
    out.flush()?;
    problems(report, quiet, err)?;
    if !quiet {
        let exempt = report.tally.exempt;
        let exempt = if exempt > 0 {
            format!(" ({exempt} exempt)")
        } else {
            String::new()
        };
        let mut summary = match report.violations() {
            0 => "no violations".to_owned(),
            1 => "1 violation".to_owned(),
            n => format!("{n} violations"),
        };
        match report.tally.warnings {
            0 => {}
            1 => summary.push_str(", 1 warning"),
            n => summary.push_str(&format!(", {n} warnings")),
        }
        writeln!(
            err,
            "{summary}{exempt} in {} workload{} from {} file{}",
            report.workloads,
            plural(report.workloads),
            report.files,
            plural(report.files)
        )?;
    }
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn problems(report: &Report, quiet: bool, err: &mut dyn Write) -> io::Result<()> {
    if !quiet {
        for note in &report.notes {
            writeln!(err, "note: {note}")?;
        }
    }
    for e in &report.errors {
        writeln!(err, "error: {e}")?;
    }
    Ok(())
}

/// The JSON format (stable: fields are only ever added).
pub fn to_json(report: &Report) -> Value {
    serde_json::to_value(JsonReport::of(report)).unwrap_or(Value::Null)
}

// The JSON format's shape, serialized straight from the report (no tree
// in between). Fields are in alphabetical order, as the format has always
// printed them.

#[derive(serde::Serialize)]
struct JsonReport<'a> {
    errors: Vec<JsonProblem<'a>>,
    findings: Vec<JsonFinding<'a>>,
    notes: Vec<JsonProblem<'a>>,
    summary: JsonSummary,
    version: u32,
}

#[derive(serde::Serialize)]
struct JsonFinding<'a> {
    column: usize,
    container: Option<&'a str>,
    exempt: Option<&'a str>,
    file: &'a str,
    help: &'a str,
    line: usize,
    message: &'a str,
    name: &'a str,
    object: JsonObject<'a>,
    pointer: &'a str,
    policy: &'a str,
    rule: &'a str,
    severity: &'static str,
}

#[derive(serde::Serialize)]
struct JsonObject<'a> {
    kind: &'a str,
    name: &'a str,
    namespace: Option<&'a str>,
}

#[derive(serde::Serialize)]
struct JsonProblem<'a> {
    column: Option<usize>,
    file: &'a str,
    line: Option<usize>,
    message: &'a str,
}

#[derive(serde::Serialize)]
struct JsonSummary {
    errors: usize,
    exempt: usize,
    files: usize,
    violations: usize,
    warnings: usize,
    workloads: usize,
}

impl<'a> JsonReport<'a> {
    fn of(report: &'a Report) -> Self {
        let problems = |list: &'a [super::Problem]| -> Vec<JsonProblem<'a>> {
            list.iter()
                .map(|p| JsonProblem {
                    column: p.pos.map(|p| p.col),
                    file: &p.file,
                    line: p.pos.map(|p| p.line),
                    message: &p.message,
                })
                .collect()
        };
        let findings = report
            .findings
            .iter()
            .map(|l| JsonFinding {
                column: l.pos.col,
                container: l.finding.container.as_deref(),
                exempt: l.finding.exempt.as_deref(),
                file: &l.file,
                help: l.finding.rule.help,
                line: l.pos.line,
                message: &l.finding.message,
                name: l.finding.rule.name,
                object: JsonObject {
                    kind: l.object.kind,
                    name: &l.object.name,
                    namespace: l.object.namespace.as_deref(),
                },
                pointer: &l.finding.pointer,
                policy: &l.policy,
                rule: l.finding.rule.id,
                severity: l.finding.severity.as_str(),
            })
            .collect();
        let violations = report.violations();
        JsonReport {
            errors: problems(&report.errors),
            findings,
            notes: problems(&report.notes),
            summary: JsonSummary {
                errors: report.errors.len(),
                exempt: report.tally.exempt,
                files: report.files,
                violations,
                warnings: report.tally.warnings,
                workloads: report.workloads,
            },
            version: 1,
        }
    }
}

/// Results a lint report lists per policy and namespace, as the
/// operator's default.
pub const POLICY_REPORT_MAX_RESULTS: usize = 100;

/// The findings as wg-policy `PolicyReport`s in a `v1` `List`: one per
/// policy and namespace that matched a workload, named
/// `probity-<policy>`. `pass` counts the matched workloads with no fail or
/// warn result.
pub fn to_policy_reports(report: &Report) -> Value {
    use std::collections::{BTreeMap, BTreeSet};

    use crate::policy::wgpolicy::{self, Scope, Subject};
    type Key = (String, Option<String>);
    let mut findings: BTreeMap<Key, Vec<wgpolicy::Item<'_>>> = BTreeMap::new();
    let mut flagged: BTreeMap<Key, BTreeSet<(&str, &str, &str)>> = BTreeMap::new();
    for l in &report.findings {
        let key = (l.policy.clone(), l.object.namespace.clone());
        if wgpolicy::result_of(&l.finding) != "skip" {
            flagged.entry(key.clone()).or_default().insert((
                &l.file,
                l.object.kind,
                &l.object.name,
            ));
        }
        let subject = Subject {
            api_version: crate::policy::WorkloadKind::from_kind(l.object.kind)
                .map_or("v1", |k| k.api_version())
                .to_owned(),
            kind: l.object.kind.to_owned(),
            namespace: l.object.namespace.clone(),
            name: l.object.name.clone(),
            uid: None,
        };
        findings
            .entry(key)
            .or_default()
            .push(wgpolicy::Item::of(subject, &l.finding));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let items: Vec<Value> = report
        .matched
        .iter()
        .flat_map(|(policy, by_ns)| by_ns.iter().map(move |(ns, n)| (policy, ns, n)))
        .map(|(policy, namespace, matched)| {
            let key = (policy.clone(), namespace.clone());
            let failing = flagged.get(&key).map_or(0, BTreeSet::len);
            let name = wgpolicy::object_name(&format!("probity-{policy}"));
            let scope = Scope {
                name: &name,
                namespace: namespace.as_deref(),
                policy,
                pass: matched.saturating_sub(failing),
                max_results: POLICY_REPORT_MAX_RESULTS,
            };
            let listed = findings.get(&key).map_or(&[][..], Vec::as_slice);
            wgpolicy::report(&scope, listed, now)
        })
        .collect();
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// SARIF 2.1.0: one run, every rule described, one result per finding,
/// exemptions as in-source suppressions, input errors as notifications.
pub fn to_sarif(report: &Report) -> Value {
    let rules: Vec<Value> = rules::ALL
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.name,
                "shortDescription": {"text": r.help},
                "fullDescription": {"text": first_paragraph(&r.explain())},
                "help": {"text": r.explain(), "markdown": r.explain()},
                "defaultConfiguration": {"level": "error"},
            })
        })
        .collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|l| {
            let index = rules::ALL.iter().position(|r| r.id == l.finding.rule.id);
            let mut result = json!({
                "ruleId": l.finding.rule.id,
                "ruleIndex": index,
                "level": match l.finding.severity {
                    Severity::Warning => "warning",
                    _ => "error",
                },
                "message": {"text": l.finding.message},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": uri(&l.file)},
                        "region": {"startLine": l.pos.line, "startColumn": l.pos.col},
                    },
                    "logicalLocations": [{
                        "name": l.object.name,
                        "kind": "resource",
                        "fullyQualifiedName": match &l.object.namespace {
                            Some(ns) => format!("{}/{ns}/{}", l.object.kind, l.object.name),
                            None => format!("{}/{}", l.object.kind, l.object.name),
                        },
                    }],
                }],
            });
            if let Some(reason) = &l.finding.exempt {
                result["suppressions"] = json!([{"kind": "inSource", "justification": reason}]);
            }
            result
        })
        .collect();
    let notifications: Vec<Value> = report
        .errors
        .iter()
        .map(|e| {
            let mut n = json!({
                "level": "error",
                "message": {"text": e.message},
            });
            let mut location =
                json!({"physicalLocation": {"artifactLocation": {"uri": uri(&e.file)}}});
            if let Some(p) = e.pos {
                location["physicalLocation"]["region"] =
                    json!({"startLine": p.line, "startColumn": p.col});
            }
            n["locations"] = json!([location]);
            n
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "probity",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/probity-dev/probity",
                "rules": rules,
            }},
            "results": results,
            "invocations": [{
                "executionSuccessful": report.errors.is_empty(),
                "toolExecutionNotifications": notifications,
            }],
        }],
    })
}

/// The text under "## What it does", on one line.
fn first_paragraph(text: &str) -> String {
    text.lines()
        .skip_while(|l| !l.starts_with("## What it does"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A relative URI for a path (`<stdin>` stays as is).
fn uri(file: &str) -> String {
    let path = file.strip_prefix("./").unwrap_or(file);
    path.chars()
        .map(|c| match c {
            ' ' => "%20".to_owned(),
            '%' => "%25".to_owned(),
            '#' => "%23".to_owned(),
            '?' => "%3F".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_commands_escape_what_github_would_misread() {
        assert_eq!(github_data("50%\r\nnext"), "50%25%0D%0Anext");
        assert_eq!(
            github_property("deploy/a,b:c.yaml"),
            "deploy/a%2Cb%3Ac.yaml"
        );
        assert_eq!(github_file("./deploy/web.yaml"), "file=deploy/web.yaml,");
        assert_eq!(github_file("<stdin>"), "");
    }
}
