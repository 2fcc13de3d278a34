//! Feature `metrics`: every layer against the mock, with `metrics-util`'s
//! debugging recorder; after a scripted run, every metric of
//! `palisade::metrics`'s table has exactly the expected value, and every
//! metric of the table is emitted by some layer.
//!
//! Each layer is built inside `metrics::with_local_recorder`: its handles
//! are registered by `build()` and stay bound to that recorder, so the run
//! itself happens anywhere (here, on a paused-time runtime).

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use palisade::batch::BatchLayer;
use palisade::circuit_breaker::{AdaptiveThrottleLayer, Window};
use palisade::concurrency::Overloaded;
use palisade::metrics::ALL;
use palisade::retry::RetryBudget;
use palisade::{CircuitBreakerLayer, ConcurrencyLimitLayer, RateLimitLayer, RetryLayer};
use support::{Mock, Step, ms};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

/// One snapshot: `name{label=value,...}` (labels sorted) to its value.
#[derive(Debug)]
struct Values(HashMap<String, DebugValue>);

impl Values {
    fn take(recorder: &DebuggingRecorder) -> Self {
        let mut map = HashMap::new();
        for (key, _, _, value) in recorder.snapshotter().snapshot().into_vec() {
            let key = key.key();
            let mut labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            map.insert(format!("{}{{{}}}", key.name(), labels.join(",")), value);
        }
        Self(map)
    }

    fn get(&self, metric: &str, labels: &[(&str, &str)]) -> &DebugValue {
        let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        l.sort();
        let key = format!("{metric}{{{}}}", l.join(","));
        self.0
            .get(&key)
            .unwrap_or_else(|| panic!("{key} not emitted; have {:?}", self.0.keys()))
    }

    fn counter(&self, metric: &str, labels: &[(&str, &str)]) -> u64 {
        match self.get(metric, labels) {
            DebugValue::Counter(n) => *n,
            other => panic!("{metric} is not a counter: {other:?}"),
        }
    }

    fn gauge(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        match self.get(metric, labels) {
            DebugValue::Gauge(g) => g.into_inner(),
            other => panic!("{metric} is not a gauge: {other:?}"),
        }
    }

    fn histogram(&self, metric: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        match self.get(metric, labels) {
            DebugValue::Histogram(h) => h.iter().map(|v| v.into_inner()).collect(),
            other => panic!("{metric} is not a histogram: {other:?}"),
        }
    }

    fn names(&self) -> BTreeSet<String> {
        self.0
            .keys()
            .map(|k| k.split('{').next().unwrap().to_owned())
            .collect()
    }

    /// Every entry, so a test can check that nothing unexpected was emitted.
    fn len(&self) -> usize {
        self.0.len()
    }
}

/// Builds inside the recorder's scope.
fn with<T>(recorder: &DebuggingRecorder, build: impl FnOnce() -> T) -> T {
    metrics::with_local_recorder(recorder, build)
}

// ---------------------------------------------------------------- breaker

async fn breaker_run() -> Values {
    let recorder = DebuggingRecorder::new();
    let layer = with(&recorder, || {
        CircuitBreakerLayer::consecutive_failures(2)
            .open_for(Duration::from_secs(10))
            .name("b")
            .build()
            .unwrap()
    });
    let handle = layer.handle();
    // Below the breaker, a limiter admitting one request in ten seconds:
    // its refusal is a local rejection, an ignored outcome for the breaker.
    // (Built outside the recorder: it reports nothing here.)
    let limiter = RateLimitLayer::token_bucket(1, Duration::from_secs(10))
        .build()
        .unwrap();
    let mock = Mock::new().script([Step::ok(), Step::err(), Step::err()]);
    let svc = ServiceBuilder::new()
        .layer(layer)
        .layer(limiter)
        .service(mock);
    // Limiter admits call 1 only (bucket of one, 10 s to refill).
    assert!(svc.clone().oneshot(1).await.is_ok()); // success
    assert!(svc.clone().oneshot(2).await.is_err()); // ignored (RateLimited)
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(svc.clone().oneshot(3).await.is_err()); // failure
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(svc.clone().oneshot(4).await.is_err()); // failure: trips (-> open)
    assert!(svc.clone().oneshot(5).await.is_err()); // rejected
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(svc.clone().oneshot(6).await.is_ok()); // probe (-> half-open), closes (-> closed)
    handle.force_open(); // -> forced-open
    handle.disable(); // -> disabled
    handle.reset(); // -> closed
    Values::take(&recorder)
}

