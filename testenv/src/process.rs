//! A child process that cannot outlive the code that started it, and the
//! loopback ports the harness hands to what it starts.
//!
//! Every process the harness, the end-to-end tests, the benchmarks and the
//! demo start goes through [`Process`]: dropped, it is stopped and reaped, so
//! a failed assertion or an early `?` leaves nothing running. A process that
//! should also be stopped when the whole test binary is killed is handed to
//! a control plane's reaper with [`crate::TestEnv::adopt`].

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::Error;
use crate::sweep::signal;

/// A started child process; stopped when dropped (SIGKILL unless
/// [`Process::stop_on_drop`] gives it a grace period), and always reaped.
#[derive(Debug)]
pub struct Process {
    name: String,
    pid: u32,
    child: Option<Child>,
    ended: Option<ExitStatus>,
    log: Option<PathBuf>,
    drop_grace: Duration,
}

impl Process {
    /// Starts `command` with stdin closed and stdout and stderr written to
    /// `log` (created, or truncated), or discarded when `log` is `None`.
    ///
    /// # Errors
    ///
    /// When the log cannot be created or the program cannot be executed.
    pub fn spawn(
        name: impl Into<String>,
        command: &mut Command,
        log: Option<&Path>,
    ) -> Result<Self, Error> {
        let (stdout, stderr) = match log {
            Some(path) => {
                let out = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
                let err = out.try_clone().map_err(|e| Error::io(path, e))?;
                (Stdio::from(out), Stdio::from(err))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|source| Error::Spawn {
                program: PathBuf::from(command.get_program()),
                source,
            })?;
        Ok(Self::adopt(name, child, log.map(Path::to_path_buf)))
    }

    /// Takes charge of a child started elsewhere; `log` is where its output
    /// goes, if anywhere.
    pub fn adopt(name: impl Into<String>, child: Child, log: Option<PathBuf>) -> Self {
        Self {
            name: name.into(),
            pid: child.id(),
            child: Some(child),
            ended: None,
            log,
            drop_grace: Duration::ZERO,
        }
    }

    /// When dropped, SIGTERM first and up to `grace` to exit before SIGKILL
    /// (the default is SIGKILL at once).
    #[must_use]
    pub fn stop_on_drop(mut self, grace: Duration) -> Self {
        self.drop_grace = grace;
        self
    }

    /// The name it was started under, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id (also after it exited).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Where its output goes, if anywhere.
    pub fn log(&self) -> Option<&Path> {
        self.log.as_deref()
    }

    /// The last `lines` lines of its log (empty without one).
    pub fn log_tail(&self, lines: usize) -> String {
        self.log
            .as_deref()
            .map(|log| log_tail(log, lines))
            .unwrap_or_default()
    }

    /// Sends SIGTERM and returns at once.
    pub fn terminate(&self) {
        if self.child.is_some() {
            signal(self.pid, Signal::SIGTERM);
        }
    }

    /// Its exit status once it has exited (reaping it), `None` while it runs.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if let Some(child) = self.child.as_mut() {
            match child.try_wait() {
                Ok(Some(status)) => {
                    self.ended = Some(status);
                    self.child = None;
                }
                Ok(None) => {}
                // Not our child any more (reaped elsewhere): nothing to stop.
                Err(_) => self.child = None,
            }
        }
        self.ended
    }

    /// Whether it still runs.
    pub fn is_running(&mut self) -> bool {
        self.exited().is_none() && self.child.is_some()
    }

    /// Waits up to `limit` for it to exit on its own; its status if it did.
    /// It keeps running otherwise.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if self.exited().is_some() || self.child.is_none() {
                return self.ended;
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL; its status when known.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if !self.is_running() {
            return self.ended;
        }
        self.terminate();
        if let Some(status) = self.wait_exit(grace) {
            return Some(status);
        }
        self.kill()
    }

    /// SIGKILL at once: no clean-up, no goodbye. Its status when known.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            self.ended = child.wait().ok();
        }
        self.ended
    }

    /// How it ended, for messages: `exit 0`, `signal: 9 (SIGKILL)`, or
    /// `still running`.
    pub fn how_it_ended(&self) -> String {
        match self.ended {
            Some(status) if status.success() => "exit 0".to_owned(),
            Some(status) => status.to_string(),
            None => "still running".to_owned(),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.drop_grace.is_zero() {
            self.kill();
        } else {
            self.stop(self.drop_grace);
        }
    }
}

