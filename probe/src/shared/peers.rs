//! The peers this replica has heard from, and what a quorum of them says.
//! Pure logic on `tokio::time::Instant`, so tests run on paused time.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use super::Quorum;
use super::wire::{BreakerReport, Message};
use crate::breaker::State;

/// Replicas remembered at once; messages from more are ignored until some
/// expire, so a flood of invented replica ids cannot grow the table.
pub(crate) const MAX_PEERS: usize = 512;

#[derive(Debug)]
struct Peer {
    seen: Instant,
    breakers: Vec<BreakerReport>,
    failing: Vec<String>,
}

/// The peer table: replica id -> its last message and when it came.
#[derive(Debug)]
pub(crate) struct Peers {
    own: String,
    ttl: Duration,
    table: HashMap<String, Peer>,
}

/// What the live peers report about one dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reports {
    /// Live peers (this replica not counted).
    pub(crate) live: usize,
    /// Time left in the open period of each live peer that opened on its
    /// own calls.
    pub(crate) open: Vec<Duration>,
}

impl Peers {
    pub(crate) fn new(own: String, ttl: Duration) -> Self {
        Self {
            own,
            ttl,
            table: HashMap::new(),
        }
    }

    /// Records `message`, received at `now`. Returns `false` when it was
    /// ignored (this replica's own, or the table is full).
    pub(crate) fn record(&mut self, message: Message, now: Instant) -> bool {
        if message.replica == self.own {
            return false;
        }
        if !self.table.contains_key(&message.replica) {
            self.expire(now);
            if self.table.len() >= MAX_PEERS {
                return false;
            }
        }
        self.table.insert(
            message.replica,
            Peer {
                seen: now,
                breakers: message.breakers,
                failing: message.failing,
            },
        );
        true
    }

    /// Forgets peers whose last message is older than the TTL.
    pub(crate) fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.table
            .retain(|_, p| now.saturating_duration_since(p.seen) <= ttl);
    }

    pub(crate) fn clear(&mut self) {
        self.table.clear();
    }

    fn live(&self, now: Instant) -> impl Iterator<Item = &Peer> {
        self.table
            .values()
            .filter(move |p| now.saturating_duration_since(p.seen) <= self.ttl)
    }

    /// Live peers.
    pub(crate) fn live_count(&self, now: Instant) -> usize {
        self.live(now).count()
    }

    /// What the live peers report about `dependency`.
    pub(crate) fn reports(&self, dependency: &str, now: Instant) -> Reports {
        let mut live = 0;
        let mut open = Vec::new();
        for peer in self.live(now) {
            live += 1;
            let report = peer.breakers.iter().find(|b| b.dependency == dependency);
            if let Some(b) = report
                && b.own
                && matches!(b.state, State::Open | State::HalfOpen | State::ForcedOpen)
            {
                open.push(b.remaining);
            }
        }
        Reports { live, open }
    }

    /// Live peers, and how many of them fail the readiness check `name`.
    pub(crate) fn failing(&self, name: &str, now: Instant) -> (usize, usize) {
        let mut live = 0;
        let mut failing = 0;
        for peer in self.live(now) {
            live += 1;
            failing += usize::from(peer.failing.iter().any(|f| f == name));
        }
        (failing, live)
    }
}

impl Reports {
    /// How long to open for, when the quorum says open: the median of the
    /// reporting peers' remaining open time, so one peer's outlier does not
    /// set it. `None` when there is no quorum.
    pub(crate) fn quorum_open(&self, quorum: Quorum) -> Option<Duration> {
        if self.open.len() < quorum.required(self.live + 1) {
            return None;
        }
        let mut remaining = self.open.clone();
        remaining.sort_unstable();
        remaining.get(remaining.len() / 2).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(state: State, own: bool, remaining_ms: u64) -> BreakerReport {
        BreakerReport {
            dependency: "payments".into(),
            state,
            own,
            remaining: Duration::from_millis(remaining_ms),
            calls: 0,
            failures: 0,
            slow: 0,
        }
    }

    fn message(replica: &str, breakers: Vec<BreakerReport>) -> Message {
        Message {
            replica: replica.into(),
            breakers,
            failing: Vec::new(),
            event: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_bad_node_cannot_open_the_fleet_a_quorum_can() {
        let mut peers = Peers::new("me".into(), Duration::from_secs(3));
        let now = Instant::now();
        peers.record(message("a", vec![report(State::Open, true, 4000)]), now);
        peers.record(message("b", vec![report(State::Closed, false, 0)]), now);
        let share = Quorum::Share(0.5);
        assert_eq!(peers.reports("payments", now).quorum_open(share), None);
        assert_eq!(
            peers.reports("payments", now).quorum_open(Quorum::Count(2)),
            None
        );
        peers.record(message("b", vec![report(State::Open, true, 2000)]), now);
        assert_eq!(
            peers.reports("payments", now).quorum_open(share),
            Some(Duration::from_millis(4000)),
            "two of three: the median of 2 s and 4 s picks the upper"
        );
        assert_eq!(peers.reports("other", now).quorum_open(share), None);
    }

    #[tokio::test(start_paused = true)]
    async fn peers_opened_by_quorum_are_not_evidence() {
        let mut peers = Peers::new("me".into(), Duration::from_secs(3));
        let now = Instant::now();
        peers.record(message("a", vec![report(State::Open, true, 4000)]), now);
        peers.record(message("b", vec![report(State::Open, false, 4000)]), now);
        peers.record(message("c", vec![report(State::Open, false, 4000)]), now);
        let r = peers.reports("payments", now);
        assert_eq!((r.live, r.open.len()), (3, 1));
        assert_eq!(r.quorum_open(Quorum::Share(0.25)), None, "at least two");
    }

    #[tokio::test(start_paused = true)]
    async fn silent_peers_expire_and_the_table_is_bounded() {
        let mut peers = Peers::new("me".into(), Duration::from_secs(3));
        let start = Instant::now();
        peers.record(message("a", vec![report(State::Open, true, 1)]), start);
        peers.record(message("b", vec![report(State::Open, true, 1)]), start);
        assert!(!peers.record(message("me", Vec::new()), start), "own echo");
        tokio::time::advance(Duration::from_secs(2)).await;
        peers.record(
            message("b", vec![report(State::Open, true, 1)]),
            Instant::now(),
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        let now = Instant::now();
        assert_eq!(peers.live_count(now), 1, "a went silent 4 s ago");
        assert_eq!(
            peers.reports("payments", now).quorum_open(Quorum::Count(2)),
            None
        );
        for i in 0..MAX_PEERS * 2 {
            peers.record(message(&format!("r{i}"), Vec::new()), now);
        }
        assert_eq!(peers.live_count(now), MAX_PEERS);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(peers.record(message("late", Vec::new()), Instant::now()));
        assert_eq!(peers.live_count(Instant::now()), 1, "the flood expired");
    }

    #[tokio::test(start_paused = true)]
    async fn failing_checks_are_counted_over_live_peers() {
        let mut peers = Peers::new("me".into(), Duration::from_secs(3));
        let now = Instant::now();
        for (id, failing) in [("a", true), ("b", true), ("c", false)] {
            let mut m = message(id, Vec::new());
            if failing {
                m.failing.push("postgres".into());
            }
            peers.record(m, now);
        }
        assert_eq!(peers.failing("postgres", now), (2, 3));
        assert_eq!(peers.failing("redis", now), (0, 3));
    }
}
