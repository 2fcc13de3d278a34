//! Wait mode for keyed and costed limiters: decided in `call`, the response
//! future waits (at most `max_wait`) and then calls a clone of the inner
//! service made ready after the wait. Through the mock (which panics on a
//! `call` without a ready `poll_ready`), on paused tokio time.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::rate_limit::InsufficientCapacity;
use palisade::{BoxError, RateLimitLayer, RateLimited};
use proptest::prelude::*;
use support::{Mock, ReadyStep, Reply, ms};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// A request: the key and the cost.
type Req = (u64, u64);

fn keyed_costed(
    rate: u64,
    burst: u64,
    max_wait: Duration,
) -> impl Layer<
    Mock<Req>,
    Service: Service<Req, Response = Reply<Req>, Error = BoxError, Future: Send + 'static>
                 + Clone
                 + Send
                 + 'static,
> {
    RateLimitLayer::token_bucket(rate, Duration::from_secs(1))
        .burst(burst)
        .keyed(|r: &Req| r.0)
        .cost(|r: &Req| r.1)
        .wait(max_wait)
        .build()
        .unwrap()
}

/// Sends `req` and returns when the inner service was called (the mock
/// answers at once), or the refusal.
async fn send<S>(svc: &mut S, req: Req) -> Result<Duration, BoxError>
where
    S: Service<Req, Response = Reply<Req>, Error = BoxError>,
{
    let t0 = Instant::now();
    svc.ready().await?.call(req).await?;
    Ok(t0.elapsed())
}

fn limited(r: Result<Duration, BoxError>) -> RateLimited {
    let err = r.expect_err("expected a refusal");
    err.downcast_ref::<RateLimited>()
        .unwrap_or_else(|| panic!("not RateLimited: {err}"))
        .clone()
}

#[tokio::test(start_paused = true)]
async fn keyed_requests_wait_exactly_their_keys_time() {
    let mock = Mock::<Req>::new();
    let h = mock.handle();
    let mut svc = keyed_costed(10, 1, Duration::from_secs(1)).layer(mock);
    // Key 1: 100 ms apart; key 2 is not held up by key 1.
    assert_eq!(send(&mut svc, (1, 1)).await.unwrap(), ms(0));
    assert_eq!(send(&mut svc, (1, 1)).await.unwrap(), ms(100));
    assert_eq!(send(&mut svc, (2, 1)).await.unwrap(), ms(0));
    // Three at once for key 3: called at 0, 100 and 200 ms.
    let start = Instant::now();
    let futures: Vec<_> = (0..3)
        .map(|_| {
            let mut s = svc.clone();
            async move {
                s.ready().await.unwrap().call((3, 1)).await.unwrap();
                start.elapsed()
            }
        })
        .collect();
    let took = futures::future::join_all(futures).await;
    assert_eq!(took, [ms(0), ms(100), ms(200)]);
    assert_eq!(h.calls(), 6);
}

