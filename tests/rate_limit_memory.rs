//! Memory under a flood of unique keys: 1,000,000 keys through a limiter
//! bounded at 100,000 keys grows the heap by less than 32 MiB.
//!
//! A counting global allocator measures the peak heap growth. The inner
//! service is a `service_fn` rather than the mock: the mock records the
//! start time of every call in a `Vec` (16 bytes per call), which would
//! measure the mock instead of the limiter.

use std::convert::Infallible;
use std::time::Duration;

use palisade::RateLimitLayer;
use tower::{Layer, Service, ServiceExt, service_fn};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{allocs, peak, start_peak};

const MIB: usize = 1 << 20;

/// One test function for the whole binary: the allocator's counters are
/// process-wide, so the two measurements must not run in parallel.
#[test]
fn memory() {
    admitted_calls_allocate_nothing();
    a_million_unique_keys_stay_under_32_mib();
}

/// The admitting path allocates nothing: 10,000 admitted calls through each
/// algorithm (and a keyed limiter on a key it already holds), polled by hand
/// with a no-op waker.
fn admitted_calls_allocate_nothing() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    let always = |b: palisade::rate_limit::RateLimitBuilder| b.build().unwrap();
    let layers = [
        (
            "token bucket",
            always(
                RateLimitLayer::token_bucket(1_000_000_000, Duration::from_secs(1)).burst(1 << 20),
            ),
        ),
        (
            "sliding window",
            always(RateLimitLayer::sliding_window(
                1_000_000,
                Duration::from_secs(1),
            )),
        ),
        (
            "sliding log",
            always(RateLimitLayer::sliding_log(20_000, Duration::from_secs(1))),
        ),
    ];
    let mut cx = Context::from_waker(Waker::noop());
    let inner = service_fn(|k: u64| async move { Ok::<_, Infallible>(k) });
    let mut run = |name: &str, svc: &mut dyn FnMut(&mut Context<'_>, u64) -> bool| {
        assert!(svc(&mut cx, 0), "{name}: warm-up");
        let before = allocs();
        for i in 0..10_000 {
            assert!(svc(&mut cx, i), "{name}: refused");
        }
        assert_eq!(allocs() - before, 0, "{name} allocated");
    };
    for (name, layer) in layers {
        let mut svc = layer.layer(inner);
        run(name, &mut |cx, i| {
            assert!(svc.poll_ready(cx).is_ready());
            let fut = std::pin::pin!(svc.call(i));
            matches!(fut.poll(cx), Poll::Ready(Ok(_)))
        });
    }
    let keyed = RateLimitLayer::token_bucket(1_000_000_000, Duration::from_secs(1))
        .burst(1 << 20)
        .keyed(|_: &u64| "one key")
        .build()
        .unwrap();
    let mut svc = keyed.layer(inner);
    run("keyed token bucket", &mut |cx, i| {
        assert!(svc.poll_ready(cx).is_ready());
        let fut = std::pin::pin!(svc.call(i));
        matches!(fut.poll(cx), Poll::Ready(Ok(_)))
    });
}

fn a_million_unique_keys_stay_under_32_mib() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    for (name, build) in [
        (
            "token bucket",
            RateLimitLayer::token_bucket(1, Duration::from_secs(1)),
        ),
        (
            "sliding window",
            RateLimitLayer::sliding_window(1, Duration::from_secs(1)),
        ),
        (
            "sliding log",
            RateLimitLayer::sliding_log(4, Duration::from_secs(1)),
        ),
    ] {
        let (growth, admitted, keys) = rt.block_on(async {
            let layer = build.keyed(|k: &u64| *k).max_keys(100_000).build().unwrap();
            let handle = layer.handle();
            let mut svc = layer.layer(service_fn(|k: u64| async move { Ok::<_, Infallible>(k) }));
            let base = start_peak();
            // Ten rounds of 100,000 new keys, time moving on between rounds
            // so earlier keys go idle and are evicted by the limiter.
            for round in 0..10u64 {
                for i in 0..100_000u64 {
                    let key = round * 100_000 + i;
                    let _ = svc.ready().await.unwrap().call(key).await;
                    assert!(i % 10_000 != 0 || handle.keys() <= 100_000);
                }
                tokio::time::advance(Duration::from_secs(3)).await;
            }
            (peak() - base, handle.admitted(), handle.keys())
        });
        println!(
            "{name}: peak heap growth {:.1} MiB, {admitted} admitted, {keys} keys held",
            growth as f64 / MIB as f64
        );
        assert!(keys <= 100_000, "{name}");
        assert!(
            admitted >= 500_000,
            "{name}: idle keys were evicted to make room"
        );
        assert!(growth < 32 * MIB, "{name}: grew {growth} bytes");
    }
}
