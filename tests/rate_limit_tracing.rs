//! Refusals are traced at debug level. Alone in its binary: `tracing`
//! caches each callsite's interest process-wide, and tests running in
//! parallel without a subscriber would race with the scoped one here.

mod support;

use std::time::Duration;

use palisade::{BoxError, RateLimitLayer};
use support::{Mock, Reply};
use tower::{Layer, Service, ServiceExt};

async fn send<S>(svc: &mut S, req: u64) -> Result<Reply<u64>, BoxError>
where
    S: Service<u64, Response = Reply<u64>, Error = BoxError>,
{
    svc.ready().await?.call(req).await
}

/// Each refusal emits a debug event carrying `retry_after`; admissions emit
/// nothing.
#[test]
fn refusals_are_traced_at_debug() {
    let (capture, subscriber) = support::tracing_capture::capture(tracing::Level::DEBUG);
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let layer = RateLimitLayer::token_bucket(1, Duration::from_secs(1))
                .build()
                .unwrap();
            let mut svc = layer.layer(Mock::new());
            send(&mut svc, 0).await.unwrap();
            send(&mut svc, 1).await.unwrap_err();
        });
    });
    let out = capture.text();
    assert_eq!(out.matches("rate limited").count(), 1, "{out}");
    assert!(
        out.contains("DEBUG") && out.contains("retry_after=1s"),
        "{out}"
    );
}
