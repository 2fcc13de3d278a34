//! Event hooks on every layer: each fires once per event with the right
//! data, in order, across clones and threads; a panicking hook neither
//! poisons nor wedges its layer.

mod support;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::batch::BatchLayer;
use palisade::circuit_breaker::{
    AdaptiveThrottleLayer, CallRejected, CircuitOpen, State, StateChange, Window,
};
use palisade::concurrency::Overloaded;
use palisade::rate_limit::{RateLimitRefused, RefusalReason};
use palisade::retry::{BudgetRefused, RetryBudget, RetryScheduled};
use palisade::{CircuitBreakerLayer, ConcurrencyLimitLayer, RateLimitLayer, RetryLayer};
use support::{Mock, Step, ms};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

/// A hook that records every event it is given.
fn recorder<E: Clone + Send + 'static>() -> (Arc<Mutex<Vec<E>>>, impl Fn(&E) + Send + Sync + 'static)
{
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    (events, move |e: &E| sink.lock().unwrap().push(e.clone()))
}

fn take<E: Clone>(events: &Arc<Mutex<Vec<E>>>) -> Vec<E> {
    std::mem::take(&mut *events.lock().unwrap())
}

#[tokio::test(start_paused = true)]
async fn breaker_hooks_fire_once_per_event_in_order() {
    let (changes, on_change) = recorder::<StateChange>();
    let (rejections, on_rejected) = recorder::<CallRejected>();
    let layer = CircuitBreakerLayer::consecutive_failures(1)
        .open_for(Duration::from_secs(1))
        .name("b")
        .on_state_change(on_change)
        .on_rejected(on_rejected)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(Mock::new().script([Step::err()]));
    assert!(svc.clone().oneshot(1).await.is_err()); // trips
    let err = svc.clone().oneshot(2).await.unwrap_err();
    let wait = err.downcast_ref::<CircuitOpen>().unwrap().retry_after;
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(svc.clone().oneshot(3).await.is_ok()); // the probe closes it
    assert!(svc.clone().oneshot(4).await.is_ok()); // nothing to report
    handle.force_open();
    handle.force_open(); // already there: no transition, no event
    handle.reset();

    let seen: Vec<_> = take(&changes)
        .into_iter()
        .map(|e| {
            assert_eq!((&*e.name, e.key.as_deref()), ("b", None));
            (e.from, e.to)
        })
        .collect();
    use State::*;
    assert_eq!(
        seen,
        [
            (Closed, Open),
            (Open, HalfOpen),
            (HalfOpen, Closed),
            (Closed, ForcedOpen),
            (ForcedOpen, Closed)
        ]
    );
    let rejected = take(&rejections);
    assert_eq!(rejected.len(), 1);
    assert_eq!((&*rejected[0].name, rejected[0].retry_after), ("b", wait));
    assert_eq!(wait, Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn keyed_breaker_hooks_carry_the_key() {
    let (changes, on_change) = recorder::<StateChange>();
    let (rejections, on_rejected) = recorder::<CallRejected>();
    let layer = CircuitBreakerLayer::consecutive_failures(1)
        .name("kb")
        .on_state_change(on_change)
        .on_rejected(on_rejected)
        .keyed(|r: &&'static str| *r)
        .build()
        .unwrap();
    let mock = Mock::new().outcome_fn(|_, r: &&str| {
        if *r == "down" {
            Step::err()
        } else {
            Step::ok()
        }
    });
    let svc = layer.layer(mock);
    for r in ["up", "down", "down", "up"] {
        let _ = svc.clone().oneshot(r).await;
    }
    let changes = take(&changes);
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (
            &*changes[0].name,
            changes[0].key.as_deref(),
            changes[0].from,
            changes[0].to
        ),
        ("kb", Some("\"down\""), State::Closed, State::Open)
    );
    let rejections = take(&rejections);
    assert_eq!(rejections.len(), 1);
    assert_eq!(rejections[0].key.as_deref(), Some("\"down\""));
}

#[tokio::test(start_paused = true)]
async fn retry_hooks_report_each_scheduled_retry_and_budget_refusal() {
    let (retries, on_retry) = recorder::<RetryScheduled>();
    let (refusals, on_refused) = recorder::<BudgetRefused>();
    let layer = RetryLayer::exponential(ms(10))
        .max_attempts(3)
        .budget(
            RetryBudget::ratio(0.0)
                .min_per_sec(2)
                .ttl(Duration::from_secs(1)),
        )
        .name("r")
        .on_retry(on_retry)
        .on_budget_refused(on_refused)
        .build()
        .unwrap();
    let svc = layer.layer(Mock::new().script([Step::err(), Step::err(), Step::ok(), Step::err()]));
    assert!(svc.clone().oneshot(1).await.is_ok());
    assert!(svc.clone().oneshot(2).await.is_err());
    let seen: Vec<_> = take(&retries)
        .into_iter()
        .map(|e| (e.name.to_string(), e.attempt, e.delay, e.after_rejection))
        .collect();
    assert_eq!(
        seen,
        [
            ("r".into(), 2, ms(10), false),
            ("r".into(), 3, ms(20), false)
        ]
    );
    let refused = take(&refusals);
    assert_eq!(refused.len(), 1);
    assert_eq!((&*refused[0].name, refused[0].attempt), ("r", 1));
}

#[tokio::test(start_paused = true)]
async fn retry_hook_marks_a_wait_for_a_local_rejection() {
    let (retries, on_retry) = recorder::<RetryScheduled>();
    let retry = RetryLayer::exponential(ms(1))
        .max_attempts(2)
        .max_retry_after(Duration::from_secs(1))
        .on_retry(on_retry)
        .build()
        .unwrap();
    let limiter = RateLimitLayer::token_bucket(1, ms(100)).build().unwrap();
    let svc = ServiceBuilder::new()
        .layer(retry)
        .layer(limiter)
        .service(Mock::new());
    assert!(svc.clone().oneshot(1).await.is_ok());
    assert!(svc.clone().oneshot(2).await.is_ok()); // refused, waited out, admitted
    let seen = take(&retries);
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].attempt, seen[0].delay, seen[0].after_rejection),
        (2, ms(100), true)
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limit_hook_reports_reason_wait_and_key() {
    let (refusals, on_refused) = recorder::<RateLimitRefused>();
    let costed = RateLimitLayer::token_bucket(1, Duration::from_secs(1))
        .burst(2)
        .cost(|r: &u32| u64::from(*r))
        .name("costed")
        .on_refused(on_refused)
        .build()
        .unwrap();
    let svc = costed.layer(Mock::new());
    for cost in [2, 1, 3] {
        let _ = svc.clone().oneshot(cost).await;
    }
    let seen = take(&refusals);
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (
            &*seen[0].name,
            seen[0].reason,
            seen[0].retry_after,
            seen[0].key_hash
        ),
        (
            "costed",
            RefusalReason::Limited,
            Some(Duration::from_secs(1)),
            None
        )
    );
    assert_eq!(
        (seen[1].reason, seen[1].retry_after),
        (RefusalReason::InsufficientCapacity, None)
    );

    let (refusals, on_refused) = recorder::<RateLimitRefused>();
    let keyed = RateLimitLayer::token_bucket(1, Duration::from_secs(1))
        .keyed(|r: &u32| *r)
        .on_refused(on_refused)
        .build()
        .unwrap();
    let svc = keyed.layer(Mock::new());
    for key in [1, 2, 1, 2, 1] {
        let _ = svc.clone().oneshot(key).await;
    }
    let seen = take(&refusals);
    assert_eq!(seen.len(), 3);
    let hashes: Vec<u64> = seen.iter().map(|e| e.key_hash.unwrap()).collect();
    assert_eq!(hashes[0], hashes[2], "the same key, the same hash");
    assert_ne!(hashes[0], hashes[1], "another key");
}

