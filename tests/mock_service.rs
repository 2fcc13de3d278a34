//! The mock itself: if it lies, every other test does.

mod support;

use support::{Mock, MockError, ReadyStep, Step, ms};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

#[tokio::test(start_paused = true)]
async fn follows_script_then_default() {
    let mut mock = Mock::new()
        .script([Step::err(), Step::status(503)])
        .default_step(Step::ok());
    let h = mock.handle();
    assert_eq!(
        mock.ready().await.unwrap().call(1).await,
        Err(MockError { call: 0 })
    );
    assert_eq!(
        mock.ready().await.unwrap().call(2).await.unwrap().status,
        503
    );
    let reply = mock.ready().await.unwrap().call(3).await.unwrap();
    assert_eq!((reply.call, reply.status, reply.request), (2, 200, 3));
    assert_eq!((h.calls(), h.successes(), h.failures()), (3, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn latency_is_on_tokio_time() {
    let mut mock = Mock::<u64>::new().latency(ms(250));
    let start = Instant::now();
    mock.ready().await.unwrap().call(0).await.unwrap();
    assert_eq!(start.elapsed(), ms(250));
}

#[tokio::test(start_paused = true)]
async fn seeded_fail_rate_replays() {
    async fn run(seed: u64) -> Vec<bool> {
        let mut mock = Mock::<u64>::new().fail_rate(0.3, seed);
        let mut out = Vec::new();
        for i in 0..200 {
            out.push(mock.ready().await.unwrap().call(i).await.is_ok());
        }
        out
    }
    let a = run(9).await;
    assert_eq!(a, run(9).await);
    assert_ne!(a, run(10).await);
    let failures = a.iter().filter(|ok| !**ok).count();
    assert!(
        (40..=80).contains(&failures),
        "about 30% of 200 fail, got {failures}"
    );
}

#[tokio::test(start_paused = true)]
async fn counts_in_flight_peak_and_cancellation() {
    let mut mock = Mock::<u64>::new().hang();
    let h = mock.handle();
    let a = mock.ready().await.unwrap().call(0);
    let b = mock.ready().await.unwrap().call(1);
    assert_eq!((h.in_flight(), h.peak_in_flight()), (2, 2));
    drop(a);
    drop(b);
    assert_eq!(
        (h.in_flight(), h.cancelled(), h.peak_in_flight()),
        (0, 2, 2)
    );
}

#[tokio::test(start_paused = true)]
async fn capacity_makes_poll_ready_wait() {
    let mut mock = Mock::<u64>::new().capacity(1).latency(ms(10));
    let first = mock.ready().await.unwrap().call(0);
    let mut clone = mock.clone();
    let mut ready = tokio_test_ready(&mut clone);
    assert!(futures::poll!(&mut ready).is_pending());
    first.await.unwrap();
    assert!(futures::poll!(&mut ready).is_ready());
}

fn tokio_test_ready(svc: &mut Mock<u64>) -> tower::util::Ready<'_, Mock<u64>, u64> {
    svc.ready()
}

#[tokio::test]
async fn scripted_ready_errors() {
    let mut mock = Mock::<u64>::new().ready_script([ReadyStep::Err, ReadyStep::Ready]);
    assert!(mock.ready().await.is_err());
    assert!(mock.ready().await.is_ok());
}

#[tokio::test]
#[should_panic(expected = "without a ready `poll_ready`")]
async fn call_without_ready_panics() {
    let mut mock = Mock::<u64>::new();
    let _unready = mock.call(0);
}

#[tokio::test]
#[should_panic(expected = "without a ready `poll_ready`")]
async fn a_clone_starts_not_ready() {
    let mut mock = Mock::<u64>::new();
    mock.ready().await.unwrap();
    let mut clone = mock.clone();
    let _unready = clone.call(0);
}

#[tokio::test]
#[should_panic(expected = "without a ready `poll_ready`")]
async fn readiness_is_spent_by_a_call() {
    let mut mock = Mock::<u64>::new();
    mock.ready().await.unwrap();
    let _first = mock.call(0);
    let _unready_again = mock.call(1);
}
