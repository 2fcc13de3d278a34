//! Window limits up to 2^32 per window (a global 100,000 per second over a
//! minute is 6,000,000), keyed and unkeyed, through the mock on paused time.

mod support;

use std::time::Duration;

use palisade::rate_limit::{ConfigError, InsufficientCapacity};
use palisade::{BoxError, RateLimitLayer, RateLimited};
use support::{Mock, Reply};
use tower::{Layer, Service, ServiceExt};

const MAX: u64 = 1 << 32;

/// A request: key and cost.
type Req = (u64, u64);

async fn send<S>(svc: &mut S, req: Req) -> Result<Reply<Req>, BoxError>
where
    S: Service<Req, Response = Reply<Req>, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

fn retry_after(r: Result<Reply<Req>, BoxError>) -> Duration {
    let e = r.expect_err("expected a refusal");
    e.downcast_ref::<RateLimited>()
        .unwrap_or_else(|| panic!("not RateLimited: {e}"))
        .retry_after
}

#[test]
fn the_maximum_is_2_pow_32() {
    let s = Duration::from_secs(1);
    for exact in [false, true] {
        let b = |limit| {
            let b = RateLimitLayer::sliding_window(limit, s);
            if exact { b.exact() } else { b }
        };
        assert!(b(MAX).build().is_ok());
        assert!(b(MAX).keyed(|r: &Req| r.0).build().is_ok());
        assert_eq!(
            b(MAX + 1).build().map(|_| ()).unwrap_err(),
            ConfigError::LimitTooLarge { max: MAX }
        );
    }
}

/// Exactly 2^32 in one window, unkeyed (the wide 128-bit cell) and keyed,
/// then the previous window's weight decides, to the nanosecond.
#[tokio::test(start_paused = true)]
async fn a_window_of_2_pow_32() {
    let s = Duration::from_secs(1);
    let b = || RateLimitLayer::sliding_window(MAX, s).cost(|r: &Req| r.1);
    let unkeyed = b().build().unwrap();
    let keyed = b().keyed(|r: &Req| r.0).build().unwrap();
    let mut a = unkeyed.layer(Mock::new());
    let mut k = keyed.layer(Mock::new());
    macro_rules! both {
        ($req:expr, $check:expr) => {{
            let check = $check;
            check(send(&mut a, $req).await);
            check(send(&mut k, $req).await);
        }};
    }
    both!((1, MAX - 1), |r: Result<_, BoxError>| {
        r.unwrap();
    });
    both!((1, 1), |r: Result<_, BoxError>| {
        r.unwrap();
    });
    // Full: the next unit fits when the previous window's 2^32 weigh
    // 2^32 - 1, i.e. 1 / 2^32 of a second into the next window (0.23 ns,
    // rounded up to 1 ns).
    both!((1, 1), |r| assert_eq!(
        retry_after(r),
        s + Duration::from_nanos(1)
    ));
    // Above the limit: never.
    both!((1, MAX + 1), |r: Result<_, BoxError>| {
        assert!(r.unwrap_err().is::<InsufficientCapacity>());
    });
    // Another key is untouched (keyed); halfway through the next window
    // half the limit is free.
    assert!(send(&mut k, (2, MAX)).await.is_ok());
    tokio::time::advance(s + s / 2).await;
    both!((1, MAX / 2), |r: Result<_, BoxError>| {
        r.unwrap();
    });
    both!((1, 1), |r: Result<_, BoxError>| {
        assert!(r.is_err());
    });
    assert_eq!(unkeyed.handle().admitted(), 3);
    assert_eq!(keyed.handle().admitted(), 4);
}

/// A log of 2^32 builds without allocating 32 GiB up front (it grows as it
/// fills), keyed and unkeyed; its exactness above the lock-free ring's size
/// is tested in the limiter's unit tests.
#[tokio::test(start_paused = true)]
async fn a_log_of_2_pow_32_grows_as_it_fills() {
    let s = Duration::from_secs(1);
    let layer = RateLimitLayer::sliding_log(MAX, s).build().unwrap();
    let mut svc = layer.layer(Mock::new());
    for i in 0..10_000 {
        send(&mut svc, (0, 1))
            .await
            .unwrap_or_else(|e| panic!("{i}: {e}"));
    }
    let layer = RateLimitLayer::sliding_log(MAX, s)
        .keyed(|r: &Req| r.0)
        .build()
        .unwrap();
    let mut svc = layer.layer(Mock::new());
    for i in 0..10_000 {
        send(&mut svc, (i % 3, 1)).await.unwrap();
    }
    assert_eq!(layer.handle().keys(), 3);
}
