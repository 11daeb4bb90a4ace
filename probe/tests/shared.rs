//! Breaker state shared across replicas, against a real `redis-server`
//! (Debian's, from `hack/redis.sh install`): quorum, one trial per open
//! period, a dead lease holder, late joiners, Redis killed, paused and
//! restarted, TLS with a password, hostile messages, and readiness.
//!
//! Each "replica" is a breaker and a [`Fleet`] of its own in this process,
//! all on one Redis, as replicas of one Deployment would be.

#![cfg(feature = "redis")]
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "real Redis: wall time"
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use probity_probe::breaker::{CircuitBreaker, HalfOpen, State, Verdict};
use probity_probe::health::{CheckOptions, CheckStatus, Dependency, Health, Probe, Report};
use probity_probe::shared::{Fleet, Link, Quorum};
use probity_testenv::redis::{Options, Redis};

const HEARTBEAT: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(100);

fn redis(options: Options) -> Option<Redis> {
    Redis::start_or_skip(options)
}

/// Opens after 4 calls at 50%, open `open`, no backoff or jitter,
/// single probe with a 2 s lease.
fn breaker(open: Duration) -> CircuitBreaker {
    CircuitBreaker::builder()
        .count_window(10)
        .minimum_calls(4)
        .failure_rate(0.5)
        .open_for(open, 1.0, Duration::from_secs(30))
        .jitter(0.0, None)
        .half_open(HalfOpen::SingleProbe {
            lease: Duration::from_secs(2),
        })
        .build()
        .expect("valid")
}

fn fleet(url: &str, service: &str, id: &str, b: &CircuitBreaker) -> Fleet {
    Fleet::builder(url, service)
        .replica(id)
        .heartbeat(HEARTBEAT)
        .timeout(TIMEOUT)
        .breaker("payments", b, Quorum::Share(0.5))
        .build()
        .expect("valid fleet")
}

fn trip(b: &CircuitBreaker) {
    for _ in 0..4 {
        if let Ok(p) = b.try_acquire() {
            p.record(Verdict::Failure);
        }
    }
    assert_eq!(b.state(), State::Open);
}

async fn eventually(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    start.elapsed()
}

async fn all_up(fleets: &[&Fleet]) {
    eventually("every replica sharing", Duration::from_secs(5), || {
        fleets.iter().all(|f| f.link() == Link::Up)
    })
    .await;
}

