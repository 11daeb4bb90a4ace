//! Plain HTTP/1.1 GETs to the orders example's endpoints and probes, and how
//! the tour prints their answers.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use probity_testenv::Process;

use super::{WAIT, wait};

/// Waits (bounded) until GET `path` on `addr` answers 200; fails early, with
/// the log's tail, if the process exits.
pub(super) fn wait_until_ok(
    process: &mut Process,
    addr: SocketAddr,
    path: &str,
) -> anyhow::Result<()> {
    let up = wait(WAIT, &format!("{}'s {path}", process.name()), || {
        if process.exited().is_some() {
            return Some(false);
        }
        (http_get(addr, path).ok()?.status == 200).then_some(true)
    })?;
    if !up {
        bail!("{} exited:\n{}", process.name(), process.log_tail(20));
    }
    Ok(())
}

/// One HTTP answer.
pub(super) struct Answer {
    pub(super) status: u16,
    headers: String,
    pub(super) body: String,
    took: Duration,
}

/// A GET over a fresh connection, bounded to 10 s.
pub(super) fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<Answer> {
    let start = Instant::now();
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to {addr}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    conn.read_to_string(&mut raw)
        .with_context(|| format!("reading the answer to GET {path}"))?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in the answer to GET {path}"))?;
    Ok(Answer {
        status,
        headers: head.to_owned(),
        body: body.to_owned(),
        took: start.elapsed(),
    })
}

pub(super) fn show_probe(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let answer = http_get(addr, path)?;
    println!("  GET {path} -> {}", answer.status);
    for line in answer.body.lines() {
        println!("    {line}");
    }
    Ok(())
}

/// `n` concurrent GET /orders; their answers.
fn burst(addr: SocketAddr, n: usize) -> Vec<anyhow::Result<Answer>> {
    let calls: Vec<_> = (0..n)
        .map(|_| std::thread::spawn(move || http_get(addr, "/orders")))
        .collect();
    calls
        .into_iter()
        .map(|c| {
            c.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("request thread panicked")))
        })
        .collect()
}

/// The database turns slow: 20 calls to GET /orders on `addr` (`target`
/// says where), 10 at a time, their answers summarized, then readiness.
pub(super) fn slow_database(
    db: &probity_testenv::orders::Database,
    addr: SocketAddr,
    target: &str,
) -> anyhow::Result<()> {
    println!(
        "\n  The database turns slow (3 s per query). 20 calls to GET /orders{target}, 10 at a time:"
    );
    db.set_delay(Duration::from_secs(3));
    let mut answers = Vec::new();
    for _ in 0..2 {
        answers.extend(burst(addr, 10));
    }
    summarize(&answers);
    show_probe(addr, "/readyz?verbose")
}

fn summarize(answers: &[anyhow::Result<Answer>]) {
    let mut groups: Vec<(u16, usize, Duration, String)> = Vec::new();
    for answer in answers.iter().flatten() {
        let retry_after = answer
            .headers
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("retry-after")
                    .then(|| format!(", Retry-After: {}", v.trim()))
            })
            .unwrap_or_default();
        let what = format!("{}{retry_after}", answer.body.trim());
        match groups.iter_mut().find(|g| g.0 == answer.status) {
            Some(g) => {
                g.1 += 1;
                g.2 = g.2.max(answer.took);
            }
            None => groups.push((answer.status, 1, answer.took, what)),
        }
    }
    for (status, count, slowest, what) in groups {
        println!(
            "    {count:>2} x {status} within {:.2} s: {what}",
            slowest.as_secs_f64()
        );
    }
    let failed = answers.iter().filter(|a| a.is_err()).count();
    if failed > 0 {
        println!("    {failed} calls got no answer");
    }
}
