//! Helpers for the operator's end-to-end tests: the real `probity`
//! binary run against the test control plane, and bounded polling.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `probity operator` process; killed (SIGKILL) when dropped.
pub struct Operator {
    child: Option<Child>,
    pub admin: String,
    pub log: PathBuf,
    pub identity: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
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
        let log = std::env::temp_dir().join(format!(
            "probity-operator-{}-{identity}.log",
            std::process::id()
        ));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_probity"))
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
            .env_remove("POD_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start probity operator");
        Self {
            child: Some(child),
            admin,
            log,
            identity: identity.to_owned(),
        }
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

    /// SIGKILL: no lease release, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).ok()?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
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
