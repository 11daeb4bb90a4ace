//! The test control plane is a real kube-apiserver: CRDs are validated and
//! served, watches stream changes, and server-side apply tracks field
//! ownership and conflicts. Nothing here could pass against a mock.

use std::time::Duration;

use futures::TryStreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, conditions, wait::await_condition, watcher};
use kube::{Api, ResourceExt as _};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn crd_is_established_validated_and_served() -> anyhow::Result<()> {
    let Some(env) = probity_testenv::shared() else {
        return Ok(());
    };
    let client = env.client()?;
    let ns = env.namespace(&client, "crd").await?;

    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.e2e.probity.dev"},
        "spec": {
            "group": "e2e.probity.dev",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "required": ["size"],
                        "properties": {"size": {"type": "integer", "minimum": 1}},
                    }},
                }},
            }],
        },
    }))?;
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let apply = PatchParams::apply("probity-e2e").force();
    crds.patch("widgets.e2e.probity.dev", &apply, &Patch::Apply(&crd))
        .await?;
    let established = await_condition(
        crds,
        "widgets.e2e.probity.dev",
        conditions::is_crd_established(),
    );
    tokio::time::timeout(WAIT, established).await??;

    let gvk = GroupVersionKind::gvk("e2e.probity.dev", "v1", "Widget");
    let widgets = Api::<DynamicObject>::namespaced_with(client, &ns, &ApiResource::from_gvk(&gvk));
    let good: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "e2e.probity.dev/v1", "kind": "Widget",
        "metadata": {"name": "good"}, "spec": {"size": 3},
    }))?;
    widgets.create(&PostParams::default(), &good).await?;
    let stored = widgets.get("good").await?;
    assert_eq!(stored.data["spec"]["size"], 3);

    // The structural schema is enforced by the server.
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "e2e.probity.dev/v1", "kind": "Widget",
        "metadata": {"name": "bad"}, "spec": {"size": 0},
    }))?;
    let err = widgets
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("size 0 violates minimum 1");
    let kube::Error::Api(status) = err else {
        panic!("expected an API status, got {err:?}");
    };
    assert_eq!(status.code, 422, "{status:?}");
    assert!(status.message.contains("spec.size"), "{}", status.message);
    Ok(())
}

fn deployment(replicas: i32) -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.example/web:1.0"}]},
            },
        },
    })
}

#[tokio::test]
async fn deployment_watch_and_server_side_apply_ownership() -> anyhow::Result<()> {
    let Some(env) = probity_testenv::shared() else {
        return Ok(());
    };
    let client = env.client()?;
    let ns = env.namespace(&client, "ssa").await?;
    let deployments = Api::<Deployment>::namespaced(client, &ns);

    // Watch before the object exists; collect the replica counts we see.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let watch = watcher(
        deployments.clone(),
        watcher::Config::default().fields("metadata.name=web"),
    )
    .applied_objects()
    .try_for_each(move |d: Deployment| {
        let replicas = d.spec.and_then(|s| s.replicas);
        let _ = seen_tx.send(replicas);
        async { Ok(()) }
    });
    let watch = tokio::spawn(watch);

    let team_a = PatchParams::apply("team-a");
    let created = deployments
        .patch("web", &team_a, &Patch::Apply(deployment(2)))
        .await?;
    // Defaulting happened on the server.
    let spec = created.spec.clone().unwrap_or_default();
    assert_eq!(spec.progress_deadline_seconds, Some(600));
    assert_eq!(
        spec.strategy.and_then(|s| s.type_).as_deref(),
        Some("RollingUpdate")
    );
    wait_for(&mut seen, Some(2)).await?;

    // A second manager that sets a field team-a owns conflicts...
    let team_b = PatchParams::apply("team-b");
    let err = deployments
        .patch("web", &team_b, &Patch::Apply(deployment(3)))
        .await
        .expect_err("team-b must conflict with team-a on spec.replicas");
    let kube::Error::Api(status) = err else {
        panic!("expected an API status, got {err:?}");
    };
    assert_eq!(status.code, 409, "{status:?}");
    assert!(status.message.contains("team-a"), "{}", status.message);
    assert!(
        status.message.contains(".spec.replicas"),
        "{}",
        status.message
    );

    // ...until it forces, which moves ownership of that field to team-b.
    let forced = deployments
        .patch("web", &team_b.clone().force(), &Patch::Apply(deployment(3)))
        .await?;
    let owns_replicas = |manager: &str| {
        forced.managed_fields().iter().any(|m| {
            m.manager.as_deref() == Some(manager)
                && m.fields_v1
                    .as_ref()
                    .is_some_and(|f| f.0.pointer("/f:spec/f:replicas").is_some())
        })
    };
    assert!(owns_replicas("team-b"), "{:#?}", forced.managed_fields());
    assert!(!owns_replicas("team-a"), "{:#?}", forced.managed_fields());
    // team-a keeps the fields nobody took from it.
    assert!(
        forced
            .managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some("team-a")),
        "{:#?}",
        forced.managed_fields()
    );
    wait_for(&mut seen, Some(3)).await?;

    watch.abort();
    Ok(())
}

/// Waits until the watch reports `want`.
async fn wait_for(
    seen: &mut tokio::sync::mpsc::UnboundedReceiver<Option<i32>>,
    want: Option<i32>,
) -> anyhow::Result<()> {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(replicas) = seen.recv().await {
            if replicas == want {
                return true;
            }
        }
        false
    })
    .await;
    anyhow::ensure!(
        found == Ok(true),
        "the watch never reported replicas {want:?}"
    );
    Ok(())
}

#[tokio::test]
async fn server_reports_the_built_version() -> anyhow::Result<()> {
    let Some(env) = probity_testenv::shared() else {
        return Ok(());
    };
    let info = env.client()?.apiserver_version().await?;
    assert_eq!(
        info.git_version,
        format!("v{}", probity_testenv::KUBERNETES_VERSION)
    );
    let out = env.kubectl().args(["get", "--raw", "/livez"]).output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    Ok(())
}