#[tokio::test(start_paused = true)]
async fn breaker_metrics_have_exact_values() {
    let v = breaker_run().await;
    let n = ("name", "b");
    assert_eq!(
        v.counter("palisade_breaker_calls_total", &[n, ("outcome", "success")]),
        2
    );
    assert_eq!(
        v.counter("palisade_breaker_calls_total", &[n, ("outcome", "failure")]),
        2
    );
    assert_eq!(
        v.counter("palisade_breaker_calls_total", &[n, ("outcome", "ignored")]),
        1
    );
    assert_eq!(v.counter("palisade_breaker_rejections_total", &[n]), 1);
    for (to, count) in [
        ("open", 1),
        ("half-open", 1),
        ("closed", 2),
        ("forced-open", 1),
        ("disabled", 1),
    ] {
        assert_eq!(
            v.counter("palisade_breaker_transitions_total", &[n, ("to", to)]),
            count,
            "to {to}"
        );
    }
    assert_eq!(v.gauge("palisade_breaker_state", &[n]), 0.0);
    // 3 outcomes + 1 rejection + 5 transitions + the state gauge.
    assert_eq!(v.len(), 10);
}

async fn keyed_breaker_run() -> Values {
    let recorder = DebuggingRecorder::new();
    let layer = with(&recorder, || {
        CircuitBreakerLayer::consecutive_failures(2)
            .name("kb")
            .keyed(|r: &u32| *r % 10)
            .build()
            .unwrap()
    });
    // Key 0 fails, keys 1 and 2 succeed.
    let mock =
        Mock::new().outcome_fn(|_, r: &u32| if r % 10 == 0 { Step::err() } else { Step::ok() });
    let svc = layer.layer(mock);
    for r in [0, 10, 20, 1, 2] {
        let _ = svc.clone().oneshot(r).await;
    }
    Values::take(&recorder)
}

#[tokio::test(start_paused = true)]
async fn keyed_breaker_metrics_have_exact_values() {
    let v = keyed_breaker_run().await;
    let n = ("name", "kb");
    assert_eq!(
        v.counter("palisade_breaker_calls_total", &[n, ("outcome", "failure")]),
        2
    );
    assert_eq!(
        v.counter("palisade_breaker_calls_total", &[n, ("outcome", "success")]),
        2
    );
    assert_eq!(
        v.counter("palisade_breaker_calls_total", &[n, ("outcome", "ignored")]),
        0
    );
    assert_eq!(v.counter("palisade_breaker_rejections_total", &[n]), 1);
    assert_eq!(
        v.counter("palisade_breaker_transitions_total", &[n, ("to", "open")]),
        1
    );
    assert_eq!(
        v.counter("palisade_breaker_transitions_total", &[n, ("to", "closed")]),
        0
    );
    assert_eq!(v.gauge("palisade_breaker_keys", &[n]), 3.0);
    // No state gauge for a keyed breaker: a state per key.
    assert!(!v.names().contains("palisade_breaker_state"));
}

// ------------------------------------------------------------------ retry

async fn retry_run() -> Values {
    let recorder = DebuggingRecorder::new();
    let layer = with(&recorder, || {
        RetryLayer::exponential(ms(10))
            .max_attempts(3)
            // No ratio: only the reserve of 2 retries per second.
            .budget(
                RetryBudget::ratio(0.0)
                    .min_per_sec(2)
                    .ttl(Duration::from_secs(1)),
            )
            .name("r")
            .build()
            .unwrap()
    });
    let mock = Mock::new().script([
        Step::err(), // A: retried after 10 ms (budget 2 -> 1)
        Step::err(), // A: retried after 20 ms (budget 1 -> 0)
        Step::ok(),  // A: done, 3 attempts
        Step::err(), // B: the budget is empty: refused, returned
        Step::err(), // C (budget refilled): retried after 10 ms (2 -> 1)
        Step::ok(),  // C: done
    ]);
    let svc = layer.layer(mock);
    assert!(svc.clone().oneshot(1).await.is_ok());
    assert!(svc.clone().oneshot(2).await.is_err());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(svc.clone().oneshot(3).await.is_ok());
    Values::take(&recorder)
}

