//! A real Redis for tests: Debian's `redis-server` 7.0 on a free loopback
//! port with a directory of its own, optionally with a password, TLS, and
//! append-only persistence; paused (`SIGSTOP`), killed and restarted on the
//! same port and data by the fault tests.
//!
//! The binary comes from `hack/redis.sh install`, found through
//! `$PROBITY_REDIS_BIN` or the cache that script fills. A reaper stops the
//! server when the process that started it dies, however it dies, and the
//! stale sweep removes what a killed reaper left.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::process::{Process, free_port};
use crate::sweep::{self, signal};
use crate::{Error, e2e_required};

/// Environment variable naming the `redis-server` binary.
pub const REDIS_BIN_ENV: &str = "PROBITY_REDIS_BIN";
/// How to fetch the binary.
pub const REDIS_HINT: &str = "hack/redis.sh install";

/// How to run the server.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `requirepass`: clients must authenticate.
    pub password: Option<String>,
    /// Serve TLS only (`rediss://`), with a certificate for 127.0.0.1
    /// signed by a CA of the run's own ([`Redis::ca_cert`]).
    pub tls: bool,
    /// `appendonly yes` with `appendfsync always`: an acknowledged write
    /// survives a kill and restart.
    pub persistence: bool,
}

/// A running `redis-server`; stopped (SIGKILL) and its directory removed
/// when dropped.
#[derive(Debug)]
pub struct Redis {
    bin: PathBuf,
    options: Options,
    port: u16,
    dir: PathBuf,
    process: Option<Process>,
    reaper: Option<Child>,
    paused: bool,
}

fn locate() -> Result<PathBuf, String> {
    crate::binaries::locate_tool(REDIS_BIN_ENV, "tools/redis/redis-server")
}

/// The binary, or `None` (after saying so) when it is missing and tests may
/// skip.
///
/// # Panics
///
/// When it is missing and end-to-end tests are required.
pub fn locate_or_skip() -> Option<PathBuf> {
    match locate() {
        Ok(bin) => Some(bin),
        Err(why) => {
            assert!(
                !e2e_required(),
                "Redis is required here but unavailable: {why}; fetch it with `{REDIS_HINT}`"
            );
            let line =
                format!("skipping: redis-server not found ({why}); fetch it with `{REDIS_HINT}`\n");
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
            None
        }
    }
}

impl Redis {
    /// Starts a server with `options`, or returns `None` (after saying so)
    /// when the binary is missing and tests may skip.
    ///
    /// # Panics
    ///
    /// When the binary is missing and end-to-end tests are required, or the
    /// server does not start.
    pub fn start_or_skip(options: Options) -> Option<Self> {
        let bin = locate_or_skip()?;
        Some(Self::start(&bin, options).unwrap_or_else(|e| panic!("starting redis-server: {e}")))
    }

