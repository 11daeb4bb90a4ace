//! The real node: kubelet and containerd register a Ready node, pull the
//! pause image from the local registry and run a pod on the bridge; the
//! scheduler and controller manager turn a Deployment into running pods and
//! a Service into EndpointSlices; all in namespaces of the run's own.
//! Outside them the test runs itself again through `hack/isolated.sh` (root
//! needed; without it the test fails in CI and skips locally, saying why).

#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "processes are waited for in wall time"
)]

use std::io::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use probity_testenv::node::{NODE_NAME, Node};
use probity_testenv::orders::{self, Database};
use probity_testenv::{Options, TestEnv, isolation};

const ISOLATED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../hack/isolated.sh");

#[test]
fn pods_deployments_and_endpoint_slices_on_the_node() {
    let started = Instant::now();
    let Some((env, node)) = node_or_skip("pods_deployments_and_endpoint_slices_on_the_node") else {
        return;
    };
    let ready_in = started.elapsed();

    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "sandbox", "namespace": "default"},
        "spec": {"nodeName": NODE_NAME,
                 "containers": [{"name": "app", "image": node.pause_image()}]},
    });
    let created = Instant::now();
    create(&env, &pod);
    let status = poll("the pod runs", || {
        let pod = get(&env, &["pod", "sandbox"]);
        let status = pod["status"].clone();
        if status["phase"] == "Running" {
            Ok(status)
        } else {
            Err(format!("{status}\nkubelet log:\n{}", node_log(&node)))
        }
    });
    let running_in = created.elapsed();
    let ip = status["podIP"].as_str().unwrap_or_default();
    assert!(
        ip.starts_with("10.88."),
        "a pod address on the bridge: {status}"
    );
    let digest = node
        .pause_image()
        .rsplit_once('@')
        .map(|(_, d)| d)
        .unwrap_or_default();
    let image_id = status["containerStatuses"][0]["imageID"]
        .as_str()
        .unwrap_or_default();
    assert!(
        image_id.ends_with(digest),
        "the runtime reports the pushed digest: {image_id}"
    );
    report(&format!(
        "node Ready {:.1} s after start; pod Running {:.1} s after create\n",
        ready_in.as_secs_f64(),
        running_in.as_secs_f64()
    ));

    // The scheduler and the controllers: a Deployment's replicas are
    // created, scheduled and run.
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "pair", "namespace": "default"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "pair"}},
                 "template": {"metadata": {"labels": {"app": "pair"}},
                              "spec": {"containers": [{"name": "app", "image": node.pause_image()}]}}},
    });
    let applied = Instant::now();
    create(&env, &deployment);
    kubectl_ok(
        &env,
        &["rollout", "status", "deployment/pair", "--timeout=90s"],
    );
    report(&format!(
        "2-replica Deployment available {:.1} s after create\n",
        applied.elapsed().as_secs_f64()
    ));

    // And the EndpointSlice controller: a Service lists both pods, ready.
    let service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "pair", "namespace": "default"},
        "spec": {"selector": {"app": "pair"}, "ports": [{"port": 80}]},
    });
    create(&env, &service);
    poll("both pods ready in the Service's EndpointSlices", || {
        let list = get(
            &env,
            &["endpointslices", "-l", "kubernetes.io/service-name=pair"],
        );
        let ready = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|slice| slice["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .count();
        if ready == 2 {
            Ok(())
        } else {
            Err(list.to_string())
        }
    });

    // The project's own image under kubelet's probes. Its dependency is
    // down (nothing listens at DEP_ADDR): the honest liveness probe keeps
    // passing and readiness fails, so the pod runs, is not Ready, and is
    // never restarted; the same pod with liveness pointed at the deep check
    // is restarted by kubelet.
    let orders = &orders_image(&env, &node);
    let started = Instant::now();
    create(&env, &orders_pod("honest", orders, "/livez"));
    create(&env, &orders_pod("dishonest", orders, "/readyz"));
    poll("the honest pod runs, not ready", || {
        let status = get(&env, &["pod", "honest"])["status"].clone();
        let running = !status["containerStatuses"][0]["state"]["running"].is_null();
        let probed = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["type"] == "Ready"
                    && c["status"] == "False"
                    && c["reason"] == "ContainersNotReady"
            });
        if running && probed {
            Ok(())
        } else {
            Err(format!("{status}\nkubelet log:\n{}", node_log(&node)))
        }
    });
    report(&format!(
        "orders pod running, not ready, {:.1} s after create\n",
        started.elapsed().as_secs_f64()
    ));
    let restarts = poll("kubelet restarts the dishonest pod", || {
        let status = get(&env, &["pod", "dishonest"])["status"].clone();
        match status["containerStatuses"][0]["restartCount"].as_u64() {
            Some(n) if n > 0 => Ok(n),
            _ => Err(status.to_string()),
        }
    });
    // The dishonest pod has been restarted; the honest one, probed as
    // often for as long, has not.
    let honest = get(&env, &["pod", "honest"])["status"].clone();
    assert_eq!(
        honest["containerStatuses"][0]["restartCount"], 0,
        "the honest pod was restarted ({restarts} restart(s) of the dishonest one): {honest}"
    );
    assert_eq!(honest["containerStatuses"][0]["ready"], false, "{honest}");
    // The pod's token came from the API server through the kubelet's
    // node credentials; its log comes back through the API server's
    // kubelet client certificate.
    let mounts = honest_spec_mounts(&env);
    assert!(
        mounts.contains("/var/run/secrets/kubernetes.io/serviceaccount"),
        "the service-account token is mounted: {mounts}"
    );
    let out = env
        .kubectl()
        .args(["logs", "honest"])
        .output()
        .expect("kubectl logs");
    assert!(
        out.status.success() && !out.stdout.is_empty(),
        "kubectl logs through the kubelet: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = get(
        &env,
        &[
            "events",
            "--field-selector",
            "involvedObject.name=honest,reason=Unhealthy",
        ],
    );
    let said = events["items"].to_string();
    assert!(
        said.contains("Readiness probe failed") && !said.contains("Liveness probe failed"),
        "kubelet ran the honest pod's probes: readiness failed, liveness did not: {said}"
    );
    drop(node);
    drop(env);
}

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../charts/probity");

