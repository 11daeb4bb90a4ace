//! The admission webhooks, called by a real kube-apiserver over HTTPS:
//! Enforce denies with the message, Audit admits with warnings, dry runs
//! are judged, UPDATE blocks only what it introduces or keeps, exemptions
//! pass, malformed reviews get a 400; certificates from files are reloaded
//! and self-managed ones rotate while admission requests keep succeeding.

use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::{Operator, eventually, free_port, https};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use probity::policy::{ClusterReadinessPolicy, ReadinessPolicy};
use probity_testenv::TestEnv;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(40);
const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

fn deployment(name: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{
                "name": "app", "image": image,
                "ports": [{"containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": 8080}},
                "livenessProbe": {"httpGet": {"path": "/livez", "port": 8080}, "failureThreshold": 6},
            }]}},
        },
    })
}

fn pinned() -> String {
    format!("registry.example/app:1.0@{DIGEST}")
}

/// A ValidatingWebhookConfiguration calling `127.0.0.1:port` for the
/// workload kinds in `namespaces`, failing closed so a broken webhook shows.
fn webhook_config(name: &str, port: u16, namespaces: &[&str], ca: Option<&str>) -> Value {
    let mut client_config = json!({"url": format!("https://127.0.0.1:{port}/validate")});
    if let Some(ca) = ca {
        use base64::Engine as _;
        client_config["caBundle"] = json!(base64::engine::general_purpose::STANDARD.encode(ca));
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "validate.probity.dev",
            "clientConfig": client_config,
            "rules": [
                {"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                 "resources": ["deployments", "statefulsets", "daemonsets", "replicasets"]},
                {"apiGroups": ["batch"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                 "resources": ["jobs", "cronjobs"]},
                {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                 "resources": ["pods"]},
            ],
            "namespaceSelector": {"matchExpressions": [{
                "key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces,
            }]},
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5,
            "matchPolicy": "Equivalent",
        }],
    })
}

async fn apply_webhook(client: &Client, config: &Value) -> anyhow::Result<()> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let name = config["metadata"]["name"].as_str().unwrap_or_default();
    api.patch(
        name,
        &PatchParams::apply("probity-test").force(),
        &Patch::Apply(config),
    )
    .await?;
    Ok(())
}

