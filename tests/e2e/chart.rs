//! The Helm chart: `helm lint --strict`, rendered objects accepted by the
//! real API server (server-side dry run) in every certificate mode, CRDs
//! identical to `crds/`, the chart passing probity's own default policy,
//! and the values schema rejecting bad values with a clear message.

use std::process::{Command, Output};

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
    probity_testenv::output_with_stdin(&mut command, stdin).expect("run with stdin")
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

#[test]
fn the_chart_readme_lists_every_value() {
    let read = |file: &str| std::fs::read_to_string(format!("{CHART}/{file}")).unwrap_or_default();
    let readme = read("README.md");
    match probity_testenv::chart_docs::update(&readme, &read("values.yaml")) {
        Ok(updated) => assert!(
            updated == readme,
            "charts/probity/README.md is out of date with values.yaml; run: make chart-docs"
        ),
        Err(e) => panic!("charts/probity/{e}"),
    }
}

/// `helm template` of release `probity` with `sets`, as objects.
fn rendered(sets: &[&str]) -> Vec<serde_json::Value> {
    rendered_as("probity", sets)
}

/// `helm` without a cluster, its caches under the temporary directory.
fn offline_helm(binaries: &probity_testenv::Binaries) -> Command {
    let mut helm = Command::new(binaries.helm());
    helm.env(
        "HELM_CACHE_HOME",
        std::env::temp_dir().join("probity-helm-cache"),
    )
    .env(
        "HELM_CONFIG_HOME",
        std::env::temp_dir().join("probity-helm-config"),
    );
    helm
}

