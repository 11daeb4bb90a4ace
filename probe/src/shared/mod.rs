//! Circuit-breaker state shared across replicas through Redis, without a
//! round trip per call.
//!
//! Every replica keeps its own lock-free breaker and calls go through it
//! exactly as without a fleet: nothing on the call path talks to Redis. A
//! background task publishes this replica's transitions at once and a
//! heartbeat every [`FleetBuilder::heartbeat`] (state, window, time left
//! open; pub/sub for speed, and a key with a TTL per replica so that one
//! starting late or reconnecting catches up), and listens to its peers'.
//!
//! - **Quorum.** A replica opens when its own window trips, or when a
//!   [`Quorum`] of the live peers (heard from within the TTL) report the
//!   dependency open *on their own calls*. Replicas opened by a quorum are
//!   not counted as evidence, and a quorum is never fewer than two, so one
//!   bad node cannot open the fleet.
//! - **One trial per open period, fleet-wide.** When an open period ends,
//!   the replica that takes the probe lease (`SET NX PX`) sends the trial;
//!   the others stay open until its verdict arrives and then close (or stay
//!   open as long as it does). A lease whose holder dies expires and
//!   another replica probes.
//! - **Redis trouble degrades to local-only at once.** Every Redis command
//!   is bounded by [`FleetBuilder::timeout`]; the first one that fails or
//!   times out turns sharing off (each breaker decides alone again, peers
//!   are forgotten) until the connection is back. Calls are never delayed
//!   or failed by Redis. Readiness shows it as the non-critical line
//!   `shared` when the registry has [`HealthBuilder::fleet`](crate::health::HealthBuilder::fleet).
//!
//! ```no_run
//! use probity_probe::breaker::CircuitBreaker;
//! use probity_probe::shared::{Fleet, Quorum};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let payments = CircuitBreaker::builder().build()?;
//! let fleet = Fleet::builder("rediss://:secret@redis.shop.svc:6380/", "orders")
//!     .breaker("payments", &payments, Quorum::Share(0.5))
//!     .build()?;
//! # drop(fleet);
//! # Ok(())
//! # }
//! ```
//!
//! Keys live under `probity:<service>:` (`replica:<id>` heartbeats,
//! `replicas`, `lease:<dependency>`) and the channel is
//! `probity:<service>:fleet`, so services can share one Redis.

mod peers;
pub(crate) mod task;
pub(crate) mod wire;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::breaker::{CircuitBreaker, HalfOpen};
use peers::Peers;

/// How many live peers must report a dependency open (on their own calls)
/// before this replica opens too.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Quorum {
    /// At least this many peers (2 or more).
    Count(u32),
    /// At least this share of the live replicas, this one included, and
    /// never fewer than two peers: `Share(0.5)` of three replicas is two.
    Share(f64),
}

impl Default for Quorum {
    fn default() -> Self {
        Quorum::Share(0.5)
    }
}

impl Quorum {
    /// Peers that must report open when `replicas` are live (this one
    /// included).
    pub fn required(self, replicas: usize) -> usize {
        match self {
            Quorum::Count(n) => usize::try_from(n).unwrap_or(usize::MAX).max(2),
            Quorum::Share(share) => {
                #[allow(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss,
                    reason = "a share in (0, 1] of a replica count"
                )]
                let n = (share * replicas as f64).ceil() as usize;
                n.max(2)
            }
        }
    }
}

