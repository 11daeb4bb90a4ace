//! `probity operator` against a real kube-apiserver: policy status follows
//! workloads, Events are published once per workload and rule, namespaced
//! and cluster policies keep to their scope, and pod status written through
//! the status subresource (as a kubelet would) drives PRB301 and PRB303.
//!
//! One test function so one operator watches the whole run; each step says
//! what it checks.

use std::time::Duration;

use crate::common::{Operator, eventually, status_of};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use probity::policy::{ClusterReadinessPolicy, ReadinessPolicy};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const DIGEST_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const DIGEST_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn deployment(name: &str, image: &str, probes: bool) -> Deployment {
    let mut container = json!({
        "name": "app", "image": image,
        "ports": [{"name": "http", "containerPort": 8080}],
    });
    if probes {
        container["readinessProbe"] = json!({"httpGet": {"path": "/readyz", "port": 8080}});
        container["livenessProbe"] =
            json!({"httpGet": {"path": "/livez", "port": 8080}, "failureThreshold": 6});
    }
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [container]}},
        },
    }))
    .expect("deployment")
}

fn pinned() -> String {
    format!("registry.example/app:1.0@{DIGEST_A}")
}

async fn events_about(client: &Client, ns: &str, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// Creates a pod owned by ReplicaSet `<deployment>-<hash>` and writes its
/// container status like a kubelet.
async fn kubelet_pod(
    client: &Client,
    pods: &Api<Pod>,
    deployment: &str,
    hash: &str,
    name: &str,
    digest: &str,
    restarts: i32,
) {
    let containers = json!([{"name": "app", "image": "registry.example/app:1.0"}]);
    let rs_uid = crate::common::replicaset_of(
        client,
        pods.namespace().unwrap_or_default(),
        deployment,
        hash,
        containers.clone(),
    )
    .await;
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app": deployment, "pod-template-hash": hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": format!("{deployment}-{hash}"),
                "uid": rs_uid, "controller": true}],
        },
        "spec": {"containers": containers},
    }))
    .expect("pod");
    if pods.get_opt(name).await.ok().flatten().is_none() {
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
    }
    write_status(pods, name, digest, restarts).await;
}

async fn write_status(pods: &Api<Pod>, name: &str, digest: &str, restarts: i32) {
    let status = json!({"status": {"phase": "Running", "containerStatuses": [{
        "name": "app", "image": "registry.example/app:1.0",
        "imageID": format!("registry.example/app@{digest}"),
        "ready": true, "restartCount": restarts, "started": true,
        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
    }]}});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("write pod status");
}