fn rendered_as(release: &str, sets: &[&str]) -> Vec<serde_json::Value> {
    let binaries = probity_testenv::binaries_or_skip().expect("helm (make control-plane)");
    let mut helm = offline_helm(&binaries);
    helm.args(["template", release, CHART, "-n", "probity-system"]);
    for set in sets {
        helm.args(["--set", set]);
    }
    let out = helm.output().expect("helm template");
    assert!(out.status.success(), "{sets:?}: {}", text(&out));
    probity::manifest::yaml::read_stream(&String::from_utf8_lossy(&out.stdout))
        .filter_map(|d| d.ok().map(|d| d.value))
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(objects: &'a [serde_json::Value], kind: &str) -> Option<&'a serde_json::Value> {
    objects.iter().find(|o| o["kind"] == kind)
}

fn operator_args(objects: &[serde_json::Value]) -> Vec<String> {
    let deployment = find(objects, "Deployment").expect("a Deployment");
    serde_json::from_value(deployment["spec"]["template"]["spec"]["containers"][0]["args"].clone())
        .expect("args")
}

#[test]
fn the_chart_renders_what_its_values_ask_for() {
    if probity_testenv::binaries_or_skip().is_none() {
        return;
    }
    // Excluded namespaces reach the webhooks' selectors and the operator,
    // which excludes them from the backstops' bindings.
    let objects = rendered(&["webhooks.excludeNamespaces={legacy,sandbox}"]);
    let args = operator_args(&objects);
    for ns in ["legacy", "sandbox"] {
        assert!(
            args.contains(&format!("--exclude-namespace={ns}")),
            "{args:?}"
        );
        let selector = find(&objects, "ValidatingWebhookConfiguration")
            .map(|w| w["webhooks"][0]["namespaceSelector"].to_string())
            .unwrap_or_default();
        assert!(selector.contains(ns), "{selector}");
    }

    // One replica: no PodDisruptionBudget, which would block every drain.
    assert!(find(&rendered(&["replicaCount=1"]), "PodDisruptionBudget").is_none());
    assert!(find(&objects, "PodDisruptionBudget").is_some());

    // Two releases in one namespace elect on Leases of their own.
    let lease = |release: &str| {
        let objects = rendered_as(release, &[]);
        let name = find(&objects, "Lease")
            .and_then(|l| l["metadata"]["name"].as_str())
            .map(str::to_owned)
            .expect("the chart's Lease");
        let arg = format!("--lease-name={name}");
        assert!(operator_args(&objects).contains(&arg), "{release}: {arg}");
        name
    };
    assert_ne!(lease("probity"), lease("probity-canary"));

    // What the peers' charts let users set.
    let objects = rendered(&[
        "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::1:role/probity",
        "extraArgs={--restart-window=600}",
        "extraEnv[0].name=HTTPS_PROXY",
        "extraEnv[0].value=http://proxy:3128",
        "priorityClassName=system-cluster-critical",
        "podAnnotations.team=platform",
        "podSecurityContext.runAsUser=1000",
        "securityContext.readOnlyRootFilesystem=false",
    ]);
    let account = find(&objects, "ServiceAccount").expect("ServiceAccount");
    assert_eq!(
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"],
        "arn:aws:iam::1:role/probity"
    );
    assert!(operator_args(&objects).contains(&"--restart-window=600".to_owned()));
    let pod = &find(&objects, "Deployment").expect("Deployment")["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    assert!(
        container["env"].as_array().is_some_and(|env| env
            .iter()
            .any(|e| e["name"] == "HTTPS_PROXY" && e["value"] == "http://proxy:3128")),
        "{}",
        container["env"]
    );
    assert_eq!(pod["spec"]["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["metadata"]["annotations"]["team"], "platform");
    assert_eq!(pod["spec"]["securityContext"]["runAsUser"], 1000);
    assert_eq!(
        pod["spec"]["securityContext"]["runAsNonRoot"], true,
        "merged with the defaults"
    );
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"],
        false
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
    // `helm test`'s namespace, which a dry run cannot create for the
    // objects in it.
    let out = env
        .kubectl()
        .args(["create", "namespace", "probity-test"])
        .output()?;
    assert!(
        out.status.success() || text(&out).contains("AlreadyExists"),
        "{}",
        text(&out)
    );

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
            "policy reports",
            vec![
                digest.as_str(),
                "policyReports.enabled=true",
                "policyReports.installCRDs=true",
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
        // Every object names its namespace (the release's, or the test's).
        apply.args(["apply", "--dry-run=server", "-f", "-"]);
        let out = piped(apply, &rendered.stdout);
        assert!(out.status.success(), "{mode}: {}", text(&out));
        let accepted = String::from_utf8_lossy(&out.stdout)
            .matches("(server dry run)")
            .count();
        // Objects, in YAML or (the report CRDs) JSON.
        let documents =
            probity::manifest::yaml::read_stream(&String::from_utf8_lossy(&rendered.stdout))
                .filter(|d| d.as_ref().is_ok_and(|d| d.value.get("kind").is_some()))
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
        let out = offline_helm(&binaries)
            .args(["template", "probity", CHART, "--set", set])
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

/// The README's uninstall commands, in order, as written.
fn readme_uninstall_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .unwrap_or_default();
    let section = readme
        .split_once("**Uninstall.**")
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let block = section
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(block, _)| block)
        .unwrap_or_default();
    block
        .lines()
        .map(|l| {
            l.split_once('#')
                .map_or(l, |(cmd, _)| cmd)
                .trim()
                .to_owned()
        })
        .filter(|l| !l.is_empty())
        .collect()
}

/// A real `helm install` with failurePolicy Fail (nothing serves the
/// webhooks here: no kubelet runs the operator), a backstop as the operator
/// would write it, then the README's uninstall commands. No kubelet runs
/// the pre-delete hook Job either, so the test runs its container as the
/// kubelet would (its arguments, as its ServiceAccount) and reports it
/// complete as the Job controller would; the node tests run it for real.
/// Writes flow again, and nothing of probity is left at the end.
#[tokio::test]
async fn the_readme_uninstall_removes_everything_without_blocking() -> anyhow::Result<()> {
    let Some(binaries) = probity_testenv::binaries_or_skip() else {
        return Ok(());
    };
    let commands = readme_uninstall_commands();
    assert_eq!(commands.len(), 2, "README uninstall block: {commands:?}");
    // Its own control plane: the CRDs are deleted at the end.
    let env = tokio::task::spawn_blocking(move || {
        probity_testenv::TestEnv::start(binaries, &probity_testenv::Options::default())
    })
    .await??;
    let kubectl = |args: &[&str]| env.kubectl().args(args).output().expect("kubectl");
    let json = |args: &[&str]| -> serde_json::Value {
        let out = kubectl(&[args, &["-o", "json"]].concat());
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };

    let digest = format!("image.digest={DIGEST}");
    // Without hooks: the CRD hook would wait for a kubelet (crds/ installs
    // them on a first install anyway).
    let out = env
        .helm()
        .args([
            "install",
            "probity",
            CHART,
            "-n",
            "probity",
            "--create-namespace",
            "--no-hooks",
        ])
        .args(["--set", &digest, "--set", "webhooks.failurePolicy=Fail"])
        .output()?;
    assert!(out.status.success(), "{}", text(&out));
    let out = kubectl(&["create", "namespace", "apps"]);
    assert!(out.status.success(), "{}", text(&out));
    let policy = r#"{"apiVersion": "probity.dev/v1alpha1", "kind": "ClusterReadinessPolicy",
        "metadata": {"name": "baseline"}, "spec": {"mode": "Enforce"}}"#;
    let mut apply = env.kubectl();
    apply.args(["apply", "-f", "-"]);
    let out = piped(apply, policy.as_bytes());
    assert!(out.status.success(), "{}", text(&out));
    let mut vap = Command::new(env!("CARGO_BIN_EXE_probity"));
    vap.args(["vap", "-"]);
    let backstop = piped(vap, policy.as_bytes());
    assert!(backstop.status.success(), "{}", text(&backstop));
    let mut apply = env.kubectl();
    apply.args(["apply", "-f", "-"]);
    let out = piped(apply, &backstop.stdout);
    assert!(out.status.success(), "{}", text(&out));
    // Marked as the operator marks the backstops it applies.
    let out = kubectl(&[
        "label",
        "validatingadmissionpolicy,validatingadmissionpolicybinding",
        "probity-crpol.baseline",
        "app.kubernetes.io/managed-by=probity-operator",
    ]);
    assert!(out.status.success(), "{}", text(&out));

    // A Deployment the backstop admits (pinned, probed) and one it denies.
    let good = dry_run_deployment(&format!("registry.example/web:1.0@{DIGEST}"), true);
    let bad = dry_run_deployment("registry.example/web:1.0", false);
    let try_create = |manifest: &str| {
        let mut create = env.kubectl();
        create.args(["create", "--dry-run=server", "-n", "apps", "-f", "-"]);
        piped(create, manifest.as_bytes())
    };
    // failurePolicy Fail and no webhook endpoint: writes are refused (the
    // mutating webhook is called before any validation).
    for manifest in [&good, &bad] {
        let out = try_create(manifest);
        assert!(!out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains("failed calling webhook"),
            "{}",
            text(&out)
        );
    }

    let run = |command: &str| {
        let mut words = command.split_whitespace();
        let program = words.next().unwrap_or_default();
        let args: Vec<&str> = words.collect();
        let mut cmd = match program {
            "kubectl" => env.kubectl(),
            "helm" => env.helm(),
            other => panic!("unexpected program in the README: {other}"),
        };
        cmd.args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run a README command")
    };
    let (uninstalled, hook_ran) = std::thread::scope(|s| {
        let helm = s.spawn(|| run(&commands[0]));
        // The hook Job, as Helm created it.
        let mut job = serde_json::Value::Null;
        let created = poll(|| {
            job = json(&["get", "job", "probity-uninstall", "-n", "probity"]);
            job["spec"].is_object()
        });
        assert!(created, "helm uninstall created no hook Job");
        let hook = run_hook_as_kubelet(&env, &job);
        complete_job(&env, "probity", "probity-uninstall");
        (helm.join().expect("helm uninstall"), hook)
    });
    assert!(hook_ran.status.success(), "hook: {}", text(&hook_ran));
    assert!(
        uninstalled.status.success(),
        "{}: {}",
        commands[0],
        text(&uninstalled)
    );
    for line in [
        "deleted validatingwebhookconfiguration/probity",
        "deleted mutatingwebhookconfiguration/probity",
        "scaled deployment probity/probity to 0",
        "deleted validatingadmissionpolicybinding/probity-crpol.baseline",
        "deleted validatingadmissionpolicy/probity-crpol.baseline",
    ] {
        assert!(
            text(&hook_ran).contains(line),
            "{line}: {}",
            text(&hook_ran)
        );
    }
    // Webhooks and backstops gone: writes flow, and nothing of probity
    // judges any more.
    let out = try_create(&good);
    assert!(out.status.success(), "{}", text(&out));
    let admitted = poll(|| try_create(&bad).status.success());
    assert!(admitted, "{}", text(&try_create(&bad)));
    let out = run(&commands[1]);
    assert!(out.status.success(), "{}: {}", commands[1], text(&out));

    for kind in [
        "validatingwebhookconfigurations",
        "mutatingwebhookconfigurations",
        "validatingadmissionpolicies",
        "validatingadmissionpolicybindings",
        "clusterrole",
        "clusterrolebinding",
    ] {
        let out = kubectl(&["get", kind, "-o", "name"]);
        let left: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("probity"))
            .map(str::to_owned)
            .collect();
        assert!(left.is_empty(), "{kind} left: {left:?}");
    }
    let out = kubectl(&[
        "get",
        "all,secrets,serviceaccounts,roles,rolebindings,poddisruptionbudgets,leases",
        "-n",
        "probity",
        "-o",
        "name",
    ]);
    let left = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !left
            .lines()
            .any(|l| l.contains("probity") && !l.contains("kube-root-ca")),
        "{left}"
    );
    let out = kubectl(&["get", "crd", "-o", "name"]);
    assert!(!text(&out).contains("probity.dev"), "{}", text(&out));
    Ok(())
}

/// Runs the container of a hook `job` as the kubelet would: its
/// arguments, as its ServiceAccount (through impersonation).
fn run_hook_as_kubelet(env: &probity_testenv::TestEnv, job: &serde_json::Value) -> Output {
    let spec = &job["spec"]["template"]["spec"];
    let account = spec["serviceAccountName"].as_str().unwrap_or_default();
    let namespace = job["metadata"]["namespace"].as_str().unwrap_or_default();
    let args: Vec<&str> = spec["containers"][0]["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .collect();
    let out = env
        .kubectl()
        .args(["config", "view", "--raw", "-o", "json"])
        .output()
        .expect("kubectl config view");
    let mut config: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    config["users"][0]["user"]["as"] =
        format!("system:serviceaccount:{namespace}:{account}").into();
    let kubeconfig = env.dir().join(format!("as-{account}.kubeconfig"));
    std::fs::write(&kubeconfig, config.to_string()).expect("write kubeconfig");
    Command::new(env!("CARGO_BIN_EXE_probity"))
        .args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", namespace)
        .output()
        .expect("run the hook's command")
}

/// Reports Job `name` complete, as the Job controller does when its pod
/// succeeds.
fn complete_job(env: &probity_testenv::TestEnv, namespace: &str, name: &str) {
    let time = k8s_openapi::jiff::Timestamp::now().to_string();
    let condition = |kind: &str, reason: &str| {
        serde_json::json!({"type": kind, "status": "True", "reason": reason,
            "message": "Reached expected number of succeeded pods",
            "lastProbeTime": time, "lastTransitionTime": time})
    };
    let status = serde_json::json!({"status": {
        "startTime": time, "completionTime": time, "succeeded": 1,
        "conditions": [condition("SuccessCriteriaMet", "CompletionsReached"),
                       condition("Complete", "CompletionsReached")],
    }});
    let out = env
        .kubectl()
        .args([
            "patch",
            "job",
            name,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
        ])
        .arg(status.to_string())
        .output()
        .expect("kubectl patch");
    assert!(
        out.status.success(),
        "completing the hook Job: {}",
        text(&out)
    );
}

/// Whether `check` holds within 20 s (the API server loads admission
/// policies asynchronously).
fn poll(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    false
}

fn dry_run_deployment(image: &str, probes: bool) -> String {
    let mut container = serde_json::json!({"name": "web", "image": image});
    if probes {
        container["readinessProbe"] =
            serde_json::json!({"httpGet": {"path": "/readyz", "port": 8080}});
        container["livenessProbe"] =
            serde_json::json!({"httpGet": {"path": "/livez", "port": 8080}, "failureThreshold": 6});
    }
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [container]}}},
    })
    .to_string()
}