/// The chart for real: its CRD hook Job applying the CRDs, the
/// operator's own image by digest, two replicas that kubelet probes Ready,
/// one leader, the API server reaching the webhooks through the Service, a
/// `:latest` Deployment denied, the leader's pod deleted and its lease
/// taken over, and `helm uninstall`, whose hook Job leaves no webhook
/// configuration, backstop or hook object behind.
#[test]
fn the_chart_runs_the_operator_on_the_node() {
    let Some((env, node)) = node_or_skip("the_chart_runs_the_operator_on_the_node") else {
        return;
    };
    let installed = Instant::now();
    let (ready, _) = install_chart(&env, &node);
    report(&format!(
        "chart installed, 2 operator replicas Ready {:.1} s after helm install\n",
        installed.elapsed().as_secs_f64()
    ));
    let ns = ["-n", "probity-system"];
    // The CRDs are the hook's (server-side apply), so upgrades reach them.
    let crd = get(
        &env,
        &[
            "crd",
            "clusterreadinesspolicies.probity.dev",
            "--show-managed-fields",
        ],
    );
    let managers: Vec<&str> = crd["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["operation"] == "Apply")
        .filter_map(|f| f["manager"].as_str())
        .collect();
    assert!(
        managers.contains(&"probity-operator"),
        "CRD appliers: {managers:?}"
    );
    let holder = |env: &TestEnv| {
        get(env, &["lease", "probity", ns[0], ns[1]])["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let leader_pod = poll("one replica holds the lease", || {
        let h = holder(&env);
        ready
            .iter()
            .find(|pod| !h.is_empty() && h.starts_with(pod.as_str()))
            .cloned()
            .ok_or(format!("holder {h:?}, pods {ready:?}"))
    });

    // The webhook, reached through the Service, denies `:latest`.
    apply(
        &env,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels: {probity.dev/policy: enforce}\n\
         ---\napiVersion: probity.dev/v1alpha1\nkind: ClusterReadinessPolicy\nmetadata:\n  name: baseline\n\
         spec:\n  mode: Enforce\n  namespaceSelector:\n    matchLabels: {probity.dev/policy: enforce}\n",
    );
    let latest = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "nginx:latest"}]}}},
    });
    poll("the webhook denies a :latest Deployment", || {
        let out = probity_testenv::output_with_stdin(
            env.kubectl()
                .args(["create", "--dry-run=server", "-f", "-"]),
            latest.to_string().as_bytes(),
        )
        .expect("kubectl create");
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() && said.contains("admission webhook") && said.contains("latest") {
            Ok(())
        } else {
            Err(format!("{}{said}", String::from_utf8_lossy(&out.stdout)))
        }
    });

    // `helm test`: its Job checks /readyz through the Service and that a
    // `:latest` Deployment is denied in a namespace of its own.
    let tested = Instant::now();
    let out = env
        .helm()
        .args([
            "test",
            "probity",
            "--namespace",
            "probity-system",
            "--timeout",
            "180s",
        ])
        .output()
        .expect("helm test");
    assert!(
        out.status.success(),
        "helm test: {}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        operator_logs(&env)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Succeeded"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    report(&format!(
        "helm test passed in {:.1} s\n",
        tested.elapsed().as_secs_f64()
    ));

    // The leader's pod goes; the other replica takes the lease.
    let deleted = Instant::now();
    kubectl_ok(
        &env,
        &["delete", "pod", &leader_pod, ns[0], ns[1], "--wait=false"],
    );
    let next = poll_explained(
        "the other replica takes the lease",
        || {
            let h = holder(&env);
            if !h.is_empty() && !h.starts_with(leader_pod.as_str()) {
                Ok(h)
            } else {
                Err(format!("holder {h:?}"))
            }
        },
        || operator_logs(&env),
    );
    report(&format!(
        "lease handed from {leader_pod} to {next} {:.1} s after the leader's pod was deleted\n",
        deleted.elapsed().as_secs_f64()
    ));

    // The Enforce policy's backstop, which the uninstall hook must remove.
    poll("the operator applies the policy's backstop", || {
        let out = env
            .kubectl()
            .args(["get", "validatingadmissionpolicy", "probity-crpol.baseline"])
            .output()
            .map_err(|e| e.to_string())?;
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
    });
    let uninstalled = Instant::now();
    let out = env
        .helm()
        .args([
            "uninstall",
            "probity",
            "--namespace",
            "probity-system",
            "--wait",
        ])
        .output()
        .expect("helm uninstall");
    report(&format!(
        "helm uninstall, its hook included, took {:.1} s\n",
        uninstalled.elapsed().as_secs_f64()
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    poll("the operator's pods are gone", || {
        let left = operator_pods(&env);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
    let hooks = env
        .kubectl()
        .args([
            "get",
            "validatingwebhookconfigurations,mutatingwebhookconfigurations",
            "-o",
            "name",
        ])
        .output()
        .expect("kubectl get");
    let hooks = String::from_utf8_lossy(&hooks.stdout);
    assert!(
        !hooks.contains("probity"),
        "webhook configurations left behind: {hooks}"
    );
    for (what, scope) in [
        (
            "validatingadmissionpolicies,validatingadmissionpolicybindings,clusterroles,clusterrolebindings",
            "-A",
        ),
        (
            "jobs,serviceaccounts,roles,rolebindings,deployments,leases",
            "--namespace=probity-system",
        ),
    ] {
        let out = env
            .kubectl()
            .args(["get", what, scope, "-o", "name"])
            .output()
            .expect("kubectl get");
        let left: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("probity"))
            .map(str::to_owned)
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

/// The `:latest` incident on a real node: three replicas pull
/// `app:latest` (digest A), the tag moves to B, one pod is replaced and its
/// replacement runs B, as the runtime reports; the operator, installed by
/// the chart, names that pod in PRB301 from the real pod statuses and the
/// pods still on A in PRB302. In a namespace with `images.pin: Admission`
/// the Deployment carries A's digest from the start and the same steps
/// leave every pod on A.
#[test]
fn the_latest_incident_is_replayed_on_the_node() {
    let Some((env, node)) = node_or_skip("the_latest_incident_is_replayed_on_the_node") else {
        return;
    };
    install_chart(&env, &node);
    let work = env.dir().join("app");
    std::fs::create_dir_all(&work).expect("work dir");
    let release = |n: &[u8]| {
        let mut image = probity_testenv::image::pause(&work).expect("pause image");
        image.layers.push(
            probity_testenv::image::LayerBuilder::new()
                .file("release", 0o644, n)
                .build(),
        );
        node.registry()
            .push_image("app", "latest", &image)
            .expect("push app:latest")
    };
    let digest_a = release(b"A");
    // shop resolves tags for its report; pinned pins them at admission.
    apply(
        &env,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n\
         apiVersion: probity.dev/v1alpha1\nkind: ReadinessPolicy\nmetadata:\n  name: audit\n  namespace: shop\n\
         spec:\n  mode: Audit\n  images: {pin: Report}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata:\n  name: pinned\n---\n\
         apiVersion: probity.dev/v1alpha1\nkind: ReadinessPolicy\nmetadata:\n  name: pin\n  namespace: pinned\n\
         spec:\n  mode: Audit\n  images: {pin: Admission}\n",
    );
    let image = format!("{}/app:latest", node.registry().host);
    let deployment = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "app", "namespace": "shop"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "app"}},
                 "template": {"metadata": {"labels": {"app": "app"}},
                              "spec": {"containers": [{"name": "app", "image": image,
                                                       "imagePullPolicy": "Always"}]}}},
    });
    create(&env, &deployment);
    let mut pinned = deployment.clone();
    pinned["metadata"]["namespace"] = "pinned".into();
    create(&env, &pinned);
    for ns in ["shop", "pinned"] {
        kubectl_ok(
            &env,
            &[
                "rollout",
                "status",
                "deployment/app",
                "-n",
                ns,
                "--timeout=90s",
            ],
        );
    }
    let stored = get(&env, &["deployment", "app", "-n", "pinned"]);
    let template_image = stored["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        template_image,
        format!("{image}@{digest_a}"),
        "pinned at admission"
    );
    let digests_in = |env: &TestEnv, ns: &str| -> Vec<(String, String)> {
        get(env, &["pods", "-n", ns, "-l", "app=app"])["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                let id = p["status"]["containerStatuses"][0]["imageID"]
                    .as_str()
                    .unwrap_or_default();
                let digest = id.rsplit_once('@').map_or("", |(_, d)| d).to_owned();
                (
                    p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    digest,
                )
            })
            .collect()
    };
    let digests = |env: &TestEnv| digests_in(env, "shop");
    let first = digests(&env);
    assert!(
        first.len() == 3 && first.iter().all(|(_, d)| *d == digest_a),
        "{first:?}"
    );
    let first_pinned = digests_in(&env, "pinned");
    assert!(
        first_pinned.len() == 3 && first_pinned.iter().all(|(_, d)| *d == digest_a),
        "{first_pinned:?}"
    );

    let digest_b = release(b"B");
    assert_ne!(digest_a, digest_b);
    for (ns, pods) in [("shop", &first), ("pinned", &first_pinned)] {
        kubectl_ok(
            &env,
            &["delete", "pod", &pods[0].0, "-n", ns, "--wait=false"],
        );
    }
    let replacement = poll("the replacement runs digest B", || {
        let now = digests(&env);
        now.iter()
            .find(|(name, d)| *d == digest_b && !first.iter().any(|(f, _)| f == name))
            .map(|(name, _)| name.clone())
            .ok_or(format!("{now:?}"))
    });
    let env = &env;
    let violation = |rule: &'static str| {
        move || {
            let policy = get(env, &["readinesspolicy", "audit", "-n", "shop"]);
            policy["status"]["violations"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["rule"] == rule && v["name"] == "app")
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .ok_or(policy["status"].to_string())
        }
    };
    let message = poll(
        "the operator reports PRB301 naming the replacement",
        violation("PRB301"),
    );
    assert!(message.contains(&replacement), "{message}");
    // The tag now resolves to B: the pods still on A are named.
    let prb302 = violation("PRB302");
    poll("the operator reports PRB302 naming the pods on A", || {
        let moved = prb302()?;
        if first[1..]
            .iter()
            .all(|(pod, _)| moved.contains(pod.as_str()))
        {
            Ok(())
        } else {
            Err(moved)
        }
    });

    // Pinned at admission, the same steps leave every pod on A.
    poll("pinned: the replacement runs digest A", || {
        let now = digests_in(env, "pinned");
        let replaced = now.len() == 3 && !now.iter().any(|(name, _)| *name == first_pinned[0].0);
        if replaced && now.iter().all(|(_, d)| *d == digest_a) {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    });
    let status = get(env, &["readinesspolicy", "pin", "-n", "pinned"])["status"].clone();
    assert!(
        !status["violations"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|v| v["rule"] == "PRB301" || v["rule"] == "PRB302"),
        "no drift where the tag was pinned: {status}"
    );
    report(&format!(
        "the :latest incident: unpinned, the replacement pod runs B and PRB301 and PRB302 are reported; \
         pinned at admission ({template_image}), every pod stays on {digest_a}\n"
    ));
}

