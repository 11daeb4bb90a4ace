//! The webhook under hostile load: a release `probity operator` (real etcd
//! and kube-apiserver behind its caches, a pinning policy in force) is sent
//! AdmissionReviews straight to its port, as a pod-network attacker would,
//! 20 at a time for a fixed time: 6 MiB reviews (a 6 MiB array of numbers
//! inside the object; 6 MiB of containers) and a 5,000-image review (5,000
//! distinct registries) to both webhooks. Meanwhile an ordinary review is
//! sent every 50 ms. Reported: the operator's peak RSS (`VmHWM`), how each
//! kind of review was answered, and the ordinary reviews' latency.
//!
//! `make bench-admission-hostile`. `PROBITY_BENCH_OPERATOR=<binary>` runs
//! another build of the operator (an older one, to compare).

#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "benchmarks measure wall time"
)]

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kube::Api;
use kube::api::PostParams;
use probity_testenv::{Options, Process, TestEnv};
use rustls::pki_types::CertificateDer;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const CONCURRENCY: usize = 20;
const ORDINARY_EVERY: Duration = Duration::from_millis(50);
/// Under the webhook's 6 MiB body limit.
const HOSTILE_BYTES: usize = 6 * 1024 * 1024 - 4096;

fn review(uid: &str, object: &str) -> Vec<u8> {
    format!(
        r#"{{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {{
            "uid": "{uid}", "kind": {{"group": "", "version": "v1", "kind": "Pod"}},
            "resource": {{"group": "", "version": "v1", "resource": "pods"}},
            "namespace": "shop", "operation": "CREATE", "userInfo": {{"username": "mallory"}},
            "object": {object}}}}}"#
    )
    .into_bytes()
}

fn pod(containers: &str, extra: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Pod", "metadata": {{"name": "p", "namespace": "shop"}},
            {extra} "spec": {{"containers": [{containers}]}}}}"#
    )
}

/// The reviews sent, by name.
fn bodies() -> Vec<(&'static str, Vec<u8>)> {
    let numbers = {
        let n = HOSTILE_BYTES / 2 - 512;
        let mut junk = String::with_capacity(n * 2);
        junk.push('[');
        for i in 0..n {
            if i > 0 {
                junk.push(',');
            }
            junk.push('0');
        }
        junk.push(']');
        review(
            "numbers",
            &pod(
                r#"{"name": "c", "image": "nginx:1.27"}"#,
                &format!(r#""status": {{"junk": {junk}}},"#),
            ),
        )
    };
    let flood = {
        let one = r#"{"name": "c"},"#;
        let n = (HOSTILE_BYTES - 512) / one.len();
        let containers = one.repeat(n);
        review("flood", &pod(containers.trim_end_matches(','), ""))
    };
    let images = {
        let containers: Vec<String> = (0..5_000)
            .map(|i| format!(r#"{{"name": "c{i}", "image": "r{i}.example.com/app:1"}}"#))
            .collect();
        review("images", &pod(&containers.join(","), ""))
    };
    let ordinary = review(
        "ordinary",
        &pod(r#"{"name": "web", "image": "nginx:latest"}"#, ""),
    );
    vec![
        ("6 MiB of numbers", numbers),
        ("6 MiB of containers", flood),
        ("5,000 images", images),
        ("ordinary", ordinary),
    ]
}

/// A self-signed serving certificate for 127.0.0.1, written to `dir`.
fn certificate(
    dir: &std::path::Path,
) -> anyhow::Result<(CertificateDer<'static>, PathBuf, PathBuf)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::IpAddress(std::net::IpAddr::from([
        127, 0, 0, 1,
    ]))];
    let cert = params.self_signed(&key)?;
    let (cert_path, key_path) = (dir.join("tls.crt"), dir.join("tls.key"));
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;
    Ok((cert.der().clone(), cert_path, key_path))
}

/// POSTs `body` to `path` over a new TLS connection; the status code.
async fn post(
    connector: &tokio_rustls::TlsConnector,
    port: u16,
    path: &str,
    body: &[u8],
) -> anyhow::Result<u16> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let name =
        rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    let mut tls = connector.connect(name, tcp).await?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await?;
    // A refused body may be answered before it is all sent.
    let _ = tls.write_all(body).await;
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no response"))?;
    Ok(status)
}

/// `VmHWM` and `VmRSS` of `pid`, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Answers per status code of one kind of review.
#[derive(Default)]
struct Tally(std::sync::Mutex<std::collections::BTreeMap<String, u64>>);

