//! The Helm chart: `helm lint --strict`, rendered objects accepted by the
//! real API server (server-side dry run) in every certificate mode, CRDs
//! identical to `crds/`, the chart passing probity's own default policy,
//! and the values schema rejecting bad values with a clear message.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/probity");
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn piped(mut command: Command, stdin: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(mut input) = child.stdin.take() {
        let _ = input.write_all(stdin);
    }
    child.wait_with_output().expect("output")
}

fn template(env: &probity_testenv::TestEnv, namespace: &str, sets: &[&str]) -> Output {
    let mut helm = env.helm();
    helm.args([
        "template",
        "probity",
        CHART,
        "--include-crds",
        "-n",
        namespace,
    ]);
    for set in sets {
        helm.args(["--set", set]);
    }
    helm.output().expect("helm template")
}

#[test]
fn chart_crds_are_the_generated_crds() {
    let chart = std::fs::read_to_string(format!("{CHART}/crds/crds.yaml")).unwrap_or_default();
    let top = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/crds/crds.yaml"))
        .unwrap_or_default();
    assert!(
        chart == top,
        "charts/probity/crds/crds.yaml differs from crds/crds.yaml; \
         copy it: cp crds/crds.yaml charts/probity/crds/crds.yaml"
    );
}

/// Stand-in CRDs for cert-manager's Issuer and Certificate, so the API
/// server can dry-run the cert-manager mode's objects without installing
/// cert-manager; they accept any spec.
fn cert_manager_crds() -> String {
    let items: Vec<serde_json::Value> = ["Issuer", "Certificate"]
        .iter()
        .map(|kind| {
            let plural = format!("{}s", kind.to_ascii_lowercase());
            serde_json::json!({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": {"name": format!("{plural}.cert-manager.io")},
                "spec": {"group": "cert-manager.io", "scope": "Namespaced",
                    "names": {"kind": kind, "plural": plural},
                    "versions": [{"name": "v1", "served": true, "storage": true,
                        "schema": {"openAPIV3Schema": {"type": "object",
                            "x-kubernetes-preserve-unknown-fields": true}}}]},
            })
        })
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

#[tokio::test]
async fn the_chart_lints_renders_and_is_accepted_in_every_mode() -> anyhow::Result<()> {
    let Some(env) = probity_testenv::shared() else {
        return Ok(());
    };
    let out = env.helm().args(["lint", "--strict", CHART]).output()?;
    assert!(out.status.success(), "{}", text(&out));

    let client = env.client()?;
    let ns = env.namespace(&client, "chart").await?;
    let mut stub = env.kubectl();
    stub.args(["apply", "-f", "-"]);
    let out = piped(stub, cert_manager_crds().as_bytes());
    assert!(out.status.success(), "{}", text(&out));
    // Let discovery see the stand-in kinds.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;

    let digest = format!("image.digest={DIGEST}");
    for (mode, sets) in [
        ("self-managed", vec![digest.as_str()]),
        (
            "cert-manager",
            vec![digest.as_str(), "certificates.mode=cert-manager"],
        ),
        (
            "secret",
            vec![
                digest.as_str(),
                "certificates.mode=secret",
                "certificates.secretName=my-tls",
                "certificates.caBundle=-----BEGIN CERTIFICATE-----",
            ],
        ),
        (
            "webhooks off",
            vec![
                digest.as_str(),
                "webhooks.enabled=false",
                "vapBackstop=false",
            ],
        ),
    ] {
        let rendered = template(env, &ns, &sets);
        assert!(rendered.status.success(), "{mode}: {}", text(&rendered));
        let mut apply = env.kubectl();
        apply.args(["apply", "--dry-run=server", "-n", &ns, "-f", "-"]);
        let out = piped(apply, &rendered.stdout);
        assert!(out.status.success(), "{mode}: {}", text(&out));
        let accepted = String::from_utf8_lossy(&out.stdout)
            .matches("(server dry run)")
            .count();
        let documents = String::from_utf8_lossy(&rendered.stdout)
            .lines()
            .filter(|l| l.starts_with("kind: "))
            .count();
        assert_eq!(accepted, documents, "{mode}: {}", text(&out));

        // The chart passes probity's own default policy.
        let mut lint = Command::new(env!("CARGO_BIN_EXE_probity"));
        lint.args(["lint", "-"]);
        let out = piped(lint, &rendered.stdout);
        assert_eq!(out.status.code(), Some(0), "{mode}: {}", text(&out));
    }

    // Without a digest the operator's own image is unpinned, and says so.
    let rendered = template(env, &ns, &[]);
    let mut lint = Command::new(env!("CARGO_BIN_EXE_probity"));
    lint.args(["lint", "-"]);
    let out = piped(lint, &rendered.stdout);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("PRB002"), "{}", text(&out));
    let rendered = String::from_utf8(rendered.stdout)?;
    assert!(rendered.contains(&format!("namespace: {ns}")));
    Ok(())
}

#[test]
fn the_values_schema_rejects_bad_values() {
    let Some(binaries) = probity_testenv::binaries_or_skip() else {
        return;
    };
    for (set, needle) in [
        ("replicaCount=0", "/replicaCount"),
        ("certificates.mode=vault", "/certificates/mode"),
        ("webhooks.failurePolicy=Never", "/webhooks/failurePolicy"),
        ("image.digest=latest", "/image/digest"),
        ("certificates.mode=secret", "secretName"),
        ("unknownKey=1", "unknownKey"),
    ] {
        let out = Command::new(binaries.helm())
            .args(["template", "probity", CHART, "--set", set])
            .env(
                "HELM_CACHE_HOME",
                std::env::temp_dir().join("probity-helm-cache"),
            )
            .env(
                "HELM_CONFIG_HOME",
                std::env::temp_dir().join("probity-helm-config"),
            )
            .output()
            .expect("helm");
        assert!(!out.status.success(), "{set} was accepted");
        let message = String::from_utf8_lossy(&out.stderr);
        assert!(
            message.contains("values don't meet the specifications of the schema"),
            "{set}: {message}"
        );
        assert!(message.contains(needle), "{set}: {message}");
    }
}
