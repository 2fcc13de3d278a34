//! The batch layer beside a hand-written `FuturesUnordered` loop making the
//! same calls (ready `poll_ready` before each, at most `max_in_flight` in
//! flight, results put back in input order), for 10, 1,000 and 100,000
//! items, against two in-process upstreams:
//!
//! - `instant`: every call's future is ready on its first poll;
//! - `yield_once`: every call's future wakes itself and returns `Pending`
//!   once, so completions go through `FuturesUnordered`'s wake-up queue.
//!
//! Both sides run on the same current-thread tokio runtime, one
//! `block_on` per batch, so the figures differ only by what the layer adds.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures::future::poll_fn;
use futures::stream::{FuturesUnordered, StreamExt};
use palisade::BatchLayer;
use tower::{Layer, Service, ServiceExt, service_fn};

const MAX_IN_FLIGHT: usize = 100;

/// Ready on the second poll, after waking itself once.
struct YieldOnce(Option<u64>, bool);

impl Future for YieldOnce {
    type Output = Result<u64, std::convert::Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.1 {
            Poll::Ready(Ok(self.0.take().unwrap_or_default()))
        } else {
            self.1 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// The same work without the layer: what a careful caller would write.
async fn hand_written<S>(
    mut svc: S,
    requests: Vec<u64>,
    max: usize,
) -> Vec<Result<S::Response, S::Error>>
where
    S: Service<u64>,
{
    let mut results: Vec<Option<Result<S::Response, S::Error>>> =
        Vec::with_capacity(requests.len());
    results.resize_with(requests.len(), || None);
    let mut in_flight = FuturesUnordered::new();
    let mut requests = requests.into_iter().enumerate();
    loop {
        while in_flight.len() < max {
            let Some((i, request)) = requests.next() else {
                break;
            };
            if let Err(e) = poll_fn(|cx| svc.poll_ready(cx)).await {
                results[i] = Some(Err(e));
                continue;
            }
            let call = svc.call(request);
            in_flight.push(async move { (i, call.await) });
        }
        match in_flight.next().await {
            Some((i, result)) => results[i] = Some(result),
            None => break,
        }
    }
    results.into_iter().map(|r| r.expect("settled")).collect()
}

fn bench_upstream<S>(c: &mut Criterion, name: &str, upstream: S)
where
    S: Service<u64, Response = u64, Error = std::convert::Infallible> + Clone,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let layer = BatchLayer::builder()
        .max_in_flight(MAX_IN_FLIGHT)
        .build()
        .unwrap();
    let mut group = c.benchmark_group(format!("batch/{name}"));
    for n in [10u64, 1_000, 100_000] {
        group.throughput(Throughput::Elements(n));
        if n == 100_000 {
            group.sample_size(10);
        } else {
            group.sample_size(30);
        }
        group.bench_with_input(BenchmarkId::new("hand_written", n), &n, |b, &n| {
            b.iter(|| {
                let requests: Vec<u64> = (0..n).collect();
                let out = rt.block_on(hand_written(upstream.clone(), requests, MAX_IN_FLIGHT));
                black_box(out)
            })
        });
        group.bench_with_input(BenchmarkId::new("layer", n), &n, |b, &n| {
            let batch = layer.layer(upstream.clone());
            b.iter(|| {
                let requests: Vec<u64> = (0..n).collect();
                let out = rt.block_on(batch.clone().oneshot(requests));
                black_box(out)
            })
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let instant = service_fn(|n: u64| std::future::ready(Ok::<_, std::convert::Infallible>(n)));
    bench_upstream(c, "instant", instant);
    let yield_once = service_fn(|n: u64| YieldOnce(Some(n), false));
    bench_upstream(c, "yield_once", yield_once);
}

criterion_group! {
    name = batch;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = benches
}
criterion_main!(batch);