/// The probes the orders example recommends, as it prints them, executed
/// by kubelet through a database outage: its pods leave the Service's
/// endpoints and come back, and are never restarted. Beside them, the same
/// image with liveness on the deep check, as often written by hand, is
/// restarted on every replica, and the operator installed by the chart
/// names that in PRB303.
#[test]
fn the_recommended_probes_ride_out_a_database_outage() {
    let Some((env, node)) = node_or_skip("the_recommended_probes_ride_out_a_database_outage")
    else {
        return;
    };
    let (_, images) = install_chart(&env, &node);
    let orders = images
        .iter()
        .find(|i| i.contains("/probity/orders:"))
        .expect("orders image");
    let (probes, grace) = recommended_probes(8080);
    let mut database = database(&format!("{}:0", probity_testenv::node::NODE_IP));
    let at = database.addr().to_string();
    apply(
        &env,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n\
         apiVersion: probity.dev/v1alpha1\nkind: ReadinessPolicy\nmetadata:\n  name: audit\n  namespace: shop\n\
         spec:\n  mode: Audit\n",
    );
    let indented: String = probes.lines().map(|l| format!("        {l}\n")).collect();
    apply(
        &env,
        &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: orders, namespace: shop}}\n\
             spec:\n  replicas: 2\n  selector: {{matchLabels: {{app: orders}}}}\n  template:\n\
             \x20   metadata: {{labels: {{app: orders}}}}\n    spec:\n\
             \x20     terminationGracePeriodSeconds: {grace}\n      containers:\n\
             \x20     - name: orders\n        image: {orders}\n        env:\n\
             \x20       - {{name: PORT, value: \"8080\"}}\n        - {{name: HOST, value: 0.0.0.0}}\n\
             \x20       - {{name: DEP_ADDR, value: \"{at}\"}}\n{indented}\
             ---\napiVersion: v1\nkind: Service\nmetadata: {{name: orders, namespace: shop}}\n\
             spec:\n  selector: {{app: orders}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
        ),
    );
    let rolled = Instant::now();
    kubectl_ok(
        &env,
        &[
            "rollout",
            "status",
            "deployment/orders",
            "-n",
            "shop",
            "--timeout=90s",
        ],
    );
    let rolled_in = rolled.elapsed();
    // Its startup probe on the deep check too, so that liveness starts only
    // once the database answered: the restarts below are the outage's.
    let mut fragile = orders_container(orders, "/readyz", &at);
    fragile["startupProbe"]["httpGet"]["path"] = "/readyz".into();
    create(
        &env,
        &serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "fragile", "namespace": "shop"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "fragile"}},
                     "template": {"metadata": {"labels": {"app": "fragile"}},
                                  "spec": {"containers": [fragile]}}},
        }),
    );
    kubectl_ok(
        &env,
        &[
            "rollout",
            "status",
            "deployment/fragile",
            "-n",
            "shop",
            "--timeout=90s",
        ],
    );
    let endpoints = |env: &TestEnv| -> (usize, usize) {
        let list = get(
            env,
            &[
                "endpointslices",
                "-n",
                "shop",
                "-l",
                "kubernetes.io/service-name=orders",
            ],
        );
        let all: Vec<serde_json::Value> = list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|slice| slice["endpoints"].as_array().cloned().unwrap_or_default())
            .collect();
        let ready = all
            .iter()
            .filter(|e| e["conditions"]["ready"] == true)
            .count();
        (ready, all.len() - ready)
    };
    // Polls until the endpoints are `want` (ready, not ready).
    let endpoints_become = |what: &str, want: (usize, usize)| {
        poll(what, || match endpoints(&env) {
            seen if seen == want => Ok(()),
            seen => Err(format!("ready, not ready: {seen:?}")),
        });
    };
    endpoints_become("both orders pods ready in the EndpointSlices", (2, 0));
    report(&format!(
        "recommended probes: 2 orders replicas available {:.1} s after apply\n",
        rolled_in.as_secs_f64()
    ));

    let restarts = |app: &str| -> (Vec<u64>, serde_json::Value) {
        let pods = get(&env, &["pods", "-n", "shop", "-l", &format!("app={app}")]);
        let counts = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                p["status"]["containerStatuses"][0]["restartCount"]
                    .as_u64()
                    .unwrap_or(u64::MAX)
            })
            .collect();
        (counts, pods)
    };
    let prb303 = |env: &TestEnv| -> Vec<serde_json::Value> {
        let policy = get(env, &["readinesspolicy", "audit", "-n", "shop"]);
        policy["status"]["violations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["rule"] == "PRB303")
            .cloned()
            .collect()
    };
    let (before, pods) = restarts("fragile");
    assert_eq!(before, [0, 0], "no restarts before the outage: {pods}");
    assert_eq!(prb303(&env), Vec::<serde_json::Value>::new());

    // The database goes away.
    let down = Instant::now();
    database.close();
    endpoints_become("both orders pods leave the EndpointSlices", (0, 2));
    let out_in = down.elapsed();
    let message = poll_explained(
        "the operator reports PRB303 for the fragile Deployment",
        || {
            let found = prb303(&env);
            found
                .iter()
                .find(|v| v["name"] == "fragile")
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .ok_or(format!("{found:?}"))
        },
        || operator_logs(&env),
    );
    let reported_in = down.elapsed();
    // At least two of the orders pods' liveness periods into the outage.
    let period = Duration::from_secs(10);
    std::thread::sleep((period * 2).saturating_sub(down.elapsed()));
    let outage = down.elapsed();
    let (honest, pods) = restarts("orders");
    assert_eq!(honest, [0, 0], "{pods}");
    let (fragile, pods) = restarts("fragile");
    assert!(
        fragile.len() == 2 && fragile.iter().all(|n| (1..u64::MAX).contains(n)),
        "{pods}"
    );
    assert!(message.contains("2 of 2 replicas"), "{message}");
    let flagged = prb303(&env);
    assert!(
        flagged.iter().all(|v| v["name"] == "fragile"),
        "the honest Deployment is not flagged: {flagged:?}"
    );
    let events = get(
        &env,
        &[
            "events",
            "-n",
            "shop",
            "--field-selector",
            "reason=Unhealthy",
        ],
    );
    let liveness_failed: Vec<&str> = events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("Liveness probe failed"))
        })
        .filter_map(|e| e["involvedObject"]["name"].as_str())
        .collect();
    assert!(
        !liveness_failed.is_empty() && liveness_failed.iter().all(|n| n.starts_with("fragile-")),
        "only the fragile pods' liveness probes failed: {liveness_failed:?}"
    );

    // The database comes back.
    let up = Instant::now();
    database = self::database(&at);
    endpoints_become("both orders pods back in the EndpointSlices", (2, 0));
    let back_in = up.elapsed();
    drop(database);
    report(&format!(
        "database down: orders out of the EndpointSlices in {:.1} s, PRB303 on the fragile Deployment in {:.1} s, \
         {:.0} s outage with 0 orders restarts; back {:.1} s after the database returned\n",
        out_in.as_secs_f64(),
        reported_in.as_secs_f64(),
        outage.as_secs_f64(),
        back_in.as_secs_f64()
    ));
}

