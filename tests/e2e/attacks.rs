//! What a user with ordinary namespace rights tries, against the real API
//! server: a Pod claiming a ConfigMap as its controller, a Deployment
//! claiming a CronJob, a ReplicationController (a kind once unjudged), an
//! annotation exempting the image rules, a substring trick on the
//! exemption, a `:latest` debug container and a `:latest` image volume.
//! Each must be denied by the webhook while it is up, and by the
//! ValidatingAdmissionPolicy backstop while it is down.

use std::time::Duration;

use crate::common::{Operator, eventually, free_port};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, ReplicationController};
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);
const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

fn pinned() -> String {
    format!("registry.example/app:1.0@{DIGEST}")
}

fn container(image: &str) -> Value {
    json!({
        "name": "app", "image": image,
        "ports": [{"containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}},
        "livenessProbe": {"httpGet": {"path": "/livez", "port": 8080}, "failureThreshold": 6},
    })
}

fn pod(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container(image)]},
    })
}

fn deployment(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [container(image)]}},
        },
    })
}

fn owned_by(mut object: Value, api_version: &str, kind: &str) -> Value {
    object["metadata"]["ownerReferences"] = json!([{
        "apiVersion": api_version, "kind": kind, "name": "real-and-compliant",
        "uid": "00000000-0000-0000-0000-000000000001", "controller": true,
    }]);
    object
}

/// Every attack, as (what, the object); each is created with a dry run.
fn attacks() -> Vec<(&'static str, Value)> {
    let mut rc = json!({
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "rc"},
        "spec": {"replicas": 1, "selector": {"app": "rc"},
                 "template": {"metadata": {"labels": {"app": "rc"}},
                              "spec": {"containers": [container("registry.example/app:latest")]}}},
    });
    rc["metadata"]["labels"] = json!({"app": "rc"});
    let mut self_exempt = deployment("self-exempt", "registry.example/app:latest");
    self_exempt["metadata"]["annotations"] =
        json!({"probity.dev/exempt": "PRB001,PRB002: trust me"});
    let mut substring = deployment("substring", "registry.example/app:latest");
    substring["metadata"]["annotations"] =
        json!({"probity.dev/exempt": "XPRB001X,XPRB002X: not a rule id"});
    let mut volume = pod("volume", &pinned());
    volume["spec"]["volumes"] =
        json!([{"name": "model", "image": {"reference": "registry.example/model:latest"}}]);
    volume["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "model", "mountPath": "/model"}]);
    vec![
        (
            "a Pod claiming a ConfigMap as controller",
            owned_by(
                pod("configmap-owned", "registry.example/app:latest"),
                "v1",
                "ConfigMap",
            ),
        ),
        (
            "a Deployment claiming a CronJob as controller",
            owned_by(
                deployment("cronjob-owned", "registry.example/app:latest"),
                "batch/v1",
                "CronJob",
            ),
        ),
        (
            "a Pod claiming a custom resource as controller",
            owned_by(
                pod("crd-owned", "registry.example/app:latest"),
                "example.com/v1",
                "ReplicaSet",
            ),
        ),
        ("a ReplicationController", rc),
        ("an annotation exempting the image rules", self_exempt),
        ("rule ids hidden in other words", substring),
        ("an image volume on :latest", volume),
    ]
}

async fn dry_run_create(client: &Client, ns: &str, object: &Value) -> Result<(), kube::Error> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match kind {
        "Pod" => {
            let api: Api<Pod> = Api::namespaced(client.clone(), ns);
            api.create(
                &params,
                &serde_json::from_value(object.clone()).map_err(kube::Error::SerdeError)?,
            )
            .await
            .map(drop)
        }
        "Deployment" => {
            let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
            api.create(
                &params,
                &serde_json::from_value(object.clone()).map_err(kube::Error::SerdeError)?,
            )
            .await
            .map(drop)
        }
        _ => {
            let api: Api<ReplicationController> = Api::namespaced(client.clone(), ns);
            api.create(
                &params,
                &serde_json::from_value(object.clone()).map_err(kube::Error::SerdeError)?,
            )
            .await
            .map(drop)
        }
    }
}

fn denied(what: &str, result: Result<(), kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => s.message,
        other => panic!("{what}: expected a denial, got {other:?}"),
    }
}