/// A fleet configuration that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Misconfigured {
    /// The Redis URL did not parse (the message leaves the password out).
    #[error("redis URL: {0}")]
    Url(String),
    /// A service, replica or dependency name outside `[A-Za-z0-9._-]{1,128}`.
    #[error("{what} {name:?} must be 1 to 128 of A-Z a-z 0-9 . _ -")]
    Name {
        /// Which name.
        what: &'static str,
        /// The value given.
        name: String,
    },
    /// The same dependency shared twice.
    #[error("dependency {0:?} is shared twice")]
    Duplicate(String),
    /// A quorum count below 2 or a share outside `(0, 1]`.
    #[error("quorum for {dependency:?} must be a count of at least 2 or a share in (0, 1]")]
    Quorum {
        /// The dependency.
        dependency: String,
    },
    /// A zero heartbeat or timeout, a TTL not above the heartbeat, or a
    /// timeout not below the heartbeat.
    #[error(
        "heartbeat {heartbeat:?}, ttl {ttl:?} and timeout {timeout:?}: need 0 < timeout < heartbeat < ttl"
    )]
    Timing {
        /// Heartbeat interval.
        heartbeat: Duration,
        /// Peer TTL.
        ttl: Duration,
        /// Per-command timeout.
        timeout: Duration,
    },
    /// No Tokio runtime to run the fleet's task on.
    #[error("no Tokio runtime: build the fleet inside one")]
    NoRuntime,
}

/// The connection to Redis, as readiness shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// Not connected yet.
    Connecting,
    /// Sharing.
    Up,
    /// Local-only, with the last error; reconnecting.
    Down(String),
}

/// One dependency as the fleet sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetView {
    /// Live replicas, this one included (1 while Redis is unreachable).
    pub replicas: usize,
    /// Live peers reporting the dependency open on their own calls.
    pub open: usize,
    /// Peers that must report open before this replica opens.
    pub required: usize,
}

#[derive(Debug)]
pub(crate) struct SharedBreaker {
    pub(crate) name: String,
    pub(crate) breaker: CircuitBreaker,
    pub(crate) quorum: Quorum,
    /// The probe lease's length: the half-open lease of a single-probe
    /// breaker, else the TTL.
    pub(crate) lease: Duration,
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) client: redis::Client,
    pub(crate) replica: String,
    pub(crate) prefix: String,
    pub(crate) heartbeat: Duration,
    pub(crate) ttl: Duration,
    pub(crate) timeout: Duration,
    pub(crate) breakers: Vec<SharedBreaker>,
    pub(crate) peers: Mutex<Peers>,
    pub(crate) link: watch::Sender<Link>,
    /// Fleet-floored readiness checks failing here, and a nudge to
    /// publish when they change.
    pub(crate) failing: Mutex<BTreeSet<String>>,
    pub(crate) failing_changed: Notify,
}

#[derive(Debug)]
struct Handle {
    state: Arc<State>,
    /// Dropped with the last [`Fleet`] clone: the task then stops.
    _stop: watch::Sender<()>,
}

/// The fleet this replica belongs to. Cheap to clone; the background task
/// stops (and withdraws this replica's heartbeat) when the last clone is
/// dropped.
#[derive(Debug, Clone)]
pub struct Fleet {
    handle: Arc<Handle>,
}

/// Builds a [`Fleet`]; see [`Fleet::builder`].
#[derive(Debug)]
pub struct FleetBuilder {
    url: String,
    service: String,
    replica: Option<String>,
    heartbeat: Duration,
    ttl: Option<Duration>,
    timeout: Duration,
    root_cert: Option<Vec<u8>>,
    breakers: Vec<(String, CircuitBreaker, Quorum)>,
}

