//! Lint throughput of `probity lint` against kube-score and kube-linter on
//! one generated corpus, in one run, as ratios. The corpus is written both
//! as one file and as a directory of ten (kube-linter finds no objects in
//! one 10 MiB file); each peer is compared with probity on the same input.
//!
//! `cargo bench --bench lint_throughput` (or `make bench-lint`, which also
//! installs the peers with `go install`). Under `cargo test` it runs a small
//! smoke version that checks the corpus and the measurement.
//!
//! Environment: `PROBITY_BENCH_DOCS` (workload documents, default 10000),
//! `PROBITY_BENCH_RUNS` (measured runs per tool, default 5),
//! `PROBITY_BENCH_TOOLS` (directory holding `kube-score`, `kube-linter`).

#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "benchmarks measure wall time"
)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const DIGEST: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// One measured run of one tool.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: f64,
    cpu: f64,
    max_rss_kib: i64,
    code: i32,
    out_lines: usize,
    /// It said it found no objects to lint (kube-linter's way of passing a
    /// file it could not read).
    found_nothing: bool,
}

/// The corpus as one file or as a directory of files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Input {
    File,
    Dir,
}

impl Input {
    fn label(self) -> &'static str {
        match self {
            Input::File => "1 file",
            Input::Dir => "10 files",
        }
    }
}

/// Files the directory form of the corpus is split into.
const FILES: usize = 10;

