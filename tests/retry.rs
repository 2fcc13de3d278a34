//! RetryLayer through the mock service, in paused time.

mod support;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::backoff::{Backoff, Jitter};
use palisade::classify::{FailureWhenOk, Outcome};
use palisade::retry::{InvalidRetry, RetryBudget};
use palisade::{BoxError, RetryLayer};
use support::{Mock, MockError, ReadyStep, Reply, Step, ms};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

type Res = Result<Reply<u64>, MockError>;

/// Gaps between consecutive calls of the mock.
fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

/// tokio's timer fires on whole milliseconds: a sleep of `d` started on a
/// millisecond boundary wakes `d` rounded up to the next millisecond later.
fn tokio_rounded(d: Duration) -> Duration {
    let ms = d.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(ms as u64)
}

/// Polls a future once with a no-op waker.
fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(std::task::Waker::noop()))
}

#[tokio::test(start_paused = true)]
async fn retries_until_success() {
    let mock = Mock::new().script([Step::err(), Step::err()]);
    let h = mock.handle();
    let layer = RetryLayer::exponential(ms(10))
        .max_attempts(4)
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    let reply = svc.ready().await.unwrap().call(7).await.unwrap();
    assert_eq!((reply.call, reply.request), (2, 7));
    assert_eq!(h.calls(), 3);
    assert_eq!(layer.handle().retries(), 2);
    assert_eq!(gaps(&h.call_times()), [ms(10), ms(20)]);
}

#[tokio::test(start_paused = true)]
async fn gives_up_after_max_attempts_with_last_error() {
    let mock = Mock::new().default_step(Step::err());
    let h = mock.handle();
    let layer = RetryLayer::exponential(ms(10)).build().unwrap();
    let mut svc = layer.layer(mock);
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(err, MockError { call: 2 }, "the last attempt's error");
    assert_eq!(h.calls(), 3, "default: 3 attempts");
    assert_eq!(layer.handle().exhausted(), 1);
}

#[tokio::test(start_paused = true)]
async fn one_attempt_means_no_retry() {
    let mock = Mock::new().default_step(Step::err());
    let h = mock.handle();
    let mut svc = RetryLayer::exponential(ms(10))
        .max_attempts(1)
        .build()
        .unwrap()
        .layer(mock);
    assert!(svc.ready().await.unwrap().call(1).await.is_err());
    assert_eq!(h.calls(), 1);
}

