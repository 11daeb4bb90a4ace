//! One control plane: etcd + kube-apiserver on loopback.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use crate::process::{Process, free_ports};
use crate::sweep;
use crate::{Binaries, Error, pki};

/// How a control plane is started.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long to wait for `/readyz` before giving up.
    pub ready_timeout: Duration,
    /// Extra `kube-apiserver` flags (for example `--feature-gates=...`).
    pub apiserver_args: Vec<String>,
    /// Start the reaper that stops the control plane when this process dies.
    /// Leave on unless testing the pid-file sweep.
    pub reaper: bool,
    /// Serve a node ([`crate::node::Node`]): Node and RBAC authorization
    /// with NodeRestriction, service-account admission (pods get tokens),
    /// client certificates for kubelets, webhook and service calls routed
    /// to endpoints (`--enable-aggregator-routing`, no kube-proxy), and the
    /// API server listening on all addresses at 443 with the `kubernetes`
    /// Service's IP on the loopback device, where pods reach it. Only in a
    /// namespace of the run's own ([`crate::isolation`]), one per namespace.
    pub node: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ready_timeout: Duration::from_secs(120),
            apiserver_args: Vec::new(),
            reaper: std::env::var_os("PROBITY_TESTENV_NO_REAPER").is_none(),
            node: false,
        }
    }
}

/// A running etcd + kube-apiserver pair, with the admin credentials to reach
/// it. Dropping it stops both processes and removes its directory.
#[derive(Debug)]
pub struct TestEnv {
    dir: PathBuf,
    binaries: Binaries,
    apiserver: Process,
    apiserver_args: Vec<String>,
    etcd: Process,
    reaper: Option<std::process::Child>,
    config: Config,
    kubeconfig: PathBuf,
    server: String,
    namespaces: AtomicU64,
    pki: pki::Pki,
    node: bool,
}

/// Attempts to start before giving up: a free port may be taken between the
/// probe and the bind.
const START_ATTEMPTS: usize = 3;

impl TestEnv {
    /// Starts etcd and kube-apiserver on free loopback ports, waits for the
    /// API server's `/readyz`, and first stops whatever a killed earlier run
    /// left behind at least a minute ago (see [`crate::sweep_stale`]).
    ///
    /// # Errors
    ///
    /// The error names the component that failed and carries the tail of its
    /// log.
    pub fn start(binaries: Binaries, options: &Options) -> Result<Self, Error> {
        for swept in sweep::sweep_older_than(sweep::START_SWEEP_MIN_AGE) {
            eprintln!(
                "probity-testenv: removed stale control plane {} (killed {} process(es))",
                swept.dir.display(),
                swept.killed.len()
            );
        }
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(binaries.clone(), options) {
                Ok(env) => return Ok(env),
                Err(e @ Error::Exited { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(Error::NotReady {
            timeout: options.ready_timeout,
            log: String::new(),
        }))
    }

    fn start_once(binaries: Binaries, options: &Options) -> Result<Self, Error> {
        let dir = make_dir()?;
        let pki = pki::write(&dir)?;
        let [etcd_port, peer_port, free_api_port] = free_ports::<3>()?;
        // A node's pods reach the API server at the kubernetes Service's IP
        // and port; everything else talks to it on loopback.
        let (bind, advertise, api_port) = if options.node {
            serve_pods()?;
            ("0.0.0.0", pki::KUBERNETES_SERVICE_IP.to_string(), 443)
        } else {
            ("127.0.0.1", "127.0.0.1".to_owned(), free_api_port)
        };

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd_args = vec![
            "--name=probity".to_owned(),
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=probity={peer_url}"),
            "--unsafe-no-fsync=true".to_owned(),
            "--log-level=warn".to_owned(),
        ];
        let etcd = component("etcd", &binaries.etcd(), &etcd_args, &dir)?;

        let path = |p: &Path| p.display().to_string();
        let mut api_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--bind-address={bind}"),
            format!("--advertise-address={advertise}"),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", dir.join("certs").display()),
            format!("--tls-cert-file={}", path(&pki.serving_cert)),
            format!("--tls-private-key-file={}", path(&pki.serving_key)),
            format!("--client-ca-file={}", path(&pki.ca_cert)),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".to_owned(),
            format!("--service-account-key-file={}", path(&pki.sa_pub)),
            format!("--service-account-signing-key-file={}", path(&pki.sa_key)),
            "--service-cluster-ip-range=10.96.0.0/16".to_owned(),
            "--endpoint-reconciler-type=none".to_owned(),
            "--allow-privileged=true".to_owned(),
            "--profiling=false".to_owned(),
        ];
        if options.node {
            api_args.extend([
                "--authorization-mode=Node,RBAC".to_owned(),
                "--enable-admission-plugins=NodeRestriction".to_owned(),
                format!(
                    "--kubelet-client-certificate={}",
                    path(&pki.kubelet_client_cert)
                ),
                format!("--kubelet-client-key={}", path(&pki.kubelet_client_key)),
                "--kubelet-preferred-address-types=InternalIP".to_owned(),
                "--enable-aggregator-routing=true".to_owned(),
            ]);
        } else {
            // No controller manager creates service accounts here.
            api_args.extend([
                "--authorization-mode=RBAC".to_owned(),
                "--disable-admission-plugins=ServiceAccount".to_owned(),
            ]);
        }
        api_args.extend(options.apiserver_args.iter().cloned());
        let apiserver = component(
            "kube-apiserver",
            &binaries.kube_apiserver(),
            &api_args,
            &dir,
        )?;
        let apiserver_args = api_args;

        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig, &server, &pki)?;
        let config = load_config(&kubeconfig)?;

        let reaper = if options.reaper {
            Some(sweep::spawn_reaper(
                std::process::id(),
                &dir,
                &[apiserver.pid(), etcd.pid()],
            )?)
        } else {
            None
        };

        let mut env = Self {
            dir,
            binaries,
            apiserver,
            apiserver_args,
            etcd,
            reaper,
            config,
            kubeconfig,
            server,
            namespaces: AtomicU64::new(0),
            pki,
            node: options.node,
        };
        env.wait_ready(options.ready_timeout)?;
        Ok(env)
    }