fn main() {
    if std::env::var_os("PROBITY_BENCH_MEASURE").is_some() {
        measure_child();
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let env_num = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (docs, runs) = if full {
        (
            env_num("PROBITY_BENCH_DOCS", 10_000),
            env_num("PROBITY_BENCH_RUNS", 5),
        )
    } else {
        (50, 1)
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-lint");
    std::fs::create_dir_all(&dir).expect("bench dir");
    let corpus = dir.join(format!("corpus-{docs}.yaml"));
    let split = dir.join(format!("corpus-{docs}"));
    let (bytes, services) = generate(&corpus, &split, docs);
    let documents = docs + services;
    eprintln!(
        "corpus: {docs} workload documents + {services} Services, {:.1} MiB ({}, and as {FILES} files in {})",
        bytes as f64 / 1048576.0,
        corpus.display(),
        split.display()
    );
    let input_path = |input: Input| match input {
        Input::File => path(&corpus),
        Input::Dir => path(&split),
    };

    let probity = PathBuf::from(env!("CARGO_BIN_EXE_probity"));
    let mut tools: Vec<(String, Input, Vec<String>, PathBuf)> = [Input::File, Input::Dir]
        .into_iter()
        .map(|input| {
            let args = vec!["lint".into(), "-q".into(), input_path(input)];
            ("probity".to_owned(), input, args, probity.clone())
        })
        .collect();
    if full {
        let tools_dir = std::env::var_os("PROBITY_BENCH_TOOLS").map(PathBuf::from);
        let find = |name: &str| {
            tools_dir
                .iter()
                .map(|d| d.join(name))
                .find(|p| p.is_file())
                .or_else(|| which(name))
        };
        match find("kube-score") {
            Some(bin) => tools.push((
                "kube-score".to_owned(),
                Input::File,
                kube_score_args(&bin, &corpus),
                bin,
            )),
            None => eprintln!("kube-score: not installed (make bench-lint installs it)"),
        }
        match find("kube-linter") {
            Some(bin) => {
                let config = dir.join("kube-linter.yaml");
                std::fs::write(
                    &config,
                    "checks:\n  doNotAutoAddDefaults: true\n  include: [latest-tag, no-readiness-probe, no-liveness-probe]\n",
                )
                .expect("kube-linter config");
                let args = vec![
                    "lint".into(),
                    "--config".into(),
                    path(&config),
                    input_path(Input::Dir),
                ];
                tools.push(("kube-linter".to_owned(), Input::Dir, args, bin));
            }
            None => eprintln!(
                "kube-linter: not in PROBITY_BENCH_TOOLS or PATH (build it from its source and put it there to compare)"
            ),
        }
    }

    let mut rows = Vec::new();
    for (name, input, args, bin) in &tools {
        let warmup = measure(bin, args);
        assert!(
            warmup.out_lines > 0 && !warmup.found_nothing,
            "{name} found nothing on {} of a corpus full of violations (exit {}): the comparison would be meaningless",
            input.label(),
            warmup.code
        );
        let mut samples: Vec<Sample> = (0..runs).map(|_| measure(bin, args)).collect();
        samples.sort_by(|a, b| a.wall.total_cmp(&b.wall));
        let median = samples[samples.len() / 2];
        let peak = samples.iter().map(|s| s.max_rss_kib).max().unwrap_or(0);
        eprintln!(
            "{name} ({}): median {:.3}s wall, {:.3}s cpu, peak {:.1} MiB, {} output lines",
            input.label(),
            median.wall,
            median.cpu,
            peak as f64 / 1024.0,
            median.out_lines
        );
        rows.push((name.clone(), *input, median, peak));
    }

    if !full {
        for (_, input, sample, _) in &rows {
            assert_eq!(
                sample.code,
                1,
                "probity lint exits 1 on violations ({})",
                input.label()
            );
        }
        return;
    }
    let baseline = |input: Input| {
        rows.iter()
            .find(|(name, i, _, _)| name == "probity" && *i == input)
            .map(|(_, _, s, peak)| (s.wall, *peak as f64))
            .unwrap_or((f64::NAN, f64::NAN))
    };
    let mib = bytes as f64 / 1048576.0;
    let mut table = String::new();
    let _ = writeln!(
        table,
        "| tool | input | median wall | CPU | docs/s | MiB/s | peak RSS | time vs probity | memory vs probity |"
    );
    let _ = writeln!(table, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, input, median, peak) in &rows {
        let (base_wall, base_rss) = baseline(*input);
        let _ = writeln!(
            table,
            "| {name} | {} | {:.3} s | {:.3} s | {:.0} | {:.1} | {:.1} MiB | {:.1}x | {:.1}x |",
            input.label(),
            median.wall,
            median.cpu,
            documents as f64 / median.wall,
            mib / median.wall,
            *peak as f64 / 1024.0,
            median.wall / base_wall,
            *peak as f64 / base_rss
        );
    }
    println!("{table}");
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.is_file())
}

/// kube-score restricted to its checks that match probity's defaults: the
/// image tag and the probes.
fn kube_score_args(bin: &Path, corpus: &Path) -> Vec<String> {
    const KEEP: [&str; 3] = ["container-image-tag", "pod-probes", "pod-probes-identical"];
    let list = Command::new(bin)
        .arg("list")
        .output()
        .expect("kube-score list");
    let mut args = vec![
        "score".to_owned(),
        "--output-format".to_owned(),
        "ci".to_owned(),
    ];
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let test = line.split(',').next().unwrap_or_default().trim();
        if !test.is_empty() && !KEEP.contains(&test) && test != "Test" {
            args.push("--ignore-test".to_owned());
            args.push(test.to_owned());
        }
    }
    args.push(path(corpus));
    args
}

/// Runs `bin args` in a fresh child of a fresh process, so that the
/// child's resource usage is exactly that one run's.
fn measure(bin: &Path, args: &[String]) -> Sample {
    let out = Command::new(std::env::current_exe().expect("current exe"))
        .env("PROBITY_BENCH_MEASURE", "1")
        .arg(bin)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("measure");
    let text = String::from_utf8_lossy(&out.stdout);
    let f: Vec<f64> = text
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    assert_eq!(f.len(), 6, "measurement output: {text:?}");
    Sample {
        wall: f[0],
        cpu: f[1],
        max_rss_kib: f[2] as i64,
        code: f[3] as i32,
        out_lines: f[4] as usize,
        found_nothing: f[5] != 0.0,
    }
}

fn measure_child() {
    use nix::sys::resource::{UsageWho, getrusage};
    let mut argv = std::env::args().skip(1);
    let bin = argv.next().expect("tool");
    let start = Instant::now();
    let out = Command::new(&bin).args(argv).output().expect("run tool");
    let wall = start.elapsed().as_secs_f64();
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let cpu = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    let lines = out.stdout.iter().filter(|&&b| b == b'\n').count();
    let said = |text: &[u8]| String::from_utf8_lossy(text).contains("no valid objects found");
    let found_nothing = said(&out.stdout) || said(&out.stderr);
    println!(
        "{wall} {} {} {} {lines} {}",
        cpu(usage.user_time()) + cpu(usage.system_time()),
        usage.max_rss(),
        out.status.code().unwrap_or(-1),
        u8::from(found_nothing)
    );
}

