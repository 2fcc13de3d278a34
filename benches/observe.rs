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
//! Time on a shared machine is noisy at this scale, so the binary also
//! counts: `OBSERVE_COUNT=rate_limit/layer:200000` makes that many calls and
//! exits, to be run under `valgrind --tool=callgrind` (see
//! `scripts/observe_instructions.sh`): instructions per call, exactly.
//!
//! Each iteration is one full Tower call (`poll_ready`, `call`, one poll of
//! the ready response future) driven by hand with a no-op waker.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group};
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

fn breaker_layer(hooks: bool) -> CircuitBreakerLayer {
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
}

fn retry_layer(hooks: bool) -> RetryLayer {
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
}

fn rate_limit_layer(hooks: bool) -> RateLimitLayer {
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
}

fn concurrency_layer(hooks: bool) -> ConcurrencyLimitLayer {
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
}

fn batch_layer(hooks: bool) -> BatchLayer {
    // Untimed (the default): `.time_batches()` adds two clock reads.
    let b = BatchLayer::builder().name("bench");
    let b = if hooks {
        b.on_settled(|e| {
            black_box(e);
        })
    } else {
        b
    };
    b.build().unwrap()
}

/// `layer`, `layer+hooks` and (feature on) `layer+prometheus`.
fn variants<L>(build: impl Fn(bool) -> L) -> Vec<(&'static str, Option<L>)> {
    vec![
        ("layer", Some(build(false))),
        ("layer+hooks", Some(build(true))),
        ("layer+prometheus", with_prometheus(|| build(false))),
    ]
}

fn breaker(c: &mut Criterion) {
    rows(c, "breaker", variants(breaker_layer));
}

fn retry(c: &mut Criterion) {
    rows(c, "retry", variants(retry_layer));
}

fn rate_limit(c: &mut Criterion) {
    rows(c, "rate_limit", variants(rate_limit_layer));
}

fn concurrency(c: &mut Criterion) {
    rows(c, "concurrency", variants(concurrency_layer));
}

const BATCH: [u64; 8] = [1, 2, 3, 4, 5, 6, 7, 8];

/// A batch of 8 fulfilled items per call.
fn batch(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("{GROUP}/batch_of_8"));
    let mut cx = Context::from_waker(Waker::noop());
    for (name, layer) in variants(batch_layer) {
        let Some(layer) = layer else { continue };
        let mut svc = layer.layer(Upstream);
        group.bench_function(name, |b| {
            b.iter(|| one_call(&mut svc, &mut cx, BATCH.to_vec()))
        });
    }
    group.finish();
}

/// `OBSERVE_COUNT=<layer>/<variant>:<calls>`: makes that many calls
/// through one variant and exits, for an instruction count under
/// `valgrind --tool=callgrind` (noise-free, unlike time on a shared
/// machine): the difference between two call counts, divided, is the
/// cost of one call.
fn count(spec: &str) {
    let (what, calls) = spec.rsplit_once(':').expect("layer/variant:calls");
    let calls: u64 = calls.parse().expect("a number of calls");
    let (layer, variant) = what.split_once('/').expect("layer/variant");
    let mut cx = Context::from_waker(Waker::noop());
    // Only the variant measured is built (a Prometheus recorder calibrates
    // its clock when built: millions of instructions, varying run to run).
    fn pick<L>(build: impl Fn(bool) -> L, variant: &str) -> L {
        match variant {
            "layer" => build(false),
            "layer+hooks" => build(true),
            "layer+prometheus" => {
                with_prometheus(|| build(false)).expect("built with --features metrics")
            }
            other => panic!("unknown variant {other}"),
        }
    }
    fn run<S: Service<Req>, Req>(
        mut svc: S,
        cx: &mut Context<'_>,
        calls: u64,
        req: impl Fn(u64) -> Req,
    ) where
        S::Error: std::fmt::Debug,
    {
        for i in 0..calls {
            one_call(&mut svc, cx, req(i));
        }
    }
    match (layer, variant) {
        ("breaker" | "retry" | "rate_limit" | "concurrency" | "batch_of_8", "bare") => {
            run(Upstream, &mut cx, calls, |i| i)
        }
        ("breaker", v) => run(
            pick(breaker_layer, v).layer(Upstream),
            &mut cx,
            calls,
            |i| i,
        ),
        ("retry", v) => run(pick(retry_layer, v).layer(Upstream), &mut cx, calls, |i| i),
        ("rate_limit", v) => run(
            pick(rate_limit_layer, v).layer(Upstream),
            &mut cx,
            calls,
            |i| i,
        ),
        ("concurrency", v) => run(
            pick(concurrency_layer, v).layer(Upstream),
            &mut cx,
            calls,
            |i| i,
        ),
        ("batch_of_8", v) => run(pick(batch_layer, v).layer(Upstream), &mut cx, calls, |_| {
            BATCH.to_vec()
        }),
        _ => panic!("unknown {what}"),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = breaker, retry, rate_limit, concurrency, batch
}
fn main() {
    if let Ok(spec) = std::env::var("OBSERVE_COUNT") {
        return count(&spec);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
