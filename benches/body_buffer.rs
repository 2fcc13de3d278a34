//! BufferBodyLayer (with RetryLayer's CloneBuffered) on the success path,
//! beside the same request built and sent without it, in the same run: a
//! unary-sized body (`Full<Bytes>`, 256 bytes) and tonic's boxed body.
//!
//! Each iteration builds the request (the bare case too, so the difference
//! is the layers' cost), then `poll_ready`, `call`, and one poll of the
//! response future by hand with a no-op waker.

use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Request;
use http_body_util::Full;
use palisade::RetryLayer;
use palisade::http::{BufferBodyLayer, CloneBuffered};
use tower::{Layer, Service};

/// The cheapest possible upstream: always ready, answers with the body's
/// exact size hint.
#[derive(Clone, Copy)]
struct Sink;

impl<B: http_body::Body> Service<Request<B>> for Sink {
    type Response = u64;
    type Error = std::convert::Infallible;
    type Future = Ready<Result<u64, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ready(Ok(request.body().size_hint().lower()))
    }
}

#[inline(always)]
fn one<B, S: Service<Request<B>, Response = u64>>(
    svc: &mut S,
    cx: &mut Context<'_>,
    request: Request<B>,
) -> u64 {
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let payload = Bytes::from(vec![7u8; 256]);
    let retry = || {
        RetryLayer::exponential(Duration::from_millis(10))
            .clone_request(CloneBuffered)
            .build()
            .unwrap()
    };

    let mut group = c.benchmark_group("body_buffer/full_256B");
    let mut bare = Sink;
    group.bench_function("bare", |b| {
        b.iter(|| {
            black_box(one(
                &mut bare,
                &mut cx,
                Request::new(Full::new(payload.clone())),
            ))
        })
    });
    let mut buffer_only = BufferBodyLayer::new().layer(Sink);
    group.bench_function("buffer", |b| {
        b.iter(|| {
            black_box(one(
                &mut buffer_only,
                &mut cx,
                Request::new(Full::new(payload.clone())),
            ))
        })
    });
    let mut buffered = BufferBodyLayer::new().layer(retry().layer(Sink));
    group.bench_function("buffer+retry", |b| {
        b.iter(|| {
            black_box(one(
                &mut buffered,
                &mut cx,
                Request::new(Full::new(payload.clone())),
            ))
        })
    });
    group.finish();

    let mut group = c.benchmark_group("body_buffer/tonic_body_256B");
    let tonic_body = || tonic::body::Body::new(Full::new(payload.clone()));
    group.bench_function("bare", |b| {
        b.iter(|| black_box(one(&mut bare, &mut cx, Request::new(tonic_body()))))
    });
    group.bench_function("buffer", |b| {
        b.iter(|| black_box(one(&mut buffer_only, &mut cx, Request::new(tonic_body()))))
    });
    group.bench_function("buffer+retry", |b| {
        b.iter(|| black_box(one(&mut buffered, &mut cx, Request::new(tonic_body()))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
