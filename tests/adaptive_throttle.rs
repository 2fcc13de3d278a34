//! Client-side adaptive throttling: the rejection probability against the
//! SRE book's formula, its classification as a local rejection, and a
//! simulation on paused time of a backend that sheds load and recovers.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::circuit_breaker::{
    AdaptiveThrottleLayer, CircuitOpen, ConfigError, State, Throttled, Window,
};
use palisade::classify::{Classify, ErrorsAsFailures, FailureWhenOk, Outcome, local_rejection};
use palisade::{BoxError, CircuitBreakerLayer};
use support::{Mock, Reply, Step};
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

fn formula(requests: u64, accepts: u64, k: f64) -> f64 {
    ((requests as f64 - k * accepts as f64) / (requests as f64 + 1.0)).max(0.0)
}

/// A throttle whose window holds exactly `requests` attempts of which the
/// backend accepted `accepts`: the accepted ones first (never throttled:
/// `p` is 0 while everything is accepted), then refused ones (each one
/// either sent and refused, or throttled: a request not accepted either
/// way).
async fn fed(
    requests: u64,
    accepts: u64,
    k: f64,
    seed: u64,
) -> (
    impl Service<u64, Response = Reply<u64>, Error = BoxError>,
    palisade::circuit_breaker::AdaptiveThrottleHandle,
    support::MockHandle,
) {
    let mock = Mock::new().outcome_fn(
        move |n, _| {
            if n < accepts { Step::ok() } else { Step::err() }
        },
    );
    let upstream = mock.handle();
    let layer = AdaptiveThrottleLayer::builder()
        .k(k)
        .seed(seed)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(mock);
    for _ in 0..requests {
        let _ = svc.ready().await.unwrap().call(0).await;
    }
    (svc, handle, upstream)
}

#[tokio::test(start_paused = true)]
async fn rejection_probability_follows_the_formula() {
    // (requests, accepts, K)
    let table = [
        (0, 0, 2.0),
        (1, 0, 2.0),
        (10, 0, 2.0),
        (100, 50, 2.0),
        (100, 49, 2.0),
        (100, 30, 2.0),
        (100, 10, 2.0),
        (100, 10, 1.0),
        (100, 10, 3.0),
        (400, 100, 1.5),
        (1000, 0, 2.0),
    ];
    for (requests, accepts, k) in table {
        let (_, handle, upstream) = fed(requests, accepts, k, 1).await;
        let counts = handle.counts();
        assert_eq!(
            (counts.requests, counts.accepts),
            (requests, accepts),
            "window for ({requests}, {accepts}, {k})"
        );
        let expected = formula(requests, accepts, k);
        assert!(
            (counts.rejection_probability - expected).abs() < 1e-12,
            "({requests}, {accepts}, {k}): {} != {expected}",
            counts.rejection_probability
        );
        // Every throttled request is one the upstream never saw.
        assert_eq!(upstream.calls() + counts.throttled, requests);
    }
}