/// Rolling restarts under load, with a client that routes as kube-proxy
/// does, from the EndpointSlices it reads every 100 ms: with the orders
/// example's drain delay no request fails; without one, reported beside
/// it, requests reach pods that already stopped listening.
#[test]
fn a_rolling_restart_loses_no_requests_with_the_drain_delay() {
    let Some((env, node)) =
        node_or_skip("a_rolling_restart_loses_no_requests_with_the_drain_delay")
    else {
        return;
    };
    let orders = &orders_image(&env, &node);
    let (probes, grace) = recommended_probes(8080);
    let database = database(&format!("{}:0", probity_testenv::node::NODE_IP));
    let at = database.addr().to_string();
    let indented: String = probes.lines().map(|l| format!("        {l}\n")).collect();
    for (name, delay) in [("drained", 5), ("abrupt", 0)] {
        apply(
            &env,
            &format!(
                "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\n\
                 spec:\n  replicas: 3\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n\
                 \x20   metadata: {{labels: {{app: {name}}}}}\n    spec:\n\
                 \x20     terminationGracePeriodSeconds: {grace}\n      containers:\n\
                 \x20     - name: orders\n        image: {orders}\n        env:\n\
                 \x20       - {{name: PORT, value: \"8080\"}}\n        - {{name: HOST, value: 0.0.0.0}}\n\
                 \x20       - {{name: DEP_ADDR, value: \"{at}\"}}\n\
                 \x20       - {{name: DRAIN_DELAY, value: \"{delay}\"}}\n{indented}\
                 ---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n\
                 spec:\n  selector: {{app: {name}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
            ),
        );
    }
    let config = env.config().clone();
    let mut figures = Vec::new();
    for name in ["drained", "abrupt"] {
        kubectl_ok(
            &env,
            &[
                "rollout",
                "status",
                &format!("deployment/{name}"),
                "--timeout=90s",
            ],
        );
        let traffic = Traffic::start(config.clone(), name);
        std::thread::sleep(Duration::from_secs(2));
        kubectl_ok(&env, &["rollout", "restart", &format!("deployment/{name}")]);
        kubectl_ok(
            &env,
            &[
                "rollout",
                "status",
                &format!("deployment/{name}"),
                "--timeout=120s",
            ],
        );
        // Until the replaced pods are gone, drain and all.
        poll_explained(
            "the replaced pods finish",
            || {
                let pods = get(&env, &["pods", "-l", &format!("app={name}")]);
                let left = pods["items"].as_array().map_or(0, Vec::len);
                if left == 3 {
                    Ok(())
                } else {
                    Err(format!("{left} pods"))
                }
            },
            || node_log(&node),
        );
        std::thread::sleep(Duration::from_secs(1));
        let tally = traffic.stop();
        assert!(tally.sent > 100, "{name}: {tally:?}");
        figures.push((name, tally));
    }
    drop(database);
    let [(_, drained), (_, abrupt)] = &figures[..] else {
        unreachable!("two rollouts")
    };
    report(&format!(
        "rolling restart of 3 orders replicas at 50 requests/s, routed from EndpointSlices read every 100 ms: \
         drain delay 5 s: {} of {} failed; no drain delay: {} of {} failed {:?}\n",
        drained.failed(),
        drained.sent,
        abrupt.failed(),
        abrupt.sent,
        abrupt.failures
    ));
    assert_eq!(drained.failed(), 0, "with the drain delay: {drained:?}");
}