async fn replicas_seen(f: &Fleet, n: usize) {
    eventually("peers heard", Duration::from_secs(5), || f.replicas() == n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_of_peers_opens_a_replica_and_one_bad_node_cannot() {
    let Some(redis) = redis(Options::default()) else {
        return;
    };
    let url = redis.url();
    let (a, b, c) = (
        breaker(Duration::from_secs(5)),
        breaker(Duration::from_secs(5)),
        breaker(Duration::from_secs(5)),
    );
    let fa = fleet(&url, "quorum", "a", &a);
    let fb = fleet(&url, "quorum", "b", &b);
    let fc = fleet(&url, "quorum", "c", &c);
    all_up(&[&fa, &fb, &fc]).await;
    replicas_seen(&fc, 3).await;

    trip(&a);
    // Several heartbeats: c hears a's report and stays closed.
    tokio::time::sleep(HEARTBEAT * 4).await;
    assert_eq!(
        c.state(),
        State::Closed,
        "one bad node cannot open the fleet"
    );
    assert_eq!(b.state(), State::Closed);
    let view = fc.view("payments").expect("shared");
    assert_eq!((view.replicas, view.open, view.required), (3, 1, 2));

    let tripped = Instant::now();
    trip(&b);
    let took = eventually("c opened by the quorum", Duration::from_secs(2), || {
        c.state() == State::Open
    })
    .await;
    eprintln!(
        "quorum: c opened {took:?} after the second replica tripped ({:?} total)",
        tripped.elapsed()
    );
    assert!(
        c.remaining_open() > Duration::from_secs(4),
        "opened for the peers' remaining time, not a tick: {:?}",
        c.remaining_open()
    );
    // c opened on the peers' word: it is not evidence for anyone else.
    let view = fa.view("payments").expect("shared");
    assert_eq!(view.open, 1, "a counts b only, not c: {view:?}");
}

/// Calls every few ms on each replica while payments is down, then up;
/// returns the trial calls each replica sent while down, and after.
async fn hammer(
    breakers: &[CircuitBreaker],
    down: Duration,
    up: Duration,
) -> (Vec<usize>, Vec<usize>) {
    let healthy = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for b in breakers {
        let b = b.clone();
        let healthy = Arc::clone(&healthy);
        tasks.push(tokio::spawn(async move {
            let (mut down_trials, mut up_trials) = (0, 0);
            let end = Instant::now() + down + up;
            while Instant::now() < end {
                let was = b.state();
                if let Ok(p) = b.try_acquire() {
                    let ok = healthy.load(Ordering::SeqCst);
                    if was != State::Closed {
                        if ok {
                            up_trials += 1;
                        } else {
                            down_trials += 1;
                        }
                    }
                    p.record(if ok {
                        Verdict::Success
                    } else {
                        Verdict::Failure
                    });
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            (down_trials, up_trials)
        }));
    }
    tokio::time::sleep(down).await;
    healthy.store(true, Ordering::SeqCst);
    let mut result = (Vec::new(), Vec::new());
    for t in tasks {
        let (d, u) = t.await.expect("task");
        result.0.push(d);
        result.1.push(u);
    }
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_costs_one_trial_per_open_period_fleet_wide() {
    let Some(redis) = redis(Options::default()) else {
        return;
    };
    let url = redis.url();
    let open = Duration::from_millis(600);

    // Local-only, for comparison: every replica sends its own trials.
    let local: Vec<CircuitBreaker> = (0..3).map(|_| breaker(open)).collect();
    local.iter().for_each(trip);
    let (local_down, _) = hammer(
        &local,
        Duration::from_millis(2000),
        Duration::from_millis(500),
    )
    .await;

    let shared: Vec<CircuitBreaker> = (0..3).map(|_| breaker(open)).collect();
    let fleets: Vec<Fleet> = shared
        .iter()
        .enumerate()
        .map(|(i, b)| fleet(&url, "trials", &format!("r{i}"), b))
        .collect();
    all_up(&fleets.iter().collect::<Vec<_>>()).await;
    replicas_seen(&fleets[0], 3).await;
    shared.iter().for_each(trip);
    let (shared_down, shared_up) = hammer(
        &shared,
        Duration::from_millis(2000),
        Duration::from_millis(1500),
    )
    .await;
    let (l, s): (usize, usize) = (local_down.iter().sum(), shared_down.iter().sum());
    eprintln!(
        "trials in 2 s down at a 600 ms open period: local-only {l} {local_down:?}, shared {s} {shared_down:?}; after recovery {shared_up:?}"
    );
    assert!(
        l >= 6,
        "local-only: each replica probes each period: {local_down:?}"
    );
    // Three periods end within 2 s: one trial each, fleet-wide (a fourth
    // may start as the window closes).
    assert!(
        (2..=4).contains(&s),
        "shared: one per period: {shared_down:?}"
    );
    assert_eq!(
        shared_up.iter().sum::<usize>(),
        1,
        "one trial closes the whole fleet: {shared_up:?}"
    );
    assert!(shared.iter().all(|b| b.state() == State::Closed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_lease_holder_is_replaced_when_its_lease_expires() {
    let Some(redis) = redis(Options::default()) else {
        return;
    };
    let url = redis.url();
    let open = Duration::from_millis(300);
    let (a, b) = (breaker(open), breaker(open));
    let fa = fleet(&url, "lease", "a", &a);
    let fb = fleet(&url, "lease", "b", &b);
    all_up(&[&fa, &fb]).await;
    replicas_seen(&fb, 2).await;
    trip(&a);
    trip(&b);
    // Whoever takes the lease sends a trial that never finishes, then dies.
    let (holder, other, holder_fleet, other_fleet) = loop {
        if let Ok(trial) = a.try_acquire() {
            std::mem::forget(trial);
            break (&a, &b, fa, fb);
        }
        if let Ok(trial) = b.try_acquire() {
            std::mem::forget(trial);
            break (&b, &a, fb, fa);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    assert_eq!(holder.state(), State::HalfOpen);
    let died = Instant::now();
    drop(holder_fleet);
    // The other replica's period is long over, but the lease (2 s) holds it.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        other.try_acquire().is_err(),
        "the lease still holds the fleet"
    );
    let took = eventually("the other replica probes", Duration::from_secs(4), || {
        other
            .try_acquire()
            .map(|p| p.record(Verdict::Success))
            .is_ok()
    })
    .await;
    let after = died.elapsed();
    eprintln!("lease takeover: {after:?} after the holder died (waited {took:?} more after 1 s)");
    assert!(
        after >= Duration::from_millis(1900),
        "not before the lease expired: {after:?}"
    );
    assert_eq!(other.state(), State::Closed);
    drop(other_fleet);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_replica_catches_up_from_the_heartbeat_keys() {
    let Some(redis) = redis(Options::default()) else {
        return;
    };
    let url = redis.url();
    let slow_heartbeat = |id: &str, b: &CircuitBreaker| {
        Fleet::builder(&url, "late")
            .replica(id)
            .heartbeat(Duration::from_secs(20))
            .ttl(Duration::from_secs(60))
            .timeout(TIMEOUT)
            .breaker("payments", b, Quorum::Count(2))
            .build()
            .expect("valid")
    };
    let (a, b, c) = (
        breaker(Duration::from_secs(30)),
        breaker(Duration::from_secs(30)),
        breaker(Duration::from_secs(30)),
    );
    let fa = slow_heartbeat("a", &a);
    let fb = slow_heartbeat("b", &b);
    all_up(&[&fa, &fb]).await;
    trip(&a);
    trip(&b);
    // Their transitions were published before c existed; no heartbeat for
    // 20 s: only the keys can tell c.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fc = slow_heartbeat("c", &c);
    let took = eventually("c opened from the keys", Duration::from_secs(3), || {
        c.state() == State::Open
    })
    .await;
    eprintln!("catch-up: a late replica opened {took:?} after starting");
    drop((fa, fb, fc));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_paused_and_restarted() {
    let Some(mut redis) = redis(Options {
        persistence: true,
        ..Options::default()
    }) else {
        return;
    };
    let url = redis.url();
    let open = Duration::from_millis(300);
    let (a, b, c) = (breaker(open), breaker(open), breaker(open));
    let fa = fleet(&url, "faults", "a", &a);
    let fb = fleet(&url, "faults", "b", &b);
    let fc = fleet(&url, "faults", "c", &c);
    all_up(&[&fa, &fb, &fc]).await;
    replicas_seen(&fa, 3).await;

    // Killed: every replica goes local at once, and a gated breaker probes
    // by itself when its period ends, without waiting on the fleet.
    trip(&a);
    redis.kill();
    let took = eventually("a local-only", Duration::from_secs(2), || {
        matches!(fa.link(), Link::Down(_))
    })
    .await;
    eprintln!("redis killed: local-only after {took:?}");
    assert_eq!(fa.replicas(), 1, "peers forgotten");
    tokio::time::sleep(open).await;
    let started = Instant::now();
    let trial = a.try_acquire().expect("a local trial");
    assert!(
        started.elapsed() < Duration::from_millis(5),
        "no Redis on the call path"
    );
    trial.record(Verdict::Success);
    assert_eq!(a.state(), State::Closed);

    // Restarted: sharing resumes and quorums work again.
    redis.restart().expect("restart");
    all_up(&[&fa, &fb, &fc]).await;
    replicas_seen(&fc, 3).await;
    trip(&a);
    trip(&b);
    eventually(
        "c opened by the quorum after the restart",
        Duration::from_secs(2),
        || c.state() == State::Open,
    )
    .await;

    // Paused (a partition: connections stay open, nothing answers).
    for x in [&a, &b, &c] {
        x.reset();
    }
    redis.pause();
    let took = eventually("local-only in a partition", Duration::from_secs(3), || {
        [&fa, &fb, &fc]
            .iter()
            .all(|f| matches!(f.link(), Link::Down(_)))
    })
    .await;
    eprintln!("redis paused: every replica local-only after {took:?}");
    let started = Instant::now();
    for _ in 0..1000 {
        a.try_acquire().expect("closed").record(Verdict::Success);
    }
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "calls never wait on Redis"
    );
    redis.resume();
    all_up(&[&fa, &fb, &fc]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_a_password() {
    let Some(redis) = redis(Options {
        password: Some("s3cret-pw".into()),
        tls: true,
        persistence: false,
    }) else {
        return;
    };
    let ca = std::fs::read(redis.ca_cert().expect("tls")).expect("ca");
    let b = breaker(Duration::from_secs(1));
    let ok = Fleet::builder(redis.url(), "tls")
        .replica("a")
        .heartbeat(HEARTBEAT)
        .timeout(TIMEOUT)
        .root_certificate(ca.clone())
        .breaker("payments", &b, Quorum::default())
        .build()
        .expect("valid");
    all_up(&[&ok]).await;

    let wrong = redis.url().replace("s3cret-pw", "wrong-pw");
    let bad = Fleet::builder(wrong, "tls")
        .replica("b")
        .heartbeat(HEARTBEAT)
        .timeout(TIMEOUT)
        .root_certificate(ca)
        .breaker("payments", &b, Quorum::default())
        .build()
        .expect("valid");
    eventually(
        "a wrong password is reported",
        Duration::from_secs(3),
        || matches!(bad.link(), Link::Down(_)),
    )
    .await;
    let Link::Down(why) = bad.link() else {
        unreachable!()
    };
    eprintln!("wrong password: {why}");
    assert!(
        !why.contains("wrong-pw"),
        "no password in the reason: {why}"
    );
    assert!(
        why.contains("connecting") || why.contains("subscribing"),
        "{why}"
    );

    // Plain TCP to a TLS port is refused as an error, not a hang.
    let plain = Fleet::builder(redis.url().replace("rediss://", "redis://"), "tls")
        .replica("c")
        .heartbeat(HEARTBEAT)
        .timeout(TIMEOUT)
        .breaker("payments", &b, Quorum::default())
        .build()
        .expect("valid");
    eventually("plain text to TLS fails", Duration::from_secs(3), || {
        matches!(plain.link(), Link::Down(_))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_messages_change_nothing() {
    let Some(redis) = redis(Options::default()) else {
        return;
    };
    let url = redis.url();
    let b = breaker(Duration::from_secs(5));
    let f = fleet(&url, "hostile", "a", &b);
    all_up(&[&f]).await;
    let channel = "probity:hostile:fleet";
    let open = |id: &str| {
        format!(
            r#"{{"v":1,"replica":"{id}","breakers":{{"payments":{{"state":"open","own":true,"remainingMs":99999999}}}}}}"#
        )
    };
    for junk in [
        "not json".to_owned(),
        "[]".to_owned(),
        r#"{"v":1,"replica":"x","breakers":{"payments":{"state":"open"}}}"#.to_owned(),
        "x".repeat(70_000),
        open("a"), // its own id: ignored
    ] {
        redis
            .command(&["PUBLISH", channel, &junk])
            .expect("publish");
    }
    tokio::time::sleep(HEARTBEAT * 2).await;
    assert_eq!(b.state(), State::Closed);
    assert_eq!(f.link(), Link::Up, "still sharing");
    assert_eq!(f.replicas(), 1);
    // A flood of invented replicas is bounded, and a quorum of them opens
    // for at most the breaker's maximum.
    for i in 0..600 {
        redis
            .command(&["PUBLISH", channel, &open(&format!("fake-{i}"))])
            .expect("publish");
    }
    eventually("the flood counted", Duration::from_secs(3), || {
        f.replicas() > 500
    })
    .await;
    assert!(f.replicas() <= 513, "{}", f.replicas());
    assert_eq!(b.state(), State::Open);
    assert!(b.remaining_open() <= Duration::from_secs(30));
}

fn line<'a>(report: &'a Report, name: &str) -> &'a probity_probe::health::CheckReport {
    report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} line in {report:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_shows_the_fleet_and_a_shared_outage_keeps_replicas_in_rotation() {
    let Some(mut redis) = redis(Options::default()) else {
        return;
    };
    let url = redis.url();
    // Three replicas, each with a critical database check floored at half
    // of the fleet, and the payments breaker shared.
    let mut replicas = Vec::new();
    for i in 0..3 {
        let b = breaker(Duration::from_secs(5));
        let db_up = Arc::new(AtomicBool::new(true));
        let runs = Arc::new(AtomicUsize::new(0));
        let fleet = fleet(&url, "floor", &format!("r{i}"), &b);
        let up = Arc::clone(&db_up);
        let counter = Arc::clone(&runs);
        let health = Health::builder()
            .readiness_with(
                "db",
                move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let ok = up.load(Ordering::SeqCst);
                    async move {
                        if ok {
                            Ok(())
                        } else {
                            Err("connection refused")
                        }
                    }
                },
                CheckOptions::new()
                    .interval(Duration::from_millis(100))
                    .timeout(Duration::from_millis(50))
                    .debounce(1, 1)
                    .fleet_floor(0.5),
            )
            .dependency(
                Dependency::new("payments")
                    .timeout(Duration::from_secs(1))
                    .breaker(b.clone())
                    .fallback("queue the charge"),
            )
            .fleet(fleet.clone())
            .jitter(0.0, None)
            .build()
            .expect("valid");
        replicas.push((health, fleet, db_up, b));
    }
    all_up(&replicas.iter().map(|r| &r.1).collect::<Vec<_>>()).await;
    replicas_seen(&replicas[0].1, 3).await;
    let ready = |i: usize| replicas[i].0.report(Probe::Readiness, &[]);
    eventually("all ready", Duration::from_secs(3), || {
        (0..3).all(|i| ready(i).ok)
    })
    .await;
    assert_eq!(line(&ready(0), "shared").status, CheckStatus::Ok);
    assert_eq!(
        line(&ready(0), "shared").detail.as_deref(),
        Some("3 replicas live")
    );

    // One replica loses the database alone: it leaves rotation.
    replicas[1].2.store(false, Ordering::SeqCst);
    eventually("r1 unready alone", Duration::from_secs(3), || !ready(1).ok).await;
    tokio::time::sleep(HEARTBEAT * 2).await;
    assert!(!ready(1).ok, "failing alone is this replica's problem");
    assert!(ready(0).ok && ready(2).ok);

    // Everyone loses it: a shared outage, reported degraded, kept in rotation.
    replicas[0].2.store(false, Ordering::SeqCst);
    replicas[2].2.store(false, Ordering::SeqCst);
    eventually(
        "a shared outage keeps all three in rotation",
        Duration::from_secs(3),
        || {
            (0..3).all(|i| {
                let r = ready(i);
                r.ok && line(&r, "db").status == CheckStatus::Degraded
            })
        },
    )
    .await;
    let reason = line(&ready(0), "db").reason.clone().unwrap_or_default();
    assert!(reason.contains("failing on 3 of 3 replicas"), "{reason}");

    // The breaker line shows the fleet's view.
    trip(&replicas[0].3);
    eventually(
        "peers' view in the breaker line",
        Duration::from_secs(3),
        || {
            line(&ready(1), "breaker:payments").detail.as_deref()
                == Some("closed; 1 of 2 peers open, quorum 2")
        },
    )
    .await;

    // Redis gone: the shared line degrades (readiness unaffected) and the
    // floor no longer applies, so the failing check fails readiness again.
    redis.kill();
    eventually("shared degraded", Duration::from_secs(3), || {
        line(&ready(0), "shared").status == CheckStatus::Degraded
    })
    .await;
    let r = ready(0);
    assert!(!r.ok, "no fleet, no floor: {r:?}");
    assert_eq!(line(&r, "db").status, CheckStatus::Failed);
    // Recovered: ready again on its own.
    replicas[0].2.store(true, Ordering::SeqCst);
    eventually("r0 ready again", Duration::from_secs(3), || ready(0).ok).await;
}

#[tokio::test]
async fn dependencies_json_shows_the_fleet() {
    let Some(redis) = redis(Options::default()) else {
        return;
    };
    let b = breaker(Duration::from_secs(5));
    let fleet = fleet(&redis.url(), "inventory", "a", &b);
    let health = Health::builder()
        .dependency(
            Dependency::new("payments")
                .timeout(Duration::from_secs(1))
                .breaker(b.clone())
                .fallback("queue"),
        )
        .fleet(fleet.clone())
        .build()
        .expect("valid");
    all_up(&[&fleet]).await;
    let addr = support::serve(health.dependencies_router()).await;
    let reply = support::get(addr, "/dependencies").await;
    let json: serde_json::Value = serde_json::from_str(&reply.body).expect("json");
    assert_eq!(
        json["dependencies"][0]["breaker"]["fleet"],
        serde_json::json!({"replicas": 1, "peersOpen": 0, "quorum": 2})
    );
}
