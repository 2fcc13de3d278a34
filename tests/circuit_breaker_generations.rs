//! The breaker's generations, through the mock in paused time: a probe slot
//! belongs to one half-open period, and nothing from an earlier period (a
//! kept permit, a late outcome) acts in a later one. Also the growth of the
//! open duration across re-trips. These pin down what mutation testing
//! found unpinned in `circuit_breaker/state.rs`.

mod support;

use std::time::Duration;

use palisade::backoff::{Backoff, Jitter};
use palisade::circuit_breaker::{CircuitBreaker, CircuitBreakerBuilder, CircuitOpen, State};
use palisade::{BoxError, CircuitBreakerLayer};
use support::{Mock, MockHandle, Reply, Step, ms};
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt};

type Res = Result<Reply<u64>, BoxError>;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn breaker(builder: CircuitBreakerBuilder) -> (CircuitBreaker<Mock>, MockHandle) {
    let mock = Mock::new();
    let handle = mock.handle();
    (builder.build().unwrap().layer(mock), handle)
}

fn rejected(res: &Res) -> Option<Duration> {
    res.as_ref()
        .err()
        .and_then(|e| e.downcast_ref::<CircuitOpen>())
        .map(|open| open.retry_after)
}

/// Trips a `consecutive_failures(1)` breaker with one failed call.
async fn trip(svc: &mut CircuitBreaker<Mock>, mock: &MockHandle) {
    mock.push_script([Step::err()]);
    let res = svc.ready().await.unwrap().call(0).await;
    assert!(rejected(&res).is_none(), "the tripping call was admitted");
}

/// With one probe slot, polling ready twice keeps the one slot: the call
/// that follows is the probe, not a rejection.
#[tokio::test(start_paused = true)]
async fn polling_ready_twice_keeps_the_only_probe_slot() {
    let (mut svc, mock) = breaker(
        CircuitBreakerLayer::consecutive_failures(1)
            .open_for(secs(1))
            .half_open_probes(1),
    );
    let h = svc.handle();
    trip(&mut svc, &mock).await;
    advance(secs(1)).await;

    let mut a = svc.clone();
    a.ready().await.unwrap();
    a.ready().await.unwrap();
    assert_eq!(h.counts().probes_in_flight, 1);
    let before = mock.calls();
    a.call(0).await.unwrap();
    assert_eq!(mock.calls(), before + 1, "the probe reached the upstream");
    assert_eq!(h.state(), State::Closed);
}

/// A service polled ready in one half-open period keeps no permit into the
/// next state: polled ready again after another probe re-opened the
/// breaker, it is rejected without reaching the upstream.
#[tokio::test(start_paused = true)]
async fn a_permit_from_an_earlier_half_open_period_is_not_kept() {
    let (mut svc, mock) = breaker(
        CircuitBreakerLayer::consecutive_failures(1)
            .open_for(secs(1))
            .half_open_probes(2),
    );
    let h = svc.handle();
    trip(&mut svc, &mock).await;
    advance(secs(1)).await;

    let mut a = svc.clone();
    let mut b = svc.clone();
    a.ready().await.unwrap(); // a probe slot of this half-open period
    mock.push_script([Step::err()]);
    b.ready().await.unwrap().call(0).await.unwrap_err();
    assert_eq!(h.state(), State::Open, "b's failed probe re-opened");

    // Open now: a's permit died with its period.
    a.ready().await.unwrap();
    let before = mock.calls();
    let res = a.call(0).await;
    assert_eq!(rejected(&res), Some(secs(1)));
    assert_eq!(mock.calls(), before, "no call while open");
}

/// The same, with the stale permit taken in one half-open period and kept
/// through a re-open into the next one, which then fills up.
#[tokio::test(start_paused = true)]
async fn a_kept_probe_permit_does_not_outlive_its_period() {
    let (mut svc, mock) = breaker(
        CircuitBreakerLayer::consecutive_failures(1)
            .open_for(secs(1))
            .half_open_probes(2),
    );
    let h = svc.handle();
    trip(&mut svc, &mock).await;
    advance(secs(1)).await;

    let mut stale = svc.clone();
    stale.ready().await.unwrap(); // slot in period 1
    let mut b = svc.clone();
    mock.push_script([Step::err()]);
    b.ready().await.unwrap().call(0).await.unwrap_err(); // re-opens
    advance(secs(1)).await;
    let (mut c, mut d) = (svc.clone(), svc.clone());
    c.ready().await.unwrap(); // period 2: half-open again
    d.ready().await.unwrap();
    assert_eq!(
        (h.state(), h.counts().probes_in_flight),
        (State::HalfOpen, 2)
    );

    // `stale` is polled ready again in period 2: both slots are taken.
    stale.ready().await.unwrap();
    let before = mock.calls();
    let res = stale.call(0).await;
    assert_eq!(rejected(&res), Some(Duration::ZERO), "{res:?}");
    assert_eq!(mock.calls(), before);
    assert_eq!(h.counts().probes_in_flight, 2);
}

/// A probe of one half-open period that ends during the *next* half-open
/// period moves nothing: its failure does not re-open the breaker, and the
/// new period's probe decides.
#[tokio::test(start_paused = true)]
async fn a_late_probe_outcome_does_not_move_the_next_half_open_period() {
    let (mut svc, mock) = breaker(
        CircuitBreakerLayer::consecutive_failures(1)
            .open_for(ms(50))
            .half_open_probes(2),
    );
    let h = svc.handle();
    trip(&mut svc, &mock).await;
    advance(ms(50)).await;

    // Period 1: a slow probe (fails after 100 ms) and a fast failing one.
    mock.push_script([Step::err().after(ms(100)), Step::err()]);
    let slow = tokio::spawn(svc.clone().oneshot(0));
    tokio::task::yield_now().await;
    assert_eq!(mock.in_flight(), 1);
    svc.clone().oneshot(0).await.unwrap_err();
    assert_eq!(h.state(), State::Open);

    // Period 2 starts at 50 ms; its probe is slow too.
    advance(ms(60)).await;
    mock.push_script([Step::ok().after(ms(200))]);
    let probe = tokio::spawn(svc.clone().oneshot(0));
    tokio::task::yield_now().await;
    assert_eq!(h.state(), State::HalfOpen);

    // The period-1 probe fails now, inside period 2.
    assert!(slow.await.unwrap().is_err());
    let c = h.counts();
    assert_eq!((c.state, c.probes_in_flight), (State::HalfOpen, 1));

    probe.await.unwrap().unwrap();
    assert_eq!(h.state(), State::HalfOpen, "one win of two");
}

/// Re-trips without a close grow a decorrelated open duration from the last
/// one (past `3 * base`, which a schedule starting over each time never
/// exceeds).
#[tokio::test(start_paused = true)]
async fn decorrelated_open_duration_grows_across_retrips() {
    let backoff = Backoff::exponential(secs(1))
        .max_delay(secs(600))
        .jitter(Jitter::Decorrelated)
        .build()
        .unwrap();
    let (mut svc, mock) = breaker(
        CircuitBreakerLayer::consecutive_failures(1)
            .open_backoff(backoff)
            .seed(7),
    );
    trip(&mut svc, &mock).await;
    let mut longest = Duration::ZERO;
    for _ in 0..8 {
        let wait = rejected(&svc.ready().await.unwrap().call(0).await).unwrap();
        longest = longest.max(wait);
        advance(wait).await;
        trip(&mut svc, &mock).await; // the probe fails: re-open
    }
    assert!(longest > secs(3), "longest open period {longest:?}");
}
