//! Batch fan-out through the mock, on paused tokio time.

mod support;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use futures::task::{ArcWake, waker};
use palisade::BatchLayer;
use palisade::batch::{Batch, Elapsed, ItemError, Settled, settle_all};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestRunner};
use support::*;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

type Out = Settled<Reply<u64>, ItemError<MockError>>;

fn layer(max_in_flight: usize) -> BatchLayer {
    BatchLayer::builder()
        .max_in_flight(max_in_flight)
        .build()
        .unwrap()
}

/// Sends `0..n` through a batch of `mock` and checks the one-result-per-
/// request-in-order invariant every test relies on.
async fn run(layer: BatchLayer, mock: Mock, n: u64) -> Out {
    let settled = layer.layer(mock).oneshot((0..n).collect()).await.unwrap();
    assert_eq!(settled.len() as u64, n);
    assert_eq!(settled.fulfilled() + settled.rejected(), settled.len());
    for (i, result) in settled.iter().enumerate() {
        if let Ok(reply) = result {
            assert_eq!(reply.request, i as u64, "result in the wrong slot");
        }
    }
    settled
}

/// A latency in 0..50 ms drawn from the request number (SplitMix64).
fn jitter_latency(seed: u64, n: u64) -> Duration {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ms((z ^ (z >> 31)) % 50)
}

#[test]
fn order_preserved_under_random_latencies() {
    let config = Config {
        cases: 64,
        rng_seed: RngSeed::Fixed(0xBA7C4),
        failure_persistence: None,
        ..Config::default()
    };
    let strategy = (
        prop::collection::vec((0u64..40, any::<bool>()), 0..120),
        1usize..16,
    );
    TestRunner::new(config)
        .run(&strategy, |(plan, max_in_flight)| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let n = plan.len() as u64;
            let steps = plan.clone();
            let mock = Mock::new().outcome_fn(move |_, &req| {
                let (latency, fails) = steps[req as usize];
                let step = if fails { Step::err() } else { Step::ok() };
                step.after(ms(latency + 1))
            });
            let h = mock.handle();
            let settled = rt.block_on(run(layer(max_in_flight), mock, n));
            for (i, result) in settled.iter().enumerate() {
                prop_assert_eq!(result.is_err(), plan[i].1, "item {}", i);
            }
            prop_assert!(h.peak_in_flight() <= max_in_flight as u64);
            prop_assert_eq!(h.calls(), n);
            Ok(())
        })
        .unwrap();
}

#[test]
fn every_item_settles_once_under_capacity_limits_and_ready_errors() {
    let config = Config {
        cases: 64,
        rng_seed: RngSeed::Fixed(0x5E771ED),
        failure_persistence: None,
        ..Config::default()
    };
    let strategy = (
        prop::collection::vec(0u64..30, 0..100),
        prop::collection::vec(any::<bool>(), 0..30),
        1usize..12,
        1u64..6,
    );
    TestRunner::new(config)
        .run(
            &strategy,
            |(latencies, ready_errs, max_in_flight, capacity)| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .start_paused(true)
                    .build()
                    .unwrap();
                let n = latencies.len() as u64;
                let errs = ready_errs.iter().filter(|e| **e).count();
                let script = ready_errs
                    .iter()
                    .map(|e| if *e { ReadyStep::Err } else { ReadyStep::Ready });
                let steps = latencies.clone();
                let mock = Mock::new()
                    .capacity(capacity)
                    .ready_script(script)
                    .outcome_fn(move |_, &req| Step::ok().after(ms(steps[req as usize] + 1)));
                let h = mock.handle();
                let settled = rt.block_on(run(layer(max_in_flight), mock, n));
                let not_ready = settled
                    .iter()
                    .filter(|r| matches!(r, Err(ItemError::NotReady(_))))
                    .count();
                // Every other item was sent exactly once and succeeded.
                prop_assert_eq!(settled.rejected(), not_ready);
                prop_assert!(not_ready <= errs);
                prop_assert_eq!(h.calls(), n - not_ready as u64);
                prop_assert!(h.peak_in_flight() <= capacity.min(max_in_flight as u64));
                prop_assert_eq!(h.in_flight(), 0);
                Ok(())
            },
        )
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn mixed_failures_settle_in_their_slots_and_the_batch_succeeds() {
    let mock = Mock::new().fail_rate(0.3, 42).latency(ms(5));
    let h = mock.handle();
    let settled = run(layer(8), mock, 500).await;
    assert_eq!(settled.rejected() as u64, h.failures());
    assert_eq!(settled.fulfilled() as u64, h.successes());
    assert!(settled.rejected() > 100 && settled.rejected() < 200);
    for (_, err) in settled.iter_rejected() {
        assert!(matches!(err, ItemError::Service(MockError { call }) if *call < 500));
    }
    let (oks, errs) = settled.into_parts();
    assert_eq!(oks.len() + errs.len(), 500);
    assert!(oks.iter().all(|(i, reply)| reply.request == *i as u64));
}

