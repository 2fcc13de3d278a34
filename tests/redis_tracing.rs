//! Every fallback is a `tracing` warning, rate-limited to one a second per
//! limiter, each saying how many fallbacks it covers. Alone in its binary
//! (a scoped subscriber; see rate_limit_tracing.rs).

mod support;

use std::time::Duration;

use palisade::RateLimitLayer;
use palisade::rate_limit::redis::{Fallback, RedisStore};
use support::Mock;
use support::redis::{free_port, prefix};
use tower::{Layer, ServiceExt};

#[test]
fn fallbacks_warn_at_most_once_a_second() {
    let (capture, subscriber) = support::tracing_capture::capture(tracing::Level::WARN);
    let warnings = || {
        let out = capture.text();
        out.lines()
            .filter(|l| l.contains("rate limit store unavailable"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let url = format!("redis://127.0.0.1:{}", free_port());
            let layer = RateLimitLayer::token_bucket(5, Duration::from_secs(1))
                .redis(RedisStore::open(&url).unwrap(), prefix("tracing"))
                .fallback(Fallback::FailOpen)
                .build()
                .unwrap();
            let handle = layer.handle();
            let svc = layer.layer(Mock::<u64>::new());
            for _ in 0..50 {
                svc.clone().oneshot(1).await.unwrap();
            }
            assert_eq!(handle.fallbacks(), 50);
            let w = warnings();
            assert_eq!(w.len(), 1, "{w:?}");
            assert!(
                w[0].contains("WARN") && w[0].contains("fallbacks=1"),
                "{}",
                w[0]
            );
            assert!(w[0].contains("fail open"), "{}", w[0]);
            tokio::time::sleep(Duration::from_millis(1_100)).await;
            svc.clone().oneshot(1).await.unwrap();
            let w = warnings();
            assert_eq!(w.len(), 2, "{w:?}");
            // The 49 silenced since the first warning, and this one.
            assert!(w[1].contains("fallbacks=50"), "{}", w[1]);
        });
    });
}
