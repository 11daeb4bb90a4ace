use std::time::Duration;

use super::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// 10-call window, judged from 4 calls, 50%, open 10 s, no jitter.
fn breaker() -> Builder {
    CircuitBreaker::builder()
        .count_window(10)
        .minimum_calls(4)
        .failure_rate(0.5)
        .open_for(secs(10), 2.0, secs(60))
        .jitter(0.0, Some(1))
}

fn calls(b: &CircuitBreaker, verdicts: &[Verdict]) {
    for v in verdicts {
        b.try_acquire().expect("admitted").record(*v);
    }
}

use Verdict::{Failure as F, Success as S};

#[tokio::test(start_paused = true)]
async fn opens_at_the_failure_rate_once_the_minimum_is_reached() {
    let b = breaker().build().expect("valid");
    calls(&b, &[F, F, F]);
    assert_eq!(b.state(), State::Closed, "3 calls are below the minimum");
    calls(&b, &[S]);
    assert_eq!(b.state(), State::Closed, "a success never trips");
    calls(&b, &[F]);
    assert_eq!(b.state(), State::Open, "4 of 5 failed");
    let err = b.try_acquire().expect_err("open");
    assert_eq!(err.retry_after, secs(10));
    tokio::time::advance(secs(4)).await;
    assert_eq!(b.try_acquire().expect_err("open").retry_after, secs(6));
    assert_eq!(b.remaining_open(), secs(6));
}

#[tokio::test(start_paused = true)]
async fn slow_successes_trip_the_slow_call_rule() {
    let b = breaker()
        .slow_call(Duration::from_millis(500), 0.75)
        .build()
        .expect("valid");
    for _ in 0..4 {
        let permit = b.try_acquire().expect("closed");
        tokio::time::advance(Duration::from_millis(800)).await;
        permit.record(S);
    }
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.snapshot().slow, 4);
}

#[tokio::test(start_paused = true)]
async fn single_probe_half_open_closes_on_success_and_reopens_with_backoff() {
    let b = breaker().build().expect("valid");
    let mut events = b.subscribe();
    calls(&b, &[F, F, F, F]);
    tokio::time::advance(secs(10)).await;
    let trial = b.try_acquire().expect("trial admitted");
    assert_eq!(b.state(), State::HalfOpen);
    assert!(b.try_acquire().is_err(), "one trial at a time");
    trial.record(F);
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.remaining_open(), secs(20), "second opening doubles");

    tokio::time::advance(secs(20)).await;
    b.try_acquire().expect("trial").record(S);
    assert_eq!(b.state(), State::Closed);
    assert_eq!(
        b.snapshot(),
        Snapshot::default(),
        "closing starts a fresh window"
    );

    let seen: Vec<(State, State)> = std::iter::from_fn(|| events.try_recv().ok())
        .map(|t| (t.from, t.to))
        .collect();
    assert_eq!(
        seen,
        [
            (State::Closed, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Open),
            (State::Open, State::HalfOpen),
            (State::HalfOpen, State::Closed),
        ]
    );
    calls(&b, &[F, F, F, F]);
    assert_eq!(b.remaining_open(), secs(10), "backoff resets after closing");
}