impl Tally {
    fn add(&self, outcome: String) {
        if let Ok(mut m) = self.0.lock() {
            *m.entry(outcome).or_default() += 1;
        }
    }
    fn show(&self) -> String {
        self.0
            .lock()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        return Ok(());
    }
    let seconds = 30;
    if !std::env::args().any(|a| a == "--bench") {
        // Under `cargo test`: the reviews are what they claim to be.
        for (name, body) in bodies() {
            anyhow::ensure!(
                body.len() <= probity::admission::server::MAX_BODY_BYTES,
                "{name}: {} bytes",
                body.len()
            );
            serde_json::from_slice::<serde_json::Value>(&body)?;
        }
        return Ok(());
    }
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
    let system = env.namespace(&client, "hostile-system").await?;
    let policy: probity::policy::ClusterReadinessPolicy = serde_json::from_value(json!({
        "apiVersion": "probity.dev/v1alpha1", "kind": "ClusterReadinessPolicy",
        "metadata": {"name": "hostile"},
        "spec": {"mode": "Enforce", "images": {"pin": "Admission", "allowedRegistries": ["registry.example"]}},
    }))?;
    Api::<probity::policy::ClusterReadinessPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await?;

    let dir = tempfile::tempdir()?;
    let (ca, cert, key) = certificate(dir.path())?;
    let [port, admin] = probity_testenv::free_ports()?;
    let binary = std::env::var_os("PROBITY_BENCH_OPERATOR").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_probity")),
        PathBuf::from,
    );
    let child = Process::spawn(
        "operator",
        Command::new(&binary)
            .arg("operator")
            .args(["--admin-addr", &format!("127.0.0.1:{admin}")])
            .args(["--lease-namespace", &system])
            .args(["--webhook-addr", &format!("127.0.0.1:{port}")])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .args(["--vap-backstop", "false"])
            .env("KUBECONFIG", env.kubeconfig()),
        None,
    )?;
    let pid = child.pid();
    env.adopt(pid)?;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca)?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let bodies: Arc<Vec<(&'static str, Vec<u8>)>> = Arc::new(bodies());
    let Some(ordinary) = bodies
        .iter()
        .find(|(n, _)| *n == "ordinary")
        .map(|(_, b)| b.clone())
    else {
        anyhow::bail!("no ordinary review");
    };

    // Ready when an ordinary review is answered.
    let deadline = Instant::now() + Duration::from_secs(60);
    while post(&connector, port, "/validate", &ordinary).await.ok() != Some(200) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the webhook did not come up in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (idle_hwm, idle_rss) = memory(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let tallies: Arc<Vec<Tally>> = Arc::new((0..bodies.len()).map(|_| Tally::default()).collect());
    let next = Arc::new(AtomicU64::new(0));
    let hostile: Vec<usize> = (0..bodies.len())
        .filter(|&i| bodies[i].0 != "ordinary")
        .collect();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (stop, tallies, next, bodies, connector, hostile) = (
            Arc::clone(&stop),
            Arc::clone(&tallies),
            Arc::clone(&next),
            Arc::clone(&bodies),
            connector.clone(),
            hostile.clone(),
        );
        workers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(1, Ordering::Relaxed) as usize;
                let which = hostile[n % hostile.len()];
                let path = if (n / hostile.len()).is_multiple_of(2) {
                    "/validate"
                } else {
                    "/mutate"
                };
                let outcome = match post(&connector, port, path, &bodies[which].1).await {
                    Ok(status) => status.to_string(),
                    Err(_) => "no answer".to_owned(),
                };
                tallies[which].add(outcome);
            }
        }));
    }
    let ordinary_index = bodies.len() - 1;
    let mut latencies = Vec::new();
    let mut peak_rss = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(seconds) {
        let t = Instant::now();
        let outcome = match post(&connector, port, "/validate", &ordinary).await {
            Ok(status) => status.to_string(),
            Err(_) => "no answer".to_owned(),
        };
        latencies.push(t.elapsed());
        tallies[ordinary_index].add(outcome);
        peak_rss = peak_rss.max(memory(pid).1);
        tokio::time::sleep(ORDINARY_EVERY.saturating_sub(t.elapsed())).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.await;
    }
    let (hwm, _) = memory(pid);
    latencies.sort();

    println!(
        "webhook under hostile load: {CONCURRENCY} at a time for {seconds} s, straight to the port"
    );
    println!("operator: {}", binary.display());
    println!("| review | answers (HTTP status: count) |\n|---|---|");
    for (i, (name, body)) in bodies.iter().enumerate() {
        println!(
            "| {name} ({} KiB) | {} |",
            body.len() / 1024,
            tallies[i].show()
        );
    }
    println!(
        "\nordinary reviews: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 50.0).as_secs_f64() * 1e3,
        percentile(&latencies, 99.0).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    println!(
        "operator memory: idle RSS {:.1} MiB (peak so far {:.1} MiB); under load peak RSS sampled {:.1} MiB, VmHWM {:.1} MiB",
        idle_rss as f64 / 1024.0,
        idle_hwm as f64 / 1024.0,
        peak_rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
    );
    drop(child);
    tokio::task::spawn_blocking(move || drop(env)).await?;
    Ok(())
}
