//! A control plane never outlives the process that started it: killed with
//! SIGKILL, its reaper stops it; with no reaper, the next start sweeps it.

#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "processes are waited for in wall time"
)]

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Both tests sweep and kill control planes machine-wide: one at a time,
/// so neither judges the other's.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Starts `probity-testenv up` and returns it with its control-plane
/// directory, once it reports ready.
fn start_owner(reaper: bool) -> Option<(Child, PathBuf)> {
    let binaries = probity_testenv::binaries_or_skip()?;
    let log = std::env::temp_dir().join(format!(
        "probity-lifecycle-{}-{reaper}.log",
        std::process::id()
    ));
    let stderr = std::fs::File::create(&log).expect("stderr log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_probity-testenv"));
    cmd.arg("up")
        .env(probity_testenv::BIN_DIR_ENV, binaries.dir())
        .stdout(Stdio::piped())
        .stderr(stderr);
    if !reaper {
        cmd.env("PROBITY_TESTENV_NO_REAPER", "1");
    }
    let mut child = cmd.spawn().expect("spawn probity-testenv");
    let stdout = child.stdout.take().expect("piped stdout");
    let Some(kubeconfig) = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("KUBECONFIG=").map(PathBuf::from))
    else {
        let status = child.wait();
        let stderr = std::fs::read_to_string(&log).unwrap_or_default();
        panic!("probity-testenv up printed no KUBECONFIG line ({status:?}); stderr:\n{stderr}");
    };
    let _ = std::fs::remove_file(&log);
    let dir = kubeconfig
        .parent()
        .expect("kubeconfig has a directory")
        .to_path_buf();
    Some((child, dir))
}

fn sigkill(child: &mut Child) {
    let pid = i32::try_from(child.id()).expect("pid fits i32");
    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("SIGKILL");
    // Reap it so it is not a zombie that still looks alive.
    child.wait().expect("wait");
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().to_owned())
        })
        .is_some_and(|rest| !rest.starts_with('Z'))
}

fn eventually(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "{what} not true after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn killed_owner_is_reaped() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let Some((mut owner, dir)) = start_owner(true) else {
        return;
    };
    let pids = probity_testenv::recorded_pids(&dir);
    assert_eq!(
        pids.len(),
        3,
        "etcd, kube-apiserver and the reaper: {pids:?}"
    );
    assert!(pids.iter().all(|&p| alive(p)));

    sigkill(&mut owner);
    eventually("all processes stopped", Duration::from_secs(20), || {
        pids.iter().all(|&p| !alive(p))
    });
    eventually("directory removed", Duration::from_secs(5), || {
        !dir.exists()
    });
}

#[test]
fn stale_control_plane_is_swept_by_pid_file() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let Some((mut owner, dir)) = start_owner(false) else {
        return;
    };
    let pids = probity_testenv::recorded_pids(&dir);
    assert_eq!(pids.len(), 2, "etcd and kube-apiserver: {pids:?}");

    sigkill(&mut owner);
    // Without a reaper the orphans keep running: this is what a killed run
    // leaves behind.
    std::thread::sleep(Duration::from_millis(500));
    assert!(pids.iter().all(|&p| alive(p)), "orphans should still run");

    let swept = probity_testenv::sweep_stale();
    let ours = swept
        .iter()
        .find(|s| s.dir == dir)
        .expect("our directory was swept");
    let mut killed = ours.killed.clone();
    killed.sort_unstable();
    let mut expected = pids.clone();
    expected.sort_unstable();
    assert_eq!(killed, expected);
    eventually("orphans stopped", Duration::from_secs(10), || {
        pids.iter().all(|&p| !alive(p))
    });
    assert!(!dir.exists());
}