#[tokio::test(start_paused = true)]
async fn in_flight_peak_reaches_max_in_flight_and_never_passes_it() {
    for max in [1, 7, 64] {
        let mock = Mock::new().outcome_fn(|n, _| Step::ok().after(jitter_latency(9, n) + ms(1)));
        let h = mock.handle();
        let settled = run(layer(max), mock, 1_000).await;
        assert!(settled.all_fulfilled());
        assert_eq!(h.peak_in_flight(), max as u64);
    }
}

#[tokio::test(start_paused = true)]
async fn inner_capacity_holds_the_batch_back() {
    // The batch would allow 10; the service's poll_ready allows 3.
    let mock = Mock::new().capacity(3).latency(ms(10));
    let h = mock.handle();
    let start = Instant::now();
    let settled = run(layer(10), mock, 30).await;
    assert!(settled.all_fulfilled());
    assert_eq!(h.peak_in_flight(), 3);
    assert_eq!(start.elapsed(), ms(100));
}

#[tokio::test(start_paused = true)]
async fn batch_deadline_cancels_in_flight_and_settles_unsent_items() {
    // Items 0..4 are fast, the rest hang. Two at a time, so after the
    // fast ones two hanging calls are in flight and the rest never start.
    let mock = Mock::new().outcome_fn(|_, &req| {
        if req < 4 {
            Step::ok().after(ms(10))
        } else {
            Step::hang()
        }
    });
    let h = mock.handle();
    let layer = BatchLayer::builder()
        .max_in_flight(2)
        .deadline(ms(100))
        .build()
        .unwrap();
    let start = Instant::now();
    let settled = run(layer, mock, 10).await;
    assert_eq!(start.elapsed(), ms(100));
    assert_eq!((settled.fulfilled(), settled.rejected()), (4, 6));
    for (_, err) in settled.iter_rejected() {
        assert_eq!(*err, ItemError::Timeout(Elapsed::BatchDeadline));
    }
    assert_eq!(h.calls(), 6, "items 6.. were never sent");
    assert_eq!(h.cancelled(), 2);
    assert_eq!(h.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn item_timeout_counts_from_the_call_and_names_itself() {
    // One call at a time: waiting for the slot must not count.
    let mock =
        Mock::new().outcome_fn(|_, &req| Step::ok().after(ms(if req % 3 == 0 { 150 } else { 60 })));
    let h = mock.handle();
    let layer = BatchLayer::builder()
        .max_in_flight(1)
        .item_timeout(ms(100))
        .build()
        .unwrap();
    let start = Instant::now();
    let settled = run(layer, mock, 6).await;
    // Items 0 and 3 are cut at 100 ms, the others take 60 ms each.
    assert_eq!(start.elapsed(), ms(2 * 100 + 4 * 60));
    for (i, result) in settled.iter().enumerate() {
        if i % 3 == 0 {
            assert_eq!(*result, Err(ItemError::Timeout(Elapsed::ItemTimeout)));
        } else {
            assert!(result.is_ok());
        }
    }
    assert_eq!(h.cancelled(), 2);
}

#[tokio::test(start_paused = true)]
async fn both_limits_each_name_the_one_that_fired() {
    // Item 0 hangs (item timeout at 50 ms); item 1 takes 40 ms per call but
    // starts after item 0 gives way, item 2 hangs past the deadline.
    let mock = Mock::new().script([
        Step::hang(),
        Step::ok().after(ms(40)),
        Step::ok().after(ms(45)),
    ]);
    let layer = BatchLayer::builder()
        .max_in_flight(1)
        .item_timeout(ms(50))
        .deadline(ms(120))
        .build()
        .unwrap();
    let settled = run(layer, mock, 3).await;
    // 0: timed out at 50; 1: done at 90; 2: would end at 135 > 120.
    assert_eq!(settled[0], Err(ItemError::Timeout(Elapsed::ItemTimeout)));
    assert!(settled[1].is_ok());
    assert_eq!(settled[2], Err(ItemError::Timeout(Elapsed::BatchDeadline)));
    assert_eq!(
        settled[0].as_ref().unwrap_err().to_string(),
        "item timeout elapsed"
    );
}

#[tokio::test(start_paused = true)]
async fn service_that_never_gets_ready_hits_the_deadline_unsent() {
    let mock = Mock::new().capacity(0);
    let h = mock.handle();
    let layer = BatchLayer::builder().deadline(ms(30)).build().unwrap();
    let settled = run(layer, mock, 5).await;
    assert_eq!(settled.rejected(), 5);
    assert!(settled.iter().all(|r| r.as_ref().unwrap_err().is_timeout()));
    assert_eq!(h.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_errors_settle_their_item_and_the_batch_goes_on() {
    use ReadyStep::{Err as Fail, Ready};
    let mock = Mock::new()
        .ready_script([Fail, Fail, Ready, Fail])
        .latency(ms(5));
    let h = mock.handle();
    let settled = run(layer(4), mock, 8).await;
    // Items 0, 1 and 3 met a failing poll_ready and were never sent.
    let not_ready = ItemError::NotReady(MockError { call: u64::MAX });
    for i in [0, 1, 3] {
        assert_eq!(settled[i], Err(not_ready.clone()));
    }
    for i in [2, 4, 5, 6, 7] {
        assert!(settled[i].is_ok(), "item {i}");
    }
    assert_eq!(h.calls(), 5);
    assert_eq!(
        settled[0].as_ref().unwrap_err().to_string(),
        "service not ready, item not sent: mock poll_ready failed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_service_that_cannot_recover_fails_each_item_not_the_batch() {
    let mock = Mock::new().ready_script(std::iter::repeat_n(ReadyStep::Err, 1_000));
    let h = mock.handle();
    let settled = run(layer(16), mock, 1_000).await;
    assert_eq!(settled.rejected(), 1_000);
    assert!(
        settled
            .iter()
            .all(|r| matches!(r, Err(ItemError::NotReady(_))))
    );
    assert_eq!(h.calls(), 0);
    // One poll per item: discarded instances are not retried in a loop.
    assert_eq!(h.ready_polls(), 1_000);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_batch_cancels_every_call_in_flight() {
    let mock = Mock::new().hang();
    let h = mock.handle();
    let mut batch = layer(5).layer(mock);
    let fut = batch.ready().await.unwrap().call((0..20u64).collect());
    let mut fut = Box::pin(fut);
    assert!(futures::poll!(fut.as_mut()).is_pending());
    assert_eq!((h.calls(), h.in_flight()), (5, 5));
    drop(fut);
    assert_eq!(h.cancelled(), 5);
    assert_eq!(h.in_flight(), 0);
    assert_eq!(h.calls(), 5, "nothing sent after the drop");
}

#[tokio::test(start_paused = true)]
async fn an_empty_batch_answers_at_once() {
    let mock = Mock::new().hang();
    let h = mock.handle();
    let layer = BatchLayer::builder().deadline(ms(10)).build().unwrap();
    let mut batch = layer.layer(mock);
    let settled = batch
        .call(Vec::<u64>::new())
        .now_or_never()
        .expect("ready on first poll")
        .unwrap();
    assert!(settled.is_empty() && settled.all_fulfilled());
    assert_eq!((h.calls(), h.ready_polls()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_hundred_thousand_items() {
    let mock = Mock::new().fail_rate(0.01, 3).latency(ms(1));
    let h = mock.handle();
    let start = Instant::now();
    let settled = run(layer(1_000), mock, 100_000).await;
    assert_eq!(settled.rejected() as u64, h.failures());
    assert_eq!(h.calls(), 100_000);
    assert_eq!(h.peak_in_flight(), 1_000);
    // 100 waves of 1,000 calls of 1 ms each.
    assert_eq!(start.elapsed(), ms(100));
}

#[tokio::test(start_paused = true)]
async fn a_thousand_calls_of_10ms_at_100_in_flight_take_100ms() {
    let mock = Mock::new().latency(ms(10));
    let start = Instant::now();
    let settled = run(layer(100), mock, 1_000).await;
    assert!(settled.all_fulfilled());
    assert_eq!(start.elapsed(), ms(100));
}

/// A waker that counts its wake-ups.
struct CountingWaker(AtomicUsize);

impl ArcWake for CountingWaker {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.0.fetch_add(1, SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn instant_answers_do_not_hog_the_thread() {
    // A service that answers before it is polled twice: without a yield,
    // one poll would run the whole batch.
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let svc = tower::service_fn(move |n: u64| {
        counted.fetch_add(1, SeqCst);
        std::future::ready(Ok::<_, MockError>(n))
    });
    let count = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let waker = waker(count.clone());
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(settle_all(svc, 0..10_000u64));
    let mut polls = 0;
    let settled = loop {
        polls += 1;
        let woken = count.0.load(SeqCst);
        match fut.as_mut().poll(&mut cx) {
            Poll::Ready(settled) => break settled,
            Poll::Pending => {
                assert_eq!(count.0.load(SeqCst), woken + 1, "yielded without a wake-up");
                if polls == 1 {
                    assert!(calls.load(SeqCst) <= 128, "first poll ran {calls:?} calls");
                }
            }
        }
    };
    assert!(settled.all_fulfilled());
    assert!(settled.iter().enumerate().all(|(i, r)| *r == Ok(i as u64)));
    // Two steps per item (start, settle), at most 128 per poll.
    assert!(polls >= 2 * 10_000 / 128, "polls: {polls}");
}

#[tokio::test(start_paused = true)]
async fn a_runaway_batch_lets_other_tasks_run() {
    let ticks = Arc::new(AtomicUsize::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                ticks.fetch_add(1, SeqCst);
                tokio::task::yield_now().await;
            }
        })
    };
    tokio::task::yield_now().await;
    let before = ticks.load(SeqCst);
    let svc = tower::service_fn(|n: u64| std::future::ready(Ok::<_, MockError>(n)));
    let settled = settle_all(svc, 0..50_000u64).await;
    assert_eq!(settled.len(), 50_000);
    assert!(ticks.load(SeqCst) - before > 100, "the other task starved");
    ticker.abort();
}

#[tokio::test(start_paused = true)]
async fn accepts_any_finite_iterator() {
    let mut batch = layer(4).layer(Mock::new());
    let from_vec = batch
        .ready()
        .await
        .unwrap()
        .call(vec![5, 6, 7])
        .await
        .unwrap();
    assert_eq!(from_vec[2].as_ref().unwrap().request, 7);
    let from_array = settle_all(Mock::new(), [5u64, 6, 7]).await;
    assert_eq!(from_array[2].as_ref().unwrap().request, 7);
    let deque: VecDeque<u64> = (0..10).collect();
    let from_deque = layer(3).settle_all(Mock::new(), deque).await;
    assert_eq!(from_deque.len(), 10);
    // A size_hint that lies (claims more) costs nothing but capacity.
    struct Liar(std::ops::Range<u64>);
    impl Iterator for Liar {
        type Item = u64;
        fn next(&mut self) -> Option<u64> {
            self.0.next()
        }
        fn size_hint(&self) -> (usize, Option<usize>) {
            (1_000, Some(1_000))
        }
    }
    let from_liar = settle_all(Mock::new(), Liar(0..3)).await;
    assert_eq!(from_liar.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn settle_all_with_options_and_with_defaults() {
    let mock = Mock::new().latency(ms(10));
    let h = mock.handle();
    let settled = settle_all(mock.clone(), vec![1u64, 2, 3]).await;
    assert_eq!(settled.fulfilled(), 3);
    let settled = layer(2).settle_all(mock, 0..10u64).await;
    assert_eq!(settled.fulfilled(), 10);
    assert_eq!(h.peak_in_flight(), 3);
}

#[tokio::test(start_paused = true)]
async fn one_layer_many_batches_each_with_its_own_bound() {
    // Clones of a Batch run their batches independently: the bound is per
    // batch (a shared bound belongs in a concurrency limit below).
    let mock = Mock::new().latency(ms(10));
    let h = mock.handle();
    let batch = ServiceBuilder::new().layer(layer(4)).service(mock);
    let (a, b) = tokio::join!(
        batch.clone().oneshot((0..40u64).collect()),
        batch.oneshot((0..40u64).collect())
    );
    assert!(a.unwrap().all_fulfilled() && b.unwrap().all_fulfilled());
    assert_eq!(h.peak_in_flight(), 8);
}

#[test]
fn the_batch_future_is_send_when_its_parts_are() {
    fn assert_send<T: Send>(_: &T) {}
    let mut batch: Batch<Mock> = layer(1).layer(Mock::new());
    let fut = batch.call(vec![1u64]);
    assert_send(&fut);
    assert_send(&settle_all(Mock::new(), vec![1u64]));
}

#[test]
fn the_batch_future_needs_no_send_or_static() {
    // A non-Send service borrowing local data works too.
    let local = std::rc::Rc::new(3u64);
    let svc = tower::service_fn(|n: u64| {
        let local = local.clone();
        std::future::ready(Ok::<_, MockError>(n * *local))
    });
    let settled = settle_all(svc, 0..4u64).now_or_never().unwrap();
    assert_eq!(settled.into_results(), vec![Ok(0), Ok(3), Ok(6), Ok(9)]);
}

/// Collects what `tracing` prints.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_warning_names_the_failure_count_only_when_items_failed() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let mock = Mock::new().script([Step::err(), Step::ok(), Step::err(), Step::err()]);
    run(layer(2), mock, 6).await;
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("WARN"), "{text}");
    assert!(text.contains("batch completed with 3 failures"), "{text}");

    logs.0.lock().unwrap().clear();
    run(layer(2), Mock::new(), 6).await;
    assert!(logs.0.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn item_errors_convert_to_box_error_with_the_inner_error_unchanged() {
    let mock = Mock::new().script([Step::err()]);
    let settled = run(layer(1), mock, 1).await;
    let err = settled.into_results().remove(0).unwrap_err();
    assert_eq!(err.inner(), Some(&MockError { call: 0 }));
    let boxed = err.into_box_error();
    assert_eq!(
        boxed.downcast_ref::<MockError>(),
        Some(&MockError { call: 0 })
    );
    let timeout: palisade::BoxError =
        ItemError::<MockError>::Timeout(Elapsed::BatchDeadline).into_box_error();
    assert_eq!(
        timeout.downcast_ref::<Elapsed>(),
        Some(&Elapsed::BatchDeadline)
    );
}

/// A service whose instance stays broken after a failed `poll_ready` (as
/// tower-service allows), while a fresh clone works.
struct BreaksOnError {
    inner: Mock,
    broken: bool,
}

impl Clone for BreaksOnError {
    /// A clone is a new instance: not ready, not broken.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            broken: false,
        }
    }
}

impl Service<u64> for BreaksOnError {
    type Response = Reply<u64>;
    type Error = MockError;
    type Future = <Mock as Service<u64>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), MockError>> {
        if self.broken {
            return Poll::Ready(Err(MockError { call: u64::MAX - 1 }));
        }
        let ready = self.inner.poll_ready(cx);
        self.broken = matches!(ready, Poll::Ready(Err(_)));
        ready
    }

    fn call(&mut self, request: u64) -> Self::Future {
        self.inner.call(request)
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_instance_is_discarded_for_a_fresh_clone() {
    let mock = Mock::new().ready_script([ReadyStep::Err]);
    let h = mock.handle();
    let svc = BreaksOnError {
        inner: mock,
        broken: false,
    };
    let settled = layer(2).settle_all(svc, 0..5u64).await;
    assert_eq!(
        settled[0],
        Err(ItemError::NotReady(MockError { call: u64::MAX }))
    );
    assert_eq!(settled.fulfilled(), 4, "{settled:?}");
    assert_eq!(h.calls(), 4);
}
