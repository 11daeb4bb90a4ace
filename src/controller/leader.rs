//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go
//! does it: the holder renews; a candidate takes over only after it has
//! seen the same record, unchanged, for a whole lease duration on its own
//! clock (so clock skew between replicas does not matter); writes require
//! leadership confirmed within the renew deadline.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;
use tokio::time::Instant;

/// Where the lease lives and how it is timed.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
    /// The leader stops writing when it could not renew for this long;
    /// shorter than the lease duration.
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseOptions {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry.
    pub fn new(name: &str, namespace: &str, identity: &str) -> Self {
        Self {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Whether this replica may write. Cheap to clone and to ask.
#[derive(Debug, Clone)]
pub struct Leadership {
    state: Arc<Mutex<State>>,
    changes: watch::Receiver<bool>,
}

#[derive(Debug)]
struct State {
    /// Last successful acquire or renew started at this instant.
    renewed: Option<Instant>,
    renew_deadline: Duration,
    /// How long one write may take: the lease duration minus the renew
    /// deadline, so a write started by a leader ends before any standby
    /// can take over.
    fence: Duration,
    holder: Option<String>,
    always: bool,
}

/// Why a fenced write did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Fenced {
    /// This replica is not the leader (any more).
    #[error("not the leader")]
    NotLeader,
    /// The write did not finish within the fence.
    #[error("the write took longer than the leadership fence ({0:?})")]
    TimedOut(Duration),
}

impl Leadership {
    /// Leadership without election: a single replica.
    pub fn always() -> Self {
        let (_tx, changes) = watch::channel(true);
        Self {
            state: Arc::new(Mutex::new(State {
                renewed: None,
                renew_deadline: Duration::MAX,
                fence: Duration::from_secs(30),
                holder: None,
                always: true,
            })),
            changes,
        }
    }

    /// Leader now: the lease was renewed within the renew deadline. Checked
    /// before every write, so a leader cut off from the API server stops
    /// writing on its own clock, without waiting for the renew loop.
    pub fn is_leader(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.always
            || state
                .renewed
                .is_some_and(|at| at.elapsed() < state.renew_deadline)
    }

    /// Runs `write` if this replica leads now, bounded by the fence (lease
    /// duration minus renew deadline): a leader that loses its lease
    /// mid-write cannot land the write after a standby took over.
    ///
    /// # Errors
    ///
    /// [`Fenced`] when not leading or when the fence passed first.
    pub async fn fenced<F: std::future::Future>(&self, write: F) -> Result<F::Output, Fenced> {
        if !self.is_leader() {
            return Err(Fenced::NotLeader);
        }
        let fence = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .fence;
        tokio::time::timeout(fence, write)
            .await
            .map_err(|_| Fenced::TimedOut(fence))
    }

    /// The current holder as last observed, for status reports.
    pub fn holder(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .holder
            .clone()
    }

    /// Changes of leadership as the election loop sees them (`true` on
    /// becoming leader).
    pub fn changes(&self) -> watch::Receiver<bool> {
        self.changes.clone()
    }
}

/// Starts the election loop; it runs until the returned handle's task is
/// aborted or `stop` resolves, and then releases the lease if held.
pub fn spawn(
    client: Client,
    options: LeaseOptions,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> (Leadership, tokio::task::JoinHandle<()>) {
    let (tx, changes) = watch::channel(false);
    let state = Arc::new(Mutex::new(State {
        renewed: None,
        renew_deadline: options.renew_deadline,
        fence: options
            .lease_duration
            .saturating_sub(options.renew_deadline)
            .max(Duration::from_millis(100)),
        holder: None,
        always: false,
    }));
    let leadership = Leadership {
        state: Arc::clone(&state),
        changes,
    };
    let reader = leadership.clone();
    let task = tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &options.namespace);
        let mut elector = Elector {
            api,
            options,
            observed: None,
        };
        tokio::pin!(stop);
        loop {
            let started = Instant::now();
            // Each attempt is bounded: a request stuck on a dead connection
            // must not hold a standby back from an expired lease.
            let attempt = elector.options.renew_deadline;
            let outcome = tokio::time::timeout(attempt, elector.try_acquire_or_renew()).await;
            match &outcome {
                Err(_) => {
                    tracing::warn!(lease = %elector.options.name, timeout = ?attempt, "lease acquire/renew timed out")
                }
                Ok(Ok((true, holder))) => {
                    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
                    s.renewed = Some(started);
                    s.holder = holder.clone();
                }
                Ok(Ok((false, holder))) => {
                    let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
                    s.renewed = None;
                    s.holder = holder.clone();
                }
                Ok(Err(e)) => {
                    tracing::warn!(lease = %elector.options.name, error = %e, "lease acquire/renew failed")
                }
            }
            let leader = reader.is_leader();
            if *tx.borrow() != leader {
                if leader {
                    tracing::info!(identity = %elector.options.identity, "became leader");
                } else {
                    tracing::warn!(identity = %elector.options.identity, "lost leadership; status and event writes stop");
                }
                let _ = tx.send(leader);
            }
            let period = jittered(elector.options.retry_period);
            // Wake early when leadership would lapse, so `changes` is prompt.
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                () = &mut stop => {
                    // Stop writing first, then give the lease up: after
                    // the release a standby may write at once.
                    let was_leader = reader.is_leader();
                    state.lock().unwrap_or_else(PoisonError::into_inner).renewed = None;
                    let _ = tx.send(false);
                    if was_leader {
                        let bound = elector.options.renew_deadline;
                        if tokio::time::timeout(bound, elector.release()).await.is_err() {
                            tracing::warn!(lease = %elector.options.name, "releasing the lease timed out");
                        }
                    }
                    return;
                }
            }
        }
    });
    (leadership, task)
}