#[tokio::test]
async fn status_events_scoping_and_drift() -> anyhow::Result<()> {
    let _operators = crate::common::operator_alone().await;
    let Some(env) = probity_testenv::shared() else {
        return Ok(());
    };
    let client = env.client()?;
    probity::controller::install_crds(&client, WAIT).await?;
    let ns = env.namespace(&client, "op-audit").await?;
    let other = env.namespace(&client, "op-other").await?;
    let operator = Operator::start(env.kubeconfig(), "solo", &ns, &[]);

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let post = PostParams::default();
    deployments
        .create(&post, &deployment("good", &pinned(), true))
        .await?;
    deployments
        .create(&post, &deployment("bad", "nginx:latest", false))
        .await?;
    Api::<Deployment>::namespaced(client.clone(), &other)
        .create(&post, &deployment("elsewhere", "nginx", false))
        .await?;

    // Step 1: an Audit policy's status counts and lists violations.
    let policies: Api<ReadinessPolicy> = Api::namespaced(client.clone(), &ns);
    let policy: ReadinessPolicy = serde_json::from_value(json!({
        "apiVersion": "probity.dev/v1alpha1", "kind": "ReadinessPolicy",
        "metadata": {"name": "audit"}, "spec": {"mode": "Audit"},
    }))?;
    policies.create(&post, &policy).await?;
    let status = eventually(
        WAIT,
        "audit policy status: 1 compliant, 1 violating",
        || async {
            let s = status_of(&policies, "audit").await?;
            (s.matched == 2 && s.compliant == 1 && s.violating == 1)
                .then_some(s.clone())
                .ok_or(format!("{s:?}"))
        },
    )
    .await;
    let rules: Vec<&str> = status.violations.iter().map(|v| v.rule.as_str()).collect();
    assert_eq!(
        rules,
        ["PRB001", "PRB002", "PRB101", "PRB102"],
        "{status:?}"
    );
    assert!(
        status
            .violations
            .iter()
            .all(|v| v.name == "bad" && v.namespace == ns)
    );
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Evaluated")
    );
    let compliant = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Compliant")
        .expect("Compliant");
    assert_eq!(compliant.reason, "ViolationsFound");

    // Step 2: one Warning Event per workload and rule.
    let events = eventually(WAIT, "events on the violating Deployment", || async {
        let events = events_about(&client, &ns, "bad").await;
        (events.len() == 4)
            .then_some(events.clone())
            .ok_or(format!("{} events", events.len()))
    })
    .await;
    let notes: Vec<String> = events.iter().filter_map(|e| e.note.clone()).collect();
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("PRB001 image-latest-tag: container app:")),
        "{notes:?}"
    );
    let mut reasons: Vec<&str> = events.iter().filter_map(|e| e.reason.as_deref()).collect();
    reasons.sort_unstable();
    assert_eq!(
        reasons,
        [
            "ImageLatestTag",
            "ImageNotPinned",
            "LivenessProbeMissing",
            "ReadinessProbeMissing"
        ]
    );
    assert!(events.iter().all(|e| e.type_.as_deref() == Some("Warning")
        && e.reporting_controller.as_deref() == Some("probity")));
    assert!(events_about(&client, &ns, "good").await.is_empty());

    // A change elsewhere re-reconciles the policy; no duplicate Events.
    deployments
        .create(&post, &deployment("another-good", &pinned(), true))
        .await?;
    eventually(WAIT, "3 matched", || async {
        let s = status_of(&policies, "audit").await?;
        (s.matched == 3).then_some(()).ok_or(format!("{s:?}"))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        events_about(&client, &ns, "bad").await.len(),
        4,
        "events were duplicated"
    );

    // Step 3: fixing the workload makes status follow.
    deployments
        .replace("bad", &post, &{
            let mut fixed = deployment("bad", &pinned(), true);
            fixed.metadata.resource_version =
                deployments.get("bad").await?.metadata.resource_version;
            fixed
        })
        .await?;
    let status = eventually(WAIT, "all compliant after the fix", || async {
        let s = status_of(&policies, "audit").await?;
        (s.violating == 0 && s.compliant == 3)
            .then_some(s.clone())
            .ok_or(format!("{s:?}"))
    })
    .await;
    assert!(status.violations.is_empty());
    let compliant = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Compliant")
        .expect("Compliant");
    assert_eq!(
        (compliant.status.as_str(), compliant.reason.as_str()),
        ("True", "NoViolations")
    );

    // Step 4: scoping. The namespaced policy never counted `other`; a
    // cluster policy selecting `other` by namespace label sees only it, and
    // a label selector narrows a policy to matching workloads.
    let cluster: Api<ClusterReadinessPolicy> = Api::all(client.clone());
    let cluster_name = format!("{other}-only");
    cluster
        .create(&post, &serde_json::from_value(json!({
            "apiVersion": "probity.dev/v1alpha1", "kind": "ClusterReadinessPolicy",
            "metadata": {"name": cluster_name},
            "spec": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": other}}},
        }))?)
        .await?;
    let status = eventually(WAIT, "cluster policy sees only its namespace", || async {
        let s = status_of(&cluster, &cluster_name).await?;
        (s.matched == 1 && s.violating == 1)
            .then_some(s.clone())
            .ok_or(format!("{s:?}"))
    })
    .await;
    assert!(
        status
            .violations
            .iter()
            .all(|v| v.namespace == other && v.name == "elsewhere")
    );
    policies
        .create(&post, &serde_json::from_value(json!({
            "apiVersion": "probity.dev/v1alpha1", "kind": "ReadinessPolicy",
            "metadata": {"name": "only-good"},
            "spec": {"match": {"kinds": ["Deployment"], "selector": {"matchLabels": {"app": "good"}}}},
        }))?)
        .await?;
    eventually(WAIT, "selector narrows to one workload", || async {
        let s = status_of(&policies, "only-good").await?;
        (s.matched == 1 && s.compliant == 1)
            .then_some(())
            .ok_or(format!("{s:?}"))
    })
    .await;

    // Step 5: PRB301. Three replicas of one revision, one on another digest.
    deployments
        .create(&post, &deployment("drift", &pinned(), true))
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    kubelet_pod(&client, &pods, "drift", "7c9d", "drift-7c9d-a", DIGEST_A, 0).await;
    kubelet_pod(&client, &pods, "drift", "7c9d", "drift-7c9d-b", DIGEST_A, 0).await;
    kubelet_pod(&client, &pods, "drift", "7c9d", "drift-7c9d-c", DIGEST_B, 0).await;
    let status = eventually(WAIT, "PRB301 in status", || async {
        let s = status_of(&policies, "audit").await?;
        s.violations
            .iter()
            .find(|v| v.rule == "PRB301")
            .cloned()
            .ok_or(format!("{s:?}"))
    })
    .await;
    assert_eq!(
        (status.name.as_str(), status.kind.as_str()),
        ("drift", "Deployment")
    );
    assert!(
        status.message.contains("drift-7c9d-c"),
        "{}",
        status.message
    );
    assert!(
        !status.message.contains("drift-7c9d-a ("),
        "{}",
        status.message
    );
    let event = eventually(WAIT, "ImageDigestDrift event", || async {
        events_about(&client, &ns, "drift")
            .await
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("ImageDigestDrift"))
            .ok_or_else(|| "none yet".to_owned())
    })
    .await;
    assert!(event.note.unwrap_or_default().contains("drift-7c9d-c"));

    // The odd pod is replaced with the right image: drift clears.
    write_status(&pods, "drift-7c9d-c", DIGEST_A, 0).await;
    eventually(WAIT, "PRB301 clears", || async {
        let s = status_of(&policies, "audit").await?;
        (s.violating == 0).then_some(()).ok_or(format!("{s:?}"))
    })
    .await;

    // Step 6: PRB303. Two of three replicas restart together.
    deployments
        .create(&post, &deployment("flappy", &pinned(), true))
        .await?;
    for pod in ["flappy-1a2b-x", "flappy-1a2b-y", "flappy-1a2b-z"] {
        kubelet_pod(&client, &pods, "flappy", "1a2b", pod, DIGEST_A, 0).await;
    }
    eventually(WAIT, "flappy counted", || async {
        let s = status_of(&policies, "audit").await?;
        (s.matched == 5).then_some(()).ok_or(format!("{s:?}"))
    })
    .await;
    write_status(&pods, "flappy-1a2b-x", DIGEST_A, 1).await;
    write_status(&pods, "flappy-1a2b-y", DIGEST_A, 1).await;
    let restart = eventually(WAIT, "PRB303 in status", || async {
        let s = status_of(&policies, "audit").await?;
        s.violations
            .iter()
            .find(|v| v.rule == "PRB303")
            .cloned()
            .ok_or(format!("{s:?}"))
    })
    .await;
    assert_eq!(restart.name, "flappy");
    assert!(
        restart
            .message
            .starts_with("2 of 3 replicas restarted within 5m"),
        "{}",
        restart.message
    );

    // Step 7: the operator's own endpoints.
    for path in ["/livez", "/readyz", "/startupz"] {
        let (code, body) = operator.get(path).await.expect("admin endpoint answers");
        assert_eq!((code, body.trim()), (200, "ok"), "{path}");
    }
    let (_, verbose) = operator.get("/readyz?verbose").await.expect("verbose");
    assert!(
        verbose.contains("[+]caches ok") && verbose.contains("[+]leader ok"),
        "{verbose}"
    );
    let (code, metrics) = operator.get("/metrics").await.expect("metrics");
    assert_eq!(code, 200);
    for needle in [
        "probity_reconciles_total{kind=\"ReadinessPolicy\",result=\"ok\"}",
        "probity_reconcile_duration_seconds_bucket",
        "probity_policy_violations{policy=\"ReadinessPolicy/",
        "probity_events_published_total",
        "probity_leader 1",
        "probity_watch_restarts_total",
        "process_cpu_seconds_total ",
        "process_resident_memory_bytes ",
        "process_open_fds ",
        "process_start_time_seconds ",
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} missing from:\n{metrics}"
        );
    }
    let _ = Value::Null;
    Ok(())
}
