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
