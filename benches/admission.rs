//! Admission cost, two ways, in one run:
//!
//! 1. In-process: decode an AdmissionReview (a Deployment with three
//!    containers), evaluate three policies, encode the response. Time per
//!    review, p50 and p99, for the typed one-pass decoding the webhooks use
//!    and, interleaved in the same run, for a JSON tree built first.
//!    `--in-process` stops after this part.
//! 2. End to end through a real kube-apiserver: p50/p99 latency of
//!    Deployment creates in three namespaces taking turns (create by create
//!    one at a time, round by round at 10 and 50 concurrent clients): one
//!    probity's webhook covers, one a null webhook covers (it reads the
//!    review's uid and admits, over the same TLS and HTTP/2 libraries, in a
//!    process of its own: the floor any webhook pays on this machine), and
//!    one no webhook covers. One at a time also as dry runs (admitted,
//!    never stored: no etcd write, no watch event). Where the added time
//!    goes, per phase: the API server's own timing of each webhook's call
//!    (`apiserver_admission_webhook_admission_duration_seconds`), the same
//!    reviews sent straight to the null webhook and to the operator, the
//!    operator's time from request to answer
//!    (`probity_admission_duration_seconds`), the TLS connections the API
//!    server opened (`probity_webhook_connections_total`), and CPU per
//!    create and per review from `/proc`.
//!
//! `PROBITY_BENCH_OPERATOR=<binary>` runs another build of the operator
//! (an earlier commit's) in the same conditions.
//!
//! `make bench-admission`. Under `cargo test` (no `--bench`) a short smoke
//! run checks the measurement, not speed.

#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "benchmarks measure wall time"
)]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use probity::admission::{review, validate};
use probity::policy::Policy;
use probity::policy::{Mode, ReadinessPolicySpec};
use probity_testenv::{Options, Process, TestEnv};
use serde_json::{Value, json};

const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn deployment(name: &str) -> Value {
    let container = |n: &str, port: u16| {
        json!({
            "name": n, "image": format!("registry.example/{n}:1.0@{DIGEST}"),
            "ports": [{"containerPort": port}],
            "readinessProbe": {"httpGet": {"path": "/readyz", "port": port}},
            "livenessProbe": {"httpGet": {"path": "/livez", "port": port}, "failureThreshold": 6},
        })
    };
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                container("api", 8080), container("worker", 8081), container("proxy", 8082),
            ]}},
        },
    })
}

/// The AdmissionReview the API server sends for a create of
/// [`deployment`] `name` in `namespace`.
fn review_body(namespace: &str, name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "bench", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "namespace": namespace, "operation": "CREATE", "userInfo": {"username": "bench"},
            "object": deployment(name), "dryRun": false,
        },
    }))
    .unwrap_or_default()
}

fn policies() -> Vec<Policy> {
    let enforce = ReadinessPolicySpec {
        mode: Mode::Enforce,
        ..ReadinessPolicySpec::default()
    };
    let mut registries = ReadinessPolicySpec::default();
    registries.images.allowed_registries = vec!["registry.example".to_owned()];
    let mut paths = ReadinessPolicySpec::default();
    paths.probes.readiness.path = Some("/readyz".to_owned());
    paths.probes.liveness.path = Some("/livez".to_owned());
    [enforce, registries, paths]
        .into_iter()
        .enumerate()
        .map(|(i, spec)| Policy {
            name: format!("ClusterReadinessPolicy/p{i}"),
            spec,
            namespace: None,
            namespace_selector: None,
            cluster: true,
        })
        .collect()
}

