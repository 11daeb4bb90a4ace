//! Output formats of `probity lint`: text for people, JSON for scripts,
//! SARIF 2.1.0 for code-scanning tools. All write findings to stdout;
//! text writes notes, errors and the summary to stderr.

use std::io::{self, Write};

use serde_json::{Value, json};

use super::Report;
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
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, &to_json(report))?;
            writeln!(out)?;
            problems(report, true, err)
        }
        Format::Sarif => {
            serde_json::to_writer_pretty(&mut *out, &to_sarif(report))?;
            writeln!(out)?;
            problems(report, true, err)
        }
    }
}

fn text(report: &Report, quiet: bool, out: &mut dyn Write, err: &mut dyn Write) -> io::Result<()> {
    for l in &report.findings {
        let f = &l.finding;
        let exempt = f
            .exempt
            .as_ref()
            .map(|r| format!(" (exempt: {r})"))
            .unwrap_or_default();
        writeln!(
            out,
            "{}:{}:{}: {} [{}] {}{exempt}",
            l.file, l.pos.line, l.pos.col, f.rule.id, f.rule.name, f.message
        )?;
        if f.exempt.is_none() {
            writeln!(out, "  help: {}", f.rule.help)?;
        }
    }
    out.flush()?;
    problems(report, quiet, err)?;
    if !quiet {
        let exempt = report.findings.len() - report.violations();
        let exempt = if exempt > 0 {
            format!(" ({exempt} exempt)")
        } else {
            String::new()
        };
        let summary = match report.violations() {
            0 => "no violations".to_owned(),
            1 => "1 violation".to_owned(),
            n => format!("{n} violations"),
        };
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
    let findings: Vec<Value> = report
        .findings
        .iter()
        .map(|l| {
            json!({
                "rule": l.finding.rule.id,
                "name": l.finding.rule.name,
                "message": l.finding.message,
                "help": l.finding.rule.help,
                "file": l.file,
                "line": l.pos.line,
                "column": l.pos.col,
                "pointer": l.finding.pointer,
                "object": {
                    "kind": l.object.kind,
                    "name": l.object.name,
                    "namespace": l.object.namespace,
                },
                "container": l.finding.container,
                "policy": l.policy,
                "exempt": l.finding.exempt,
            })
        })
        .collect();
    let problems = |list: &[super::Problem]| -> Vec<Value> {
        list.iter()
            .map(|p| {
                json!({
                    "file": p.file,
                    "line": p.pos.map(|p| p.line),
                    "column": p.pos.map(|p| p.col),
                    "message": p.message,
                })
            })
            .collect()
    };
    json!({
        "version": 1,
        "findings": findings,
        "errors": problems(&report.errors),
        "notes": problems(&report.notes),
        "summary": {
            "files": report.files,
            "workloads": report.workloads,
            "violations": report.violations(),
            "exempt": report.findings.len() - report.violations(),
            "errors": report.errors.len(),
        },
    })
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
                "level": "error",
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