/// What a [`Traffic`] run saw: requests sent and failures by kind.
#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    failures: std::collections::BTreeMap<String, usize>,
}

impl Tally {
    fn failed(&self) -> usize {
        self.failures.values().sum()
    }
}

/// Requests to a Service's ready endpoints, round robin, 50 a second, each
/// on a new connection, from the EndpointSlices as last read (every
/// 100 ms), as kube-proxy routes new connections.
struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sender: std::thread::JoinHandle<Tally>,
    reader: std::thread::JoinHandle<()>,
}

impl Traffic {
    fn start(config: kube::Config, service: &str) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let stop = Arc::new(AtomicBool::new(false));
        let endpoints: Arc<Mutex<Vec<std::net::SocketAddr>>> = Arc::default();
        let reader = {
            let (stop, endpoints, service) = (
                Arc::clone(&stop),
                Arc::clone(&endpoints),
                service.to_owned(),
            );
            std::thread::spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async {
                    let Ok(client) = kube::Client::try_from(config) else {
                        return;
                    };
                    let api: kube::Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
                        kube::Api::namespaced(client, "default");
                    let selector = format!("kubernetes.io/service-name={service}");
                    let params = kube::api::ListParams::default().labels(&selector);
                    while !stop.load(Ordering::Relaxed) {
                        let listed =
                            tokio::time::timeout(Duration::from_secs(1), api.list(&params)).await;
                        if let Ok(Ok(slices)) = listed {
                            let ready = ready_endpoints(&slices.items);
                            *endpoints.lock().unwrap_or_else(|e| e.into_inner()) = ready;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                });
            })
        };
        let sender = {
            let (stop, endpoints) = (Arc::clone(&stop), Arc::clone(&endpoints));
            std::thread::spawn(move || {
                let mut tally = Tally::default();
                let mut requests = Vec::new();
                let mut next = Instant::now();
                let mut turn = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let target = {
                        let list = endpoints.lock().unwrap_or_else(|e| e.into_inner());
                        (!list.is_empty()).then(|| list[turn % list.len()])
                    };
                    turn += 1;
                    if let Some(addr) = target {
                        tally.sent += 1;
                        requests.push(std::thread::spawn(move || get_orders(addr)));
                    }
                    next += Duration::from_millis(20);
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
                for request in requests {
                    if let Ok(Err(kind)) = request.join() {
                        *tally.failures.entry(kind).or_default() += 1;
                    }
                }
                tally
            })
        };
        Self {
            stop,
            sender,
            reader,
        }
    }

    fn stop(self) -> Tally {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.reader.join();
        self.sender.join().unwrap_or_default()
    }
}