fn jittered(period: Duration) -> Duration {
    period.mul_f64(1.0 + fastrand::f64() * 0.2)
}

struct Elector {
    api: Api<Lease>,
    options: LeaseOptions,
    /// The record last seen and when it was first seen in that form.
    observed: Option<(LeaseSpec, Instant)>,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Elector {
    /// `Ok((leader, holder))`.
    async fn try_acquire_or_renew(&mut self) -> Result<(bool, Option<String>), kube::Error> {
        let me = self.options.identity.clone();
        let duration_secs =
            i32::try_from(self.options.lease_duration.as_secs().max(1)).unwrap_or(15);
        let lease = match self.api.get_opt(&self.options.name).await? {
            Some(lease) => lease,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.options.name.clone()),
                        namespace: Some(self.options.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(me.clone()),
                        lease_duration_seconds: Some(duration_secs),
                        acquire_time: Some(now()),
                        renew_time: Some(now()),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok((true, Some(me))),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok((false, None)),
                    Err(e) => Err(e),
                };
            }
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let held_by_me = holder.as_deref() == Some(me.as_str());
        if !held_by_me {
            // Expired only after the same record sat unchanged for a lease
            // duration on our clock.
            let changed = self.observed.as_ref().is_none_or(|(seen, _)| *seen != spec);
            if changed {
                self.observed = Some((spec.clone(), Instant::now()));
            }
            let their_duration = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.options.lease_duration, Duration::from_secs);
            let expired = holder.is_none()
                || self
                    .observed
                    .as_ref()
                    .is_some_and(|(_, at)| at.elapsed() >= their_duration);
            if !expired {
                return Ok((false, holder));
            }
        }
        let mut next = lease.clone();
        let mut new_spec = spec.clone();
        if !held_by_me {
            new_spec.acquire_time = Some(now());
            new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        new_spec.holder_identity = Some(me.clone());
        new_spec.lease_duration_seconds = Some(duration_secs);
        new_spec.renew_time = Some(now());
        next.spec = Some(new_spec);
        // `replace` carries the resourceVersion we read: a concurrent writer
        // makes this a 409, never two leaders.
        match self
            .api
            .replace(&self.options.name, &PostParams::default(), &next)
            .await
        {
            Ok(_) => Ok((true, Some(me))),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok((false, holder)),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up so a standby takes over at once.
    async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.options.name).await else {
            return;
        };
        if let Some(spec) = lease.spec.as_mut() {
            if spec.holder_identity.as_deref() != Some(self.options.identity.as_str()) {
                return;
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(now());
        }
        match self
            .api
            .replace(&self.options.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.options.name, "lease released"),
            Err(e) => {
                tracing::warn!(lease = %self.options.name, error = %e, "releasing the lease failed")
            }
        }
    }
}