#[tokio::test(start_paused = true)]
async fn concurrency_hooks_report_refusals_and_each_limit_change() {
    let (changes, on_change) = recorder();
    let (rejections, on_rejected) = recorder();
    let layer = ConcurrencyLimitLayer::gradient2()
        .initial_limit(4)
        .name("c")
        .on_limit_change(on_change)
        .on_rejected(on_rejected)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.clone().layer(Mock::new().hang());
    let held: Vec<_> = (0..4)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    tokio::task::yield_now().await;
    assert!(svc.clone().oneshot(9).await.unwrap_err().is::<Overloaded>());
    held.iter().for_each(|h| h.abort());
    for h in held {
        let _ = h.await;
    }
    let rejected: Vec<palisade::concurrency::ConcurrencyRejected> = take(&rejections);
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        (&*rejected[0].name, rejected[0].limit, rejected[0].in_flight),
        ("c", 4, 4)
    );

    let svc = layer.layer(Mock::new().default_step(Step::err().after(ms(5))));
    for i in 0..200 {
        let _ = svc.clone().oneshot(i).await;
    }
    let changes: Vec<palisade::concurrency::LimitChanged> = take(&changes);
    assert!(!changes.is_empty());
    // A chain: each change starts where the last ended, from the initial
    // limit to the handle's.
    let mut limit = 4;
    for c in &changes {
        assert_eq!(c.from, limit);
        assert_ne!(c.from, c.to);
        limit = c.to;
    }
    assert_eq!(limit, handle.limit());
}

