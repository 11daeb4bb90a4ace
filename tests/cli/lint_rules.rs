//! Every rule has a fixture that fires and one that does not, under
//! `tests/fixtures/lint/<ID>/` (with `policy.yaml` when the rule needs a
//! policy setting), and a snapshot of the exact text users see.

use std::path::Path;

use probity::lint::policies::{self, Policy};
use probity::lint::report::{self, Format};
use probity::lint::{self, Report};
use probity::manifest::Input;
use probity::policy::rules;

fn read(path: &Path) -> Input {
    Input {
        name: path.display().to_string(),
        text: std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        path: Some(path.to_path_buf()),
    }
}

fn run(dir: &Path, file: &str) -> Report {
    let policy = dir.join("policy.yaml");
    let policies = if policy.exists() {
        policies::load(&read(&policy)).expect("fixture policy loads")
    } else {
        vec![Policy::builtin()]
    };
    lint::lint(&[read(&dir.join(file))], &policies)
}

fn text(report: &Report) -> String {
    let mut out = Vec::new();
    report::write(report, Format::Text, true, &mut out, &mut std::io::sink()).expect("write");
    String::from_utf8(out).expect("utf-8")
}

#[test]
fn each_rule_fires_on_its_fixture_and_not_on_the_fixed_one() {
    // Runtime rules come from pod status: the operator's tests cover them.
    for rule in rules::ALL.into_iter().filter(|r| !r.is_runtime()) {
        let dir = Path::new("tests/fixtures/lint").join(rule.id);
        assert!(
            dir.is_dir(),
            "{} has no fixtures in {}",
            rule.id,
            dir.display()
        );

        let mut fired = run(&dir, "fires.yaml");
        assert!(fired.errors.is_empty(), "{}: {:?}", rule.id, fired.errors);
        fired.findings.retain(|f| f.finding.rule.id == rule.id);
        assert!(
            !fired.findings.is_empty(),
            "{} did not fire on fires.yaml",
            rule.id
        );
        insta::assert_snapshot!(format!("{}-fires", rule.id), text(&fired));

        let passed = run(&dir, "passes.yaml");
        assert!(passed.errors.is_empty(), "{}: {:?}", rule.id, passed.errors);
        assert!(
            passed.workloads > 0,
            "{}: passes.yaml has no workload",
            rule.id
        );
        assert_eq!(
            passed.violations(),
            0,
            "{}: passes.yaml is not clean:\n{}",
            rule.id,
            text(&passed)
        );
    }
}

#[test]
fn exempt_findings_are_listed_not_dropped() {
    let report = run(Path::new("tests/fixtures/lint/PRB900"), "passes.yaml");
    let exempt: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.finding.exempt.is_some())
        .collect();
    assert_eq!(exempt.len(), 1, "{:?}", report.findings);
    assert_eq!(exempt[0].finding.rule.id, "PRB002");
    insta::assert_snapshot!("PRB900-exempt", text(&report));
}