#[tokio::test(start_paused = true)]
async fn retry_metrics_have_exact_values() {
    let v = retry_run().await;
    let n = ("name", "r");
    assert_eq!(v.counter("palisade_retry_attempts_total", &[n]), 6);
    assert_eq!(v.counter("palisade_retry_retries_total", &[n]), 3);
    assert_eq!(v.counter("palisade_retry_budget_refusals_total", &[n]), 1);
    assert_eq!(v.gauge("palisade_retry_budget_balance", &[n]), 1.0);
    assert_eq!(
        v.histogram("palisade_retry_delay_seconds", &[n]),
        [0.01, 0.02, 0.01]
    );
    assert_eq!(v.len(), 5);
}

// ------------------------------------------------------------- rate limit

async fn rate_limit_run() -> Values {
    let recorder = DebuggingRecorder::new();
    let (costed, keyed, waiting, keyed_waiting) = with(&recorder, || {
        let costed = RateLimitLayer::token_bucket(1, Duration::from_secs(1))
            .burst(2)
            .cost(|r: &u32| u64::from(*r))
            .name("costed")
            .build()
            .unwrap();
        let keyed = RateLimitLayer::token_bucket(1, Duration::from_secs(1))
            .keyed(|r: &u32| *r)
            .name("keyed")
            .build()
            .unwrap();
        let waiting = RateLimitLayer::token_bucket(1, ms(100))
            .wait(Duration::from_secs(1))
            .name("waiting")
            .build()
            .unwrap();
        let keyed_waiting = RateLimitLayer::token_bucket(1, ms(100))
            .keyed(|r: &u32| *r)
            .wait(ms(150))
            .name("keyed-waiting")
            .build()
            .unwrap();
        (costed, keyed, waiting, keyed_waiting)
    });
    let svc = costed.layer(Mock::new());
    assert!(svc.clone().oneshot(1).await.is_ok());
    assert!(svc.clone().oneshot(1).await.is_ok());
    assert!(svc.clone().oneshot(1).await.is_err()); // limited
    assert!(svc.clone().oneshot(5).await.is_err()); // above the burst: capacity

    let svc = keyed.layer(Mock::new());
    for key in [1, 2, 3, 1] {
        let _ = svc.clone().oneshot(key).await; // the second 1 is limited
    }

    let svc = waiting.layer(Mock::new());
    assert!(svc.clone().oneshot(1).await.is_ok()); // at once
    assert!(svc.clone().oneshot(2).await.is_ok()); // after 100 ms

    // Keyed wait mode decides in `call` and waits in the response future.
    let mut svc = keyed_waiting.layer(Mock::new());
    let now = svc.ready().await.unwrap().call(7); // at once
    let later = svc.ready().await.unwrap().call(7); // books 100 ms ahead
    let too_late = svc.ready().await.unwrap().call(7); // 200 ms > 150: refused
    assert!(now.await.is_ok());
    assert!(too_late.await.is_err());
    assert!(later.await.is_ok());
    Values::take(&recorder)
}

#[tokio::test(start_paused = true)]
async fn rate_limit_metrics_have_exact_values() {
    let v = rate_limit_run().await;
    let reason = |r| ("reason", r);
    let c = ("name", "costed");
    assert_eq!(v.counter("palisade_ratelimit_admitted_total", &[c]), 2);
    assert_eq!(
        v.counter("palisade_ratelimit_refused_total", &[c, reason("limited")]),
        1
    );
    assert_eq!(
        v.counter("palisade_ratelimit_refused_total", &[c, reason("capacity")]),
        1
    );
    assert_eq!(
        v.counter(
            "palisade_ratelimit_refused_total",
            &[c, reason("unknown_key")]
        ),
        0
    );
    let k = ("name", "keyed");
    assert_eq!(v.counter("palisade_ratelimit_admitted_total", &[k]), 3);
    assert_eq!(
        v.counter("palisade_ratelimit_refused_total", &[k, reason("limited")]),
        1
    );
    assert_eq!(v.gauge("palisade_ratelimit_keys", &[k]), 3.0);
    let w = ("name", "waiting");
    assert_eq!(v.counter("palisade_ratelimit_admitted_total", &[w]), 2);
    assert_eq!(
        v.histogram("palisade_ratelimit_wait_seconds", &[w]),
        [0.0, 0.1]
    );
    let kw = ("name", "keyed-waiting");
    assert_eq!(v.counter("palisade_ratelimit_admitted_total", &[kw]), 2);
    assert_eq!(
        v.counter("palisade_ratelimit_refused_total", &[kw, reason("limited")]),
        1
    );
    assert_eq!(
        v.histogram("palisade_ratelimit_wait_seconds", &[kw]),
        [0.0, 0.1]
    );
    assert_eq!(v.gauge("palisade_ratelimit_keys", &[kw]), 1.0);
    // Only keyed limiters have a keys gauge, only waiting ones a histogram.
    assert_eq!(v.len(), 4 + 5 + 5 + 6);
}

