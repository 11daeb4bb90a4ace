//! `probity lint` as users run it: exit codes, inputs, formats, and bad
//! input that must give a clear message, never a panic.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn probity(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_probity"))
        .args(args)
        .output()
        .expect("run probity")
}

fn probity_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_probity"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn probity");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input).expect("write stdin");
    drop(stdin);
    child.wait_with_output().expect("wait")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_no_panic(o: &Output) {
    assert!(!stderr(o).contains("panicked"), "panic: {}", stderr(o));
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("probity-lint-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("tempdir");
    dir
}

const CLEAN: &str = "tests/fixtures/lint/PRB002/passes.yaml";
const DIRTY: &str = "tests/fixtures/lint/PRB104/fires.yaml";

#[test]
fn exit_codes_follow_the_contract() {
    let clean = probity(&["lint", CLEAN]);
    assert_eq!(clean.status.code(), Some(0), "{}", stderr(&clean));
    assert_eq!(stdout(&clean), "");
    assert!(
        stderr(&clean).contains("no violations in 1 workload from 1 file"),
        "{}",
        stderr(&clean)
    );

    let dirty = probity(&["lint", DIRTY]);
    assert_eq!(dirty.status.code(), Some(1));
    assert!(stdout(&dirty).starts_with(&format!(
        "{DIRTY}:16:11: PRB104 [liveness-same-as-readiness]"
    )));

    let usage = probity(&["lint", "--format", "xml", CLEAN]);
    assert_eq!(usage.status.code(), Some(2));
    let missing = probity(&["lint", "no/such/file.yaml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("error: no/such/file.yaml:"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn stdin_and_quiet() {
    let text = std::fs::read(DIRTY).expect("fixture");
    let out = probity_stdin(&["lint", "-q", "-"], &text);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with("<stdin>:16:11: PRB104"),
        "{}",
        stdout(&out)
    );
    assert_eq!(stderr(&out), "", "quiet prints no summary");
}

#[test]
fn directories_are_walked_recursively_in_sorted_order() {
    let dir = tempdir("walk");
    std::fs::create_dir_all(dir.join("b/nested")).expect("mkdir");
    std::fs::create_dir_all(dir.join(".git")).expect("mkdir");
    let dirty = std::fs::read_to_string(DIRTY).expect("fixture");
    std::fs::write(dir.join("b/nested/z.yml"), &dirty).expect("write");
    std::fs::write(dir.join("a.yaml"), &dirty).expect("write");
    std::fs::write(dir.join(".git/ignored.yaml"), &dirty).expect("write");
    std::fs::write(dir.join("notes.txt"), "not yaml").expect("write");
    let out = probity(&["lint", "-q", dir.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(1));
    let files: Vec<String> = stdout(&out)
        .lines()
        .filter(|l| !l.starts_with("  "))
        .map(|l| l.split(':').next().unwrap_or_default().to_owned())
        .collect();
    let a = dir.join("a.yaml").display().to_string();
    let z = dir.join("b/nested/z.yml").display().to_string();
    assert_eq!(files, vec![a.clone(), a, z.clone(), z]);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_broken_document_is_an_input_error_and_the_rest_is_still_linted() {
    let text = format!(
        "{}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: broken\n---\nreplicaCount: 3\n",
        std::fs::read_to_string(DIRTY).expect("fixture")
    );
    let out = probity_stdin(&["lint", "-"], text.as_bytes());
    assert_no_panic(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "input errors win over violations"
    );
    assert!(
        stdout(&out).contains("PRB104"),
        "the good documents were linted"
    );
    let err = stderr(&out);
    // The flow mapping opened on line 37 is still open where its document ends.
    assert!(
        err.contains("error: <stdin>:38:1: invalid YAML: while parsing a flow mapping"),
        "{err}"
    );
    assert!(
        err.contains("note: <stdin>:39:1: skipped a document that is not a Kubernetes object"),
        "{err}"
    );
}

#[test]
fn ill_typed_fields_are_located() {
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      containers:\n        - name: web\n          image: nginx\n          ports: [{containerPort: http}]\n";
    let out = probity_stdin(&["lint", "-"], text.as_bytes());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("error: <stdin>:10:35: Deployment web: /spec/template/spec/containers/0/ports/0/containerPort: invalid type"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn hostile_and_empty_inputs_get_clear_messages() {
    let dir = tempdir("hostile");
    let cases: Vec<(&str, Vec<u8>, i32, &str)> = vec![
        (
            "junk.yaml",
            vec![0x7f, 0x45, 0x4c, 0x46, 0, 1, 2, 0xff, 0xfe],
            2,
            "binary data (NUL bytes)",
        ),
        (
            "latin1.yaml",
            b"name: caf\xe9\n".to_vec(),
            2,
            "not UTF-8 text (invalid byte at offset 9)",
        ),
        (
            "empty.yaml",
            Vec::new(),
            0,
            "no violations in 0 workloads from 1 file",
        ),
        (
            "deep.yaml",
            format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(),
            2,
            "invalid YAML",
        ),
        ("tabs.yaml", b"a:\n\tb: 1\n".to_vec(), 2, "invalid YAML"),
        (
            "dupe.yaml",
            b"kind: Pod\nkind: Pod\n".to_vec(),
            2,
            "duplicate key \"kind\"",
        ),
    ];
    for (name, bytes, code, message) in cases {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write");
        let out = probity(&["lint", path.to_str().expect("utf-8")]);
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(code), "{name}: {}", stderr(&out));
        assert!(stderr(&out).contains(message), "{name}: {}", stderr(&out));
    }
    let empty_dir = dir.join("nothing-here");
    std::fs::create_dir_all(&empty_dir).expect("mkdir");
    let out = probity(&["lint", empty_dir.to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("directory holds no *.yaml, *.yml or *.json files"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_50_mb_file_is_linted() {
    let dir = tempdir("big");
    let doc = std::fs::read_to_string(DIRTY).expect("fixture");
    let path = dir.join("big.yaml");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    let mut written = 0;
    let mut docs = 0;
    while written < 50 * 1024 * 1024 {
        file.write_all(doc.as_bytes()).expect("write");
        file.write_all(b"---\n").expect("write");
        written += doc.len() + 4;
        docs += 2;
    }
    drop(file);
    let out = probity(&["lint", "--format", "json", path.to_str().expect("utf-8")]);
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["summary"]["workloads"], docs);
    assert_eq!(json["summary"]["violations"], docs);
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_probity"))
        .args(["lint", "--explain", "all"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn explain_prints_the_rule_documentation() {
    let out = probity(&["lint", "--explain", "PRB104"]);
    assert_eq!(out.status.code(), Some(0));
    insta::assert_snapshot!("explain-PRB104", stdout(&out));
    let by_name = probity(&["lint", "--explain", "liveness-same-as-readiness"]);
    assert_eq!(stdout(&by_name), stdout(&out));
    let list = probity(&["lint", "--explain", "all"]);
    assert_eq!(
        stdout(&list).lines().count(),
        probity::policy::rules::ALL.len()
    );
    let unknown = probity(&["lint", "--explain", "PRB999"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(stderr(&unknown).contains("unknown rule \"PRB999\""));
}

#[test]
fn bad_policy_files_are_usage_errors() {
    let dir = tempdir("policy");
    let cases = [
        (
            "kind.yaml",
            "apiVersion: v1\nkind: ConfigMap\n",
            "kind.yaml:1:1: expected a ReadinessPolicy or ClusterReadinessPolicy, found \"ConfigMap\"",
        ),
        (
            "version.yaml",
            "apiVersion: probity.dev/v1\nkind: ReadinessPolicy\n",
            "version.yaml:1:13: ReadinessPolicy must have apiVersion probity.dev/v1alpha1",
        ),
        (
            "mode.yaml",
            "apiVersion: probity.dev/v1alpha1\nkind: ReadinessPolicy\nspec:\n  mode: Block\n",
            "mode.yaml:4:9: spec.mode: unknown variant `Block`",
        ),
        (
            "typo.yaml",
            "apiVersion: probity.dev/v1alpha1\nkind: ReadinessPolicy\nspec:\n  images:\n    forbidLatests: true\n",
            "typo.yaml:5:20: spec.images.forbidLatests: unknown field `forbidLatests`, expected one of `forbidLatest`",
        ),
        (
            "selector.yaml",
            "apiVersion: probity.dev/v1alpha1\nkind: ReadinessPolicy\nspec:\n  match:\n    selector:\n      matchExpressions: [{key: app, operator: Equals, values: [x]}]\n",
            "selector.yaml:5:5: invalid label selector: unknown operator \"Equals\"",
        ),
    ];
    for (name, text, message) in cases {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        let out = probity(&["lint", "--policy", path.to_str().expect("utf-8"), CLEAN]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        assert!(stderr(&out).contains(message), "{name}: {}", stderr(&out));
    }
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn policies_respect_kinds_selectors_and_namespaces() {
    let dir = tempdir("scoping");
    let policy = "apiVersion: probity.dev/v1alpha1
kind: ReadinessPolicy
metadata: {name: only-web, namespace: shop}
spec:
  match: {kinds: [Deployment], selector: {matchLabels: {app: web}}}
---
apiVersion: probity.dev/v1alpha1
kind: ClusterReadinessPolicy
metadata: {name: prod-only}
spec:
  namespaceSelector: {matchLabels: {env: prod}}
  images: {requireDigest: false}
";
    let workloads = "apiVersion: v1
kind: Namespace
metadata: {name: payments, labels: {env: prod}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {template: {spec: {containers: [{name: web, image: nginx}]}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop, labels: {app: api}}
spec: {template: {spec: {containers: [{name: api, image: nginx}]}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: other, labels: {app: web}}
spec: {template: {spec: {containers: [{name: web, image: nginx}]}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: pay, namespace: payments}
spec: {template: {spec: {containers: [{name: pay, image: nginx}]}}}
";
    std::fs::write(dir.join("policy.yaml"), policy).expect("write");
    std::fs::write(dir.join("workloads.yaml"), workloads).expect("write");
    let out = probity(&[
        "lint",
        "--format",
        "json",
        "--policy",
        dir.join("policy.yaml").to_str().expect("utf-8"),
        dir.join("workloads.yaml").to_str().expect("utf-8"),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut hits: Vec<String> = json["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            format!(
                "{}/{} {} {}",
                f["object"]["namespace"].as_str().unwrap_or("-"),
                f["object"]["name"].as_str().unwrap_or("-"),
                f["rule"].as_str().unwrap_or("-"),
                f["policy"].as_str().unwrap_or("-")
            )
        })
        .collect();
    hits.sort();
    assert_eq!(
        hits,
        vec![
            "payments/pay PRB001 ClusterReadinessPolicy/prod-only",
            "payments/pay PRB101 ClusterReadinessPolicy/prod-only",
            "payments/pay PRB102 ClusterReadinessPolicy/prod-only",
            "shop/web PRB001 ReadinessPolicy/shop/only-web",
            "shop/web PRB002 ReadinessPolicy/shop/only-web",
            "shop/web PRB101 ReadinessPolicy/shop/only-web",
            "shop/web PRB102 ReadinessPolicy/shop/only-web",
        ]
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

fn lint_json(format: &str) -> serde_json::Value {
    let out = probity(&[
        "lint",
        "--format",
        format,
        DIRTY,
        "tests/fixtures/lint/PRB900/passes.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("valid JSON")
}

#[test]
fn json_output_snapshot() {
    insta::assert_json_snapshot!("json", lint_json("json"));
}

#[test]
fn sarif_output_snapshot_and_schema() {
    let sarif = lint_json("sarif");
    // Valid against the SARIF 2.1.0 schema...
    let schema_path = sarif_schema();
    let mut schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&schema_path).expect("schema"))
            .expect("schema json");
    // The published 2.1.0 schema's language-tag pattern has an unbalanced
    // `]` that strict regex engines reject; use the pattern it means.
    fix_patterns(&mut schema);
    let validator = jsonschema::draft7::new(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&sarif)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let mut broken = sarif.clone();
    broken["runs"][0]["results"][0]["level"] = "fatal".into();
    assert!(
        !validator.is_valid(&broken),
        "the schema check must be able to fail"
    );
    // ...and readable by a typed SARIF model.
    let typed: serde_sarif::sarif::Sarif =
        serde_json::from_value(sarif.clone()).expect("typed SARIF");
    assert_eq!(typed.runs.len(), 1);
    let mut redacted = sarif;
    redacted["runs"][0]["tool"]["driver"]["version"] = "[version]".into();
    insta::assert_json_snapshot!("sarif", redacted);
}

fn fix_patterns(v: &mut serde_json::Value) {
    const BROKEN: &str = "^[a-zA-Z]{2}|^[a-zA-Z]{2}-[a-zA-Z]{2}]?$";
    match v {
        serde_json::Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if key == "pattern" && value == BROKEN {
                    *value = "^[a-zA-Z]{2}(-[a-zA-Z]{2})?$".into();
                } else {
                    fix_patterns(value);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(fix_patterns),
        _ => {}
    }
}

/// The SARIF 2.1.0 schema shipped in the serde-sarif package.
fn sarif_schema() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
        ])
        .arg(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
        .output()
        .expect("cargo metadata");
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata json");
    let manifest = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == "serde-sarif")
        .and_then(|p| p["manifest_path"].as_str())
        .expect("serde-sarif in the dependency graph");
    Path::new(manifest)
        .with_file_name("src")
        .join("schema.json")
}

const SEVERITY_POLICY: &str = "tests/fixtures/lint/severity/policy.yaml";
const SEVERITY_INPUT: &str = "tests/fixtures/lint/severity/deployments.yaml";

#[test]
fn text_and_github_output_snapshots() {
    for format in ["text", "github"] {
        let out = probity(&[
            "lint",
            "--format",
            format,
            "--policy",
            SEVERITY_POLICY,
            SEVERITY_INPUT,
        ]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        insta::assert_snapshot!(format!("{format}-format"), stdout(&out));
        insta::assert_snapshot!(format!("{format}-format-summary"), stderr(&out));
    }
}

#[test]
fn warnings_are_printed_but_do_not_fail_the_run() {
    let out = probity(&[
        "lint",
        "--format",
        "json",
        "--policy",
        SEVERITY_POLICY,
        "--ignore",
        "PRB102",
        SEVERITY_INPUT,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["summary"]["violations"], 0);
    assert_eq!(report["summary"]["warnings"], 2, "{report:#}");
    let severities: Vec<(&str, &str)> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            (
                f["rule"].as_str().unwrap_or_default(),
                f["severity"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        severities.contains(&("PRB001", "warning")),
        "{severities:?}"
    );
    assert!(
        !severities.iter().any(|(rule, _)| *rule == "PRB002"),
        "PRB002 is off: {severities:?}"
    );
    let text = probity(&[
        "lint",
        "--policy",
        SEVERITY_POLICY,
        "--ignore",
        "PRB102",
        SEVERITY_INPUT,
    ]);
    assert_eq!(text.status.code(), Some(0));
    assert!(
        stderr(&text).contains("no violations, 2 warnings (1 exempt) in 2 workloads"),
        "{}",
        stderr(&text)
    );

    // A policy naming an unknown rule is refused where it says so.
    let dir = tempdir("severity");
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: probity.dev/v1alpha1\nkind: ReadinessPolicy\nmetadata: {name: p}\nspec:\n  severity:\n    PRB999: Warning\n",
    )
    .expect("write");
    let out = probity(&["lint", "--policy", policy.to_str().expect("utf-8"), CLEAN]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("policy.yaml:6:13: severity names unknown rule \"PRB999\""),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

fn rules_found(args: &[&str]) -> Vec<String> {
    let mut all = vec!["lint", "--format", "json"];
    all.extend_from_slice(args);
    all.push(DIRTY);
    let out = probity(&all);
    assert_no_panic(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut rules: Vec<String> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["rule"].as_str().map(str::to_owned))
        .collect();
    rules.dedup();
    rules
}

#[test]
fn select_and_ignore_choose_rules_like_ruff() {
    assert_eq!(rules_found(&[]), ["PRB104"]);
    assert!(rules_found(&["--ignore", "PRB104"]).is_empty());
    assert!(rules_found(&["--select", "PRB0"]).is_empty());
    assert_eq!(
        rules_found(&["--select", "PRB0,liveness-same-as-readiness"]),
        ["PRB104"]
    );
    assert_eq!(
        rules_found(&["--select", "PRB104", "--ignore", "PRB1"]),
        ["PRB104"]
    );
    assert!(rules_found(&["--select", "PRB1", "--ignore", "prb104"]).is_empty());
    let out = probity(&["lint", "--select", "PRB7", DIRTY]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--select \"PRB7\" names no rule"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn output_writes_findings_to_a_file() {
    let dir = tempdir("output");
    let file = dir.join("findings.sarif");
    let out = probity(&[
        "lint",
        "--format",
        "sarif",
        "--output",
        file.to_str().expect("utf-8"),
        DIRTY,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    let sarif: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).expect("written")).expect("json");
    assert_eq!(sarif["runs"][0]["results"][0]["ruleId"], "PRB104");
    let out = probity(&["lint", "--output", "/nonexistent/dir/out.txt", DIRTY]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("error: --output /nonexistent/dir/out.txt: No such file"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for (shell, needle) in [
        ("bash", "complete -F _probity"),
        ("zsh", "#compdef probity"),
        ("fish", "complete -c probity"),
    ] {
        let out = probity(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        assert!(script.contains(needle), "{shell}: {script}");
        assert!(script.contains("--select"), "{shell}: lint's flags");
        if shell == "bash" {
            let dir = tempdir("completions");
            let path = dir.join("probity.bash");
            std::fs::write(&path, &script).expect("write");
            let check = Command::new("bash")
                .arg("-n")
                .arg(&path)
                .output()
                .expect("bash");
            assert!(check.status.success(), "{}", stderr(&check));
            std::fs::remove_dir_all(&dir).expect("cleanup");
        }
    }
    let out = probity(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_default_policy_bounds_readiness_timeouts_at_5_seconds() {
    let out = probity(&[
        "lint",
        "--select",
        "PRB106",
        "tests/fixtures/lint/PRB106/fires.yaml",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("timeoutSeconds 30, above the maximum of 5"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn policyreport_output_snapshot() {
    let out = probity(&[
        "lint",
        "--format",
        "policyreport",
        "--policy",
        SEVERITY_POLICY,
        SEVERITY_INPUT,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let mut reports: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    for report in reports["items"].as_array_mut().expect("items") {
        for result in report["results"].as_array_mut().expect("results") {
            result["timestamp"]["seconds"] = "[now]".into();
        }
    }
    insta::assert_json_snapshot!("policyreport", reports);
}