/// p50, p99 and mean of `sorted`.
fn summary(sorted: &[Duration]) -> anyhow::Result<(Duration, Duration, Duration)> {
    Ok((
        percentile(sorted, 50.0),
        percentile(sorted, 99.0),
        sorted.iter().sum::<Duration>() / u32::try_from(sorted.len().max(1))?,
    ))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// How a review's body is read.
#[derive(Clone, Copy)]
enum Decoding {
    /// `review::decode`: the object read typed, in one pass, no JSON tree.
    Typed,
    /// The whole body into a `serde_json::Value` tree first, then the same
    /// typed read of the object from the tree (how reviews were read
    /// before).
    Tree,
}

fn decode_tree(body: &[u8]) -> review::Request {
    use serde::Deserialize as _;
    let Ok(tree) = serde_json::from_slice::<Value>(body) else {
        panic!("the sample review parses");
    };
    let r = &tree["request"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    review::Request {
        uid: text(&r["uid"]),
        kind: review::Gvk::deserialize(&r["kind"]).unwrap_or_default(),
        sub_resource: r["subResource"].as_str().map(str::to_owned),
        name: text(&r["name"]),
        namespace: r["namespace"].as_str().map(str::to_owned),
        operation: review::Operation::deserialize(&r["operation"])
            .unwrap_or(review::Operation::Create),
        object: r.get("object").map(probity::policy::Workload::classify),
        old_object: None,
        dry_run: r["dryRun"].as_bool().unwrap_or_default(),
        user_info: review::UserInfo::deserialize(&r["userInfo"]).unwrap_or_default(),
    }
}

/// p50 and p99 per review of each decoding, measured interleaved.
fn in_process(iterations: usize) -> [(Duration, Duration); 2] {
    let body = review_body("shop", "web");
    let policies = policies();
    let labels = BTreeMap::new();
    let mut samples = [
        Vec::with_capacity(iterations),
        Vec::with_capacity(iterations),
    ];
    for i in 0..iterations + iterations / 10 {
        for (slot, decoding) in [Decoding::Typed, Decoding::Tree].into_iter().enumerate() {
            let started = Instant::now();
            let body = std::hint::black_box(&body);
            let request = match decoding {
                Decoding::Typed => match review::decode(body) {
                    Ok(request) => request,
                    Err(e) => panic!("the sample review decodes: {e}"),
                },
                Decoding::Tree => decode_tree(body),
            };
            let response = validate::validate(&request, &policies, &labels, &validate::NoOwners);
            assert!(response.allowed, "{response:?}");
            let bytes = serde_json::to_vec(&response.into_review(&request.uid)).unwrap_or_default();
            std::hint::black_box(bytes);
            // The first tenth warms caches and is not counted.
            if i >= iterations / 10 {
                samples[slot].push(started.elapsed());
            }
        }
    }
    samples.map(|mut s| {
        s.sort();
        (percentile(&s, 50.0), percentile(&s, 99.0))
    })
}

async fn creates(
    api: &Api<Deployment>,
    prefix: &str,
    n: usize,
    concurrency: usize,
    dry_run: bool,
) -> anyhow::Result<Vec<Duration>> {
    let results: Vec<anyhow::Result<Duration>> = futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let name = format!("{prefix}-{i}");
            async move {
                let d: Deployment = serde_json::from_value(deployment(&name))?;
                let params = PostParams {
                    dry_run,
                    ..PostParams::default()
                };
                let started = Instant::now();
                api.create(&params, &d).await?;
                Ok(started.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut samples = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    samples.sort();
    Ok(samples)
}

/// One concurrency level: p50/p99 with probity's webhook, with the null
/// webhook and without any, and the phases of the reviews made meanwhile.
struct Level {
    concurrency: usize,
    /// Creates made with `dryRun`: admitted, never stored.
    dry_run: bool,
    with: (Duration, Duration),
    null: (Duration, Duration),
    without: (Duration, Duration),
    phases: Phases,
    /// p50/p99/mean of reviews sent straight to the operator.
    direct: (Duration, Duration, Duration),
    /// The same, straight to the null webhook.
    direct_null: (Duration, Duration, Duration),
    /// Creates per namespace.
    samples: usize,
    /// CPU per create (per review for the operator).
    cpu_per_create: Cpu,
}

impl Level {
    fn label(&self) -> String {
        if self.dry_run {
            format!("{}, dry run", self.concurrency)
        } else {
            self.concurrency.to_string()
        }
    }
}

/// Counters read from both sides' metrics; the difference of two readings
/// covers the reviews made between them.
#[derive(Debug, Clone, Default)]
struct Phases {
    /// The API server's time calling the webhook, summed, and the calls.
    apiserver_sum: f64,
    apiserver_count: f64,
    /// The same for the null webhook.
    null_sum: f64,
    null_count: f64,
    /// The operator's time from request to answer, summed, and the reviews.
    operator_sum: f64,
    operator_count: f64,
    /// TLS connections the operator accepted, by protocol.
    h2: f64,
    http1: f64,
    /// The operator's histogram of request-to-answer times: cumulative
    /// count per upper bound, in seconds.
    operator_buckets: Vec<(f64, f64)>,
}

impl Phases {
    /// Percentile `p` of the operator's request-to-answer time, linear
    /// within its histogram bucket.
    fn operator_percentile(&self, p: f64) -> Duration {
        let total = self.operator_buckets.last().map_or(0.0, |b| b.1);
        let want = total * p / 100.0;
        let mut lower = (0.0, 0.0);
        for &(le, count) in &self.operator_buckets {
            if count >= want && count > lower.1 {
                let share = (want - lower.1) / (count - lower.1);
                let upper = if le.is_finite() { le } else { lower.0 * 2.0 };
                return Duration::from_secs_f64(lower.0 + share * (upper - lower.0));
            }
            lower = (le, count);
        }
        Duration::ZERO
    }

    /// Every counter of `self` and `o` combined by `op`; a reading without
    /// buckets (the default) counts as zero in each of `o`'s.
    fn combine(self, o: Phases, op: fn(f64, f64) -> f64) -> Phases {
        let buckets = if self.operator_buckets.is_empty() {
            o.operator_buckets
                .iter()
                .map(|b| (b.0, op(0.0, b.1)))
                .collect()
        } else {
            self.operator_buckets
                .iter()
                .zip(&o.operator_buckets)
                .map(|(a, b)| (a.0, op(a.1, b.1)))
                .collect()
        };
        Phases {
            apiserver_sum: op(self.apiserver_sum, o.apiserver_sum),
            apiserver_count: op(self.apiserver_count, o.apiserver_count),
            null_sum: op(self.null_sum, o.null_sum),
            null_count: op(self.null_count, o.null_count),
            operator_sum: op(self.operator_sum, o.operator_sum),
            operator_count: op(self.operator_count, o.operator_count),
            h2: op(self.h2, o.h2),
            http1: op(self.http1, o.http1),
            operator_buckets: buckets,
        }
    }
}

impl std::ops::Add for Phases {
    type Output = Phases;
    fn add(self, o: Phases) -> Phases {
        self.combine(o, |a, b| a + b)
    }
}

impl std::ops::Sub for Phases {
    type Output = Phases;
    fn sub(self, o: Phases) -> Phases {
        self.combine(o, |a, b| a - b)
    }
}

/// Sums the samples of `name` whose labels contain every one of `labels`.
fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// The cumulative buckets of histogram series `name` whose labels contain
/// every one of `labels`, by upper bound.
fn buckets(text: &str, name: &str, labels: &[&str]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{')?;
            if metric != name || !labels.iter().all(|want| rest.contains(want)) {
                return None;
            }
            let le = rest.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, value.parse().ok()?))
        })
        .collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// Both sides' counters now. The API server's metrics are read only when
/// `client` is given: producing them costs it tens of milliseconds of CPU,
/// too much to do between every round.
async fn phases(client: Option<&Client>, admin_port: u16) -> anyhow::Result<Phases> {
    let apiserver = match client {
        Some(client) => {
            client
                .request_text(http::Request::get("/metrics").body(Vec::new())?)
                .await?
        }
        None => String::new(),
    };
    let operator = http_get(admin_port, "/metrics").await?;
    let webhook = ["name=\"validate.probity.dev\""];
    let null = format!("name=\"{}\"", null_webhook::NAME);
    let null = [null.as_str()];
    let validate = ["webhook=\"validate\""];
    Ok(Phases {
        apiserver_sum: metric(
            &apiserver,
            "apiserver_admission_webhook_admission_duration_seconds_sum",
            &webhook,
        ),
        apiserver_count: metric(
            &apiserver,
            "apiserver_admission_webhook_admission_duration_seconds_count",
            &webhook,
        ),
        null_sum: metric(
            &apiserver,
            "apiserver_admission_webhook_admission_duration_seconds_sum",
            &null,
        ),
        null_count: metric(
            &apiserver,
            "apiserver_admission_webhook_admission_duration_seconds_count",
            &null,
        ),
        operator_sum: metric(
            &operator,
            "probity_admission_duration_seconds_sum",
            &validate,
        ),
        operator_count: metric(
            &operator,
            "probity_admission_duration_seconds_count",
            &validate,
        ),
        h2: metric(
            &operator,
            "probity_webhook_connections_total",
            &["protocol=\"h2\""],
        ),
        http1: metric(
            &operator,
            "probity_webhook_connections_total",
            &["protocol=\"http/1.1\""],
        ),
        operator_buckets: buckets(
            &operator,
            "probity_admission_duration_seconds_bucket",
            &validate,
        ),
    })
}

/// The body of a plain HTTP GET on loopback.
async fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await??;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}

/// Reviews sent straight to the operator over one HTTP/2 TLS connection,
/// as the API server sends them: TLS, HTTP/2 and the operator's work
/// without the API server's.
struct Direct {
    http: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        http_body_util::Full<hyper::body::Bytes>,
    >,
    uri: http::Uri,
    body: hyper::body::Bytes,
}

impl Direct {
    /// A client of the webhook on `port` trusting the CA certificates in
    /// `ca` (PEM).
    async fn new(ca: &[u8], port: u16) -> anyhow::Result<Self> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca) {
            roots.add(cert?)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http2()
            .wrap_connector(tcp);
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build(connector);
        let body = review_body("bench-webhook", "direct");
        let direct = Self {
            http,
            uri: format!("https://127.0.0.1:{port}/validate").parse()?,
            body: body.into(),
        };
        // Warm the connection.
        direct.reviews(1, 50).await?;
        Ok(direct)
    }

    /// The round-trip times of `n` reviews, `concurrency` at a time.
    async fn reviews(&self, concurrency: usize, n: usize) -> anyhow::Result<Vec<Duration>> {
        use http_body_util::BodyExt as _;
        let results: Vec<anyhow::Result<Duration>> = futures::stream::iter(0..n)
            .map(|_| async {
                let request = http::Request::post(self.uri.clone())
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(http_body_util::Full::new(self.body.clone()))?;
                let started = Instant::now();
                let response = self.http.request(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                let took = started.elapsed();
                anyhow::ensure!(
                    status == http::StatusCode::OK
                        && body.windows(14).any(|w| w == b"\"allowed\":true"),
                    "the direct review was not admitted: {status} {}",
                    String::from_utf8_lossy(&body)
                );
                Ok(took)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        results.into_iter().collect()
    }
}

/// Where a create goes: a namespace no webhook covers, one probity's
/// webhook covers, one the null webhook covers.
#[derive(Clone, Copy)]
enum Target {
    Plain = 0,
    Probity = 1,
    Null = 2,
}

async fn end_to_end(env: &TestEnv, rounds: usize, per_round: usize) -> anyhow::Result<Vec<Level>> {
    let client: Client = env.client()?;
    probity::controller::install_crds(&client, Duration::from_secs(60)).await?;
    let system = env.namespace(&client, "bench-system").await?;
    let covered = env.namespace(&client, "bench-webhook").await?;
    let plain = env.namespace(&client, "bench-plain").await?;
    let nulled = env.namespace(&client, "bench-null").await?;
    let policy: probity::policy::ClusterReadinessPolicy = serde_json::from_value(json!({
        "apiVersion": "probity.dev/v1alpha1", "kind": "ClusterReadinessPolicy",
        "metadata": {"name": "bench"}, "spec": {"mode": "Enforce"},
    }))?;
    Api::<probity::policy::ClusterReadinessPolicy>::all(client.clone())
        .create(&PostParams::default(), &policy)
        .await?;
    let [port, admin_port, null_port] = probity_testenv::free_ports()?;
    let (null_server, null_ca) = null_webhook::start(env, null_port)?;
    let webhook = |name: &str, url: String, namespace: &str| {
        json!({
            "name": name,
            "clientConfig": {"url": url},
            "rules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                       "resources": ["deployments"]}],
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "failurePolicy": "Fail", "sideEffects": "None",
            "admissionReviewVersions": ["v1"], "timeoutSeconds": 5, "matchPolicy": "Equivalent",
        })
    };
    let mut floor = webhook(
        null_webhook::NAME,
        format!("https://127.0.0.1:{null_port}/validate"),
        &nulled,
    );
    floor["clientConfig"]["caBundle"] =
        serde_json::to_value(k8s_openapi::ByteString(null_ca.clone()))?;
    // Two configurations: the operator writes its CA into every webhook of
    // its own.
    let webhooks =
        Api::<k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration>::all(
            client.clone(),
        );
    for (name, hook) in [
        (
            "probity-bench",
            webhook(
                "validate.probity.dev",
                format!("https://127.0.0.1:{port}/validate"),
                &covered,
            ),
        ),
        ("probity-bench-null", floor),
    ] {
        let config = json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name}, "webhooks": [hook],
        });
        webhooks
            .patch(
                name,
                &PatchParams::apply("bench").force(),
                &Patch::Apply(&config),
            )
            .await?;
    }
    // Another build to compare with, in the same run conditions.
    let binary = std::env::var_os("PROBITY_BENCH_OPERATOR")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_probity").into());
    let mut command = Command::new(binary);
    command
        .args([
            "operator",
            "--admin-addr",
            &format!("127.0.0.1:{admin_port}"),
            "--lease-namespace",
            &system,
            "--webhook-addr",
            &format!("127.0.0.1:{port}"),
            "--tls-ip-address",
            "127.0.0.1",
            "--validating-webhook-configuration",
            "probity-bench",
            "--mutating-webhook-configuration",
            "",
            "--vap-backstop",
            "false",
        ])
        .env("KUBECONFIG", env.kubeconfig());
    let child = Process::spawn("operator", &mut command, None)?;
    env.adopt(child.pid())?;

    let apis =
        [&plain, &covered, &nulled].map(|ns| Api::<Deployment>::namespaced(client.clone(), ns));
    let [_, with, null] = &apis;
    // Ready when a violating create is denied by probity's webhook and the
    // null webhook admits.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut bad = deployment("probe");
    bad["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:latest");
    let bad: Deployment = serde_json::from_value(bad)?;
    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    loop {
        let probity = with.create(&dry, &bad).await;
        let floor = null.create(&dry, &bad).await;
        let denied = matches!(&probity, Err(kube::Error::Api(s)) if s.code == 403);
        if denied && floor.is_ok() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the webhooks did not come up in 60 s: probity's answered {:?}, the null one {:?}",
            probity.err(),
            floor.err()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Warm every path, then take turns so drift affects all alike.
    for api in &apis {
        creates(api, "warm", 50, 50, false).await?;
    }
    let control_plane = env.pids();
    let operator = child.pid();
    let cpu_of = |pids: &[u32]| pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
    let operator_ca = Api::<
        k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration,
    >::all(client.clone())
    .get("probity-bench")
    .await?
    .webhooks
    .unwrap_or_default()
    .into_iter()
    .find_map(|w| w.client_config.ca_bundle)
    .ok_or_else(|| anyhow::anyhow!("the operator published no caBundle"))?;
    let direct = Direct::new(&operator_ca.0, port).await?;
    let direct_null = Direct::new(&null_ca, null_port).await?;
    let mut out = Vec::new();
    for (concurrency, dry_run) in [(1, false), (1, true), (10, false), (50, false)] {
        let mut latencies: [Vec<Duration>; 3] = Default::default();
        let mut phases_with = Phases::default();
        let mut cpu = Cpu::default();
        let mut straight = Vec::new();
        let mut straight_null = Vec::new();
        // The namespaces take turns so they see the same moments of this
        // machine: one at a time create by create, at 10 and 50 at once
        // round by round; which goes first rotates.
        // The tail one at a time is the target: thrice the samples there.
        let rounds = if concurrency == 1 { rounds * 3 } else { rounds };
        let apiserver_before = phases(Some(&client), admin_port).await?;
        for round in 0..rounds {
            let before = phases(None, admin_port).await?;
            let op = cpu_of(&[operator]);
            let floor = cpu_of(&[null_server.pid()]);
            let steps = if concurrency == 1 { per_round } else { 1 };
            let n = if concurrency == 1 { 1 } else { per_round };
            for step in 0..steps {
                let prefix = format!("c{concurrency}-{dry_run}-r{round}-{step}");
                let turn = round + step;
                let order = [Target::Plain, Target::Probity, Target::Null];
                for k in 0..order.len() {
                    let target = order[(turn + k) % order.len()] as usize;
                    let started = cpu_of(&control_plane);
                    latencies[target]
                        .extend(creates(&apis[target], &prefix, n, concurrency, dry_run).await?);
                    cpu.control_plane[target] += cpu_of(&control_plane) - started;
                }
            }
            cpu.operator += cpu_of(&[operator]) - op;
            cpu.null_webhook += cpu_of(&[null_server.pid()]) - floor;
            phases_with = phases_with + (phases(None, admin_port).await? - before);
            // As many reviews without the API server, between the rounds.
            straight.extend(direct.reviews(concurrency, steps * n).await?);
            straight_null.extend(direct_null.reviews(concurrency, steps * n).await?);
        }
        let apiserver = phases(Some(&client), admin_port).await? - apiserver_before;
        phases_with.apiserver_sum = apiserver.apiserver_sum;
        phases_with.apiserver_count = apiserver.apiserver_count;
        phases_with.null_sum = apiserver.null_sum;
        phases_with.null_count = apiserver.null_count;
        for l in &mut latencies {
            l.sort();
        }
        straight.sort();
        straight_null.sort();
        let p50_p99 = |s: &[Duration]| (percentile(s, 50.0), percentile(s, 99.0));
        let samples = latencies[Target::Probity as usize].len();
        let creates = latencies.iter().map(Vec::len).sum::<usize>();
        let nulls = latencies[Target::Null as usize].len();
        out.push(Level {
            concurrency,
            dry_run,
            with: p50_p99(&latencies[Target::Probity as usize]),
            null: p50_p99(&latencies[Target::Null as usize]),
            without: p50_p99(&latencies[Target::Plain as usize]),
            phases: phases_with,
            direct: summary(&straight)?,
            direct_null: summary(&straight_null)?,
            samples,
            cpu_per_create: Cpu {
                control_plane: [0, 1, 2]
                    .map(|t| cpu.control_plane[t] / latencies[t].len().max(1) as f64),
                operator: cpu.operator / creates.max(1) as f64,
                operator_per_review: cpu.operator / (samples + straight.len()).max(1) as f64,
                null_webhook: cpu.null_webhook / nulls.max(1) as f64,
            },
        });
    }
    Ok(out)
}

/// The floor any webhook pays here: a server that reads a review's uid and
/// admits, over the same transport as the operator's (TLS with rustls,
/// HTTP/2 with hyper, two tokio workers), in a process of its own. The
/// bench runs itself as this server with `--null-webhook <port> <dir>`.
mod null_webhook {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use http_body_util::BodyExt as _;
    use hyper::body::Bytes;
    use probity_testenv::{Process, TestEnv};

    /// Its name in the webhook configuration (and the API server's metrics).
    pub(crate) const NAME: &str = "null.bench.probity.dev";

    /// Writes a certificate for 127.0.0.1 into `env`'s directory and
    /// starts the server on `port`; returns it and the certificate of the
    /// CA that signed it, PEM, for the caBundle.
    pub(crate) fn start(env: &TestEnv, port: u16) -> anyhow::Result<(Process, Vec<u8>)> {
        let dir = env.dir().join("null-webhook");
        std::fs::create_dir_all(&dir)?;
        // A CA, for the caBundle, and a server certificate for 127.0.0.1 it
        // signs (Go trusts no self-signed leaf).
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca = rcgen::CertificateParams::default();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_pem = ca.self_signed(&ca_key)?.pem();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate()?;
        let mut leaf = rcgen::CertificateParams::default();
        leaf.subject_alt_names = vec![rcgen::SanType::IpAddress([127, 0, 0, 1].into())];
        std::fs::write(dir.join("tls.crt"), leaf.signed_by(&key, &issuer)?.pem())?;
        std::fs::write(dir.join("tls.key"), key.serialize_pem())?;
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command
            .arg("--null-webhook")
            .arg(port.to_string())
            .arg(&dir);
        let child = Process::spawn("null webhook", &mut command, Some(&dir.join("log")))?;
        env.adopt(child.pid())?;
        Ok((child, ca_pem.into_bytes()))
    }

    /// Serves until the bench that started it is gone.
    pub(crate) async fn serve(port: u16, dir: &Path) -> anyhow::Result<()> {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs =
            CertificateDer::pem_file_iter(dir.join("tls.crt"))?.collect::<Result<Vec<_>, _>>()?;
        let key = PrivateKeyDer::from_pem_file(dir.join("tls.key"))?;
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let parent = std::os::unix::process::parent_id();
        let orphaned = async move {
            while std::os::unix::process::parent_id() == parent {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        tokio::pin!(orphaned);
        loop {
            let (tcp, _) = tokio::select! {
                accepted = listener.accept() => accepted?,
                () = &mut orphaned => return Ok(()),
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let builder = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                );
                let _ = builder
                    .serve_connection(
                        hyper_util::rt::TokioIo::new(tls),
                        hyper::service::service_fn(answer),
                    )
                    .await;
            });
        }
    }

    /// Admits: the review's uid back, and `allowed`.
    async fn answer(
        request: http::Request<hyper::body::Incoming>,
    ) -> anyhow::Result<http::Response<http_body_util::Full<Bytes>>> {
        #[derive(serde::Deserialize)]
        struct Review {
            request: Request,
        }
        #[derive(serde::Deserialize)]
        struct Request {
            uid: String,
        }
        let body = request.into_body().collect().await?.to_bytes();
        let review: Review = serde_json::from_slice(&body)?;
        let answer = serde_json::to_vec(&serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": review.request.uid, "allowed": true},
        }))?;
        Ok(http::Response::builder()
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(answer.into())?)
    }
}