fn valid_name(name: &str) -> bool {
    (1..=wire::MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The URL with any password replaced, for messages and logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

impl FleetBuilder {
    /// This replica's id (default: `$HOSTNAME`, the pod name, else a
    /// random one).
    pub fn replica(mut self, id: impl Into<String>) -> Self {
        self.replica = Some(id.into());
        self
    }

    /// Shares `breaker` as `dependency` (use the name it has in the
    /// [`Dependency`](crate::health::Dependency) inventory so readiness
    /// shows the fleet's view of it).
    pub fn breaker(
        mut self,
        dependency: impl Into<String>,
        breaker: &CircuitBreaker,
        quorum: Quorum,
    ) -> Self {
        self.breakers
            .push((dependency.into(), breaker.clone(), quorum));
        self
    }

    /// How often to publish a heartbeat (default 1 s).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// How long a peer counts as live after its last message (default three
    /// heartbeats).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The bound on every Redis command and on connecting (default 250 ms);
    /// past it, sharing turns off until Redis answers again.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A CA certificate (PEM) to trust for `rediss://` instead of the
    /// system's roots.
    pub fn root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_cert = Some(pem.into());
        self
    }

    /// Validates the configuration and starts the background task on the
    /// current Tokio runtime. Redis need not be reachable yet: until it is,
    /// every breaker decides alone.
    ///
    /// # Errors
    ///
    /// [`Misconfigured`] for a URL that does not parse, an invalid name, a
    /// dependency shared twice, a quorum below two peers, inconsistent
    /// timings, or no Tokio runtime.
    pub fn build(self) -> Result<Fleet, Misconfigured> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| Misconfigured::NoRuntime)?;
        let ttl = self.ttl.unwrap_or(self.heartbeat * 3);
        if self.timeout.is_zero() || self.timeout >= self.heartbeat || ttl <= self.heartbeat {
            return Err(Misconfigured::Timing {
                heartbeat: self.heartbeat,
                ttl,
                timeout: self.timeout,
            });
        }
        if !valid_name(&self.service) {
            return Err(Misconfigured::Name {
                what: "service",
                name: self.service,
            });
        }
        let replica = match self.replica {
            Some(id) => id,
            None => std::env::var("HOSTNAME")
                .ok()
                .filter(|h| valid_name(h))
                .unwrap_or_else(|| format!("replica-{:016x}", fastrand::u64(..))),
        };
        if !valid_name(&replica) {
            return Err(Misconfigured::Name {
                what: "replica",
                name: replica,
            });
        }
        let mut breakers: Vec<SharedBreaker> = Vec::new();
        for (name, breaker, quorum) in self.breakers {
            if !valid_name(&name) {
                return Err(Misconfigured::Name {
                    what: "dependency",
                    name,
                });
            }
            if breakers.iter().any(|b| b.name == name) {
                return Err(Misconfigured::Duplicate(name));
            }
            let valid_quorum = match quorum {
                Quorum::Count(n) => n >= 2,
                Quorum::Share(s) => s > 0.0 && s <= 1.0,
            };
            if !valid_quorum {
                return Err(Misconfigured::Quorum { dependency: name });
            }
            let lease = match breaker.config().half_open {
                HalfOpen::SingleProbe { lease } => lease,
                HalfOpen::Probes(_) => ttl,
            };
            breakers.push(SharedBreaker {
                name,
                breaker,
                quorum,
                lease,
            });
        }
        let client = task::client(&self.url, self.root_cert)
            .map_err(|e| Misconfigured::Url(format!("{}: {e}", redact(&self.url))))?;
        let state = Arc::new(State {
            client,
            prefix: format!("probity:{}", self.service),
            peers: Mutex::new(Peers::new(replica.clone(), ttl)),
            replica,
            heartbeat: self.heartbeat,
            ttl,
            timeout: self.timeout,
            breakers,
            link: watch::Sender::new(Link::Connecting),
            failing: Mutex::default(),
            failing_changed: Notify::new(),
        });
        let (stop, stopped) = watch::channel(());
        runtime.spawn(task::run(Arc::clone(&state), stopped));
        Ok(Fleet {
            handle: Arc::new(Handle { state, _stop: stop }),
        })
    }
}

impl Fleet {
    /// Starts a fleet for `service` (the key prefix) on the Redis at `url`
    /// (`redis://[:password@]host:port/[db]`, or `rediss://` for TLS).
    pub fn builder(url: impl Into<String>, service: impl Into<String>) -> FleetBuilder {
        FleetBuilder {
            url: url.into(),
            service: service.into(),
            replica: None,
            heartbeat: Duration::from_secs(1),
            ttl: None,
            timeout: Duration::from_millis(250),
            root_cert: None,
            breakers: Vec::new(),
        }
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.handle.state.replica
    }

