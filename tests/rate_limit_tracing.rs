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
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
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
    let out = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert_eq!(out.matches("rate limited").count(), 1, "{out}");
    assert!(
        out.contains("DEBUG") && out.contains("retry_after=1s"),
        "{out}"
    );
}
