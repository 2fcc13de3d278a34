//! Every stack order the README recommends, driven through the mock in
//! paused time with a mix of upstream failures and local rejections (a
//! limiter refusing a greedy burst, a breaker refusing while open): no local
//! rejection ever moves a breaker, and none spends retry budget.
//!
//! How "moves a breaker" is measured: the breakers here record outcomes in a
//! count window larger than the run, so their counts must equal what the
//! upstream really did, call for call and failure for failure; a second
//! breaker of three consecutive failures in front of a healthy upstream must
//! stay closed however many refusals pass through it.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use palisade::circuit_breaker::{CircuitBreakerHandle, State, Window};
use palisade::classify::ServerErrorsAsFailures;
use palisade::http::ErrorResponseLayer;
use palisade::rate_limit::RateLimitHandle;
use palisade::retry::{RetryBudget, RetryHandle};
use palisade::{BoxError, CircuitBreakerLayer, RateLimitLayer, RetryLayer};
use support::{Mock, MockHandle, Step, ms};
use tokio::task::JoinSet;
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};

/// A breaker that never trips within a run but records every outcome.
fn recording_breaker() -> CircuitBreakerLayer<ServerErrorsAsFailures> {
    CircuitBreakerLayer::failure_rate(1.0)
        .window(Window::count(100_000))
        .min_calls(100_000)
        .classifier(ServerErrorsAsFailures)
        .build()
        .unwrap()
}

/// A breaker that trips on three consecutive failures.
fn touchy_breaker() -> CircuitBreakerLayer<ServerErrorsAsFailures> {
    CircuitBreakerLayer::consecutive_failures(3)
        .open_for(Duration::from_secs(30))
        .classifier(ServerErrorsAsFailures)
        .build()
        .unwrap()
}

/// A greedy limit: 100 per second, burst 5, refusing at once.
fn limiter() -> RateLimitLayer {
    RateLimitLayer::token_bucket(100, Duration::from_secs(1))
        .burst(5)
        .build()
        .unwrap()
}

type Http = http::Response<String>;

/// The mock as an HTTP handler would be: `Ok(response)` with its status.
fn handler(mock: Mock<u64>) -> BoxCloneService<u64, Http, BoxError> {
    BoxCloneService::new(
        mock.map_response(|reply| {
            let mut res = http::Response::new(String::new());
            *res.status_mut() = http::StatusCode::from_u16(reply.status).unwrap();
            res
        })
        .map_err(BoxError::from),
    )
}

/// Drives `requests` requests in bursts of `burst` every 10 ms.
async fn drive<S>(svc: S, requests: u64, burst: u64) -> (u64, u64)
where
    S: tower::Service<u64, Response = Http> + Clone + Send + 'static,
    S::Error: Send,
    S::Future: Send,
{
    let mut tasks = JoinSet::new();
    for i in 0..requests {
        if i % burst == 0 {
            tokio::time::sleep(ms(10)).await;
        }
        tasks.spawn(svc.clone().oneshot(i));
    }
    let (mut ok, mut not_ok) = (0, 0);
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            Ok(res) if res.status().is_success() => ok += 1,
            _ => not_ok += 1,
        }
    }
    (ok, not_ok)
}

/// The breaker saw exactly the upstream's outcomes.
fn breaker_saw_only_the_upstream(breaker: &CircuitBreakerHandle, upstream: &MockHandle<u64>) {
    let counts = breaker.counts();
    assert_eq!(counts.state, State::Closed);
    assert_eq!(
        counts.calls,
        upstream.calls(),
        "one outcome per upstream call"
    );
    let failed = upstream.calls() - upstream.successes();
    assert_eq!(counts.failures, failed, "one failure per upstream failure");
    assert_eq!(counts.rejections, 0);
}

fn limiter_refused(limiter: &RateLimitHandle) {
    assert!(limiter.rejected() > 10, "the run had local rejections");
}

// ---------------------------------------------------------------------------
// Server orders (axum, tonic): the error layer outermost.

/// Recommended: `ErrorResponseLayer -> RateLimitLayer -> CircuitBreakerLayer`.
/// A refused request never reaches the breaker.
#[tokio::test(start_paused = true)]
async fn server_limiter_above_breaker() {
    for (breaker, failing) in [(recording_breaker(), true), (touchy_breaker(), false)] {
        let mock = upstream(failing);
        let upstream = mock.handle();
        let limit = limiter();
        let svc = ServiceBuilder::new()
            .layer(ErrorResponseLayer::new())
            .layer(limit.clone())
            .layer(breaker.clone())
            .service(handler(mock));
        let (ok, not_ok) = drive(svc, 300, 4).await;
        assert_eq!(ok + not_ok, 300);
        limiter_refused(&limit.handle());
        check(&breaker.handle(), &upstream, failing);
    }
}

