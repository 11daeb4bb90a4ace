//! The API server goes away mid-run and comes back (same etcd): the
//! operator backs off, resumes its watches, re-acquires its lease and
//! reconverges status; it never exits.

use std::time::Duration;

use crate::common::{Operator, eventually, status_of};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use probity::policy::ReadinessPolicy;
use probity_testenv::{Options, TestEnv};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn bare_pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }))
    .expect("pod")
}

#[tokio::test]
async fn status_reconverges_after_an_api_server_restart() -> anyhow::Result<()> {
    let Some(binaries) = probity_testenv::binaries_or_skip() else {
        return Ok(());
    };
    // A control plane of its own: this test stops its API server.
    let mut env =
        tokio::task::spawn_blocking(move || TestEnv::start(binaries, &Options::default()))
            .await??;
    let client = env.client()?;
    probity::controller::install_crds(&client, WAIT).await?;
    let ns = env.namespace(&client, "restart").await?;
    let operator = Operator::start(env.kubeconfig(), "solo", &ns, &[]);

    let post = PostParams::default();
    let policies: Api<ReadinessPolicy> = Api::namespaced(client.clone(), &ns);
    policies
        .create(
            &post,
            &serde_json::from_value(json!({
                "apiVersion": "probity.dev/v1alpha1", "kind": "ReadinessPolicy",
                "metadata": {"name": "p"}, "spec": {"match": {"kinds": ["Pod"]}},
            }))?,
        )
        .await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.create(&post, &bare_pod("before", "nginx:latest"))
        .await?;
    let matched = |n: i64| {
        let policies = policies.clone();
        move || {
            let policies = policies.clone();
            async move {
                let s = status_of(&policies, "p").await?;
                (s.matched == n).then_some(()).ok_or(format!("{s:?}"))
            }
        }
    };
    eventually(WAIT, "status before the restart", matched(1)).await;

    let env = tokio::task::spawn_blocking(move || {
        env.stop_apiserver();
        std::thread::sleep(Duration::from_secs(4));
        env.start_apiserver(Duration::from_secs(120)).map(|()| env)
    })
    .await??;
    let client = env.client()?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.create(&post, &bare_pod("after", "nginx:latest"))
        .await?;
    let policies: Api<ReadinessPolicy> = Api::namespaced(client.clone(), &ns);
    let matched = |n: i64| {
        let policies = policies.clone();
        move || {
            let policies = policies.clone();
            async move {
                let s = status_of(&policies, "p").await?;
                (s.matched == n && s.violating == n)
                    .then_some(())
                    .ok_or(format!("{s:?}"))
            }
        }
    };
    eventually(WAIT, "status after the restart", matched(2)).await;

    let (code, metrics) = operator
        .get("/metrics")
        .await
        .expect("operator still serving");
    assert_eq!(code, 200);
    let restarts: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("probity_watch_restarts_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(restarts >= 1.0, "no watch restart recorded:\n{metrics}");
    let log = operator.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("became leader"), "{log}");
    tokio::task::spawn_blocking(move || drop(env)).await?;
    Ok(())
}