/// Runs `work` every `every` while this replica leads and the policy
/// caches have synced; `on_lead` first whenever it has just become leader
/// (what a previous leader did may have changed since).
pub(crate) async fn while_leading<W, Fut>(
    ctx: std::sync::Arc<super::Context>,
    every: Duration,
    stop: super::Stop,
    on_lead: impl Fn(&super::Context),
    work: W,
) where
    W: Fn(std::sync::Arc<super::Context>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut leading = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = stop.clone() => return,
        }
        let leader = ctx.leadership.is_leader();
        if leader && !leading {
            on_lead(&ctx);
        }
        leading = leader;
        if leader && ctx.policies_synced() {
            work(std::sync::Arc::clone(&ctx)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn elected(renewed: Option<Instant>) -> Leadership {
        let (_tx, changes) = watch::channel(renewed.is_some());
        Leadership {
            state: Arc::new(Mutex::new(State {
                renewed,
                renew_deadline: Duration::from_secs(10),
                fence: Duration::from_secs(5),
                holder: None,
                always: false,
            })),
            changes,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn writes_happen_only_while_leading_and_within_the_fence() {
        let standby = elected(None);
        assert_eq!(standby.fenced(async { 1 }).await, Err(Fenced::NotLeader));

        let leader = elected(Some(Instant::now()));
        assert_eq!(leader.fenced(async { 2 }).await, Ok(2));
        let slow = leader
            .fenced(tokio::time::sleep(Duration::from_secs(6)))
            .await;
        assert_eq!(slow, Err(Fenced::TimedOut(Duration::from_secs(5))));
    }

    fn lease(holder: &str, renewed: &str, version: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "lease", "namespace": "ns", "resourceVersion": version},
            "spec": {
                "holderIdentity": holder, "leaseDurationSeconds": 15,
                "renewTime": renewed, "leaseTransitions": 4,
            },
        })
    }

    fn elector() -> (Elector, crate::controller::fixtures::ApiServer) {
        let (client, api) = crate::controller::fixtures::client();
        let elector = Elector {
            api: Api::namespaced(client, "ns"),
            options: LeaseOptions::new("lease", "ns", "me"),
            observed: None,
        };
        (elector, api)
    }

    /// One election round in which the API server answers the GET with
    /// `current`.
    async fn round(
        elector: &mut Elector,
        api: &mut crate::controller::fixtures::ApiServer,
        current: &serde_json::Value,
    ) -> (bool, Option<String>) {
        let serve = async {
            let call = api.next("GET of the lease").await;
            assert_eq!(call.method, http::Method::GET);
            assert_eq!(
                call.path,
                "/apis/coordination.k8s.io/v1/namespaces/ns/leases/lease"
            );
            call.reply(200, current);
        };
        let (result, ()) = tokio::join!(elector.try_acquire_or_renew(), serve);
        result.expect("a round")
    }

    #[tokio::test(start_paused = true)]
    async fn a_standby_takes_over_only_after_the_record_sat_unchanged_for_a_lease_duration() {
        let (mut elector, mut api) = elector();
        let held = lease("other", "2026-01-01T00:00:00.000000Z", "7");
        assert_eq!(
            round(&mut elector, &mut api, &held).await,
            (false, Some("other".to_owned()))
        );
        tokio::time::advance(Duration::from_secs(14)).await;
        assert_eq!(
            round(&mut elector, &mut api, &held).await,
            (false, Some("other".to_owned())),
            "14 s of an unchanged 15 s lease is not expired"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        let serve = async {
            let get = api.next("GET of the lease").await;
            get.reply(200, &held);
            let put = api.next("the takeover").await;
            assert_eq!(put.method, http::Method::PUT);
            assert_eq!(put.body["spec"]["holderIdentity"], "me");
            assert_eq!(put.body["spec"]["leaseTransitions"], 5);
            assert_eq!(
                put.body["metadata"]["resourceVersion"], "7",
                "the write is conditional on the record read"
            );
            put.reply(200, &lease("me", "2026-01-01T00:00:15.000000Z", "8"));
        };
        let (result, ()) = tokio::join!(elector.try_acquire_or_renew(), serve);
        assert_eq!(result.expect("a round"), (true, Some("me".to_owned())));
    }

    #[tokio::test(start_paused = true)]
    async fn a_renewed_record_restarts_the_standbys_clock_and_a_lost_race_is_not_leadership() {
        let (mut elector, mut api) = elector();
        round(
            &mut elector,
            &mut api,
            &lease("other", "2026-01-01T00:00:00.000000Z", "7"),
        )
        .await;
        tokio::time::advance(Duration::from_secs(16)).await;
        let renewed = lease("other", "2026-01-01T00:00:10.000000Z", "9");
        assert_eq!(
            round(&mut elector, &mut api, &renewed).await,
            (false, Some("other".to_owned())),
            "the holder renewed: its lease runs from when we saw that"
        );
        tokio::time::advance(Duration::from_secs(15)).await;
        let serve = async {
            api.next("GET of the lease").await.reply(200, &renewed);
            let put = api.next("the takeover").await;
            put.reply(
                409,
                &serde_json::json!({
                    "apiVersion": "v1", "kind": "Status", "status": "Failure",
                    "reason": "Conflict", "code": 409, "message": "the object has been modified",
                }),
            );
        };
        let (result, ()) = tokio::join!(elector.try_acquire_or_renew(), serve);
        assert_eq!(
            result.expect("a round"),
            (false, Some("other".to_owned())),
            "another standby won the write"
        );
    }

    #[tokio::test]
    async fn leadership_lapses_after_the_renew_deadline() {
        let stale = elected(Instant::now().checked_sub(Duration::from_secs(11)));
        assert!(!stale.is_leader(), "not renewed within the renew deadline");
        assert_eq!(stale.fenced(async {}).await, Err(Fenced::NotLeader));
        assert!(Leadership::always().is_leader());
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_that_hangs_is_abandoned_and_the_next_one_takes_a_released_lease() {
        let (client, mut api) = crate::controller::fixtures::client();
        let (leadership, task) = spawn(
            client,
            LeaseOptions::new("lease", "ns", "me"),
            std::future::pending(),
        );
        let mut changes = leadership.changes();
        // The first GET is never answered, as on a dead connection.
        let _stuck = api.next("the first GET of the lease").await;
        tokio::time::advance(Duration::from_millis(10_100)).await;
        let get = api.next("a new attempt after the renew deadline").await;
        assert_eq!(get.method, http::Method::GET);
        get.reply(200, &lease("", "2026-01-01T00:00:00.000000Z", "7"));
        let put = api.next("the takeover of the released lease").await;
        assert_eq!(put.body["spec"]["holderIdentity"], "me");
        put.reply(200, &lease("me", "2026-01-01T00:00:12.000000Z", "8"));
        changes.changed().await.expect("the election loop runs");
        assert!(*changes.borrow() && leadership.is_leader());
        task.abort();
    }
}