fn kubectl(env: &TestEnv, args: &[&str], stdin: &Value) -> Output {
    let mut command = env.kubectl();
    command.args(args).args(["-f", "-"]);
    probity_testenv::output_with_stdin(&mut command, stdin.to_string().as_bytes()).expect("kubectl")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

async fn create(api: &Api<Deployment>, object: &Value, dry_run: bool) -> Result<(), kube::Error> {
    let d: Deployment = serde_json::from_value(object.clone()).map_err(kube::Error::SerdeError)?;
    let params = PostParams {
        dry_run,
        ..PostParams::default()
    };
    api.create(&params, &d).await.map(drop)
}

fn denial(result: Result<(), kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            status.message
        }
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[tokio::test]
async fn webhooks_enforce_audit_update_and_rotate_self_managed_certificates() -> anyhow::Result<()>
{
    let _operators = crate::common::operators_together().await;
    let Some(env) = probity_testenv::shared() else {
        return Ok(());
    };
    let client = env.client()?;
    probity::controller::install_crds(&client, Duration::from_secs(30)).await?;
    let system = env.namespace(&client, "adm-system").await?;
    let enforce = env.namespace(&client, "adm-enforce").await?;
    let audit = env.namespace(&client, "adm-audit").await?;
    let enforced: Api<Deployment> = Api::namespaced(client.clone(), &enforce);
    let audited: Api<Deployment> = Api::namespaced(client.clone(), &audit);

    // A workload that violates the policy before the policy exists.
    create(&enforced, &deployment("legacy", "nginx:latest"), false).await?;

    let port = free_port();
    let config = format!("{system}-validate");
    apply_webhook(
        &client,
        &webhook_config(&config, port, &[&enforce, &audit], None),
    )
    .await?;
    let crp: ClusterReadinessPolicy = serde_json::from_value(json!({
        "apiVersion": "probity.dev/v1alpha1", "kind": "ClusterReadinessPolicy",
        "metadata": {"name": format!("{enforce}-strict")},
        "spec": {"mode": "Enforce",
                 "exemptions": {"allowedRules": ["PRB001", "PRB002"]},
                 "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": enforce}}},
    }))?;
    Api::<ClusterReadinessPolicy>::all(client.clone())
        .create(&PostParams::default(), &crp)
        .await?;
    let rp: ReadinessPolicy = serde_json::from_value(json!({
        "apiVersion": "probity.dev/v1alpha1", "kind": "ReadinessPolicy",
        "metadata": {"name": "report"}, "spec": {"mode": "Audit"},
    }))?;
    Api::<ReadinessPolicy>::namespaced(client.clone(), &audit)
        .create(&PostParams::default(), &rp)
        .await?;

    let addr = format!("127.0.0.1:{port}");
    let operator = Operator::start(
        env.kubeconfig(),
        "webhooks",
        &system,
        &[
            "--webhook-addr",
            &addr,
            "--tls-ip-address",
            "127.0.0.1",
            "--tls-cert-validity",
            "15",
            "--validating-webhook-configuration",
            &config,
            "--mutating-webhook-configuration",
            "",
        ],
    );

    // The operator writes its CA into the configuration, then the API
    // server's calls succeed and `:latest` is denied with the message.
    let latest = deployment("web", "nginx:latest");
    let message = eventually(WAIT, "a denial from the webhook", || async {
        match create(&enforced, &latest, true).await {
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("probity") => {
                Ok(s.message)
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    for needle in [
        "denied the request",
        "Deployment web violates",
        "PRB001 [image-latest-tag] container app:",
        "PRB002 [image-not-pinned]",
        "fix: ",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {message}");
    }
    assert!(
        denial(create(&enforced, &latest, false).await).contains("PRB001"),
        "{}",
        operator.log()
    );
    assert!(enforced.get_opt("web").await?.is_none());

    // Compliant workloads are admitted.
    create(&enforced, &deployment("good", &pinned()), false).await?;

    // Audit: admitted, with short warnings kubectl prints.
    let out = kubectl(
        env,
        &["apply", "-n", &audit],
        &deployment("web", "nginx:latest"),
    );
    assert!(out.status.success(), "{}", text(&out));
    let warnings: Vec<&str> = std::str::from_utf8(&out.stderr)?
        .lines()
        .filter(|l| l.starts_with("Warning: probity"))
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("probity audit: PRB001 app:")),
        "{}",
        text(&out)
    );
    assert!(
        warnings.iter().all(|w| w.len() <= "Warning: ".len() + 120),
        "{warnings:?}"
    );
    assert!(audited.get_opt("web").await?.is_some());

    // Dry runs are judged like the real thing and leave nothing behind.
    let out = kubectl(
        env,
        &["create", "--dry-run=server", "-n", &enforce],
        &deployment("dry", "nginx:latest"),
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("PRB001"), "{}", text(&out));
    let out = kubectl(
        env,
        &["create", "--dry-run=server", "-n", &audit],
        &deployment("dry", "nginx:latest"),
    );
    assert!(
        text(&out).contains("created (server dry run)"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("Warning: probity audit"),
        "{}",
        text(&out)
    );
    assert!(audited.get_opt("dry").await?.is_none());

    // UPDATE: scaling the legacy workload is a compliant edit (a warning);
    // retagging its image keeps a violation in the changed container.
    let out = env
        .kubectl()
        .args(["patch", "deployment", "legacy", "-n", &enforce, "-p"])
        .arg(r#"{"spec":{"replicas":3}}"#)
        .output()?;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Warning: probity existing: PRB001"),
        "{}",
        text(&out)
    );
    let retag = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "nginx:1.27"}]}}}});
    let result = enforced
        .patch("legacy", &PatchParams::default(), &Patch::Strategic(&retag))
        .await
        .map(drop);
    let message = denial(result);
    assert!(message.contains("PRB002"), "{message}");

    // Exempt workloads pass; the exemption is reported.
    let mut exempt = deployment("exempt", "nginx:latest");
    exempt["metadata"]["annotations"] = json!({"probity.dev/exempt": "PRB001,PRB002: vendor image, pinned by the vendor's pipeline"});
    let out = kubectl(env, &["create", "-n", &enforce], &exempt);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Warning: probity exempt: PRB001"),
        "{}",
        text(&out)
    );

    // Malformed reviews: a clear 400, never a crash; wrong content type 415.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &system);
    let ca_of = |s: &Secret| {
        s.data
            .as_ref()
            .and_then(|d| d.get("ca.crt"))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    };
    let secret = secrets.get("probity-webhook-tls").await?;
    let ca = ca_of(&secret);
    let (status, body, _) = https(
        port,
        &ca,
        "POST",
        "/validate",
        "application/json",
        b"{\"apiVersion\":1",
    )
    .await
    .map_err(anyhow::Error::msg)?;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("malformed AdmissionReview"), "{body}");
    let (status, _, _) = https(port, &ca, "POST", "/validate", "text/plain", b"{}")
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(status, 415);
    let huge = vec![b' '; probity::admission::server::MAX_BODY_BYTES + 1];
    let (status, _, _) = https(port, &ca, "POST", "/validate", "application/json", &huge)
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(status, 413);

    // Rotation while requests flow: the serving certificate lives 15 s and
    // is renewed after 10; no admission fails meanwhile.
    let first = secret.data.as_ref().and_then(|d| d.get("tls.crt")).cloned();
    let started = Instant::now();
    let mut admitted = 0;
    let good = deployment("flow", &pinned());
    while started.elapsed() < Duration::from_secs(24) {
        create(&enforced, &good, true).await.map_err(|e| {
            anyhow::anyhow!("admission failed during rotation: {e}\n{}", operator.log())
        })?;
        admitted += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secret = secrets.get("probity-webhook-tls").await?;
    let now = secret.data.as_ref().and_then(|d| d.get("tls.crt")).cloned();
    assert_ne!(first, now, "the serving certificate was not renewed");
    assert_eq!(ca_of(&secret), ca, "renewal keeps the CA");
    assert!(admitted > 50, "{admitted}");

    let (_, metrics) = operator.get("/metrics").await.expect("metrics");
    assert!(
        metrics.contains("probity_admission_reviews_total{webhook=\"validate\",result=\"denied\"}"),
        "{metrics}"
    );
    // The API server's connections, counted by protocol; it keeps them
    // open, so hundreds of reviews took a handful.
    let connections: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("probity_webhook_connections_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        connections >= 1.0 && connections < f64::from(admitted) / 2.0,
        "{connections} connections for {admitted} reviews:\n{metrics}"
    );
    // The renewed certificate's expiry, which alerts watch.
    let expiry = metrics
        .lines()
        .find_map(|l| l.strip_prefix("probity_webhook_certificate_expiry_timestamp_seconds "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now().as_second() as f64;
    assert!(expiry > now, "expiry {expiry} (now {now}):\n{metrics}");
    Ok(())
}

#[tokio::test]
async fn certificates_from_files_are_reloaded_when_they_change() -> anyhow::Result<()> {
    let _operators = crate::common::operators_together().await;
    let Some(env) = probity_testenv::shared() else {
        return Ok(());
    };
    let client = env.client()?;
    probity::controller::install_crds(&client, Duration::from_secs(30)).await?;
    let system = env.namespace(&client, "adm-files").await?;
    let target = env.namespace(&client, "adm-files-target").await?;

    let dir = tempfile::tempdir()?;
    let (ca, ca_key) = ca()?;
    let (cert1, key1) = leaf(&ca, &ca_key)?;
    let cert_path = dir.path().join("tls.crt");
    let key_path = dir.path().join("tls.key");
    std::fs::write(&cert_path, &cert1)?;
    std::fs::write(&key_path, &key1)?;

    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _operator = Operator::start(
        env.kubeconfig(),
        "files",
        &system,
        &[
            "--webhook-addr",
            &addr,
            "--tls-cert-file",
            cert_path.to_str().unwrap_or_default(),
            "--tls-key-file",
            key_path.to_str().unwrap_or_default(),
        ],
    );
    apply_webhook(
        &client,
        &webhook_config(&format!("{system}-validate"), port, &[&target], Some(&ca)),
    )
    .await?;
    let crp: ClusterReadinessPolicy = serde_json::from_value(json!({
        "apiVersion": "probity.dev/v1alpha1", "kind": "ClusterReadinessPolicy",
        "metadata": {"name": format!("{target}-strict")},
        "spec": {"mode": "Enforce",
                 "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": target}}},
    }))?;
    Api::<ClusterReadinessPolicy>::all(client.clone())
        .create(&PostParams::default(), &crp)
        .await?;
    let api: Api<Deployment> = Api::namespaced(client.clone(), &target);
    eventually(WAIT, "the webhook denies :latest", || async {
        match create(&api, &deployment("web", "nginx:latest"), true).await {
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("PRB001") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let served = |cert: String| {
        let ca = ca.clone();
        move || {
            let (ca, cert) = (ca.clone(), cert.clone());
            async move {
                let (_, _, leaf) =
                    https(port, &ca, "POST", "/validate", "application/json", b"{}").await?;
                let want = x509_der(&cert);
                (leaf == want)
                    .then_some(())
                    .ok_or_else(|| "old certificate".to_owned())
            }
        }
    };
    eventually(WAIT, "the first certificate is served", served(cert1)).await;

    // Replace the files (as a Secret update does): the new certificate is
    // served without a restart, and admission keeps working.
    let (cert2, key2) = leaf(&ca, &ca_key)?;
    std::fs::write(&key_path, &key2)?;
    std::fs::write(&cert_path, &cert2)?;
    eventually(WAIT, "the renewed certificate is served", served(cert2)).await;
    create(&api, &deployment("good", &pinned()), true).await?;
    Ok(())
}

fn x509_der(pem: &str) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|c| c.to_vec())
        .unwrap_or_default()
}

fn ca() -> Result<(String, String), rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn leaf(ca: &str, ca_key: &str) -> Result<(String, String), rcgen::Error> {
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca, rcgen::KeyPair::from_pem(ca_key)?)?;
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress(std::net::IpAddr::from([
        127, 0, 0, 1,
    ]))];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A MutatingWebhookConfiguration calling `/mutate` for Deployments in
