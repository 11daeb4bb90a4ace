//! Operator convergence and memory at scale, against a real control plane.
//!
//! Loads N Deployments (N = 1,000 then 10,000; 2% violating) into a real
//! kube-apiserver, creates three policies, starts `probity operator`, and
//! measures: time from start to caches synced (`/startupz` 200), time from
//! caches synced to every policy's status converged, and the operator's
//! peak RSS (VmHWM).
//!
//! `make bench-operator`; `PROBITY_BENCH_SIZES=1000,5000` to choose sizes.
//! Under `cargo test` (no `--bench`) it runs once with 50 Deployments.

#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "benchmarks measure wall time"
)]

use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::PostParams;
use kube::{Api, Client};
use probity::policy::{ClusterReadinessPolicy, ReadinessPolicy};
use probity_testenv::{Options, Process, TestEnv};
use serde_json::json;

const NAMESPACES: usize = 10;
const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn deployment(i: usize) -> Deployment {
    let violating = i.is_multiple_of(50);
    let image = if violating {
        "nginx:latest".to_owned()
    } else {
        format!("registry.example/app{}:1.{}@{DIGEST}", i % 17, i % 5)
    };
    let mut container = json!({
        "name": "app", "image": image,
        "ports": [{"name": "http", "containerPort": 8080}],
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
        "env": [{"name": "INDEX", "value": i.to_string()}],
    });
    if !violating {
        container["readinessProbe"] = json!({"httpGet": {"path": "/readyz", "port": 8080}});
        container["livenessProbe"] =
            json!({"httpGet": {"path": "/livez", "port": 8080}, "failureThreshold": 6});
    }
    let name = format!("app-{i}");
    let team = if i.is_multiple_of(2) { "a" } else { "b" };
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name, "team": team}},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name, "team": team}},
                         "spec": {"containers": [container]}},
        },
    }))
    .expect("deployment")
}

fn ns_name(i: usize) -> String {
    format!("bench-{}", i % NAMESPACES)
}

