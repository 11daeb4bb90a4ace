//! `make demo`: a narrated tour of probity on a local control plane. Every
//! step prints the command a user would run and what it answered; every
//! wait is bounded; everything started is stopped at the end, on an error
//! and on Ctrl-C.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use probity_testenv::{Binaries, Options, Process, TestEnv};

mod db;
mod fixtures;
mod http;
mod kubectl;
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
}

const STEPS: usize = 7;
const WAIT: Duration = Duration::from_secs(60);
const SYSTEM_NS: &str = "probity-system";

/// Set by Ctrl-C or SIGTERM: every wait gives up and the tour cleans up.
static STOP: AtomicBool = AtomicBool::new(false);

pub(crate) fn run(inputs: &Inputs) -> anyhow::Result<()> {
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
    };
    watch_signals();
    let started = Instant::now();
    println!("probity demo: a local control plane, the operator and its webhooks, and a");
    println!("service using probity-probe. Under a minute; Ctrl-C stops it cleanly.");

    step(
        1,
        "Starting a control plane: etcd + kube-apiserver on loopback",
    );
    let binaries = Binaries::locate().map_err(|why| {
        anyhow::anyhow!(
            "control-plane binaries not found: {why}\nbuild them with: {}",
            probity_testenv::BUILD_HINT
        )
    })?;
    let t = Instant::now();
    let env =
        TestEnv::start(binaries, &Options::default()).context("starting the control plane")?;
    note(&format!(
        "kube-apiserver ready at {} in {:.1} s",
        env.server(),
        t.elapsed().as_secs_f64()
    ));
    let tour = Tour::new(env, inputs)?;
    let result = tour.run();
    println!();
    match &result {
        Ok(()) => println!(
            "Done in {:.0} s. Everything the demo started is stopped and its files removed.",
            started.elapsed().as_secs_f64()
        ),
        Err(e) if STOP.load(Ordering::Relaxed) => println!("Interrupted ({e:#}); cleaning up."),
        Err(_) => println!("The demo failed; cleaning up. Logs of what it ran follow."),
    }
    if result.is_err() && !STOP.load(Ordering::Relaxed) {
        tour.dump_logs();
    }
    drop(tour);
    result
}

/// The control plane, the working directory and what runs against them.
struct Tour {
    env: TestEnv,
    work: PathBuf,
    probity: PathBuf,
    orders: PathBuf,
    crds: PathBuf,
    procs: std::cell::RefCell<Vec<PathBuf>>,
}

impl Tour {
    fn new(env: TestEnv, inputs: &Inputs) -> anyhow::Result<Self> {
        let work = env.dir().join("demo");
        std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
        Ok(Self {
            env,
            work,
            probity: inputs.probity.clone(),
            orders: inputs.orders.clone(),
            crds: inputs.crds.clone(),
            procs: std::cell::RefCell::new(Vec::new()),
        })
    }

    fn run(&self) -> anyhow::Result<()> {
        let mut operator = self.install()?;
        self.enforce()?;
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
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            println!("--- {} (last {} lines)", log.display(), tail.len());
            for line in tail.into_iter().rev() {
                println!("{line}");
            }
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

fn absolute(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))
}