/// `namespaces`; the operator writes its caBundle.
fn mutating_config(name: &str, port: u16, namespaces: &[&str]) -> Value {
    let mut config = webhook_config(name, port, namespaces, None);
    config["kind"] = json!("MutatingWebhookConfiguration");
    config["webhooks"][0]["name"] = json!("mutate.probity.dev");
    config["webhooks"][0]["clientConfig"]["url"] =
        json!(format!("https://127.0.0.1:{port}/mutate"));
    config["webhooks"][0]["reinvocationPolicy"] = json!("Never");
    config
}

#[tokio::test]
async fn mutation_pins_tags_to_the_registry_digest_and_follows_the_failure_policy()
-> anyhow::Result<()> {
    let _operators = crate::common::operators_together().await;
    let Some(env) = probity_testenv::shared() else {
        return Ok(());
    };
    let Some(mut registry) = probity_testenv::registry::Registry::start_or_skip() else {
        return Ok(());
    };
    let client = env.client()?;
    probity::controller::install_crds(&client, Duration::from_secs(30)).await?;
    let system = env.namespace(&client, "pin-system").await?;
    let open = env.namespace(&client, "pin-open").await?;
    let closed = env.namespace(&client, "pin-closed").await?;
    for (ns, failure) in [(&open, "Allow"), (&closed, "Deny")] {
        let crp: ClusterReadinessPolicy = serde_json::from_value(json!({
            "apiVersion": "probity.dev/v1alpha1", "kind": "ClusterReadinessPolicy",
            "metadata": {"name": format!("{ns}-pin")},
            "spec": {"mode": "Audit", "images": {"pin": "Admission"},
                     "admission": {"registryUnavailable": failure},
                     "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}},
        }))?;
        Api::<ClusterReadinessPolicy>::all(client.clone())
            .create(&PostParams::default(), &crp)
            .await?;
    }
    let first = registry.push("team/api", "1.0", "first")?;
    let image = format!("{}/team/api:1.0", registry.host);

    let stored_image = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default()
    };
    let port = free_port();
    let name = format!("{system}-mutate");
    let api: Api<k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration> =
        Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply("probity-test").force(),
        &Patch::Apply(mutating_config(&name, port, &[&open, &closed])),
    )
    .await?;
    let opened: Api<Deployment> = Api::namespaced(client.clone(), &open);
    let probe: Deployment = serde_json::from_value(deployment("probe", &image))?;
    crate::common::until_webhook_called(&opened, &probe).await;
    let operator = Operator::with_webhooks(
        env.kubeconfig(),
        "pin",
        &system,
        port,
        "",
        &name,
        &[
            "--registry-cache-ttl",
            "1",
            // Room for a registry answer on a loaded CI machine; the
            // webhook's timeoutSeconds (10) stays above it.
            "--admission-budget-ms",
            "5000",
            // A loopback registry: reachable only when the operator names it.
            "--registry-allow",
            &registry.host,
        ],
    );

    let want = format!("{image}@{first}");
    // Failing closed until the webhook is up, then stored pinned.
    let pinned_image = eventually(WAIT, "the mutating webhook pins the tag", || async {
        let d: Deployment =
            serde_json::from_value(deployment("web", &image)).map_err(|e| e.to_string())?;
        let created = opened
            .create(&PostParams::default(), &d)
            .await
            .map_err(|e| e.to_string())?;
        Ok(stored_image(&created))
    })
    .await;
    assert_eq!(pinned_image, want, "{}", operator.log());

    // A dry run asks no registry: a tag not resolved recently stays as
    // written, with a warning.
    let unseen: Deployment = serde_json::from_value(deployment(
        "dry",
        &format!("{}/team/api:never-resolved", registry.host),
    ))?;
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let answered = opened.create(&dry, &unseen).await?;
    assert!(
        !stored_image(&answered).contains('@'),
        "{:?}",
        stored_image(&answered)
    );

    // Already pinned: untouched.
    let other = format!("{}/team/api:0.9@{DIGEST}", registry.host);
    let d: Deployment = serde_json::from_value(deployment("pinned", &other))?;
    assert_eq!(
        stored_image(&opened.create(&PostParams::default(), &d).await?),
        other
    );

    // The tag moves: after the cache TTL the new digest is used.
    let second = registry.push("team/api", "1.0", "second")?;
    assert_ne!(first, second);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let d: Deployment = serde_json::from_value(deployment("moved", &image))?;
    assert_eq!(
        stored_image(&opened.create(&PostParams::default(), &d).await?),
        format!("{image}@{second}")
    );

    // The registry goes down. Fail open: admitted unpinned, with a warning.
    registry.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let out = kubectl(env, &["create", "-n", &open], &deployment("down", &image));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Warning: probity: not pinned:"),
        "{}",
        text(&out)
    );
    assert_eq!(stored_image(&opened.get("down").await?), image);
    // Fail closed: denied with the reason.
    let locked: Api<Deployment> = Api::namespaced(client.clone(), &closed);
    let result = create(&locked, &deployment("down", &image), false).await;
    let message = denial(result);
    assert!(message.contains("cannot pin images"), "{message}");
    assert!(message.contains(&registry.host), "{message}");
    Ok(())
}

