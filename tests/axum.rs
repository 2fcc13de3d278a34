//! palisade behind axum: a breaker that trips on `Ok(500)`, rejections as
//! `503` / `429` with a `Retry-After` that is rounded up, every per-request
//! clone sharing one state, and an error type axum accepts (`Infallible`).
#![cfg(feature = "http")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use palisade::circuit_breaker::State;
use palisade::classify::ServerErrorsAsFailures;
use palisade::http::ErrorResponseLayer;
use palisade::{CircuitBreakerLayer, RateLimitLayer};
use tower::{ServiceBuilder, ServiceExt};

/// A handler that answers with the status in `status`, counting its calls.
fn app_answering(status: Arc<AtomicU32>, calls: Arc<AtomicU32>) -> Router {
    Router::new().route(
        "/",
        get(move || {
            let status = status.clone();
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, SeqCst);
                StatusCode::from_u16(status.load(SeqCst) as u16).unwrap()
            }
        }),
    )
}

async fn get_root(app: &Router) -> (StatusCode, Option<String>) {
    let response = app
        .clone()
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status(), retry_after)
}

#[tokio::test(start_paused = true)]
async fn breaker_trips_on_ok_500_and_answers_503_with_retry_after() {
    let status = Arc::new(AtomicU32::new(500));
    let calls = Arc::new(AtomicU32::new(0));
    let breaker = CircuitBreakerLayer::consecutive_failures(3)
        .open_for(Duration::from_millis(29_500))
        .classifier(ServerErrorsAsFailures)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let app = app_answering(status.clone(), calls.clone()).layer(
        ServiceBuilder::new()
            .layer(ErrorResponseLayer::new())
            .layer(breaker),
    );

    for _ in 0..3 {
        assert_eq!(
            get_root(&app).await,
            (StatusCode::INTERNAL_SERVER_ERROR, None)
        );
    }
    assert_eq!(handle.state(), State::Open);
    // Open: the handler is not called; 29.5 s rounds up to 30.
    assert_eq!(
        get_root(&app).await,
        (StatusCode::SERVICE_UNAVAILABLE, Some("30".into()))
    );
    assert_eq!(calls.load(SeqCst), 3);

    // After the open period a probe goes through and, healthy again, closes it.
    status.store(200, SeqCst);
    tokio::time::advance(Duration::from_millis(29_500)).await;
    assert_eq!(get_root(&app).await, (StatusCode::OK, None));
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(calls.load(SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn the_default_classifier_never_trips_on_ok_500() {
    let status = Arc::new(AtomicU32::new(500));
    let calls = Arc::new(AtomicU32::new(0));
    let breaker = CircuitBreakerLayer::consecutive_failures(3)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let app = app_answering(status, calls.clone()).layer(
        ServiceBuilder::new()
            .layer(ErrorResponseLayer::new())
            .layer(breaker),
    );
    for _ in 0..10 {
        assert_eq!(get_root(&app).await.0, StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(calls.load(SeqCst), 10);
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_answers_429_and_every_request_clone_shares_the_limit() {
    let calls = Arc::new(AtomicU32::new(0));
    // 2 per 5 s: one token every 2.5 s, burst 2.
    let limiter = RateLimitLayer::token_bucket(2, Duration::from_secs(5))
        .burst(2)
        .build()
        .unwrap();
    let app = app_answering(Arc::new(AtomicU32::new(200)), calls.clone()).layer(
        ServiceBuilder::new()
            .layer(ErrorResponseLayer::new())
            .layer(limiter),
    );

    assert_eq!(get_root(&app).await.0, StatusCode::OK);
    assert_eq!(get_root(&app).await.0, StatusCode::OK);
    // axum clones the service per request: a limit per clone would let this through.
    assert_eq!(
        get_root(&app).await,
        (StatusCode::TOO_MANY_REQUESTS, Some("3".into()))
    );
    tokio::time::advance(Duration::from_millis(2_499)).await;
    // Still limited with 1 ms to go: the header says 1, never 0.
    assert_eq!(
        get_root(&app).await,
        (StatusCode::TOO_MANY_REQUESTS, Some("1".into()))
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(get_root(&app).await.0, StatusCode::OK);
    assert_eq!(calls.load(SeqCst), 3);
}