    /// Polls `/readyz` until it answers `ok`, failing early if a component
    /// exits.
    fn wait_ready(&mut self, timeout: Duration) -> Result<(), Error> {
        let config = self.config.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // A runtime of its own on a thread of its own: the caller may already
        // be inside a runtime (a #[tokio::test]), where blocking on another
        // runtime is not allowed.
        let poller = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || poll_readyz(config, &stop, &tx)
        });
        let start = Instant::now();
        let result = loop {
            if let Some(err) = [&mut self.etcd, &mut self.apiserver]
                .into_iter()
                .find_map(|c| c.exited().map(|status| exited(c, status)))
            {
                break Err(err);
            }
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(()) => break Ok(()),
                Err(RecvTimeoutError::Timeout) if start.elapsed() <= timeout => {}
                Err(_) => {
                    break Err(Error::NotReady {
                        timeout,
                        log: self.apiserver.log_tail(30),
                    });
                }
            }
        };
        stop.store(true, Ordering::Relaxed);
        let _ = poller.join();
        result
    }

    /// A new client for the calling task's runtime, authenticated as an admin
    /// (`system:masters`). Make one per test: a client belongs to the runtime
    /// that created it.
    ///
    /// # Errors
    ///
    /// When called outside a tokio runtime.
    pub fn client(&self) -> Result<Client, Error> {
        Client::try_from(self.config.clone()).map_err(|e| Error::Client(e.to_string()))
    }

    /// The admin client configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Creates a fresh namespace named `<prefix>-<n>` and returns its name.
    /// Tests sharing a control plane each work in their own.
    ///
    /// Namespaces are not deleted: nothing runs the namespace controller, and
    /// the whole etcd is discarded with the control plane.
    ///
    /// # Errors
    ///
    /// When the API server rejects the namespace.
    pub async fn namespace(&self, client: &Client, prefix: &str) -> Result<String, Error> {
        let n = self.namespaces.fetch_add(1, Ordering::Relaxed);
        let mut name: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(50)
            .collect();
        name = format!("{}-{n}", name.trim_matches('-'));
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("probity.dev/test".to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|e| Error::Client(format!("creating namespace {name}: {e}")))?;
        Ok(name)
    }

    /// The API server URL, `https://127.0.0.1:<port>`.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// A kubeconfig file for the admin user, for `kubectl` and `helm`.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The directory holding certificates, logs and etcd data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The binaries this control plane runs.
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// `kubectl` pointed at this control plane.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.binaries.kubectl());
        cmd.arg("--kubeconfig").arg(&self.kubeconfig);
        cmd
    }

    /// `helm` pointed at this control plane, with its caches kept inside the
    /// control plane's directory.
    pub fn helm(&self) -> Command {
        let mut cmd = Command::new(self.binaries.helm());
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", self.dir.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("helm/config"))
            .env("HELM_DATA_HOME", self.dir.join("helm/data"));
        cmd
    }

    /// Stops kube-apiserver (SIGTERM, then SIGKILL after 5 s), leaving etcd
    /// and its data in place, as in an API server upgrade or crash.
    pub fn stop_apiserver(&mut self) {
        self.apiserver.stop(Duration::from_secs(5));
    }

    /// Starts kube-apiserver again on the same port, certificates and etcd,
    /// and waits for `/readyz`.
    ///
    /// # Errors
    ///
    /// As [`TestEnv::start`].
    pub fn start_apiserver(&mut self, timeout: Duration) -> Result<(), Error> {
        self.apiserver.stop(Duration::from_secs(5));
        // Keep the first run's log: the new one is appended next to it.
        let old_log = self.dir.join("kube-apiserver.log");
        let _ = std::fs::rename(&old_log, self.dir.join("kube-apiserver.1.log"));
        self.apiserver = component(
            "kube-apiserver",
            &self.binaries.kube_apiserver(),
            &self.apiserver_args,
            &self.dir,
        )?;
        self.wait_ready(timeout)
    }

    /// Hands `pid` to this control plane's clean-up: it is stopped with
    /// etcd and kube-apiserver when the owning process dies without
    /// stopping it, and by the next run's sweep.
    ///
    /// # Errors
    ///
    /// When the pid file cannot be written.
    pub fn adopt(&self, pid: u32) -> Result<(), Error> {
        sweep::record_pid(&self.dir, pid)
    }

    /// The certificates, for the node's kubelet.
    pub(crate) fn pki(&self) -> &pki::Pki {
        &self.pki
    }

    /// Whether this control plane was started to serve a node.
    pub fn serves_node(&self) -> bool {
        self.node
    }

    /// The pids of etcd and kube-apiserver.
    pub fn pids(&self) -> [u32; 2] {
        [self.etcd.pid(), self.apiserver.pid()]
    }
}

