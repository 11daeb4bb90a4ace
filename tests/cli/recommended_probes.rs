//! The probes `probity-probe` recommends pass `probity lint`'s default
//! policy: the crate and the linter agree on what an honest probe is.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use probity_probe::health::{Health, ProbeTarget};

fn deployment(probes: &str) -> String {
    let indented: String = probes.lines().map(|l| format!("          {l}\n")).collect();
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: orders
spec:
  selector:
    matchLabels: {{app: orders}}
  template:
    metadata:
      labels: {{app: orders}}
    spec:
      containers:
        - name: orders
          image: ghcr.io/acme/orders:1.4.2@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
          ports:
            - {{name: http, containerPort: 8080}}
{indented}"
    )
}

fn lint(manifest: &str) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_probity"))
        .args(["lint", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run probity lint");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(manifest.as_bytes())
        .expect("write manifest");
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn recommended_probes_pass_the_default_policy() {
    for (target, drain) in [
        (ProbeTarget::port(8080), Duration::from_secs(5)),
        (ProbeTarget::named_port("http"), Duration::from_secs(30)),
        (ProbeTarget::port(8080), Duration::from_secs(1)),
    ] {
        let health = Health::builder()
            .probe_target(target)
            .drain(drain, Duration::from_secs(20))
            .build()
            .expect("valid");
        let _beat = health.heartbeat("consumer-loop", Duration::from_secs(45));
        let manifest = deployment(&health.recommended_probes());
        let (code, out) = lint(&manifest);
        assert_eq!(code, 0, "{out}\n{manifest}");
    }
}
