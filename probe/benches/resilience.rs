//! Closed-path circuit breaker overhead against recloser and failsafe (as
//! closures) and tower-resilience (as tower layers), and bulkhead
//! acquire/release against a raw tokio semaphore, in one run.
//!
//! `cargo bench -p probity-probe --bench resilience` (or `make bench-probe`).

#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "benchmarks measure wall time"
)]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use tower::{Layer as _, Service, ServiceExt as _};

use criterion::{Criterion, criterion_group, criterion_main};
use failsafe::CircuitBreaker as _;
use probity_probe::breaker::{CircuitBreaker, CircuitBreakerLayer, Verdict};
use probity_probe::bulkhead::Bulkhead;

fn probity() -> CircuitBreaker {
    CircuitBreaker::builder().build().expect("valid")
}

fn breaker_single(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker closed path, 1 thread");
    g.bench_function("bare call (baseline)", |b| {
        b.iter(|| black_box(Ok::<u64, ()>(black_box(1))))
    });
    let ours = probity();
    g.bench_function("probity call", |b| {
        b.iter(|| ours.call(|| black_box(Ok::<u64, ()>(black_box(1)))))
    });
    g.bench_function("probity permit", |b| {
        b.iter(|| {
            let permit = ours.try_acquire().expect("closed");
            let r = black_box(Ok::<u64, ()>(black_box(1)));
            permit.record(Verdict::Success);
            r
        })
    });
    let recloser = recloser::Recloser::default();
    g.bench_function("recloser", |b| {
        b.iter(|| recloser.call(|| black_box(Ok::<u64, ()>(black_box(1)))))
    });
    let failsafe = failsafe::Config::new().build();
    g.bench_function("failsafe", |b| {
        b.iter(|| failsafe.call(|| black_box(Ok::<u64, ()>(black_box(1)))))
    });
    g.finish();
}

/// Two threads, each with its own clone of `state`, calling `each` on it
/// `iters` times; the slower thread's time.
fn on_two_threads<S: Clone + Send + 'static>(iters: u64, state: &S, each: fn(&mut S)) -> Duration {
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (mut state, barrier) = (state.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                for _ in 0..iters {
                    each(&mut state);
                }
                start.elapsed()
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("bench thread"))
        .max()
        .unwrap_or_default()
}

/// Two threads hammering one shared breaker; time per call per thread.
fn contended<F>(iters: u64, call: F) -> Duration
where
    F: Fn() + Send + Sync + 'static,
{
    on_two_threads(iters, &Arc::new(call), |call| call())
}

fn breaker_contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker closed path, 2 threads");
    let ours = probity();
    g.bench_function("probity call", |b| {
        let ours = ours.clone();
        b.iter_custom(move |iters| {
            let ours = ours.clone();
            contended(iters, move || {
                let _ = ours.call(|| black_box(Ok::<u64, ()>(1)));
            })
        })
    });
    g.bench_function("probity permit", |b| {
        let ours = ours.clone();
        b.iter_custom(move |iters| {
            let ours = ours.clone();
            contended(iters, move || {
                let permit = ours.try_acquire().expect("closed");
                black_box(1u64);
                permit.record(Verdict::Success);
            })
        })
    });
    let recloser = Arc::new(recloser::Recloser::default());
    g.bench_function("recloser", |b| {
        b.iter_custom(|iters| {
            let r = Arc::clone(&recloser);
            contended(iters, move || {
                let _ = r.call(|| black_box(Ok::<u64, ()>(1)));
            })
        })
    });
    let failsafe = Arc::new(failsafe::Config::new().build());
    g.bench_function("failsafe", |b| {
        b.iter_custom(|iters| {
            let f = Arc::clone(&failsafe);
            contended(iters, move || {
                let _ = f.call(|| black_box(Ok::<u64, ()>(1)));
            })
        })
    });
    g.finish();
}

/// The service every layer wraps: answers at once.
type Answer = fn(u64) -> Ready<Result<u64, Infallible>>;

fn echo() -> tower::util::ServiceFn<Answer> {
    fn answer(x: u64) -> Ready<Result<u64, Infallible>> {
        ready(Ok(x))
    }
    tower::service_fn(answer as Answer)
}

/// Runs `f` to completion on this thread, polling again while it waits
/// (a breaker behind a lock may wait for the other thread).
fn drive<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
        std::hint::spin_loop();
    }
}

/// One request through `svc`: readiness, then the call.
fn one<S: Service<u64>>(svc: &mut S) {
    let ready = drive(svc.ready()).is_ok();
    let r = drive(svc.call(black_box(1)));
    black_box((ready, r.is_ok()));
}

/// Two threads, each with its own clone of one service (as two
/// connections would have); time per request per thread.
fn contended_service<S>(iters: u64, svc: &S) -> Duration
where
    S: Service<u64> + Clone + Send + 'static,
{
    on_two_threads(iters, svc, one)
}

fn tower_layers(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker as a tower layer, closed path");
    let theirs = || {
        tower_resilience_circuitbreaker::CircuitBreakerLayer::builder()
            .build()
            .expect("tower-resilience config")
            .layer(echo())
    };
    let ours = || CircuitBreakerLayer::new(probity()).layer(echo());
    let mut bare = echo();
    g.bench_function("bare service (baseline), 1 thread", |b| {
        b.iter(|| one(&mut bare))
    });
    let mut svc = ours();
    g.bench_function("probity, 1 thread", |b| b.iter(|| one(&mut svc)));
    let mut svc = theirs();
    g.bench_function("tower-resilience, 1 thread", |b| b.iter(|| one(&mut svc)));
    let svc = ours();
    g.bench_function("probity, 2 threads", |b| {
        b.iter_custom(|iters| contended_service(iters, &svc))
    });
    let svc = theirs();
    g.bench_function("tower-resilience, 2 threads", |b| {
        b.iter_custom(|iters| contended_service(iters, &svc))
    });
    g.finish();
}

fn bulkhead(c: &mut Criterion) {
    let mut g = c.benchmark_group("bulkhead acquire + release");
    let ours = Bulkhead::new(64, Duration::ZERO);
    g.bench_function("probity", |b| {
        b.iter(|| drop(black_box(ours.try_acquire())))
    });
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    g.bench_function("tokio Semaphore", |b| {
        b.iter(|| drop(black_box(Arc::clone(&sem).try_acquire_owned())))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = breaker_single, breaker_contended, tower_layers, bulkhead
}
criterion_main!(benches);