/// A compliant bare Pod, then a `:latest` debug container added through
/// `pods/ephemeralcontainers`, as `kubectl debug` does.
async fn debug_container(client: &Client, ns: &str, name: &str) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    if pods.get_opt(name).await?.is_none() {
        pods.create(
            &PostParams::default(),
            &serde_json::from_value(pod(name, &pinned())).map_err(kube::Error::SerdeError)?,
        )
        .await?;
    }
    let patch = json!({"spec": {"ephemeralContainers": [
        {"name": "debug", "image": "busybox:latest", "targetContainerName": "app"}]}});
    pods.patch_ephemeral_containers(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .map(drop)
}

/// The webhook configurations `probity webhook-config` renders, calling
/// `127.0.0.1:port` and failing closed, narrowed to namespace `ns` (the
/// control plane is shared with other tests).
fn webhook_configs(name: &str, port: u16, ns: &str) -> (Value, Value) {
    use probity::admission::config::{Endpoint, WebhookConfig};
    let config = WebhookConfig {
        name: name.to_owned(),
        endpoint: Endpoint::Url(format!("https://127.0.0.1:{port}")),
        namespace: "kube-system".to_owned(),
        exclude_namespaces: Vec::new(),
        failure_policy: "Fail".to_owned(),
        timeout_seconds: 5,
        ca_bundle: None,
    };
    let narrow = |mut config: Value| {
        config["webhooks"][0]["namespaceSelector"] = json!({"matchExpressions": [{
            "key": "kubernetes.io/metadata.name", "operator": "In", "values": [ns],
        }]});
        config
    };
    (narrow(config.validating()), narrow(config.mutating()))
}

/// Server-side applies the cluster-scoped `config` named `name`.
async fn apply_config<K>(client: &Client, name: &str, config: &Value) -> anyhow::Result<()>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply("probity-test").force(),
            &Patch::Apply(config),
        )
        .await?;
    Ok(())
}

/// Creates the ReadinessPolicy `policy` in `ns`.
async fn create_policy(client: &Client, ns: &str, policy: Value) -> anyhow::Result<()> {
    let gvk = kube::api::GroupVersionKind::gvk("probity.dev", "v1alpha1", "ReadinessPolicy");
    let resource = kube::api::ApiResource::from_gvk(&gvk);
    let policy: DynamicObject = serde_json::from_value(policy)?;
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource)
        .create(&PostParams::default(), &policy)
        .await?;
    Ok(())
}

fn enforce_policy(ns: &str) -> Value {
    json!({
        "apiVersion": "probity.dev/v1alpha1", "kind": "ReadinessPolicy",
        "metadata": {"name": "strict", "namespace": ns},
        "spec": {"mode": "Enforce", "images": {"allowedRegistries": ["registry.example"]}},
    })
}

