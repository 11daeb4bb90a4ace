//! The fleet's background task: connect, catch up, publish, listen, hold
//! probe leases; on any Redis trouble, local-only until reconnected.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures_util::StreamExt as _;
use redis::aio::MultiplexedConnection;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use super::wire::{BreakerReport, Event, MAX_MESSAGE, Message};
use super::{Link, State};
use crate::breaker::{Gate, State as BreakerState, Transition};

/// Replica ids read back when catching up.
const CATCH_UP: usize = super::peers::MAX_PEERS;
/// How often due trials and peer expiry are looked at between heartbeats.
const TICK: Duration = Duration::from_millis(50);
/// How long the replica index (`<prefix>:replicas`) outlives the last
/// heartbeat that refreshed it.
const INDEX_TTL: Duration = Duration::from_secs(3600);

/// Releases (`ARGV[2]` = 0) or re-times a lease, only if this replica
/// (`ARGV[1]`) holds it.
const LEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[2] == '0' then return redis.call('DEL', KEYS[1]) end
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

pub(crate) fn client(url: &str, root_cert: Option<Vec<u8>>) -> redis::RedisResult<redis::Client> {
    match root_cert {
        Some(pem) => redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            },
        ),
        None => redis::Client::open(url),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Why a session ended.
enum End {
    Stopped,
    Lost(String),
}

fn lost(what: &str, e: impl std::fmt::Display) -> End {
    End::Lost(format!("{what}: {e}"))
}

impl State {
    fn key(&self, what: &str) -> String {
        format!("{}:{what}", self.prefix)
    }

    /// Every breaker decides alone; peers are forgotten.
    fn go_local(&self, reason: String) {
        for b in &self.breakers {
            b.breaker.set_gate(Gate::Local, Duration::ZERO);
        }
        self.peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let changed = self.link.send_if_modified(|link| {
            let was_down = matches!(link, Link::Down(_));
            *link = Link::Down(reason.clone());
            !was_down
        });
        if changed {
            tracing::warn!(%reason, "shared breaker state unavailable: breakers decide alone");
        }
    }

    fn patience(&self, lease: Duration) -> Duration {
        lease + self.ttl * 2
    }

    fn go_shared(&self) {
        for b in &self.breakers {
            if b.breaker.gate() != Gate::Probe {
                b.breaker.set_gate(Gate::Fleet, self.patience(b.lease));
            }
        }
        self.link.send_replace(Link::Up);
        tracing::info!(replica = %self.replica, "sharing breaker state");
    }

    fn message(&self, event: Option<Event>) -> Message {
        let breakers = self
            .breakers
            .iter()
            .map(|b| {
                let state = b.breaker.state();
                let snap = b.breaker.snapshot();
                BreakerReport {
                    dependency: b.name.clone(),
                    state,
                    own: b.breaker.own_evidence() && state != BreakerState::Closed,
                    remaining: b.breaker.remaining_open(),
                    calls: snap.calls,
                    failures: snap.failures,
                    slow: snap.slow,
                }
            })
            .collect();
        let failing = self
            .failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        Message {
            replica: self.replica.clone(),
            breakers,
            failing,
            event,
        }
    }

    /// Opens every closed breaker a quorum of live peers reports open.
    fn apply_quorum(&self) {
        let peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        for b in &self.breakers {
            if b.breaker.state() != BreakerState::Closed {
                continue;
            }
            let reports = peers.reports(&b.name, now);
            if let Some(remaining) = reports.quorum_open(b.quorum)
                && b.breaker.fleet_open(remaining.max(TICK))
            {
                tracing::warn!(
                    dependency = %b.name,
                    open_peers = reports.open.len(),
                    live_peers = reports.live,
                    "circuit breaker open: a quorum of replicas reports it open"
                );
            }
        }
    }

    /// A peer's message: remember it, adopt a trial verdict, check quorums.
    fn receive(&self, bytes: &[u8]) {
        let Some(message) = Message::decode(bytes) else {
            tracing::debug!(len = bytes.len(), "ignored a malformed fleet message");
            return;
        };
        if message.replica == self.replica {
            return;
        }
        if let Some(event) = &message.event
            && event.probe
            && let Some(b) = self.breakers.iter().find(|b| b.name == event.dependency)
        {
            match event.to {
                BreakerState::Closed if b.breaker.fleet_close() => {
                    tracing::info!(dependency = %b.name, prober = %message.replica, "circuit breaker closed: the fleet's trial succeeded");
                }
                BreakerState::Open => {
                    let remaining = message
                        .breakers
                        .iter()
                        .find(|r| r.dependency == b.name)
                        .map_or(Duration::ZERO, |r| r.remaining);
                    b.breaker.fleet_extend(remaining);
                }
                _ => {}
            }
        }
        let accepted = self
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .record(message, Instant::now());
        if accepted {
            self.apply_quorum();
        }
    }
}

