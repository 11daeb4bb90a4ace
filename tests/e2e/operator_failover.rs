//! Two operators, one lease: only the leader writes; when it is killed
//! (SIGKILL, no release) the standby takes over within a lease duration and
//! status follows changes again; a graceful stop releases the lease.

use std::time::Duration;

use crate::common::{Operator, eventually, status_of};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{ListParams, PostParams};
use probity::policy::ReadinessPolicy;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn bare_pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "nginx:latest"}]},
    }))
    .expect("pod")
}

async fn holder(leases: &Api<Lease>) -> Result<String, String> {
    let lease = leases
        .get("probity-operator")
        .await
        .map_err(|e| e.to_string())?;
    Ok(lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default())
}

#[tokio::test]
async fn standby_takes_over_when_the_leader_dies() -> anyhow::Result<()> {
    let _operators = crate::common::operator_alone().await;
    let Some(env) = probity_testenv::shared() else {
        return Ok(());
    };
    let client = env.client()?;
    probity::controller::install_crds(&client, WAIT).await?;
    let ns = env.namespace(&client, "failover").await?;
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);

    let mut alpha = Operator::start(env.kubeconfig(), "alpha", &ns, &[]);
    eventually(WAIT, "alpha holds the lease", || async {
        let h = holder(&leases).await?;
        (h == "alpha").then_some(()).ok_or(h)
    })
    .await;
    let mut beta = Operator::start(env.kubeconfig(), "beta", &ns, &[]);
    // The standby is ready (it serves, its caches are warm) and says so.
    let verbose = eventually(WAIT, "beta ready as standby", || async {
        match beta.get("/readyz?verbose").await {
            Some((200, body))
                if body.contains("[+]caches ok") && body.contains("leader: alpha") =>
            {
                Ok(body)
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        verbose.contains("[+]leader degraded: standby (leader: alpha)"),
        "{verbose}"
    );

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
    pods.create(&post, &bare_pod("one")).await?;
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
    eventually(WAIT, "status by the leader", matched(1)).await;
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    let instances = eventually(WAIT, "events by the leader", || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let instances: Vec<String> = list
            .items
            .iter()
            .filter_map(|e| e.reporting_instance.clone())
            .collect();
        (!instances.is_empty())
            .then_some(instances)
            .ok_or("none".to_owned())
    })
    .await;
    assert!(
        instances.iter().all(|i| i == "alpha"),
        "the standby wrote: {instances:?}"
    );

    // Kill the leader without a chance to release the lease.
    alpha.kill();
    let killed = std::time::Instant::now();
    pods.create(&post, &bare_pod("two")).await?;
    eventually(WAIT, "beta holds the lease", || async {
        let h = holder(&leases).await?;
        (h == "beta").then_some(()).ok_or(h)
    })
    .await;
    eventually(WAIT, "status follows under the new leader", matched(2)).await;
    let took = killed.elapsed();
    // Lease 3 s: a candidate must see it unchanged for 3 s, then retry.
    assert!(took < Duration::from_secs(15), "failover took {took:?}");
    eprintln!("failover: status current {took:?} after the leader was killed");
    let lease = leases.get("probity-operator").await?;
    assert!(lease.spec.and_then(|s| s.lease_transitions).unwrap_or(0) >= 1);
    let (_, metrics) = beta.get("/metrics").await.expect("metrics");
    assert!(metrics.contains("probity_leader 1"), "{metrics}");

    // A graceful stop gives the lease up at once.
    assert_eq!(beta.terminate(), Some(0), "{}", beta.log());
    let h = holder(&leases).await.map_err(anyhow::Error::msg)?;
    assert_eq!(h, "", "lease still held after a graceful stop");
    Ok(())
}
