//! What runs beside the probity-probe orders example: the database it
//! queries, and the probes it recommends for itself.

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Error;

/// A TCP service on the orders example's stand-in database protocol (a query
/// line in, a result line out, after [`Database::set_delay`]; a connection
/// that sends nothing, a TCP check, is just closed): a database as far as its
/// checks and queries can tell. It stops listening (connection refused) when
/// closed or dropped, and drops the queries it is still answering.
#[derive(Debug)]
pub struct Database {
    addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A query's longest wait for its line, and for its answer to be taken.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

impl Database {
    /// Listens on `addr` (`ip:port`; port 0 for any), answering after 5 ms.
    ///
    /// # Errors
    ///
    /// When the address cannot be bound.
    pub fn listen(addr: &str) -> Result<Self, Error> {
        let at = Path::new(addr);
        let listener = TcpListener::bind(addr).map_err(|e| Error::io(at, e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| Error::io(at, e))?;
        let addr = listener.local_addr().map_err(|e| Error::io(at, e))?;
        let delay_ms = Arc::new(AtomicU64::new(5));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (delay_ms, stop) = (Arc::clone(&delay_ms), Arc::clone(&stop));
            move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        // A thread each, bounded by its timeouts: a slow
                        // client does not hold up the next query.
                        Ok((conn, _)) => {
                            let (delay_ms, stop) = (Arc::clone(&delay_ms), Arc::clone(&stop));
                            drop(std::thread::spawn(move || answer(&conn, &delay_ms, &stop)));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            }
        });
        Ok(Self {
            addr,
            delay_ms,
            stop,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How long each query takes from now on.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Stops listening and answering.
    pub fn close(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        self.close();
    }
}

/// Answers each query line on `conn` after the delay, until the client
/// stops sending or the database is closed.
fn answer(conn: &TcpStream, delay_ms: &AtomicU64, stop: &AtomicBool) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
    let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
    // A query is a short line: a client sending more is cut off.
    let mut writer = conn;
    let mut reader = std::io::BufReader::new(conn.take(64 * 1024));
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
        let until = Instant::now() + Duration::from_millis(delay_ms.load(Ordering::Relaxed));
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if stop.load(Ordering::Relaxed) || writer.write_all(b"1\n").is_err() {
            return;
        }
        line.clear();
    }
}

/// The probes the orders example recommends for itself, as it prints them
/// at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probes {
    /// `startupProbe`, `readinessProbe` and `livenessProbe`, as YAML for a
    /// container, on the port asked for.
    pub yaml: String,
    /// The pod's `terminationGracePeriodSeconds` it prints after them.
    pub grace_seconds: u64,
}

/// Runs the orders example `binary` on loopback until it has printed its
/// recommended probes for `port` (at most 30 s), then stops it.
///
/// # Errors
///
/// When it cannot be run, or prints no probes and grace period in time.
pub fn recommended_probes(binary: &Path, port: u16) -> Result<Probes, Error> {
    let mut child = std::process::Command::new(binary)
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env("DEP_ADDR", "127.0.0.1:9")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|source| Error::Spawn {
            program: binary.to_path_buf(),
            source,
        })?;
    let Some(stdout) = child.stdout.take() else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::Client("the orders example's stdout".to_owned()));
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut yaml = String::new();
        // Bounded: what it prints before the grace period is a few lines.
        for line in std::io::BufReader::new(stdout.take(1 << 20)).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.strip_prefix("# pod spec: terminationGracePeriodSeconds:") {
                let grace = rest.split_whitespace().next().and_then(|n| n.parse().ok());
                let _ = tx.send((yaml, grace));
                return;
            }
            yaml.push_str(&line);
            yaml.push('\n');
        }
    });
    let printed = rx.recv_timeout(Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    let _ = reader.join();
    let (yaml, grace) = printed.map_err(|_| {
        Error::Client(format!(
            "{} printed no `# pod spec: terminationGracePeriodSeconds:` line within 30 s",
            binary.display()
        ))
    })?;
    let missing: Vec<&str> = ["startupProbe:", "readinessProbe:", "livenessProbe:"]
        .into_iter()
        .filter(|p| !yaml.contains(p))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Client(format!(
            "{} printed no {} in:\n{yaml}",
            binary.display(),
            missing.join(", ")
        )));
    }
    let grace_seconds = grace.ok_or_else(|| {
        Error::Client(format!(
            "{}: the terminationGracePeriodSeconds it printed is not a number",
            binary.display()
        ))
    })?;
    Ok(Probes {
        yaml,
        grace_seconds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(addr: SocketAddr) -> std::io::Result<String> {
        let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        conn.write_all(b"SELECT 1\n")?;
        let mut answer = String::new();
        std::io::BufReader::new(conn).read_line(&mut answer)?;
        Ok(answer)
    }

    #[test]
    fn the_database_answers_after_its_delay_and_refuses_once_closed() {
        let mut db = Database::listen("127.0.0.1:0").expect("listen");
        assert_eq!(query(db.addr()).expect("query"), "1\n");
        db.set_delay(Duration::from_millis(300));
        let start = Instant::now();
        assert_eq!(query(db.addr()).expect("slow query"), "1\n");
        assert!(start.elapsed() >= Duration::from_millis(300));
        let addr = db.addr();
        db.close();
        assert!(query(addr).is_err(), "closed: refused");
    }
}