/// The image recipe: base images by digest (placeholders until a release
/// pipeline fills them in), a static build, and the same non-root user the
/// chart's securityContext sets.
#[test]
fn the_dockerfile_pins_its_bases_and_runs_as_the_charts_user() {
    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile"))
        .expect("Dockerfile");
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    for from in &froms {
        let arg = from
            .split_whitespace()
            .nth(1)
            .and_then(|image| image.strip_prefix("${"))
            .and_then(|image| image.strip_suffix('}'))
            .unwrap_or_else(|| panic!("{from}: the base image must come from an ARG"));
        let default = dockerfile
            .lines()
            .find_map(|l| l.strip_prefix(&format!("ARG {arg}=")))
            .unwrap_or_else(|| panic!("no default for ARG {arg}"));
        assert!(default.contains("@sha256:"), "{arg}={default}");
    }
    assert!(dockerfile.contains("x86_64-unknown-linux-musl"));
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER in the final stage");
    // The chart's default pod security context (values.yaml).
    let values = std::fs::read_to_string(format!("{CHART}/values.yaml")).expect("values");
    let (uid, gid) = user.split_once(':').expect("USER uid:gid");
    assert!(values.contains(&format!("runAsUser: {uid}")), "{user}");
    assert!(values.contains(&format!("runAsGroup: {gid}")), "{user}");
}

