//! `make demo`: a narrated tour of probity on a local control plane. Every
//! step prints the command a user would run and what it answered; every
//! wait is bounded; everything started is stopped at the end, on an error
//! and on Ctrl-C.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use probity_testenv::{Binaries, Options, TestEnv};

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
        operator.stop(Duration::from_secs(15));
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

    /// Writes `text` to `name` in the working directory.
    fn file(&self, name: &str, text: &str) -> anyhow::Result<()> {
        let path = self.work.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    /// kubectl in the working directory, quietly.
    fn kubectl(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.env
            .kubectl()
            .args(args)
            .current_dir(&self.work)
            .stdin(Stdio::null())
            .output()
            .context("running kubectl")
    }

    /// kubectl, showing the command and its answer.
    fn show(&self, args: &[&str]) -> anyhow::Result<Output> {
        println!("  $ kubectl {}", shell_words(args));
        let out = self.kubectl(args)?;
        print_indented(&out.stdout);
        print_indented(&out.stderr);
        Ok(out)
    }

    /// kubectl that must succeed; shown.
    fn must(&self, args: &[&str]) -> anyhow::Result<Output> {
        let out = self.show(args)?;
        if !out.status.success() {
            bail!("kubectl {} failed", shell_words(args));
        }
        Ok(out)
    }

    /// kubectl that must succeed; not shown.
    fn quietly(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.kubectl(args)?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}",
                shell_words(args),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `probity`, showing the command and its answer.
    fn probity(&self, args: &[&str]) -> anyhow::Result<Output> {
        println!("  $ probity {}", shell_words(args));
        let out = Command::new(&self.probity)
            .args(args)
            .current_dir(&self.work)
            .stdin(Stdio::null())
            .output()
            .context("running probity")?;
        print_indented(&out.stdout);
        print_indented(&out.stderr);
        Ok(out)
    }

    /// Waits (bounded) until `kubectl <args>` succeeds and prints something.
    fn wait_for_output(&self, what: &str, args: &[&str]) -> anyhow::Result<()> {
        wait(WAIT, what, || {
            self.quietly(args)
                .ok()
                .filter(|out| !out.trim().is_empty())
                .map(drop)
        })
    }

    /// Waits until `jsonpath` of `object` reads `want` (bounded).
    fn wait_for(&self, object: &[&str], jsonpath: &str, want: &str) -> anyhow::Result<()> {
        let mut args = vec!["get"];
        args.extend_from_slice(object);
        let expr = format!("jsonpath={jsonpath}");
        args.extend(["-o", &expr]);
        let mut last = String::new();
        wait(
            WAIT,
            &format!("{} {jsonpath} = {want}", object.join(" ")),
            || {
                last = self.quietly(&args).unwrap_or_else(|e| e.to_string());
                (last.trim() == want).then_some(())
            },
        )
        .with_context(|| format!("last value: {last:?}"))
    }

    fn spawn(&self, name: &str, mut command: Command) -> anyhow::Result<Proc> {
        let log = self.work.join(format!("{name}.log"));
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("log file")?;
        let child = command
            .current_dir(&self.work)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.env.adopt(child.id()).context("recording the pid")?;
        self.procs.borrow_mut().push(log.clone());
        Ok(Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
            ended: None,
        })
    }

    /// CRDs, webhook configurations pointing at a local operator, and the
    /// operator with self-managed certificates.
    fn install(&self) -> anyhow::Result<Proc> {
        step(
            2,
            "Installing probity: CRDs, webhook configurations, the operator",
        );
        std::fs::copy(&self.crds, self.work.join("crds.yaml")).context("copying the CRDs")?;
        self.must(&["apply", "--server-side", "-f", "crds.yaml"])?;
        self.quietly(&[
            "wait",
            "--for",
            "condition=Established",
            "crd",
            "--all",
            "--timeout",
            "60s",
        ])?;
        self.must(&["create", "namespace", SYSTEM_NS])?;

        let webhook = free_addr()?;
        let admin = free_addr()?;
        let url = format!("https://{webhook}");
        let args = ["webhook-config", "--namespace", SYSTEM_NS, "--url", &url];
        println!("  $ probity {} > webhooks.yaml", shell_words(&args));
        let out = Command::new(&self.probity)
            .args(args)
            .output()
            .context("running probity webhook-config")?;
        if !out.status.success() {
            bail!(
                "probity webhook-config failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::fs::write(self.work.join("webhooks.yaml"), &out.stdout)
            .context("writing webhooks.yaml")?;
        self.must(&["apply", "-f", "webhooks.yaml"])?;

        let (webhook_s, admin_s) = (webhook.to_string(), admin.to_string());
        let args = [
            "operator",
            "--lease-namespace",
            SYSTEM_NS,
            "--admin-addr",
            &admin_s,
            "--webhook-addr",
            &webhook_s,
            "--tls-ip-address",
            "127.0.0.1",
        ];
        println!("  $ probity {} &", shell_words(&args));
        let mut command = Command::new(&self.probity);
        command
            .args(args)
            .env("KUBECONFIG", self.env.kubeconfig())
            .env("POD_NAMESPACE", SYSTEM_NS)
            .env_remove("POD_NAME")
            .env_remove("PROBITY_LOG");
        let t = Instant::now();
        let mut operator = self.spawn("operator", command)?;
        operator.wait_until_ok(admin, "/readyz")?;
        for kind in [
            "validatingwebhookconfiguration",
            "mutatingwebhookconfiguration",
        ] {
            self.wait_for_output(
                &format!("the CA bundle in the {kind}"),
                &[
                    "get",
                    kind,
                    "probity",
                    "-o",
                    "jsonpath={.webhooks[0].clientConfig.caBundle}",
                ],
            )?;
        }
        note(&format!(
            "operator ready in {:.1} s: /readyz 200 on {admin}, webhooks on {url}, its CA written into both webhook configurations",
            t.elapsed().as_secs_f64()
        ));
        Ok(operator)
    }

    fn enforce(&self) -> anyhow::Result<()> {
        step(
            3,
            "Enforce: a ClusterReadinessPolicy for namespaces labelled probity.dev/policy=enforce",
        );
        self.file("baseline.yaml", BASELINE)?;
        self.file("web-latest.yaml", WEB_LATEST)?;
        self.file("orders.yaml", &orders_manifest())?;
        self.must(&["apply", "-f", "baseline.yaml"])?;
        self.must(&[
            "wait",
            "--for",
            "condition=Ready",
            "clusterreadinesspolicy/baseline",
            "--timeout",
            "60s",
        ])?;
        // The leader also writes a ValidatingAdmissionPolicy backstop; the
        // API server loads it within a second or two. Wait for it, so the
        // answer below is the same on every run.
        let dry_run = [
            "create",
            "--dry-run=server",
            "-n",
            "shop",
            "-f",
            "web-latest.yaml",
        ];
        wait(WAIT, "the backstop to be loaded", || {
            let out = self.kubectl(&dry_run).ok()?;
            String::from_utf8_lossy(&out.stderr)
                .contains("ValidatingAdmissionPolicy")
                .then_some(())
        })?;
        println!("\n  An image by tag, `:latest`, and no probes: denied.");
        let out = self.show(&["apply", "-n", "shop", "-f", "web-latest.yaml"])?;
        if out.status.success() {
            bail!("the :latest Deployment was admitted");
        }
        println!(
            "  (The API server runs admission policies before webhooks: the backstop answered"
        );
        println!("   first, and it still answers while the operator is down. The webhook, like");
        println!("   `probity lint` in CI, reports every rule with its fix:)");
        self.probity(&["lint", "web-latest.yaml"])?;
        println!("\n  Pinned by digest, with honest probes: admitted.");
        self.must(&["apply", "-n", "shop", "-f", "orders.yaml"])?;
        Ok(())
    }

    fn audit(&self) -> anyhow::Result<()> {
        step(
            4,
            "Audit: a ReadinessPolicy in namespace legacy reports without blocking",
        );
        self.file("report.yaml", REPORT)?;
        self.file("legacy-apps.yaml", LEGACY_APPS)?;
        self.must(&["apply", "-f", "report.yaml"])?;
        self.quietly(&[
            "wait",
            "-n",
            "legacy",
            "--for",
            "condition=Ready",
            "readinesspolicy/report",
            "--timeout",
            "60s",
        ])?;
        println!("\n  Admitted, with warnings:");
        self.must(&["apply", "-n", "legacy", "-f", "legacy-apps.yaml"])?;
        self.wait_for(
            &["readinesspolicy", "report", "-n", "legacy"],
            "{.status.violating}",
            "2",
        )?;
        println!("\n  The policy's status counts and lists them:");
        self.must(&["get", "readinesspolicies", "-n", "legacy"])?;
        self.must(&[
            "get",
            "readinesspolicy",
            "report",
            "-n",
            "legacy",
            "-o",
            r#"jsonpath={range .status.violations[*]}{.rule}  {.kind}/{.name} {.container}: {.message}{"\n"}{end}"#,
        ])?;
        Ok(())
    }

    fn drift(&self) -> anyhow::Result<()> {
        step(
            5,
            "Digest drift: three replicas of orders, one pulled a different image for the same tag",
        );
        println!(
            "  (Nothing runs pods here: the demo creates them and writes their status as a kubelet would.)"
        );
        self.file("orders-pods.yaml", &orders_pods())?;
        self.must(&["create", "-n", "shop", "-f", "orders-pods.yaml"])?;
        self.file("status-ok.json", &pod_status(DIGEST))?;
        self.file("status-drifted.json", &pod_status(DIGEST_OTHER))?;
        for pod in ["a", "b", "c"] {
            let name = format!("orders-5d8f7b9c4-{pod}");
            let status = if pod == "c" {
                "status-drifted.json"
            } else {
                "status-ok.json"
            };
            let args = [
                "patch",
                "pod",
                &name,
                "-n",
                "shop",
                "--subresource=status",
                "--type=merge",
                "--patch-file",
                status,
            ];
            if pod == "c" {
                self.must(&args)?;
            } else {
                self.quietly(&args)?;
            }
        }
        let events = [
            "get",
            "events",
            "-n",
            "shop",
            "--field-selector",
            "reason=ImageDigestDrift",
            "-o",
        ];
        self.wait_for_output(
            "an ImageDigestDrift event",
            &[&events[..], &["name"]].concat(),
        )?;
        println!("\n  The operator noticed, from the pods' imageIDs:");
        self.must(
            &[
                &events[..],
                &["custom-columns=TYPE:.type,REASON:.reason,OBJECT:.involvedObject.name,MESSAGE:.message"],
            ]
            .concat(),
        )?;
        Ok(())
    }

    fn probes(&self) -> anyhow::Result<()> {
        let db = FakeDb::start()?;
        let addr = free_addr()?;
        step(
            6,
            "probity-probe: the orders example in front of a database stand-in",
        );
        println!(
            "  $ HOST=127.0.0.1 PORT={} DEP_ADDR={} orders &",
            addr.port(),
            db.addr
        );
        let mut command = Command::new(&self.orders);
        command
            .env("HOST", "127.0.0.1")
            .env("PORT", addr.port().to_string())
            .env("DEP_ADDR", db.addr.to_string())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        let mut orders = self.spawn("orders", command)?;
        orders.wait_until_ok(addr, "/startupz")?;
        wait(WAIT, "orders ready", || {
            (http_get(addr, "/readyz").ok()?.status == 200).then_some(())
        })?;

        println!("\n  Healthy (a query takes 5 ms):");
        let ok = http_get(addr, "/orders")?;
        println!("  GET /orders -> {}", ok.status);
        show_probe(addr, "/livez")?;
        show_probe(addr, "/readyz?verbose")?;

        println!(
            "\n  The database turns slow (3 s per query). 20 calls to GET /orders, 10 at a time:"
        );
        db.delay.store(3000, Ordering::Relaxed);
        let mut answers = Vec::new();
        for _ in 0..2 {
            answers.extend(burst(addr, 10));
        }
        summarize(&answers);
        show_probe(addr, "/readyz?verbose")?;
        println!(
            "  (An open breaker is reported, not fatal: every replica shares this database, so"
        );
        println!(
            "   taking them all out of rotation would not help. Dependency::critical() opts in.)"
        );
        show_probe(addr, "/livez")?;

        println!("\n  The database goes down (connection refused):");
        drop(db);
        let t = Instant::now();
        wait(Duration::from_secs(20), "orders unready", || {
            (http_get(addr, "/readyz").ok()?.status == 503).then_some(())
        })?;
        println!(
            "  /readyz failed {:.1} s later (checked every second, 2 misses to fail):",
            t.elapsed().as_secs_f64()
        );
        show_probe(addr, "/readyz?verbose")?;
        println!("  (Reasons go to the service's log, not to unauthenticated probe callers.)");
        show_probe(addr, "/livez")?;
        println!("  (Liveness checks only the process, so the kubelet restarts nothing.)");

        println!("\n  SIGTERM: readiness fails at once, requests are served for the drain delay:");
        let t = Instant::now();
        orders.signal_term();
        wait(Duration::from_secs(5), "orders draining", || {
            let r = http_get(addr, "/readyz?verbose").ok()?;
            (r.status == 503 && r.body.contains("[-]shutdown")).then_some(())
        })?;
        let livez = http_get(addr, "/livez")?;
        println!(
            "  {:.1} s after SIGTERM: /readyz 503, /livez {}",
            t.elapsed().as_secs_f64(),
            livez.status
        );
        orders.wait_exit(Duration::from_secs(30));
        println!(
            "  orders exited ({}) {:.1} s after SIGTERM",
            orders.how_it_ended(),
            t.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

fn step(n: usize, what: &str) {
    println!("\n[{n}/{STEPS}] {what}");
}

fn note(what: &str) {
    println!("  -> {what}");
}

fn print_indented(bytes: &[u8]) {
    for line in String::from_utf8_lossy(bytes).lines() {
        println!("    {line}");
    }
}

/// Arguments as a shell would need them typed.
fn shell_words(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@".contains(c))
            {
                (*a).to_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
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

fn absolute(path: &std::path::Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(path).with_context(|| format!("resolving {}", path.display()))
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free loopback port")
}

/// A child process: SIGTERM, then SIGKILL, when stopped or dropped.
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    ended: Option<std::process::ExitStatus>,
}

impl Proc {
    fn exited(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(Some(_))))
    }

    /// Waits (bounded) until GET `path` answers 200; fails early, with
    /// the log's tail, if the process exits.
    fn wait_until_ok(&mut self, addr: SocketAddr, path: &str) -> anyhow::Result<()> {
        let up = wait(WAIT, &format!("{}'s {path}", self.name), || {
            if self.exited() {
                return Some(false);
            }
            (http_get(addr, path).ok()?.status == 200).then_some(true)
        })?;
        if !up {
            bail!("{} exited:\n{}", self.name, self.log_tail(20));
        }
        Ok(())
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn signal_term(&self) {
        if let Some(child) = &self.child {
            term(child);
        }
    }

    /// Up to `limit` for the process to exit on its own, then [`Proc::stop`].
    fn wait_exit(&mut self, limit: Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.ended = Some(status);
                self.child = None;
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.stop(Duration::from_secs(5));
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL.
    fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        term(&child);
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Ok(Some(status)) = child.try_wait() {
                self.ended = Some(status);
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "{} did not exit within {} s: killed",
            self.name,
            grace.as_secs()
        );
        let _ = child.kill();
        self.ended = child.wait().ok();
    }

    fn how_it_ended(&self) -> String {
        match self.ended {
            Some(status) if status.success() => "exit 0".to_owned(),
            Some(status) => status.to_string(),
            None => "still running".to_owned(),
        }
    }
}

fn term(child: &Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}

/// The database stand-in: answers each query line with a result line
/// after `delay` ms; dropped, it stops listening (connection refused).
struct FakeDb {
    addr: SocketAddr,
    delay: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl FakeDb {
    fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the database stand-in")?;
        let addr = listener.local_addr().context("its address")?;
        let delay = Arc::new(AtomicU64::new(5));
        let down = Arc::new(AtomicBool::new(false));
        let acceptor = std::thread::spawn({
            let (delay, down) = (Arc::clone(&delay), Arc::clone(&down));
            move || {
                for conn in listener.incoming() {
                    if down.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (delay, down) = (Arc::clone(&delay), Arc::clone(&down));
                    std::thread::spawn(move || answer(conn, &delay, &down));
                }
            }
        });
        Ok(Self {
            addr,
            delay,
            down,
            acceptor: Some(acceptor),
        })
    }
}

fn answer(conn: TcpStream, delay: &AtomicU64, down: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
        let until = Instant::now() + Duration::from_millis(delay.load(Ordering::Relaxed));
        while Instant::now() < until {
            if down.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if writer.write_all(b"1\n").is_err() {
            return;
        }
        line.clear();
    }
}

impl Drop for FakeDb {
    fn drop(&mut self) {
        self.down.store(true, Ordering::Relaxed);
        // Wake the acceptor so it sees `down` and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// One HTTP answer.
struct Answer {
    status: u16,
    headers: String,
    body: String,
    took: Duration,
}

/// A GET over a fresh connection, bounded to 10 s.
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<Answer> {
    let start = Instant::now();
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to {addr}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    conn.read_to_string(&mut raw)
        .with_context(|| format!("reading the answer to GET {path}"))?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in the answer to GET {path}"))?;
    Ok(Answer {
        status,
        headers: head.to_owned(),
        body: body.to_owned(),
        took: start.elapsed(),
    })
}

fn show_probe(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let answer = http_get(addr, path)?;
    println!("  GET {path} -> {}", answer.status);
    for line in answer.body.lines() {
        println!("    {line}");
    }
    Ok(())
}

/// `n` concurrent GET /orders; their answers.
fn burst(addr: SocketAddr, n: usize) -> Vec<anyhow::Result<Answer>> {
    let calls: Vec<_> = (0..n)
        .map(|_| std::thread::spawn(move || http_get(addr, "/orders")))
        .collect();
    calls
        .into_iter()
        .map(|c| {
            c.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("request thread panicked")))
        })
        .collect()
}

fn summarize(answers: &[anyhow::Result<Answer>]) {
    let mut groups: Vec<(u16, usize, Duration, String)> = Vec::new();
    for answer in answers.iter().flatten() {
        let retry_after = answer
            .headers
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("retry-after")
                    .then(|| format!(", Retry-After: {}", v.trim()))
            })
            .unwrap_or_default();
        let what = format!("{}{retry_after}", answer.body.trim());
        match groups.iter_mut().find(|g| g.0 == answer.status) {
            Some(g) => {
                g.1 += 1;
                g.2 = g.2.max(answer.took);
            }
            None => groups.push((answer.status, 1, answer.took, what)),
        }
    }
    for (status, count, slowest, what) in groups {
        println!(
            "    {count:>2} x {status} within {:.2} s: {what}",
            slowest.as_secs_f64()
        );
    }
    let failed = answers.iter().filter(|a| a.is_err()).count();
    if failed > 0 {
        println!("    {failed} calls got no answer");
    }
}

const DIGEST: &str = "sha256:6b7e0cd3a8f1e5a4c9d2b3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4";
const DIGEST_OTHER: &str =
    "sha256:0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e";

const BASELINE: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {probity.dev/policy: enforce}
---
apiVersion: probity.dev/v1alpha1
kind: ClusterReadinessPolicy
metadata:
  name: baseline
spec:
  mode: Enforce
  namespaceSelector:
    matchLabels: {probity.dev/policy: enforce}
";

const WEB_LATEST: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: nginx:latest
";

// (No `\` after the quote: it would eat the first line's indentation.)
const ORDERS_TEMPLATE: &str = "        - name: orders
          image: ghcr.io/acme/orders:1.4.2@DIGEST
          ports:
            - {name: http, containerPort: 8080}
          startupProbe:
            httpGet: {path: /startupz, port: http}
            periodSeconds: 2
            failureThreshold: 30
          readinessProbe:
            httpGet: {path: /readyz, port: http}
            periodSeconds: 5
            failureThreshold: 2
          livenessProbe:
            httpGet: {path: /livez, port: http}
            periodSeconds: 10
            timeoutSeconds: 2
            failureThreshold: 6
";

const ORDERS_HEAD: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: orders
spec:
  replicas: 3
  selector:
    matchLabels: {app: orders}
  template:
    metadata:
      labels: {app: orders}
    spec:
      terminationGracePeriodSeconds: 30
      containers:
";

fn orders_manifest() -> String {
    format!("{ORDERS_HEAD}{}", ORDERS_TEMPLATE.replace("DIGEST", DIGEST))
}

fn orders_pods() -> String {
    let mut out = String::new();
    for pod in ["a", "b", "c"] {
        out.push_str(&format!(
            "---
apiVersion: v1
kind: Pod
metadata:
  name: orders-5d8f7b9c4-{pod}
  labels: {{app: orders, pod-template-hash: 5d8f7b9c4}}
  ownerReferences:
    - {{apiVersion: apps/v1, kind: ReplicaSet, name: orders-5d8f7b9c4, uid: 6f1c2e0a-0000-4000-8000-000000000001, controller: true}}
spec:
  containers:
{}",
            ORDERS_TEMPLATE.replace("DIGEST", DIGEST)
        ));
    }
    out
}

fn pod_status(digest: &str) -> String {
    let status = serde_json::json!({"status": {"phase": "Running", "containerStatuses": [{
        "name": "orders", "image": format!("ghcr.io/acme/orders:1.4.2@{DIGEST}"),
        "imageID": format!("ghcr.io/acme/orders@{digest}"),
        "ready": true, "restartCount": 0, "started": true,
        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
    }]}});
    format!("{status:#}\n")
}

const REPORT: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: legacy
---
apiVersion: probity.dev/v1alpha1
kind: ReadinessPolicy
metadata:
  name: report
  namespace: legacy
spec:
  mode: Audit
";

const LEGACY_APPS: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: cache
spec:
  selector:
    matchLabels: {app: cache}
  template:
    metadata:
      labels: {app: cache}
    spec:
      containers:
        - name: redis
          image: redis:latest
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
spec:
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api}
    spec:
      containers:
        - name: api
          image: ghcr.io/acme/api:2.0
          readinessProbe:
            httpGet: {path: /healthz, port: 8080}
          livenessProbe:
            httpGet: {path: /healthz, port: 8080}
";
