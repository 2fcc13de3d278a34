//! The layers stacked as DESIGN.md shows: a batch above retry above a
//! circuit breaker above the mock. Each item is retried and guarded on its
//! own; when the failing upstream opens the breaker mid-batch, the remaining
//! items settle as rejected with the breaker's error, and the batch itself
//! still answers with one result per item.

mod support;

use std::time::Duration;

use palisade::batch::ItemError;
use palisade::circuit_breaker::{CircuitOpen, State};
use palisade::{BatchLayer, BoxError, CircuitBreakerLayer, RetryLayer};
use support::{Mock, MockError, Step, ms};
use tower::{ServiceBuilder, ServiceExt};

#[tokio::test(start_paused = true)]
async fn failing_upstream_opens_the_breaker_mid_batch() {
    let mock = Mock::<u64>::new().default_step(Step::err().after(ms(10)));
    let upstream = mock.handle();
    let breaker = CircuitBreakerLayer::consecutive_failures(5)
        .open_for(Duration::from_secs(60))
        .build()
        .unwrap();
    let breaker_handle = breaker.handle();
    let batch = ServiceBuilder::new()
        // One item at a time, so the trip point falls on a known item.
        .layer(BatchLayer::builder().max_in_flight(1).build().unwrap())
        .layer(
            RetryLayer::exponential(ms(5))
                .max_attempts(2)
                // The breaker's minute-long refusals are above this cap, so
                // retry returns them at once instead of waiting them out.
                .max_retry_after(Duration::from_secs(1))
                .seed(1)
                .build()
                .unwrap(),
        )
        .layer(breaker)
        .service(mock);

    let settled = batch.oneshot((0..10).collect()).await.unwrap();

    // Items 0 and 1 fail twice each (4 failures); item 2's first attempt is
    // the 5th failure and trips the breaker, so its retry is rejected.
    assert_eq!(settled.len(), 10);
    assert_eq!((settled.fulfilled(), settled.rejected()), (0, 10));
    assert_eq!(upstream.calls(), 5);
    assert_eq!(breaker_handle.state(), State::Open);
    for (i, result) in settled.into_results().into_iter().enumerate() {
        let error: BoxError = match result {
            Err(ItemError::Service(e)) => e,
            other => panic!("item {i}: expected the service's error, got {other:?}"),
        };
        if i < 2 {
            let mock_error = error.downcast_ref::<MockError>();
            assert!(mock_error.is_some(), "item {i}: {error}");
        } else {
            let open = error.downcast_ref::<CircuitOpen>();
            assert!(
                open.is_some(),
                "item {i} settles with the breaker's error: {error}"
            );
            assert!(open.unwrap().retry_after <= Duration::from_secs(60));
        }
    }
    // Item 2's retry and items 3..=9: rejected without reaching the upstream,
    // and not retried (their wait is above the retry's cap).
    assert_eq!(breaker_handle.counts().rejections, 8);
}