/// The addresses of the ready endpoints in `slices`, at the port named in
/// each slice.
fn ready_endpoints(
    slices: &[k8s_openapi::api::discovery::v1::EndpointSlice],
) -> Vec<std::net::SocketAddr> {
    let mut out = Vec::new();
    for slice in slices {
        let port = slice
            .ports
            .iter()
            .flatten()
            .find_map(|p| p.port)
            .and_then(|p| u16::try_from(p).ok());
        let Some(port) = port else { continue };
        for endpoint in &slice.endpoints {
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(true);
            for address in endpoint.addresses.iter().filter(|_| ready) {
                if let Ok(ip) = address.parse::<std::net::IpAddr>() {
                    out.push(std::net::SocketAddr::new(ip, port));
                }
            }
        }
    }
    out.sort();
    out
}

/// `GET /orders` on a new connection: `Ok` on a 200, else what went wrong.
fn get_orders(addr: std::net::SocketAddr) -> Result<(), String> {
    use std::io::Read as _;
    let kind = |e: &std::io::Error| format!("{:?}", e.kind());
    let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .map_err(|e| format!("connect: {}", kind(&e)))?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
    conn.write_all(b"GET /orders HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {}", kind(&e)))?;
    let mut answer = Vec::new();
    (&mut conn)
        .take(64 * 1024)
        .read_to_end(&mut answer)
        .map_err(|e| format!("read: {}", kind(&e)))?;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer.split_whitespace().nth(1).unwrap_or("no answer");
    if status == "200" {
        return Ok(());
    }
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let first: String = body
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(60)
        .collect();
    Err(format!("HTTP {status}: {first}"))
}

