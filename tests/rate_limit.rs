//! The rate limiter through the mock, on paused tokio time.

mod support;

use std::time::Duration;

use palisade::rate_limit::{
    ConfigError, InMemory, InsufficientCapacity, NoHeaders, PerRequest, RateLimit, RateLimitHandle,
    Unkeyed, Wait,
};
use palisade::{BoxError, RateLimitLayer, RateLimited};
use support::{Mock, MockHandle, ReadyStep, Reply, ms};
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceExt};

fn ns(n: u64) -> Duration {
    Duration::from_nanos(n)
}

async fn send<S>(svc: &mut S, req: u64) -> Result<Reply<u64>, BoxError>
where
    S: Service<u64, Response = Reply<u64>, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

fn limited(r: Result<Reply<u64>, BoxError>) -> RateLimited {
    let err = r.expect_err("expected a refusal");
    err.downcast_ref::<RateLimited>()
        .unwrap_or_else(|| panic!("not RateLimited: {err}"))
        .clone()
}

/// The three algorithms, each admitting 2 per 100 ms window (the bucket:
/// 20 per second with burst 2).
fn algorithms() -> Vec<(&'static str, RateLimitLayer)> {
    vec![
        (
            "token bucket",
            RateLimitLayer::token_bucket(20, Duration::from_secs(1))
                .burst(2)
                .build()
                .unwrap(),
        ),
        (
            "sliding window",
            RateLimitLayer::sliding_window(2, ms(100)).build().unwrap(),
        ),
        (
            "sliding log",
            RateLimitLayer::sliding_log(2, ms(100)).build().unwrap(),
        ),
    ]
}

/// A wait-mode layer, unkeyed, one unit per request.
type Waiting = RateLimitLayer<Unkeyed, PerRequest, InMemory, NoHeaders, Wait>;

fn service<M>(
    layer: &RateLimitLayer<Unkeyed, PerRequest, InMemory, NoHeaders, M>,
) -> (
    RateLimit<Mock, Unkeyed, PerRequest, NoHeaders, M>,
    MockHandle,
) {
    let mock = Mock::new();
    let h = mock.handle();
    (layer.layer(mock), h)
}

#[tokio::test(start_paused = true)]
async fn token_bucket_burst_then_one_per_interval() {
    let layer = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
        .burst(3)
        .build()
        .unwrap();
    let (mut svc, mock) = service(&layer);
    for i in 0..3 {
        send(&mut svc, i).await.unwrap();
    }
    let e = limited(send(&mut svc, 3).await);
    assert_eq!((e.retry_after, e.limit, e.remaining), (ms(100), 3, 0));
    // The refused request never reached the inner service.
    assert_eq!(mock.calls(), 3);
    advance(ms(100)).await;
    send(&mut svc, 4).await.unwrap();
    assert_eq!(limited(send(&mut svc, 5).await).retry_after, ms(100));
    let h = layer.handle();
    assert_eq!((h.admitted(), h.rejected(), h.keys()), (4, 2, 0));
}

