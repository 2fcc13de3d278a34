//! Memory of keyed circuit breakers under a flood of unique keys: a million
//! keys through a layer bounded at 10,000 breakers, measured with a
//! counting global allocator (as tests/rate_limit_memory.rs does for the
//! keyed limiter); and the calls that allocate nothing.
//!
//! The inner service is a `service_fn`, not the mock (which records every
//! call's start time and would measure itself).

use std::convert::Infallible;
use std::time::Duration;

use palisade::CircuitBreakerLayer;
use palisade::circuit_breaker::{AdaptiveThrottleLayer, CircuitBreakerBuilder, Window};
use tower::{Layer, Service, ServiceExt, service_fn};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{allocs, peak, start_peak};

const MIB: usize = 1 << 20;
const MAX_KEYS: usize = 10_000;

/// One test function for the whole binary: the allocator's counters are
/// process-wide, so the measurements must not run in parallel.
#[test]
fn memory() {
    calls_on_a_held_key_and_through_the_throttle_allocate_nothing();
    a_million_unique_keys_stay_under_the_bound();
}

fn calls_on_a_held_key_and_through_the_throttle_allocate_nothing() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    // The counter sees this thread's allocations.
    let before = allocs();
    drop(std::hint::black_box(Box::new(1u64)));
    assert_eq!(allocs(), before + 1);

    let mut cx = Context::from_waker(Waker::noop());
    let inner = service_fn(|k: u64| async move { Ok::<_, Infallible>(k) });
    let mut check = |name: &str, svc: &mut dyn FnMut(&mut Context<'_>, u64) -> bool| {
        for key in 0..8 {
            assert!(svc(&mut cx, key), "{name}: warm-up"); // keys made here
        }
        let before = allocs();
        for i in 0..10_000 {
            assert!(svc(&mut cx, i % 8), "{name}: refused");
        }
        assert_eq!(allocs() - before, 0, "{name} allocated");
    };
    let keyed = CircuitBreakerLayer::failure_rate(0.5)
        .window(Window::time(Duration::from_secs(10)))
        .keyed(|k: &u64| *k)
        .build()
        .unwrap();
    let mut svc = keyed.layer(inner);
    check("keyed breaker", &mut |cx, i| {
        assert!(svc.poll_ready(cx).is_ready());
        let fut = std::pin::pin!(svc.call(i));
        matches!(fut.poll(cx), Poll::Ready(Ok(_)))
    });
    let throttle = AdaptiveThrottleLayer::builder().build().unwrap();
    let mut svc = throttle.layer(inner);
    check("adaptive throttle", &mut |cx, i| {
        assert!(svc.poll_ready(cx).is_ready());
        let fut = std::pin::pin!(svc.call(i));
        matches!(fut.poll(cx), Poll::Ready(Ok(_)))
    });
}

fn a_million_unique_keys_stay_under_the_bound() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    type Policy = fn() -> CircuitBreakerBuilder;
    let policies: [(&str, Policy); 3] = [
        ("consecutive", || {
            CircuitBreakerLayer::consecutive_failures(5)
        }),
        ("count window of 100", || {
            CircuitBreakerLayer::failure_rate(0.5).window(Window::count(100))
        }),
        ("time window of 10 buckets", || {
            CircuitBreakerLayer::failure_rate(0.5).window(Window::time(Duration::from_secs(10)))
        }),
    ];
    for (name, policy) in policies {
        // Every tenth key fails (and its breaker opens for 60 s).
        let (growth, keys, unguarded) = rt.block_on(async {
            let layer = policy()
                .open_for(Duration::from_secs(60))
                .keyed(|k: &u64| *k)
                .max_keys(MAX_KEYS)
                .idle_after(Duration::from_secs(30))
                .build()
                .unwrap();
            let handle = layer.handle();
            let mut svc = layer.layer(service_fn(|k: u64| async move {
                if k % 10 == 0 { Err("down") } else { Ok(k) }
            }));
            let base = start_peak();
            // Ten rounds of 100,000 new keys; between rounds, time moves
            // past every open deadline and idle period, so the layer
            // evicts the last round's breakers to make room.
            for round in 0..10u64 {
                for i in 0..100_000u64 {
                    let key = round * 100_000 + i;
                    let _ = svc.ready().await.unwrap().call(key).await;
                    assert!(i % 10_000 != 0 || handle.keys() <= MAX_KEYS);
                }
                tokio::time::advance(Duration::from_secs(61)).await;
            }
            (peak() - base, handle.keys(), handle.unguarded_calls())
        });
        println!(
            "{name}: peak heap growth {:.1} MiB ({} bytes per breaker held), {keys} keys held, {unguarded} calls unguarded",
            growth as f64 / MIB as f64,
            growth / MAX_KEYS
        );
        assert!(keys <= MAX_KEYS, "{name}");
        // Each round's first 10,000 keys found room (the last round's
        // breakers evicted), the other 90,000 did not.
        assert_eq!(unguarded, 10 * (100_000 - MAX_KEYS as u64), "{name}");
        assert!(growth < 24 * MIB, "{name}: grew {growth} bytes");
    }
}