/// Pushes the project's images; the orders example's, by digest.
fn orders_image(env: &TestEnv, node: &Node) -> String {
    let work = env.dir().join("images");
    std::fs::create_dir_all(&work).expect("image work dir");
    let images = probity_testenv::image::push_project_images(node.registry(), &work)
        .expect("project images");
    images
        .into_iter()
        .find(|i| i.contains("/probity/orders:"))
        .expect("orders image")
}

/// The probes the orders example prints at start for `port`, as YAML, and
/// the terminationGracePeriodSeconds it prints after them.
fn recommended_probes(port: u16) -> (String, u64) {
    let binary = probity_testenv::image::project_binary("examples/orders").expect("orders");
    let probes = orders::recommended_probes(&binary, port).expect("the recommended probes");
    (probes.yaml, probes.grace_seconds)
}

/// The orders example's database, on `addr`.
fn database(addr: &str) -> Database {
    Database::listen(addr).expect("the database's address")
}

/// The operator's pods in probity-system: name and whether Ready.
fn operator_pods(env: &TestEnv) -> Vec<(String, bool)> {
    let list = get(
        env,
        &[
            "pods",
            "-n",
            "probity-system",
            "-l",
            "app.kubernetes.io/name=probity",
        ],
    );
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                ready,
            )
        })
        .collect()
}

/// Pushes the project's images and installs the chart as release
/// `probity` in probity-system with the operator's image by digest;
/// returns the two replicas' pod names once both are Ready, and the
/// images pushed.
fn install_chart(env: &TestEnv, node: &Node) -> (Vec<String>, Vec<String>) {
    let work = env.dir().join("images");
    std::fs::create_dir_all(&work).expect("image work dir");
    let images = probity_testenv::image::push_project_images(node.registry(), &work)
        .expect("project images");
    let image = images
        .iter()
        .find(|i| i.contains("/probity/probity:"))
        .expect("probity image");
    let mut helm = env.helm();
    helm.args(["install", "probity", CHART, "--namespace", "probity-system"])
        .args(["--create-namespace", "--wait", "--timeout", "180s"]);
    for set in node.chart_values(image).expect("the chart's values") {
        helm.args(["--set", &set]);
    }
    let out = helm.output().expect("helm install");
    assert!(
        out.status.success(),
        "helm install: {}{}\nkubelet log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        node_log(node)
    );
    let pods = poll("both operator replicas Ready", || {
        let pods = operator_pods(env);
        if pods.len() == 2 && pods.iter().all(|(_, r)| *r) {
            Ok(pods.into_iter().map(|(pod, _)| pod).collect())
        } else {
            Err(format!("{pods:?}"))
        }
    });
    (pods, images)
}

