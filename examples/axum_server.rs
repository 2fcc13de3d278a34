//! palisade in front of axum handlers: `cargo run --example axum_server`.
//!
//! A router whose handler starts failing with `500`, behind a rate limiter
//! and a circuit breaker that counts `5xx` answers as failures. Requests are
//! driven in-process (`tower::ServiceExt::oneshot`), so the example needs no
//! port and finishes at once; the same `app` is what you would hand to
//! `axum::serve`. Time is tokio's paused clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering::SeqCst};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use palisade::classify::ServerErrorsAsFailures;
use palisade::http::ErrorResponseLayer;
use palisade::{BoxError, CircuitBreakerLayer, RateLimitLayer};
use tower::{ServiceBuilder, ServiceExt};

async fn handler(State(status): State<Arc<AtomicU16>>) -> StatusCode {
    StatusCode::from_u16(status.load(SeqCst)).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), BoxError> {
    let upstream_status = Arc::new(AtomicU16::new(200));
    let breaker = CircuitBreakerLayer::consecutive_failures(3)
        .open_for(Duration::from_secs(10))
        .classifier(ServerErrorsAsFailures)
        .build()?;
    let breaker_state = breaker.handle();

    let app = Router::new()
        .route("/", get(handler))
        .with_state(upstream_status.clone())
        .layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new()) // errors -> 429 / 503 + Retry-After
                .layer(
                    RateLimitLayer::token_bucket(5, Duration::from_secs(1))
                        .burst(5)
                        .build()?,
                )
                .layer(breaker),
        );

    let send = |label: &'static str| {
        let app = app.clone();
        let breaker_state = breaker_state.clone();
        async move {
            let response = app
                .oneshot(Request::get("/").body(Body::empty()).expect("valid request"))
                .await
                .expect("infallible");
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(|v| format!(" Retry-After: {v}"))
                .unwrap_or_default();
            let status = response.status().to_string();
            println!(
                "{label:<24} -> {status:<26}{retry_after:<16} breaker {:?}",
                breaker_state.state()
            );
        }
    };

    println!("a burst of 7 requests against 5 per second:");
    for _ in 0..7 {
        send("GET / (healthy)").await;
    }

    tokio::time::advance(Duration::from_secs(1)).await;
    println!("\nthe handler starts answering 500; the breaker counts Ok(500) as failure:");
    upstream_status.store(500, SeqCst);
    for _ in 0..4 {
        send("GET / (handler fails)").await;
    }

    tokio::time::advance(Duration::from_secs(10)).await;
    println!("\n10 s later the handler has recovered; a probe closes the breaker:");
    upstream_status.store(200, SeqCst);
    send("GET / (probe)").await;
    send("GET / (closed again)").await;
    Ok(())
}