#[tokio::test]
async fn the_admission_policy_backstop_holds_while_the_webhook_is_down() -> anyhow::Result<()> {
    let _operators = crate::common::operators_together().await;
    let Some(env) = probity_testenv::shared() else {
        return Ok(());
    };
    let client = env.client()?;
    probity::controller::install_crds(&client, Duration::from_secs(30)).await?;
    let ns = env.namespace(&client, "vap").await?;

    // The webhook is down (nothing listens) and fails open.
    let mut config = webhook_config(&format!("{ns}-down"), free_port(), &[&ns], None);
    config["webhooks"][0]["failurePolicy"] = json!("Ignore");
    config["webhooks"][0]["timeoutSeconds"] = json!(2);
    apply_webhook(&client, &config).await?;

    // Violating before the backstop exists: later edits must not be blocked.
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    create(
        &api,
        &deployment("legacy", "registry.example/app:latest"),
        false,
    )
    .await?;

    // `probity vap` output, applied as a GitOps pipeline would.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("policy.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: probity.dev/v1alpha1\nkind: ReadinessPolicy\nmetadata:\n  name: strict\n  \
             namespace: {ns}\nspec:\n  mode: Enforce\n  images:\n    allowedRegistries: [registry.example]\n  \
             exemptions:\n    allowedRules: [PRB001, PRB002]\n"
        ),
    )?;
    let vap = std::process::Command::new(env!("CARGO_BIN_EXE_probity"))
        .arg("vap")
        .arg(&file)
        .output()?;
    assert!(vap.status.success(), "{}", text(&vap));
    let yaml = String::from_utf8(vap.stdout)?;
    let apply = probity_testenv::output_with_stdin(
        env.kubectl().args(["apply", "-f", "-"]),
        yaml.as_bytes(),
    )?;
    assert!(apply.status.success(), "{}\n{yaml}", text(&apply));

    // Policies take effect within a second or two of being written.
    let message = eventually(WAIT, "the backstop denies :latest", || async {
        match create(
            &api,
            &deployment("latest", "registry.example/app:latest"),
            true,
        )
        .await
        {
            Err(kube::Error::Api(s)) if s.code == 403 || s.code == 422 => Ok(s.message),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(message.contains("PRB001"), "{message}");
    assert!(message.contains("probity backstop"), "{message}");

    let mut no_probes = deployment("bare", &pinned());
    if let Some(c) = no_probes["spec"]["template"]["spec"]["containers"][0].as_object_mut() {
        c.retain(|k, _| k != "readinessProbe" && k != "livenessProbe");
    }
    let message = vap_denial(create(&api, &no_probes, true).await);
    assert!(message.contains("PRB101"), "{message}");

    let elsewhere = deployment(
        "elsewhere",
        &format!("docker.io/library/nginx:1.27@{DIGEST}"),
    );
    let message = vap_denial(create(&api, &elsewhere, true).await);
    assert!(message.contains("PRB003"), "{message}");
    let implicit = deployment("implicit", &format!("nginx:1.27@{DIGEST}"));
    assert!(vap_denial(create(&api, &implicit, true).await).contains("PRB003"));

    // An UPDATE that keeps an old violation passes; one that introduces a
    // violation does not.
    let scale = json!({"spec": {"replicas": 2}});
    api.patch("legacy", &PatchParams::default(), &Patch::Merge(&scale))
        .await?;
    create(&api, &deployment("fine", &pinned()), false).await?;
    let regress = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "registry.example/app:latest"}]}}}});
    let result = api
        .patch("fine", &PatchParams::default(), &Patch::Strategic(&regress))
        .await
        .map(drop);
    assert!(vap_denial(result).contains("PRB001"));

    // Compliant, exempt, controlled objects and Jobs without probes pass.
    create(&api, &deployment("good", &pinned()), true).await?;
    let mut exempt = deployment("exempt", "registry.example/app:latest");
    exempt["metadata"]["annotations"] =
        json!({"probity.dev/exempt": "PRB001,PRB002: vendor image"});
    create(&api, &exempt, true).await?;
    let mut rs = deployment("owned", "registry.example/app:latest");
    rs["kind"] = json!("ReplicaSet");
    rs["metadata"]["ownerReferences"] = json!([{
        "apiVersion": "apps/v1", "kind": "Deployment", "name": "x",
        "uid": "00000000-0000-0000-0000-000000000000", "controller": true,
    }]);
    let replicasets: Api<k8s_openapi::api::apps::v1::ReplicaSet> =
        Api::namespaced(client.clone(), &ns);
    replicasets
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &serde_json::from_value(rs)?,
        )
        .await?;
    let job: k8s_openapi::api::batch::v1::Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "once"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": pinned()}]}}},
    }))?;
    Api::<k8s_openapi::api::batch::v1::Job>::namespaced(client.clone(), &ns)
        .create(
            &PostParams {
                dry_run: true,
                ..PostParams::default()
            },
            &job,
        )
        .await?;
    Ok(())
}