#[tokio::test(start_paused = true)]
async fn batch_hook_fires_once_per_batch_with_its_counts() {
    let (settled, on_settled) = recorder::<palisade::batch::BatchSettled>();
    let layer = BatchLayer::builder()
        .name("bt")
        .on_settled(on_settled)
        .build()
        .unwrap();
    let mut svc = layer.layer(Mock::new().script([Step::ok(), Step::err(), Step::ok()]));
    let _ = svc.ready().await.unwrap().call(vec![1, 2, 3]).await;
    let _ = svc.ready().await.unwrap().call(vec![]).await;
    let seen: Vec<_> = take(&settled)
        .into_iter()
        .map(|e| (e.name.to_string(), e.fulfilled, e.rejected))
        .collect();
    assert_eq!(seen, [("bt".into(), 2, 1), ("bt".into(), 0, 0)]);
}

/// A layer built per connection must not leak: its hook, and whatever the
/// hook captured, go when the layer and its services and batches do.
#[tokio::test(start_paused = true)]
async fn a_batch_layers_hook_is_dropped_with_the_layer() {
    let captured = Arc::new(());
    let held = captured.clone();
    let layer = BatchLayer::builder()
        .on_settled(move |_| assert!(Arc::strong_count(&held) >= 2))
        .build()
        .unwrap();
    let mut svc = layer.layer(Mock::new());
    let _ = svc.ready().await.unwrap().call(vec![1]).await;
    assert_eq!(Arc::strong_count(&captured), 2);
    drop((layer, svc));
    assert_eq!(Arc::strong_count(&captured), 1);
}

#[tokio::test(start_paused = true)]
async fn throttle_hook_fires_once_per_local_refusal() {
    let (refusals, on_refused) = recorder::<palisade::circuit_breaker::ThrottleRefused>();
    let layer = AdaptiveThrottleLayer::builder()
        .window(Window::time(Duration::from_secs(60)))
        .seed(3)
        .name("t")
        .on_refused(on_refused)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(Mock::new().default_step(Step::err()));
    for i in 0..100 {
        let _ = svc.clone().oneshot(i).await;
    }
    let seen = take(&refusals);
    assert!(seen.len() > 10);
    assert_eq!(seen.len() as u64, handle.counts().throttled);
    assert!(
        seen.iter()
            .all(|e| &*e.name == "t" && e.probability > 0.0 && e.probability <= 1.0)
    );
}

// ------------------------------------------------- clones and threads

const THREADS: usize = 4;
const CALLS: usize = 250;

