//! Permits never leak: random interleavings of calls, completions,
//! cancellations (dropped futures, dropped ready services, dropped
//! waiters) and time, through the mock in paused time; and many clones on
//! many threads never exceed the limit.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade::concurrency::ConcurrencyLimit;
use palisade::{BoxError, ConcurrencyLimitLayer};
use proptest::prelude::*;
use support::{Mock, Reply, Step, ms};
use tower::{Layer, Service};

#[derive(Debug, Clone)]
enum Op {
    /// Poll a service ready and call it: `latency` ms, then ok, err or hang.
    Call { latency: u64, end: u8 },
    /// Poll a service ready and drop it without calling.
    ReadyThenDrop,
    /// Drop the `n`-th future still held (modulo their number).
    DropFuture(usize),
    /// Let time pass, then poll every future held.
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..40, 0u8..4).prop_map(|(latency, end)| Op::Call { latency, end }),
        1 => Just(Op::ReadyThenDrop),
        2 => any::<usize>().prop_map(Op::DropFuture),
        2 => (0u64..30).prop_map(Op::Advance),
    ]
}

type Fut = Pin<Box<dyn Future<Output = Result<Reply<u64>, BoxError>> + Send>>;

fn step(latency: u64, end: u8) -> Step {
    match end {
        0 | 1 => Step::ok(),
        2 => Step::err(),
        _ => Step::hang(),
    }
    .after(ms(latency.max(1)))
}

fn run(ops: Vec<Op>, layer: ConcurrencyLimitLayer, max: u32, wait: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let handle = layer.handle();
        let mock =
            Mock::<u64>::new().outcome_fn(|_, req: &u64| step(req >> 8, (*req & 0xff) as u8));
        let upstream = mock.handle();
        let svc: ConcurrencyLimit<Mock> = layer.layer(mock);
        let mut held: Vec<Fut> = Vec::new();
        let mut cx = Context::from_waker(Waker::noop());
        for op in ops {
            match op {
                Op::Call { latency, end } => {
                    let mut s = svc.clone();
                    match s.poll_ready(&mut cx) {
                        Poll::Ready(Ok(())) => {
                            held.push(Box::pin(s.call((latency << 8) | u64::from(end))))
                        }
                        Poll::Ready(Err(e)) => panic!("{e}"),
                        // Waiting (max_wait): dropped while waiting.
                        Poll::Pending => assert!(wait),
                    }
                }
                Op::ReadyThenDrop => {
                    let mut s = svc.clone();
                    let _ = s.poll_ready(&mut cx);
                }
                Op::DropFuture(n) => {
                    if !held.is_empty() {
                        let n = n % held.len();
                        drop(held.swap_remove(n));
                    }
                }
                Op::Advance(d) => {
                    tokio::time::advance(ms(d)).await;
                    held.retain_mut(|f| f.as_mut().poll(&mut cx).is_pending());
                }
            }
            // Never more calls at the upstream than the largest limit, and
            // the limiter counts exactly the calls it let through that
            // have not ended (a refused future holds nothing).
            assert!(upstream.in_flight() <= u64::from(max));
            assert_eq!(u64::from(handle.in_flight()), upstream.in_flight());
        }
        drop(held);
        assert_eq!(handle.in_flight(), 0);
        assert_eq!(upstream.in_flight(), 0);
        // Every place is free again.
        let mut held = Vec::new();
        let limit = handle.limit();
        for _ in 0..limit {
            let mut s = svc.clone();
            assert!(s.poll_ready(&mut cx).is_ready());
            held.push(s.call(0xff)); // hangs
        }
        assert_eq!(handle.in_flight(), limit);
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn fixed_limit_never_leaks(ops in prop::collection::vec(op(), 1..120), limit in 1u32..6) {
        run(ops, ConcurrencyLimitLayer::fixed(limit).build().unwrap(), limit, false);
    }

    #[test]
    fn adaptive_limit_never_leaks(ops in prop::collection::vec(op(), 1..120)) {
        let layer = ConcurrencyLimitLayer::gradient2()
            .initial_limit(3)
            .max_limit(8)
            .min_samples(1)
            .sample_window(ms(1), ms(20))
            .build()
            .unwrap();
        run(ops, layer, 8, false);
    }

    #[test]
    fn waiting_limit_never_leaks(ops in prop::collection::vec(op(), 1..120)) {
        let layer = ConcurrencyLimitLayer::aimd(ms(20))
            .initial_limit(2)
            .max_limit(5)
            .min_samples(1)
            .max_wait(ms(15))
            .build()
            .unwrap();
        run(ops, layer, 5, true);
    }
}

/// Clones on four threads, each holding up to three calls that never end
/// and dropping the oldest (every third call ends at once, so an adaptive
/// limit moves meanwhile): the upstream never sees more than the limit.
fn threads_never_exceed(layer: ConcurrencyLimitLayer, max: u64) {
    let mock = Mock::<u64>::new().outcome_fn(|_, req| {
        if req % 3 == 0 {
            Step::ok()
        } else {
            Step::hang()
        }
    });
    let upstream = mock.handle();
    let svc = layer.layer(mock);
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let svc = svc.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut cx = Context::from_waker(Waker::noop());
                let mut held = std::collections::VecDeque::new();
                let mut admitted = 0u64;
                barrier.wait();
                for i in 0..20_000u64 {
                    let mut s = svc.clone();
                    if let Poll::Ready(Ok(())) = s.poll_ready(&mut cx) {
                        let mut fut = Box::pin(s.call(t * 1_000_000 + i));
                        match fut.as_mut().poll(&mut cx) {
                            Poll::Pending => {
                                admitted += 1;
                                held.push_back(fut);
                            }
                            Poll::Ready(_) => {} // refused, or ended at once
                        }
                    }
                    if held.len() > 3 || i % 7 == 0 {
                        held.pop_front();
                    }
                }
                admitted
            })
        })
        .collect();
    let admitted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(admitted > 1_000, "admitted {admitted}");
    assert!(
        upstream.peak_in_flight() <= max,
        "peak {}",
        upstream.peak_in_flight()
    );
    assert_eq!(svc.handle().in_flight(), 0);
    assert_eq!(upstream.in_flight(), 0);
}

#[test]
fn many_clones_on_many_threads_never_exceed_a_fixed_limit() {
    threads_never_exceed(ConcurrencyLimitLayer::fixed(5).build().unwrap(), 5);
}

#[test]
fn many_clones_on_many_threads_never_exceed_the_adaptive_maximum() {
    let layer = ConcurrencyLimitLayer::gradient2()
        .initial_limit(4)
        .max_limit(6)
        .min_samples(1)
        .sample_window(Duration::from_micros(10), Duration::from_micros(100))
        .build()
        .unwrap();
    threads_never_exceed(layer, 6);
}