/// CPU seconds: etcd and the API server per [`Target`], the operator and
/// the null webhook.
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    control_plane: [f64; 3],
    operator: f64,
    /// The operator's CPU per review it answered (through the API server
    /// and straight), watch events and all.
    operator_per_review: f64,
    null_webhook: f64,
}

/// User + system CPU time of `pid` so far, in seconds (0 when unreadable).
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces), from field 3:
    // utime and stime are fields 14 and 15, in USER_HZ (100 on Linux).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return Ok(());
    }
    if let [_, flag, port, dir] = args.as_slice()
        && flag == "--null-webhook"
    {
        // Two workers, as the operator's admission runtime.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        return runtime.block_on(null_webhook::serve(
            port.parse()?,
            std::path::Path::new(dir),
        ));
    }
    tokio::runtime::Runtime::new()?.block_on(bench())
}

async fn bench() -> anyhow::Result<()> {
    let full = std::env::args().any(|a| a == "--bench");
    let [(p50, p99), (tree50, tree99)] = in_process(if full { 50_000 } else { 500 });
    println!("admission, in-process: decode + 3 policies + encode, Deployment with 3 containers");
    println!("| decoding | p50 | p99 |\n|---|---:|---:|");
    println!(
        "| typed, one pass | {:.1} µs | {:.1} µs |",
        us(p50),
        us(p99)
    );
    println!(
        "| JSON tree, then typed | {:.1} µs | {:.1} µs |",
        us(tree50),
        us(tree99)
    );
    println!(
        "| ratio typed / tree | {:.2}x | {:.2}x |",
        us(p50) / us(tree50),
        us(p99) / us(tree99)
    );
    if !full || std::env::args().any(|a| a == "--in-process") {
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
    let results = end_to_end(&env, 10, 100).await?;
    println!(
        "\nadmission, end to end: Deployment creates through kube-apiserver, the three namespaces taking turns: \
         no webhook, probity's, and a null webhook (reads the uid, admits; same transport, a process of its own)"
    );
    println!(
        "| concurrency | creates each | without webhook p50 / p99 | null webhook: added p50 / p99 | probity webhook p50 / p99 | probity: added p50 / p99 | probity over null p50 / p99 |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for l in &results {
        let ((w50, w99), (n50, n99), (b50, b99)) = (l.with, l.null, l.without);
        println!(
            "| {} | {} | {:.2} / {:.2} ms | {:+.2} / {:+.2} ms | {:.2} / {:.2} ms | {:+.2} / {:+.2} ms | {:+.2} / {:+.2} ms |",
            l.label(),
            l.samples,
            ms(b50),
            ms(b99),
            ms(n50) - ms(b50),
            ms(n99) - ms(b99),
            ms(w50),
            ms(w99),
            ms(w50) - ms(b50),
            ms(w99) - ms(b99),
            ms(w50) - ms(n50),
            ms(w99) - ms(n99),
        );
    }
    println!(
        "\nwhere the added time goes: the API server's timing of the call (mean), reviews sent \
         straight to the null webhook and to the operator over HTTP/2 TLS between the rounds (as many, as many at once), \
         and the operator's request-to-answer time (its histogram)"
    );
    println!(
        "| concurrency | API server's call, null webhook, mean | API server's webhook call, mean | straight to the null webhook, mean / p50 / p99 | straight to the operator, mean / p50 / p99 | operator, request to answer, mean / p50 / p99 | API server's share of the call (difference of means) | TLS connections opened (h2 / http/1.1) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for l in &results {
        let p = &l.phases;
        let null_call = p.null_sum / p.null_count.max(1.0) * 1e3;
        let call = p.apiserver_sum / p.apiserver_count.max(1.0) * 1e3;
        let served = p.operator_sum / p.operator_count.max(1.0) * 1e3;
        println!(
            "| {} | {null_call:.3} ms | {call:.3} ms ({} calls) | {:.3} / {:.3} / {:.3} ms | {:.3} / {:.3} / {:.3} ms | {served:.3} / {:.3} / {:.3} ms ({} reviews) | {:.3} ms | {} / {} |",
            l.label(),
            p.apiserver_count,
            ms(l.direct_null.2),
            ms(l.direct_null.0),
            ms(l.direct_null.1),
            ms(l.direct.2),
            ms(l.direct.0),
            ms(l.direct.1),
            ms(p.operator_percentile(50.0)),
            ms(p.operator_percentile(99.0)),
            p.operator_count,
            call - ms(l.direct.2),
            p.h2,
            p.http1
        );
    }
    println!(
        "\nCPU: etcd + kube-apiserver per create in each namespace; the operator per create in any \
         (it watches them all) and per review it answered; the null webhook per review"
    );
    println!(
        "| concurrency | control plane without webhook | added by the null webhook | added by probity's | operator per create / per review | null webhook per review |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for l in &results {
        let [plain, probity, null] = l.cpu_per_create.control_plane.map(|c| c * 1e3);
        println!(
            "| {} | {plain:.3} ms | {:+.3} ms | {:+.3} ms | {:.3} / {:.3} ms | {:.3} ms |",
            l.label(),
            null - plain,
            probity - plain,
            l.cpu_per_create.operator * 1e3,
            l.cpu_per_create.operator_per_review * 1e3,
            l.cpu_per_create.null_webhook * 1e3
        );
    }
    tokio::task::spawn_blocking(move || drop(env)).await?;
    Ok(())
}