/// The chart's RBAC is all the operator needs, with no create verb in its
/// namespace: run as the chart's ServiceAccount (impersonated) with the
/// chart's own arguments, it takes the Lease and fills the Secret the chart
/// created (Helm's labels kept), and a later `helm upgrade` keeps what it
/// wrote.
#[tokio::test]
async fn the_operator_runs_on_the_charts_rbac_alone() -> anyhow::Result<()> {
    let Some(binaries) = probity_testenv::binaries_or_skip() else {
        return Ok(());
    };
    // Its own control plane: the chart is cluster-wide.
    let env = tokio::task::spawn_blocking(move || {
        probity_testenv::TestEnv::start(binaries, &probity_testenv::Options::default())
    })
    .await??;
    let kubectl = |args: &[&str]| env.kubectl().args(args).output().expect("kubectl");
    let json = |args: &[&str]| -> serde_json::Value {
        let out = kubectl(&[args, &["-o", "json"]].concat());
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    let digest = format!("image.digest={DIGEST}");
    let out = env
        .helm()
        .args([
            "install",
            "probity",
            CHART,
            "-n",
            "probity",
            "--create-namespace",
            "--no-hooks",
        ])
        .args(["--set", &digest])
        .output()?;
    assert!(out.status.success(), "{}", text(&out));
    let secret = json(&["get", "secret", "probity-webhook-tls", "-n", "probity"]);
    assert_eq!(secret["data"]["tls.crt"], "", "the chart creates it empty");

    // The chart's arguments, listening on loopback instead of every
    // interface.
    let deployment = json(&["get", "deployment", "probity", "-n", "probity"]);
    let [admin, webhook] = probity_testenv::free_ports()?;
    let args: Vec<String> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .map(|a| {
            if a.starts_with("--admin-addr=") {
                format!("--admin-addr=127.0.0.1:{admin}")
            } else if a.starts_with("--webhook-addr=") {
                format!("--webhook-addr=127.0.0.1:{webhook}")
            } else {
                a.to_owned()
            }
        })
        .collect();
    assert!(
        args.iter().any(|a| a.starts_with("--tls-secret=")),
        "{args:?}"
    );

    // Everything as the chart's ServiceAccount.
    let kubeconfig = env.dir().join("as-chart-sa.kubeconfig");
    let mut config = json(&["config", "view", "--raw"]);
    config["users"][0]["user"]["as"] = "system:serviceaccount:probity:probity".into();
    // JSON is YAML: kubectl and kube read it alike.
    std::fs::write(&kubeconfig, serde_json::to_vec(&config)?)?;
    // Killed when the test ends, however it ends.
    let operator = probity_testenv::Process::spawn(
        "operator",
        Command::new(env!("CARGO_BIN_EXE_probity"))
            .args(&args)
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAME", "probity-0")
            .env("POD_NAMESPACE", "probity"),
        Some(&env.dir().join("chart-operator.log")),
    )?;
    env.adopt(operator.pid())?;

    let led = poll(|| {
        json(&["get", "lease", "probity", "-n", "probity"])["spec"]["holderIdentity"]
            .as_str()
            .is_some_and(|h| !h.is_empty())
    });
    let log = || std::fs::read_to_string(env.dir().join("chart-operator.log")).unwrap_or_default();
    assert!(led, "the operator took the chart's Lease:\n{}", log());
    let filled = poll(|| {
        json(&["get", "secret", "probity-webhook-tls", "-n", "probity"])["data"]["tls.crt"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
    });
    assert!(filled, "the operator filled the chart's Secret:\n{}", log());
    let secret = json(&["get", "secret", "probity-webhook-tls", "-n", "probity"]);
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm",
        "Helm still owns it"
    );
    let bundled = poll(|| {
        json(&["get", "validatingwebhookconfiguration", "probity"])["webhooks"][0]["clientConfig"]
            ["caBundle"]
            .as_str()
            .is_some_and(|b| !b.is_empty())
    });
    assert!(bundled, "caBundle patched:\n{}", log());
    assert!(
        !log().contains("forbidden"),
        "nothing the operator asked was forbidden:\n{}",
        log()
    );
    drop(operator);

    let out = env
        .helm()
        .args([
            "upgrade",
            "probity",
            CHART,
            "-n",
            "probity",
            "--reuse-values",
            "--no-hooks",
        ])
        .output()?;
    assert!(out.status.success(), "{}", text(&out));
    let after = json(&["get", "secret", "probity-webhook-tls", "-n", "probity"]);
    assert_eq!(
        after["data"]["tls.crt"], secret["data"]["tls.crt"],
        "an upgrade keeps the operator's certificate"
    );
    tokio::task::spawn_blocking(move || drop(env)).await?;
    Ok(())
}

/// Prometheus' promtool (`make promtool`), or `None` after saying how to
/// get it; under CI or `PROBITY_E2E=require` a missing one fails.
fn promtool_or_skip() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PROBITY_PROMTOOL_BIN").map(std::path::PathBuf::from);
    match path.filter(|p| p.is_file()) {
        Some(path) => Some(path),
        None => {
            assert!(
                !probity_testenv::e2e_required(),
                "promtool is required here (CI or PROBITY_E2E=require): run `make promtool`"
            );
            eprintln!(
                "skipping: promtool not found; `make promtool` builds it, then set PROBITY_PROMTOOL_BIN=$(hack/promtool.sh path)"
            );
            None
        }
    }
}