/// Runs `f(thread)` on `THREADS` OS threads, each with its own runtime.
fn on_threads(f: impl Fn(usize) + Send + Sync + 'static) {
    let f = Arc::new(f);
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let f = f.clone();
            std::thread::spawn(move || f(t))
        })
        .collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn hooks_fire_once_per_event_across_clones_and_threads() {
    // A breaker forced open: every call from every clone on every thread
    // is rejected, and reported exactly once.
    let rejected = Arc::new(AtomicU64::new(0));
    let count = rejected.clone();
    let layer = CircuitBreakerLayer::consecutive_failures(1)
        .on_rejected(move |_| {
            count.fetch_add(1, Relaxed);
        })
        .build()
        .unwrap();
    layer.handle().force_open();
    let handle = layer.handle();
    let svc = layer.layer(Mock::<u32>::new());
    on_threads(move |_| {
        block_on(async {
            for i in 0..CALLS {
                assert!(svc.clone().oneshot(i as u32).await.is_err());
            }
        })
    });
    assert_eq!(rejected.load(Relaxed), (THREADS * CALLS) as u64);
    assert_eq!(handle.counts().rejections, (THREADS * CALLS) as u64);

    // A keyed breaker, one failing key per thread: each key trips once,
    // its one event carries its key, and events of one key arrive in order.
    let (changes, on_change) = recorder::<StateChange>();
    let layer = CircuitBreakerLayer::consecutive_failures(3)
        .open_for(Duration::from_secs(1))
        .on_state_change(on_change)
        .keyed(|r: &(usize, u32)| r.0)
        .build()
        .unwrap();
    let svc = layer.layer(Mock::new().default_step(Step::err()));
    on_threads(move |t| {
        block_on(async {
            for i in 0..CALLS {
                let _ = svc.clone().oneshot((t, i as u32)).await;
                if i % 50 == 49 {
                    // open -> half-open (a probe, which fails) -> open
                    tokio::time::advance(Duration::from_secs(2)).await;
                }
            }
        })
    });
    let changes = take(&changes);
    for t in 0..THREADS {
        let key = t.to_string();
        let mine: Vec<_> = changes
            .iter()
            .filter(|e| e.key.as_deref() == Some(key.as_str()))
            .map(|e| (e.from, e.to))
            .collect();
        // Trip, then four rounds of half-open -> open.
        let mut expected = vec![(State::Closed, State::Open)];
        for _ in 0..4 {
            expected.push((State::Open, State::HalfOpen));
            expected.push((State::HalfOpen, State::Open));
        }
        assert_eq!(mine, expected, "key {key}");
    }
    assert_eq!(changes.len(), THREADS * 9);

    // A rate limit shared by every clone: each refusal reported once.
    let refused = Arc::new(AtomicU64::new(0));
    let count = refused.clone();
    let layer = RateLimitLayer::token_bucket(10, Duration::from_secs(3600))
        .burst(10)
        .on_refused(move |_| {
            count.fetch_add(1, Relaxed);
        })
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(Mock::<u32>::new());
    on_threads(move |_| {
        block_on(async {
            for i in 0..CALLS {
                let _ = svc.clone().oneshot(i as u32).await;
            }
        })
    });
    assert_eq!(handle.admitted(), 10);
    assert_eq!(refused.load(Relaxed), (THREADS * CALLS - 10) as u64);
    assert_eq!(handle.rejected(), refused.load(Relaxed));
}

// ---------------------------------------------------- panicking hooks

#[tokio::test(start_paused = true)]
async fn a_panicking_hook_wedges_no_layer() {
    // Keyed rate limit: the hook runs after the shard's lock is released,
    // so a panic poisons nothing and the same key is served on.
    let layer = RateLimitLayer::token_bucket(1, Duration::from_secs(1))
        .keyed(|r: &u32| *r % 2)
        .on_refused(|_| panic!("hook bug"))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(Mock::new());
    for round in 0..3 {
        assert!(svc.clone().oneshot(0).await.is_ok(), "round {round}");
        assert!(svc.clone().oneshot(0).await.is_err());
        assert!(svc.clone().oneshot(1).await.is_ok());
        tokio::time::advance(Duration::from_secs(1)).await;
    }
    assert_eq!((handle.admitted(), handle.rejected()), (6, 3));

    // Retry: the retry is still sent.
    let layer = RetryLayer::exponential(ms(1))
        .on_retry(|_| panic!("hook bug"))
        .build()
        .unwrap();
    let svc = layer.layer(Mock::new().script([Step::err()]));
    assert!(svc.oneshot(1).await.is_ok());

    // Concurrency limit: the refusal stands, the permits come back.
    let layer = ConcurrencyLimitLayer::fixed(1)
        .on_rejected(|_| panic!("hook bug"))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(Mock::new().latency(ms(10)));
    let first = tokio::spawn(svc.clone().oneshot(1));
    tokio::task::yield_now().await;
    assert!(svc.clone().oneshot(2).await.unwrap_err().is::<Overloaded>());
    assert!(first.await.unwrap().is_ok());
    assert_eq!(handle.in_flight(), 0);
    assert!(svc.oneshot(3).await.is_ok());

    // Batch: the results come back.
    let layer = BatchLayer::builder()
        .on_settled(|_| panic!("hook bug"))
        .build()
        .unwrap();
    let mut svc = layer.layer(Mock::new());
    let settled = svc.ready().await.unwrap().call(vec![1, 2]).await.unwrap();
    assert_eq!(settled.fulfilled(), 2);
}
