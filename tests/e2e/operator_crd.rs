//! The CRDs: `crds/` is exactly what `probity crd` prints, and the real API
//! server accepts them (structural schema), applies their defaults, and
//! enforces their CEL rules.

use std::time::Duration;

use kube::Api;
use kube::api::{DynamicObject, PostParams};
use probity::policy::{ClusterReadinessPolicy, Mode, ReadinessPolicy};
use serde_json::json;

#[test]
fn crds_directory_is_up_to_date() {
    up_to_date("crds/crds.yaml", &probity::policy::crds_yaml(), "crd");
}

#[test]
fn field_reference_is_up_to_date() {
    up_to_date(
        "docs/crd-reference.md",
        &probity::policy::crd_reference(),
        "crd --reference",
    );
}

fn up_to_date(file: &str, generated: &str, command: &str) {
    let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    if committed != generated {
        let first = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        let line = |text: &str| {
            text.lines()
                .nth(first)
                .unwrap_or("<end of file>")
                .to_owned()
        };
        panic!(
            "{file} is stale (first difference at line {}):\n  committed: {}\n  generated: {}\n\
             Regenerate it with: cargo run -q -- {command} > {file}",
            first + 1,
            line(&committed),
            line(generated),
        );
    }
}

#[tokio::test]
async fn api_server_accepts_defaults_and_validates_policies() -> anyhow::Result<()> {
    let Some(env) = probity_testenv::shared() else {
        return Ok(());
    };
    let client = env.client()?;
    probity::controller::install_crds(&client, Duration::from_secs(30)).await?;
    let ns = env.namespace(&client, "crd-policy").await?;

    // An empty spec is the default policy, and the server fills it in.
    let policies: Api<ReadinessPolicy> = Api::namespaced(client.clone(), &ns);
    let empty: ReadinessPolicy = serde_json::from_value(json!({
        "apiVersion": "probity.dev/v1alpha1", "kind": "ReadinessPolicy",
        "metadata": {"name": "defaults"}, "spec": {},
    }))?;
    let stored = policies.create(&PostParams::default(), &empty).await?;
    assert_eq!(stored.spec, probity::policy::ReadinessPolicySpec::default());
    let raw: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns,
        &kube::api::ApiResource::erase::<ReadinessPolicy>(&()),
    );
    let raw = raw.get("defaults").await?;
    assert_eq!(
        raw.data["spec"]["images"]["requireDigest"], true,
        "{:?}",
        raw.data
    );
    assert_eq!(raw.data["spec"]["mode"], "Audit");

    // CEL: the same path for readiness and liveness contradicts PRB104.
    let same_paths: ReadinessPolicy = serde_json::from_value(json!({
        "apiVersion": "probity.dev/v1alpha1", "kind": "ReadinessPolicy",
        "metadata": {"name": "same-paths"},
        "spec": {"probes": {"readiness": {"required": true, "path": "/health"},
                            "liveness": {"required": true, "path": "/health"}}},
    }))?;
    let err = policies
        .create(&PostParams::default(), &same_paths)
        .await
        .expect_err("CEL rule rejects equal paths");
    let kube::Error::Api(status) = err else {
        panic!("expected an API status, got {err:?}");
    };
    assert_eq!(status.code, 422, "{status:?}");
    assert!(
        status
            .message
            .contains("readiness.path and liveness.path must differ"),
        "{}",
        status.message
    );

    // Enum values are enforced by the schema.
    let bad_mode = json!({
        "apiVersion": "probity.dev/v1alpha1", "kind": "ClusterReadinessPolicy",
        "metadata": {"name": format!("{ns}-bad-mode")}, "spec": {"mode": "Deny"},
    });
    let cluster: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &kube::api::ApiResource::erase::<ClusterReadinessPolicy>(&()),
    );
    let err = cluster
        .create(&PostParams::default(), &serde_json::from_value(bad_mode)?)
        .await
        .expect_err("mode Deny is not an enum value");
    assert!(err.to_string().contains("spec.mode"), "{err}");

    // CEL on registries, and the cluster kind's namespaceSelector.
    let url_registry: ClusterReadinessPolicy = serde_json::from_value(json!({
        "apiVersion": "probity.dev/v1alpha1", "kind": "ClusterReadinessPolicy",
        "metadata": {"name": format!("{ns}-url")},
        "spec": {"images": {"allowedRegistries": ["https://ghcr.io"]}},
    }))?;
    let typed: Api<ClusterReadinessPolicy> = Api::all(client.clone());
    let err = typed
        .create(&PostParams::default(), &url_registry)
        .await
        .expect_err("registries are names, not URLs");
    assert!(err.to_string().contains("without a scheme"), "{err}");
    let scoped: ClusterReadinessPolicy = serde_json::from_value(json!({
        "apiVersion": "probity.dev/v1alpha1", "kind": "ClusterReadinessPolicy",
        "metadata": {"name": format!("{ns}-scoped")},
        "spec": {"mode": "Enforce", "namespaceSelector": {"matchLabels": {"team": "a"}},
                 "images": {"allowedRegistries": ["ghcr.io/acme"]}},
    }))?;
    let stored = typed.create(&PostParams::default(), &scoped).await?;
    assert_eq!(stored.spec.policy.mode, Mode::Enforce);
    assert!(stored.spec.namespace_selector.is_some());

    // The documented examples are accepted as written.
    let out = env
        .kubectl()
        .args(["apply", "--dry-run=server", "-n", &ns, "-f"])
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/examples/policies.yaml"
        ))
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["payments-baseline", "consumers"] {
        assert!(
            stdout.contains(&format!("{name} created (server dry run)")),
            "{stdout}"
        );
    }

    // The generated webhook configurations and admission policies are
    // accepted by the API server as printed.
    for args in [
        vec!["webhook-config", "--namespace", "probity"],
        vec![
            "vap",
            concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples/policies.yaml"),
        ],
    ] {
        let printed = std::process::Command::new(env!("CARGO_BIN_EXE_probity"))
            .args(&args)
            .output()?;
        assert!(
            printed.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&printed.stderr)
        );
        let file =
            std::env::temp_dir().join(format!("probity-{}-{}.yaml", args[0], std::process::id()));
        std::fs::write(&file, &printed.stdout)?;
        let out = env
            .kubectl()
            .args(["apply", "--dry-run=server", "-f"])
            .arg(&file)
            .output()?;
        let _ = std::fs::remove_file(&file);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout)
                .matches("(server dry run)")
                .count(),
            if args[0] == "vap" { 4 } else { 2 },
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }

    // kubectl shows the printer columns and knows the short name.
    let out = env.kubectl().args(["get", "rpol", "-n", &ns]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let header = text.lines().next().unwrap_or_default();
    for column in ["NAME", "MODE", "MATCHED", "VIOLATING", "READY", "AGE"] {
        assert!(header.contains(column), "{text}");
    }
    assert!(
        text.contains("defaults") && text.contains("Audit"),
        "{text}"
    );
    Ok(())
}