/// The chart's alerting rules as a Prometheus rules file (JSON is YAML).
fn rules_file(dir: &std::path::Path) -> std::path::PathBuf {
    let objects = rendered(&["prometheusRule.enabled=true"]);
    let rule = find(&objects, "PrometheusRule").expect("a PrometheusRule");
    let path = dir.join("probity-rules.yaml");
    std::fs::write(&path, rule["spec"].to_string()).expect("write rules");
    path
}

#[test]
fn the_alerting_rules_pass_promtool_and_fire_when_they_should() {
    if probity_testenv::binaries_or_skip().is_none() {
        return;
    }
    let Some(promtool) = promtool_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = rules_file(dir.path());
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("SUCCESS: 6 rules found"),
        "{}",
        text(&out)
    );

    // The check can fail: a broken expression is caught.
    let broken = dir.path().join("broken.yaml");
    let text_of_rules = std::fs::read_to_string(&rules).expect("rules");
    std::fs::write(&broken, text_of_rules.replacen("sum by", "sum by by", 1)).expect("write");
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&broken)
        .output()
        .expect("promtool");
    assert!(!out.status.success(), "{}", text(&out));

    // Alerts fire on the series the operator exports, and not before.
    let tests = dir.path().join("tests.yaml");
    let job = r#"job="probity-metrics",namespace="probity""#;
    let cases = serde_json::json!({
        "rule_files": [rules],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": format!("probity_leader{{{job},pod=\"a\"}}"), "values": "1 1 0x20"},
                {"series": format!("probity_leader{{{job},pod=\"b\"}}"), "values": "0x22"},
                {"series": format!("probity_backstops_missing{{{job},pod=\"a\"}}"), "values": "0x5 2x20"},
            ],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "ProbityNoLeader", "exp_alerts": []},
                {"eval_time": "10m", "alertname": "ProbityNoLeader", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "namespace": "probity"},
                    "exp_annotations": {
                        "summary": "no probity operator holds the leader lease",
                        "description": "Policy status, Events, drift detection and backstop sync have stopped.",
                    },
                }]},
                {"eval_time": "10m", "alertname": "ProbityBackstopMissing", "exp_alerts": []},
                {"eval_time": "22m", "alertname": "ProbityBackstopMissing", "exp_alerts": [{
                    "exp_labels": {"severity": "warning", "namespace": "probity"},
                    "exp_annotations": {
                        "summary": "2 probity policies have no admission backstop",
                        "description": "The ValidatingAdmissionPolicy that keeps a policy's static rules while the webhooks are down keeps going missing, or the API server lacks the API.",
                    },
                }]},
            ],
        }],
    });
    std::fs::write(&tests, cases.to_string()).expect("write tests");
    let out = Command::new(&promtool)
        .args(["test", "rules"])
        .arg(&tests)
        .output()
        .expect("promtool");
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn the_dashboard_is_valid_json_and_shipped_in_a_configmap() {
    if probity_testenv::binaries_or_skip().is_none() {
        return;
    }
    let objects = rendered(&["grafanaDashboard.enabled=true"]);
    let map = find(&objects, "ConfigMap").expect("the dashboard's ConfigMap");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    let dashboard: serde_json::Value =
        serde_json::from_str(map["data"]["probity.json"].as_str().unwrap_or_default())
            .expect("dashboard JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "{}", panels.len());
    for panel in panels {
        let targets = panel["targets"].as_array().expect("targets");
        assert!(
            targets
                .iter()
                .all(|t| t["expr"].as_str().is_some_and(|e| e.contains("$namespace"))),
            "every query is scoped to the chosen namespace: {panel}"
        );
    }
}

/// `helm package` and `helm push` to a real OCI registry (Debian's
/// docker-registry on loopback), then `helm install oci://...` from it:
/// the release is deployed from the pushed chart, by digest too.
#[tokio::test]
async fn the_chart_is_pushed_to_and_installed_from_an_oci_registry() -> anyhow::Result<()> {
    let Some(env) = probity_testenv::shared() else {
        return Ok(());
    };
    let Some(registry) = probity_testenv::registry::Registry::start_or_skip() else {
        return Ok(());
    };
    let client = env.client()?;
    let ns = env.namespace(&client, "oci").await?;
    let dir = tempfile::tempdir()?;
    let out = env
        .helm()
        .args(["package", CHART, "--destination"])
        .arg(dir.path())
        .output()?;
    assert!(out.status.success(), "{}", text(&out));
    let version = std::fs::read_to_string(format!("{CHART}/Chart.yaml"))?
        .lines()
        .find_map(|l| l.strip_prefix("version: "))
        .map(str::to_owned)
        .expect("the chart's version");
    let package = dir.path().join(format!("probity-{version}.tgz"));
    let repository = format!("oci://{}/charts", registry.host);
    let out = env
        .helm()
        .arg("push")
        .arg(&package)
        .args([repository.as_str(), "--plain-http"])
        .output()?;
    assert!(out.status.success(), "{}", text(&out));
    let digest = text(&out)
        .lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no digest in: {}", text(&out)));

    // A release from the registry, pinned by digest. Webhooks off and
    // no hooks: this control plane is shared and has no node.
    let reference = format!("{repository}/probity@{digest}");
    let release = format!("probity-{ns}");
    let out = env
        .helm()
        .args([
            "install",
            &release,
            &reference,
            "--plain-http",
            "--no-hooks",
            "-n",
            &ns,
        ])
        .args(["--set", &format!("image.digest={DIGEST}")])
        .args([
            "--set",
            "webhooks.enabled=false",
            "--set",
            "vapBackstop=false",
        ])
        .output()?;
    assert!(out.status.success(), "{}", text(&out));
    let out = env
        .helm()
        .args(["list", "-n", &ns, "-o", "json"])
        .output()?;
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(list[0]["name"], release.as_str(), "{}", text(&out));
    assert_eq!(list[0]["status"], "deployed", "{}", text(&out));
    assert_eq!(list[0]["chart"], format!("probity-{version}").as_str());
    let deployment = env
        .kubectl()
        .args(["get", "deployment", &release, "-n", &ns, "-o", "name"])
        .output()?;
    assert!(deployment.status.success(), "{}", text(&deployment));
    let out = env
        .helm()
        .args(["uninstall", &release, "-n", &ns, "--no-hooks"])
        .output()?;
    assert!(out.status.success(), "{}", text(&out));
    Ok(())
}
