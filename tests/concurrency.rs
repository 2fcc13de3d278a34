//! The concurrency limit through the mock, in paused time: refusal at
//! once, permits released on every path, the Tower contract, the bounded
//! wait, drops, and its place in a stack (breaker and retry treat
//! `Overloaded` as a local rejection).

mod support;

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade::circuit_breaker::State;
use palisade::concurrency::Overloaded;
use palisade::retry::RetryBudget;
use palisade::{BoxError, CircuitBreakerLayer, ConcurrencyLimitLayer, RetryLayer};
use support::{Mock, ReadyStep, Step, ms};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

fn fixed(n: u32) -> ConcurrencyLimitLayer {
    ConcurrencyLimitLayer::fixed(n).build().unwrap()
}

fn poll_ready_now<S: Service<u64>>(svc: &mut S) -> Poll<Result<(), S::Error>> {
    svc.poll_ready(&mut Context::from_waker(Waker::noop()))
}

#[tokio::test(start_paused = true)]
async fn refuses_beyond_the_limit_at_once_without_calling_the_upstream() {
    let mock = Mock::new().latency(ms(100));
    let upstream = mock.handle();
    let layer = fixed(2);
    let handle = layer.handle();
    let svc = layer.layer(mock);

    let a = tokio::spawn(svc.clone().oneshot(1));
    let b = tokio::spawn(svc.clone().oneshot(2));
    tokio::task::yield_now().await;
    assert_eq!(handle.in_flight(), 2);

    let start = Instant::now();
    let err = svc.clone().oneshot(3).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO, "refused at once");
    assert_eq!(
        err.downcast_ref::<Overloaded>(),
        Some(&Overloaded {
            limit: 2,
            in_flight: 2
        })
    );
    assert_eq!(upstream.calls(), 2);
    assert!(a.await.unwrap().is_ok() && b.await.unwrap().is_ok());
    assert_eq!((handle.in_flight(), handle.refused()), (0, 1));
    // Places free again once the calls end.
    assert!(svc.oneshot(4).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_dropped_response_future_gives_its_place_back() {
    let layer = fixed(1);
    let handle = layer.handle();
    let mock = Mock::new().hang();
    let upstream = mock.handle();
    let mut svc = layer.layer(mock);
    let fut = svc.ready().await.unwrap().call(1);
    assert_eq!(handle.in_flight(), 1);
    assert!(svc.clone().oneshot(2).await.unwrap_err().is::<Overloaded>());
    drop(fut);
    assert_eq!((handle.in_flight(), upstream.cancelled()), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_service_dropped_or_failing_after_poll_ready_gives_its_place_back() {
    let layer = fixed(1);
    let handle = layer.handle();
    let mut svc = layer.layer(Mock::new());
    assert!(poll_ready_now(&mut svc).is_ready());
    assert_eq!(handle.in_flight(), 1);
    drop(svc);
    assert_eq!(handle.in_flight(), 0);

    // The inner poll_ready fails: the place goes back, the error passes.
    let mut svc = layer.layer(Mock::new().ready_script([ReadyStep::Err]));
    assert!(matches!(poll_ready_now(&mut svc), Poll::Ready(Err(_))));
    assert_eq!(handle.in_flight(), 0);

    // The inner service is not ready: the place is held while waiting.
    let mut svc = layer.layer(Mock::new().capacity(0));
    assert!(poll_ready_now(&mut svc).is_pending());
    assert_eq!(handle.in_flight(), 1);
    let inner = svc.into_inner();
    drop(inner);
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn polling_ready_twice_reserves_once_and_a_clone_holds_nothing() {
    let layer = fixed(2);
    let handle = layer.handle();
    let mut svc = layer.layer(Mock::new());
    assert!(poll_ready_now(&mut svc).is_ready());
    assert!(poll_ready_now(&mut svc).is_ready());
    assert_eq!(handle.in_flight(), 1);
    let clone = svc.clone();
    assert_eq!(handle.in_flight(), 1);
    drop(clone);
    assert!(svc.call(1).await.is_ok());
    assert_eq!(handle.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "Tower contract")]
async fn call_without_poll_ready_panics() {
    let mut svc = fixed(1).layer(Mock::new());
    drop(svc.call(1));
}

#[tokio::test(start_paused = true)]
async fn every_service_of_one_layer_shares_one_limit() {
    let layer = fixed(3);
    let a = layer.layer(Mock::new().hang());
    let b = layer.clone().layer(Mock::new().hang());
    let mut held = Vec::new();
    for svc in [&a, &b, &a] {
        let mut svc = svc.clone();
        held.push(svc.ready().await.unwrap().call(0));
    }
    assert!(b.clone().oneshot(1).await.unwrap_err().is::<Overloaded>());
    assert!(a.clone().oneshot(1).await.unwrap_err().is::<Overloaded>());
    drop(held);
    assert_eq!(layer.handle().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn max_wait_admits_when_a_call_ends_and_refuses_when_it_runs_out() {
    let layer = ConcurrencyLimitLayer::fixed(1)
        .max_wait(ms(50))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(Mock::new().latency(ms(30)));

    let first = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    // Waits the 30 ms the first call takes, then goes.
    let start = Instant::now();
    assert!(svc.clone().oneshot(2).await.is_ok());
    assert_eq!(start.elapsed(), ms(60));
    assert!(first.await.unwrap().is_ok());

    // A call that never ends: the waiter gives up after 50 ms.
    let hung = layer_with_hang(&layer);
    let start = Instant::now();
    let err = svc.clone().oneshot(3).await.unwrap_err();
    assert!(err.is::<Overloaded>());
    assert_eq!(start.elapsed(), ms(50));
    assert_eq!(handle.refused(), 1);
    drop(hung);
    assert_eq!(handle.in_flight(), 0);
}

/// Holds the only place with a call that never ends.
fn layer_with_hang(layer: &ConcurrencyLimitLayer) -> impl Future<Output = Result<u64, BoxError>> {
    let mut svc = layer.layer(Mock::new().hang());
    let Poll::Ready(Ok(())) = poll_ready_now(&mut svc) else {
        panic!("a place was free");
    };
    let fut = svc.call(0);
    async move { fut.await.map(|r| r.call) }
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_holds_nothing() {
    let layer = ConcurrencyLimitLayer::fixed(1)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let hung = layer_with_hang(&layer);
    let svc = layer.layer(Mock::new());
    {
        let mut waiting = pin!(svc.clone().oneshot(1));
        assert!(
            waiting
                .as_mut()
                .poll(&mut Context::from_waker(Waker::noop()))
                .is_pending()
        );
    }
    drop(hung);
    assert_eq!(handle.in_flight(), 0);
    assert!(svc.oneshot(2).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn drops_shrink_the_limit_and_refusals_from_below_do_not() {
    // A failing upstream: every window has drops.
    let layer = ConcurrencyLimitLayer::gradient2()
        .initial_limit(40)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(Mock::new().default_step(Step::err().after(ms(5))));
    for i in 0..400 {
        let _ = svc.clone().oneshot(i).await;
    }
    assert!(handle.limit() < 40, "limit {}", handle.limit());

    // A limiter below refusing everything: ignored, the limit holds.
    let layer = ConcurrencyLimitLayer::gradient2()
        .initial_limit(40)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .layer(fixed(1))
        .service(Mock::new().hang());
    let _hold = tokio::spawn(svc.clone().oneshot(0));
    tokio::task::yield_now().await;
    for i in 0..400 {
        assert!(svc.clone().oneshot(i).await.unwrap_err().is::<Overloaded>());
        tokio::time::advance(ms(1)).await;
    }
    assert_eq!(handle.limit(), 40);
}

#[tokio::test(start_paused = true)]
async fn breaker_ignores_overloaded_and_retry_returns_it_at_once_spending_no_budget() {
    let mock = Mock::new().latency(ms(100));
    let upstream = mock.handle();
    let breaker = CircuitBreakerLayer::consecutive_failures(2)
        .build()
        .unwrap();
    let retry = RetryLayer::exponential(ms(10))
        .max_attempts(3)
        .budget(RetryBudget::ratio(0.5))
        .build()
        .unwrap();
    let limit = fixed(1);
    let svc = ServiceBuilder::new()
        .layer(retry.clone())
        .layer(breaker.clone())
        .layer(limit.clone())
        .service(mock);

    let first = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    let budget = retry.handle().budget_available();
    for i in 0..5 {
        let start = Instant::now();
        let err = svc.clone().oneshot(10 + i).await.unwrap_err();
        assert!(err.is::<Overloaded>(), "{err}");
        assert_eq!(start.elapsed(), Duration::ZERO, "returned at once");
    }
    assert!(first.await.unwrap().is_ok());
    assert_eq!(breaker.handle().state(), State::Closed);
    assert_eq!(breaker.handle().counts().failures, 0);
    assert_eq!(retry.handle().retries(), 0);
    assert_eq!(retry.handle().rejections_returned(), 5);
    assert!(retry.handle().budget_available() >= budget);
    assert_eq!(limit.handle().refused(), 5);
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_limit_moves_are_traced() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .without_time()
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let layer = ConcurrencyLimitLayer::gradient2()
        .initial_limit(4)
        .name("db")
        .build()
        .unwrap();
    let svc = layer.layer(Mock::new().latency(ms(10)));
    // Demand above the limit, at the no-load latency: the limit grows.
    for round in 0..30u64 {
        let calls: Vec<_> = (0..8).map(|i| svc.clone().oneshot(round * 8 + i)).collect();
        futures::future::join_all(calls).await;
    }
    assert!(layer.handle().limit() > 4);
    let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    assert!(out.contains("concurrency limit changed"), "{out}");
    assert!(out.contains("limiter=\"db\" from=4 to=5"), "{out}");
}

#[tokio::test(start_paused = true)]
async fn an_endless_wait_bound_neither_panics_nor_gives_up() {
    let layer = ConcurrencyLimitLayer::fixed(1)
        .max_wait(Duration::MAX)
        .sample_window(Duration::MAX, Duration::MAX)
        .build()
        .unwrap();
    let svc = layer.layer(Mock::new().latency(Duration::from_secs(3600)));
    let first = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    let start = Instant::now();
    assert!(svc.oneshot(2).await.is_ok());
    assert_eq!(start.elapsed(), Duration::from_secs(7200));
    assert!(first.await.unwrap().is_ok());
}
