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
use probity_testenv::{Options, TestEnv, isolation};

const ISOLATED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../hack/isolated.sh");

#[test]
fn pods_deployments_and_endpoint_slices_on_the_node() {
    match isolation::check() {
        Ok(()) => {}
        Err(isolation::Refused::NotIsolated) => {
            run_isolated("pods_deployments_and_endpoint_slices_on_the_node");
            return;
        }
        // Inside, but not as a node needs: running again would not help.
        Err(refused) => panic!("no node here: {refused}"),
    }
    let Some(binaries) = probity_testenv::binaries_or_skip() else {
        return;
    };
    let Some(registry) = probity_testenv::registry::locate_or_skip() else {
        return;
    };
    let started = Instant::now();
    let options = Options {
        node: true,
        ..Options::default()
    };
    let env = TestEnv::start(binaries, &options).expect("control plane");
    let node = Node::start(&env, &registry, Duration::from_secs(120)).expect("node");
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
    let line = format!(
        "node Ready {:.1} s after start; pod Running {:.1} s after create\n",
        ready_in.as_secs_f64(),
        running_in.as_secs_f64()
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());

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
    let out = env
        .kubectl()
        .args(["rollout", "status", "deployment/pair", "--timeout=90s"])
        .output()
        .expect("kubectl rollout status");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = format!(
        "2-replica Deployment available {:.1} s after create\n",
        applied.elapsed().as_secs_f64()
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());

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
    let work = env.dir().join("images");
    std::fs::create_dir_all(&work).expect("image work dir");
    let images = probity_testenv::image::push_project_images(node.registry(), &work)
        .expect("project images");
    let orders = images
        .iter()
        .find(|i| i.contains("/probity/orders:"))
        .expect("orders image");
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
    let line = format!(
        "orders pod running, not ready, {:.1} s after create\n",
        started.elapsed().as_secs_f64()
    );
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
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

/// The orders example with its dependency down, its liveness probe on
/// `liveness`, readiness on `/readyz`, both every second after a startup
/// probe on `/livez`.
fn orders_pod(name: &str, image: &str, liveness: &str) -> serde_json::Value {
    let probe = |path: &str| {
        serde_json::json!({
            "httpGet": {"path": path, "port": 8080},
            "periodSeconds": 1, "failureThreshold": 1, "timeoutSeconds": 1,
        })
    };
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{
            "name": "orders", "image": image,
            "env": [{"name": "PORT", "value": "8080"},
                    {"name": "HOST", "value": "0.0.0.0"},
                    {"name": "DEP_ADDR", "value": "10.88.0.1:9"}],
            // Liveness and readiness start once the server answers.
            "startupProbe": {"httpGet": {"path": "/livez", "port": 8080},
                             "periodSeconds": 1, "failureThreshold": 30},
            "livenessProbe": probe(liveness),
            "readinessProbe": probe("/readyz"),
        }]},
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
fn poll<T>(what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match probe() {
            Ok(value) => return value,
            Err(seen) => assert!(
                Instant::now() < deadline,
                "{what}: not within a minute; last seen: {seen}"
            ),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The end of the kubelet's log, for failure messages.
fn node_log(node: &Node) -> String {
    let log = std::fs::read_to_string(node.dir().join("kubelet.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(20).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Runs `test` of this binary again inside `hack/isolated.sh`.
fn run_isolated(test: &str) {
    // The effective uid: the second field of Uid: in /proc/self/status.
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        .unwrap_or(false);
    if !root {
        assert!(
            !probity_testenv::e2e_required(),
            "{test}: the node needs root (network, mount and pid namespaces) and is required here"
        );
        let line = format!("skipping {test}: the node needs root (hack/isolated.sh)\n");
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
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
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
    assert!(
        out.status.success(),
        "{test} failed inside hack/isolated.sh"
    );
    assert!(
        text.contains("1 passed"),
        "{test} did not run inside:\n{text}"
    );
}
