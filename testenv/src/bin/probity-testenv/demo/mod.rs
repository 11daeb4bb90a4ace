//! `make demo`: a narrated tour of probity on a local control plane. Every
//! step prints the command a user would run and what it answered; every
//! wait is bounded; everything started is stopped at the end, on an error
//! and on Ctrl-C.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use probity_testenv::isolation::{self, Refused};
use probity_testenv::node::Node;
use probity_testenv::{Options, Process, TestEnv};

mod fixtures;
mod http;
mod kubectl;
mod on_node;
mod steps;

/// What the tour runs: built by `make demo` before it starts.
#[derive(Debug, Clone)]
pub(crate) struct Inputs {
    /// The `probity` binary.
    pub(crate) probity: PathBuf,
    /// The `probity-probe` orders example.
    pub(crate) orders: PathBuf,
    /// The CRD manifest.
    pub(crate) crds: PathBuf,
    /// The Helm chart (the tour on a node).
    pub(crate) chart: PathBuf,
    /// `hack/isolated.sh` (the tour on a node, started as root).
    pub(crate) isolated: PathBuf,
}

/// Whether the tour runs on a real node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum NodeMode {
    /// On a node when root, else without one.
    Auto,
    /// On a node, or fail.
    Always,
    /// Without a node: pod statuses are written as a kubelet would.
    Never,
}

const STEPS: usize = 7;
const WAIT: Duration = Duration::from_secs(60);
const SYSTEM_NS: &str = "probity-system";

/// Set by Ctrl-C or SIGTERM: every wait gives up and the tour cleans up.
static STOP: AtomicBool = AtomicBool::new(false);

pub(crate) fn run(inputs: &Inputs, mode: NodeMode) -> anyhow::Result<()> {
    for (what, path) in [
        ("probity", &inputs.probity),
        ("orders example", &inputs.orders),
        ("CRDs", &inputs.crds),
    ] {
        if !path.exists() {
            bail!(
                "{what} not found at {}: run the tour with `make demo`, which builds it",
                path.display()
            );
        }
    }
    // Commands run in the tour's working directory.
    let inputs = &Inputs {
        probity: absolute(&inputs.probity)?,
        orders: absolute(&inputs.orders)?,
        crds: absolute(&inputs.crds)?,
        chart: inputs.chart.clone(),
        isolated: inputs.isolated.clone(),
    };
    let on_node = match (mode, isolation::check()) {
        (NodeMode::Never, _) => false,
        (_, Ok(())) => true,
        (_, Err(Refused::NotIsolated)) if isolation::is_root() => return run_isolated(inputs),
        (NodeMode::Auto, Err(Refused::NotIsolated)) => {
            println!("(Not root: the tour runs without a node. As root, `make demo` runs it on a");
            println!(" real node: kubelet, containerd and the chart's pods.)");
            false
        }
        (_, Err(refused)) => bail!("the tour cannot run on a node here: {refused}"),
    };
    watch_signals();
    let started = Instant::now();
    let tour = if on_node {
        println!("probity demo on a real node: the chart's operator, its webhooks and policies,");
        println!("a `:latest` replayed, and the orders example under kubelet's probes. About two");
        println!("minutes; Ctrl-C stops it cleanly.");
        Tour::on_node(inputs)?
    } else {
        println!("probity demo: a local control plane, the operator and its webhooks, and a");
        println!("service using probity-probe. Under a minute; Ctrl-C stops it cleanly.");
        Tour::local(inputs)?
    };
    let result = tour.run();
    println!();
    match &result {
        Ok(()) => {}
        Err(e) if STOP.load(Ordering::Relaxed) => println!("Interrupted ({e:#}); cleaning up."),
        Err(_) => println!("The demo failed; cleaning up. Logs of what it ran follow."),
    }
    if result.is_err() && !STOP.load(Ordering::Relaxed) {
        tour.dump_logs();
    }
    let t = Instant::now();
    drop(tour);
    if result.is_ok() {
        println!(
            "Done in {:.0} s (stopping took {:.1} s). Everything the demo started is stopped and its files removed.",
            started.elapsed().as_secs_f64(),
            t.elapsed().as_secs_f64()
        );
    }
    result
}

