//! `probity lint --format policyreport` against the real API server with
//! the wg-policy report CRDs the chart ships: the reports are accepted as
//! written, their summaries are exact, and their results are capped.

use std::process::Command;

const CRDS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/charts/probity/files/wgpolicy-crds.yaml"
);

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The chart's report CRDs, applied and established.
fn install_report_crds(env: &probity_testenv::TestEnv) -> anyhow::Result<()> {
    let out = env.kubectl().args(["apply", "-f", CRDS]).output()?;
    assert!(out.status.success(), "{}", text(&out));
    let out = env
        .kubectl()
        .args([
            "wait",
            "--for=condition=Established",
            "crd/policyreports.wgpolicyk8s.io",
            "--timeout=30s",
        ])
        .output()?;
    assert!(out.status.success(), "{}", text(&out));
    Ok(())
}

/// `count` Deployments in `ns`: the first `latest` ones on `:latest`, the
/// rest pinned and probed.
fn deployments(ns: &str, count: usize, latest: usize) -> String {
    (0..count)
        .map(|i| {
            let image = if i < latest {
                "ghcr.io/acme/web:latest".to_owned()
            } else {
                format!("ghcr.io/acme/web:1.0@sha256:{:064x}", i + 1)
            };
            format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web-{i}, namespace: {ns}}}\n\
                 spec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n      - name: web\n        image: {image}\n        ports: [{{containerPort: 8080}}]\n        readinessProbe: {{httpGet: {{path: /readyz, port: 8080}}}}\n        livenessProbe: {{httpGet: {{path: /livez, port: 8080}}, failureThreshold: 6}}\n---\n"
            )
        })
        .collect()
}

#[tokio::test]
async fn lint_policy_reports_are_accepted_exact_and_bounded() -> anyhow::Result<()> {
    let Some(env) = probity_testenv::shared() else {
        return Ok(());
    };
    install_report_crds(env)?;
    let client = env.client()?;
    let ns = env.namespace(&client, "polr").await?;

    // 130 workloads, 120 on :latest: 120 PRB001 and 120 PRB002 failures,
    // 10 passing; the report lists 100 results and says 140 were left out.
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("deploy.yaml");
    std::fs::write(&manifest, deployments(&ns, 130, 120))?;
    let out = Command::new(env!("CARGO_BIN_EXE_probity"))
        .args(["lint", "--format", "policyreport"])
        .arg(&manifest)
        .output()?;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let report = &list["items"][0];
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(
        report["summary"],
        serde_json::json!({"pass": 10, "fail": 240, "warn": 0, "error": 0, "skip": 0})
    );
    assert_eq!(report["results"].as_array().map(Vec::len), Some(100));
    assert_eq!(
        report["metadata"]["annotations"]["probity.dev/results-omitted"],
        "140"
    );

    // As written, the API server stores it.
    let mut create = env.kubectl();
    create.args(["create", "-f", "-"]);
    let out = probity_testenv::output_with_stdin(&mut create, &out.stdout)?;
    assert!(out.status.success(), "{}", text(&out));
    let out = env
        .kubectl()
        .args([
            "get",
            "policyreport",
            "probity-default",
            "-n",
            &ns,
            "-o",
            "json",
        ])
        .output()?;
    assert!(out.status.success(), "{}", text(&out));
    let stored: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(stored["summary"], report["summary"]);
    assert_eq!(stored["results"][0]["result"], "fail");
    assert_eq!(
        stored["results"][0]["resources"][0]["namespace"],
        ns.as_str()
    );
    // The schema holds: an unknown result is refused.
    let mut bad = stored.clone();
    bad["metadata"] = serde_json::json!({"name": "bad", "namespace": ns});
    bad["results"][0]["result"] = "maybe".into();
    let mut create = env.kubectl();
    create.args(["create", "-f", "-"]);
    let out = probity_testenv::output_with_stdin(&mut create, bad.to_string().as_bytes())?;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Unsupported value: \"maybe\""),
        "{}",
        text(&out)
    );
    Ok(())
}