fn vap_denial(result: Result<(), kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 || status.code == 422 => status.message,
        other => panic!("expected the backstop to deny, got {other:?}"),
    }
}

#[tokio::test]
async fn the_operator_keeps_backstops_in_sync_and_they_outlive_it() -> anyhow::Result<()> {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    // Alone: every operator applies the backstops of every policy, and
    // another one's would not exclude this test's namespace.
    let _operators = crate::common::operator_alone().await;
    let Some(env) = probity_testenv::shared() else {
        return Ok(());
    };
    let client = env.client()?;
    probity::controller::install_crds(&client, Duration::from_secs(30)).await?;
    let system = env.namespace(&client, "sync-system").await?;
    let ns = env.namespace(&client, "sync").await?;
    // Excluded by the operator's flag: its backstops never judge there.
    let excluded = env.namespace(&client, "sync-excluded").await?;
    let port = free_port();
    let config = format!("{system}-validate");
    let mut webhook = webhook_config(&config, port, &[&ns], None);
    webhook["webhooks"][0]["failurePolicy"] = json!("Ignore");
    webhook["webhooks"][0]["timeoutSeconds"] = json!(2);
    apply_webhook(&client, &webhook).await?;
    let addr = format!("127.0.0.1:{port}");
    let mut operator = Operator::start(
        env.kubeconfig(),
        "backstop",
        &system,
        &[
            "--webhook-addr",
            &addr,
            "--tls-ip-address",
            "127.0.0.1",
            "--validating-webhook-configuration",
            &config,
            "--mutating-webhook-configuration",
            "",
            "--exclude-namespace",
            &excluded,
        ],
    );
    let policies: Api<ReadinessPolicy> = Api::namespaced(client.clone(), &ns);
    for (namespace, name) in [(&ns, "strict"), (&ns, "doomed"), (&excluded, "strict")] {
        let rp: ReadinessPolicy = serde_json::from_value(json!({
            "apiVersion": "probity.dev/v1alpha1", "kind": "ReadinessPolicy",
            "metadata": {"name": name}, "spec": {"mode": "Enforce"},
        }))?;
        Api::<ReadinessPolicy>::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), &rp)
            .await?;
    }
    let vaps: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let strict = format!("probity-rpol.{ns}.strict");
    let doomed = format!("probity-rpol.{ns}.doomed");
    let excluded_strict = format!("probity-rpol.{excluded}.strict");
    for name in [&strict, &doomed, &excluded_strict] {
        eventually(WAIT, "the operator applies the backstop", || async {
            vaps.get_opt(name)
                .await
                .map_err(|e| e.to_string())?
                .map(drop)
                .ok_or_else(|| "not yet".to_owned())
        })
        .await;
    }
    // A deleted policy's backstop goes too.
    policies.delete("doomed", &Default::default()).await?;
    eventually(WAIT, "the stale backstop is deleted", || async {
        match vaps.get_opt(&doomed).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".to_owned()),
        }
    })
    .await;

    // The webhook process dies; the webhook fails open, the backstop holds.
    operator.kill();
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let message = eventually(WAIT, "the backstop denies :latest", || async {
        match create(&api, &deployment("web", "nginx:latest"), true).await {
            Err(kube::Error::Api(s)) if s.message.contains("probity backstop") => Ok(s.message),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(message.contains("PRB001"), "{message}");
    let mut bare = deployment("bare", &pinned());
    if let Some(c) = bare["spec"]["template"]["spec"]["containers"][0].as_object_mut() {
        c.retain(|k, _| k != "livenessProbe");
    }
    assert!(vap_denial(create(&api, &bare, true).await).contains("PRB102"));
    create(&api, &deployment("good", &pinned()), true).await?;
    // The excluded namespace's policy has its backstop, but the binding
    // skips the namespace, as the webhooks' selector would.
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    let binding = serde_json::to_value(bindings.get(&excluded_strict).await?)?;
    let expressions = &binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"];
    assert_eq!(expressions[0]["operator"], "NotIn", "{expressions}");
    assert!(
        expressions[0]["values"]
            .as_array()
            .is_some_and(|v| v.contains(&json!(excluded))),
        "{expressions}"
    );
    let in_excluded: Api<Deployment> = Api::namespaced(client.clone(), &excluded);
    create(&in_excluded, &deployment("web", "nginx:latest"), true).await?;
    Ok(())
}
