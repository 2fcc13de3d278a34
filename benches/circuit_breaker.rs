//! The breaker's closed-state cost beside the bare service, per window kind,
//! on one thread and on two threads sharing one breaker; a keyed breaker
//! (one key, 10,000 keys) and the adaptive throttle on one thread.
//!
//! Each iteration is one full Tower call: `poll_ready`, `call`, and one
//! poll of the (immediately ready) response future, driven by hand with a
//! no-op waker so no executor cost is measured. Compare a breaker's time
//! with `bare` from the same run.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use palisade::CircuitBreakerLayer;
use palisade::circuit_breaker::{AdaptiveThrottleLayer, Window};
use tower::{Layer, Service, service_fn};

/// The bare service: answers at once. A concrete closure type (not a fn
/// pointer), so both the bare and the wrapped call are direct calls.
fn upstream()
-> impl Service<u64, Response = u64, Error = Infallible, Future = Ready<Result<u64, Infallible>>>
+ Clone
+ Send
+ 'static {
    service_fn(|x: u64| ready(Ok::<u64, Infallible>(x)))
}

/// One call through `svc`, start to end.
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

/// `iters` calls on each of `threads` threads (one clone each), started
/// together; returns the wall time, i.e. the time per call per thread.
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

fn variants() -> Vec<(&'static str, Option<CircuitBreakerLayer>)> {
    vec![
        ("bare", None),
        (
            "consecutive",
            Some(
                CircuitBreakerLayer::consecutive_failures(5)
                    .build()
                    .unwrap(),
            ),
        ),
        (
            "count_window",
            Some(
                CircuitBreakerLayer::failure_rate(0.5)
                    .window(Window::count(100))
                    .min_calls(20)
                    .build()
                    .unwrap(),
            ),
        ),
        (
            "time_window",
            Some(
                CircuitBreakerLayer::failure_rate(0.5)
                    .window(Window::time(Duration::from_secs(10)))
                    .min_calls(20)
                    .build()
                    .unwrap(),
            ),
        ),
    ]
}

fn closed_one_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("closed/one_thread");
    for (name, layer) in variants() {
        let mut cx = Context::from_waker(Waker::noop());
        match layer {
            None => {
                let mut svc = upstream();
                let mut i = 0u64;
                group.bench_function(name, |b| {
                    b.iter(|| {
                        i = i.wrapping_add(1);
                        one_call(&mut svc, &mut cx, i)
                    })
                });
            }
            Some(layer) => {
                let mut svc = layer.layer(upstream());
                let mut i = 0u64;
                group.bench_function(name, |b| {
                    b.iter(|| {
                        i = i.wrapping_add(1);
                        one_call(&mut svc, &mut cx, i)
                    })
                });
            }
        }
    }
    group.finish();
}

/// For scale: the refcount pair (clone + drop) that any owned response
/// future holding shared state pays, here on an `Arc` no one else touches.
fn reference(c: &mut Criterion) {
    let shared = Arc::new(0u64);
    c.bench_function("reference/arc_clone_drop", |b| {
        b.iter(|| drop(black_box(Arc::clone(black_box(&shared)))))
    });
    // One reading of the clock a time window needs (tokio's `Instant`,
    // which checks for a paused test clock first).
    c.bench_function("reference/tokio_instant_now", |b| {
        b.iter(tokio::time::Instant::now)
    });
}

fn closed_threads(c: &mut Criterion, threads: usize) {
    let mut group = c.benchmark_group(format!("closed/{threads}_threads_per_call"));
    for (name, layer) in variants() {
        match layer {
            None => {
                let svc = upstream();
                group.bench_function(name, |b| {
                    b.iter_custom(|iters| run_threads(&svc, threads, iters))
                });
            }
            Some(layer) => {
                let svc = layer.layer(upstream());
                group.bench_function(name, |b| {
                    b.iter_custom(|iters| run_threads(&svc, threads, iters))
                });
            }
        }
    }
    group.finish();
}

fn one_vs_two_threads(c: &mut Criterion) {
    // The same harness with 1 and 2 threads, so the two are comparable.
    closed_threads(c, 1);
    closed_threads(c, 2);
}

/// A keyed breaker's cost per call beside the bare service and the
/// unkeyed breaker: on one key, and round-robin over 10,000 keys held
/// (the key's hash, a shard lock and a map lookup, the key's breaker
/// cold in cache); and the adaptive throttle's cost while the backend
/// accepts everything (no draw: one clock reading, the window's tally, and
/// the outcome recorded).
fn keyed_and_throttle(c: &mut Criterion) {
    const KEYS: u64 = 10_000;
    let mut group = c.benchmark_group("closed/keyed_and_throttle");
    let mut cx = Context::from_waker(Waker::noop());
    let mut bench = |name: &str, svc: &mut dyn FnMut(&mut Context<'_>, u64)| {
        let mut i = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                svc(&mut cx, i)
            })
        });
    };
    let mut bare = upstream();
    bench("bare", &mut |cx, i| one_call(&mut bare, cx, i));
    let unkeyed = CircuitBreakerLayer::consecutive_failures(5)
        .build()
        .unwrap();
    let mut unkeyed = unkeyed.layer(upstream());
    bench("unkeyed_consecutive", &mut |cx, i| {
        one_call(&mut unkeyed, cx, i)
    });
    let keyed = |keys: u64| {
        CircuitBreakerLayer::consecutive_failures(5)
            .keyed(move |x: &u64| *x % keys)
            .max_keys(2 * KEYS as usize)
            .build()
            .unwrap()
            .layer(upstream())
    };
    let mut one_key = keyed(1);
    bench("keyed_consecutive_1_key", &mut |cx, i| {
        one_call(&mut one_key, cx, i)
    });
    let mut many = keyed(KEYS);
    for i in 0..KEYS {
        one_call(&mut many, &mut Context::from_waker(Waker::noop()), i);
    }
    bench("keyed_consecutive_10000_keys", &mut |cx, i| {
        one_call(&mut many, cx, i)
    });
    let throttle = AdaptiveThrottleLayer::builder().build().unwrap();
    let mut throttle = throttle.layer(upstream());
    bench("adaptive_throttle", &mut |cx, i| {
        one_call(&mut throttle, cx, i)
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = reference, closed_one_thread, one_vs_two_threads, keyed_and_throttle
}
criterion_main!(benches);
