//! palisade's own rejections (an open breaker, a rate limit) stacked under
//! a breaker or a retry, through the mock in paused time: they never count
//! as upstream failures, and retry waits out their `retry_after` or returns
//! them at once.

mod support;

use std::time::Duration;

use palisade::circuit_breaker::{CircuitOpen, State};
use palisade::classify::{Classify, ErrorsAsFailures, FailureWhenOk, Outcome};
use palisade::rate_limit::{InsufficientCapacity, RateLimited};
use palisade::retry::RetryBudget;
use palisade::{BoxError, CircuitBreakerLayer, RateLimitLayer, RetryLayer};
use support::{Mock, Step, ms};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

#[tokio::test(start_paused = true)]
async fn a_limiters_refusals_never_open_the_breaker_above_it() {
    let mock = Mock::<u64>::new();
    let upstream = mock.handle();
    let breaker = CircuitBreakerLayer::consecutive_failures(3)
        .open_for(Duration::from_secs(30))
        .build()
        .unwrap();
    let limiter = RateLimitLayer::token_bucket(1, Duration::from_secs(1))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(breaker.clone())
        .layer(limiter.clone())
        .service(mock);

    // One greedy client: 10 requests at once, 9 refused by the limiter.
    let mut refused = 0;
    for i in 0..10 {
        match svc.clone().oneshot(i).await {
            Ok(_) => {}
            Err(e) => {
                assert!(e.is::<RateLimited>(), "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 9);
    assert_eq!(limiter.handle().rejected(), 9);
    let counts = breaker.handle().counts();
    assert_eq!(counts.state, State::Closed, "nine refusals did not trip it");
    assert_eq!(counts.rejections, 0);
    // Another client, a second later, is served.
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(svc.clone().oneshot(99).await.is_ok());
    assert_eq!(upstream.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn built_in_classifiers_ignore_local_rejections_and_count_the_rest() {
    let open: BoxError = Box::new(CircuitOpen { retry_after: ms(5) });
    let upstream: BoxError = "connection refused".into();
    assert_eq!(
        ErrorsAsFailures.classify(&Err::<(), _>(open)),
        Outcome::Ignored
    );
    assert_eq!(
        ErrorsAsFailures.classify(&Err::<(), _>(upstream)),
        Outcome::Failure
    );

    // A refusal as a real limiter makes it.
    let mut limiter = RateLimitLayer::token_bucket(1, Duration::from_secs(3600))
        .build()
        .unwrap()
        .layer(Mock::<u64>::new());
    limiter.ready().await.unwrap().call(1).await.unwrap();
    let limited = limiter
        .ready()
        .await
        .unwrap()
        .call(2)
        .await
        .map(|r| r.status);
    let ok_when = FailureWhenOk::new(|status: &u16| *status >= 500);
    assert_eq!(ok_when.classify(&limited), Outcome::Ignored);
    assert_eq!(
        ok_when.classify(&Ok::<u16, BoxError>(503)),
        Outcome::Failure
    );
}

/// Retry above a breaker: the upstream fails once and trips the breaker; the
/// backoff retry meets the open breaker, waits out exactly its
/// `retry_after`, and the probe succeeds. Only the backoff retry spends
/// budget.
#[tokio::test(start_paused = true)]
async fn retry_waits_out_an_open_breaker_then_probes() {
    let mock = Mock::<u64>::new().script([Step::err(), Step::ok()]);
    let upstream = mock.handle();
    let breaker = CircuitBreakerLayer::consecutive_failures(1)
        .open_for(ms(50))
        .build()
        .unwrap();
    let retry = RetryLayer::exponential(ms(10))
        .max_attempts(3)
        .budget(RetryBudget::ratio(1.0).min_per_sec(1))
        .build()
        .unwrap();
    let budget_before = retry.handle().budget_available().unwrap();
    let svc = ServiceBuilder::new()
        .layer(retry.clone())
        .layer(breaker.clone())
        .service(mock);

    let start = Instant::now();
    let reply = svc.oneshot(1).await.unwrap();
    assert_eq!(reply.call, 1, "the probe succeeded");
    let times = upstream.call_times();
    assert_eq!(
        times.len(),
        2,
        "the open breaker's refusal never reached the upstream"
    );
    // The failure at 0, a backoff of 10 ms (refused: 40 ms left open), then
    // exactly those 40 ms: the probe at 50 ms.
    assert_eq!(times[1] - start, ms(50));
    let h = retry.handle();
    assert_eq!(h.rejections_waited(), 1);
    assert_eq!(h.retries(), 2, "the backoff retry and the wait-out retry");
    assert_eq!(h.rejections_returned(), 0);
    // One request deposited (ratio 1: +1), one backoff retry withdrawn.
    assert_eq!(h.budget_available().unwrap(), budget_before + 1 - 1);
    assert_eq!(breaker.handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_wait_above_max_retry_after_is_returned_at_once() {
    let mock = Mock::<u64>::new();
    let upstream = mock.handle();
    let limiter = RateLimitLayer::token_bucket(1, Duration::from_secs(10))
        .build()
        .unwrap();
    let retry = RetryLayer::exponential(ms(10))
        .max_attempts(5)
        .max_retry_after(Duration::from_secs(1))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(retry.clone())
        .layer(limiter)
        .service(mock);
    svc.clone().oneshot(1).await.unwrap();
    let start = Instant::now();
    let err = svc.oneshot(2).await.unwrap_err();
    assert!(err.is::<RateLimited>());
    assert_eq!(Instant::now(), start, "returned at once, no wait");
    assert_eq!(upstream.calls(), 1);
    let h = retry.handle();
    assert_eq!((h.rejections_returned(), h.retries()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn a_wait_that_fits_is_waited_exactly_even_past_the_backoff_cap() {
    let mock = Mock::<u64>::new();
    let upstream = mock.handle();
    // 1 per 300 ms: the second request is refused for exactly 300 ms.
    let limiter = RateLimitLayer::token_bucket(1, ms(300)).build().unwrap();
    let retry = RetryLayer::exponential(ms(10))
        .max_delay(ms(20))
        .max_retry_after(Duration::from_secs(1))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(retry.clone())
        .layer(limiter)
        .service(mock);
    svc.clone().oneshot(1).await.unwrap();
    let start = Instant::now();
    svc.oneshot(2).await.unwrap();
    assert_eq!(Instant::now() - start, ms(300));
    assert_eq!(upstream.calls(), 2);
    assert_eq!(retry.handle().rejections_waited(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_attempt_left_or_past_max_elapsed_returns_the_rejection() {
    // Attempts: the upstream failure takes attempt 1, the refusal attempt 2.
    let mock = Mock::<u64>::new().script([Step::err()]);
    let breaker = CircuitBreakerLayer::consecutive_failures(1)
        .open_for(ms(50))
        .build()
        .unwrap();
    let retry = RetryLayer::exponential(ms(10))
        .max_attempts(2)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(retry.clone())
        .layer(breaker)
        .service(mock);
    let err = svc.oneshot(1).await.unwrap_err();
    assert!(err.is::<CircuitOpen>(), "{err}");
    assert_eq!(retry.handle().rejections_returned(), 1);

    // max_elapsed: a 300 ms refusal does not fit in 100 ms.
    let limiter = RateLimitLayer::token_bucket(1, ms(300)).build().unwrap();
    let retry = RetryLayer::exponential(ms(10))
        .max_elapsed(ms(100))
        .max_retry_after(Duration::from_secs(1))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(retry.clone())
        .layer(limiter)
        .service(Mock::<u64>::new());
    svc.clone().oneshot(1).await.unwrap();
    let start = Instant::now();
    assert!(svc.oneshot(2).await.unwrap_err().is::<RateLimited>());
    assert_eq!(Instant::now(), start);
    assert_eq!(retry.handle().rejections_returned(), 1);
}

#[tokio::test(start_paused = true)]
async fn insufficient_capacity_is_never_retried_whatever_the_classifier() {
    let mock = Mock::<u64>::new();
    let upstream = mock.handle();
    let limiter = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
        .burst(2)
        .cost(|n: &u64| *n)
        .build()
        .unwrap();
    // A classifier that would retry everything: local rejections are
    // handled before it is asked.
    let retry = RetryLayer::exponential(ms(10))
        .max_attempts(5)
        .retry_if(|_: &Result<_, BoxError>| true)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(retry.clone())
        .layer(limiter)
        .service(mock);
    let err = svc.oneshot(3).await.unwrap_err();
    assert!(err.is::<InsufficientCapacity>());
    assert_eq!(upstream.calls(), 0);
    assert_eq!(retry.handle().retries(), 0);
    assert_eq!(retry.handle().rejections_returned(), 1);
}

/// A wait-out in progress, dropped: nothing is sent, nothing leaks.
#[tokio::test(start_paused = true)]
async fn dropping_a_request_waiting_out_a_rejection_sends_nothing() {
    let mock = Mock::<u64>::new();
    let upstream = mock.handle();
    let limiter = RateLimitLayer::token_bucket(1, ms(300)).build().unwrap();
    let retry = RetryLayer::exponential(ms(10))
        .max_retry_after(Duration::from_secs(1))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(retry.clone())
        .layer(limiter.clone())
        .service(mock);
    svc.clone().oneshot(1).await.unwrap();
    let waiting = svc.clone().oneshot(2);
    assert!(
        tokio::time::timeout(ms(100), waiting).await.is_err(),
        "still waiting out the refusal"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(upstream.calls(), 1);
    // The token the dropped request never took is there for the next one.
    svc.oneshot(3).await.unwrap();
    assert_eq!(upstream.calls(), 2);
}
