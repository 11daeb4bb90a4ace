//! Shutdown draining: readiness fails first, the server keeps serving while
//! endpoint removal propagates, then stops accepting and drains in-flight
//! requests with a deadline. A second signal aborts.

use std::future::{Future, IntoFuture};
use std::sync::Arc;

use super::{Health, Inner};

/// Where a shutdown stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Normal operation.
    Serving,
    /// A shutdown began: `/readyz` fails, requests are still served.
    Draining,
    /// The drain delay passed: stop accepting, finish in-flight requests.
    Stopping,
    /// In-flight requests outlived the drain deadline.
    DeadlineExceeded,
    /// A second signal: stop now.
    Aborted,
}

/// How [`Health::serve_until_drained`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// The server finished every in-flight request.
    Complete,
    /// In-flight requests were still running at the drain deadline.
    DeadlineExceeded,
    /// A second signal arrived.
    Aborted,
}

impl Health {
    /// Resolves when the server should stop accepting connections: after a
    /// SIGTERM or SIGINT (or [`Health::begin_shutdown`]) and the drain
    /// delay. Meanwhile `/readyz` fails with `[-]shutdown`.
    ///
    /// The first call starts listening for the signals. Pass the future to
    /// `axum::serve(..).with_graceful_shutdown(..)`, and run the server with
    /// [`Health::serve_until_drained`] to bound the drain.
    pub fn shutdown_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        self.listen_for_signals();
        self.reached(Phase::Stopping)
    }

    /// Resolves when a shutdown reaches `phase` or a later one, without
    /// listening for signals: for a process that delivers shutdown requests
    /// itself with [`Health::begin_shutdown`]. `reached(Phase::Stopping)` is
    /// when to stop accepting work; `reached(Phase::Aborted)` is a second
    /// request.
    pub fn reached(&self, phase: Phase) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.phase.subscribe();
        async move {
            // An error means the registry is gone: nothing left to wait for.
            let _ = rx.wait_for(|p| *p >= phase).await;
        }
    }

    /// Starts a shutdown as a signal would: readiness fails now, and the
    /// drain delay starts. Calling it again aborts, as a second signal does.
    pub fn begin_shutdown(&self) {
        begin(&self.inner);
    }

    /// Runs `server` until it returns, the drain deadline passes after the
    /// drain delay, or a second signal aborts.
    ///
    /// ```no_run
    /// # async fn run(health: probity_probe::health::Health) -> std::io::Result<()> {
    /// let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
    /// let app = axum::Router::new().merge(health.router());
    /// let server = axum::serve(listener, app).with_graceful_shutdown(health.shutdown_signal());
    /// let drained = health.serve_until_drained(server).await?;
    /// tracing::info!(?drained, "stopped");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The server's own error.
    pub async fn serve_until_drained<S, E>(&self, server: S) -> Result<Drain, E>
    where
        S: IntoFuture<Output = Result<(), E>>,
    {
        let mut phase = self.inner.phase.subscribe();
        let server = server.into_future();
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => {
                result?;
                if *self.inner.phase.borrow() == Phase::Aborted {
                    return Ok(Drain::Aborted);
                }
                tracing::info!("in-flight requests drained");
                Ok(Drain::Complete)
            }
            Ok(end) = phase.wait_for(|p| *p >= Phase::DeadlineExceeded) => {
                let end = *end;
                if end == Phase::Aborted {
                    Ok(Drain::Aborted)
                } else {
                    tracing::warn!(deadline = ?self.inner.drain_deadline, "drain deadline passed with requests in flight");
                    Ok(Drain::DeadlineExceeded)
                }
            }
        }
    }

    fn listen_for_signals(&self) {
        let weak = Arc::downgrade(&self.inner);
        self.inner.signals.call_once(|| {
            tokio::spawn(async move {
                let mut signals = match Signals::new() {
                    Ok(signals) => signals,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for shutdown signals");
                        return;
                    }
                };
                loop {
                    let name = signals.recv().await;
                    let Some(inner) = weak.upgrade() else { return };
                    tracing::info!(signal = name, "shutdown signal received");
                    begin(&inner);
                }
            });
        });
    }
}

fn begin(inner: &Arc<Inner>) {
    let mut started = false;
    inner.phase.send_modify(|p| {
        if *p == Phase::Serving {
            *p = Phase::Draining;
            started = true;
        } else if *p < Phase::DeadlineExceeded {
            *p = Phase::Aborted;
        }
    });
    if !started {
        tracing::warn!("second shutdown request: aborting the drain");
        return;
    }
    tracing::info!(delay = ?inner.drain_delay, "draining: readiness failing, still serving");
    let weak = Arc::downgrade(inner);
    let (delay, deadline) = (inner.drain_delay, inner.drain_deadline);
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let advance = |from: Phase, to: Phase| {
            weak.upgrade().is_some_and(|inner| {
                inner.phase.send_if_modified(|p| {
                    let moved = *p == from;
                    if moved {
                        *p = to;
                    }
                    moved
                })
            })
        };
        if !advance(Phase::Draining, Phase::Stopping) {
            return;
        }
        tracing::info!(deadline = ?deadline, "drain delay over: no new connections, finishing in-flight requests");
        tokio::time::sleep(deadline).await;
        advance(Phase::Stopping, Phase::DeadlineExceeded);
    });
}

/// SIGTERM (what the kubelet sends) and SIGINT, listened to from the first
/// call on, so that a second signal is never missed.
#[cfg(unix)]
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> std::io::Result<Self> {
        Ok(Self)
    }

    async fn recv(&mut self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}
