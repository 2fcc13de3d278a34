//! RetryLayer on the success path, beside the bare service in the same run:
//! without a budget, and with one (a deposit per request).
//!
//! Each iteration is one whole request: `poll_ready`, `call`, and one poll
//! of the response future, by hand with a no-op waker, so the figures are
//! the layer's own cost and not an executor's.

use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade::retry::RetryBudget;
use palisade::{Jitter, RetryLayer};
use tower::{Layer, Service};

/// The cheapest possible upstream: always ready, answers at once.
#[derive(Clone, Copy)]
struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = std::convert::Infallible;
    type Future = Ready<Result<u64, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: u64) -> Self::Future {
        ready(Ok(request.wrapping_add(1)))
    }
}

/// One request through `svc`, start to finish.
#[inline(always)]
fn one<S: Service<u64, Response = u64>>(svc: &mut S, cx: &mut Context<'_>, request: u64) -> u64 {
    match svc.poll_ready(cx) {
        Poll::Ready(Ok(())) => {}
        _ => unreachable!("always ready"),
    }
    let fut = pin!(svc.call(request));
    match fut.poll(cx) {
        Poll::Ready(Ok(response)) => response,
        _ => unreachable!("answers at once"),
    }
}

fn bench(c: &mut Criterion) {
    let mut cx = Context::from_waker(Waker::noop());
    // The budget's clock is tokio's: give it a runtime context, as in use.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();

    let mut group = c.benchmark_group("retry/success_path");

    let mut bare = Echo;
    group.bench_function("bare", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(one(&mut bare, &mut cx, black_box(i)))
        })
    });

    let mut plain = RetryLayer::exponential(Duration::from_millis(20))
        .max_attempts(4)
        .jitter(Jitter::Full)
        .build()
        .unwrap()
        .layer(Echo);
    group.bench_function("retry", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(one(&mut plain, &mut cx, black_box(i)))
        })
    });

    let mut budgeted = RetryLayer::exponential(Duration::from_millis(20))
        .max_attempts(4)
        .jitter(Jitter::Full)
        .budget(RetryBudget::ratio(0.2))
        .build()
        .unwrap()
        .layer(Echo);
    group.bench_function("retry+budget", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(one(&mut budgeted, &mut cx, black_box(i)))
        })
    });

    let mut elapsed = RetryLayer::exponential(Duration::from_millis(20))
        .max_attempts(4)
        .jitter(Jitter::Full)
        .max_elapsed(Duration::from_secs(2))
        .build()
        .unwrap()
        .layer(Echo);
    group.bench_function("retry+max_elapsed", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            black_box(one(&mut elapsed, &mut cx, black_box(i)))
        })
    });
    // For reading the figures: the floor a 'static response future that
    // may need the layer's shared state later pays, one `Arc` clone + drop.
    let shared = std::sync::Arc::new(0u64);
    group.bench_function("reference: Arc clone+drop", |b| {
        b.iter(|| black_box(std::sync::Arc::clone(black_box(&shared))))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = bench
}
criterion_main!(benches);