#[tokio::test(start_paused = true)]
async fn a_hung_trial_loses_its_lease_and_its_late_result_is_ignored() {
    let b = breaker()
        .half_open(HalfOpen::SingleProbe { lease: secs(3) })
        .build()
        .expect("valid");
    calls(&b, &[F, F, F, F]);
    tokio::time::advance(secs(10)).await;
    let hung = b.try_acquire().expect("first trial");
    tokio::time::advance(secs(2)).await;
    assert_eq!(
        b.try_acquire().expect_err("lease held").retry_after,
        secs(1)
    );
    tokio::time::advance(secs(1)).await;
    let second = b.try_acquire().expect("lease expired: a new trial");
    hung.record(F);
    assert_eq!(
        b.state(),
        State::HalfOpen,
        "the expired trial's failure is ignored"
    );
    second.record(S);
    assert_eq!(b.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn n_probes_decide_by_their_own_ratio() {
    let b = breaker()
        .half_open(HalfOpen::Probes(4))
        .build()
        .expect("valid");
    calls(&b, &[F, F, F, F]);
    tokio::time::advance(secs(10)).await;
    let trials: Vec<Permit<'_>> = (0..4).map(|_| b.try_acquire().expect("trial")).collect();
    assert!(b.try_acquire().is_err(), "only 4 trials");
    for (t, v) in trials.into_iter().zip([S, S, S, F]) {
        t.record(v);
    }
    assert_eq!(b.state(), State::Closed, "1 of 4 failed: below 50%");

    calls(&b, &[F, F, F, F]);
    tokio::time::advance(secs(10)).await;
    let trials: Vec<Permit<'_>> = (0..4).map(|_| b.try_acquire().expect("trial")).collect();
    for (t, v) in trials.into_iter().zip([S, S, F, F]) {
        t.record(v);
    }
    assert_eq!(b.state(), State::Open, "2 of 4 failed: at 50%");
}

#[tokio::test(start_paused = true)]
async fn the_longest_retry_after_hint_wins_up_to_the_maximum() {
    let b = breaker().build().expect("valid");
    calls(
        &b,
        &[
            Verdict::FailureRetryAfter(secs(30)),
            Verdict::FailureRetryAfter(secs(45)),
            Verdict::FailureRetryAfter(secs(20)),
            F,
        ],
    );
    assert_eq!(b.remaining_open(), secs(45));
    b.reset();
    calls(&b, &[Verdict::FailureRetryAfter(secs(3600)), F, F, F]);
    assert_eq!(
        b.remaining_open(),
        secs(60),
        "capped at the maximum open duration"
    );
}

#[tokio::test(start_paused = true)]
async fn manual_controls() {
    let b = breaker().build().expect("valid");
    b.force_open();
    assert_eq!(b.state(), State::ForcedOpen);
    tokio::time::advance(secs(3600)).await;
    assert!(b.try_acquire().is_err(), "forced open never times out");
    b.disable();
    calls(&b, &[F, F, F, F, F, F]);
    assert_eq!(b.state(), State::Disabled);
    assert_eq!(b.snapshot(), Snapshot::default(), "disabled counts nothing");
    b.reset();
    assert_eq!(b.state(), State::Closed);
    assert_eq!(*b.watch().borrow(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn dropped_permits_release_and_count_as_configured() {
    let b = breaker().build().expect("valid");
    for _ in 0..6 {
        drop(b.try_acquire().expect("closed"));
    }
    assert_eq!(
        b.snapshot().calls,
        0,
        "cancelled calls are ignored by default"
    );

    calls(&b, &[F, F, F, F]);
    tokio::time::advance(secs(10)).await;
    drop(b.try_acquire().expect("trial"));
    assert_eq!(b.state(), State::HalfOpen);
    let trial = b
        .try_acquire()
        .expect("a dropped trial frees the slot at once");
    trial.record(S);
    assert_eq!(b.state(), State::Closed);

    let counting = breaker()
        .on_cancel(OnCancel::Failure)
        .build()
        .expect("valid");
    for _ in 0..4 {
        drop(counting.try_acquire().expect("closed"));
    }
    assert_eq!(counting.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn time_window_forgets_old_calls() {
    let b = breaker().time_window(5).build().expect("valid");
    calls(&b, &[F, F, F]);
    tokio::time::advance(secs(6)).await;
    calls(&b, &[F, S, S, S]);
    assert_eq!(
        b.state(),
        State::Closed,
        "the first three fell out of the window"
    );
    assert_eq!(b.snapshot().calls, 4);
}

#[test]
fn configuration_is_validated() {
    let bad = [
        CircuitBreaker::builder().failure_rate(0.0),
        CircuitBreaker::builder().failure_rate(1.5),
        CircuitBreaker::builder().count_window(0),
        CircuitBreaker::builder().minimum_calls(0),
        CircuitBreaker::builder().half_open(HalfOpen::Probes(0)),
        CircuitBreaker::builder().open_for(secs(10), 2.0, secs(5)),
        CircuitBreaker::builder().slow_call(secs(1), 0.0),
    ];
    for b in bad {
        assert!(b.build().is_err());
    }
}

#[tokio::test(start_paused = true)]
async fn call_runs_only_when_closed() {
    let b = breaker().minimum_calls(1).build().expect("valid");
    let r: Result<(), Rejected<&str>> = b.call_async(|| async { Err("boom") }).await;
    assert!(matches!(r, Err(Rejected::Inner("boom"))));
    let ran = std::cell::Cell::new(false);
    let r: Result<(), Rejected<&str>> = b
        .call_async(|| async {
            ran.set(true);
            Ok(())
        })
        .await;
    assert!(matches!(r, Err(Rejected::Open(_))));
    let r: Result<(), Rejected<&str>> = b.call(|| {
        ran.set(true);
        Ok(())
    });
    assert!(matches!(r, Err(Rejected::Open(_))));
    assert!(!ran.get());
}

#[tokio::test(start_paused = true)]
async fn closure_calls_count_like_permits() {
    // The untimed closed path (count window) and the timed one (slow-call
    // timing) both count results and trip the breaker.
    for timed in [false, true] {
        let mut builder = breaker()
            .count_window(10)
            .minimum_calls(4)
            .failure_rate(0.5);
        if timed {
            builder = builder.slow_call(secs(1), 1.0);
        }
        let b = builder.build().expect("valid");
        for _ in 0..2 {
            assert_eq!(b.call(|| Ok::<_, ()>(1)).ok(), Some(1));
        }
        let ignored = b.call_with(|_| Verdict::Ignore, || Err::<(), _>("not counted"));
        assert!(matches!(ignored, Err(Rejected::Inner(_))));
        assert_eq!(b.snapshot().calls, 2, "timed: {timed}");
        let _ = b.call(|| Err::<(), _>("down"));
        assert_eq!(b.state(), State::Closed);
        let _ = b.call_async(|| async { Err::<(), _>("down") }).await;
        assert_eq!(b.state(), State::Open, "timed: {timed}");
        assert_eq!(b.snapshot().failures, 2);
    }
    // A dropped future counts as the breaker's cancellation policy says.
    let b = breaker()
        .minimum_calls(1)
        .on_cancel(OnCancel::Failure)
        .build()
        .expect("valid");
    let pending = b.call_async(std::future::pending::<Result<(), ()>>);
    let _ = tokio::time::timeout(secs(1), pending).await;
    assert_eq!(b.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn thousands_of_consecutive_openings_stay_capped() {
    let b = CircuitBreaker::builder()
        .count_window(10)
        .minimum_calls(1)
        .failure_rate(0.5)
        .open_for(secs(1), 2.0, secs(60))
        .jitter(0.5, Some(7))
        .build()
        .expect("valid");
    calls(&b, &[F]);
    for opening in 1..=5_000 {
        assert_eq!(b.state(), State::Open, "opening {opening}");
        let open = b.remaining_open();
        assert!(
            open <= secs(60),
            "opening {opening}: {open:?} is past the cap"
        );
        tokio::time::advance(open + Duration::from_millis(1)).await;
        b.try_acquire()
            .expect("a trial once the open period is over")
            .record(F);
    }
}

mod open_duration {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn never_panics_and_never_passes_the_cap(
            openings in any::<u32>(),
            jitter_unit in 0.0f64..1.0,
            base_ms in 1u64..3_600_000,
            extra_ms in 0u64..3_600_000,
            backoff in prop_oneof![1.0f64..1e6, Just(f64::MAX), Just(f64::INFINITY)],
            jitter in 0.0f64..=1.0,
        ) {
            let base = Duration::from_millis(base_ms);
            let max = base + Duration::from_millis(extra_ms);
            let config = CircuitBreaker::builder()
                .open_for(base, backoff, max)
                .jitter(jitter, None)
                .config;
            let open = config.open_duration(openings, jitter_unit);
            prop_assert!(open <= max, "{open:?} > {max:?}");
            if jitter == 0.0 && openings == 0 {
                prop_assert!(open.abs_diff(base) <= Duration::from_micros(1), "{open:?} != {base:?}");
            }
        }
    }
}