/// The operator's `probity_policy_report_writes_total`.
async fn writes(operator: &crate::common::Operator) -> u64 {
    let (_, metrics) = operator.get("/metrics").await.unwrap_or_default();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("probity_policy_report_writes_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// The report of policy `audit` in `ns`, as the API server has it.
fn stored_report(env: &probity_testenv::TestEnv, ns: &str) -> Option<serde_json::Value> {
    let out = env
        .kubectl()
        .args([
            "get",
            "policyreport",
            &format!("probity-rpol.{ns}.audit"),
            "-n",
            ns,
            "-o",
            "json",
        ])
        .output()
        .ok()?;
    serde_json::from_slice(&out.stdout).ok()
}

/// The operator with `--policy-reports`: a report per policy and namespace
/// with exact summaries and capped results, rewritten only when it
/// changes (a thousand workloads arriving cost a handful of writes), and
/// deleted with its policy.
#[tokio::test]
async fn the_operator_writes_bounded_reports_on_change_and_removes_them_with_the_policy()
-> anyhow::Result<()> {
    use std::time::Duration;
    let _operators = crate::common::operators_together().await;
    let Some(env) = probity_testenv::shared() else {
        return Ok(());
    };
    let client = env.client()?;
    probity::controller::install_crds(&client, Duration::from_secs(30)).await?;
    install_report_crds(env)?;
    let system = env.namespace(&client, "reports-system").await?;
    let ns = env.namespace(&client, "reports").await?;
    let operator = crate::common::Operator::start(
        env.kubeconfig(),
        "reports",
        &system,
        &["--policy-reports", "--policy-report-max-results", "5"],
    );
    let policy = format!(
        "apiVersion: probity.dev/v1alpha1\nkind: ReadinessPolicy\nmetadata: {{name: audit, namespace: {ns}}}\nspec: {{mode: Audit}}\n"
    );
    let mut apply = env.kubectl();
    apply.args(["apply", "-f", "-"]);
    let out = probity_testenv::output_with_stdin(&mut apply, policy.as_bytes())?;
    assert!(out.status.success(), "{}", text(&out));
    // 8 workloads, 6 on :latest: 12 failures (PRB001, PRB002), 2 passing.
    let mut apply = env.kubectl();
    apply.args(["apply", "-f", "-"]);
    let out = probity_testenv::output_with_stdin(&mut apply, deployments(&ns, 8, 6).as_bytes())?;
    assert!(out.status.success(), "{}", text(&out));
    let first = crate::common::eventually(Duration::from_secs(60), "the first report", || async {
        let report = stored_report(env, &ns).ok_or("no report yet")?;
        let want = serde_json::json!({"pass": 2, "fail": 12, "warn": 0, "error": 0, "skip": 0});
        if report["summary"] == want {
            Ok(report)
        } else {
            Err(format!("{}", report["summary"]))
        }
    })
    .await;
    assert_eq!(first["results"].as_array().map(Vec::len), Some(5));
    assert_eq!(
        first["metadata"]["annotations"]["probity.dev/results-omitted"],
        "7"
    );
    assert_eq!(
        first["metadata"]["ownerReferences"][0]["kind"],
        "ReadinessPolicy"
    );
    assert_eq!(first["results"][0]["result"], "fail");

    // A thousand more workloads, written as fast as kubectl goes.
    let before = writes(&operator).await;
    let storm = tempfile::NamedTempFile::new()?;
    std::fs::write(
        storm.path(),
        deployments(&ns, 1008, 6).replace("web-", "storm-"),
    )?;
    let out = env
        .kubectl()
        .arg("apply")
        .arg("-f")
        .arg(storm.path())
        .output()?;
    assert!(out.status.success(), "{}", text(&out));
    crate::common::eventually(
        Duration::from_secs(120),
        "the report counts every workload",
        || async {
            let report = stored_report(env, &ns).ok_or("no report")?;
            let summary = &report["summary"];
            let seen =
                summary["pass"].as_u64().unwrap_or(0) + summary["fail"].as_u64().unwrap_or(0) / 2;
            if seen == 1016 {
                Ok(())
            } else {
                Err(format!("{summary}"))
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let written = writes(&operator).await - before;
    let line = format!("policy reports: 1,008 workloads created, {written} report writes\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    assert!(
        (1..=60).contains(&written),
        "{written} writes for one storm"
    );
    // Nothing changes: nothing is written.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        writes(&operator).await - before,
        written,
        "an unchanged report is not rewritten"
    );

    // The policy goes; so does its report.
    let out = env
        .kubectl()
        .args(["delete", "readinesspolicy", "audit", "-n", &ns])
        .output()?;
    assert!(out.status.success(), "{}", text(&out));
    crate::common::eventually(Duration::from_secs(60), "the report is deleted", || async {
        match stored_report(env, &ns) {
            None => Ok(()),
            Some(r) if r.get("metadata").is_none() => Ok(()),
            Some(_) => Err("still there".to_owned()),
        }
    })
    .await;
    drop(operator);
    Ok(())
}