/// A line for the test's output on stderr: a measured figure, or what the
/// isolated run printed.
fn report(line: &str) {
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// `kubectl <args>`, which must succeed.
fn kubectl_ok(env: &TestEnv, args: &[&str]) {
    let out = env.kubectl().args(args).output().expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kubectl apply -f -` of `yaml`, which must succeed.
fn apply(env: &TestEnv, yaml: &str) {
    let out = probity_testenv::output_with_stdin(
        env.kubectl().args(["apply", "-f", "-"]),
        yaml.as_bytes(),
    )
    .expect("kubectl apply");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A control plane and a node, inside a namespace of the run's own: `None`
/// when `test` ran inside `hack/isolated.sh` instead (it passed there, or
/// this panicked) or when the binaries are missing and not required.
fn node_or_skip(test: &str) -> Option<(TestEnv, Node)> {
    match isolation::check() {
        Ok(()) => {}
        Err(isolation::Refused::NotIsolated) => {
            run_isolated(test);
            return None;
        }
        // Inside, but not as a node needs: running again would not help.
        Err(refused) => panic!("no node here: {refused}"),
    }
    let binaries = probity_testenv::binaries_or_skip()?;
    let registry = probity_testenv::registry::locate_or_skip()?;
    let options = Options {
        node: true,
        ..Options::default()
    };
    let env = TestEnv::start(binaries, &options).expect("control plane");
    let node = Node::start(&env, &registry, Duration::from_secs(120)).expect("node");
    Some((env, node))
}

/// The orders example with its dependency down, its liveness probe on
/// `liveness`, readiness on `/readyz`, both every second after a startup
/// probe on `/livez`.
fn orders_pod(name: &str, image: &str, liveness: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [orders_container(image, liveness, "10.88.0.1:9")]},
    })
}

/// The orders example's container with its database at `database`, its
/// liveness probe on `liveness`, readiness on `/readyz`, both every second
/// and failing at the first failure, after a startup probe on `/livez`:
/// probes written by hand, as often seen.
fn orders_container(image: &str, liveness: &str, database: &str) -> serde_json::Value {
    let probe = |path: &str| {
        serde_json::json!({
            "httpGet": {"path": path, "port": 8080},
            "periodSeconds": 1, "failureThreshold": 1, "timeoutSeconds": 1,
        })
    };
    serde_json::json!({
        "name": "orders", "image": image,
        "env": [{"name": "PORT", "value": "8080"},
                {"name": "HOST", "value": "0.0.0.0"},
                {"name": "DEP_ADDR", "value": database}],
        // Liveness and readiness start once the server answers.
        "startupProbe": {"httpGet": {"path": "/livez", "port": 8080},
                         "periodSeconds": 1, "failureThreshold": 30},
        "livenessProbe": probe(liveness),
        "readinessProbe": probe("/readyz"),
    })
}

/// The mount paths of the honest pod's container, as JSON.
fn honest_spec_mounts(env: &TestEnv) -> String {
    get(env, &["pod", "honest"])["spec"]["containers"][0]["volumeMounts"].to_string()
}

/// `kubectl create -f -` of `object`, which must succeed.
fn create(env: &TestEnv, object: &serde_json::Value) {
    let out = probity_testenv::output_with_stdin(
        env.kubectl().args(["create", "-f", "-"]),
        object.to_string().as_bytes(),
    )
    .expect("kubectl create");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kubectl get <what> -o json`, parsed (`null` when it fails).
fn get(env: &TestEnv, what: &[&str]) -> serde_json::Value {
    let out = env
        .kubectl()
        .arg("get")
        .args(what)
        .args(["-o", "json"])
        .output()
        .expect("kubectl get");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// Polls `probe` every 200 ms until it returns `Ok`, or panics after a
/// minute with `what` and the last value seen.
fn poll<T>(what: &str, probe: impl FnMut() -> Result<T, String>) -> T {
    poll_explained(what, probe, String::new)
}

/// [`poll`], and on failure also what `explain` says (logs, for example).
fn poll_explained<T>(
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
    explain: impl FnOnce() -> String,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match probe() {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => {
                panic!(
                    "{what}: not within a minute; last seen: {seen}\n{}",
                    explain()
                )
            }
            Err(_) => {}
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The last lines each operator pod logged, for failure messages.
fn operator_logs(env: &TestEnv) -> String {
    let out = env
        .kubectl()
        .args([
            "logs",
            "-n",
            "probity-system",
            "-l",
            "app.kubernetes.io/name=probity",
        ])
        .args(["--prefix", "--tail=40", "--all-containers"])
        .output()
        .expect("kubectl logs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The end of the kubelet's log, for failure messages.
fn node_log(node: &Node) -> String {
    let log = std::fs::read_to_string(node.dir().join("kubelet.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(20).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Runs `test` of this binary again inside `hack/isolated.sh`.
fn run_isolated(test: &str) {
    if !isolation::is_root() {
        assert!(
            !probity_testenv::e2e_required(),
            "{test}: the node needs root (network, mount and pid namespaces) and is required here"
        );
        report(&format!(
            "skipping {test}: the node needs root (hack/isolated.sh)\n"
        ));
        return;
    }
    let exe = std::env::current_exe().expect("own executable");
    let out = Command::new(ISOLATED)
        .arg(exe)
        .args(["--exact", test, "--nocapture"])
        .output()
        .expect("run hack/isolated.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    report(&text);
    assert!(
        out.status.success(),
        "{test} failed inside hack/isolated.sh"
    );
    assert!(
        text.contains("1 passed"),
        "{test} did not run inside:\n{text}"
    );
}