/// `retry_after` is exact: refused one nanosecond before it, admitted at
/// it, and never zero.
#[tokio::test(start_paused = true)]
async fn retry_after_is_exact_for_every_algorithm() {
    for (name, layer) in algorithms() {
        let (mut svc, _) = service(&layer);
        advance(ms(37)).await; // not aligned with anything
        let mut admitted = 0;
        for round in 0..6 {
            loop {
                match send(&mut svc, round).await {
                    Ok(_) => admitted += 1,
                    Err(e) => {
                        let e = e.downcast::<RateLimited>().unwrap();
                        assert!(e.retry_after > Duration::ZERO, "{name}");
                        advance(e.retry_after - ns(1)).await;
                        let again = limited(send(&mut svc, round).await);
                        assert_eq!(again.retry_after, ns(1), "{name}: one ns early");
                        advance(ns(1)).await;
                        send(&mut svc, round)
                            .await
                            .unwrap_or_else(|e| panic!("{name}: refused at retry_after: {e}"));
                        admitted += 1;
                        break;
                    }
                }
            }
        }
        assert!(admitted >= 6, "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn limit_one_admits_one_then_waits_a_full_interval() {
    let layers = [
        (
            "token bucket",
            RateLimitLayer::token_bucket(1, ms(100)).build().unwrap(),
            ms(100),
        ),
        // The counter weighs the previous window: after one admission at
        // the start of a window the next fits two windows later.
        (
            "sliding window",
            RateLimitLayer::sliding_window(1, ms(100)).build().unwrap(),
            ms(200),
        ),
        (
            "sliding log",
            RateLimitLayer::sliding_log(1, ms(100)).build().unwrap(),
            ms(100),
        ),
    ];
    for (name, layer, gap) in layers {
        let (mut svc, _) = service(&layer);
        send(&mut svc, 0).await.unwrap();
        assert_eq!(limited(send(&mut svc, 1).await).retry_after, gap, "{name}");
        advance(gap).await;
        send(&mut svc, 2).await.unwrap();
        assert!(send(&mut svc, 3).await.is_err(), "{name}");
        assert_eq!(layer.handle().limit(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn cost_above_capacity_is_never_not_later() {
    let layer = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
        .burst(5)
        .cost(|req: &u64| *req)
        .build()
        .unwrap();
    let mut svc = layer.layer(Mock::new());
    let err = send(&mut svc, 6).await.unwrap_err();
    assert!(!err.is::<RateLimited>());
    let never = err.downcast_ref::<InsufficientCapacity>().unwrap();
    assert_eq!((never.cost, never.capacity), (6, 5));
    // Nothing was consumed: the full burst is still there.
    send(&mut svc, 5).await.unwrap();
    let e = limited(send(&mut svc, 2).await);
    assert_eq!((e.retry_after, e.remaining), (ms(200), 0));
    // Cost 0 is not counted against the limit.
    send(&mut svc, 0).await.unwrap();

    let layer = RateLimitLayer::sliding_window(4, ms(100))
        .cost(|req: &u64| *req)
        .build()
        .unwrap();
    let mut svc = layer.layer(Mock::new());
    assert!(
        send(&mut svc, 5)
            .await
            .unwrap_err()
            .is::<InsufficientCapacity>()
    );
    send(&mut svc, 3).await.unwrap();
    let e = limited(send(&mut svc, 2).await);
    assert_eq!(e.remaining, 1);
}

/// Every clone, and every service the one layer value produces, share one
/// limit (axum clones per request).
#[tokio::test(start_paused = true)]
async fn clones_and_services_of_one_layer_share_the_limit() {
    for (name, layer) in algorithms() {
        let mock = Mock::new();
        let h = mock.handle();
        let mut a = layer.layer(mock.clone());
        let mut b = layer.layer(mock);
        let mut a2 = a.clone();
        send(&mut a, 0).await.unwrap();
        send(&mut b, 1).await.unwrap();
        assert!(send(&mut a2, 2).await.is_err(), "{name}");
        assert!(send(&mut a2.clone(), 3).await.is_err(), "{name}");
        assert_eq!(h.calls(), 2);
        let handle: RateLimitHandle = a.handle();
        assert_eq!((handle.admitted(), handle.rejected()), (2, 2));
    }
}

#[test]
fn bad_settings_are_errors_from_build() {
    let s = Duration::from_secs(1);
    let err = |r: Result<_, ConfigError>| r.map(|_: RateLimitLayer<_, _>| ()).unwrap_err();
    assert_eq!(
        err(RateLimitLayer::token_bucket(0, s).build()),
        ConfigError::ZeroRate
    );
    assert_eq!(
        err(RateLimitLayer::token_bucket(1, Duration::ZERO).build()),
        ConfigError::ZeroPeriod
    );
    assert_eq!(
        err(RateLimitLayer::token_bucket(1, s).burst(0).build()),
        ConfigError::ZeroBurst
    );
    assert_eq!(
        err(RateLimitLayer::token_bucket(u64::MAX, s).build()),
        ConfigError::RateTooHigh
    );
    assert_eq!(
        err(RateLimitLayer::token_bucket(1, Duration::MAX)
            .burst(8)
            .build()),
        ConfigError::Overflow
    );
    assert_eq!(
        err(RateLimitLayer::sliding_window(0, s).build()),
        ConfigError::ZeroLimit
    );
    assert_eq!(
        err(RateLimitLayer::sliding_window(1, Duration::ZERO).build()),
        ConfigError::ZeroWindow
    );
    assert_eq!(
        err(RateLimitLayer::sliding_log(1, Duration::ZERO).build()),
        ConfigError::ZeroWindow
    );
    // Limits up to 2^32 (see tests/rate_limit_large.rs); one more is too
    // large, for both windows.
    assert_eq!(
        err(RateLimitLayer::sliding_window((1 << 32) + 1, s).build()),
        ConfigError::LimitTooLarge { max: 1 << 32 }
    );
    assert_eq!(
        err(RateLimitLayer::sliding_log((1 << 32) + 1, s).build()),
        ConfigError::LimitTooLarge { max: 1 << 32 }
    );
    assert_eq!(
        err(RateLimitLayer::sliding_window(1, s).burst(2).build()),
        ConfigError::BurstNotApplicable
    );
    assert_eq!(
        err(RateLimitLayer::token_bucket(1, s).exact().build()),
        ConfigError::ExactNotApplicable
    );
    assert_eq!(
        err(RateLimitLayer::token_bucket(1, s).max_keys(5).build()),
        ConfigError::MaxKeysWithoutKey
    );
    let e = RateLimitLayer::token_bucket(1, s)
        .keyed(|r: &u64| *r)
        .max_keys(0)
        .build()
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e, ConfigError::ZeroMaxKeys);
    // Keyed and costed limiters wait too (in the response future).
    assert!(
        RateLimitLayer::token_bucket(1, s)
            .keyed(|r: &u64| *r)
            .wait(s)
            .build()
            .is_ok()
    );
    assert!(
        RateLimitLayer::token_bucket(1, s)
            .cost(|_: &u64| 2)
            .wait(s)
            .build()
            .is_ok()
    );
    let e = RateLimitLayer::sliding_window(1, s)
        .exact()
        .cost(|_: &u64| 2)
        .build()
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e, ConfigError::CostWithLog);
}

#[tokio::test(start_paused = true)]
async fn inner_readiness_errors_pass_through() {
    let layer = RateLimitLayer::token_bucket(1, Duration::from_secs(1))
        .build()
        .unwrap();
    let mut svc = layer.layer(Mock::new().ready_script([ReadyStep::Err]));
    let err = svc.ready().await.unwrap_err();
    assert!(err.to_string().contains("poll_ready failed"));
    // Nothing was taken from the limiter.
    send(&mut svc, 0).await.unwrap();
}

// ---------------------------------------------------------------- wait mode

fn waiting(rate_per_sec: u64, burst: u64, max_wait: Duration) -> Waiting {
    RateLimitLayer::token_bucket(rate_per_sec, Duration::from_secs(1))
        .burst(burst)
        .wait(max_wait)
        .build()
        .unwrap()
}

/// Waiters are admitted in the order they reserved, one per emission
/// interval, each at exactly its conforming time.
#[tokio::test(start_paused = true)]
async fn wait_mode_admits_in_order_one_per_interval() {
    let layer = waiting(10, 1, Duration::from_secs(10));
    let mock = Mock::new();
    let h = mock.handle();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..5u64 {
        let mut svc = layer.layer(mock.clone());
        // Reserve in order i, then await the call in a task.
        std::future::poll_fn(|cx| {
            let _ = svc.poll_ready(cx);
            std::task::Poll::Ready(())
        })
        .await;
        tasks.push(tokio::spawn(async move {
            let reply = svc.ready().await.unwrap().call(i).await.unwrap();
            (reply.request, Instant::now() - start)
        }));
    }
    let mut done = Vec::new();
    for t in tasks {
        done.push(t.await.unwrap());
    }
    for (i, (req, at)) in done.into_iter().enumerate() {
        assert_eq!(req, i as u64);
        assert_eq!(at, ms(100 * i as u64));
    }
    let times = h.call_times();
    assert!(times.windows(2).all(|w| w[1] - w[0] == ms(100)));
}

/// A request whose wait would exceed the bound is refused at once, with
/// the exact `retry_after`; one within it waits exactly that long.
#[tokio::test(start_paused = true)]
async fn wait_mode_bound_refuses_at_once() {
    let layer = waiting(10, 1, ms(150));
    let (mut svc, mock) = service(&layer);
    send(&mut svc, 0).await.unwrap();
    let t0 = Instant::now();
    send(&mut svc, 1).await.unwrap(); // waits 100 ms
    assert_eq!(t0.elapsed(), ms(100));
    let mut other = svc.clone();
    // Book the next slot (200 ms), so the one after (300 ms) is 200 ms away.
    let _ = std::future::poll_fn(|cx| std::task::Poll::Ready(other.poll_ready(cx))).await;
    let t1 = Instant::now();
    let e = limited(send(&mut svc, 2).await);
    assert_eq!(t1.elapsed(), Duration::ZERO, "refused at once");
    assert_eq!(e.retry_after, ms(200));
    assert_eq!(mock.calls(), 2);
}

/// Polling ready twice reserves once; a clone starts without a
/// reservation; a ready service dropped unused gives its slot back.
#[tokio::test(start_paused = true)]
async fn reservations_follow_the_tower_contract() {
    let layer = waiting(10, 1, Duration::from_secs(5));
    let (mut a, mock) = service(&layer);
    a.ready().await.unwrap();
    a.ready().await.unwrap(); // second poll: same reservation
    let mut b = a.clone(); // starts without one: books the next slot
    let t0 = Instant::now();
    b.ready().await.unwrap();
    assert_eq!(t0.elapsed(), ms(100), "b booked the slot after a's only");
    drop(b); // ready, never called: its slot at 100 ms is given back
    let mut c = a.clone();
    c.ready().await.unwrap();
    assert_eq!(t0.elapsed(), ms(100), "c reused b's returned slot");
    a.call(0).await.unwrap();
    c.call(1).await.unwrap();
    assert_eq!(mock.calls(), 2);
    assert_eq!(layer.handle().admitted(), 2);
}

/// Waiters dropped while waiting: nobody is admitted beyond the limit, and
/// capacity is lost for at most one emission interval.
#[tokio::test(start_paused = true)]
async fn dropped_waiters_lose_at_most_one_interval() {
    let layer = waiting(10, 1, Duration::from_secs(5));
    let mock = Mock::new();
    let h = mock.handle();
    let start = Instant::now();
    // w0 takes the slot at 0; w1..w3 book 100, 200, 300 ms.
    let mut svcs: Vec<_> = (0..4).map(|_| layer.layer(mock.clone())).collect();
    for s in &mut svcs {
        let _ = std::future::poll_fn(|cx| std::task::Poll::Ready(s.poll_ready(cx))).await;
    }
    let mut w3 = svcs.pop().unwrap();
    let w2 = svcs.pop().unwrap();
    let w1 = svcs.pop().unwrap();
    let mut w0 = svcs.pop().unwrap();
    w0.call(0).await.unwrap();
    // w2 (booked 200 ms, others booked after it) is dropped: its slot
    // cannot be returned and passes unused. w1 is dropped too.
    drop(w2);
    drop(w1);
    let t = tokio::spawn(async move {
        w3.ready().await.unwrap();
        w3.call(3).await.unwrap();
        Instant::now() - start
    });
    assert_eq!(t.await.unwrap(), ms(300), "w3 keeps its booked time");
    // w3 was the last booking: the next new waiter books 400 ms.
    let mut w4 = layer.layer(mock.clone());
    w4.ready().await.unwrap();
    assert_eq!(start.elapsed(), ms(400));
    w4.call(4).await.unwrap();
    // Never more than one admission per 100 ms.
    let times = h.call_times();
    assert!(times.windows(2).all(|w| w[1] - w[0] >= ms(100)));
    assert_eq!(h.calls(), 3);
}

/// A task waiting in `poll_ready`, dropped mid-wait, gives its booking
/// back when nobody booked after it.
#[tokio::test(start_paused = true)]
async fn a_cancelled_wait_returns_its_slot() {
    let layer = waiting(10, 1, Duration::from_secs(5));
    let (mut a, _) = service(&layer);
    send(&mut a, 0).await.unwrap();
    let mut b = a.clone();
    let waiter = tokio::spawn(async move {
        b.ready().await.unwrap();
        unreachable!("cancelled before its slot");
    });
    advance(ms(50)).await;
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    let t0 = Instant::now();
    send(&mut a, 1).await.unwrap();
    assert_eq!(t0.elapsed(), ms(50), "took the slot at 100 ms, not 200 ms");
}

/// The windows wait by sleeping until `retry_after` and trying again; a
/// wait beyond the bound is refused at once.
#[tokio::test(start_paused = true)]
async fn window_wait_mode_waits_until_it_fits() {
    for exact in [false, true] {
        let build = |window: Duration| {
            let b = RateLimitLayer::sliding_window(2, window).wait(ms(150));
            if exact { b.exact().build() } else { b.build() }.unwrap()
        };
        // 2 per 100 ms: the third waits (150 ms for the counter, which
        // weighs the previous window; 100 ms for the log).
        let (mut svc, _) = service(&build(ms(100)));
        let t0 = Instant::now();
        for i in 0..3 {
            send(&mut svc, i).await.unwrap();
        }
        assert_eq!(t0.elapsed(), if exact { ms(100) } else { ms(150) });
        // 2 per second: the third would wait beyond 150 ms: refused at once.
        let (mut svc, mock) = service(&build(Duration::from_secs(1)));
        send(&mut svc, 0).await.unwrap();
        send(&mut svc, 1).await.unwrap();
        let t0 = Instant::now();
        let e = limited(send(&mut svc, 2).await);
        assert_eq!(t0.elapsed(), Duration::ZERO);
        assert!(e.retry_after > ms(150));
        assert_eq!(mock.calls(), 2);
    }
}

// ---------------------------------------------------------------- keyed

#[tokio::test(start_paused = true)]
async fn keys_are_limited_separately() {
    let layer = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
        .keyed(|req: &u64| req % 3)
        .build()
        .unwrap();
    let mut svc = layer.layer(Mock::new());
    for key in 0..3 {
        send(&mut svc, key).await.unwrap();
    }
    for key in 0..3 {
        assert_eq!(limited(send(&mut svc, key + 3).await).retry_after, ms(100));
    }
    assert_eq!(layer.handle().keys(), 3);
}

/// A flood of unique keys never holds more than the bound; once full of
/// active keys, new keys are refused (active ones are never evicted); idle
/// keys are evicted by the limiter itself and come back as new.
#[tokio::test(start_paused = true)]
async fn key_bound_under_a_flood_of_unique_keys() {
    for (name, b) in [
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
            RateLimitLayer::sliding_log(1, Duration::from_secs(1)),
        ),
    ] {
        let layer = b.keyed(|req: &u64| *req).max_keys(100).build().unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(Mock::new());
        let mut admitted = Vec::new();
        for key in 0..10_000u64 {
            match send(&mut svc, key).await {
                Ok(_) => admitted.push(key),
                Err(e) => {
                    let e = e.downcast::<RateLimited>().unwrap();
                    assert_eq!(e.remaining, 0);
                    assert!(e.retry_after > Duration::ZERO);
                }
            }
            assert!(h.keys() <= 100, "{name}");
        }
        assert_eq!(h.keys(), admitted.len(), "{name}");
        assert_eq!(admitted.len(), 100, "{name}: every shard filled");
        // Every admitted key is still active: refused, not reset.
        for &key in &admitted {
            assert!(send(&mut svc, key).await.is_err(), "{name}: key {key}");
        }
        // Long idle: every key is evictable, so a new flood fills the
        // bound again (the old keys evicted by the limiter itself).
        advance(Duration::from_secs(10)).await;
        let mut again = 0;
        for key in 20_000..30_000u64 {
            if send(&mut svc, key).await.is_ok() {
                again += 1;
            }
        }
        assert_eq!(again, 100, "{name}");
        assert_eq!(h.keys(), 100, "{name}");
    }
}

/// An evicted key behaves exactly like a key never seen: the same answers,
/// the same `retry_after`s, as on a fresh limiter.
#[tokio::test(start_paused = true)]
async fn an_evicted_key_behaves_like_a_new_one() {
    for (name, b) in [
        (
            "token bucket",
            RateLimitLayer::token_bucket(10, Duration::from_secs(1)).burst(3),
        ),
        ("sliding window", RateLimitLayer::sliding_window(3, ms(300))),
        ("sliding log", RateLimitLayer::sliding_log(3, ms(300))),
    ] {
        let layer = b
            .keyed(|req: &(u64, u64)| req.0)
            .max_keys(1)
            .build()
            .unwrap();
        let mut svc = layer.layer(Mock::<(u64, u64)>::new());
        async fn burst<S>(svc: &mut S, key: u64) -> Vec<Option<Duration>>
        where
            S: Service<(u64, u64), Response = Reply<(u64, u64)>, Error = BoxError>,
        {
            let mut out = Vec::new();
            for i in 0..5 {
                let r = svc.ready().await.unwrap().call((key, i)).await;
                out.push(
                    r.err()
                        .map(|e| e.downcast::<RateLimited>().unwrap().retry_after),
                );
            }
            out
        }
        let fresh = burst(&mut svc, 1).await;
        // A multiple of every window and interval here, so the answers line up.
        advance(Duration::from_secs(6)).await;
        // Key 2 evicts idle key 1 (bound 1), then key 1 evicts idle key 2.
        assert_eq!(burst(&mut svc, 2).await, fresh, "{name}");
        advance(Duration::from_secs(6)).await;
        assert_eq!(burst(&mut svc, 1).await, fresh, "{name}");
        assert_eq!(layer.handle().keys(), 1);
    }
}

/// Services and layers can cross threads (axum, tonic and `Buffer` need it).
#[test]
fn services_and_layers_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<RateLimitLayer>();
    send_sync::<RateLimit<Mock>>();
    send_sync::<RateLimitHandle>();
    send_sync::<palisade::rate_limit::ResponseFuture<std::future::Ready<()>>>();
    type Keyed = fn(&u64) -> u64;
    send_sync::<RateLimitLayer<Keyed>>();
    send_sync::<RateLimit<Mock, Keyed>>();
}

/// Wait mode on the windows: a reservation dropped unused is taken back
/// from the counter; the log keeps it (documented: a lock-free ring cannot
/// take an entry back).
#[tokio::test(start_paused = true)]
async fn window_reservations_dropped_unused() {
    let layer = RateLimitLayer::sliding_window(2, Duration::from_secs(1))
        .wait(ms(10))
        .build()
        .unwrap();
    let (mut a, _) = service(&layer);
    send(&mut a, 0).await.unwrap();
    let mut b = a.clone();
    b.ready().await.unwrap(); // reserves the second unit
    drop(b); // ...and gives it back
    send(&mut a, 1).await.unwrap();
    assert!(send(&mut a, 2).await.is_err());
    assert_eq!(layer.handle().admitted(), 2);

    let layer = RateLimitLayer::sliding_log(2, Duration::from_secs(1))
        .wait(ms(10))
        .build()
        .unwrap();
    let (mut a, _) = service(&layer);
    send(&mut a, 0).await.unwrap();
    let mut b = a.clone();
    b.ready().await.unwrap();
    drop(b); // the entry stays in the log
    assert!(send(&mut a, 1).await.is_err());
}

/// A wait-mode refusal reserves nothing, so it is not kept across polls:
/// polled ready again once capacity is back, the service is admitted,
/// instead of delivering a refusal (and a `retry_after`) decided long ago.
#[tokio::test(start_paused = true)]
async fn wait_mode_refusal_is_decided_afresh_when_polled_again() {
    let layer = waiting(10, 1, ms(150));
    let (mut svc, mock) = service(&layer);
    send(&mut svc, 0).await.unwrap();
    let mut other = svc.clone();
    // `other` books 100 ms; the next slot (200 ms) is beyond the bound.
    let _ = std::future::poll_fn(|cx| std::task::Poll::Ready(other.poll_ready(cx))).await;
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(svc.poll_ready(cx))).await;
    assert!(
        matches!(first, std::task::Poll::Ready(Ok(()))),
        "refused at once"
    );
    drop(other); // gives its booking back
    advance(ms(300)).await;
    // Polled ready again: decided now, and admitted.
    svc.ready().await.unwrap();
    let reply = svc.call(1).await.expect("capacity is back: admitted");
    assert_eq!(reply.request, 1);
    assert_eq!(mock.calls(), 2);
    assert_eq!(layer.handle().rejected(), 0);
}

/// Counts its wake-ups.
struct CountingWaker(std::sync::atomic::AtomicUsize);

impl futures::task::ArcWake for CountingWaker {
    fn wake_by_ref(arc_self: &std::sync::Arc<Self>) {
        arc_self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Wait mode neither busy-spins (tower-resilience #365: a `poll_ready` that
/// wakes itself while pending) nor wakes only the last waiter of a shared
/// timer (tower #454): each waiting instance is woken once, when its own
/// booked time comes, and not before.
#[tokio::test(start_paused = true)]
async fn waiters_are_woken_once_each_at_their_time_never_spinning() {
    use std::sync::Arc;
    use std::sync::atomic::Ordering::SeqCst;
    use std::task::{Context, Poll};

    let layer = waiting(10, 1, Duration::from_secs(5));
    let (mut first, mock) = service(&layer);
    send(&mut first, 0).await.unwrap();
    // Three waiters book 100, 200 and 300 ms.
    let mut waiters: Vec<_> = (0..3)
        .map(|_| {
            let count = Arc::new(CountingWaker(0.into()));
            (first.clone(), count)
        })
        .collect();
    for (svc, count) in &mut waiters {
        let waker = futures::task::waker(count.clone());
        let polled = svc.poll_ready(&mut Context::from_waker(&waker));
        assert!(polled.is_pending());
    }
    type Svc = RateLimit<support::Mock, Unkeyed, PerRequest, NoHeaders, Wait>;
    let wakes = |w: &[(Svc, Arc<CountingWaker>)]| {
        w.iter().map(|(_, c)| c.0.load(SeqCst)).collect::<Vec<_>>()
    };
    // No self-wake while pending.
    tokio::task::yield_now().await;
    assert_eq!(wakes(&waiters), [0, 0, 0], "pending poll_ready woke itself");
    for (i, expected) in [[1, 0, 0], [1, 1, 0], [1, 1, 1]].into_iter().enumerate() {
        advance(ms(100)).await;
        assert_eq!(wakes(&waiters), expected, "after {} ms", 100 * (i + 1));
    }
    // Each is ready now, and a second poll does not re-arm a wake.
    for (svc, count) in &mut waiters {
        let waker = futures::task::waker(count.clone());
        let polled = svc.poll_ready(&mut Context::from_waker(&waker));
        assert!(matches!(polled, Poll::Ready(Ok(()))));
    }
    for (i, (svc, _)) in waiters.iter_mut().enumerate() {
        svc.call(i as u64 + 1).await.unwrap();
    }
    advance(ms(500)).await;
    assert_eq!(wakes(&waiters), [1, 1, 1], "no stray wake-ups");
    assert_eq!(mock.calls(), 4);
}