/// Writes `docs` workload documents (a deterministic mix of kinds, images
/// and probe set-ups, most with some violation) plus a Service for each
/// Deployment and StatefulSet, as kube-score only judges readiness for
/// pods a Service targets. Writes it to `path`, and split at document
/// boundaries into [`FILES`] files of about equal size under `dir`.
/// Returns the size and the Service count.
fn generate(path: &Path, dir: &Path, docs: usize) -> (usize, usize) {
    let mut out = String::with_capacity(docs * 1200);
    let mut services = 0;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..docs {
        let r = next();
        let kind = match r % 10 {
            0..=5 => "Deployment",
            6..=7 => "StatefulSet",
            8 => "DaemonSet",
            _ => "Job",
        };
        let api = if kind == "Job" { "batch/v1" } else { "apps/v1" };
        let image = match (r >> 8) % 4 {
            0 => format!("ghcr.io/acme/svc-{}:latest", i % 97),
            1 => format!("registry.internal:5000/team/svc-{}", i % 89),
            2 => format!("ghcr.io/acme/svc-{}:1.{}.{}", i % 83, i % 7, i % 11),
            _ => format!("ghcr.io/acme/svc-{}:2.0@{DIGEST}", i % 79),
        };
        let probes = match (r >> 16) % 4 {
            0 => "",
            1 => {
                "          readinessProbe: {httpGet: {path: /health, port: http}}\n          livenessProbe: {httpGet: {path: /health, port: http}}\n"
            }
            2 => {
                "          readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 10, failureThreshold: 6}\n          livenessProbe: {httpGet: {path: /livez, port: http}, periodSeconds: 5}\n"
            }
            _ => {
                "          readinessProbe: {httpGet: {path: /readyz, port: http}}\n          livenessProbe: {httpGet: {path: /livez, port: http}}\n"
            }
        };
        let name = format!("app-{i}");
        let restart = if kind == "Job" {
            "      restartPolicy: Never\n"
        } else {
            ""
        };
        let _ = write!(
            out,
            "---\napiVersion: {api}\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: team-{ns}\n  labels: {{app: {name}, tier: backend}}\nspec:\n",
            ns = i % 13
        );
        if kind != "Job" {
            let _ = write!(out, "  selector:\n    matchLabels: {{app: {name}}}\n");
        }
        if kind == "StatefulSet" {
            let _ = writeln!(out, "  serviceName: {name}");
        }
        let _ = write!(
            out,
            "  template:\n    metadata:\n      labels: {{app: {name}, tier: backend}}\n    spec:\n{restart}      containers:\n        - name: main\n          image: {image}\n          ports:\n            - {{name: http, containerPort: 8080}}\n          resources:\n            requests: {{cpu: 100m, memory: 128Mi}}\n            limits: {{memory: 256Mi}}\n{probes}        - name: sidecar\n          image: ghcr.io/acme/proxy:1.9@{DIGEST}\n          ports:\n            - {{name: admin, containerPort: 9901}}\n          readinessProbe: {{httpGet: {{path: /ready, port: admin}}}}\n          livenessProbe: {{tcpSocket: {{port: admin}}}}\n"
        );
        if matches!(kind, "Deployment" | "StatefulSet") {
            services += 1;
            let _ = write!(
                out,
                "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: team-{ns}\nspec:\n  selector: {{app: {name}}}\n  ports:\n    - {{port: 80, targetPort: http}}\n",
                ns = i % 13
            );
        }
    }
    std::fs::write(path, &out).expect("write corpus");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).expect("corpus dir");
    let mut rest = out.as_str();
    for n in 0..FILES {
        let target = rest.len() / (FILES - n);
        let cut = if n + 1 == FILES {
            rest.len()
        } else {
            rest[target..]
                .find("\n---\n")
                .map_or(rest.len(), |i| target + i + 1)
        };
        std::fs::write(dir.join(format!("part-{n:02}.yaml")), &rest[..cut]).expect("write part");
        rest = &rest[cut..];
    }
    (out.len(), services)
}