#[tokio::test]
async fn the_backstop_denies_every_attack_while_the_webhook_is_down() -> anyhow::Result<()> {
    let _operators = crate::common::operators_together().await;
    let Some(env) = probity_testenv::shared() else {
        return Ok(());
    };
    let client = env.client()?;
    probity::controller::install_crds(&client, Duration::from_secs(30)).await?;
    let ns = env.namespace(&client, "attack-vap").await?;

    // `probity vap` output, applied as a GitOps pipeline would.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("policy.json");
    std::fs::write(&file, enforce_policy(&ns).to_string())?;
    let vap = std::process::Command::new(env!("CARGO_BIN_EXE_probity"))
        .arg("vap")
        .arg(&file)
        .output()?;
    assert!(
        vap.status.success(),
        "{}",
        String::from_utf8_lossy(&vap.stderr)
    );
    let applied =
        probity_testenv::output_with_stdin(env.kubectl().args(["apply", "-f", "-"]), &vap.stdout)?;
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );

    // The backstop is in force once a plain :latest Deployment is denied.
    eventually(WAIT, "the backstop is in force", || async {
        match dry_run_create(
            &client,
            &ns,
            &deployment("probe", "registry.example/app:latest"),
        )
        .await
        {
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    for (what, object) in attacks() {
        let message = denied(what, dry_run_create(&client, &ns, &object).await);
        assert!(message.contains("probity backstop"), "{what}: {message}");
        assert!(message.contains("PRB001"), "{what}: {message}");
    }
    let message = denied(
        "a :latest debug container",
        debug_container(&client, &ns, "debugged").await,
    );
    assert!(message.contains("PRB001"), "{message}");

    // What is honest still passes: a compliant Pod under a real kind of
    // controller is judged through it (CEL cannot look owners up), and an
    // exemption of a probe rule with a reason.
    let owned = owned_by(pod("rs-owned", &pinned()), "apps/v1", "ReplicaSet");
    dry_run_create(&client, &ns, &owned).await?;
    let mut probe_exempt = deployment("probe-exempt", &pinned());
    if let Some(c) = probe_exempt["spec"]["template"]["spec"]["containers"][0].as_object_mut() {
        c.remove("readinessProbe");
    }
    probe_exempt["metadata"]["annotations"] =
        json!({"probity.dev/exempt": "PRB101: a one-shot server; tracked in OPS-1"});
    dry_run_create(&client, &ns, &probe_exempt).await?;
    Ok(())
}

#[tokio::test]
async fn the_webhook_denies_every_attack() -> anyhow::Result<()> {
    // Alone: another test's operator, with its backstop on, would give this
    // namespace's Enforce policy a ValidatingAdmissionPolicy, which the API
    // server runs before any webhook and which answers first.
    let _operators = crate::common::operator_alone().await;
    let Some(env) = probity_testenv::shared() else {
        return Ok(());
    };
    let client = env.client()?;
    probity::controller::install_crds(&client, Duration::from_secs(30)).await?;
    let system = env.namespace(&client, "attack-system").await?;
    let ns = env.namespace(&client, "attack-webhook").await?;

    let port = free_port();
    let name = format!("{system}-validate");
    let (validating, _) = webhook_configs(&name, port, &ns);
    apply_config::<ValidatingWebhookConfiguration>(&client, &name, &validating).await?;
    create_policy(&client, &ns, enforce_policy(&ns)).await?;

    let operator = Operator::with_webhooks(
        env.kubeconfig(),
        "attacks",
        &system,
        port,
        &name,
        "",
        &["--vap-backstop", "false"],
    );
    eventually(WAIT, "the webhook answers", || async {
        match dry_run_create(
            &client,
            &ns,
            &deployment("probe", "registry.example/app:latest"),
        )
        .await
        {
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("probity") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    for (what, object) in attacks() {
        let message = denied(what, dry_run_create(&client, &ns, &object).await);
        assert!(
            message.contains("PRB001 [image-latest-tag]"),
            "{what}: {message}\n{}",
            operator.log()
        );
        assert!(!message.contains("probity backstop"), "{what}: {message}");
    }
    let message = denied(
        "a :latest debug container",
        debug_container(&client, &ns, "debugged").await,
    );
    assert!(
        message.contains("PRB001") && message.contains("debug"),
        "{message}"
    );
    let message = denied(
        "an annotation exempting the image rules",
        dry_run_create(&client, &ns, &attacks()[4].1).await,
    );
    assert!(
        message.contains("PRB900"),
        "the refused exemption is named: {message}"
    );
    Ok(())
}

/// A loopback listener that counts connections and answers nothing: a
/// stand-in for an internal service an attacker wants the operator to call.
async fn bait() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    (addr, hits)
}

#[tokio::test]
async fn pinning_never_contacts_registries_the_cluster_admin_did_not_name() -> anyhow::Result<()> {
    let _operators = crate::common::operators_together().await;
    let Some(env) = probity_testenv::shared() else {
        return Ok(());
    };
    let client = env.client()?;
    probity::controller::install_crds(&client, Duration::from_secs(30)).await?;
    let system = env.namespace(&client, "ssrf-system").await?;
    let ns = env.namespace(&client, "ssrf").await?;
    // Two internal services: one a tenant's policy lists as a registry, one
    // nobody lists.
    let (listed, listed_hits) = bait().await;
    let (unlisted, unlisted_hits) = bait().await;
    let policy = json!({
        "apiVersion": "probity.dev/v1alpha1", "kind": "ReadinessPolicy",
        "metadata": {"name": "pin", "namespace": ns},
        "spec": {"mode": "Audit", "images": {"pin": "Admission", "allowedRegistries": [listed]}},
    });
    create_policy(&client, &ns, policy).await?;

    let port = free_port();
    let name = format!("{system}-mutate");
    let (_, mutating) = webhook_configs(&name, port, &ns);
    apply_config::<MutatingWebhookConfiguration>(&client, &name, &mutating).await?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    // Otherwise a create the API server admits without asking would pass
    // for "nothing was pinned".
    let probe: Deployment =
        serde_json::from_value(deployment("probe", &format!("{listed}/team/app:1.0")))?;
    crate::common::until_webhook_called(&deployments, &probe).await;
    let _operator = Operator::with_webhooks(
        env.kubeconfig(),
        "ssrf",
        &system,
        port,
        "",
        &name,
        &["--vap-backstop", "false"],
    );
    for registry in [&listed, &unlisted, &"169.254.169.254".to_owned()] {
        let object: Deployment =
            serde_json::from_value(deployment("probe", &format!("{registry}/team/app:1.0")))?;
        let created = eventually(WAIT, "the mutating webhook answers", || async {
            let params = PostParams {
                dry_run: false,
                ..PostParams::default()
            };
            match deployments.create(&params, &object).await {
                Ok(d) => Ok(d),
                Err(e) => Err(format!("{e}")),
            }
        })
        .await;
        let image = created
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|p| p.containers.into_iter().next())
            .and_then(|c| c.image)
            .unwrap_or_default();
        assert_eq!(
            image,
            format!("{registry}/team/app:1.0"),
            "nothing was pinned"
        );
        deployments.delete("probe", &Default::default()).await?;
        eventually(WAIT, "the probe Deployment is gone", || async {
            match deployments.get_opt("probe").await {
                Ok(None) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
    assert_eq!(
        listed_hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a loopback address a tenant's policy lists is still not public"
    );
    assert_eq!(
        unlisted_hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a registry no policy lists is never asked"
    );
    Ok(())
}

/// The operator's peak resident memory (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// A Pod with 2,000 containers from 2,001 registries, through the real
/// API server to both webhooks: denied by probity (so answered inside the
/// webhook timeout, which the API server enforces) with a bounded message,
/// and not one registry asked (one of them is a loopback listener a policy
/// lists).
#[tokio::test]
async fn a_review_with_thousands_of_registries_is_answered_without_asking_any() -> anyhow::Result<()>
{
    let _operators = crate::common::operators_together().await;
    let Some(env) = probity_testenv::shared() else {
        return Ok(());
    };
    let client = env.client()?;
    probity::controller::install_crds(&client, Duration::from_secs(30)).await?;
    let system = env.namespace(&client, "fanout-system").await?;
    let ns = env.namespace(&client, "fanout").await?;
    let (listed, hits) = bait().await;
    let policy = json!({
        "apiVersion": "probity.dev/v1alpha1", "kind": "ReadinessPolicy",
        "metadata": {"name": "pin", "namespace": ns},
        "spec": {"mode": "Enforce",
                 "images": {"pin": "Admission", "allowedRegistries": [listed, "registry.example"]}},
    });
    create_policy(&client, &ns, policy).await?;
    let port = free_port();
    let name = format!("{system}-hooks");
    let (validating, mutating) = webhook_configs(&name, port, &ns);
    apply_config::<ValidatingWebhookConfiguration>(&client, &name, &validating).await?;
    apply_config::<MutatingWebhookConfiguration>(&client, &name, &mutating).await?;
    let mut operator = Operator::with_webhooks(
        env.kubeconfig(),
        "fanout",
        &system,
        port,
        &name,
        &name,
        &["--vap-backstop", "false"],
    );
    let pid = operator
        .pid()
        .ok_or_else(|| anyhow::anyhow!("the operator is not running"))?;

    let mut containers: Vec<Value> = (0..2_000)
        .map(|i| container(&format!("r{i}.registry.invalid/app:1")))
        .collect();
    containers.push(container(&format!("{listed}/team/app:1.0")));
    for (i, c) in containers.iter_mut().enumerate() {
        c["name"] = json!(format!("c{i}"));
    }
    let object: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "fanout"},
        "spec": {"containers": containers},
    }))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let message = eventually(WAIT, "the webhooks deny the Pod", || async {
        match pods.create(&params, &object).await {
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("probity") => {
                Ok(s.message)
            }
            other => Err(format!("{:?}", other.map(|_| "admitted"))),
        }
    })
    .await;
    // The same Pod where no webhook looks: what the API server itself takes.
    let plain = env.namespace(&client, "fanout-plain").await?;
    let started = std::time::Instant::now();
    let admitted = Api::<Pod>::namespaced(client.clone(), &plain)
        .create(&params, &object)
        .await;
    let baseline = started.elapsed();
    assert!(admitted.is_ok(), "{admitted:?}");
    let started = std::time::Instant::now();
    let again = pods.create(&params, &object).await;
    let took = started.elapsed();

    assert!(
        matches!(&again, Err(kube::Error::Api(s)) if s.code == 403),
        "{again:?}"
    );
    // Which webhook denies first depends on timing (the mutating one when
    // its lookups are refused, else the validating one); either is bounded.
    assert!(
        message.len() <= 8 * 1024,
        "the denial is bounded: {} bytes",
        message.len()
    );
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no registry was asked"
    );
    eprintln!("denied: {}", message.chars().take(300).collect::<String>());
    eprintln!(
        "2,001 registries in one review: {took:?} with the webhooks, {baseline:?} without; \
         operator peak RSS {:.1} MiB",
        peak_rss_mib(pid)
    );
    Ok(())
}
