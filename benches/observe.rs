//! What observability costs each layer on the path where nothing goes
//! wrong (breaker closed, limiter admitting, retry succeeding at once,
//! batch fulfilled), beside the bare service in the same run.
//!
//! Run it twice and compare the same rows, A/B:
//!
//! ```text
//! cargo bench --bench observe                      # feature `metrics` off
//! cargo bench --bench observe --features metrics   # on: no recorder, and a Prometheus recorder
//! ```
//!
//! Rows per layer: `bare`; `layer` (no hooks; with the feature on, no
//! recorder installed, so every metric handle is a no-op); `layer+hooks`
//! (every hook of the layer set: none fires on this path); and with the
//! feature on, `layer+prometheus` (built under a
//! `metrics-exporter-prometheus` recorder: real counters bumped per call).
//! The group's name says whether the feature was compiled in.
//!
//! Each iteration is one full Tower call (`poll_ready`, `call`, one poll of
//! the ready response future) driven by hand with a no-op waker.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade::{
    BatchLayer, CircuitBreakerLayer, ConcurrencyLimitLayer, RateLimitLayer, RetryLayer,
};
use tower::{Layer, Service};

const GROUP: &str = if cfg!(feature = "metrics") {
    "metrics_on"
} else {
    "metrics_off"
};

/// The bare service: answers at once.
#[derive(Debug, Clone, Copy)]
struct Upstream;

impl Service<u64> for Upstream {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, x: u64) -> Self::Future {
        ready(Ok(x))
    }
}

#[inline]
fn one_call<S, Req>(svc: &mut S, cx: &mut Context<'_>, req: Req)
where
    S: Service<Req>,
    S::Error: std::fmt::Debug,
{
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => unreachable!("always ready"),
    }
    let fut = pin!(svc.call(black_box(req)));
    match fut.poll(cx) {
        Poll::Ready(r) => {
            black_box(r.unwrap());
        }
        Poll::Pending => unreachable!("ready future"),
    }
}

/// Runs `f` with a Prometheus recorder as the local recorder (so the
/// layers it builds report to it), when the feature is on.
#[cfg(feature = "metrics")]
fn with_prometheus<T>(f: impl FnOnce() -> T) -> Option<T> {
    use std::sync::OnceLock;
    static RECORDER: OnceLock<metrics_exporter_prometheus::PrometheusRecorder> = OnceLock::new();
    let recorder = RECORDER
        .get_or_init(|| metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder());
    Some(metrics::with_local_recorder(recorder, f))
}

#[cfg(not(feature = "metrics"))]
fn with_prometheus<T>(_: impl FnOnce() -> T) -> Option<T> {
    None
}

/// Benches `bare` and each built layer variant over `Upstream`.
fn rows<L>(c: &mut Criterion, layer: &str, variants: Vec<(&str, Option<L>)>)
where
    L: Layer<Upstream>,
    L::Service: Service<u64>,
    <L::Service as Service<u64>>::Error: std::fmt::Debug,
{
    let mut group = c.benchmark_group(format!("{GROUP}/{layer}"));
    let mut cx = Context::from_waker(Waker::noop());
    let mut bare = Upstream;
    let mut i = 0u64;
    group.bench_function("bare", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            one_call(&mut bare, &mut cx, i)
        })
    });
    for (name, layer) in variants {
        let Some(layer) = layer else { continue };
        let mut svc = layer.layer(Upstream);
        group.bench_function(name, |b| {
            b.iter(|| {
                i = i.wrapping_add(1);
                one_call(&mut svc, &mut cx, i)
            })
        });
    }
    group.finish();
}

fn breaker(c: &mut Criterion) {
    let build = |hooks: bool| {
        let b = CircuitBreakerLayer::consecutive_failures(5).name("bench");
        let b = if hooks {
            b.on_state_change(|e| {
                black_box(e);
            })
            .on_rejected(|e| {
                black_box(e);
            })
        } else {
            b
        };
        b.build().unwrap()
    };
    rows(
        c,
        "breaker",
        vec![
            ("layer", Some(build(false))),
            ("layer+hooks", Some(build(true))),
            ("layer+prometheus", with_prometheus(|| build(false))),
        ],
    );
}

fn retry(c: &mut Criterion) {
    let build = |hooks: bool| {
        let b = RetryLayer::exponential(Duration::from_millis(10)).name("bench");
        let b = if hooks {
            b.on_retry(|e| {
                black_box(e);
            })
            .on_budget_refused(|e| {
                black_box(e);
            })
        } else {
            b
        };
        b.build().unwrap()
    };
    rows(
        c,
        "retry",
        vec![
            ("layer", Some(build(false))),
            ("layer+hooks", Some(build(true))),
            ("layer+prometheus", with_prometheus(|| build(false))),
        ],
    );
}

fn rate_limit(c: &mut Criterion) {
    let build = |hooks: bool| {
        let b = RateLimitLayer::token_bucket(1_000_000_000, Duration::from_secs(1))
            .burst(1_000_000)
            .name("bench");
        let b = if hooks {
            b.on_refused(|e| {
                black_box(e);
            })
        } else {
            b
        };
        b.build().unwrap()
    };
    rows(
        c,
        "rate_limit",
        vec![
            ("layer", Some(build(false))),
            ("layer+hooks", Some(build(true))),
            ("layer+prometheus", with_prometheus(|| build(false))),
        ],
    );
}

fn concurrency(c: &mut Criterion) {
    let build = |hooks: bool| {
        let b = ConcurrencyLimitLayer::fixed(1_000).name("bench");
        let b = if hooks {
            b.on_rejected(|e| {
                black_box(e);
            })
            .on_limit_change(|e| {
                black_box(e);
            })
        } else {
            b
        };
        b.build().unwrap()
    };
    rows(
        c,
        "concurrency",
        vec![
            ("layer", Some(build(false))),
            ("layer+hooks", Some(build(true))),
            ("layer+prometheus", with_prometheus(|| build(false))),
        ],
    );
}

/// A batch of 8 fulfilled items per call.
fn batch(c: &mut Criterion) {
    let build = |hooks: bool| {
        let b = BatchLayer::builder().name("bench");
        let b = if hooks {
            b.on_settled(|e| {
                black_box(e);
            })
        } else {
            b
        };
        b.build().unwrap()
    };
    let variants = vec![
        ("layer", Some(build(false))),
        ("layer+hooks", Some(build(true))),
        ("layer+prometheus", with_prometheus(|| build(false))),
    ];
    let mut group = c.benchmark_group(format!("{GROUP}/batch_of_8"));
    let mut cx = Context::from_waker(Waker::noop());
    for (name, layer) in variants {
        let Some(layer) = layer else { continue };
        let mut svc = layer.layer(Upstream);
        group.bench_function(name, |b| {
            b.iter(|| one_call(&mut svc, &mut cx, vec![1u64, 2, 3, 4, 5, 6, 7, 8]))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = breaker, retry, rate_limit, concurrency, batch
}
criterion_main!(benches);