    /// The connection to Redis now.
    pub fn link(&self) -> Link {
        self.handle.state.link.borrow().clone()
    }

    /// The connection to Redis, as a watch channel.
    pub fn watch_link(&self) -> watch::Receiver<Link> {
        self.handle.state.link.subscribe()
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, Peers> {
        self.handle
            .state
            .peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Live replicas, this one included (1 while Redis is unreachable).
    pub fn replicas(&self) -> usize {
        self.peers().live_count(Instant::now()) + 1
    }

    /// The fleet's view of a shared dependency; `None` when `dependency` is
    /// not shared.
    pub fn view(&self, dependency: &str) -> Option<FleetView> {
        let state = &self.handle.state;
        let shared = state.breakers.iter().find(|b| b.name == dependency)?;
        let reports = self.peers().reports(dependency, Instant::now());
        Some(FleetView {
            replicas: reports.live + 1,
            open: reports.open.len(),
            required: shared.quorum.required(reports.live + 1),
        })
    }

    /// Live peers (this replica not counted), and how many of them report
    /// the readiness check `name` failing.
    pub(crate) fn failing(&self, name: &str) -> (usize, usize) {
        self.peers().failing(name, Instant::now())
    }

    /// Publishes whether the fleet-floored check `name` fails here.
    pub(crate) fn set_failing(&self, name: &str, failing: bool) {
        let state = &self.handle.state;
        let mut set = state.failing.lock().unwrap_or_else(PoisonError::into_inner);
        let changed = if failing {
            set.insert(name.to_owned())
        } else {
            set.remove(name)
        };
        drop(set);
        if changed {
            state.failing_changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_is_never_fewer_than_two_peers() {
        assert_eq!(Quorum::Share(0.5).required(1), 2);
        assert_eq!(Quorum::Share(0.5).required(3), 2);
        assert_eq!(Quorum::Share(0.5).required(10), 5);
        assert_eq!(Quorum::Share(1.0).required(4), 4);
        assert_eq!(Quorum::Count(3).required(100), 3);
        assert_eq!(Quorum::Count(0).required(100), 2);
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redact("rediss://:hunter2@redis:6380/0"),
            "rediss://***@redis:6380/0"
        );
        assert_eq!(redact("redis://redis:6379/"), "redis://redis:6379/");
    }

    #[tokio::test]
    async fn misconfigurations_are_named() {
        let b = CircuitBreaker::builder().build().expect("valid");
        let url = "redis://127.0.0.1:1/";
        let err = |builder: FleetBuilder| builder.build().expect_err("misconfigured");
        assert!(matches!(
            err(Fleet::builder("http://x:hunter2@h/", "orders")),
            Misconfigured::Url(m) if !m.contains("hunter2")
        ));
        assert!(matches!(
            err(Fleet::builder(url, "or ders")),
            Misconfigured::Name {
                what: "service",
                ..
            }
        ));
        assert!(matches!(
            err(Fleet::builder(url, "orders").replica("a/b")),
            Misconfigured::Name {
                what: "replica",
                ..
            }
        ));
        assert!(matches!(
            err(Fleet::builder(url, "orders")
                .breaker("payments", &b, Quorum::Share(0.5))
                .breaker("payments", &b, Quorum::Share(0.5))),
            Misconfigured::Duplicate(_)
        ));
        for q in [Quorum::Count(1), Quorum::Share(0.0), Quorum::Share(1.5)] {
            assert!(matches!(
                err(Fleet::builder(url, "orders").breaker("payments", &b, q)),
                Misconfigured::Quorum { .. }
            ));
        }
        assert!(matches!(
            err(Fleet::builder(url, "orders").timeout(Duration::from_secs(2))),
            Misconfigured::Timing { .. }
        ));
        assert!(matches!(
            err(Fleet::builder(url, "orders").ttl(Duration::from_millis(500))),
            Misconfigured::Timing { .. }
        ));
    }
}