async fn load(client: &Client, from: usize, to: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let results: Vec<anyhow::Result<()>> = futures::stream::iter(from..to)
        .map(|i| {
            let api: Api<Deployment> = Api::namespaced(client.clone(), &ns_name(i));
            async move {
                api.create(&PostParams::default(), &deployment(i)).await?;
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(started.elapsed())
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn http_status(addr: &str, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}

struct Run {
    n: usize,
    sync: Duration,
    converge: Duration,
    rss_mib: f64,
}

async fn measure(env: &TestEnv, client: &Client, n: usize) -> anyhow::Result<Run> {
    let admin = probity_testenv::free_addr()?.to_string();
    let started = Instant::now();
    let log_path = std::env::temp_dir().join(format!("probity-bench-operator-{n}.log"));
    let mut command = Command::new(env!("CARGO_BIN_EXE_probity"));
    command
        .args([
            "--log-level",
            "info",
            "operator",
            "--admin-addr",
            &admin,
            "--identity",
            "bench",
            "--lease-namespace",
            "bench-0",
        ])
        .env("KUBECONFIG", env.kubeconfig());
    // Killed when the measurement ends, however it ends.
    let child = Process::spawn("operator", &mut command, Some(&log_path))?;
    let pid = child.pid();
    let deadline = started + Duration::from_secs(300);
    let mut synced = None;
    while synced.is_none() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "caches did not sync in 300 s; operator log: {}",
            log_path.display()
        );
        if http_status(&admin, "/startupz").await == Some(200) {
            synced = Some(started.elapsed());
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The operator logs the moment its caches synced; /startupz only
    // follows within its check interval.
    let sync = std::fs::read_to_string(&log_path)
        .ok()
        .and_then(|log| {
            let line = log
                .lines()
                .find(|l| l.contains("caches synced"))?
                .to_owned();
            let ms = line
                .split("elapsed_ms=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some(Duration::from_millis(ms))
        })
        .or(synced)
        .unwrap_or_default();
    let expected = [n, n / 2, n.div_ceil(NAMESPACES)];
    let cluster: Api<ClusterReadinessPolicy> = Api::all(client.clone());
    let ns0: Api<ReadinessPolicy> = Api::namespaced(client.clone(), "bench-0");
    loop {
        anyhow::ensure!(
            Instant::now() < deadline,
            "status did not converge in 300 s; operator log: {}",
            log_path.display()
        );
        let all = cluster
            .get("bench-all")
            .await?
            .status
            .map(|s| (s.matched, s.violating));
        let team = cluster.get("bench-team-a").await?.status.map(|s| s.matched);
        let local = ns0.get("bench-local").await?.status.map(|s| s.matched);
        let want = |m: usize| i64::try_from(m).unwrap_or(i64::MAX);
        if all.map(|a| a.0) == Some(want(expected[0]))
            && all.map(|a| a.1) == Some(want(n.div_ceil(50)))
            && team == Some(want(expected[1]))
            && local == Some(want(expected[2]))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let converged = started.elapsed();
    // Let event publishing and steady state run a little, then read the peak.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss = peak_rss_kib(pid).unwrap_or(0);
    drop(child);
    // Kept only when the run fails (the errors above name it).
    let _ = std::fs::remove_file(&log_path);
    Ok(Run {
        n,
        sync,
        converge: converged.saturating_sub(sync),
        rss_mib: rss as f64 / 1024.0,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    // Under `cargo test` (no `--bench`): a small smoke run of the harness.
    let full = std::env::args().any(|a| a == "--bench");
    let default_sizes = if full { "1000,10000" } else { "50" };
    let sizes: Vec<usize> = std::env::var("PROBITY_BENCH_SIZES")
        .unwrap_or_else(|_| default_sizes.to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let Some(binaries) = probity_testenv::binaries_or_skip() else {
        anyhow::bail!(
            "the control plane is needed: {}",
            probity_testenv::BUILD_HINT
        );
    };
    let env = tokio::task::spawn_blocking(move || TestEnv::start(binaries, &Options::default()))
        .await??;
    let client = env.client()?;
    probity::controller::install_crds(&client, Duration::from_secs(60)).await?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    for i in 0..NAMESPACES {
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns_name(i)}}))?,
            )
            .await?;
    }
    let post = PostParams::default();
    cluster_policy(
        &client,
        "bench-all",
        json!({"match": {"kinds": ["Deployment"]}}),
    )
    .await?;
    cluster_policy(
        &client,
        "bench-team-a",
        json!({"match": {"selector": {"matchLabels": {"team": "a"}}}}),
    )
    .await?;
    Api::<ReadinessPolicy>::namespaced(client.clone(), "bench-0")
        .create(
            &post,
            &serde_json::from_value(json!({
                "apiVersion": "probity.dev/v1alpha1", "kind": "ReadinessPolicy",
                "metadata": {"name": "bench-local"}, "spec": {},
            }))?,
        )
        .await?;

    println!(
        "operator convergence: 3 policies, Deployments in {NAMESPACES} namespaces, 2% violating"
    );
    println!(
        "| Deployments | load (create) | start -> caches synced | synced -> all status converged | peak RSS |"
    );
    println!("|---:|---:|---:|---:|---:|");
    let mut loaded = 0;
    for n in sizes {
        let took = load(&client, loaded, n).await?;
        loaded = n;
        let run = measure(&env, &client, n).await?;
        println!(
            "| {} | {:.1} s | {:.2} s | {:.2} s | {:.1} MiB |",
            run.n,
            took.as_secs_f64(),
            run.sync.as_secs_f64(),
            run.converge.as_secs_f64(),
            run.rss_mib
        );
    }
    tokio::task::spawn_blocking(move || drop(env)).await?;
    Ok(())
}

async fn cluster_policy(
    client: &Client,
    name: &str,
    spec: serde_json::Value,
) -> anyhow::Result<()> {
    Api::<ClusterReadinessPolicy>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "probity.dev/v1alpha1", "kind": "ClusterReadinessPolicy",
                "metadata": {"name": name}, "spec": spec,
            }))?,
        )
        .await?;
    Ok(())
}