    /// Starts `bin` on a free loopback port and waits until it accepts
    /// connections.
    ///
    /// # Errors
    ///
    /// When it cannot be started or is not ready within 20 s.
    pub fn start(bin: &Path, options: Options) -> Result<Self, Error> {
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!(
            "{}redis-{}-{port}",
            sweep::DIR_PREFIX,
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        sweep::write_owner(&dir)?;
        let mut redis = Self {
            bin: bin.to_owned(),
            options,
            port,
            dir,
            process: None,
            reaper: None,
            paused: false,
        };
        if redis.options.tls {
            let pki = redis.dir.join("pki");
            std::fs::create_dir_all(&pki).map_err(|e| Error::io(&pki, e))?;
            crate::pki::write(&pki)?;
        }
        redis.launch()?;
        Ok(redis)
    }

    fn launch(&mut self) -> Result<(), Error> {
        let port = self.port.to_string();
        let mut command = Command::new(&self.bin);
        command
            .args([
                "--bind",
                "127.0.0.1",
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
            ])
            .args(["--save", "", "--logfile", "", "--loglevel", "notice"])
            .arg("--dir")
            .arg(&self.dir);
        if self.options.tls {
            let pki = self.dir.join("pki");
            command
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(pki.join("apiserver.crt"))
                .arg("--tls-key-file")
                .arg(pki.join("apiserver.key"))
                .arg("--tls-ca-cert-file")
                .arg(pki.join("ca.crt"));
        } else {
            command.args(["--port", &port]);
        }
        if let Some(password) = &self.options.password {
            command.args(["--requirepass", password]);
        }
        if self.options.persistence {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let log = self.dir.join("redis.log");
        let mut process = Process::spawn("redis-server", &mut command, Some(&log))?;
        sweep::record_pid(&self.dir, process.pid())?;
        if self.reaper.is_none() {
            self.reaper = Some(sweep::spawn_reaper(
                std::process::id(),
                &self.dir,
                &[process.pid()],
            )?);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Ready to accept connections") {
                self.process = Some(process);
                self.paused = false;
                return Ok(());
            }
            if let Some(status) = process.exited() {
                return Err(Error::Exited {
                    component: "redis-server".to_owned(),
                    status: status.to_string(),
                    log: process.log_tail(30),
                });
            }
            if Instant::now() > deadline {
                return Err(Error::Client(format!(
                    "redis-server was not ready within 20 s:\n{}",
                    process.log_tail(30)
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://[:password@]127.0.0.1:PORT/`, or `rediss://` with TLS.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls { "rediss" } else { "redis" };
        let auth = self
            .options
            .password
            .as_ref()
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        format!("{scheme}://{auth}127.0.0.1:{}/", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA that signed the TLS certificate (PEM), when started with TLS.
    pub fn ca_cert(&self) -> Option<PathBuf> {
        self.options.tls.then(|| self.dir.join("pki/ca.crt"))
    }

    /// The server's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// The last `lines` of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process
            .as_ref()
            .map(|p| p.log_tail(lines))
            .unwrap_or_default()
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing
    /// answers, as in a network partition.
    pub fn pause(&mut self) {
        if let Some(pid) = self.pid() {
            signal(pid, Signal::SIGSTOP);
            self.paused = true;
        }
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&mut self) {
        if let Some(pid) = self.pid() {
            signal(pid, Signal::SIGCONT);
            self.paused = false;
        }
    }

    /// Kills the server (SIGKILL): clients see connections reset and
    /// refused. Its directory, and the append-only file in it, stay.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            if self.paused {
                signal(process.pid(), Signal::SIGCONT);
            }
            process.kill();
        }
    }

    /// Starts the server again on the same port and directory (with
    /// persistence, it loads what it had acknowledged).
    ///
    /// # Errors
    ///
    /// When it does not start within 20 s.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.kill();
        self.launch()
    }

    /// Sends one command in RESP and returns the raw reply (for checks
    /// that should not go through the client under test). Plain TCP only.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached or answers nothing within 5 s.
    pub fn command(&self, args: &[&str]) -> Result<String, Error> {
        let addr = format!("127.0.0.1:{}", self.port);
        let io = |e| Error::io(Path::new(&addr), e);
        let mut stream = TcpStream::connect(&addr).map_err(io)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(io)?;
        let mut request = Vec::new();
        let mut push = |args: &[&str]| {
            request.extend(format!("*{}\r\n", args.len()).as_bytes());
            for arg in args {
                request.extend(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
            }
        };
        if let Some(password) = &self.options.password {
            push(&["AUTH", password]);
        }
        push(args);
        stream.write_all(&request).map_err(io)?;
        let replies = 1 + usize::from(self.options.password.is_some());
        let mut reply = Vec::new();
        let mut buf = [0; 4096];
        while resp_items(&reply).is_none_or(|(n, _)| n < replies) {
            let n = stream.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&buf[..n]);
        }
        let skip = if replies > 1 {
            resp_items(&reply[..]).map_or(0, |(_, first_end)| first_end)
        } else {
            0
        };
        Ok(String::from_utf8_lossy(&reply[skip..]).into_owned())
    }
}

/// How many complete RESP replies `buf` starts with, and where the first
/// one ends; `None` when not even the first is complete.
fn resp_items(buf: &[u8]) -> Option<(usize, usize)> {
    fn item(buf: &[u8], at: usize) -> Option<usize> {
        let line_end = at + buf.get(at..)?.windows(2).position(|w| w == b"\r\n")?;
        let head = std::str::from_utf8(buf.get(at + 1..line_end)?).ok()?;
        let next = line_end + 2;
        match buf.get(at)? {
            b'+' | b'-' | b':' => Some(next),
            b'$' => match head.parse::<i64>().ok()? {
                n if n < 0 => Some(next),
                n => {
                    let end = next + usize::try_from(n).ok()? + 2;
                    (buf.len() >= end).then_some(end)
                }
            },
            b'*' => {
                let mut at = next;
                for _ in 0..head.parse::<i64>().ok()?.max(0) {
                    at = item(buf, at)?;
                }
                Some(at)
            }
            _ => None,
        }
    }
    let first = item(buf, 0)?;
    let mut count = 1;
    let mut at = first;
    while let Some(next) = item(buf, at) {
        count += 1;
        at = next;
    }
    Some((count, first))
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        if let Some(mut reaper) = self.reaper.take() {
            let _ = reaper.kill();
            let _ = reaper.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