/// Commands bounded by the fleet's timeout.
struct Conn<'a> {
    state: &'a State,
    conn: MultiplexedConnection,
}

impl Conn<'_> {
    async fn query<T: redis::FromRedisValue>(
        &mut self,
        what: &str,
        cmd: &redis::Cmd,
    ) -> Result<T, End> {
        match tokio::time::timeout(self.state.timeout, cmd.query_async(&mut self.conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(lost(what, e)),
            Err(_) => Err(lost(what, "timed out")),
        }
    }

    /// Heartbeat key, index and channel in one round trip.
    async fn publish(&mut self, event: Option<Event>) -> Result<(), End> {
        let s = self.state;
        let body = s.message(event).encode();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(s.key(&format!("replica:{}", s.replica)))
            .arg(&body)
            .arg("PX")
            .arg(ms(s.ttl))
            .ignore()
            .cmd("SADD")
            .arg(s.key("replicas"))
            .arg(&s.replica)
            .ignore()
            .cmd("PEXPIRE")
            .arg(s.key("replicas"))
            .arg(ms(INDEX_TTL))
            .ignore()
            .cmd("PUBLISH")
            .arg(s.key("fleet"))
            .arg(&body)
            .ignore();
        match tokio::time::timeout(s.timeout, pipe.query_async::<()>(&mut self.conn)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(lost("publishing", e)),
            Err(_) => Err(lost("publishing", "timed out")),
        }
    }

    /// Reads the heartbeats of the replicas in the index (a replica that
    /// starts late or reconnects sees the fleet at once) and drops index
    /// entries whose heartbeat expired.
    async fn catch_up(&mut self) -> Result<(), End> {
        let s = self.state;
        let ids: Vec<String> = self
            .query(
                "reading the replica index",
                redis::cmd("SRANDMEMBER")
                    .arg(s.key("replicas"))
                    .arg(CATCH_UP),
            )
            .await?;
        let ids: Vec<String> = ids
            .into_iter()
            .filter(|id| *id != s.replica && id.len() <= super::wire::MAX_NAME)
            .collect();
        if ids.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = ids
            .iter()
            .map(|id| s.key(&format!("replica:{id}")))
            .collect();
        let bodies: Vec<Option<Vec<u8>>> = self
            .query("reading heartbeats", redis::cmd("MGET").arg(&keys))
            .await?;
        let mut gone = Vec::new();
        for (id, body) in ids.iter().zip(bodies) {
            match body {
                Some(bytes) if bytes.len() <= MAX_MESSAGE => s.receive(&bytes),
                Some(_) => {}
                None => gone.push(id.clone()),
            }
        }
        if !gone.is_empty() {
            self.query::<i64>(
                "pruning the replica index",
                redis::cmd("SREM").arg(s.key("replicas")).arg(&gone),
            )
            .await?;
        }
        Ok(())
    }

    /// Takes the probe lease of every gated breaker whose trial is due.
    async fn take_due_leases(&mut self) -> Result<(), End> {
        let s = self.state;
        for b in &s.breakers {
            if b.breaker.gate() != Gate::Fleet || !b.breaker.trial_due() {
                continue;
            }
            let taken: Option<String> = self
                .query(
                    "taking a probe lease",
                    redis::cmd("SET")
                        .arg(s.key(&format!("lease:{}", b.name)))
                        .arg(&s.replica)
                        .arg("NX")
                        .arg("PX")
                        .arg(ms(b.lease)),
                )
                .await?;
            if taken.is_some() {
                tracing::info!(dependency = %b.name, "holding the fleet's probe lease: sending the trial");
                b.breaker.set_gate(Gate::Probe, s.patience(b.lease));
            }
        }
        Ok(())
    }

    /// A local transition: publish it; when it is this replica's trial
    /// verdict, release the lease (closed) or keep it for the new open
    /// period (open), so nobody probes again before it ends.
    async fn transition(&mut self, index: usize, t: Transition) -> Result<(), End> {
        let s = self.state;
        let Some(b) = s.breakers.get(index) else {
            return Ok(());
        };
        let verdict = b.breaker.gate() == Gate::Probe
            && t.from == BreakerState::HalfOpen
            && matches!(t.to, BreakerState::Closed | BreakerState::Open);
        if verdict {
            let hold = if t.to == BreakerState::Open {
                ms(b.breaker.remaining_open())
            } else {
                0
            };
            let script = redis::Script::new(LEASE_SCRIPT);
            let mut invocation = script.key(s.key(&format!("lease:{}", b.name)));
            invocation.arg(&s.replica).arg(hold);
            let result =
                tokio::time::timeout(s.timeout, invocation.invoke_async::<i64>(&mut self.conn))
                    .await;
            b.breaker.set_gate(Gate::Fleet, s.patience(b.lease));
            match result {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(lost("releasing a probe lease", e)),
                Err(_) => return Err(lost("releasing a probe lease", "timed out")),
            }
        }
        self.publish(Some(Event {
            dependency: b.name.clone(),
            from: t.from,
            to: t.to,
            probe: verdict,
        }))
        .await
    }

    /// Withdraws this replica's heartbeat (best effort, on shutdown).
    async fn withdraw(&mut self) {
        let s = self.state;
        let mut pipe = redis::pipe();
        pipe.cmd("DEL")
            .arg(s.key(&format!("replica:{}", s.replica)))
            .ignore()
            .cmd("SREM")
            .arg(s.key("replicas"))
            .arg(&s.replica)
            .ignore();
        let _ = tokio::time::timeout(s.timeout, pipe.query_async::<()>(&mut self.conn)).await;
    }
}

