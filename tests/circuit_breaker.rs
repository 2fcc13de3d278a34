//! The circuit breaker through the mock, on paused time.

mod support;

use std::time::Duration;

use palisade::backoff::{Backoff, Jitter};
use palisade::circuit_breaker::{
    CircuitBreaker, CircuitBreakerBuilder, CircuitOpen, ConfigError, State, Window,
};
use palisade::classify::{FailureWhenOk, Outcome};
use palisade::{BoxError, CircuitBreakerLayer};
use support::{Mock, MockError, MockHandle, ReadyStep, Reply, Step, ms};
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt};

type Res = Result<Reply<u64>, BoxError>;

fn ns(n: u64) -> Duration {
    Duration::from_nanos(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A breaker from `builder` around a fresh mock.
fn breaker(builder: CircuitBreakerBuilder) -> (CircuitBreaker<Mock>, MockHandle) {
    let mock = Mock::new();
    let handle = mock.handle();
    (builder.build().unwrap().layer(mock), handle)
}

async fn call<S>(svc: &mut S) -> Res
where
    S: Service<u64, Response = Reply<u64>, Error = BoxError>,
{
    svc.ready().await?.call(0).await
}

/// The rejection's `retry_after`, if the result is a rejection.
fn rejected(res: &Res) -> Option<Duration> {
    res.as_ref()
        .err()
        .and_then(|e| e.downcast_ref::<CircuitOpen>())
        .map(|open| open.retry_after)
}

/// Runs one call scripted to `step` (it must be admitted).
async fn step<S>(svc: &mut S, mock: &MockHandle, step: Step) -> Res
where
    S: Service<u64, Response = Reply<u64>, Error = BoxError>,
{
    mock.push_script([step]);
    let res = call(svc).await;
    // A rejection would leave the step in the script for a later call.
    assert!(rejected(&res).is_none(), "a scripted call was rejected");
    res
}

#[tokio::test(start_paused = true)]
async fn consecutive_trips_exactly_at_threshold() {
    let (mut svc, mock) = breaker(CircuitBreakerLayer::consecutive_failures(3));
    let h = svc.handle();
    for s in [
        Step::err(),
        Step::err(),
        Step::ok(),
        Step::err(),
        Step::err(),
    ] {
        step(&mut svc, &mock, s).await.ok();
    }
    assert_eq!(h.state(), State::Closed, "two in a row after a success");
    assert_eq!(h.counts().failures, 2);
    let err = step(&mut svc, &mock, Step::err()).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<MockError>(),
        Some(&MockError { call: 5 }),
        "inner errors pass through, boxed"
    );
    assert_eq!(h.state(), State::Open);
    assert_eq!(rejected(&call(&mut svc).await), Some(secs(30)));
    assert_eq!(mock.calls(), 6, "a rejected call never reaches the service");
    assert_eq!(h.counts().rejections, 1);
}

#[tokio::test(start_paused = true)]
async fn count_window_is_a_ring_not_a_counter() {
    let (mut svc, mock) = breaker(
        CircuitBreakerLayer::failure_rate(0.5)
            .window(Window::count(10))
            .min_calls(10),
    );
    let h = svc.handle();
    for _ in 0..1000 {
        call(&mut svc).await.unwrap();
    }
    mock.set_default(Step::err());
    for i in 1..=4 {
        call(&mut svc).await.unwrap_err();
        let c = h.counts();
        assert_eq!((c.state, c.calls, c.failures), (State::Closed, 10, i));
    }
    // The fifth failure makes 5 of the last 10: exactly the threshold.
    call(&mut svc).await.unwrap_err();
    assert_eq!(h.state(), State::Open);
    assert_eq!(h.counts().failure_rate(), 0.5);
    assert_eq!(mock.calls(), 1005);
}

#[tokio::test(start_paused = true)]
async fn min_calls_gates_the_rate() {
    let (mut svc, mock) = breaker(
        CircuitBreakerLayer::failure_rate(0.5)
            .window(Window::count(10))
            .min_calls(4),
    );
    let h = svc.handle();
    for _ in 0..3 {
        step(&mut svc, &mock, Step::err()).await.unwrap_err();
    }
    assert_eq!(h.state(), State::Closed, "100% failures, but only 3 calls");
    // The fourth call, a success, brings the window to min_calls at 3/4.
    step(&mut svc, &mock, Step::ok()).await.unwrap();
    assert_eq!(h.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn time_window_trips_at_threshold_and_forgets_old_buckets() {
    let (mut svc, mock) = breaker(
        CircuitBreakerLayer::failure_rate(0.5)
            .window(Window::time_with_buckets(secs(10), 10))
            .min_calls(4),
    );
    let h = svc.handle();
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    step(&mut svc, &mock, Step::ok()).await.unwrap();
    assert_eq!(h.counts().calls, 3);
    // Ten seconds later the first bucket (all three calls) has left.
    advance(secs(10)).await;
    assert_eq!(h.counts().calls, 0);
    for s in [Step::ok(), Step::ok(), Step::err()] {
        step(&mut svc, &mock, s).await.ok();
    }
    // Counting the evicted calls this would be 3/6 and open already.
    let c = h.counts();
    assert_eq!((c.state, c.calls, c.failures), (State::Closed, 3, 1));
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    assert_eq!(h.state(), State::Open, "2 of 4 in the window");
}

#[tokio::test(start_paused = true)]
async fn time_window_slides_bucket_by_bucket() {
    let (mut svc, mock) = breaker(
        CircuitBreakerLayer::failure_rate(1.0)
            .window(Window::time_with_buckets(secs(4), 4))
            .min_calls(3),
    );
    let h = svc.handle();
    step(&mut svc, &mock, Step::err()).await.unwrap_err(); // t = 0, bucket 0
    advance(secs(1)).await;
    step(&mut svc, &mock, Step::err()).await.unwrap_err(); // t = 1, bucket 1
    advance(secs(3)).await; // t = 4: bucket 0 leaves, bucket 1 stays
    assert_eq!(h.counts().calls, 1);
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    assert_eq!(h.state(), State::Closed, "2 calls in the window");
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    assert_eq!(h.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn slow_call_rate_trips_at_threshold() {
    let threshold = ms(100);
    let (mut svc, mock) = breaker(
        CircuitBreakerLayer::slow_call_rate(0.5, threshold)
            .window(Window::count(4))
            .min_calls(4),
    );
    let h = svc.handle();
    step(&mut svc, &mock, Step::ok().after(threshold))
        .await
        .unwrap();
    // (tokio's timers have millisecond resolution: a sleep of 100 ms less
    // a nanosecond would end at 100 ms.)
    step(&mut svc, &mock, Step::ok().after(threshold - ms(1)))
        .await
        .unwrap();
    step(&mut svc, &mock, Step::ok()).await.unwrap();
    let c = h.counts();
    assert_eq!(
        (c.state, c.calls, c.slow_calls, c.failures),
        (State::Closed, 3, 1, 0),
        "exactly the threshold is slow, a millisecond less is not"
    );
    step(&mut svc, &mock, Step::ok().after(secs(1)))
        .await
        .unwrap();
    assert_eq!(h.state(), State::Open, "2 slow of 4");
    assert_eq!(h.counts().slow_call_rate(), 0.5);
}

#[tokio::test(start_paused = true)]
async fn failure_and_slow_rates_combine() {
    let (mut svc, mock) = breaker(
        CircuitBreakerLayer::failure_rate(0.75)
            .slow_call_rate(0.75, ms(10))
            .window(Window::count(4)),
    );
    let h = svc.handle();
    // Two failures, two slow: neither rate reaches 3/4.
    for s in [
        Step::err(),
        Step::err(),
        Step::ok().after(ms(10)),
        Step::ok().after(ms(10)),
    ] {
        step(&mut svc, &mock, s).await.ok();
    }
    assert_eq!(h.state(), State::Closed);
    // A slow failure replaces the first failure: 2 failures, 3 slow.
    step(&mut svc, &mock, Step::err().after(ms(50)))
        .await
        .unwrap_err();
    assert_eq!(h.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn open_duration_boundary_to_the_nanosecond() {
    let (mut svc, mock) = breaker(CircuitBreakerLayer::consecutive_failures(1).open_for(secs(5)));
    let h = svc.handle();
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    assert_eq!(rejected(&call(&mut svc).await), Some(secs(5)));
    advance(secs(5) - ns(1)).await;
    assert_eq!(rejected(&call(&mut svc).await), Some(ns(1)));
    assert_eq!(h.state(), State::Open);
    advance(ns(1)).await;
    let probe = svc.ready().await.unwrap().call(0);
    assert_eq!(h.state(), State::HalfOpen);
    assert_eq!(h.counts().probes_in_flight, 1);
    probe.await.unwrap();
    assert_eq!(h.state(), State::Closed);
    assert_eq!(mock.calls(), 2);
    assert_eq!(h.counts().rejections, 2);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_at_most_k_across_clones() {
    let (mut svc, mock) = breaker(
        CircuitBreakerLayer::consecutive_failures(1)
            .open_for(secs(1))
            .half_open_probes(2),
    );
    let h = svc.handle();
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    advance(secs(1)).await;

    let mut a = svc.clone();
    let mut b = svc.clone();
    let mut c = svc.clone();
    a.ready().await.unwrap();
    a.ready().await.unwrap(); // ready twice: still one slot
    assert_eq!(h.counts().probes_in_flight, 1);
    b.ready().await.unwrap();
    assert_eq!(h.counts().probes_in_flight, 2);
    // No slot left: ready, but the call is rejected without reaching the mock.
    let before = mock.calls();
    let res = c.ready().await.unwrap().call(0).await;
    assert_eq!(rejected(&res), Some(Duration::ZERO));
    assert_eq!(mock.calls(), before);

    // A clone of a ready service holds no slot.
    let mut a2 = a.clone();
    assert!(rejected(&call(&mut a2).await).is_some());
    assert_eq!(h.counts().probes_in_flight, 2);

    // A ready service dropped unused gives its slot back.
    drop(b);
    assert_eq!(h.counts().probes_in_flight, 1);
    let mut d = svc.clone();
    d.ready().await.unwrap();
    assert_eq!(h.counts().probes_in_flight, 2);

    // One success is not enough for k = 2; the second closes.
    a.call(0).await.unwrap();
    assert_eq!(h.state(), State::HalfOpen);
    assert_eq!(h.counts().probes_in_flight, 1);
    // The slot of a finished probe is not free again: k probes decide.
    assert!(rejected(&call(&mut c).await).is_some());
    d.call(0).await.unwrap();
    assert_eq!(h.state(), State::Closed);
    assert_eq!(h.counts().calls, 0, "closing starts a fresh window");
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens() {
    let (mut svc, mock) = breaker(
        CircuitBreakerLayer::consecutive_failures(1)
            .open_for(secs(2))
            .half_open_probes(3),
    );
    let h = svc.handle();
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    advance(secs(2)).await;
    step(&mut svc, &mock, Step::ok()).await.unwrap();
    assert_eq!(h.state(), State::HalfOpen);
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    assert_eq!(h.state(), State::Open);
    assert_eq!(rejected(&call(&mut svc).await), Some(secs(2)));
}

/// Half-open closes on exactly the k-th successful probe, for several k
/// (the probe counts are packed in the state word: a count that kept stale
/// bits would close early).
#[tokio::test(start_paused = true)]
async fn exactly_k_successful_probes_close() {
    for k in [1u32, 2, 3, 5, 8] {
        let (mut svc, mock) = breaker(
            CircuitBreakerLayer::consecutive_failures(1)
                .open_for(secs(1))
                .half_open_probes(k),
        );
        let h = svc.handle();
        step(&mut svc, &mock, Step::err()).await.unwrap_err();
        advance(secs(1)).await;
        for won in 1..k {
            step(&mut svc, &mock, Step::ok()).await.unwrap();
            assert_eq!(h.state(), State::HalfOpen, "k = {k}, {won} won");
        }
        step(&mut svc, &mock, Step::ok()).await.unwrap();
        assert_eq!(h.state(), State::Closed, "k = {k}");
    }
}

#[tokio::test(start_paused = true)]
async fn dropped_probe_returns_its_slot_and_records_nothing() {
    let (mut svc, mock) = breaker(CircuitBreakerLayer::consecutive_failures(1).open_for(secs(1)));
    let h = svc.handle();
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    advance(secs(1)).await;
    mock.push_script([Step::err().after(secs(60))]);
    let mut probe = Box::pin(svc.ready().await.unwrap().call(0));
    // Start it, so the mock is in the middle of the call.
    assert!(futures::poll!(probe.as_mut()).is_pending());
    assert_eq!(mock.in_flight(), 1);
    drop(probe);
    assert_eq!(mock.cancelled(), 1);
    let c = h.counts();
    assert_eq!((c.state, c.probes_in_flight), (State::HalfOpen, 0));
    // The slot is free: the next call is the probe, and it closes.
    step(&mut svc, &mock, Step::ok()).await.unwrap();
    assert_eq!(h.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn ignored_probe_outcome_releases_the_slot() {
    let not_found = |r: &Result<Reply<u64>, MockError>| match r {
        Ok(reply) if reply.status == 404 => Outcome::Ignored,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    };
    let mock = Mock::new();
    let m = mock.handle();
    let mut svc = CircuitBreakerLayer::consecutive_failures(1)
        .open_for(secs(1))
        .classifier(not_found)
        .build()
        .unwrap()
        .layer(mock);
    let h = svc.handle();
    step(&mut svc, &m, Step::err()).await.unwrap_err();
    advance(secs(1)).await;
    step(&mut svc, &m, Step::status(404)).await.unwrap();
    let c = h.counts();
    assert_eq!((c.state, c.probes_in_flight), (State::HalfOpen, 0));
    step(&mut svc, &m, Step::ok()).await.unwrap();
    assert_eq!(h.state(), State::Closed);
    // Closed: ignored outcomes are not counted either.
    for _ in 0..5 {
        step(&mut svc, &m, Step::status(404)).await.unwrap();
    }
    assert_eq!(h.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn late_failure_from_an_earlier_generation_is_not_counted() {
    let (mut svc, mock) = breaker(CircuitBreakerLayer::consecutive_failures(2).open_for(secs(5)));
    let h = svc.handle();
    // A call admitted while closed, finishing much later with a failure.
    mock.push_script([Step::err()]);
    let late = svc.ready().await.unwrap().call(0);
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    assert_eq!(h.state(), State::Open);
    advance(secs(5)).await;
    step(&mut svc, &mock, Step::ok()).await.unwrap();
    assert_eq!(h.state(), State::Closed);
    late.await.unwrap_err();
    assert_eq!(
        h.counts().failures,
        0,
        "the late failure belongs to an old generation"
    );
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    assert_eq!(
        h.state(),
        State::Closed,
        "one failure in this generation, not two"
    );
}

/// Found by the model test: a call admitted while closed, failing after
/// the breaker was forced open, must not show in the counts.
#[tokio::test(start_paused = true)]
async fn late_failure_after_force_open_is_not_counted() {
    let (mut svc, mock) = breaker(CircuitBreakerLayer::consecutive_failures(1));
    let h = svc.handle();
    mock.push_script([Step::err()]);
    let late = svc.ready().await.unwrap().call(0);
    h.force_open();
    late.await.unwrap_err();
    let c = h.counts();
    assert_eq!((c.state, c.failures), (State::ForcedOpen, 0));
}

#[tokio::test(start_paused = true)]
async fn late_failure_is_not_counted_in_a_window_either() {
    let (mut svc, mock) = breaker(
        CircuitBreakerLayer::failure_rate(0.5)
            .window(Window::count(4))
            .min_calls(2)
            .open_for(secs(1)),
    );
    let h = svc.handle();
    mock.push_script([Step::err()]);
    let late = svc.ready().await.unwrap().call(0);
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    assert_eq!(h.state(), State::Open);
    advance(secs(1)).await;
    step(&mut svc, &mock, Step::ok()).await.unwrap();
    step(&mut svc, &mock, Step::ok()).await.unwrap();
    late.await.unwrap_err();
    let c = h.counts();
    assert_eq!((c.state, c.calls, c.failures), (State::Closed, 1, 0));
}

#[tokio::test(start_paused = true)]
async fn late_probe_success_does_not_close_a_reopened_breaker() {
    let (mut svc, mock) = breaker(
        CircuitBreakerLayer::consecutive_failures(1)
            .open_for(secs(1))
            .half_open_probes(2),
    );
    let h = svc.handle();
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    advance(secs(1)).await;
    mock.push_script([Step::ok()]);
    let slow_probe = svc.ready().await.unwrap().call(0);
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    assert_eq!(h.state(), State::Open);
    slow_probe.await.unwrap();
    assert_eq!(h.state(), State::Open);
    advance(secs(1)).await;
    // The next half-open period starts from zero wins: one success is not
    // enough, the stale success did not count towards it.
    step(&mut svc, &mock, Step::ok()).await.unwrap();
    assert_eq!(h.state(), State::HalfOpen);
    step(&mut svc, &mock, Step::ok()).await.unwrap();
    assert_eq!(h.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_probe_is_timed_from_its_call_not_from_its_readiness() {
    // The probe is reserved in `poll_ready`; a caller may hold the ready
    // service for a while before calling. Only the call itself is timed.
    let (mut svc, mock) = breaker(
        CircuitBreakerLayer::failure_rate(0.5)
            .slow_call_rate(0.5, ms(10))
            .window(Window::count(2))
            .min_calls(1)
            .open_for(secs(1)),
    );
    let h = svc.handle();
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    assert_eq!(h.state(), State::Open);
    advance(secs(1)).await;
    let ready = svc.ready().await.unwrap();
    assert_eq!(h.state(), State::HalfOpen);
    advance(secs(1)).await;
    mock.push_script([Step::ok().after(ms(9))]);
    ready.call(0).await.unwrap();
    assert_eq!(h.state(), State::Closed, "a 9 ms probe is not slow");
}

#[tokio::test(start_paused = true)]
async fn a_finished_probe_does_not_give_its_slot_back_again() {
    // Two probes reserved; the first succeeds (one win of two). Its slot is
    // spent by the success: releasing it again when the permit is dropped
    // would let a third probe in while the second is still out.
    let (svc, mock) = breaker(
        CircuitBreakerLayer::consecutive_failures(1)
            .open_for(secs(1))
            .half_open_probes(2),
    );
    let h = svc.handle();
    let (mut a, mut b, mut c) = (svc.clone(), svc.clone(), svc);
    step(&mut a, &mock, Step::err()).await.unwrap_err();
    advance(secs(1)).await;
    a.ready().await.unwrap();
    b.ready().await.unwrap();
    mock.push_script([Step::ok()]);
    a.call(0).await.unwrap();
    assert_eq!(h.state(), State::HalfOpen, "one win of two");
    let third = call(&mut c).await;
    assert!(
        rejected(&third).is_some(),
        "a third probe while the second is out: {third:?}"
    );
    mock.push_script([Step::ok()]);
    b.call(0).await.unwrap();
    assert_eq!(h.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn response_future_debug_shows_its_kind_and_permit() {
    let (mut svc, _mock) = breaker(CircuitBreakerLayer::consecutive_failures(1));
    let future = svc.ready().await.unwrap().call(0);
    let text = format!("{future:?}");
    assert!(
        text.starts_with("ResponseFuture")
            && text.contains("kind: \"called\"")
            && text.contains("Permit { generation: 0, probe: false"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn ok_with_5xx_counts_as_failure() {
    let server_errors = FailureWhenOk::new(|r: &Reply<u64>| r.status >= 500);
    let mock = Mock::new().default_step(Step::status(503));
    let m = mock.handle();
    let mut svc = CircuitBreakerLayer::consecutive_failures(3)
        .classifier(server_errors)
        .build()
        .unwrap()
        .layer(mock);
    let h = svc.handle();
    for _ in 0..2 {
        assert_eq!(call(&mut svc).await.unwrap().status, 503);
    }
    assert_eq!(h.state(), State::Closed);
    call(&mut svc).await.unwrap();
    assert_eq!(h.state(), State::Open);
    assert_eq!(m.calls(), 3);

    // The default classifier sees only `Ok`s there and never trips.
    let (mut plain, m2) = breaker(CircuitBreakerLayer::consecutive_failures(3));
    m2.set_default(Step::status(503));
    for _ in 0..10 {
        call(&mut plain).await.unwrap();
    }
    assert_eq!(plain.handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn every_service_of_one_layer_shares_one_breaker() {
    let layer = CircuitBreakerLayer::consecutive_failures(4)
        .build()
        .unwrap();
    let (m1, m2) = (Mock::new().default_step(Step::err()), Mock::new());
    m2.handle().set_default(Step::err());
    let mut a = layer.layer(m1);
    let mut b = layer.clone().layer(m2);
    let mut a2 = a.clone();
    call(&mut a).await.unwrap_err();
    call(&mut b).await.unwrap_err();
    call(&mut a2).await.unwrap_err();
    assert_eq!(layer.handle().counts().failures, 3);
    call(&mut b).await.unwrap_err();
    for svc in [&mut a, &mut b, &mut a2] {
        assert!(rejected(&call(svc).await).is_some());
    }
}

#[tokio::test(start_paused = true)]
async fn inner_poll_ready_error_passes_through_and_frees_the_probe() {
    let mock = Mock::new();
    let m = mock.handle();
    let mut svc = CircuitBreakerLayer::consecutive_failures(1)
        .open_for(secs(1))
        .build()
        .unwrap()
        .layer(mock);
    let h = svc.handle();
    step(&mut svc, &m, Step::err()).await.unwrap_err();
    advance(secs(1)).await;
    // A clone of the service (same breaker) around a mock whose next
    // poll_ready fails: the error passes through, boxed, and the probe
    // slot poll_ready had taken comes back.
    let mut svc2 = svc.clone();
    *svc2.get_mut() = Mock::new().ready_script([ReadyStep::Err]);
    let err = svc2.ready().await.unwrap_err();
    assert!(err.downcast_ref::<MockError>().is_some());
    let c = h.counts();
    assert_eq!((c.state, c.probes_in_flight), (State::HalfOpen, 0));
    step(&mut svc, &m, Step::ok()).await.unwrap();
    assert_eq!(h.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn half_open_timeout_reopens_a_stuck_half_open() {
    let (mut svc, mock) = breaker(
        CircuitBreakerLayer::consecutive_failures(1)
            .open_for(secs(1))
            .half_open_timeout(secs(10)),
    );
    let h = svc.handle();
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    advance(secs(1)).await;
    mock.push_script([Step::hang()]);
    let stuck = svc.ready().await.unwrap().call(0);
    assert_eq!(rejected(&call(&mut svc).await), Some(secs(10)));
    advance(secs(10) - ns(1)).await;
    assert_eq!(rejected(&call(&mut svc).await), Some(ns(1)));
    advance(ns(1)).await;
    // The timeout has passed: the breaker gives up on the probe, re-opens
    // (attempt 1 of a constant backoff: 1 s) and this call is rejected.
    assert_eq!(rejected(&call(&mut svc).await), Some(secs(1)));
    assert_eq!(h.state(), State::Open);
    drop(stuck);
    assert_eq!(
        h.state(),
        State::Open,
        "the stale probe's drop moves nothing"
    );
    advance(secs(1)).await;
    step(&mut svc, &mock, Step::ok()).await.unwrap();
    assert_eq!(h.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn handle_forces_disables_and_resets() {
    let layer = CircuitBreakerLayer::consecutive_failures(2)
        .open_for(secs(7))
        .build()
        .unwrap();
    let mock = Mock::new();
    let m = mock.handle();
    let mut svc = layer.layer(mock);
    let h = layer.handle();

    h.force_open();
    assert_eq!(svc.handle().state(), State::ForcedOpen);
    assert_eq!(rejected(&call(&mut svc).await), Some(secs(7)));
    advance(secs(3600)).await;
    assert!(
        rejected(&call(&mut svc).await).is_some(),
        "forced: no probe"
    );
    assert_eq!(m.calls(), 0);

    h.disable();
    m.set_default(Step::err());
    for _ in 0..10 {
        call(&mut svc).await.unwrap_err();
    }
    let c = h.counts();
    assert_eq!((c.state, c.failures), (State::Disabled, 0));

    h.reset();
    assert_eq!(h.state(), State::Closed);
    call(&mut svc).await.unwrap_err();
    assert_eq!(h.counts().failures, 1);
    h.reset();
    assert_eq!(h.counts().failures, 0, "reset empties the counts");
    call(&mut svc).await.unwrap_err();
    call(&mut svc).await.unwrap_err();
    assert_eq!(h.state(), State::Open);
    assert_eq!(h.counts().rejections, 2);
    h.reset();
    assert!(call(&mut svc).await.is_err_and(|e| e.is::<MockError>()));
}

#[tokio::test(start_paused = true)]
async fn open_duration_grows_per_retrip_and_resets_on_close() {
    let backoff = Backoff::exponential(secs(1))
        .max_delay(secs(4))
        .build()
        .unwrap();
    let (mut svc, mock) =
        breaker(CircuitBreakerLayer::consecutive_failures(1).open_backoff(backoff));
    let h = svc.handle();
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let wait = rejected(&call(&mut svc).await).unwrap();
        seen.push(wait);
        advance(wait).await;
        step(&mut svc, &mock, Step::err()).await.unwrap_err(); // failed probe
    }
    assert_eq!(seen, [1, 2, 4, 4].map(secs));
    let wait = rejected(&call(&mut svc).await).unwrap();
    advance(wait).await;
    step(&mut svc, &mock, Step::ok()).await.unwrap();
    assert_eq!(h.state(), State::Closed);
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    assert_eq!(
        rejected(&call(&mut svc).await),
        Some(secs(1)),
        "closing starts the backoff over"
    );
}

#[tokio::test(start_paused = true)]
async fn jittered_open_durations_replay_with_a_seed() {
    async fn durations(seed: u64) -> Vec<Duration> {
        let backoff = Backoff::exponential(secs(1))
            .max_delay(secs(30))
            .jitter(Jitter::Full)
            .build()
            .unwrap();
        let (mut svc, mock) = breaker(
            CircuitBreakerLayer::consecutive_failures(1)
                .open_backoff(backoff)
                .seed(seed),
        );
        mock.set_default(Step::err());
        call(&mut svc).await.unwrap_err();
        let mut seen = Vec::new();
        for _ in 0..8 {
            let wait = rejected(&call(&mut svc).await).unwrap();
            seen.push(wait);
            advance(wait).await;
            call(&mut svc).await.unwrap_err();
        }
        seen
    }
    let a = durations(42).await;
    assert_eq!(a, durations(42).await);
    assert_ne!(a, durations(43).await);
    assert!(a.iter().all(|d| *d <= secs(30)));
    // Full jitter on attempt n draws from [0, 2^n s]: the schedule is the
    // backoff's own, drawn in the same order.
    let backoff = Backoff::exponential(secs(1))
        .max_delay(secs(30))
        .jitter(Jitter::Full)
        .build()
        .unwrap();
    let expected: Vec<_> = backoff.schedule(42).take(8).collect();
    assert_eq!(a, expected);
}

#[test]
fn every_config_error() {
    use ConfigError as E;
    let l = CircuitBreakerLayer::failure_rate;
    let err = |b: CircuitBreakerBuilder| b.build().unwrap_err();
    for bad in [0.0, -0.1, 1.01, f64::NAN, f64::INFINITY] {
        assert!(matches!(err(l(bad)), E::FailureRate(_)), "{bad}");
        assert!(
            matches!(
                err(CircuitBreakerLayer::slow_call_rate(bad, ms(1))),
                E::SlowCallRate(_)
            ),
            "{bad}"
        );
        assert!(matches!(err(l(0.5).failure_rate(bad)), E::FailureRate(_)));
    }
    assert!(l(1.0).build().is_ok());
    assert_eq!(
        err(CircuitBreakerLayer::slow_call_rate(0.5, Duration::ZERO)),
        E::ZeroSlowCallThreshold
    );
    assert_eq!(
        err(CircuitBreakerLayer::consecutive_failures(0)),
        E::ZeroConsecutiveFailures
    );
    assert_eq!(err(l(0.5).window(Window::count(0))), E::ZeroWindow);
    assert_eq!(
        err(l(0.5).window(Window::time(Duration::ZERO))),
        E::ZeroWindow
    );
    assert!(matches!(
        err(l(0.5).window(Window::count(u32::MAX))),
        E::WindowTooLarge { .. }
    ));
    for buckets in [0, 1_001] {
        assert!(matches!(
            err(l(0.5).window(Window::time_with_buckets(secs(1), buckets))),
            E::Buckets { .. }
        ));
    }
    assert!(matches!(
        err(l(0.5).window(Window::time_with_buckets(ns(9), 10))),
        E::BucketTooNarrow { .. }
    ));
    assert!(
        l(0.5)
            .window(Window::time_with_buckets(ns(10), 10))
            .build()
            .is_ok()
    );
    // The bounds themselves are allowed: one bucket, and the maximum (1,000).
    for buckets in [1, 1_000] {
        assert!(
            l(0.5)
                .window(Window::time_with_buckets(secs(1), buckets))
                .build()
                .is_ok(),
            "{buckets} buckets"
        );
    }
    assert_eq!(err(l(0.5).min_calls(0)), E::ZeroMinCalls);
    assert_eq!(
        err(l(0.5).window(Window::count(10)).min_calls(11)),
        E::MinCallsAboveWindow {
            min_calls: 11,
            window: 10
        }
    );
    assert!(
        l(0.5)
            .window(Window::count(10))
            .min_calls(10)
            .build()
            .is_ok()
    );
    assert!(
        l(0.5)
            .window(Window::time(secs(1)))
            .min_calls(1_000_000)
            .build()
            .is_ok(),
        "a time window has no size to exceed"
    );
    // A count window smaller than the default min_calls lowers it.
    assert!(l(0.5).window(Window::count(3)).build().is_ok());
    for probes in [0, 1 << 14] {
        assert!(matches!(
            err(l(0.5).half_open_probes(probes)),
            E::Probes { .. }
        ));
    }
    assert!(l(0.5).half_open_probes((1 << 14) - 1).build().is_ok());
    assert_eq!(err(l(0.5).open_for(Duration::ZERO)), E::ZeroOpenDuration);
    let zero_base = Backoff::exponential(Duration::ZERO).build().unwrap();
    assert_eq!(err(l(0.5).open_backoff(zero_base)), E::ZeroOpenDuration);
    assert!(
        l(0.5).open_for(Duration::MAX).build().is_ok(),
        "saturates, no overflow"
    );
    assert_eq!(
        err(l(0.5).half_open_timeout(Duration::ZERO)),
        E::ZeroHalfOpenTimeout
    );
    let c = CircuitBreakerLayer::consecutive_failures;
    for b in [
        c(3).window(Window::count(5)),
        c(3).min_calls(2),
        c(3).failure_rate(0.5),
        c(3).slow_call_rate(0.5, ms(5)),
    ] {
        assert!(matches!(err(b), E::NotForConsecutive { .. }));
    }
    // Errors say what is wrong.
    assert_eq!(
        E::FailureRate(1.5).to_string(),
        "failure rate must be in (0, 1], got 1.5"
    );
}

#[tokio::test(start_paused = true)]
async fn open_for_duration_max_never_overflows() {
    let (mut svc, mock) =
        breaker(CircuitBreakerLayer::consecutive_failures(1).open_for(Duration::MAX));
    step(&mut svc, &mock, Step::err()).await.unwrap_err();
    advance(secs(1_000_000)).await;
    let wait = rejected(&call(&mut svc).await).unwrap();
    assert!(wait > secs(1_000_000_000));
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "without a ready poll_ready")]
async fn call_without_poll_ready_panics() {
    let (mut svc, _mock) = breaker(CircuitBreakerLayer::consecutive_failures(1));
    drop(svc.call(0));
}

/// Classifies the stress tests' replies: 404 is the caller's business.
fn ignore_404(r: &Result<Reply<u64>, MockError>) -> Outcome {
    match r {
        Ok(reply) if reply.status == 404 => Outcome::Ignored,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    }
}

/// Drives 16 clones of `svc`, 400 calls each, on the multi-threaded
/// runtime, dropping every fourth call after 100 µs. Returns how many calls
/// reached the mock and ended (not rejected, not dropped).
async fn hammer<S>(svc: S) -> u64
where
    S: Service<u64, Response = Reply<u64>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut tasks = Vec::new();
    for task in 0..16u64 {
        let mut svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let mut ended = 0u64;
            for i in 0..400u64 {
                let fut = svc.ready().await.expect("poll_ready").call(i);
                if (task + i) % 4 == 0 {
                    let _ = tokio::time::timeout(Duration::from_micros(100), fut).await;
                    continue;
                }
                match fut.await {
                    Err(e) if e.is::<CircuitOpen>() => {
                        // Back off (a millisecond: tokio's timer resolution)
                        // so that probes get to run.
                        tokio::time::sleep(Duration::from_micros(100)).await;
                    }
                    _ => ended += 1,
                }
            }
            ended
        }));
    }
    let deadline = tokio::time::Instant::now() + secs(30);
    let mut ended = 0;
    for t in tasks {
        ended += tokio::time::timeout_at(deadline, t).await.unwrap().unwrap();
    }
    ended
}

/// Many clones on a multi-threaded runtime fight over `k` half-open slots.
/// Every probe's outcome is ignored (or its future dropped), so the breaker
/// stays in one half-open generation and every inner call is a probe of
/// it: the mock's peak concurrency is the most probes ever admitted at
/// once. Real time (paused time is single-threaded), bounded: ~1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stress_half_open_never_admits_more_than_k() {
    const K: u64 = 3;
    let mock = Mock::new().default_step(Step::status(404).after(Duration::from_micros(300)));
    let m = mock.handle();
    let layer = CircuitBreakerLayer::consecutive_failures(1)
        .open_for(Duration::from_micros(200))
        .half_open_probes(K as u32)
        .classifier(ignore_404)
        .build()
        .unwrap();
    let h = layer.handle();
    let mut svc = layer.layer(mock);
    // Trip it first: closed calls are not limited, probes are.
    m.push_script([Step::err()]);
    call(&mut svc).await.unwrap_err();
    assert_eq!(m.peak_in_flight(), 1);
    let ended = hammer(svc).await;
    println!(
        "probes: {} calls, {ended} ended, {} cancelled, peak {}, rejections {}",
        m.calls(),
        m.cancelled(),
        m.peak_in_flight(),
        h.counts().rejections
    );
    assert!(ended > 100, "probes did run: {ended}");
    assert!(m.cancelled() > 0, "some probes were dropped mid-call");
    let peak = m.peak_in_flight();
    assert!(peak <= K, "peak {peak} probes in flight, k = {K}");
    assert!(
        peak >= 2,
        "no contention at all (peak {peak}): the test proves nothing"
    );
    let c = h.counts();
    assert_eq!(
        (c.state, c.probes_in_flight),
        (State::HalfOpen, 0),
        "every slot came back"
    );
    assert_eq!(m.in_flight(), 0);
}

/// The same fight with transitions: probes fail, succeed or are dropped,
/// so the breaker keeps re-opening and closing under contention. A probe
/// of an old generation may still be running when the next half-open
/// period admits its own `k`, so the bound checked here is on the state:
/// no slot leaks or is released twice (a debug assertion in the breaker
/// catches the latter), and the breaker ends consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stress_transitions_under_contention_stay_consistent() {
    let mock = Mock::new().outcome_fn(|n, _| {
        let latency = Duration::from_micros(300);
        match n % 7 {
            0 | 3 => Step::err().after(latency),
            _ => Step::ok().after(latency),
        }
    });
    let m = mock.handle();
    let layer = CircuitBreakerLayer::consecutive_failures(2)
        .open_for(Duration::from_micros(200))
        .half_open_probes(3)
        .build()
        .unwrap();
    let h = layer.handle();
    let ended = hammer(layer.layer(mock)).await;
    assert!(ended > 100);
    let c = h.counts();
    assert_eq!(c.probes_in_flight, 0, "every slot came back: {c:?}");
    assert_eq!(m.in_flight(), 0);
    assert!(c.rejections > 0, "it did trip: {c:?}");
}

/// Captures formatted `tracing` output.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test(start_paused = true)]
async fn every_transition_emits_a_tracing_event() {
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_ansi(false)
        .without_time()
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let (mut svc, mock) = breaker(
        CircuitBreakerLayer::consecutive_failures(1)
            .open_for(secs(1))
            .name("payments"),
    );
    let h = svc.handle();
    step(&mut svc, &mock, Step::err()).await.unwrap_err(); // closed > open
    advance(secs(1)).await;
    step(&mut svc, &mock, Step::ok()).await.unwrap(); // > half-open > closed
    for _ in 0..10 {
        step(&mut svc, &mock, Step::ok()).await.unwrap(); // no events
    }
    h.force_open();
    h.disable();
    h.reset();

    let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let expected = [
        ("WARN", "from=closed to=open"),
        ("INFO", "from=open to=half-open"),
        ("INFO", "from=half-open to=closed"),
        ("WARN", "from=closed to=forced-open"),
        ("INFO", "from=forced-open to=disabled"),
        ("INFO", "from=disabled to=closed"),
    ];
    assert_eq!(lines.len(), expected.len(), "{text}");
    for (line, (level, transition)) in lines.iter().zip(expected) {
        assert!(line.contains(level) && line.contains(transition), "{line}");
        assert!(line.contains("breaker=\"payments\""), "{line}");
    }
    assert!(lines[0].contains("open_for=1s"), "{}", lines[0]);
}

/// "The open duration starts again from its base at the next trip" holds
/// for decorrelated jitter too: the first open period after a close is
/// drawn from `[base, 3 * base]`, not from the last (grown) period.
#[tokio::test(start_paused = true)]
async fn decorrelated_open_duration_starts_over_after_close() {
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
    let h = svc.handle();
    for cycle in 0..5 {
        step(&mut svc, &mock, Step::err()).await.unwrap_err();
        let first = rejected(&call(&mut svc).await).unwrap();
        assert!(
            first >= secs(1) && first <= secs(3),
            "cycle {cycle}: first open period {first:?} not in [1s, 3s]"
        );
        advance(first).await;
        // Grow the open period with failed probes.
        for _ in 0..8 {
            step(&mut svc, &mock, Step::err()).await.unwrap_err();
            let wait = rejected(&call(&mut svc).await).unwrap();
            advance(wait).await;
        }
        step(&mut svc, &mock, Step::ok()).await.unwrap();
        assert_eq!(h.state(), State::Closed);
    }
}

/// "Trips at the threshold" holds for rates whose product with the call
/// count rounds up in floating point: 0.55 * 100 is 55.00000000000001, so a
/// `failures >= rate * calls` test never trips on 55 failures of 100.
#[tokio::test(start_paused = true)]
async fn rates_trip_exactly_at_thresholds_that_round_up() {
    for (rate, size, threshold) in [(0.55, 100, 55), (0.07, 100, 7), (0.28, 25, 7)] {
        let (mut svc, mock) = breaker(
            CircuitBreakerLayer::failure_rate(rate)
                .window(Window::count(size))
                .min_calls(u64::from(size)),
        );
        let h = svc.handle();
        for _ in 0..size - threshold {
            call(&mut svc).await.unwrap();
        }
        mock.set_default(Step::err());
        for _ in 0..threshold - 1 {
            call(&mut svc).await.unwrap_err();
        }
        assert_eq!(h.state(), State::Closed, "{rate}: one failure short");
        call(&mut svc).await.unwrap_err();
        assert_eq!(h.state(), State::Open, "{rate}: {threshold} of {size}");
    }
    // The same for the slow-call rate.
    let (mut svc, mock) = breaker(
        CircuitBreakerLayer::slow_call_rate(0.55, ms(10))
            .window(Window::count(100))
            .min_calls(100),
    );
    let h = svc.handle();
    for _ in 0..45 {
        call(&mut svc).await.unwrap();
    }
    mock.set_default(Step::ok().after(ms(10)));
    for _ in 0..54 {
        call(&mut svc).await.unwrap();
    }
    assert_eq!(h.state(), State::Closed, "one slow call short");
    call(&mut svc).await.unwrap();
    assert_eq!(h.state(), State::Open, "55 slow calls of 100");
}

#[tokio::test(start_paused = true)]
async fn a_service_made_ready_before_a_trip_is_rejected_after_it() {
    // A balancer or buffer keeps services ready for long: readiness granted
    // while closed must not carry calls into an open breaker.
    let layer = CircuitBreakerLayer::consecutive_failures(2)
        .open_for(secs(5))
        .build()
        .unwrap();
    let mock = Mock::new().default_step(Step::err());
    let m = mock.handle();
    let mut parked = layer.layer(mock.clone());
    let mut busy = layer.layer(mock);
    parked.ready().await.unwrap();

    call(&mut busy).await.unwrap_err();
    call(&mut busy).await.unwrap_err();
    assert_eq!(layer.handle().state(), State::Open);

    let res = parked.call(0).await;
    assert_eq!(rejected(&res), Some(secs(5)));
    assert_eq!(m.calls(), 2, "the parked call never reached the upstream");
    assert_eq!(layer.handle().counts().rejections, 1);

    // The same holds for a forced-open breaker and a disabled one.
    layer.handle().reset();
    parked.ready().await.unwrap();
    layer.handle().force_open();
    assert!(rejected(&parked.call(0).await).is_some());
    layer.handle().disable();
    let mut disabled = layer.layer(Mock::new());
    disabled.ready().await.unwrap();
    layer.handle().reset();
    assert!(
        disabled.call(0).await.is_ok(),
        "closed again: the call goes through"
    );
}