#[tokio::test(start_paused = true)]
async fn costed_requests_wait_for_their_cost() {
    let mut svc = keyed_costed(10, 3, Duration::from_secs(1)).layer(Mock::new());
    assert_eq!(send(&mut svc, (0, 3)).await.unwrap(), ms(0));
    // Cost 2 after the bucket emptied: two emission intervals.
    assert_eq!(send(&mut svc, (0, 2)).await.unwrap(), ms(200));
    // Cost 0 is not counted: at once.
    assert_eq!(send(&mut svc, (0, 0)).await.unwrap(), ms(0));
    // Above the burst: never, at once, without waiting.
    let err = send(&mut svc, (0, 4)).await.unwrap_err();
    assert!(err.is::<InsufficientCapacity>(), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_wait_past_max_wait_is_refused_at_once() {
    let mock = Mock::<Req>::new();
    let h = mock.handle();
    let mut svc = keyed_costed(10, 2, ms(150)).layer(mock);
    send(&mut svc, (7, 2)).await.unwrap();
    assert_eq!(send(&mut svc, (7, 1)).await.unwrap(), ms(100));
    // Now the next unit of key 7 is 100 ms away: a cost of 2 is 200 ms
    // away, past the bound.
    let t0 = Instant::now();
    let e = limited(send(&mut svc, (7, 2)).await);
    assert_eq!(t0.elapsed(), ms(0), "refused at once");
    assert_eq!(e.retry_after, ms(200));
    assert_eq!(h.calls(), 2);
    // The refusal took nothing: a cost of 1 waits the 100 ms.
    assert_eq!(send(&mut svc, (7, 1)).await.unwrap(), ms(100));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_gives_its_reservation_back() {
    let layer = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
        .keyed(|r: &Req| r.0)
        .wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let mock = Mock::<Req>::new();
    let h = mock.handle();
    let mut svc = layer.layer(mock);
    send(&mut svc, (1, 1)).await.unwrap();
    // Reserves 100 ms, then is dropped before its time.
    let waiting = svc.ready().await.unwrap().call((1, 1));
    tokio::time::sleep(ms(50)).await;
    drop(waiting);
    // The next one gets the 100 ms slot back (not 200 ms).
    assert_eq!(send(&mut svc, (1, 1)).await.unwrap(), ms(50));
    assert_eq!(h.calls(), 2);
    assert_eq!(layer.handle().admitted(), 2);
}

/// After its wait, the future polls its clone ready: a readiness error is
/// returned (and the reservation given back); the service's own instance
/// is untouched.
#[tokio::test(start_paused = true)]
async fn inner_readiness_is_awaited_after_the_wait() {
    // The third readiness poll (the clone's, after the wait) fails.
    let mock =
        Mock::<Req>::new().ready_script([ReadyStep::Ready, ReadyStep::Ready, ReadyStep::Err]);
    let h = mock.handle();
    let mut svc = keyed_costed(10, 1, Duration::from_secs(1)).layer(mock);
    send(&mut svc, (1, 1)).await.unwrap();
    let polls = h.ready_polls();
    let waiting = svc.ready().await.unwrap().call((1, 1));
    assert_eq!(
        h.ready_polls(),
        polls + 1,
        "poll_ready forwards to the inner"
    );
    let err = waiting.await.unwrap_err();
    assert!(err.to_string().contains("poll_ready"), "{err}");
    assert_eq!(h.calls(), 1);
    // The reservation went back: the next one waits 100 ms from the first
    // admission, i.e. is due now.
    assert_eq!(send(&mut svc, (1, 1)).await.unwrap(), ms(0));
}

#[tokio::test(start_paused = true)]
async fn keyed_windows_wait_until_they_fit() {
    for exact in [false, true] {
        let b = RateLimitLayer::sliding_window(2, ms(100))
            .keyed(|r: &Req| r.0)
            .wait(ms(150));
        let layer = if exact { b.exact().build() } else { b.build() }.unwrap();
        let mut svc = layer.layer(Mock::new());
        let t0 = Instant::now();
        for _ in 0..3 {
            send(&mut svc, (1, 1)).await.unwrap();
        }
        // The log frees a slot at 100 ms; the counter weighs the previous
        // window and fits at 150 ms.
        assert_eq!(t0.elapsed(), if exact { ms(100) } else { ms(150) });
        // Another key: at once.
        assert_eq!(send(&mut svc, (2, 1)).await.unwrap(), ms(0));
        // Past the bound: refused at once with the exact wait.
        let wide = RateLimitLayer::sliding_window(2, Duration::from_secs(1))
            .keyed(|r: &Req| r.0)
            .wait(ms(150));
        let layer = if exact {
            wide.exact().build()
        } else {
            wide.build()
        }
        .unwrap();
        let mut svc = layer.layer(Mock::new());
        send(&mut svc, (3, 1)).await.unwrap();
        send(&mut svc, (3, 1)).await.unwrap();
        let e = limited(send(&mut svc, (3, 1)).await);
        assert_eq!(e.retry_after, if exact { ms(1000) } else { ms(1500) });
    }
}

/// A window's waiter whose capacity is taken while it sleeps tries again,
/// and is refused once the bound passes.
#[tokio::test(start_paused = true)]
async fn a_window_waiter_retries_and_gives_up_at_the_bound() {
    let layer = RateLimitLayer::sliding_log(1, ms(100))
        .keyed(|r: &Req| r.0)
        .wait(ms(150))
        .build()
        .unwrap();
    let mut a = layer.layer(Mock::new());
    let mut b = a.clone();
    send(&mut a, (1, 1)).await.unwrap();
    // `a` waits for 100 ms; `b` is told the same, and one of them wins.
    let fa = a.ready().await.unwrap().call((1, 1));
    let fb = b.ready().await.unwrap().call((1, 1));
    let (ra, rb) = tokio::join!(fa, fb);
    assert!(
        ra.is_ok() != rb.is_ok(),
        "exactly one admitted: {ra:?} {rb:?}"
    );
    let loser = ra.err().or(rb.err()).unwrap();
    let e = loser.downcast_ref::<RateLimited>().unwrap();
    assert_eq!(e.retry_after, ms(100));
    assert_eq!(layer.handle().admitted(), 2);
    assert_eq!(layer.handle().rejected(), 1);
}

#[tokio::test(start_paused = true)]
async fn several_limits_wait_for_all_of_them() {
    // 10 per second (burst 2) and 3 per second per key.
    let layer = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
        .burst(2)
        .and(RateLimitLayer::sliding_log(3, Duration::from_secs(1)))
        .keyed(|r: &Req| r.0)
        .wait(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut svc = layer.layer(Mock::new());
    let t0 = Instant::now();
    let mut at = Vec::new();
    for _ in 0..4 {
        send(&mut svc, (1, 1)).await.unwrap();
        at.push(t0.elapsed());
    }
    // Burst of 2, the third one bucket interval later, the fourth when the
    // log's first entry leaves.
    assert_eq!(at, [ms(0), ms(0), ms(100), ms(1000)]);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_wait_on_several_limits_leaves_them_as_they_were() {
    // One limit of each algorithm, keyed. A request that must wait on
    // several limits holds no charge while it waits (it decides again when
    // its wait ends): dropped before then, it leaves every limit as it was,
    // and the next request waits as if it had never been made.
    let layer = RateLimitLayer::sliding_window(1, Duration::from_secs(1))
        .and(RateLimitLayer::token_bucket(100, Duration::from_secs(1)))
        .and(RateLimitLayer::sliding_log(10, Duration::from_secs(10)))
        .keyed(|r: &Req| r.0)
        .wait(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut svc = layer.layer(Mock::new());
    assert_eq!(send(&mut svc, (1, 1)).await.unwrap(), ms(0));

    let waiting = svc.ready().await.unwrap().call((1, 1));
    tokio::time::advance(ms(10)).await;
    drop(waiting);
    tokio::time::advance(ms(10)).await;
    // The window's first request weighs 1 until the end of the next window
    // (2 s): the next one is admitted then, 1.98 s after this call. Had the
    // dropped request kept its charge, the window would hold 2 and this one
    // would wait a window longer.
    assert_eq!(send(&mut svc, (1, 1)).await.unwrap(), ms(1980));
    assert_eq!(layer.handle().admitted(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_reservation_is_given_back_to_every_limit() {
    // Unkeyed wait mode reserves in `poll_ready`. A service dropped with
    // its reservation unused gives it back to each limit (one of each
    // algorithm), so the next request is admitted at once.
    let layer = RateLimitLayer::sliding_window(1, Duration::from_secs(1))
        .and(RateLimitLayer::token_bucket(1, Duration::from_secs(1)))
        .and(RateLimitLayer::sliding_log(1, Duration::from_secs(10)))
        .wait(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut reserved = layer.layer(Mock::<Req>::new());
    ServiceExt::<Req>::ready(&mut reserved).await.unwrap();
    drop(reserved);
    let mut svc = layer.layer(Mock::new());
    assert_eq!(send(&mut svc, (0, 1)).await.unwrap(), ms(0));
    // The limits are charged now: the log holds the next one for 10 s.
    assert_eq!(send(&mut svc, (0, 1)).await.unwrap(), ms(10_000));
    assert_eq!(layer.handle().admitted(), 2);
}

/// Sends `req` twice at once, through two clones of `svc`: how long each
/// waited, shortest first.
async fn two_at_once<S>(svc: &S, req: Req) -> [Duration; 2]
where
    S: Service<Req, Response = Reply<Req>, Error = BoxError> + Clone,
{
    let (mut a, mut b) = (svc.clone(), svc.clone());
    let (a, b) = tokio::join!(send(&mut a, req), send(&mut b, req));
    let mut waits = [a.unwrap(), b.unwrap()];
    waits.sort();
    waits
}

#[tokio::test(start_paused = true)]
async fn a_waiter_beaten_to_the_slot_waits_again() {
    // 1 per second per key. Two requests wait for the same second; the
    // first to decide again takes it, the other is refused again within
    // its budget and waits for the next second.
    let layer = RateLimitLayer::sliding_log(1, Duration::from_secs(1))
        .keyed(|r: &Req| r.0)
        .wait(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut svc = layer.layer(Mock::new());
    assert_eq!(send(&mut svc, (1, 1)).await.unwrap(), ms(0));
    assert_eq!(two_at_once(&svc, (1, 1)).await, [ms(1000), ms(2000)]);
    assert_eq!(layer.handle().admitted(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_token_bucket_deciding_again_may_reserve_ahead() {
    // Room for one key. Key 1 fills it; two requests for key 2 wait until
    // key 1 goes idle (its bucket full again: 1 s). Then the first takes
    // key 2's one token, and the second, deciding again, reserves the next
    // one (1 s later) and is sent then, not at once.
    let layer = RateLimitLayer::token_bucket(1, Duration::from_secs(1))
        .keyed(|r: &Req| r.0)
        .max_keys(1)
        .wait(Duration::from_secs(5))
        .build()
        .unwrap();
    let mock = Mock::new();
    let calls = mock.handle();
    let mut svc = layer.layer(mock);
    assert_eq!(send(&mut svc, (1, 1)).await.unwrap(), ms(0));
    assert_eq!(two_at_once(&svc, (2, 1)).await, [ms(1000), ms(2000)]);
    let t: Vec<_> = calls.call_times();
    assert_eq!(t[2] - t[1], ms(1000), "the reserved one is sent when due");
}

#[tokio::test(start_paused = true)]
async fn unkeyed_costed_waits_too() {
    let layer = RateLimitLayer::sliding_window(10, Duration::from_secs(1))
        .cost(|r: &Req| r.1)
        .wait(Duration::from_secs(3))
        .build()
        .unwrap();
    let mut svc = layer.layer(Mock::new());
    assert_eq!(send(&mut svc, (0, 10)).await.unwrap(), ms(0));
    // The previous window's 10 weigh 10 at its end, then fall: a cost of 5
    // fits halfway through the next window.
    assert_eq!(send(&mut svc, (0, 5)).await.unwrap(), ms(1500));
}

// ------------------------------------------------------- against a model

/// One arrival: after `gap_ms`, key, cost, and whether the caller drops
/// the response future at once (before its wait ends).
#[derive(Debug, Clone, Copy)]
struct Arrival {
    gap_ms: u64,
    key: u64,
    cost: u64,
    drop: bool,
}

/// What the model says of one arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// The inner service is called this long after the start.
    CalledAt(u64),
    Limited {
        retry_after: u64,
    },
    Never,
    /// Dropped before its call.
    Dropped,
}

/// GCRA per key (virtual scheduling, in nanoseconds), with wait up to
/// `max_wait` and the stated undo rule: a reservation dropped before its
/// call is taken back if no later reservation of the key was made.
fn model(rate: u64, burst: u64, max_wait: u64, arrivals: &[Arrival]) -> Vec<Fate> {
    let t_ns = 1_000_000_000u64.div_ceil(rate);
    let tau = burst * t_ns;
    let mut tat: HashMap<u64, u64> = HashMap::new();
    let mut now = 0;
    arrivals
        .iter()
        .map(|a| {
            now += a.gap_ms * 1_000_000;
            if a.cost == 0 {
                // Not counted, called inside `call`.
                return Fate::CalledAt(now);
            }
            if a.cost > burst {
                return Fate::Never;
            }
            let old = *tat.get(&a.key).unwrap_or(&0);
            let new = old.max(now) + a.cost * t_ns;
            let at = new.saturating_sub(tau);
            if at > now + max_wait {
                return Fate::Limited {
                    retry_after: at - now,
                };
            }
            tat.insert(a.key, new);
            if at <= now {
                // Called inside `call`: a drop cancels only the response.
                return Fate::CalledAt(now);
            }
            if a.drop {
                if tat[&a.key] == new {
                    tat.insert(a.key, new - a.cost * t_ns);
                }
                return Fate::Dropped;
            }
            Fate::CalledAt(at)
        })
        .collect()
}

fn run(rate: u64, burst: u64, max_wait: u64, arrivals: &[Arrival]) -> Vec<Fate> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let start = Instant::now();
        let mut svc = keyed_costed(rate, burst, Duration::from_nanos(max_wait)).layer(Mock::new());
        let fates: Arc<Mutex<Vec<Option<Fate>>>> = Arc::new(Mutex::new(vec![None; arrivals.len()]));
        let mut tasks = Vec::new();
        for (i, a) in arrivals.iter().enumerate() {
            // Sleeping (not `advance`) lets every timer fire at its own
            // instant, so each call is seen at its exact time.
            tokio::time::sleep(ms(a.gap_ms)).await;
            let mut fut = Box::pin(svc.ready().await.unwrap().call((a.key, a.cost)));
            if a.drop {
                let polled = futures::poll!(fut.as_mut());
                let fate = match polled {
                    std::task::Poll::Pending => Fate::Dropped,
                    std::task::Poll::Ready(r) => answer(r, start),
                };
                fates.lock().unwrap()[i] = Some(fate);
                drop(fut);
                continue;
            }
            let fates = fates.clone();
            tasks.push(tokio::spawn(async move {
                let r = fut.await;
                fates.lock().unwrap()[i] = Some(answer(r, start));
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let fates = fates.lock().unwrap().clone();
        fates.into_iter().map(Option::unwrap).collect()
    })
}

fn answer(r: Result<Reply<Req>, BoxError>, start: Instant) -> Fate {
    match r {
        Ok(_) => Fate::CalledAt(start.elapsed().as_nanos() as u64),
        Err(e) if e.is::<InsufficientCapacity>() => Fate::Never,
        Err(e) => Fate::Limited {
            retry_after: e
                .downcast_ref::<RateLimited>()
                .unwrap()
                .retry_after
                .as_nanos() as u64,
        },
    }
}

fn arrival() -> impl Strategy<Value = Arrival> {
    (0u64..120, 0u64..3, 0u64..5, proptest::bool::weighted(0.25)).prop_map(
        |(gap_ms, key, cost, drop)| Arrival {
            gap_ms,
            key,
            cost,
            drop,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Keyed, costed wait mode against the model: every request's call
    /// time (or refusal and its `retry_after`), with drops giving
    /// reservations back.
    #[test]
    fn keyed_costed_wait_matches_the_model(
        // Emission intervals in whole milliseconds: tokio's timers are
        // millisecond-grained, and with whole ones every wait is exact.
        rate in proptest::sample::select(vec![1u64, 2, 4, 5, 8, 10, 20, 25, 40, 50]),
        burst in 1u64..4,
        max_wait_ms in 0u64..400,
        arrivals in proptest::collection::vec(arrival(), 1..40),
    ) {
        let max_wait = max_wait_ms * 1_000_000;
        prop_assert_eq!(run(rate, burst, max_wait, &arrivals), model(rate, burst, max_wait, &arrivals));
    }
}

#[tokio::test(start_paused = true)]
async fn wait_future_debug_names_its_state() {
    let layer = RateLimitLayer::token_bucket(1, Duration::from_secs(1))
        .and(RateLimitLayer::sliding_log(1, Duration::from_secs(1)))
        .keyed(|r: &Req| r.0)
        .wait(Duration::from_secs(5))
        .build()
        .unwrap();
    let bucket = RateLimitLayer::token_bucket(1, Duration::from_secs(1))
        .keyed(|r: &Req| r.0)
        .wait(Duration::from_secs(5))
        .build()
        .unwrap();
    let debug = |f: &dyn std::fmt::Debug| format!("{f:?}");
    let mut svc = layer.layer(Mock::new());
    let now = svc.ready().await.unwrap().call((1, 1));
    assert_eq!(debug(&now), "WaitFuture { state: \"now\", .. }");
    // Several limits hold nothing while they wait.
    let waiting = svc.ready().await.unwrap().call((1, 1));
    assert_eq!(debug(&waiting), "WaitFuture { state: \"waiting\", .. }");
    // A token bucket reserves its slot ahead.
    let mut svc = bucket.layer(Mock::new());
    let _now = svc.ready().await.unwrap().call((1, 1));
    let reserved = svc.ready().await.unwrap().call((1, 1));
    assert_eq!(debug(&reserved), "WaitFuture { state: \"reserved\", .. }");
}