// ------------------------------------------------------------------ batch

async fn batch_run() -> Values {
    let recorder = DebuggingRecorder::new();
    let (layer, untimed) = with(&recorder, || {
        (
            BatchLayer::builder()
                .name("bt")
                .time_batches()
                .build()
                .unwrap(),
            BatchLayer::builder().name("untimed").build().unwrap(),
        )
    });
    let mock = Mock::new()
        .script([Step::ok(), Step::err(), Step::ok()])
        .latency(ms(50));
    let mut svc = layer.layer(mock);
    let settled = svc
        .ready()
        .await
        .unwrap()
        .call(vec![1, 2, 3])
        .await
        .unwrap();
    assert_eq!(settled.rejected(), 1);
    let settled = svc.ready().await.unwrap().call(vec![4]).await.unwrap();
    assert_eq!(settled.rejected(), 0);
    let mut svc = untimed.layer(Mock::new().latency(ms(50)));
    let settled = svc.ready().await.unwrap().call(vec![5, 6]).await.unwrap();
    assert_eq!(settled.fulfilled(), 2);
    Values::take(&recorder)
}

#[tokio::test(start_paused = true)]
async fn batch_metrics_have_exact_values() {
    let v = batch_run().await;
    let n = ("name", "bt");
    assert_eq!(
        v.counter("palisade_batch_items_total", &[n, ("outcome", "fulfilled")]),
        3
    );
    assert_eq!(
        v.counter("palisade_batch_items_total", &[n, ("outcome", "rejected")]),
        1
    );
    assert_eq!(
        v.histogram("palisade_batch_duration_seconds", &[n]),
        [0.05, 0.05]
    );
    let u = ("name", "untimed");
    assert_eq!(
        v.counter("palisade_batch_items_total", &[u, ("outcome", "fulfilled")]),
        2
    );
    assert_eq!(
        v.counter("palisade_batch_items_total", &[u, ("outcome", "rejected")]),
        0
    );
    // No histogram for the untimed layer.
    assert_eq!(v.len(), 3 + 2);
}

// ------------------------------------------------------------ concurrency

async fn concurrency_run() -> Values {
    let recorder = DebuggingRecorder::new();
    let changes = Arc::new(Mutex::new(Vec::new()));
    let seen = changes.clone();
    let layer = with(&recorder, || {
        ConcurrencyLimitLayer::gradient2()
            .initial_limit(4)
            .name("c")
            .on_limit_change(move |e| seen.lock().unwrap().push(e.to))
            .build()
            .unwrap()
    });
    let handle = layer.handle();
    // Four calls that hang hold the limit; three more are refused.
    let svc = layer.clone().layer(Mock::new().hang());
    let held: Vec<_> = (0..4)
        .map(|i| tokio::spawn(svc.clone().oneshot(i)))
        .collect();
    tokio::task::yield_now().await;
    for i in 0..3 {
        assert!(svc.clone().oneshot(i).await.unwrap_err().is::<Overloaded>());
    }
    held.iter().for_each(|h| h.abort());
    for h in held {
        let _ = h.await;
    }
    // Then a failing upstream: drops shrink the limit.
    let svc = layer.layer(Mock::new().default_step(Step::err().after(ms(5))));
    for i in 0..200 {
        let _ = svc.clone().oneshot(i).await;
    }
    let values = Values::take(&recorder);
    let changes = changes.lock().unwrap();
    assert!(!changes.is_empty(), "the limit never changed");
    assert_eq!(*changes.last().unwrap(), handle.limit());
    assert!(handle.limit() < 4);
    values
}

