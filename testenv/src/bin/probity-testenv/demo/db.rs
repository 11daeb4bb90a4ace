//! The database stand-in the orders example queries.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// The database stand-in: answers each query line with a result line
/// after `delay` ms; dropped, it stops listening (connection refused).
pub(super) struct FakeDb {
    pub(super) addr: SocketAddr,
    pub(super) delay: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl FakeDb {
    pub(super) fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the database stand-in")?;
        let addr = listener.local_addr().context("its address")?;
        let delay = Arc::new(AtomicU64::new(5));
        let down = Arc::new(AtomicBool::new(false));
        let acceptor = std::thread::spawn({
            let (delay, down) = (Arc::clone(&delay), Arc::clone(&down));
            move || {
                for conn in listener.incoming() {
                    if down.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (delay, down) = (Arc::clone(&delay), Arc::clone(&down));
                    std::thread::spawn(move || answer(conn, &delay, &down));
                }
            }
        });
        Ok(Self {
            addr,
            delay,
            down,
            acceptor: Some(acceptor),
        })
    }
}

fn answer(conn: TcpStream, delay: &AtomicU64, down: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
        let until = Instant::now() + Duration::from_millis(delay.load(Ordering::Relaxed));
        while Instant::now() < until {
            if down.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if writer.write_all(b"1\n").is_err() {
            return;
        }
        line.clear();
    }
}

impl Drop for FakeDb {
    fn drop(&mut self) {
        self.down.store(true, Ordering::Relaxed);
        // Wake the acceptor so it sees `down` and drops the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}
