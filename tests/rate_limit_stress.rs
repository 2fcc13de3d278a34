//! Many clones on a multi-threaded runtime hammering one limiter never
//! exceed it in total. Real threads and real time (the only tests here that
//! do), bounded in count: the limits are set over an hour so no capacity
//! refills while the test runs, and the exact total is known.

mod support;

use std::time::Duration;

use palisade::RateLimitLayer;
use support::Mock;
use tower::{Layer, Service, ServiceExt};

const TASKS: u64 = 8;
const PER_TASK: u64 = 2_000;
const HOUR: Duration = Duration::from_secs(3600);

async fn hammer<S>(svc: S) -> u64
where
    S: Service<u64> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
{
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let mut svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let mut admitted = 0;
            for i in 0..PER_TASK {
                let Ok(ready) = svc.ready().await else {
                    continue;
                };
                if ready.call(t * PER_TASK + i).await.is_ok() {
                    admitted += 1;
                }
                if i % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            admitted
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clones_on_many_threads_never_exceed_the_limit() {
    for (name, layer) in [
        (
            "token bucket",
            RateLimitLayer::token_bucket(1, HOUR)
                .burst(500)
                .build()
                .unwrap(),
        ),
        (
            "sliding window",
            RateLimitLayer::sliding_window(500, HOUR).build().unwrap(),
        ),
        (
            "sliding log",
            RateLimitLayer::sliding_log(500, HOUR).build().unwrap(),
        ),
    ] {
        let mock = Mock::new();
        let h = mock.handle();
        let admitted = hammer(layer.layer(mock)).await;
        // Not one more, and none lost to contention either.
        assert_eq!(admitted, 500, "{name}");
        assert_eq!(h.calls(), 500, "{name}");
        assert_eq!(layer.handle().admitted(), 500, "{name}");
        assert_eq!(layer.handle().rejected(), TASKS * PER_TASK - 500, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyed_clones_on_many_threads_never_exceed_any_key() {
    let layer = RateLimitLayer::token_bucket(1, HOUR)
        .burst(50)
        .keyed(|req: &u64| req % 10)
        .build()
        .unwrap();
    let mock = Mock::new();
    let h = mock.handle();
    let admitted = hammer(layer.layer(mock)).await;
    assert_eq!(admitted, 500);
    assert_eq!(h.calls(), 500);
    assert_eq!(layer.handle().keys(), 10);
    // Every key is exhausted now; with 500 admitted over 10 keys of 50,
    // each key got exactly its 50.
    let mut probe = layer.layer(Mock::new());
    for key in 0..10 {
        assert!(probe.ready().await.unwrap().call(key).await.is_err());
    }
}

/// The new paths under the same hammer: a wide window (2^32 limit, costed
/// so the limit is reached), two limits all-or-nothing (the tighter one
/// binds, the other is charged exactly as often), and keyed wait mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wide_windows_and_several_limits_never_exceed_them() {
    // Each request costs 2^20: 4,096 of them fill 2^32.
    let wide = RateLimitLayer::sliding_window(1 << 32, HOUR)
        .cost(|_: &u64| 1 << 20)
        .build()
        .unwrap();
    let mock = Mock::new();
    let h = mock.handle();
    assert_eq!(hammer(wide.layer(mock)).await, 4_096);
    assert_eq!(h.calls(), 4_096);

    // 500 per hour and 700 per hour: exactly 500 admitted, none lost to
    // contention.
    let two = RateLimitLayer::sliding_log(500, HOUR)
        .and(RateLimitLayer::token_bucket(1, HOUR).burst(700))
        .build()
        .unwrap();
    let mock = Mock::new();
    let h = mock.handle();
    assert_eq!(hammer(two.layer(mock)).await, 500);
    assert_eq!(h.calls(), 500);
    // 700 per hour then 500, keyed: the second binds, per key.
    let two = RateLimitLayer::token_bucket(1, HOUR)
        .burst(700)
        .and(RateLimitLayer::sliding_window(500, HOUR))
        .keyed(|r: &u64| r % 2)
        .build()
        .unwrap();
    let mock = Mock::new();
    assert_eq!(
        hammer(two.layer(mock)).await,
        1_000,
        "500 per key, two keys"
    );

    // Keyed wait mode with a bound shorter than any refill: as reject.
    let waiting = RateLimitLayer::token_bucket(1, HOUR)
        .burst(300)
        .keyed(|r: &u64| r % 3)
        .wait(Duration::from_millis(1))
        .build()
        .unwrap();
    let mock = Mock::new();
    let h = mock.handle();
    assert_eq!(hammer(waiting.layer(mock)).await, 900);
    assert_eq!(h.calls(), 900);
}
