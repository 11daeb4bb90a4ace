//! The pid files of a control plane's directory, the reaper that stops its
//! processes when the owning process dies, and the sweep that removes what a
//! killed run left behind.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Error;

/// Prefix of every control-plane directory under the temp dir.
pub(crate) const DIR_PREFIX: &str = "probity-testenv-";
const OWNER_FILE: &str = "owner";
const PIDS_FILE: &str = "pids";

/// The kernel's view of a process: its state letter and start time (clock
/// ticks since boot), which together tell a live process from a recycled pid.
fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields resume
    // after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // starttime is field 22; `rest` starts at field 3.
    let start = fields.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// Whether `pid` names a running (not zombie) process.
pub(crate) fn is_running(pid: u32) -> bool {
    matches!(proc_stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// Records this process as the owner of `dir`.
pub(crate) fn write_owner(dir: &Path) -> Result<(), Error> {
    let pid = std::process::id();
    let start = proc_stat(pid).map_or(0, |(_, start)| start);
    let path = dir.join(OWNER_FILE);
    std::fs::write(&path, format!("{pid} {start}\n")).map_err(|e| Error::io(&path, e))
}

/// Appends `pid` to the directory's pid file.
pub(crate) fn record_pid(dir: &Path, pid: u32) -> Result<(), Error> {
    let path = dir.join(PIDS_FILE);
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    writeln!(file, "{pid}").map_err(|e| Error::io(&path, e))
}

/// The pids recorded in `dir`.
pub fn recorded_pids(dir: &Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join(PIDS_FILE))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn owner_alive(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join(OWNER_FILE)) else {
        // No owner recorded yet: the directory is being created right now,
        // or its creator died before writing it. Leave young ones alone.
        return std::fs::metadata(dir)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() < Duration::from_secs(60));
    };
    let mut parts = text.split_whitespace().map(str::parse::<u64>);
    let (Some(Ok(pid)), Some(Ok(start))) = (parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = u32::try_from(pid) else {
        return false;
    };
    matches!(proc_stat(pid), Some((state, s)) if state != 'Z' && (start == 0 || s == start))
}

/// What [`sweep_stale`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swept {
    /// The control-plane directory that was removed.
    pub dir: PathBuf,
    /// Processes of that control plane that were still running and were killed.
    pub killed: Vec<u32>,
}

/// Stops the processes and removes the directories of control planes whose
/// owning process has died (a test run killed mid-way). Only processes whose
/// command line names their control-plane directory are signalled, so a
/// recycled pid is never touched. [`crate::TestEnv::start`] runs
/// [`sweep_older_than`] instead.
pub fn sweep_stale() -> Vec<Swept> {
    sweep_older_than(Duration::ZERO)
}

/// Control planes [`crate::TestEnv::start`] leaves to a later sweep: a dead
/// owner's control plane younger than this is another test binary's test of
/// exactly this (test binaries run side by side), or a crash the next start
/// or `probity-testenv sweep` collects.
pub(crate) const START_SWEEP_MIN_AGE: Duration = Duration::from_secs(60);

/// [`sweep_stale`] for control planes whose pid file is at least `age` old.
pub(crate) fn sweep_older_than(age: Duration) -> Vec<Swept> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    let mut swept = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        let is_ours = entry.file_name().to_string_lossy().starts_with(DIR_PREFIX);
        if !is_ours || !dir.is_dir() || owner_alive(&dir) || younger_than(&dir, age) {
            continue;
        }
        let marker = dir.to_string_lossy().into_owned();
        let killed: Vec<u32> = recorded_pids(&dir)
            .into_iter()
            .filter(|&pid| is_running(pid) && cmdline_contains(pid, &marker))
            .collect();
        for &pid in &killed {
            signal(pid, Signal::SIGKILL);
        }
        wait_gone(&killed, Duration::from_secs(5));
        // A node's containerd shims are not in the pid file. (Its cgroups
        // are hack/isolated.sh's to remove.)
        kill_matching(&marker);
        let _ = std::fs::remove_dir_all(&dir);
        swept.push(Swept { dir, killed });
    }
    swept
}

/// SIGKILL to every process whose command line names `marker` (a
/// directory of a control plane or node), then waits briefly for them.
pub(crate) fn kill_matching(marker: &str) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let own = std::process::id();
    let pids: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own && is_running(pid) && cmdline_contains(pid, marker))
        .collect();
    for &pid in &pids {
        signal(pid, Signal::SIGKILL);
    }
    wait_gone(&pids, Duration::from_secs(5));
}