/// With seed `s`, a lone request waits exactly `backoff.schedule(s)`, for
/// every kind of jitter.
#[tokio::test(start_paused = true)]
async fn exact_schedule_per_jitter_kind() {
    for jitter in [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
        Jitter::Additive(ms(7)),
    ] {
        for seed in [0, 1, 0xDEAD_BEEF] {
            let mock = Mock::new().default_step(Step::err());
            let h = mock.handle();
            let layer = RetryLayer::exponential(ms(10))
                .factor(3.0)
                .max_delay(ms(2_000))
                .jitter(jitter)
                .max_attempts(8)
                .seed(seed)
                .build()
                .unwrap();
            let expected: Vec<_> = layer
                .backoff()
                .schedule(seed)
                .take(7)
                .map(tokio_rounded)
                .collect();
            let mut svc = layer.layer(mock);
            assert!(svc.ready().await.unwrap().call(0).await.is_err());
            assert_eq!(gaps(&h.call_times()), expected, "{jitter:?} seed {seed}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_replays_and_another_differs() {
    async fn delays(seed: u64) -> Vec<Duration> {
        let mock = Mock::new().default_step(Step::err());
        let h = mock.handle();
        let mut svc = RetryLayer::exponential(ms(100))
            .jitter(Jitter::Full)
            .max_attempts(6)
            .seed(seed)
            .build()
            .unwrap()
            .layer(mock);
        let _ = svc.ready().await.unwrap().call(0).await;
        gaps(&h.call_times())
    }
    assert_eq!(delays(5).await, delays(5).await);
    assert_ne!(delays(5).await, delays(6).await);
}

#[tokio::test(start_paused = true)]
async fn default_classifier_does_not_retry_ok_503() {
    let mock = Mock::new().script([Step::status(503)]);
    let h = mock.handle();
    let mut svc = RetryLayer::exponential(ms(10)).build().unwrap().layer(mock);
    let reply = svc.ready().await.unwrap().call(0).await.unwrap();
    assert_eq!(reply.status, 503);
    assert_eq!(h.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn failure_when_ok_retries_503() {
    let mock = Mock::new().script([Step::status(503), Step::status(502)]);
    let h = mock.handle();
    let mut svc = RetryLayer::exponential(ms(10))
        .classifier(FailureWhenOk::new(|r: &Reply<u64>| r.status >= 500))
        .build()
        .unwrap()
        .layer(mock);
    let reply = svc.ready().await.unwrap().call(0).await.unwrap();
    assert_eq!((reply.status, h.calls()), (200, 3));
}

#[tokio::test(start_paused = true)]
async fn ignored_outcomes_and_retry_if() {
    // A classifier that ignores errors: nothing is retried.
    let mock = Mock::new().default_step(Step::err());
    let h = mock.handle();
    let mut svc = RetryLayer::exponential(ms(10))
        .classifier(|r: &Res| match r {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Ignored,
        })
        .build()
        .unwrap()
        .layer(mock);
    assert!(svc.ready().await.unwrap().call(0).await.is_err());
    assert_eq!(h.calls(), 1);

    // retry_if: only 429 is retried, 500 is not.
    let mock = Mock::new().script([Step::status(429), Step::status(500)]);
    let h = mock.handle();
    let mut svc = RetryLayer::exponential(ms(10))
        .max_attempts(5)
        .retry_if(|r: &Res| matches!(r, Ok(reply) if reply.status == 429))
        .build()
        .unwrap()
        .layer(mock);
    let reply = svc.ready().await.unwrap().call(0).await.unwrap();
    assert_eq!((reply.status, h.calls()), (500, 2));
}

/// Elapsed time is the clock's, calls included: with 100 ms calls, a
/// 400 ms limit allows 3 attempts (ending at 450 ms), although the sleeps
/// alone (50 + 100 + 200 = 350 ms) would fit a fourth.
#[tokio::test(start_paused = true)]
async fn max_elapsed_counts_call_time() {
    let mock = Mock::new().default_step(Step::err()).latency(ms(100));
    let h = mock.handle();
    let layer = RetryLayer::exponential(ms(50))
        .max_attempts(10)
        .max_elapsed(ms(400))
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    let start = Instant::now();
    assert!(svc.ready().await.unwrap().call(0).await.is_err());
    assert_eq!(h.calls(), 3);
    assert_eq!(start.elapsed(), ms(450));
    assert_eq!(layer.handle().exhausted(), 1);
    let starts: Vec<_> = h.call_times().iter().map(|t| *t - start).collect();
    assert_eq!(starts, [ms(0), ms(150), ms(350)]);
}

#[tokio::test(start_paused = true)]
async fn retry_ending_exactly_at_the_limit_is_attempted() {
    let mock = Mock::new().default_step(Step::err());
    let h = mock.handle();
    let mut svc = RetryLayer::exponential(ms(100))
        .factor(1.0)
        .max_attempts(10)
        .max_elapsed(ms(300))
        .build()
        .unwrap()
        .layer(mock);
    let _ = svc.ready().await.unwrap().call(0).await;
    // Retries at 100, 200, 300 ms; the next would end at 400.
    assert_eq!(h.calls(), 4);
}

/// The budget is shared by every service a layer makes, and recovers once
/// the TTL passes.
#[tokio::test(start_paused = true)]
async fn budget_exhaustion_and_recovery_across_clones() {
    let mock = Mock::new().default_step(Step::err());
    let h = mock.handle();
    let layer = RetryLayer::with_backoff(Backoff::constant(Duration::ZERO))
        .max_attempts(5)
        // A reserve of 3 retries per second-long TTL, no ratio.
        .budget(
            RetryBudget::ratio(0.0)
                .min_per_sec(3)
                .ttl(Duration::from_secs(1)),
        )
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut a = layer.layer(mock.clone());
    let mut b = a.clone();
    let mut c = layer.layer(mock);

    // `a` spends the whole reserve (1 call + 3 retries, then denied).
    let _ = a.ready().await.unwrap().call(0).await;
    assert_eq!(h.calls(), 4);
    assert_eq!(handle.retries(), 3);
    assert_eq!(handle.budget_denied(), 1);
    assert_eq!(handle.budget_available(), Some(0));
    // Its clone and a sibling service find it empty.
    let _ = b.ready().await.unwrap().call(1).await;
    let _ = c.ready().await.unwrap().call(2).await;
    assert_eq!(h.calls(), 6, "one attempt each, no retry");
    assert_eq!(handle.budget_denied(), 3);

    // After the TTL the reserve is back, for any of them.
    tokio::time::advance(Duration::from_millis(1_001)).await;
    assert_eq!(handle.budget_available(), Some(3));
    let _ = c.ready().await.unwrap().call(3).await;
    assert_eq!(h.calls(), 10);
    assert_eq!(handle.retries(), 6);
}

/// With frozen time, 10,000 rounds of one request and one retry wanted:
/// retries granted = ratio * 10,000 + the floor's reserve, within 1.
#[tokio::test(start_paused = true)]
async fn budget_allows_ratio_of_requests_plus_reserve() {
    for (ratio, min_per_sec) in [(0.1, 0), (0.2, 10), (1.0 / 3.0, 1), (0.7, 2), (0.0, 5)] {
        let mock = Mock::new().default_step(Step::err());
        let layer = RetryLayer::with_backoff(Backoff::constant(Duration::ZERO))
            .max_attempts(2)
            .budget(RetryBudget::ratio(ratio).min_per_sec(min_per_sec))
            .build()
            .unwrap();
        let mut a = layer.layer(mock.clone());
        let mut b = a.clone();
        let start = Instant::now();
        for round in 0..10_000u64 {
            let svc = if round % 2 == 0 { &mut a } else { &mut b };
            let _ = svc.ready().await.unwrap().call(round).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "time stayed frozen");
        let reserve = f64::from(min_per_sec) * 10.0; // default TTL 10 s
        let expected = ratio * 10_000.0 + reserve;
        let granted = layer.handle().retries() as f64;
        assert!(
            (granted - expected).abs() <= 1.0,
            "ratio {ratio}: granted {granted}, expected {expected}"
        );
        assert_eq!(
            layer.handle().budget_denied() + layer.handle().retries(),
            10_000
        );
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_hint_is_honoured() {
    let mock = Mock::new().script([Step::status(503)]);
    let h = mock.handle();
    let mut svc = RetryLayer::exponential(ms(10))
        .classifier(FailureWhenOk::new(|r: &Reply<u64>| r.status >= 500))
        .retry_after(|r: &Res| match r {
            Ok(reply) if reply.status == 503 => Some(Duration::from_secs(3)),
            _ => None,
        })
        .max_retry_after(Duration::from_secs(5))
        .build()
        .unwrap()
        .layer(mock);
    let reply = svc.ready().await.unwrap().call(0).await.unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(gaps(&h.call_times()), [Duration::from_secs(3)]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_never_shortens_the_backoff() {
    let mock = Mock::new().script([Step::err()]);
    let h = mock.handle();
    let mut svc = RetryLayer::exponential(ms(500))
        .retry_after(|_: &Res| Some(ms(1)))
        .build()
        .unwrap()
        .layer(mock);
    svc.ready().await.unwrap().call(0).await.unwrap();
    assert_eq!(gaps(&h.call_times()), [ms(500)]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_over_the_cap_is_not_retried() {
    let mock = Mock::new().script([Step::err()]);
    let h = mock.handle();
    let layer = RetryLayer::exponential(ms(10))
        .max_delay(Duration::from_secs(2))
        .retry_after(|_: &Res| Some(Duration::from_secs(10)))
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    let start = Instant::now();
    assert!(svc.ready().await.unwrap().call(0).await.is_err());
    assert_eq!(h.calls(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO, "returned at once");
    assert_eq!(layer.handle().hint_refused(), 1);
}

#[cfg(feature = "http")]
mod http_hints {
    use super::*;
    use palisade::classify::ServerErrorsAsFailures;
    use palisade::retry::{HttpRetryAfter, parse_retry_after};
    use proptest::prelude::*;

    /// The mock, answering `http::Response`s with a `Retry-After` header.
    fn http_mock(
        mock: Mock,
        retry_after: &'static str,
    ) -> impl Service<u64, Response = http::Response<()>, Error = MockError> + Clone {
        mock.map_response(move |reply| {
            http::Response::builder()
                .status(reply.status)
                .header(http::header::RETRY_AFTER, retry_after)
                .body(())
                .unwrap()
        })
    }

    async fn run(retry_after: &'static str) -> (u16, Vec<Duration>) {
        let mock = Mock::new().script([Step::status(503)]);
        let h = mock.handle();
        let mut svc = RetryLayer::exponential(ms(10))
            .classifier(ServerErrorsAsFailures)
            .retry_after(HttpRetryAfter)
            .max_retry_after(Duration::from_secs(60))
            .build()
            .unwrap()
            .layer(http_mock(mock, retry_after));
        let res = svc.ready().await.unwrap().call(0).await.unwrap();
        (res.status().as_u16(), gaps(&h.call_times()))
    }

    #[tokio::test(start_paused = true)]
    async fn header_seconds_honoured_and_capped() {
        assert_eq!(run("2").await, (200, vec![Duration::from_secs(2)]));
        // Over the 60 s cap, or absurd: not retried.
        assert_eq!(run("61").await, (503, vec![]));
        assert_eq!(run("99999999999999999999999").await, (503, vec![]));
        // A date long past: retry after the backoff alone.
        assert_eq!(
            run("Thu, 01 Jan 1970 00:00:00 GMT").await,
            (200, vec![ms(10)])
        );
        // Garbage is no hint.
        assert_eq!(run("soon, I promise").await, (200, vec![ms(10)]));
        assert_eq!(run("-5").await, (200, vec![ms(10)]));
    }

    proptest! {
        #[test]
        fn hostile_header_values_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(value) = http::HeaderValue::from_bytes(&bytes) {
                let _ = parse_retry_after(&value, std::time::SystemTime::now());
            }
        }
    }
}

/// A request type that is not `Clone`.
#[derive(Debug, PartialEq)]
struct NoClone(u64);

#[tokio::test(start_paused = true)]
async fn non_clonable_request_is_sent_once() {
    let mock = Mock::<NoClone>::new().default_step(Step::err());
    let h = mock.handle();
    let layer = RetryLayer::exponential(ms(10))
        .clone_request(|_: &NoClone| None)
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    assert!(svc.ready().await.unwrap().call(NoClone(1)).await.is_err());
    assert_eq!(h.calls(), 1);
    assert_eq!(layer.handle().not_clonable(), 1);
}

#[tokio::test(start_paused = true)]
async fn clone_hook_may_decline_some_requests() {
    let mock = Mock::<NoClone>::new().script([Step::err()]);
    let h = mock.handle();
    let mut svc = RetryLayer::exponential(ms(10))
        .clone_request(|r: &NoClone| (r.0 < 10).then_some(NoClone(r.0)))
        .build()
        .unwrap()
        .layer(mock);
    // Small requests are copied and retried...
    let reply = svc.ready().await.unwrap().call(NoClone(3)).await.unwrap();
    assert_eq!((reply.request, h.calls()), (NoClone(3), 2));
    // ...large ones are not.
    let mock2 = Mock::<NoClone>::new().script([Step::err()]);
    let h2 = mock2.handle();
    let mut svc2 = RetryLayer::exponential(ms(10))
        .clone_request(|r: &NoClone| (r.0 < 10).then_some(NoClone(r.0)))
        .build()
        .unwrap()
        .layer(mock2);
    assert!(svc2.ready().await.unwrap().call(NoClone(99)).await.is_err());
    assert_eq!(h2.calls(), 1);
}

/// A request is copied before each attempt that may be followed by another,
/// and no more.
#[tokio::test(start_paused = true)]
async fn requests_are_cloned_only_when_a_retry_may_follow() {
    async fn clones(attempts: u32, steps: &[Step]) -> u32 {
        let count = Arc::new(AtomicU32::new(0));
        let mock = Mock::new().script(steps.iter().copied());
        let counter = count.clone();
        let mut svc = RetryLayer::exponential(ms(1))
            .max_attempts(attempts)
            .clone_request(move |r: &u64| {
                counter.fetch_add(1, SeqCst);
                Some(*r)
            })
            .build()
            .unwrap()
            .layer(mock);
        let _ = svc.ready().await.unwrap().call(0).await;
        count.load(SeqCst)
    }
    assert_eq!(clones(1, &[Step::err()]).await, 0, "no retry possible");
    assert_eq!(clones(3, &[]).await, 1, "success: one copy, unused");
    assert_eq!(
        clones(3, &[Step::err(), Step::err(), Step::err()]).await,
        2,
        "the last attempt is not copied"
    );
}

#[tokio::test(start_paused = true)]
async fn cancelled_during_sleep() {
    let mock = Mock::new().script([Step::err()]);
    let h = mock.handle();
    let layer = RetryLayer::exponential(Duration::from_secs(1))
        .budget(RetryBudget::ratio(0.0).min_per_sec(1))
        .build()
        .unwrap();
    let mut svc = layer.layer(mock);
    let before = layer.handle().budget_available().unwrap();
    {
        let mut fut = pin!(svc.ready().await.unwrap().call(0));
        assert!(poll_once(fut.as_mut()).is_pending(), "sleeping");
        assert_eq!((h.calls(), h.in_flight()), (1, 0));
        assert_eq!(layer.handle().budget_available(), Some(before - 1));
    }
    // Dropped during the sleep: nothing more is sent, the budget is whole.
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!((h.calls(), h.in_flight(), h.cancelled()), (1, 0, 0));
    assert_eq!(layer.handle().budget_available(), Some(before));
    assert_eq!(layer.handle().retries(), 0);
}

#[tokio::test(start_paused = true)]
async fn cancelled_during_call() {
    let mock = Mock::new().script([Step::err(), Step::hang()]);
    let h = mock.handle();
    let layer = RetryLayer::exponential(ms(10)).build().unwrap();
    let mut svc = layer.layer(mock);
    let fut = svc.ready().await.unwrap().call(0);
    let outcome = tokio::time::timeout(Duration::from_secs(1), fut).await;
    assert!(outcome.is_err(), "the retry hangs");
    assert_eq!(h.calls(), 2);
    assert_eq!(h.cancelled(), 1, "the hanging retry was cancelled");
    assert_eq!(h.in_flight(), 0);
}

/// Each retry waits for the inner service's readiness (the mock panics on a
/// `call` without it).
#[tokio::test(start_paused = true)]
async fn retry_waits_for_readiness() {
    let mock = Mock::new()
        .capacity(1)
        .script([Step::err(), Step::ok().after(ms(100))]);
    let h = mock.handle();
    let layer = RetryLayer::exponential(ms(10)).build().unwrap();
    let mut a = layer.layer(mock.clone());
    let mut b = layer.layer(mock);
    let start = Instant::now();
    let (ra, rb) = tokio::join!(async { a.ready().await.unwrap().call(1).await }, async {
        b.ready().await.unwrap().call(2).await
    },);
    assert_eq!(ra.unwrap().call, 2, "a's retry went through after b's call");
    assert_eq!(rb.unwrap().call, 1);
    assert_eq!(h.peak_in_flight(), 1);
    assert_eq!(h.call_times()[2] - start, ms(100), "a waited for capacity");
}

#[tokio::test(start_paused = true)]
async fn poll_ready_error_on_retry_is_returned_and_budget_refunded() {
    let mock = Mock::new()
        .script([Step::err()])
        .ready_script([ReadyStep::Ready, ReadyStep::Err]);
    let h = mock.handle();
    let layer = RetryLayer::exponential(ms(10))
        .budget(RetryBudget::ratio(0.0).min_per_sec(1))
        .build()
        .unwrap();
    let available = layer.handle().budget_available();
    let mut svc = layer.layer(mock);
    let err = svc.ready().await.unwrap().call(0).await.unwrap_err();
    assert_eq!(err, MockError { call: u64::MAX }, "poll_ready's error");
    assert_eq!(h.calls(), 1);
    assert_eq!(layer.handle().budget_available(), available);
}

#[test]
fn invalid_settings_are_errors_not_panics() {
    let base = || RetryLayer::exponential(ms(10));
    assert!(matches!(
        base().max_attempts(0).build(),
        Err(InvalidRetry::ZeroAttempts)
    ));
    assert!(matches!(
        base().max_elapsed(Duration::ZERO).build(),
        Err(InvalidRetry::ZeroElapsed)
    ));
    assert!(matches!(
        base().factor(0.5).build(),
        Err(InvalidRetry::Backoff(_))
    ));
    assert!(base().factor(f64::NAN).build().is_err());
    assert!(base().factor(f64::INFINITY).build().is_err());
    assert!(base().max_delay(ms(5)).build().is_err());
    for ratio in [-0.1, 1.01, f64::NAN, f64::INFINITY] {
        assert!(matches!(
            base().budget(RetryBudget::ratio(ratio)).build(),
            Err(InvalidRetry::BudgetRatio(_))
        ));
    }
    assert!(matches!(
        base()
            .budget(RetryBudget::ratio(0.2).ttl(Duration::ZERO))
            .build(),
        Err(InvalidRetry::BudgetTtl(_))
    ));
    // The errors say what is wrong.
    let err: BoxError = base().max_attempts(0).build().unwrap_err().into();
    assert!(err.to_string().contains("max_attempts"));
}

/// twilight PR #1356: `Instant + Duration` overflowing at large delays.
/// Every limit at its maximum (delays of 584 years from the first retry,
/// hints of `Duration::MAX`, no elapsed limit that fits an `Instant`):
/// the request is retried and answered, never a panic.
#[tokio::test(start_paused = true)]
async fn maximal_delays_and_limits_never_overflow() {
    let mock = Mock::new().script([Step::err(), Step::err()]);
    let h = mock.handle();
    let mut svc = RetryLayer::exponential(Duration::from_secs(1))
        .factor(1e300)
        .max_delay(Duration::MAX)
        .max_attempts(u32::MAX)
        .max_elapsed(Duration::MAX)
        .max_retry_after(Duration::MAX)
        .retry_after(|_: &Res| Some(Duration::MAX))
        .seed(1)
        .build()
        .unwrap()
        .layer(mock);
    let reply = svc.ready().await.unwrap().call(0).await.unwrap();
    assert_eq!(reply.request, 0);
    assert_eq!(h.calls(), 3);
    let gaps = gaps(&h.call_times());
    assert!(
        gaps.iter()
            .all(|g| *g >= Duration::from_secs(365 * 24 * 3600)),
        "{gaps:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn response_future_debug_shows_attempts_and_deadline() {
    let mut svc = RetryLayer::exponential(ms(10))
        .max_attempts(3)
        .max_elapsed(ms(500))
        .build()
        .unwrap()
        .layer(Mock::new());
    let future = svc.ready().await.unwrap().call(0);
    let text = format!("{future:?}");
    assert!(
        text.starts_with("ResponseFuture") && text.contains("attempts: 1, deadline: Some("),
        "{text}"
    );
}
