//! The rate limiter's cost per call, beside the bare service and governor's
//! `check()` in the same run.
//!
//! Every limiter is configured so that it always admits (the hot path: a
//! clock read and one compare-and-swap, or one shard lock), and every call
//! is `poll_ready` + `call` + one poll of the response future with a no-op
//! waker. "two threads" runs the same loop on two threads sharing one
//! limiter and reports the time per call per thread.
//!
//! The clock is tokio's `Instant` (with `test-util` enabled by the
//! dev-dependencies; the clock is never paused here, so a read is one
//! atomic load plus `std::time::Instant::now()`). governor reads `quanta`.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::pin::pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use palisade::RateLimitLayer;
use tower::{Layer, Service};

/// The bare service: always ready, answers at once.
#[derive(Clone, Copy)]
struct Bare;

impl Service<u64> for Bare {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

/// One request through `svc`; panics if it was refused (the bench must
/// measure the admitting path).
#[inline]
fn one<S: Service<u64>>(svc: &mut S, cx: &mut Context<'_>, req: u64)
where
    S::Error: std::fmt::Debug,
{
    match svc.poll_ready(cx) {
        Poll::Ready(r) => r.unwrap(),
        Poll::Pending => panic!("not ready"),
    }
    let fut = pin!(svc.call(req));
    match fut.poll(cx) {
        Poll::Ready(r) => {
            black_box(r.unwrap());
        }
        Poll::Pending => panic!("pending"),
    }
}

/// Runs `iters` calls per thread on `threads` threads (each with its own
/// clone), returning wall time divided by the calls of one thread.
fn on_threads<S>(svc: &S, threads: usize, iters: u64, keys: u64) -> Duration
where
    S: Service<u64> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let mut svc = svc.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                barrier.wait();
                let start = Instant::now();
                for i in 0..iters {
                    one(&mut svc, &mut cx, (i + t as u64 * 7919) % keys);
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

fn layers() -> Vec<(&'static str, RateLimitLayer)> {
    // Rates far above what one core can ask for: always admitting.
    vec![
        (
            "token_bucket",
            RateLimitLayer::token_bucket(1_000_000_000, Duration::from_secs(1))
                .burst(1_000_000)
                .build()
                .unwrap(),
        ),
        (
            "sliding_window",
            RateLimitLayer::sliding_window(1_000_000, Duration::from_millis(1))
                .build()
                .unwrap(),
        ),
        (
            "sliding_log",
            RateLimitLayer::sliding_log(1_000, Duration::from_micros(1))
                .build()
                .unwrap(),
        ),
    ]
}

fn governor_direct() -> RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
> {
    RateLimiter::direct(
        Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap())
            .allow_burst(NonZeroU32::new(1_000_000).unwrap()),
    )
}

fn bench(c: &mut Criterion) {
    let mut cx = Context::from_waker(std::task::Waker::noop());

    let mut g = c.benchmark_group("rate_limit/one_thread");
    g.bench_function("clock/tokio_instant_now", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    g.bench_function("clock/std_instant_now", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    let quanta = governor::clock::QuantaClock::default();
    g.bench_function("clock/governor_quanta_now", |b| {
        b.iter(|| black_box(governor::clock::Clock::now(&quanta)))
    });
    g.bench_function("bare", |b| {
        let mut svc = Bare;
        b.iter(|| one(&mut svc, &mut cx, 1))
    });
    let gov = governor_direct();
    g.bench_function("governor_check", |b| {
        b.iter(|| black_box(gov.check()).unwrap())
    });
    for (name, layer) in layers() {
        g.bench_function(name, |b| {
            let mut svc = layer.layer(Bare);
            b.iter(|| one(&mut svc, &mut cx, 1))
        });
    }
    for keys in [1u64, 10_000] {
        let layer = RateLimitLayer::token_bucket(1_000_000_000, Duration::from_secs(1))
            .burst(1_000_000)
            .keyed(|k: &u64| *k)
            .max_keys(100_000)
            .build()
            .unwrap();
        g.bench_function(format!("keyed_token_bucket/{keys}_keys"), |b| {
            let mut svc = layer.layer(Bare);
            let mut i = 0u64;
            b.iter(|| {
                i = (i + 1) % keys;
                one(&mut svc, &mut cx, i)
            })
        });
        let layer = RateLimitLayer::sliding_window(1_000_000, Duration::from_millis(1))
            .keyed(|k: &u64| *k)
            .max_keys(100_000)
            .build()
            .unwrap();
        g.bench_function(format!("keyed_sliding_window/{keys}_keys"), |b| {
            let mut svc = layer.layer(Bare);
            let mut i = 0u64;
            b.iter(|| {
                i = (i + 1) % keys;
                one(&mut svc, &mut cx, i)
            })
        });
        let gov = RateLimiter::keyed(
            Quota::per_second(NonZeroU32::new(1_000_000_000).unwrap())
                .allow_burst(NonZeroU32::new(1_000_000).unwrap()),
        );
        g.bench_function(format!("governor_check_key/{keys}_keys"), |b| {
            let mut i = 0u64;
            b.iter(|| {
                i = (i + 1) % keys;
                black_box(gov.check_key(&i)).unwrap()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("rate_limit/threads");
    for threads in [1usize, 2] {
        g.bench_function(format!("bare/{threads}"), |b| {
            b.iter_custom(|iters| on_threads(&Bare, threads, iters, 1))
        });
        for (name, layer) in layers() {
            let svc = layer.layer(Bare);
            g.bench_function(format!("{name}/{threads}"), |b| {
                b.iter_custom(|iters| on_threads(&svc, threads, iters, 1))
            });
        }
        let layer = RateLimitLayer::token_bucket(1_000_000_000, Duration::from_secs(1))
            .burst(1_000_000)
            .keyed(|k: &u64| *k)
            .max_keys(100_000)
            .build()
            .unwrap();
        let svc = layer.layer(Bare);
        g.bench_function(format!("keyed_token_bucket_10000_keys/{threads}"), |b| {
            b.iter_custom(|iters| on_threads(&svc, threads, iters, 10_000))
        });
        let gov = Arc::new(governor_direct());
        g.bench_function(format!("governor_check/{threads}"), |b| {
            b.iter_custom(|iters| {
                let barrier = Arc::new(Barrier::new(threads + 1));
                let hs: Vec<_> = (0..threads)
                    .map(|_| {
                        let gov = gov.clone();
                        let barrier = barrier.clone();
                        std::thread::spawn(move || {
                            barrier.wait();
                            let start = Instant::now();
                            // Not unwrapped: quanta readings from two cores can
                            // disagree slightly, and governor then refuses.
                            for _ in 0..iters {
                                let _ = black_box(gov.check());
                            }
                            start.elapsed()
                        })
                    })
                    .collect();
                barrier.wait();
                hs.into_iter().map(|h| h.join().unwrap()).max().unwrap()
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = bench
}
/// The paths added with several limits, large windows and keyed wait mode,
/// beside the single-limit paths they extend (same driver, same run).
fn bench_limits(c: &mut Criterion) {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let mut g = c.benchmark_group("rate_limit/limits");
    let ms = Duration::from_millis(1);
    let sec = Duration::from_secs(1);
    g.bench_function("bare", |b| {
        let mut svc = Bare;
        b.iter(|| one(&mut svc, &mut cx, 1))
    });
    // Windows: the small 64-bit cell, the wide 128-bit one (2^32), and a
    // log above the ring's size (grown under a short lock).
    let small = RateLimitLayer::sliding_window(1_000_000, ms)
        .build()
        .unwrap();
    let wide = RateLimitLayer::sliding_window(1 << 32, ms).build().unwrap();
    let big_log = RateLimitLayer::sliding_log(1 << 32, Duration::from_micros(1))
        .build()
        .unwrap();
    for (name, layer) in [
        ("sliding_window_small", small),
        ("sliding_window_2^32", wide),
        ("sliding_log_2^32", big_log),
    ] {
        g.bench_function(name, |b| {
            let mut svc = layer.layer(Bare);
            b.iter(|| one(&mut svc, &mut cx, 1))
        });
    }
    // One limit vs two (all-or-nothing), unkeyed and keyed (10,000 keys).
    let bucket = || RateLimitLayer::token_bucket(1_000_000_000, sec).burst(1_000_000);
    let two = bucket()
        .and(RateLimitLayer::sliding_window(1 << 32, sec))
        .build()
        .unwrap();
    g.bench_function("two_limits", |b| {
        let mut svc = two.layer(Bare);
        b.iter(|| one(&mut svc, &mut cx, 1))
    });
    let keys = 10_000;
    let keyed_one = bucket().keyed(|k: &u64| *k).build().unwrap();
    let keyed_two = bucket()
        .and(RateLimitLayer::sliding_window(1 << 32, sec))
        .keyed(|k: &u64| *k)
        .build()
        .unwrap();
    let keyed_wait = bucket().keyed(|k: &u64| *k).wait(sec).build().unwrap();
    g.bench_function("keyed_token_bucket/10000_keys", |b| {
        let mut svc = keyed_one.layer(Bare);
        let mut i = 0u64;
        b.iter(|| {
            i = (i + 1) % keys;
            one(&mut svc, &mut cx, i)
        })
    });
    g.bench_function("keyed_two_limits/10000_keys", |b| {
        let mut svc = keyed_two.layer(Bare);
        let mut i = 0u64;
        b.iter(|| {
            i = (i + 1) % keys;
            one(&mut svc, &mut cx, i)
        })
    });
    // Wait mode admitting at once: keyed (decided in `call`) and unkeyed
    // (decided in `poll_ready`).
    g.bench_function("keyed_token_bucket_wait/10000_keys", |b| {
        let mut svc = keyed_wait.layer(Bare);
        let mut i = 0u64;
        b.iter(|| {
            i = (i + 1) % keys;
            one(&mut svc, &mut cx, i)
        })
    });
    let unkeyed_wait = bucket().wait(sec).build().unwrap();
    g.bench_function("token_bucket_wait", |b| {
        let mut svc = unkeyed_wait.layer(Bare);
        b.iter(|| one(&mut svc, &mut cx, 1))
    });
    g.finish();
}

criterion_group! {
    name = limits;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = bench_limits
}
criterion_main!(benches, limits);
