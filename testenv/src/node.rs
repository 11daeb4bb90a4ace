//! One real node for a control plane: containerd (with runc and the CNI
//! bridge), a kubelet, kube-scheduler and kube-controller-manager, pulling
//! from a local plain-HTTP registry that holds the pause image built from
//! source. It runs only inside a namespace of the run's own
//! (`hack/isolated.sh`, see [`crate::isolation`]): the bridge `cni0`
//! (10.88.0.1/16) and the pods live there, and nothing routes out.
//!
//! cgroup v1 or v2 with the cgroupfs driver; the node's cgroups live under a
//! root named after the run (`PROBITY_ISOLATION_ID`) and the control plane's
//! directory, removed when the node stops, and by `hack/isolated.sh` after
//! the run and after a killed one.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::process::Process;
use crate::registry::Registry;
use crate::{Error, TestEnv, isolation, sweep};

/// The node's name, its IP on the bridge, and the pod network.
pub const NODE_NAME: &str = "probity-node";
/// The node's address: the bridge's, and the pods' gateway.
pub const NODE_IP: &str = "10.88.0.1";
const POD_SUBNET: &str = "10.88.0.0/16";
const BRIDGE: &str = "cni0";
/// The bridge's MAC address, locally administered.
const BRIDGE_MAC: &str = "02:70:62:00:00:01";
const CGROUP_FS: &str = "/sys/fs/cgroup";
const RUNC: &str = "/usr/sbin/runc";
const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// A running node; stopped, its pods and cgroups removed, when dropped.
#[derive(Debug)]
pub struct Node {
    dir: PathBuf,
    scheduler: Process,
    controllers: Process,
    kubelet: Process,
    containerd: Process,
    registry: Registry,
    pause: String,
    cgroup_root: String,
}

// === impl Node ===

