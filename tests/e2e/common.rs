//! Helpers for the operator's end-to-end tests: the real `probity`
//! binary run against the test control plane, and bounded polling.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use probity_testenv::Process;

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Every `probity operator` watches the whole shared control plane and, as
/// the leader of its own lease, writes status and Events for every policy in
/// it. The admission tests' operators tolerate each other (they assert on
/// admission answers, not on status or Event counts), so they run together
/// under [`operators_together`]; a test that asserts on what an operator
/// writes takes [`operator_alone`].
static OPERATORS: RwLock<()> = RwLock::const_new(());

/// Held by tests whose operators may run beside each other.
pub async fn operators_together() -> RwLockReadGuard<'static, ()> {
    OPERATORS.read().await
}

/// Held by a test whose operator must be the only one in the cluster.
pub async fn operator_alone() -> RwLockWriteGuard<'static, ()> {
    OPERATORS.write().await
}

/// A `probity operator` process; killed (SIGKILL) when dropped.
pub struct Operator {
    process: Process,
    pub admin: String,
    pub log: PathBuf,
    pub identity: String,
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    probity_testenv::free_port().expect("a free loopback port")
}

impl Operator {
    /// Starts the operator with `kubeconfig`, electing a leader on
    /// `lease` in `lease_namespace` with a 3 s lease.
    pub fn start(
        kubeconfig: &std::path::Path,
        identity: &str,
        lease_namespace: &str,
        extra: &[&str],
    ) -> Self {
        let port = free_port();
        let admin = format!("127.0.0.1:{port}");
        // Unique per operator: every test of this binary shares its pid.
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = std::env::temp_dir().join(format!(
            "probity-operator-{}-{n}-{identity}.log",
            std::process::id()
        ));
        let mut command = Command::new(env!("CARGO_BIN_EXE_probity"));
        command
            .args([
                "--log-level",
                "info,probity=debug",
                "operator",
                "--admin-addr",
                &admin,
                "--identity",
                identity,
                "--lease-namespace",
                lease_namespace,
                "--lease-duration",
                "3",
            ])
            .args(extra)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE");
        let process =
            Process::spawn(identity, &mut command, Some(&log)).expect("start probity operator");
        Self {
            process,
            admin,
            log,
            identity: identity.to_owned(),
        }
    }

    /// Starts an operator that serves the webhooks on `127.0.0.1:port`
    /// with a self-managed certificate for that address, and writes its CA
    /// into the named webhook configurations (`""`: none).
    pub fn with_webhooks(
        kubeconfig: &std::path::Path,
        identity: &str,
        lease_namespace: &str,
        port: u16,
        validating: &str,
        mutating: &str,
        extra: &[&str],
    ) -> Self {
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec![
            "--webhook-addr",
            &addr,
            "--tls-ip-address",
            "127.0.0.1",
            "--validating-webhook-configuration",
            validating,
            "--mutating-webhook-configuration",
            mutating,
        ];
        args.extend_from_slice(extra);
        Self::start(kubeconfig, identity, lease_namespace, &args)
    }

    /// The log so far, for assertion messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET on the admin port: (status, body).
    pub async fn get(&self, path: &str) -> Option<(u16, String)> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(&self.admin),
        )
        .await
        .ok()?
        .ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
            .await
            .ok()?
            .ok()?;
        let status = response.split_whitespace().nth(1)?.parse().ok()?;
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
        Some((status, body))
    }

    /// The operator's process id, while it runs.
    pub fn pid(&mut self) -> Option<u32> {
        self.process.is_running().then(|| self.process.pid())
    }

    /// SIGKILL: no lease release, no goodbye.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM and wait for exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.sigterm();
        self.wait_exit(Duration::from_secs(15))
    }

    /// Sends SIGTERM and returns at once.
    pub fn sigterm(&self) {
        self.process.terminate();
    }

    /// Whether the process has exited (it is reaped if so).
    pub fn exited(&mut self) -> bool {
        !self.process.is_running()
    }

    /// Waits up to `timeout` for the process to exit and returns its exit
    /// code; kills it (and returns `None`) when it does not.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        match self.process.wait_exit(timeout) {
            Some(status) => status.code(),
            None => {
                self.process.kill();
                None
            }
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        } else {
            eprintln!("operator {} log: {}", self.identity, self.log.display());
        }
    }
}