/// Runs `command` to completion with `input` on its stdin, collecting stdout
/// and stderr. The input is written from a thread of its own, so a child
/// that answers before it has read everything cannot deadlock the caller.
///
/// # Errors
///
/// When the program cannot be executed or waited for.
pub fn output_with_stdin(command: &mut Command, input: &[u8]) -> Result<Output, Error> {
    let program = PathBuf::from(command.get_program());
    let spawn_error = |source| Error::Spawn {
        program: program.clone(),
        source,
    };
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let writer = child.stdin.take().map(|mut stdin| {
        let input = input.to_vec();
        // A child that exits without reading all of it is not an error
        // here: its exit status says what happened.
        std::thread::spawn(move || drop(stdin.write_all(&input)))
    });
    let output = child.wait_with_output().map_err(spawn_error)?;
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    Ok(output)
}

/// The last `lines` lines of the file at `path` (empty when unreadable).
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `n` distinct loopback ports nothing listens on right now. They are held
/// together while chosen, so they differ; another process may still take
/// one before its user binds it, which a caller retries on.
///
/// # Errors
///
/// When no loopback port can be bound.
pub fn free_ports<const N: usize>() -> Result<[u16; N], Error> {
    let any = Path::new("127.0.0.1:0");
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io(any, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0u16; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr().map_err(|e| Error::io(any, e))?.port();
    }
    Ok(ports)
}

/// One loopback port nothing listens on right now (see [`free_ports`]).
///
/// # Errors
///
/// When no loopback port can be bound.
pub fn free_port() -> Result<u16, Error> {
    free_ports::<1>().map(|[port]| port)
}

/// `127.0.0.1:<a free port>` (see [`free_ports`]).
///
/// # Errors
///
/// When no loopback port can be bound.
pub fn free_addr() -> Result<SocketAddr, Error> {
    free_port().map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_process_is_killed_and_reaped() {
        let process = Process::spawn("sleeper", Command::new("/bin/sleep").arg("30"), None)
            .expect("spawn sleep");
        let pid = process.pid();
        assert!(crate::sweep::is_running(pid));
        drop(process);
        assert!(
            !crate::sweep::is_running(pid),
            "pid {pid} survived the drop"
        );
    }

    #[test]
    fn stop_sends_sigterm_first_and_reports_how_it_ended() {
        let log = std::env::temp_dir().join(format!("probity-process-{}.log", std::process::id()));
        // Exits 3 on SIGTERM: a kill would not run the trap.
        let mut process = Process::spawn(
            "trap",
            Command::new("/bin/sh").args([
                "-c",
                "trap 'echo bye; exit 3' TERM; echo up; while :; do sleep 0.05; done",
            ]),
            Some(&log),
        )
        .expect("spawn sh");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !process.log_tail(1).contains("up") {
            assert!(Instant::now() < deadline, "the shell never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(process.is_running());
        let status = process.stop(Duration::from_secs(5)).expect("a status");
        assert_eq!(status.code(), Some(3), "{}", process.how_it_ended());
        assert!(
            process.log_tail(5).ends_with("bye"),
            "{}",
            process.log_tail(5)
        );
        assert!(!process.is_running());
        assert_eq!(process.wait_exit(Duration::ZERO), Some(status));
        let _ = std::fs::remove_file(&log);
    }

    #[test]
    fn wait_exit_leaves_a_running_process_running() {
        let mut process = Process::spawn("sleeper", Command::new("/bin/sleep").arg("30"), None)
            .expect("spawn sleep");
        assert_eq!(process.wait_exit(Duration::from_millis(50)), None);
        assert!(process.is_running());
        assert!(process.kill().is_some_and(|s| !s.success()));
        assert_eq!(process.how_it_ended(), "signal: 9 (SIGKILL)");
    }

    #[test]
    fn a_missing_program_names_itself() {
        let err = Process::spawn("ghost", &mut Command::new("/nonexistent/ghost"), None)
            .expect_err("no such program");
        assert!(err.to_string().contains("/nonexistent/ghost"), "{err}");
    }

    #[test]
    fn stdin_is_fed_while_output_is_read() {
        // More than a pipe buffer each way: a write-then-read would block.
        let input = vec![b'x'; 1 << 20];
        let out = output_with_stdin(&mut Command::new("/bin/cat"), &input).expect("cat");
        assert!(out.status.success());
        assert_eq!(out.stdout.len(), input.len());
    }

    #[test]
    fn free_ports_differ() {
        let ports = free_ports::<4>().expect("ports");
        let mut sorted = ports.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 4, "{ports:?}");
        assert!(ports.iter().all(|&p| p != 0));
    }
}