impl Node {
    /// Starts containerd, a registry with the pause image, and a kubelet
    /// registered with `env`'s API server, and waits until the node is Ready.
    ///
    /// # Errors
    ///
    /// Outside a namespace of the run's own, when a component is missing or
    /// exits, or when the node is not Ready within `timeout`.
    pub fn start(env: &TestEnv, registry_bin: &Path, timeout: Duration) -> Result<Self, Error> {
        isolation::check().map_err(|e| Error::Client(format!("no node here: {e}")))?;
        if !env.serves_node() {
            return Err(Error::Client(
                "the control plane was not started for a node: set Options::node".to_owned(),
            ));
        }
        let bins = env.binaries().dir().to_path_buf();
        for needed in [
            bins.join("kubelet"),
            bins.join("containerd"),
            bins.join("containerd-shim-runc-v2"),
            PathBuf::from(RUNC),
            Path::new(CNI_BIN_DIR).join("bridge"),
        ] {
            if !needed.is_file() {
                return Err(Error::Client(format!(
                    "{} is missing: build the node with `hack/control-plane.sh node`",
                    needed.display()
                )));
            }
        }
        let dir = env.dir().join("node");
        let mkdir = |p: &Path| std::fs::create_dir_all(p).map_err(|e| Error::io(p, e));
        for sub in ["containerd", "cni/net.d", "kubelet", "images"] {
            mkdir(&dir.join(sub))?;
        }

        // On the bridge: containerd pulls from it, and the pods (the
        // operator resolving tags) reach it too.
        bridge()?;
        let registry = Registry::start_on(registry_bin, NODE_IP)?;
        let pause_image = crate::image::pause(&dir.join("images"))?;
        let digest = registry.push_image("probity/pause", "3.10", &pause_image)?;
        let pause = format!("{}/probity/pause:3.10@{digest}", registry.host);

        write(
            &dir.join("cni/net.d/10-probity.conflist"),
            &cni_config(&dir),
        )?;
        let hosts = dir.join("containerd/certs.d").join(&registry.host);
        mkdir(&hosts)?;
        write(
            &hosts.join("hosts.toml"),
            &format!(
                "server = \"http://{h}\"\n[host.\"http://{h}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
                h = registry.host
            ),
        )?;
        let config = dir.join("containerd/config.toml");
        write(&config, &containerd_config(&dir, &pause))?;
        let path = format!(
            "{}:{}",
            bins.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut containerd = component(
            env,
            &dir,
            "containerd",
            Command::new(bins.join("containerd"))
                .arg("--config")
                .arg(&config)
                .env("PATH", &path),
        )?;
        let socket = dir.join("containerd/containerd.sock");
        serving(&mut containerd, &socket, timeout)?;

        // Named so that hack/isolated.sh removes it after the run, and the
        // next run if this one was killed.
        let isolation_id = std::env::var(isolation::ISOLATION_ID_ENV).map_err(|_| {
            Error::Client(format!(
                "{} unset: run through hack/isolated.sh",
                isolation::ISOLATION_ID_ENV
            ))
        })?;
        let cgroup_root = format!(
            "{isolation_id}-{}",
            env.dir()
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        for controller in cgroup_dirs() {
            mkdir(&controller.join(&cgroup_root))?;
        }
        let kubelet_config = dir.join("kubelet/config.yaml");
        let pki = env.pki();
        write(
            &kubelet_config,
            &kubelet_config_yaml(&socket, &cgroup_root, &pki.ca_cert),
        )?;
        // The kubelet is system:node:<name>, held to its own node and pods
        // by the Node authorizer and NodeRestriction.
        let node_kubeconfig = dir.join("kubelet/kubeconfig");
        crate::env::write_kubeconfig_for(
            &node_kubeconfig,
            env.server(),
            &pki.ca_cert,
            &pki.node_cert,
            &pki.node_key,
        )?;
        let kubelet = component(
            env,
            &dir,
            "kubelet",
            Command::new(bins.join("kubelet"))
                .arg("--config")
                .arg(&kubelet_config)
                .arg("--kubeconfig")
                .arg(&node_kubeconfig)
                .arg("--root-dir")
                .arg(dir.join("kubelet/root"))
                .arg("--cert-dir")
                .arg(dir.join("kubelet/pki"))
                .args(["--hostname-override", NODE_NAME, "--node-ip", NODE_IP])
                .env("PATH", &path),
        )?;
        // Deployments become ReplicaSets and Pods, Pods get a node,
        // Services get EndpointSlices.
        let scheduler = component(
            env,
            &dir,
            "kube-scheduler",
            Command::new(bins.join("kube-scheduler"))
                .arg("--kubeconfig")
                .arg(env.kubeconfig())
                .args(["--leader-elect=false", "--secure-port=0"]),
        )?;
        let controllers = component(
            env,
            &dir,
            "kube-controller-manager",
            Command::new(bins.join("kube-controller-manager"))
                .arg("--kubeconfig")
                .arg(env.kubeconfig())
                .args([
                    "--leader-elect=false",
                    "--secure-port=0",
                    "--use-service-account-credentials=false",
                    // Published to every namespace as kube-root-ca.crt, which
                    // pods' projected token volumes mount.
                    &format!("--root-ca-file={}", pki.ca_cert.display()),
                    // No cloud and one node: nothing allocates pod CIDRs
                    // (host-local does), nothing signs certificates.
                    "--controllers=*,-nodeipam,-csrsigning,-csrapproving,-serviceaccount-token",
                ]),
        )?;
        let mut node = Self {
            dir,
            scheduler,
            controllers,
            kubelet,
            containerd,
            registry,
            pause,
            cgroup_root,
        };
        node.wait_ready(env, timeout)?;
        Ok(node)
    }

    fn wait_ready(&mut self, env: &TestEnv, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            for component in [
                &mut self.kubelet,
                &mut self.containerd,
                &mut self.scheduler,
                &mut self.controllers,
            ] {
                if let Some(status) = component.exited() {
                    return Err(Error::Exited {
                        component: component.name().to_owned(),
                        status: status.to_string(),
                        log: component.log_tail(30),
                    });
                }
            }
            let ready = env
                .kubectl()
                .args(["get", "node", NODE_NAME, "-o"])
                .arg("jsonpath={.status.conditions[?(@.type==\"Ready\")].status}")
                .output()
                .is_ok_and(|out| out.stdout == b"True");
            // Pods need their namespace's service account (service-account
            // admission); the controller manager creates it.
            let accounts = ready
                && env
                    .kubectl()
                    .args([
                        "get",
                        "serviceaccount",
                        "default",
                        "-n",
                        "default",
                        "-o",
                        "name",
                    ])
                    .output()
                    .is_ok_and(|out| out.status.success());
            if accounts {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::NotReady {
                    timeout,
                    log: self.kubelet.log_tail(30),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The pause image, by digest.
    pub fn pause_image(&self) -> &str {
        &self.pause
    }

    /// The registry the node pulls from (plain HTTP, `host:port`).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The `--set` values that install charts/probity on this node with
    /// the operator's image `image` (`<registry>/<repository>:<tag>@<digest>`,
    /// as [`crate::image::push_programs`] returns it): the image by digest,
    /// and the node's registry named as plain HTTP and allowed, so the
    /// operator may resolve its tags (cached for 5 s).
    ///
    /// # Errors
    ///
    /// When `image` carries no digest.
    pub fn chart_values(&self, image: &str) -> Result<Vec<String>, Error> {
        let (name, digest) = image
            .split_once('@')
            .ok_or_else(|| Error::Client(format!("{image}: not by digest")))?;
        let repository = name.rsplit_once(':').map_or(name, |(r, _)| r);
        let host = &self.registry.host;
        Ok(vec![
            format!("image.repository={repository}"),
            format!("image.digest={digest}"),
            format!("registry.insecure[0]={host}"),
            format!("registry.allow[0]={host}"),
            "registry.cacheTTLSeconds=5".to_owned(),
        ])
    }

    /// The node's files: configs and logs of containerd and kubelet.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.controllers.stop(Duration::from_secs(5));
        self.scheduler.stop(Duration::from_secs(5));
        self.kubelet.stop(Duration::from_secs(5));
        // Containers outlive containerd (their shims are reparented): stop
        // them by cgroup, then the shims, then containerd.
        for controller in cgroup_dirs() {
            kill_cgroup(&controller.join(&self.cgroup_root));
        }
        let marker = self.dir.to_string_lossy().into_owned();
        sweep::kill_matching(&marker);
        self.containerd.stop(Duration::from_secs(5));
        remove_cgroups(&self.cgroup_root);
    }
}

/// Starts one of the node's daemons with its log in the node's directory,
/// its pid recorded for the control plane's reaper.
fn component(
    env: &TestEnv,
    dir: &Path,
    name: &str,
    command: &mut Command,
) -> Result<Process, Error> {
    let log = dir.join(format!("{name}.log"));
    let process = Process::spawn(name, command, Some(&log))?;
    sweep::record_pid(env.dir(), process.pid())?;
    Ok(process)
}

/// Removes the node cgroup root `name` from every hierarchy, killing what is
/// left in it first.
fn remove_cgroups(name: &str) {
    for controller in cgroup_dirs() {
        let root = controller.join(name);
        if root.exists() {
            kill_cgroup(&root);
            remove_cgroup(&root);
        }
    }
}

/// The cgroup hierarchies to create the node's root in: the unified one on
/// cgroup v2, every mounted controller on v1.
fn cgroup_dirs() -> Vec<PathBuf> {
    let fs = Path::new(CGROUP_FS);
    if fs.join("cgroup.controllers").exists() {
        return vec![fs.to_path_buf()];
    }
    std::fs::read_dir(fs)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILL to every process in the cgroup tree at `root`.
fn kill_cgroup(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            kill_cgroup(&entry.path());
        }
    }
    let procs = std::fs::read_to_string(root.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        sweep::signal(pid, nix::sys::signal::Signal::SIGKILL);
    }
}

/// Removes the (empty) cgroup tree at `root`, children first, waiting a
/// moment for killed processes to leave it.
fn remove_cgroup(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&entry.path());
        }
    }
    for _ in 0..50 {
        if std::fs::remove_dir(root).is_ok() || !root.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// Waits until `process` listens on `socket`; fails with its log when it
/// exits first or does not get there within `limit`.
fn serving(process: &mut Process, socket: &Path, limit: Duration) -> Result<(), Error> {
    let deadline = Instant::now() + limit;
    while !socket.exists() {
        if let Some(status) = process.exited() {
            return Err(Error::Exited {
                component: process.name().to_owned(),
                status: status.to_string(),
                log: process.log_tail(30),
            });
        }
        if Instant::now() >= deadline {
            return Err(Error::Client(format!(
                "{}: no socket at {} after {limit:?}; its log ends:\n{}",
                process.name(),
                socket.display(),
                process.log_tail(30)
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Runs `ip` with `args`, failing with its message.
pub(crate) fn ip(args: &[&str]) -> Result<(), Error> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| Error::Spawn {
            program: "ip".into(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Client(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The bridge with the node's address, made before the first pod so the
/// kubelet has its node IP at start. Its MAC address is set, not left to
/// the kernel: a bridge with an unset address takes its lowest port's, so
/// a pod's veth leaving would change the gateway's MAC under every other
/// pod's ARP cache, and their traffic to the node would stall for half a
/// minute.
fn bridge() -> Result<(), Error> {
    ip(&[
        "link", "add", BRIDGE, "address", BRIDGE_MAC, "type", "bridge",
    ])?;
    ip(&["addr", "add", &format!("{NODE_IP}/16"), "dev", BRIDGE])?;
    ip(&["link", "set", BRIDGE, "up"])
}

fn cni_config(dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "probity",
        "plugins": [{
            "type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "dataDir": dir.join("cni/ipam"),
                "ranges": [[{"subnet": POD_SUBNET, "gateway": NODE_IP}]],
                // Inside the run's namespace: the default route leads to
                // the bridge, and nowhere from there.
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        }],
    })
    .to_string()
}

fn containerd_config(dir: &Path, pause: &str) -> String {
    let d = dir.join("containerd");
    let d = d.display();
    let cni = dir.join("cni/net.d");
    format!(
        r#"version = 3
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
# NRI's socket defaults to the machine's /var/run/nri: keep it in the run's
# directory, or a socket left by a killed containerd fails the next start.
[plugins.'io.containerd.nri.v1.nri']
  socket_path = "{d}/nri.sock"
[plugins.'io.containerd.cri.v1.runtime']
  # runc cannot lower oom_score_adj without CAP_SYS_RESOURCE.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{CNI_BIN_DIR}"]
    conf_dir = "{cni}"
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = "{RUNC}"
        SystemdCgroup = false
[plugins.'io.containerd.transfer.v1.local']
  [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
    platform = "linux/amd64"
    snapshotter = "native"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "native"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{pause}"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "{d}/certs.d"
"#,
        cni = cni.display(),
    )
}

fn kubelet_config_yaml(socket: &Path, cgroup_root: &str, client_ca: &Path) -> String {
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{cgroup_root}
oomScoreAdj: 0
makeIPTablesUtilChains: false
containerRuntimeEndpoint: unix://{socket}
# The API server's kubelet client certificate is signed by the cluster CA;
# each request is authorized by a SubjectAccessReview.
authentication: {{anonymous: {{enabled: false}}, webhook: {{enabled: false}}, x509: {{clientCAFile: "{client_ca}"}}}}
authorization: {{mode: Webhook}}
readOnlyPort: 0
address: {NODE_IP}
failSwapOn: false
resolvConf: ""
serializeImagePulls: false
localStorageCapacityIsolation: false
evictionHard: {{"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%"}}
"#,
        socket = socket.display(),
        client_ca = client_ca.display(),
    )
}
