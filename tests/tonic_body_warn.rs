//! `BufferBodyLayer`'s warning for a body it cannot buffer: once per layer,
//! not per request. Alone in its own test binary: tracing caches
//! per-callsite interest process-wide, so a thread-local subscriber races
//! with tests on other threads that hit the same callsite first.
#![cfg(feature = "http")]

mod support;

use bytes::Bytes;
use http_body_util::Full;
use palisade::http::BufferBodyLayer;
use support::Mock;
use tower::{Layer, ServiceExt};

#[tokio::test(start_paused = true)]
async fn warns_once_per_layer() {
    let (buf, subscriber) = support::tracing_capture::capture(tracing::Level::WARN);
    let _guard = tracing::subscriber::set_default(subscriber);
    let warnings = || {
        let out = buf.text();
        out.lines()
            .filter(|l| l.contains("WARN") && l.contains("request body not buffered"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };

    let big = || http::Request::new(Full::new(Bytes::from_static(b"more than eight bytes")));
    let small = || http::Request::new(Full::new(Bytes::from_static(b"tiny")));
    let layer = BufferBodyLayer::with_limit(8);
    let svc = layer.layer(Mock::<http::Request<Full<Bytes>>>::new());
    svc.clone().oneshot(small()).await.unwrap();
    assert!(warnings().is_empty(), "a buffered body is no warning");
    for _ in 0..3 {
        svc.clone().oneshot(big()).await.unwrap();
    }
    // A second service from the same layer shares its flag.
    layer
        .layer(Mock::<http::Request<Full<Bytes>>>::new())
        .oneshot(big())
        .await
        .unwrap();
    let seen = warnings();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].contains("limit=8") && seen[0].contains("larger than the limit"));
    assert_eq!(layer.unbuffered(), 4);

    // Another layer warns for itself.
    BufferBodyLayer::with_limit(8)
        .layer(Mock::<http::Request<Full<Bytes>>>::new())
        .oneshot(big())
        .await
        .unwrap();
    assert_eq!(warnings().len(), 2);
}
