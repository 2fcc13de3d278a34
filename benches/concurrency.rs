//! Admission cost of the concurrency limit beside tower's fixed
//! `ConcurrencyLimit` and the bare service, on one thread and on two
//! threads sharing one limit.
//!
//! Each iteration is one full Tower call: `poll_ready` (which takes a
//! place), `call`, and one poll of the (immediately ready) response future
//! (which gives it back), driven by hand with a no-op waker. Variants:
//! - `tower_fixed`: `tower::limit::ConcurrencyLimit` (a semaphore);
//! - `fixed`: ours with a fixed limit (never timed);
//! - `gradient2_sampled`: ours, adaptive, limit 1,000 (one call in 64
//!   reads the clock, twice);
//! - `gradient2_every_call`: ours, adaptive, limit 8 (every call reads
//!   the clock twice: the cost of latency sampling at small limits).

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, Criterion, criterion_group, criterion_main, measurement::WallTime,
};
use palisade::ConcurrencyLimitLayer;
use tower::{Layer, Service, service_fn};

fn upstream()
-> impl Service<u64, Response = u64, Error = Infallible, Future = Ready<Result<u64, Infallible>>>
+ Clone
+ Send
+ 'static {
    service_fn(|x: u64| ready(Ok::<u64, Infallible>(x)))
}

#[inline]
fn one_call<S>(svc: &mut S, cx: &mut Context<'_>, x: u64)
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => unreachable!("always ready"),
    }
    let fut = pin!(svc.call(black_box(x)));
    match fut.poll(cx) {
        Poll::Ready(r) => {
            black_box(r.unwrap());
        }
        Poll::Pending => unreachable!("ready future"),
    }
}

fn run_threads<S>(svc: &S, threads: usize, iters: u64) -> Duration
where
    S: Service<u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let mut svc = svc.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut cx = Context::from_waker(Waker::noop());
                barrier.wait();
                let start = Instant::now();
                for i in 0..iters {
                    one_call(&mut svc, &mut cx, i);
                }
                start.elapsed()
            })
        })
        .collect();
    barrier.wait();
    handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .unwrap()
}

fn bench<S>(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, threads: usize, svc: S)
where
    S: Service<u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    if threads == 0 {
        let mut svc = svc;
        let mut cx = Context::from_waker(Waker::noop());
        let mut i = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                one_call(&mut svc, &mut cx, i)
            })
        });
    } else {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| run_threads(&svc, threads, iters))
        });
    }
}

fn all(group: &mut BenchmarkGroup<'_, WallTime>, threads: usize) {
    bench(group, "bare", threads, upstream());
    bench(
        group,
        "tower_fixed",
        threads,
        tower::limit::ConcurrencyLimitLayer::new(1_000).layer(upstream()),
    );
    bench(
        group,
        "fixed",
        threads,
        ConcurrencyLimitLayer::fixed(1_000)
            .build()
            .unwrap()
            .layer(upstream()),
    );
    bench(
        group,
        "gradient2_sampled",
        threads,
        ConcurrencyLimitLayer::gradient2()
            .initial_limit(1_000)
            .build()
            .unwrap()
            .layer(upstream()),
    );
    bench(
        group,
        "gradient2_every_call",
        threads,
        ConcurrencyLimitLayer::gradient2()
            .initial_limit(8)
            .max_limit(8)
            .build()
            .unwrap()
            .layer(upstream()),
    );
}

fn admission(c: &mut Criterion) {
    let mut group = c.benchmark_group("admission/one_thread");
    all(&mut group, 0);
    group.finish();
    let mut group = c.benchmark_group("admission/2_threads_per_call");
    all(&mut group, 2);
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = admission
}
criterion_main!(benches);