/// Puts the `kubernetes` Service's IP on the loopback device of the run's
/// own network namespace, where the API server answers pods at 443.
fn serve_pods() -> Result<(), Error> {
    crate::isolation::check()
        .map_err(|e| Error::Client(format!("a control plane for a node: {e}")))?;
    let ip = format!("{}/32", pki::KUBERNETES_SERVICE_IP);
    crate::node::ip(&["addr", "replace", &ip, "dev", "lo"])
}

/// Sends once `/readyz` answers `ok`; gives up when `stop` is set.
fn poll_readyz(config: Config, stop: &AtomicBool, ready: &std::sync::mpsc::Sender<()>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        let Ok(client) = Client::try_from(config) else {
            return;
        };
        while !stop.load(Ordering::Relaxed) {
            if let Ok(req) = http::Request::get("/readyz").body(Vec::new()) {
                let answer = tokio::time::timeout(Duration::from_secs(5), client.request_text(req));
                if let Ok(Ok(body)) = answer.await
                    && body.trim() == "ok"
                {
                    let _ = ready.send(());
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.apiserver.stop(Duration::from_secs(5));
        self.etcd.stop(Duration::from_secs(5));
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn make_dir() -> Result<PathBuf, Error> {
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = base.join(format!(
            "{}{}-{:08x}",
            sweep::DIR_PREFIX,
            std::process::id(),
            nanos ^ attempt
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                sweep::write_owner(&dir)?;
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
    Err(Error::io(
        &base,
        std::io::Error::other("could not create a unique directory"),
    ))
}

/// Starts a control-plane component with its log in `dir`, recording its pid
/// for the reaper and the sweep.
fn component(name: &str, program: &Path, args: &[String], dir: &Path) -> Result<Process, Error> {
    let log = dir.join(format!("{name}.log"));
    let process = Process::spawn(name, Command::new(program).args(args), Some(&log))?;
    sweep::record_pid(dir, process.pid())?;
    Ok(process)
}

/// The error for a component that exited during start-up.
fn exited(component: &Process, status: std::process::ExitStatus) -> Error {
    Error::Exited {
        component: component.name().to_owned(),
        status: status.to_string(),
        log: component.log_tail(30),
    }
}

fn write_kubeconfig(path: &Path, server: &str, pki: &pki::Pki) -> Result<(), Error> {
    write_kubeconfig_for(path, server, &pki.ca_cert, &pki.admin_cert, &pki.admin_key)
}

/// A kubeconfig for `server` authenticating with the client certificate
/// `cert` and its `key`.
pub(crate) fn write_kubeconfig_for(
    path: &Path,
    server: &str,
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<(), Error> {
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "probity-testenv", "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{"name": "admin", "user": {
            "client-certificate": cert,
            "client-key": key,
        }}],
        "contexts": [{"name": "probity-testenv", "context": {
            "cluster": "probity-testenv",
            "user": "admin",
        }}],
        "current-context": "probity-testenv",
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| Error::Client(e.to_string()))?;
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

fn load_config(kubeconfig: &Path) -> Result<Config, Error> {
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| Error::Client(e.to_string()))?;
    // Building a Config from a kubeconfig is async only for exec plugins,
    // which this one does not use; a throwaway runtime on its own thread
    // keeps `start` callable from inside a runtime.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Client(e.to_string()))?;
        rt.block_on(Config::from_custom_kubeconfig(
            kc,
            &KubeConfigOptions::default(),
        ))
        .map_err(|e| Error::Client(e.to_string()))
    })
    .join()
    .map_err(|_| Error::Client("kubeconfig loader panicked".to_owned()))?
}