/// A policy kind whose status the tests read.
pub trait WithStatus {
    fn policy_status(&self) -> Option<&probity::policy::PolicyStatus>;
}

impl WithStatus for probity::policy::ReadinessPolicy {
    fn policy_status(&self) -> Option<&probity::policy::PolicyStatus> {
        self.status.as_ref()
    }
}

impl WithStatus for probity::policy::ClusterReadinessPolicy {
    fn policy_status(&self) -> Option<&probity::policy::PolicyStatus> {
        self.status.as_ref()
    }
}

/// The status of policy `name`, once written for its current generation;
/// the reason otherwise, for [`eventually`].
pub async fn status_of<P>(
    api: &kube::Api<P>,
    name: &str,
) -> Result<probity::policy::PolicyStatus, String>
where
    P: kube::Resource + WithStatus + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let policy = api.get(name).await.map_err(|e| e.to_string())?;
    let status = policy.policy_status().cloned().ok_or("no status yet")?;
    if status.observed_generation != policy.meta().generation {
        return Err(format!(
            "status of generation {:?}",
            status.observed_generation
        ));
    }
    Ok(status)
}

/// Polls `probe` every 200 ms until it returns `Some`, or panics after
/// `timeout` with `what` and the last value seen.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        assert!(
            Instant::now() < deadline,
            "{what}: not reached within {timeout:?}; last seen: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the API server calls a webhook configuration just written
/// (failure policy `Fail`) before its server runs: a dry-run create of
/// `object` then fails closed. The API server loads webhook configurations
/// from a watch, a moment after they are written, and admits without asking
/// until then, which a test must not take for its webhook's answer.
pub async fn until_webhook_called<K>(api: &kube::Api<K>, object: &K)
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let dry_run = kube::api::PostParams {
        dry_run: true,
        ..kube::api::PostParams::default()
    };
    eventually(
        Duration::from_secs(60),
        "the API server calls the new webhook configuration",
        || async {
            match api.create(&dry_run, object).await {
                Err(kube::Error::Api(e)) if e.message.contains("failed calling webhook") => Ok(()),
                Err(e) => Err(e.to_string()),
                Ok(_) => Err("admitted without asking the webhook".to_owned()),
            }
        },
    )
    .await;
}

/// One HTTPS request to `127.0.0.1:port`, trusting only `ca_pem`:
/// (status, body, the server's leaf certificate in DER).
pub async fn https(
    port: u16,
    ca_pem: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Result<(u16, String, Vec<u8>), String> {
    use rustls::pki_types::pem::PemObject as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let name =
        rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    let mut tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_owned())?
        .map_err(|e| format!("TLS: {e}"))?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    // A server may answer (413) and close before the body is all sent, as
    // HTTP allows: read its answer whatever the write says.
    let written = tls.write_all(body).await;
    let mut response = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut response))
        .await
        .map_err(|_| "response timed out".to_owned())?;
    if response.is_empty() {
        written.map_err(|e| e.to_string())?;
        read.map_err(|e| e.to_string())?;
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body, leaf))
}

/// The ReplicaSet `<deployment>-<hash>` a Deployment controller would
/// create for `deployment` (in `ns`, whose pods run `containers`), owned by
/// the Deployment with its real UID; created if missing. Returns its UID,
/// for the ownerReference of the pods a kubelet-style test writes: pods
/// are judged through their ReplicaSet only when it exists with that UID
/// and the same containers.
pub async fn replicaset_of(
    client: &kube::Client,
    ns: &str,
    deployment: &str,
    hash: &str,
    containers: serde_json::Value,
) -> String {
    use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
    use kube::Api;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let owner_uid = deployments
        .get(deployment)
        .await
        .ok()
        .and_then(|d| d.metadata.uid)
        .expect("the Deployment exists");
    let replicasets: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let name = format!("{deployment}-{hash}");
    if let Ok(Some(rs)) = replicasets.get_opt(&name).await {
        return rs.metadata.uid.unwrap_or_default();
    }
    let labels = serde_json::json!({"app": deployment, "pod-template-hash": hash});
    let rs: ReplicaSet = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "labels": labels,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment",
                "name": deployment, "uid": owner_uid, "controller": true}]},
        "spec": {"selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": containers}}},
    }))
    .expect("replicaset");
    replicasets
        .create(&kube::api::PostParams::default(), &rs)
        .await
        .expect("create the ReplicaSet")
        .metadata
        .uid
        .unwrap_or_default()
}