/// Also safe now: `ErrorResponseLayer -> CircuitBreakerLayer -> RateLimitLayer`.
/// The breaker sees the limiter's refusals and ignores them.
#[tokio::test(start_paused = true)]
async fn server_breaker_above_limiter() {
    for (breaker, failing) in [(recording_breaker(), true), (touchy_breaker(), false)] {
        let mock = upstream(failing);
        let upstream = mock.handle();
        let limit = limiter();
        let svc = ServiceBuilder::new()
            .layer(ErrorResponseLayer::new())
            .layer(breaker.clone())
            .layer(limit.clone())
            .service(handler(mock));
        drive(svc, 300, 4).await;
        limiter_refused(&limit.handle());
        check(&breaker.handle(), &upstream, failing);
    }
}

/// A breaker *above* the error layer sees 429 responses, not errors: the
/// error layer marks them as palisade's own, and the breaker ignores them.
#[tokio::test(start_paused = true)]
async fn server_breaker_above_the_error_layer() {
    for (breaker, failing) in [(recording_breaker(), true), (touchy_breaker(), false)] {
        let mock = upstream(failing);
        let upstream = mock.handle();
        let limit = limiter();
        let svc = ServiceBuilder::new()
            .layer(breaker.clone())
            .layer(ErrorResponseLayer::new())
            .layer(limit.clone())
            .service(handler(mock))
            .map_err(|e: BoxError| -> Infallible { panic!("the error layer answers: {e}") });
        drive(svc, 300, 4).await;
        limiter_refused(&limit.handle());
        // Upstream errors reach it as 500 responses: still failures.
        check(&breaker.handle(), &upstream, failing);
    }
}

// ---------------------------------------------------------------------------
// Client orders (hyper, tonic channels): retry outermost.

/// Recommended: `RetryLayer -> CircuitBreakerLayer -> RateLimitLayer` (the
/// limiter shaping outbound traffic, here waiting up to 15 ms and refusing
/// past that).
#[tokio::test(start_paused = true)]
async fn client_retry_breaker_limiter() {
    for (breaker, failing) in [(recording_breaker(), true), (touchy_breaker(), false)] {
        let mock = upstream(failing);
        let upstream = mock.handle();
        let retry = retry();
        let limit = RateLimitLayer::token_bucket(100, Duration::from_secs(1))
            .burst(5)
            .wait(ms(15))
            .build()
            .unwrap();
        let svc = ServiceBuilder::new()
            .layer(retry.clone())
            .layer(breaker.clone())
            .layer(limit.clone())
            .service(handler(mock));
        drive(svc, 300, 4).await;
        limiter_refused(&limit.handle());
        check(&breaker.handle(), &upstream, failing);
        budget_spent_only_on_backoff_retries(&retry.handle(), 300);
    }
}

/// `RetryLayer -> RateLimitLayer -> CircuitBreakerLayer`: refusals are
/// waited out by retry (they are short), never sent to the breaker.
#[tokio::test(start_paused = true)]
async fn client_retry_limiter_breaker() {
    for (breaker, failing) in [(recording_breaker(), true), (touchy_breaker(), false)] {
        let mock = upstream(failing);
        let upstream = mock.handle();
        let retry = retry();
        let limit = limiter();
        let svc = ServiceBuilder::new()
            .layer(retry.clone())
            .layer(limit.clone())
            .layer(breaker.clone())
            .service(handler(mock));
        drive(svc, 300, 4).await;
        limiter_refused(&limit.handle());
        check(&breaker.handle(), &upstream, failing);
        budget_spent_only_on_backoff_retries(&retry.handle(), 300);
    }
}

/// An upstream failing 30 % of calls (seeded), or a healthy one.
fn upstream(failing: bool) -> Mock<u64> {
    let mock = Mock::<u64>::new().latency(ms(3));
    if failing {
        mock.fail_rate(0.3, 7)
    } else {
        mock.default_step(Step::ok())
    }
}

fn retry() -> RetryLayer {
    RetryLayer::exponential(ms(5))
        .max_attempts(3)
        .max_retry_after(ms(200))
        .budget(RetryBudget::ratio(0.5).min_per_sec(0))
        .seed(3)
        .build()
        .unwrap()
}

fn check(breaker: &CircuitBreakerHandle, upstream: &MockHandle<u64>, failing: bool) {
    if failing {
        breaker_saw_only_the_upstream(breaker, upstream);
    } else {
        let counts = breaker.counts();
        assert_eq!(
            counts.state,
            State::Closed,
            "a healthy upstream, refusals only"
        );
        assert_eq!((counts.failures, counts.rejections), (0, 0));
    }
}

/// With `ratio(0.5)` and no floor, the budget holds half the requests: only
/// retries after upstream failures (backoff retries) take from it, never
/// those after a local refusal.
fn budget_spent_only_on_backoff_retries(retry: &RetryHandle, requests: u64) {
    let backoff_retries = retry.retries() - retry.rejections_waited();
    assert!(
        retry.rejections_waited() + retry.rejections_returned() > 0,
        "the run had local rejections under the retry"
    );
    assert_eq!(
        retry.budget_available().unwrap(),
        requests / 2 - backoff_retries,
        "retries {} (waited out {}), returned {}",
        retry.retries(),
        retry.rejections_waited(),
        retry.rejections_returned()
    );
}