#[tokio::test(start_paused = true)]
async fn concurrency_metrics_have_exact_values() {
    let v = concurrency_run().await;
    let n = ("name", "c");
    assert_eq!(v.counter("palisade_concurrency_rejections_total", &[n]), 3);
    // The gauge is the limit after the last change (checked against the
    // handle and the last hook event in the run).
    assert!(v.gauge("palisade_concurrency_limit", &[n]) < 4.0);
    assert_eq!(v.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn concurrency_limit_gauge_is_the_limit() {
    let recorder = DebuggingRecorder::new();
    let layer = with(&recorder, || {
        ConcurrencyLimitLayer::gradient2()
            .initial_limit(8)
            .name("c2")
            .build()
            .unwrap()
    });
    let handle = layer.handle();
    assert_eq!(
        Values::take(&recorder).gauge("palisade_concurrency_limit", &[("name", "c2")]),
        8.0,
        "set when built"
    );
    let svc = layer.layer(Mock::new().default_step(Step::err().after(ms(5))));
    for i in 0..200 {
        let _ = svc.clone().oneshot(i).await;
    }
    assert!(handle.limit() < 8);
    assert_eq!(
        Values::take(&recorder).gauge("palisade_concurrency_limit", &[("name", "c2")]),
        f64::from(handle.limit())
    );
}

// --------------------------------------------------------------- throttle

async fn throttle_run() -> (Values, u64) {
    let recorder = DebuggingRecorder::new();
    let layer = with(&recorder, || {
        AdaptiveThrottleLayer::builder()
            .window(Window::time(Duration::from_secs(60)))
            .seed(7)
            .name("t")
            .build()
            .unwrap()
    });
    let handle = layer.handle();
    let svc = layer.layer(Mock::new().default_step(Step::err()));
    for i in 0..100 {
        let _ = svc.clone().oneshot(i).await;
    }
    let throttled = handle.counts().throttled;
    (Values::take(&recorder), throttled)
}

#[tokio::test(start_paused = true)]
async fn throttle_metrics_have_exact_values() {
    let (v, throttled) = throttle_run().await;
    assert!(
        throttled > 10,
        "the dead backend was throttled: {throttled}"
    );
    assert_eq!(
        v.counter("palisade_throttle_refusals_total", &[("name", "t")]),
        throttled
    );
    assert_eq!(v.len(), 1);
}

// -------------------------------------------------------------- the table

#[tokio::test(start_paused = true)]
async fn every_documented_metric_is_emitted() {
    let mut emitted = BTreeSet::new();
    for v in [
        breaker_run().await,
        keyed_breaker_run().await,
        retry_run().await,
        rate_limit_run().await,
        batch_run().await,
        concurrency_run().await,
        throttle_run().await.0,
    ] {
        emitted.extend(v.names());
    }
    let documented: BTreeSet<String> = ALL.iter().map(|m| m.name.to_owned()).collect();
    assert_eq!(emitted, documented, "emitted vs documented");
}

#[test]
fn the_table_lists_each_metric_once_with_its_type() {
    let names: BTreeSet<_> = ALL.iter().map(|m| m.name).collect();
    assert_eq!(names.len(), ALL.len());
    for m in ALL {
        assert!(m.name.starts_with("palisade_"), "{}", m.name);
        match m.kind {
            "counter" => assert!(m.name.ends_with("_total"), "{}", m.name),
            "histogram" => assert!(m.name.ends_with("_seconds"), "{}", m.name),
            "gauge" => assert!(!m.name.ends_with("_total"), "{}", m.name),
            other => panic!("{}: kind {other}", m.name),
        }
    }
    // The module docs' table has one row per metric, in the same order.
    let docs = include_str!("../src/metrics.rs");
    let rows: Vec<&str> = docs
        .lines()
        .filter_map(|l| l.strip_prefix("//! | `palisade_"))
        .map(|l| l.split('`').next().unwrap())
        .collect();
    let listed: Vec<&str> = ALL.iter().map(|m| &m.name["palisade_".len()..]).collect();
    assert_eq!(rows, listed);
}

// ------------------------------------------------------ rate limit, Redis

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_rate_limit_metrics_have_exact_values() {
    use palisade::rate_limit::redis::RedisStore;
    let recorder = DebuggingRecorder::new();
    let store = RedisStore::open(&support::redis::redis_url()).expect("redis url");
    let layer = with(&recorder, || {
        RateLimitLayer::token_bucket(1, Duration::from_secs(60))
            .burst(2)
            .name("shared")
            .redis(store, support::redis::prefix("metrics"))
            .build()
            .unwrap()
    });
    let svc = layer.layer(Mock::new());
    assert!(svc.clone().oneshot(1u32).await.is_ok());
    assert!(svc.clone().oneshot(2).await.is_ok());
    assert!(svc.clone().oneshot(3).await.is_err());
    let v = Values::take(&recorder);
    let n = ("name", "shared");
    assert_eq!(v.counter("palisade_ratelimit_admitted_total", &[n]), 2);
    assert_eq!(
        v.counter(
            "palisade_ratelimit_refused_total",
            &[n, ("reason", "limited")]
        ),
        1
    );
    assert_eq!(
        v.counter(
            "palisade_ratelimit_refused_total",
            &[n, ("reason", "capacity")]
        ),
        0
    );
}