/// Forwards one breaker's transitions into the task until it stops.
async fn forward(
    index: usize,
    mut events: broadcast::Receiver<Transition>,
    tx: mpsc::Sender<(usize, Option<Transition>)>,
    mut stop: watch::Receiver<()>,
) {
    loop {
        let item = tokio::select! {
            _ = stop.changed() => return,
            item = events.recv() => item,
        };
        let sent = match item {
            Ok(t) => tx.send((index, Some(t))).await,
            // Missed some: republish the current state.
            Err(broadcast::error::RecvError::Lagged(_)) => tx.send((index, None)).await,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if sent.is_err() {
            return;
        }
    }
}

pub(crate) async fn run(state: Arc<State>, mut stop: watch::Receiver<()>) {
    let (tx, mut rx) = mpsc::channel(256);
    for (index, b) in state.breakers.iter().enumerate() {
        tokio::spawn(forward(
            index,
            b.breaker.subscribe(),
            tx.clone(),
            stop.clone(),
        ));
    }
    drop(tx);
    let backoff = crate::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut rng = fastrand::Rng::new();
    let mut attempt: u32 = 0;
    let mut previous = Duration::ZERO;
    loop {
        let started = Instant::now();
        match session(&state, &mut rx, &mut stop).await {
            End::Stopped => return,
            End::Lost(reason) => state.go_local(reason),
        }
        if started.elapsed() > Duration::from_secs(10) {
            attempt = 0;
        }
        attempt = attempt.saturating_add(1);
        let wait = backoff
            .delay(attempt, previous, &mut rng, None)
            .max(Duration::from_millis(50));
        previous = wait;
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(wait) => {}
        }
        // Transitions while disconnected are in the next heartbeat.
        while rx.try_recv().is_ok() {}
    }
}

async fn session(
    state: &State,
    rx: &mut mpsc::Receiver<(usize, Option<Transition>)>,
    stop: &mut watch::Receiver<()>,
) -> End {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(state.timeout))
        .set_response_timeout(Some(state.timeout));
    let connect = async {
        let conn = state
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| lost("connecting", e))?;
        let mut pubsub = state
            .client
            .get_async_pubsub()
            .await
            .map_err(|e| lost("subscribing", e))?;
        pubsub
            .subscribe(state.key("fleet"))
            .await
            .map_err(|e| lost("subscribing", e))?;
        Ok::<_, End>((conn, pubsub))
    };
    let (conn, pubsub) = match tokio::time::timeout(state.timeout * 4, connect).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(end)) => return end,
        Err(_) => return lost("connecting", "timed out"),
    };
    let mut messages = pubsub.into_on_message();
    let mut conn = Conn { state, conn };
    if let Err(end) = conn.catch_up().await {
        return end;
    }
    state.go_shared();
    if let Err(end) = conn.publish(None).await {
        return end;
    }
    let mut heartbeat = tokio::time::interval(state.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.tick().await;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let result = tokio::select! {
            _ = stop.changed() => {
                conn.withdraw().await;
                return End::Stopped;
            }
            item = rx.recv() => match item {
                Some((index, Some(t))) => conn.transition(index, t).await,
                Some((_, None)) => conn.publish(None).await,
                None => return End::Stopped,
            },
            message = messages.next() => match message {
                Some(m) => {
                    state.receive(m.get_payload_bytes());
                    Ok(())
                }
                None => Err(lost("subscription", "connection closed")),
            },
            () = state.failing_changed.notified() => conn.publish(None).await,
            _ = heartbeat.tick() => {
                state.peers.lock().unwrap_or_else(PoisonError::into_inner).expire(Instant::now());
                conn.publish(None).await
            }
            _ = tick.tick() => conn.take_due_leases().await,
        };
        if let Err(end) = result {
            return end;
        }
    }
}
