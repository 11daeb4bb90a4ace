//! The durable queue against a real `redis-server`: idempotent enqueue,
//! acknowledgement, retries with backoff, dead letters, a consumer killed
//! mid-batch, a breaker that holds the consumer back, Redis killed and
//! restarted with persistence, bounds and hostile entries, and the
//! consumer's heartbeat and backlog in the health registry.

#![cfg(feature = "queue")]
#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "real Redis: wall time"
)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use probity_probe::breaker::{CircuitBreaker, State, Verdict};
use probity_probe::health::{CheckStatus, Health, Probe};
use probity_probe::queue::{Consumer, Delivery, Enqueued, Error, Handled, RedisQueue};
use probity_testenv::redis::{Options, Redis};

fn queue(redis: &Redis, stream: &str) -> RedisQueue {
    RedisQueue::builder(redis.url(), stream)
        .group("charges")
        .timeout(Duration::from_millis(500))
        .build()
        .expect("valid")
}

/// Every handler call: key -> (attempt, when).
type Calls = Arc<Mutex<HashMap<String, Vec<(u32, Instant)>>>>;

async fn eventually(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A handler that records each call and succeeds.
fn recording(
    calls: &Calls,
) -> impl Fn(Delivery) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
+ use<> {
    let calls = Arc::clone(calls);
    move |d: Delivery| {
        calls
            .lock()
            .expect("calls")
            .entry(d.key)
            .or_default()
            .push((d.attempt, Instant::now()));
        Box::pin(async { Ok(()) })
    }
}

fn calls_of(calls: &Calls, key: &str) -> Vec<(u32, Instant)> {
    calls
        .lock()
        .expect("calls")
        .get(key)
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_is_idempotent_and_bounded() {
    let Some(redis) = Redis::start_or_skip(Options::default()) else {
        return;
    };
    let q = RedisQueue::builder(redis.url(), "bounds")
        .max_payload(1024)
        .max_backlog(3)
        .build()
        .expect("valid");
    let first = q.enqueue("order-1", b"{}").await.expect("enqueue");
    let Enqueued::Accepted(id) = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        q.enqueue("order-1", b"{}").await.expect("again"),
        Enqueued::Duplicate(id)
    );
    q.enqueue("order-2", b"{}").await.expect("enqueue");
    q.enqueue("order-3", b"{}").await.expect("enqueue");
    assert!(matches!(
        q.enqueue("order-4", b"{}").await,
        Err(Error::Full {
            backlog: 3,
            bound: 3
        })
    ));
    assert!(matches!(
        q.enqueue("order-5", &[0; 1025]).await,
        Err(Error::TooLarge {
            what: "payload",
            ..
        })
    ));
    assert!(matches!(
        q.enqueue(&"k".repeat(257), b"{}").await,
        Err(Error::TooLarge { what: "key", .. })
    ));
    assert!(
        redis
            .command(&["XLEN", "bounds"])
            .expect("xlen")
            .contains(":3")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off_then_succeed_or_go_to_the_dead_letters() {
    let Some(redis) = Redis::start_or_skip(Options::default()) else {
        return;
    };
    let q = queue(&redis, "retries");
    q.enqueue("flaky", b"ok on the third")
        .await
        .expect("enqueue");
    q.enqueue("broken", b"never").await.expect("enqueue");
    q.enqueue("bad", b"unreadable").await.expect("enqueue");
    let calls: Calls = Arc::default();
    let consumer = Consumer::builder(q.clone(), "c1")
        .attempts(3)
        .backoff(Duration::from_millis(200), Duration::from_secs(1))
        .visibility(Duration::from_secs(5))
        .deadline(Duration::from_secs(1))
        .batch(8, Duration::from_millis(50))
        .build()
        .expect("valid");
    let backlog = consumer.backlog(100);
    let seen = Arc::clone(&calls);
    let task = tokio::spawn(async move {
        consumer
            .run(move |d| {
                let seen = Arc::clone(&seen);
                async move {
                    let attempts = {
                        let mut seen = seen.lock().expect("calls");
                        let list = seen.entry(d.key.clone()).or_default();
                        list.push((d.attempt, Instant::now()));
                        list.len()
                    };
                    match d.key.as_str() {
                        "flaky" if attempts >= 3 => Handled::Done,
                        "bad" => Handled::Reject("cannot parse".into()),
                        _ => Handled::Retry("payments refused".into()),
                    }
                }
            })
            .await;
    });
    eventually("settled", Duration::from_secs(10), || {
        backlog.done() == 1 && backlog.dead_lettered() == 2
    })
    .await;
    let flaky = calls_of(&calls, "flaky");
    assert_eq!(flaky.iter().map(|c| c.0).collect::<Vec<_>>(), [1, 2, 3]);
    let gaps: Vec<Duration> = flaky.windows(2).map(|w| w[1].1 - w[0].1).collect();
    eprintln!("retry gaps (backoff 200 ms doubling): {gaps:?}");
    assert!(gaps[0] >= Duration::from_millis(200), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(400), "{gaps:?}");
    assert_eq!(
        calls_of(&calls, "broken").len(),
        3,
        "three attempts, then dead"
    );
    assert_eq!(calls_of(&calls, "bad").len(), 1, "rejected: dead at once");
    let dead = q.read_dead_letters(10).await.expect("dead letters");
    let mut reasons: Vec<(String, String)> = dead.into_iter().map(|(k, _, r)| (k, r)).collect();
    reasons.sort();
    assert_eq!(reasons[0], ("bad".into(), "cannot parse".into()));
    assert_eq!(reasons[1].0, "broken");
    assert!(
        reasons[1]
            .1
            .contains("failed 3 times; last: payments refused"),
        "{reasons:?}"
    );
    eventually("stream empty", Duration::from_secs(3), || {
        redis
            .command(&["XLEN", "retries"])
            .is_ok_and(|r| r.contains(":0"))
    })
    .await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_mid_batch_leaves_its_messages_to_another() {
    let Some(redis) = Redis::start_or_skip(Options::default()) else {
        return;
    };
    let q = queue(&redis, "takeover");
    for i in 0..10 {
        q.enqueue(&format!("order-{i}"), b"{}")
            .await
            .expect("enqueue");
    }
    let visibility = Duration::from_millis(1500);
    let build = |name: &str| {
        Consumer::builder(q.clone(), name)
            .concurrency(1)
            .visibility(visibility)
            .deadline(Duration::from_secs(1))
            .batch(10, Duration::from_millis(50))
            .build()
            .expect("valid")
    };
    let calls: Calls = Arc::default();
    let shared = Arc::clone(&calls);
    let handler = move |who: &'static str, hang_after: Option<usize>| {
        let calls = Arc::clone(&shared);
        move |d: Delivery| {
            let calls = Arc::clone(&calls);
            async move {
                let n = {
                    let mut c = calls.lock().expect("calls");
                    c.entry(d.key.clone())
                        .or_default()
                        .push((d.attempt, Instant::now()));
                    c.values().map(Vec::len).sum::<usize>()
                };
                if hang_after.is_some_and(|h| n > h) {
                    std::future::pending::<()>().await; // killed mid-handler
                }
                let _ = who;
                Ok::<(), String>(())
            }
        }
    };
    // The first consumer handles three, then hangs in the fourth and is
    // killed: the other seven are pending on it.
    let first = build("doomed");
    let doomed_handler = handler("doomed", Some(3));
    let doomed = tokio::spawn(async move { first.run(doomed_handler).await });
    eventually("three handled", Duration::from_secs(5), || {
        calls
            .lock()
            .expect("calls")
            .values()
            .map(Vec::len)
            .sum::<usize>()
            == 4
    })
    .await;
    let killed = Instant::now();
    doomed.abort();
    let second = build("rescuer");
    let backlog = second.backlog(100);
    let rescuer_handler = handler("rescuer", None);
    let rescuer = tokio::spawn(async move { second.run(rescuer_handler).await });
    eventually("all ten done", Duration::from_secs(10), || {
        backlog.done() == 7
    })
    .await;
    let took = killed.elapsed();
    eprintln!(
        "takeover: the other consumer finished the seven left {took:?} after the kill (visibility {visibility:?})"
    );
    assert!(
        took >= visibility - Duration::from_millis(200),
        "not before the visibility timeout"
    );
    let calls = calls.lock().expect("calls").clone();
    assert_eq!(calls.len(), 10, "every message handled");
    let hung = calls
        .values()
        .find(|c| c.len() == 2)
        .expect("the interrupted one ran twice");
    assert_eq!(hung.iter().map(|c| c.0).collect::<Vec<_>>(), [1, 2]);
    rescuer.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_holds_the_consumer_back() {
    let Some(redis) = Redis::start_or_skip(Options::default()) else {
        return;
    };
    let q = queue(&redis, "held");
    let breaker = CircuitBreaker::builder()
        .minimum_calls(1)
        .open_for(Duration::from_millis(800), 1.0, Duration::from_secs(5))
        .jitter(0.0, None)
        .build()
        .expect("valid");
    breaker
        .try_acquire()
        .expect("closed")
        .record(Verdict::Failure);
    assert_eq!(breaker.state(), State::Open);
    for i in 0..5 {
        q.enqueue(&format!("order-{i}"), b"{}")
            .await
            .expect("enqueue");
    }
    let calls: Calls = Arc::default();
    let seen = Arc::clone(&calls);
    let consumer = Consumer::builder(q.clone(), "c")
        .breaker(breaker.clone())
        .batch(5, Duration::from_millis(50))
        .build()
        .expect("valid");
    let backlog = consumer.backlog(100);
    let opened = Instant::now();
    let task = tokio::spawn(async move {
        consumer.run(recording(&seen)).await;
    });
    eventually(
        "drained after the breaker closed",
        Duration::from_secs(5),
        || backlog.done() == 5,
    )
    .await;
    let calls = calls.lock().expect("calls").clone();
    let first = calls.values().flatten().map(|c| c.1).min().expect("calls");
    assert!(
        first - opened >= Duration::from_millis(700),
        "nothing while open: {:?}",
        first - opened
    );
    assert!(
        calls.values().all(|c| c.len() == 1 && c[0].0 == 1),
        "no attempt spent while open: {calls:?}"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_messages_survive_a_redis_kill_and_restart() {
    let Some(mut redis) = Redis::start_or_skip(Options {
        persistence: true,
        ..Options::default()
    }) else {
        return;
    };
    let q = queue(&redis, "durable");
    for i in 0..200 {
        let r = q
            .enqueue(&format!("order-{i}"), format!("{{\"n\":{i}}}").as_bytes())
            .await;
        assert!(matches!(r, Ok(Enqueued::Accepted(_))), "{r:?}");
    }
    redis.kill();
    assert!(matches!(
        q.enqueue("order-x", b"{}").await,
        Err(Error::Unavailable(_) | Error::Timeout(_))
    ));
    redis.restart().expect("restart");
    // The idempotency keys came back too.
    assert!(matches!(
        q.enqueue("order-7", b"{}").await,
        Ok(Enqueued::Duplicate(_))
    ));
    let calls: Calls = Arc::default();
    let seen = Arc::clone(&calls);
    let consumer = Consumer::builder(q.clone(), "c")
        .batch(50, Duration::from_millis(50))
        .build()
        .expect("valid");
    let backlog = consumer.backlog(1000);
    let task = tokio::spawn(async move {
        consumer.run(recording(&seen)).await;
    });
    eventually("all 200 drained", Duration::from_secs(10), || {
        backlog.done() == 200
    })
    .await;
    let calls = calls.lock().expect("calls").clone();
    assert_eq!(calls.len(), 200, "none lost");
    assert!(calls.values().all(|c| c.len() == 1), "none twice");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_entries_are_dead_lettered_and_health_sees_the_consumer() {
    let Some(redis) = Redis::start_or_skip(Options::default()) else {
        return;
    };
    let q = queue(&redis, "hostile");
    q.enqueue("good", b"{}").await.expect("enqueue");
    // Written by something else: no key, no payload.
    redis
        .command(&["XADD", "hostile", "*", "junk", "x"])
        .expect("xadd");
    let payments = CircuitBreaker::builder().build().expect("valid");
    let builder = Consumer::builder(q.clone(), "c")
        .breaker(payments.clone())
        .batch(8, Duration::from_millis(50));
    let backlog = builder.backlog(2);
    let health = Health::builder()
        .saturation("charges-backlog", backlog.clone())
        .without_watchdog()
        .build()
        .expect("valid");
    let consumer = builder
        .heartbeat(health.heartbeat("charges-consumer", Duration::from_millis(500)))
        .build()
        .expect("valid");
    let task = tokio::spawn(async move {
        consumer.run(|_d| async { Ok::<(), String>(()) }).await;
    });
    eventually("settled", Duration::from_secs(5), || {
        backlog.done() == 1
            && redis
                .command(&["XLEN", "hostile:dead"])
                .is_ok_and(|r| r.contains(":1"))
    })
    .await;
    let dead = q.read_dead_letters(10).await.expect("dead");
    assert_eq!(dead.len(), 1);
    assert!(dead[0].2.contains("malformed"), "{dead:?}");

    // Payments open: the consumer waits, beating its heartbeat, and the
    // backlog it reads fills readiness' saturation source.
    payments.force_open();
    q.enqueue("a", b"{}").await.expect("enqueue");
    q.enqueue("b", b"{}").await.expect("enqueue");
    let line = |probe, name: &str| {
        let report = health.report(probe, &[]);
        let line = report.checks.iter().find(|c| c.name == name).cloned();
        line.unwrap_or_else(|| panic!("no {name} in {report:?}"))
    };
    eventually(
        "backlog saturates readiness",
        Duration::from_secs(3),
        || line(Probe::Readiness, "charges-backlog").status == CheckStatus::Failed,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        line(Probe::Liveness, "charges-consumer").status,
        CheckStatus::Ok,
        "held back is alive"
    );
    payments.reset();
    eventually("drained and ready", Duration::from_secs(5), || {
        backlog.done() == 3 && line(Probe::Readiness, "charges-backlog").status == CheckStatus::Ok
    })
    .await;
    // A consumer that stops turning fails liveness.
    task.abort();
    eventually("heartbeat silent", Duration::from_secs(3), || {
        line(Probe::Liveness, "charges-consumer").status == CheckStatus::Failed
    })
    .await;
}
