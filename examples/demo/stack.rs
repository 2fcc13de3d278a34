//! The layers stacked: a limiter's refusals never open the breaker above
//! it, and a retry waits out an open breaker's `retry_after` instead of
//! hammering it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use palisade::circuit_breaker::CircuitOpen;
use palisade::{BoxError, CircuitBreakerLayer, RateLimitLayer, RetryLayer};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt, service_fn};

pub(crate) async fn run() {
    greedy_client_keeps_the_breaker_closed().await;
    retry_waits_out_an_open_breaker().await;
    println!();
}

async fn greedy_client_keeps_the_breaker_closed() {
    println!(
        "== stack: breaker (3 consecutive failures) above a limiter (burst 2), one greedy client"
    );
    let breaker = CircuitBreakerLayer::consecutive_failures(3)
        .open_for(Duration::from_secs(30))
        .build()
        .expect("valid breaker");
    let limiter = RateLimitLayer::token_bucket(2, Duration::from_secs(1))
        .burst(2)
        .build()
        .expect("valid limiter");
    let server = ServiceBuilder::new()
        .layer(breaker.clone())
        .layer(limiter.clone())
        .service(service_fn(|_: u32| async { Ok::<_, BoxError>("200 OK") }));
    let mut line = String::new();
    for i in 0..8 {
        match server.clone().oneshot(i).await {
            Ok(_) => line.push_str(" ok"),
            Err(_) => line.push_str(" 429"),
        }
    }
    println!("  8 requests in the same instant:{line}");
    println!(
        "  limiter refused {}; breaker {:?} with {} failures counted: a refusal is not an upstream failure",
        limiter.handle().rejected(),
        breaker.handle().state(),
        breaker.handle().counts().failures,
    );
}

async fn retry_waits_out_an_open_breaker() {
    println!(
        "== stack: retry above a breaker that opens for 200 ms; the upstream fails once, then recovers"
    );
    let start = Instant::now();
    let calls = Arc::new(AtomicU32::new(0));
    let upstream = service_fn({
        let calls = calls.clone();
        move |_: u32| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let at = start.elapsed().as_millis();
            async move {
                if n == 0 {
                    println!("    t={at:>4}ms  upstream: 503");
                    Err::<&str, BoxError>("upstream down".into())
                } else {
                    println!("    t={at:>4}ms  upstream: 200 OK");
                    Ok("200 OK")
                }
            }
        }
    });
    let retry = RetryLayer::exponential(Duration::from_millis(20))
        .max_attempts(4)
        .max_retry_after(Duration::from_secs(1))
        .build()
        .expect("valid retry");
    let breaker = CircuitBreakerLayer::consecutive_failures(1)
        .open_for(Duration::from_millis(200))
        .build()
        .expect("valid breaker");
    let client = ServiceBuilder::new()
        .layer(retry.clone())
        .layer(breaker)
        .service(upstream);
    match client.oneshot(1).await {
        Ok(answer) => println!(
            "  answered {answer} at t={}ms after {} upstream calls",
            start.elapsed().as_millis(),
            calls.load(Ordering::SeqCst)
        ),
        Err(e) if e.is::<CircuitOpen>() => println!("  still open: {e}"),
        Err(e) => println!("  failed: {e}"),
    }
    let h = retry.handle();
    println!(
        "  retries {}: {} after a backoff, {} waiting out the open breaker's retry_after (no budget spent)",
        h.retries(),
        h.retries() - h.rejections_waited(),
        h.rejections_waited()
    );
}