/// Whether `dir`'s pid file (or the directory, before it has one) was
/// written less than `age` ago.
fn younger_than(dir: &Path, age: Duration) -> bool {
    if age.is_zero() {
        return false;
    }
    let written = std::fs::metadata(dir.join(PIDS_FILE))
        .or_else(|_| std::fs::metadata(dir))
        .and_then(|m| m.modified());
    written.is_ok_and(|t| t.elapsed().unwrap_or_default() < age)
}

fn cmdline_contains(pid: u32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).contains(needle))
        .unwrap_or(false)
}

pub(crate) fn signal(pid: u32, sig: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

fn wait_gone(pids: &[u32], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while pids.iter().any(|&pid| is_running(pid)) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// A shell loop that waits for `owner` to die, then stops `pids` and removes
/// `dir`. This is what cleans up a control plane held in a `static` (whose
/// destructor never runs) or owned by a process that was killed.
pub(crate) fn spawn_reaper(owner: u32, dir: &Path, pids: &[u32]) -> Result<Child, Error> {
    const SCRIPT: &str = r#"
owner=$1; dir=$2; shift 2
while kill -0 "$owner" 2>/dev/null; do sleep 0.2; done
# The pid file also lists components restarted after the reaper started.
set -- "$@" $(grep -vx "$$" "$dir/pids" 2>/dev/null)
kill -TERM "$@" 2>/dev/null
i=0
while [ $i -lt 50 ]; do
  alive=0
  for p in "$@"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ $alive -eq 0 ] && break
  sleep 0.1; i=$((i + 1))
done
kill -KILL "$@" 2>/dev/null
rm -rf "$dir"
"#;
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(SCRIPT)
        .arg("probity-testenv-reaper")
        .arg(owner.to_string())
        .arg(dir)
        .args(pids.iter().map(u32::to_string))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::Spawn {
            program: PathBuf::from("/bin/sh"),
            source: e,
        })?;
    record_pid(dir, child.id())?;
    Ok(child)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests that sweep take turns: a sweep may remove another test's
    /// directory while it is still being set up (owner not written yet).
    static SWEEPS: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn one_sweeper() -> std::sync::MutexGuard<'static, ()> {
        SWEEPS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[test]
    fn own_process_is_running_and_parsed() {
        let (state, start) = proc_stat(std::process::id()).expect("own stat");
        assert_ne!(state, 'Z');
        assert!(start > 0);
        assert!(is_running(std::process::id()));
        assert!(!is_running(u32::MAX));
    }

    #[test]
    fn sweep_kills_orphans_of_a_dead_owner_only() {
        let _turn = one_sweeper();
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        // An owner that is certainly dead: a child we have already reaped.
        let mut dead = Command::new("/bin/true").spawn().expect("spawn true");
        let dead_pid = dead.id();
        dead.wait().expect("wait");
        std::fs::write(dir.join(OWNER_FILE), format!("{dead_pid} 1\n")).expect("owner");
        // An orphan whose command line names the directory, and an unrelated
        // process that does not.
        let marker = dir.to_string_lossy().into_owned();
        let mut orphan = Command::new("/bin/sh")
            .args(["-c", "sleep 30; true", &marker])
            .spawn()
            .expect("spawn orphan");
        let mut bystander = Command::new("/bin/sleep").arg("30").spawn().expect("spawn");
        record_pid(&dir, orphan.id()).expect("pid");
        record_pid(&dir, bystander.id()).expect("pid");
        // Until it has exec'd, a forked child still shows our command line.
        let exec_deadline = Instant::now() + Duration::from_secs(5);
        while !cmdline_contains(orphan.id(), &marker) {
            assert!(Instant::now() < exec_deadline, "orphan never exec'd");
            std::thread::sleep(Duration::from_millis(10));
        }

        let swept = sweep_stale();
        let ours: Vec<&Swept> = swept.iter().filter(|s| s.dir == dir).collect();
        assert_eq!(ours.len(), 1, "{swept:?}");
        assert_eq!(ours[0].killed, vec![orphan.id()]);
        assert!(!dir.exists());
        assert!(orphan.wait().is_ok_and(|s| !s.success()));
        assert!(
            bystander.try_wait().expect("try_wait").is_none(),
            "bystander was killed"
        );
        let _ = bystander.kill();
        let _ = bystander.wait();
    }

    #[test]
    fn live_owner_is_left_alone() {
        let _turn = one_sweeper();
        let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}live-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        write_owner(&dir).expect("owner");
        let swept = sweep_stale();
        assert!(swept.iter().all(|s| s.dir != dir), "{swept:?}");
        assert!(dir.exists());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
