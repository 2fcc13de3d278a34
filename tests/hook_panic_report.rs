//! A panicking hook is caught, the breaker goes on, and each hook's first
//! panic is reported once through `tracing`. (Its own test binary: a
//! `tracing` subscriber set per thread misses events when other tests in
//! the same process register the same callsites first.)

mod support;

use std::time::Duration;

use palisade::CircuitBreakerLayer;
use palisade::circuit_breaker::{CircuitOpen, State};
use support::Mock;
use support::Step;
use tower::{Layer, ServiceExt};

#[tokio::test(start_paused = true)]
async fn a_panicking_breaker_hook_is_caught_and_reported_once() {
    let (captured, subscriber) = support::tracing_capture::capture(tracing::Level::ERROR);
    let _guard = tracing::subscriber::set_default(subscriber);
    let layer = CircuitBreakerLayer::consecutive_failures(1)
        .open_for(Duration::from_secs(1))
        .on_state_change(|_| panic!("hook bug"))
        .on_rejected(|_| panic!("hook bug"))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mock = Mock::new();
    let script = mock.handle();
    let svc = layer.layer(mock);
    for round in 0..2 {
        script.push_script([Step::err()]);
        assert!(
            svc.clone().oneshot(1).await.is_err(),
            "round {round}: fails, trips"
        );
        assert_eq!(handle.state(), State::Open);
        let err = svc.clone().oneshot(2).await.unwrap_err();
        assert!(err.is::<CircuitOpen>(), "rejected as usual");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            svc.clone().oneshot(3).await.is_ok(),
            "round {round}: the probe closes it"
        );
        assert_eq!(handle.state(), State::Closed);
        handle.force_open();
        handle.reset();
        assert_eq!(handle.counts().rejections, round + 1);
    }
    let text = captured.text();
    let reports = text.matches("an event hook panicked").count();
    assert_eq!(
        reports, 2,
        "once per hook (on_state_change, on_rejected):\n{text}"
    );
    assert!(text.contains("on_state_change") && text.contains("on_rejected"));
}
