//! RetryLayer's `tracing` events. Alone in its own test binary: tracing
//! caches per-callsite interest process-wide, so a thread-local subscriber
//! races with tests on other threads that hit the same callsites first.

mod support;

use palisade::RetryLayer;
use support::{Mock, Step, ms};
use tower::{Layer, Service, ServiceExt};

#[tokio::test(start_paused = true)]
async fn emits_a_tracing_event_per_retry() {
    let (buf, subscriber) = support::tracing_capture::capture(tracing::Level::DEBUG);
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = Mock::new().default_step(Step::err());
    let mut svc = RetryLayer::exponential(ms(10)).build().unwrap().layer(mock);
    let _ = svc.ready().await.unwrap().call(0).await;
    let out = buf.text();
    let retries: Vec<_> = out.lines().filter(|l| l.contains(": retrying")).collect();
    assert_eq!(retries.len(), 2, "{out}");
    assert!(retries[0].contains("attempt=2") && retries[1].contains("attempt=3"));
    assert!(
        retries
            .iter()
            .all(|l| l.contains("delay_ms=") && l.contains("reason="))
    );
    assert!(out.contains("max attempts reached"), "{out}");
}