/// Runs this tour again inside `hack/isolated.sh`, which gives the node
/// network, mount and pid namespaces of its own.
fn run_isolated(inputs: &Inputs) -> anyhow::Result<()> {
    let script = absolute(&inputs.isolated)
        .context("the tour on a node runs through hack/isolated.sh (--isolated)")?;
    let chart = absolute(&inputs.chart).context("the chart the tour installs (--chart)")?;
    let exe = std::env::current_exe().context("this executable's path")?;
    let status = std::process::Command::new(&script)
        .arg(exe)
        .args(["demo", "--node", "always", "--probity"])
        .arg(&inputs.probity)
        .arg("--orders")
        .arg(&inputs.orders)
        .arg("--crds")
        .arg(&inputs.crds)
        .arg("--chart")
        .arg(chart)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        // The tour inside said what went wrong.
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

/// The control plane (and the node), the working directory and what runs
/// against them.
struct Tour {
    // Dropped first: the node's pods go before its control plane.
    node: Option<Node>,
    env: TestEnv,
    work: PathBuf,
    probity: PathBuf,
    orders: PathBuf,
    crds: PathBuf,
    chart: PathBuf,
    procs: std::cell::RefCell<Vec<PathBuf>>,
}

impl Tour {
    fn local(inputs: &Inputs) -> anyhow::Result<Self> {
        step(
            1,
            "Starting a control plane: etcd + kube-apiserver on loopback",
        );
        let t = Instant::now();
        let env = TestEnv::start(crate::binaries()?, &Options::default())
            .context("starting the control plane")?;
        note(&format!(
            "kube-apiserver ready at {} in {:.1} s",
            env.server(),
            t.elapsed().as_secs_f64()
        ));
        Self::new(env, None, inputs)
    }

    fn on_node(inputs: &Inputs) -> anyhow::Result<Self> {
        step(
            1,
            "Starting a control plane and a node, in namespaces of the run's own",
        );
        let registry = probity_testenv::registry::locate_or_skip().with_context(|| {
            format!(
                "the node's registry: docker-registry not found; fetch it with `{}`",
                probity_testenv::registry::REGISTRY_HINT
            )
        })?;
        let t = Instant::now();
        let options = Options {
            node: true,
            ..Options::default()
        };
        let env =
            TestEnv::start(crate::binaries()?, &options).context("starting the control plane")?;
        note(&format!(
            "etcd and kube-apiserver ready at {} in {:.1} s",
            env.server(),
            t.elapsed().as_secs_f64()
        ));
        let t = Instant::now();
        let node =
            Node::start(&env, &registry, Duration::from_secs(120)).context("starting the node")?;
        note(&format!(
            "node {} Ready in {:.1} s: containerd, kubelet, kube-scheduler, kube-controller-manager; \
             pods on the bridge {}/16, images from the registry at {}",
            probity_testenv::node::NODE_NAME,
            t.elapsed().as_secs_f64(),
            probity_testenv::node::NODE_IP,
            node.registry().host
        ));
        let inputs = &Inputs {
            chart: absolute(&inputs.chart).context("the chart (--chart)")?,
            ..inputs.clone()
        };
        Self::new(env, Some(node), inputs)
    }

    fn new(env: TestEnv, node: Option<Node>, inputs: &Inputs) -> anyhow::Result<Self> {
        let work = env.dir().join("demo");
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        Ok(Self {
            node,
            env,
            work,
            probity: inputs.probity.clone(),
            orders: inputs.orders.clone(),
            crds: inputs.crds.clone(),
            chart: inputs.chart.clone(),
            procs: std::cell::RefCell::new(Vec::new()),
        })
    }

    fn run(&self) -> anyhow::Result<()> {
        if let Some(node) = &self.node {
            return self.run_on_node(node);
        }
        let mut operator = self.install()?;
        self.enforce(&fixtures::orders_manifest())?;
        self.audit()?;
        self.drift()?;
        self.probes()?;
        step(STEPS, "Cleaning up");
        let t = Instant::now();
        stop(&mut operator, Duration::from_secs(15));
        note(&format!(
            "operator stopped ({}, {:.1} s): it released its leader Lease",
            operator.how_it_ended(),
            t.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    fn dump_logs(&self) {
        for log in self.procs.borrow().iter() {
            print_tail(log);
        }
        if let Some(node) = &self.node {
            self.dump_node_logs(node);
        }
        let api = self.env.dir().join("kube-apiserver.log");
        println!("--- kube-apiserver log: {}", api.display());
    }
}

fn step(n: usize, what: &str) {
    println!("\n[{n}/{STEPS}] {what}");
}

fn note(what: &str) {
    println!("  -> {what}");
}

/// Polls `probe` every 200 ms until it returns `Some`, for at most `limit`.
fn wait<T>(limit: Duration, what: &str, mut probe: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        if STOP.load(Ordering::Relaxed) {
            bail!("interrupted while waiting for {what}");
        }
        if let Some(v) = probe() {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("gave up waiting for {what} after {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Ctrl-C and SIGTERM set [`STOP`] instead of killing the tour.
fn watch_signals() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let Ok(mut term) = signal(SignalKind::terminate()) else {
                return;
            };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            STOP.store(true, Ordering::Relaxed);
        });
    });
}

/// SIGTERM, up to `grace` to exit, then SIGKILL, saying so.
fn stop(process: &mut Process, grace: Duration) {
    if !process.is_running() {
        return;
    }
    process.terminate();
    if process.wait_exit(grace).is_none() {
        eprintln!(
            "{} did not exit within {} s: killed",
            process.name(),
            grace.as_secs()
        );
        process.kill();
    }
}

/// The last 30 lines of the log at `path`, under a heading.
fn print_tail(path: &std::path::Path) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(30).collect();
    println!("--- {} (last {} lines)", path.display(), tail.len());
    for line in tail.into_iter().rev() {
        println!("{line}");
    }
}

fn absolute(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))
}
