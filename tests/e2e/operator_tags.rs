//! `images.pin: Report` against a real OCI registry: the operator records
//! the digest each tag resolves to in status, and flags PRB302 tag-moved
//! when the registry's digest differs from what the pods report.

use std::time::Duration;

use crate::common::{Operator, eventually, status_of};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use probity::policy::ReadinessPolicy;
use probity_testenv::registry::Registry;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(40);

#[tokio::test]
async fn report_records_digests_and_flags_moved_tags() -> anyhow::Result<()> {
    let _operators = crate::common::operator_alone().await;
    let Some(env) = probity_testenv::shared() else {
        return Ok(());
    };
    let Some(registry) = Registry::start_or_skip() else {
        return Ok(());
    };
    let client = env.client()?;
    probity::controller::install_crds(&client, WAIT).await?;
    let ns = env.namespace(&client, "tags").await?;
    let first = registry.push("team/api", "1.0", "first")?;
    let image = format!("{}/team/api:1.0", registry.host);

    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "app", "image": image}]}}},
    }))?;
    Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &deployment)
        .await?;
    // A pod of the Deployment's ReplicaSet, running the first digest.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let containers = json!([{"name": "app", "image": image}]);
    let rs_uid =
        crate::common::replicaset_of(&client, &ns, "web", "5d8f", containers.clone()).await;
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-5d8f-a", "labels": {"app": "web", "pod-template-hash": "5d8f"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "name": "web-5d8f", "uid": rs_uid, "controller": true}]},
        "spec": {"containers": containers},
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    let status = json!({"status": {"phase": "Running", "containerStatuses": [{
        "name": "app", "image": image, "imageID": format!("{}/team/api@{first}", registry.host),
        "ready": true, "restartCount": 0, "started": true,
        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
    }]}});
    pods.patch_status(
        "web-5d8f-a",
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await?;

    let operator = Operator::start(
        env.kubeconfig(),
        "tags",
        &ns,
        &[
            "--registry-cache-ttl",
            "1",
            "--vap-backstop",
            "false",
            "--registry-allow",
            &registry.host,
        ],
    );
    let policies: Api<ReadinessPolicy> = Api::namespaced(client.clone(), &ns);
    let policy: ReadinessPolicy = serde_json::from_value(json!({
        "apiVersion": "probity.dev/v1alpha1", "kind": "ReadinessPolicy",
        "metadata": {"name": "report"},
        "spec": {"images": {"pin": "Report", "requireDigest": false},
                 "probes": {"readiness": {"required": false}, "liveness": {"required": false}}},
    }))?;
    policies.create(&PostParams::default(), &policy).await?;

    // The tag's digest is recorded; the pod runs it, so nothing is flagged.
    let recorded = eventually(WAIT, "status records the tag's digest", || async {
        let s = status_of(&policies, "report").await?;
        (s.images.len() == 1 && s.images[0].digest.as_deref() == Some(first.as_str()))
            .then_some(s.clone())
            .ok_or(format!("{s:?}"))
    })
    .await;
    assert_eq!(recorded.images[0].image, image);
    assert_eq!(recorded.violating, 0, "{recorded:?}");

    // The tag moves: PRB302 names the pod still on the old digest.
    let second = registry.push("team/api", "1.0", "second")?;
    let flagged = eventually(WAIT, "PRB302 after the tag moves", || async {
        let s = status_of(&policies, "report").await?;
        s.violations
            .iter()
            .find(|v| v.rule == "PRB302")
            .cloned()
            .ok_or(format!("{s:?}"))
    })
    .await;
    assert_eq!(flagged.name, "web");
    assert!(flagged.message.contains("web-5d8f-a"), "{flagged:?}");
    assert!(
        flagged.message.contains(&second[..19]),
        "{flagged:?}\n{}",
        operator.log()
    );
    Ok(())
}
