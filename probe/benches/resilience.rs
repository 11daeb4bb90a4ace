//! Closed-path circuit breaker overhead against recloser and failsafe, and
//! bulkhead acquire/release against a raw tokio semaphore, in one run.
//!
//! `cargo bench -p probity-probe --bench resilience` (or `make bench-probe`).

#![allow(
    clippy::disallowed_types,
    clippy::disallowed_methods,
    reason = "benchmarks measure wall time"
)]

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use failsafe::CircuitBreaker as _;
use probity_probe::breaker::{CircuitBreaker, Verdict};
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
    g.bench_function("probity", |b| {
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

/// Two threads hammering one shared breaker; time per call per thread.
fn contended<F>(iters: u64, call: F) -> Duration
where
    F: Fn() + Send + Sync + 'static,
{
    let call = Arc::new(call);
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (call, barrier) = (Arc::clone(&call), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                let start = Instant::now();
                for _ in 0..iters {
                    call();
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

fn breaker_contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker closed path, 2 threads");
    let ours = probity();
    g.bench_function("probity", |b| {
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
    targets = breaker_single, breaker_contended, bulkhead
}
criterion_main!(benches);