/// The next request is throttled with probability `p`: over many seeds,
/// the observed rate is within four standard deviations of it.
#[tokio::test(start_paused = true)]
async fn the_next_request_is_throttled_with_that_probability() {
    const SEEDS: u64 = 600;
    for (requests, accepts) in [(60, 20), (60, 10), (60, 0), (60, 30)] {
        let p = formula(requests, accepts, 2.0);
        let mut throttled = 0;
        for seed in 0..SEEDS {
            let (mut svc, _, _) = fed(requests, accepts, 2.0, seed).await;
            let res = svc.ready().await.unwrap().call(0).await;
            if matches!(&res, Err(e) if e.is::<Throttled>()) {
                throttled += 1;
            }
        }
        let observed = throttled as f64 / SEEDS as f64;
        let sigma = (p * (1.0 - p) / SEEDS as f64).sqrt();
        assert!(
            (observed - p).abs() <= 4.0 * sigma + 1e-9,
            "({requests}, {accepts}): observed {observed}, expected {p}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_throttled_request_is_a_local_rejection_told_apart_from_circuit_open() {
    let (mut svc, handle, upstream) = fed(50, 0, 2.0, 3).await;
    let calls = upstream.calls();
    // p is about 0.98 now: find one throttled request.
    let err = loop {
        if let Err(e) = svc.ready().await.unwrap().call(0).await {
            if e.is::<Throttled>() {
                break e;
            }
        }
    };
    let throttled = err.downcast_ref::<Throttled>().unwrap();
    assert!(!err.is::<CircuitOpen>());
    assert_eq!(throttled.retry_after, Duration::from_secs(5)); // 2 min / 24
    assert!(throttled.probability > 0.9);
    let rejection = local_rejection(&*err).expect("a local rejection");
    assert_eq!(rejection.retry_after, Some(Duration::from_secs(5)));
    let res: Result<(), BoxError> = Err(err);
    assert_eq!(ErrorsAsFailures.classify(&res), Outcome::Ignored);
    assert!(handle.counts().throttled > 0);
    assert!(upstream.calls() >= calls);
}

/// A breaker stacked above the throttle never counts its rejections: the
/// backend answers `Ok(503)` when overloaded (a failure for the throttle's
/// classifier, a success for the breaker's), so the breaker sees only the
/// throttle's `Throttled` errors, and stays closed.
#[tokio::test(start_paused = true)]
async fn a_breaker_above_never_trips_on_throttled_requests() {
    let mock = Mock::new().default_step(Step::status(503));
    let upstream = mock.handle();
    let breaker = CircuitBreakerLayer::consecutive_failures(3)
        .build()
        .unwrap();
    let breaker_handle = breaker.handle();
    let throttle = AdaptiveThrottleLayer::builder()
        .seed(9)
        .classifier(FailureWhenOk::new(|r: &Reply<u64>| r.status == 503))
        .build()
        .unwrap();
    let throttle_handle = throttle.handle();
    let mut svc = ServiceBuilder::new()
        .layer(breaker)
        .layer(throttle)
        .service(mock);
    let mut throttled = 0;
    for _ in 0..200 {
        match svc.ready().await.unwrap().call(0).await {
            Err(e) if e.is::<Throttled>() => throttled += 1,
            Err(e) => panic!("unexpected error {e}"),
            Ok(reply) => assert_eq!(reply.status, 503),
        }
    }
    assert!(throttled > 150, "{throttled}");
    assert_eq!(throttle_handle.counts().throttled, throttled);
    let counts = breaker_handle.counts();
    assert_eq!(counts.state, State::Closed);
    assert_eq!(counts.failures, 0);
    assert_eq!(counts.calls, 0); // consecutive: the run of failures
    assert_eq!(upstream.calls(), 200 - throttled);
}

#[test]
fn bad_throttle_configuration_is_an_error() {
    let err = |b: palisade::circuit_breaker::AdaptiveThrottleBuilder| b.build().err();
    let b = AdaptiveThrottleLayer::builder;
    assert!(matches!(err(b().k(0.5)), Some(ConfigError::ThrottleK(k)) if k == 0.5));
    assert!(matches!(err(b().k(f64::NAN)), Some(ConfigError::ThrottleK(k)) if k.is_nan()));
    assert!(matches!(
        err(b().k(f64::INFINITY)),
        Some(ConfigError::ThrottleK(_))
    ));
    assert_eq!(
        err(b().window(Window::count(100))),
        Some(ConfigError::ThrottleNeedsTimeWindow)
    );
    assert_eq!(
        err(b().window(Window::time(Duration::ZERO))),
        Some(ConfigError::ZeroWindow)
    );
    assert!(matches!(
        err(b().window(Window::time_with_buckets(Duration::from_secs(1), 0))),
        Some(ConfigError::Buckets { buckets: 0, .. })
    ));
    assert!(matches!(
        err(b().window(Window::time_with_buckets(Duration::from_nanos(5), 10))),
        Some(ConfigError::BucketTooNarrow { .. })
    ));
    assert!(b().k(1.0).build().is_ok());
}

/// The backend's capacity per second, as a fraction of what the client
/// offers, minute by minute: healthy, shedding 80%, then 95%, recovered.
fn capacity_fraction(minute: u64) -> f64 {
    match minute {
        0..4 => 1.0,
        4..10 => 0.2,
        10..16 => 0.05,
        _ => 1.0,
    }
}

const OFFERED_PER_SEC: u64 = 100;
const MINUTES: u64 = 24;

/// Per second: (requests the client sent, requests the backend accepted).
async fn simulate(k: f64) -> Vec<(u64, u64)> {
    let start = Instant::now();
    // The backend accepts up to `capacity` requests per second and
    // refuses the rest (as overloaded).
    let slot = Arc::new(Mutex::new((0u64, 0u64))); // (second, accepted in it)
    let per_sec = Arc::new(Mutex::new(vec![(0u64, 0u64); (MINUTES * 60) as usize]));
    let (slot2, per_sec2) = (slot.clone(), per_sec.clone());
    let mock = Mock::new().outcome_fn(move |_, _| {
        let second = start.elapsed().as_secs();
        let capacity = (capacity_fraction(second / 60) * OFFERED_PER_SEC as f64) as u64;
        let mut slot = slot2.lock().unwrap();
        if slot.0 != second {
            *slot = (second, 0);
        }
        let mut stats = per_sec2.lock().unwrap();
        let entry = &mut stats[second as usize];
        entry.0 += 1;
        if slot.1 < capacity {
            slot.1 += 1;
            entry.1 += 1;
            Step::ok()
        } else {
            Step::err()
        }
    });
    let layer = AdaptiveThrottleLayer::builder()
        .k(k)
        .seed(42)
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    let gap = Duration::from_secs(1) / OFFERED_PER_SEC as u32;
    for _ in 0..MINUTES * 60 * OFFERED_PER_SEC {
        let _ = svc.ready().await.unwrap().call(0).await;
        advance(gap).await;
    }
    per_sec.lock().unwrap().clone()
}

/// Mean (sent, accepted) per second over the last minute before `minute`.
fn last_minute(stats: &[(u64, u64)], minute: u64) -> (f64, f64) {
    let window = &stats[((minute - 1) * 60) as usize..(minute * 60) as usize];
    let sent: u64 = window.iter().map(|s| s.0).sum();
    let accepted: u64 = window.iter().map(|s| s.1).sum();
    (sent as f64 / 60.0, accepted as f64 / 60.0)
}

#[tokio::test(start_paused = true)]
async fn the_sent_rate_tracks_k_times_accepts_and_recovers_with_the_backend() {
    let stats = simulate(2.0).await;
    for minute in 1..=MINUTES {
        let (sent, accepted) = last_minute(&stats, minute);
        eprintln!(
            "minute {minute:2}: capacity {:5.1}/s  sent {sent:6.1}/s  accepted {accepted:6.1}/s",
            capacity_fraction(minute - 1) * OFFERED_PER_SEC as f64
        );
    }
    let offered = OFFERED_PER_SEC as f64;
    // Healthy: everything is sent.
    let (sent, accepted) = last_minute(&stats, 4);
    assert_eq!((sent, accepted), (offered, offered));
    // Shedding: the backend is kept at its capacity, and the client sends
    // about K times what it accepts, not the whole offered load.
    for (minute, capacity) in [(10, 20.0), (16, 5.0)] {
        let (sent, accepted) = last_minute(&stats, minute);
        assert!(
            (accepted - capacity).abs() <= 0.05 * capacity,
            "minute {minute}: accepted {accepted}"
        );
        let ratio = sent / accepted;
        assert!(
            (1.7..=2.3).contains(&ratio),
            "minute {minute}: sent {sent} = {ratio} x accepted {accepted}"
        );
    }
    // Recovered: back to the whole offered load within the window.
    let (sent, accepted) = last_minute(&stats, MINUTES);
    assert!(sent >= 0.99 * offered, "sent {sent}");
    assert_eq!(sent, accepted);
}
