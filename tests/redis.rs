//! The Redis store against a real Redis (`REDIS_URL`, else 127.0.0.1:6379):
//! the same decisions as in memory, keys, TTLs, a fleet sharing one limit,
//! and local denials. Each test uses its own key prefix.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade::rate_limit::redis::{Fallback, RedisStore};
use palisade::rate_limit::{ConfigError, InsufficientCapacity, RateLimitBuilder, RateLimited};
use palisade::{BoxError, RateLimitLayer};
use support::redis::{prefix, redis_url};
use support::{Mock, Reply};
use tower::{Layer, Service, ServiceExt};

/// One answer, comparable between the stores.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Admit,
    Limited {
        retry_after: Duration,
        remaining: u64,
    },
    Never,
}

fn answer<T>(r: Result<T, BoxError>) -> Answer {
    match r {
        Ok(_) => Answer::Admit,
        Err(e) => {
            if let Some(l) = e.downcast_ref::<RateLimited>() {
                Answer::Limited {
                    retry_after: l.retry_after,
                    remaining: l.remaining,
                }
            } else if e.is::<InsufficientCapacity>() {
                Answer::Never
            } else {
                panic!("unexpected error: {e}")
            }
        }
    }
}

fn store() -> RedisStore {
    RedisStore::open(&redis_url()).expect("redis url")
}

type Costed =
    RateLimitBuilder<palisade::rate_limit::Unkeyed, palisade::rate_limit::CostBy<fn(&u64) -> u64>>;

fn by_cost(b: RateLimitBuilder) -> Costed {
    b.cost((|c: &u64| *c) as fn(&u64) -> u64)
}

/// The in-memory answers to `schedule` (µs since the limiter was built,
/// cost), on paused time.
fn memory_answers(builder: Costed, schedule: &[(u64, u64)]) -> Vec<Answer> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let layer = builder.build().unwrap();
        let start = tokio::time::Instant::now();
        let mut svc = layer.layer(Mock::<u64>::new());
        let mut out = Vec::new();
        for &(at, cost) in schedule {
            // `advance`, not a sleep: timers round to the millisecond.
            let to = start + Duration::from_micros(at);
            tokio::time::advance(to - tokio::time::Instant::now()).await;
            assert_eq!(tokio::time::Instant::now(), to);
            out.push(answer(svc.ready().await.unwrap().call(cost).await));
        }
        out
    })
}

/// The Redis script's answers to the same schedule, at `base + at` on the
/// script's clock: the script takes `now` as an argument in place of
/// `TIME` (the only difference from production calls), since Redis's clock
/// cannot be paused.
async fn redis_answers(
    builder: Costed,
    base_us: u64,
    schedule: &[(u64, u64)],
    p: &str,
) -> Vec<Answer> {
    let layer = builder.redis(store(), p).build().unwrap();
    let mut out = Vec::new();
    for &(at, cost) in schedule {
        let now = Duration::from_micros(base_us + at);
        out.push(answer(layer.decide_at(&(), cost, now).await));
    }
    out
}

struct Case {
    name: &'static str,
    builder: fn() -> RateLimitBuilder,
    /// The emission interval or window is a whole number of µs: answers
    /// equal to the microsecond (the server clock's resolution). Otherwise Redis rounds it up to the µs and
    /// `retry_after` may differ by less than a millisecond.
    whole_us: bool,
    /// Window length in µs (the Redis base time is aligned on it), or 1.
    align_us: u64,
    schedule: Vec<(u64, u64)>,
}

const S: u64 = 1_000_000;
const MS: u64 = 1_000;

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "bucket 10/s burst 3",
            builder: || RateLimitLayer::token_bucket(10, Duration::from_secs(1)).burst(3),
            whole_us: true,
            align_us: 1,
            schedule: vec![
                (0, 1),
                (0, 1),
                (0, 1),
                (0, 1),
                (50 * MS, 1),
                (99_999, 1),
                (100 * MS, 1),
                (100 * MS, 1),
                (150 * MS, 2),
                (400 * MS, 2),
                (400 * MS, 2),
                (400 * MS, 4),
                (2 * S, 3),
                (2 * S, 1),
                (2 * S + 1, 1),
                (10 * S, 0),
                (10 * S, 3),
            ],
        },
        Case {
            name: "bucket 3/s (interval not whole µs)",
            builder: || RateLimitLayer::token_bucket(3, Duration::from_secs(1)).burst(2),
            whole_us: false,
            align_us: 1,
            schedule: (0..60).map(|i| (i * 170 * MS, 1 + i % 2)).collect(),
        },
        Case {
            name: "bucket at the fastest rate (1 µs)",
            builder: || RateLimitLayer::token_bucket(1_000_000, Duration::from_secs(1)).burst(5),
            whole_us: true,
            align_us: 1,
            schedule: vec![
                (0, 5),
                (0, 1),
                (1, 1),
                (1, 1),
                (3, 2),
                (3, 1),
                (10, 5),
                (10, 1),
            ],
        },
        Case {
            name: "bucket at the largest capacity (2^51 µs)",
            // One per 2^50 µs (35 years), burst 2: B = 2^51 µs.
            builder: || RateLimitLayer::token_bucket(1, Duration::from_micros(1 << 50)).burst(2),
            whole_us: true,
            align_us: 1,
            schedule: vec![
                (0, 1),
                (0, 1),
                (0, 1),
                (S, 1),
                (1 << 49, 1),
                ((1 << 50) - 1, 1),
                (1 << 50, 1),
            ],
        },
        Case {
            name: "window 10/s",
            builder: || RateLimitLayer::sliding_window(10, Duration::from_secs(1)),
            whole_us: true,
            align_us: S,
            schedule: (0..80).map(|i| (i * 37 * MS, 1 + i % 3)).collect(),
        },
        Case {
            name: "window limit 1",
            builder: || RateLimitLayer::sliding_window(1, Duration::from_millis(100)),
            whole_us: true,
            align_us: 100 * MS,
            schedule: vec![
                (0, 1),
                (0, 1),
                (99_999, 1),
                (150 * MS, 1),
                (199_999, 1),
                (200 * MS, 1),
                (350 * MS, 1),
            ],
        },
        Case {
            name: "window at the largest limit * window",
            // 1,048,575 per 2,147 s: limit * W = 2.2513e15 <= 2^51.
            builder: || RateLimitLayer::sliding_window((1 << 20) - 1, Duration::from_secs(2_147)),
            whole_us: true,
            align_us: 2_147 * S,
            schedule: vec![
                (0, 1_000_000),
                (1, 48_575),
                (2, 1),
                (1_000 * S, 2),
                (2_147 * S + 1_073 * S, 500_000),
                (2_147 * S + 1_073 * S, 600_000),
                (3 * 2_147 * S, 1_048_575),
            ],
        },
    ]
}

#[test]
fn same_decisions_as_memory() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    for case in cases() {
        let mem = memory_answers(by_cost((case.builder)()), &case.schedule);
        let base = 1_700_000_000 * S / case.align_us * case.align_us;
        let red = rt.block_on(redis_answers(
            by_cost((case.builder)()),
            base,
            &case.schedule,
            &prefix("same"),
        ));
        assert!(mem.contains(&Answer::Admit), "{}: admits some", case.name);
        assert!(
            mem.iter().any(|a| matches!(a, Answer::Limited { .. })),
            "{}: limits some",
            case.name
        );
        for (i, (m, r)) in mem.iter().zip(&red).enumerate() {
            let at = case.schedule[i];
            match (m, r) {
                (
                    Answer::Limited {
                        retry_after: a,
                        remaining: ra,
                    },
                    Answer::Limited {
                        retry_after: b,
                        remaining: rb,
                    },
                ) => {
                    assert_eq!(ra, rb, "{}: remaining at {at:?}", case.name);
                    if case.whole_us {
                        // Exact, on the server clock's resolution: the
                        // in-memory wait rounded up to the microsecond.
                        let up = Duration::from_micros(a.as_nanos().div_ceil(1_000) as u64);
                        assert_eq!(up, *b, "{}: retry_after at {at:?}", case.name);
                    } else {
                        let d = a.abs_diff(*b);
                        assert!(
                            d < Duration::from_millis(1),
                            "{}: retry_after at {at:?}: {a:?} vs {b:?}",
                            case.name
                        );
                    }
                }
                _ => assert_eq!(m, r, "{}: answer at {at:?}", case.name),
            }
        }
    }
}

#[tokio::test]
async fn config_errors_as_in_memory() {
    let p = prefix("config");
    let redis = |b: RateLimitBuilder| b.redis(store(), p.clone()).build().map(|_| ()).unwrap_err();
    let mem = |b: RateLimitBuilder| b.build().map(|_| ()).unwrap_err();
    for b in [
        || RateLimitLayer::token_bucket(0, Duration::from_secs(1)),
        || RateLimitLayer::token_bucket(1, Duration::ZERO),
        || RateLimitLayer::token_bucket(1, Duration::from_secs(1)).burst(0),
        || RateLimitLayer::sliding_window(0, Duration::from_secs(1)),
        || RateLimitLayer::sliding_window(1, Duration::ZERO),
        || RateLimitLayer::sliding_window((1 << 32) + 1, Duration::from_secs(1)),
        || RateLimitLayer::sliding_window(1, Duration::from_secs(1)).burst(2),
        || RateLimitLayer::token_bucket(1, Duration::from_secs(1)).max_keys(3),
    ] as [fn() -> RateLimitBuilder; 8]
    {
        assert_eq!(redis(b()), mem(b()));
    }
    let sec = Duration::from_secs(1);
    assert_eq!(
        redis(RateLimitLayer::sliding_log(5, sec)),
        ConfigError::LogWithStore
    );
    assert_eq!(
        RateLimitLayer::token_bucket(5, sec)
            .wait(sec)
            .redis(store(), p.clone())
            .build()
            .map(|_| ())
            .unwrap_err(),
        ConfigError::WaitWithStore
    );
    // Several limits are in-memory only.
    assert_eq!(
        redis(RateLimitLayer::token_bucket(5, sec).and(RateLimitLayer::token_bucket(50, 60 * sec))),
        ConfigError::SeveralLimitsWithStore
    );
    // Faster than one per µs: the server clock cannot express it.
    assert_eq!(
        redis(RateLimitLayer::token_bucket(2_000_000, sec)),
        ConfigError::RateTooHigh
    );
    // One µs of capacity beyond 2^51.
    let over = RateLimitLayer::token_bucket(1, Duration::from_micros((1 << 50) + 1)).burst(2);
    assert_eq!(redis(over), ConfigError::Overflow);
    let over = RateLimitLayer::sliding_window((1 << 20) - 1, Duration::from_secs(2_148));
    assert_eq!(redis(over), ConfigError::Overflow);
    let b = || RateLimitLayer::token_bucket(5, sec);
    assert_eq!(
        b().redis(store(), "").build().map(|_| ()).unwrap_err(),
        ConfigError::EmptyPrefix
    );
    let zero = b().redis(store(), "x").timeout(Duration::ZERO).build();
    assert_eq!(zero.map(|_| ()).unwrap_err(), ConfigError::ZeroTimeout);
    for f in [
        Fallback::local(0),
        Fallback::FailClosed {
            retry_after: Duration::ZERO,
        },
    ] {
        let e = b()
            .redis(store(), "x")
            .fallback(f)
            .build()
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e, ConfigError::ZeroFallback);
    }
}

#[test]
fn open_outside_a_runtime_is_an_error() {
    assert!(RedisStore::open("redis://127.0.0.1:6379").is_err());
    assert!(RedisStore::open("not a url").is_err());
}

async fn redis_conn() -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(redis_url()).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

async fn server_time_us(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    s * 1_000_000 + us
}

#[tokio::test]
async fn keys_are_stable_bytes_with_a_ttl() {
    let p = prefix("ttl");
    let layer = RateLimitLayer::token_bucket(1, Duration::from_secs(10))
        .burst(3)
        .keyed(|req: &Vec<u8>| req.clone())
        .redis(store(), p.clone())
        .build()
        .unwrap();
    let mut svc = layer.layer(Mock::<Vec<u8>>::new());
    let hostile: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"{tag}".to_vec(),
        b"a{b}c}{".to_vec(),
        vec![0, 255, b'\r', b'\n', b'*', b'$'],
        vec![b'k'; 100_000],
        "é\u{0}\u{202e}".as_bytes().to_vec(),
    ];
    let mut conn = redis_conn().await;
    for key in &hostile {
        for _ in 0..3 {
            assert_eq!(
                answer(svc.ready().await.unwrap().call(key.clone()).await),
                Answer::Admit
            );
        }
        assert!(matches!(
            answer(svc.ready().await.unwrap().call(key.clone()).await),
            Answer::Limited { remaining: 0, .. }
        ));
        // Stored under prefix + the key's own bytes, expiring when the
        // bucket is full again (3 units of 10 s: at most 30 s).
        let mut full = p.as_bytes().to_vec();
        full.extend_from_slice(key);
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&full)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((29_000..=30_000).contains(&ttl), "ttl {ttl}");
    }
    // Distinct keys, distinct limits: nothing else was refused.
    assert_eq!(layer.handle().admitted(), 3 * hostile.len() as u64);
}

#[tokio::test]
async fn window_keys_expire_when_idle() {
    let p = prefix("window-ttl");
    let layer = RateLimitLayer::sliding_window(5, Duration::from_secs(2))
        .redis(store(), p.clone())
        .build()
        .unwrap();
    let mut svc = layer.layer(Mock::<u64>::new());
    svc.ready().await.unwrap().call(1).await.unwrap();
    let mut conn = redis_conn().await;
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&p)
        .query_async(&mut conn)
        .await
        .unwrap();
    // Idle once the next window ends: 2 to 4 s from now.
    assert!((2_000..=4_000).contains(&ttl), "ttl {ttl}");
}

/// Four instances (own layer, own connection), four callers each, one key,
/// for 2.5 s of demand far above the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_shares_one_limit() {
    const RATE: u64 = 200;
    const BURST: u64 = 20;
    let p = prefix("fleet");
    let mut conn = redis_conn().await;
    let mut instances = Vec::new();
    for _ in 0..4 {
        let store = store();
        store.ping().await.unwrap(); // connected before the clock starts
        let layer = RateLimitLayer::token_bucket(RATE, Duration::from_secs(1))
            .burst(BURST)
            .keyed(|_: &u64| "one key")
            .redis(store, p.clone())
            .fallback(Fallback::fail_closed())
            // Generous: a loaded CI machine must not turn a slow answer
            // into a fallback here (timeouts are tested in redis_faults).
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        let mock = Mock::<u64>::new();
        instances.push((layer.handle(), mock.handle(), layer.layer(mock)));
    }
    let admitted = Arc::new(AtomicU64::new(0));
    let start = server_time_us(&mut conn).await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2_500);
    let mut tasks = Vec::new();
    for (_, _, svc) in &instances {
        for _ in 0..4 {
            let svc = svc.clone();
            let admitted = admitted.clone();
            tasks.push(tokio::spawn(async move {
                while tokio::time::Instant::now() < deadline {
                    if svc.clone().oneshot(1).await.is_ok() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    // A local refusal is ready at once: a loop of them must
                    // yield, or it starves the tasks (and the connection's
                    // driver) sharing its worker, as no server's per-request
                    // tasks would.
                    tokio::task::yield_now().await;
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let end = server_time_us(&mut conn).await;
    let admitted = admitted.load(Ordering::Relaxed);
    let d = end - start;
    let allowed = BURST + d / (1_000_000 / RATE);
    let mut mock_calls = 0;
    for (handle, mock, _) in &instances {
        assert_eq!(
            (handle.fallbacks(), handle.store_errors()),
            (0, 0),
            "fallbacks, store errors"
        );
        mock_calls += mock.calls();
    }
    assert_eq!(
        mock_calls, admitted,
        "admitted requests reached the service"
    );
    assert!(
        admitted <= allowed,
        "admitted {admitted} > allowed {allowed} over {d} µs"
    );
    assert!(
        admitted * 100 >= allowed * 98,
        "admitted {admitted} < 98% of {allowed} over {d} µs"
    );
    eprintln!("fleet: admitted {admitted} of {allowed} allowed over {d} µs");
}

/// Cached mode: four instances leasing shares of 10 from one bucket. The
/// fleet may exceed the exact bound by at most instances * share, and
/// makes far fewer Redis calls per decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_fleet_overshoot_within_bound() {
    const RATE: u64 = 200;
    const BURST: u64 = 20;
    const SHARE: u64 = 10;
    const INSTANCES: u64 = 4;
    let p = prefix("cached");
    let mut conn = redis_conn().await;
    let mut instances = Vec::new();
    for _ in 0..INSTANCES {
        let store = store();
        store.ping().await.unwrap();
        let layer = RateLimitLayer::token_bucket(RATE, Duration::from_secs(1))
            .burst(BURST)
            .redis(store, p.clone())
            .cached(SHARE, Duration::from_millis(200))
            .fallback(Fallback::fail_closed())
            // Generous: a loaded CI machine must not turn a slow answer
            // into a fallback here (timeouts are tested in redis_faults).
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        instances.push((layer.handle(), layer.layer(Mock::<u64>::new())));
    }
    let admitted = Arc::new(AtomicU64::new(0));
    let decisions = Arc::new(AtomicU64::new(0));
    let start = server_time_us(&mut conn).await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(2_500);
    let mut tasks = Vec::new();
    for (_, svc) in &instances {
        for _ in 0..4 {
            let svc = svc.clone();
            let (admitted, decisions) = (admitted.clone(), decisions.clone());
            tasks.push(tokio::spawn(async move {
                while tokio::time::Instant::now() < deadline {
                    if svc.clone().oneshot(1).await.is_ok() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                    decisions.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let d = server_time_us(&mut conn).await - start;
    let exact = BURST + d / (1_000_000 / RATE);
    let bound = exact + INSTANCES * SHARE;
    let admitted = admitted.load(Ordering::Relaxed);
    let decisions = decisions.load(Ordering::Relaxed);
    let calls: u64 = instances.iter().map(|(h, _)| h.store_calls()).sum();
    eprintln!(
        "cached: admitted {admitted} (exact bound {exact}, cached bound {bound}) over {d} µs; \
         {calls} Redis calls for {decisions} decisions ({:.4} per decision, {:.3} per admission)",
        calls as f64 / decisions as f64,
        calls as f64 / admitted as f64
    );
    assert!(admitted <= bound, "admitted {admitted} > {bound}");
    assert!(admitted * 10 >= exact * 9, "admitted {admitted} of {exact}");
    // Saturated, each share that frees up costs one lease for the winner
    // and one refusal per other instance (then cached until the next
    // share): about (instances + 1) / share calls per admission, against
    // one or more per admission in exact mode.
    let expected = admitted * (INSTANCES + 1) / SHARE;
    assert!(
        calls <= expected * 5 / 4 + 20,
        "{calls} calls for {admitted} admissions"
    );
    for (h, _) in &instances {
        assert_eq!(h.fallbacks(), 0);
    }
}

/// The overshoot the cached mode allows, made to happen: shares leased,
/// the bucket refilled, then a flood spends both. Above the exact bound,
/// within exact + instances * share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_overshoot_happens_and_stays_bounded() {
    const SHARE: u64 = 10;
    let p = prefix("overshoot");
    let mut conn = redis_conn().await;
    let mut svcs = Vec::new();
    for _ in 0..4 {
        // 10 per second (T = 100 ms), burst 20.
        let layer = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
            .burst(20)
            .redis(store(), p.clone())
            .cached(SHARE, Duration::from_secs(30))
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        svcs.push(layer.layer(Mock::<u64>::new()));
    }
    // Two instances lease a share each (the bucket holds two), spend one.
    let mut first = 0;
    for svc in &svcs {
        first += u64::from(svc.clone().oneshot(1).await.is_ok());
    }
    assert_eq!(first, 2);
    // The bucket refills (2 s for 20 units); the leases are still held.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let start = server_time_us(&mut conn).await;
    let mut admitted = 0;
    for _ in 0..10 {
        for svc in &svcs {
            admitted += u64::from(svc.clone().oneshot(1).await.is_ok());
        }
    }
    let d = server_time_us(&mut conn).await - start;
    let exact = 20 + d / 100_000;
    let bound = exact + 4 * SHARE;
    eprintln!("overshoot: admitted {admitted}, exact bound {exact}, cached bound {bound}");
    assert!(
        admitted > exact,
        "the leases held at the start are spent too"
    );
    assert!(admitted <= bound);
}

#[tokio::test]
async fn cached_mode_settings() {
    let b = || RateLimitLayer::token_bucket(10, Duration::from_secs(1)).burst(5);
    for (share, ttl) in [(0, 100), (6, 100), (5, 0)] {
        let e = b()
            .redis(store(), prefix("cached-settings"))
            .cached(share, Duration::from_millis(ttl))
            .build()
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e, ConfigError::InvalidShare);
    }
    // A cost above the share is decided exactly; within it, from the lease.
    let layer = by_cost(b())
        .redis(store(), prefix("cached-cost"))
        .cached(2, Duration::from_secs(10))
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Mock::<u64>::new());
    svc.ready().await.unwrap().call(1).await.unwrap(); // leases 2, spends 1
    svc.ready().await.unwrap().call(1).await.unwrap(); // from the lease
    assert_eq!(handle.store_calls(), 1);
    svc.ready().await.unwrap().call(3).await.unwrap(); // exact: 3 > share
    assert_eq!(handle.store_calls(), 2);
    assert!(matches!(
        answer(svc.ready().await.unwrap().call(1).await),
        Answer::Limited { .. }
    ));
}

/// A flood at a limited key: with local denials, at most one Redis call
/// per refusal period per instance, whatever the number of callers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_denials_spare_redis() {
    let p = prefix("denials");
    // 10 per second, burst 1: a refusal period of 100 ms.
    let layer = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
        .keyed(|_: &u64| "hot")
        .redis(store(), p)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(Mock::<u64>::new());
    // Redis says the key is limited (the admission used the last unit):
    // from here on this instance knows, and the flood begins.
    svc.clone().oneshot(1).await.unwrap();
    let begin = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1_000);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while tokio::time::Instant::now() < deadline {
                let _ = svc.clone().oneshot(1).await;
                n += 1;
                tokio::task::yield_now().await;
            }
            n
        }));
    }
    let mut requests = 0;
    for t in tasks {
        requests += t.await.unwrap();
    }
    let periods = begin.elapsed().as_millis() as u64 / 100 + 1;
    let calls = handle.store_calls() - 1;
    eprintln!(
        "local denials: {requests} requests, {calls} Redis calls, {} local denials, {periods} periods",
        handle.local_denials()
    );
    assert!(requests > 1_000, "a flood: {requests}");
    assert!(calls <= periods, "{calls} Redis calls in {periods} periods");
    // Not starved: each local refusal outlasts Redis's by the answer's
    // travel time (plus scheduling on a loaded machine), so allow 30 %.
    assert!(
        handle.admitted() * 10 >= (periods - 1) * 7,
        "still admits near the rate: {} in {periods} periods",
        handle.admitted()
    );
    assert_eq!(handle.local_denials() + calls, requests);
}

#[tokio::test]
async fn local_denials_can_be_turned_off() {
    let layer = RateLimitLayer::token_bucket(1, Duration::from_secs(60))
        .redis(store(), prefix("no-denials"))
        .local_denials(0)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(Mock::<u64>::new());
    for _ in 0..5 {
        let _ = svc.ready().await.unwrap().call(1).await;
    }
    assert_eq!((handle.store_calls(), handle.local_denials()), (5, 0));
    assert_eq!((handle.admitted(), handle.rejected()), (1, 4));
}

/// The inner service is called only after the decision, on the instance
/// that was polled ready (the mock panics otherwise), and never for a
/// refusal or a cost above the burst.
#[tokio::test]
async fn tower_contract_and_errors() {
    let layer = by_cost(RateLimitLayer::token_bucket(1, Duration::from_secs(60)).burst(2))
        .redis(store(), prefix("contract"))
        .build()
        .unwrap();
    let mock = Mock::<u64>::new();
    let calls = mock.handle();
    let mut svc = layer.layer(mock);
    let r: Result<Reply<u64>, BoxError> = svc.ready().await.unwrap().call(2).await;
    assert_eq!(r.unwrap().request, 2);
    assert_eq!(
        answer(svc.ready().await.unwrap().call(3).await),
        Answer::Never
    );
    match answer(svc.ready().await.unwrap().call(1).await) {
        Answer::Limited {
            retry_after,
            remaining: 0,
        } => {
            assert!(
                retry_after > Duration::from_secs(59) && retry_after <= Duration::from_secs(60)
            );
        }
        a => panic!("{a:?}"),
    }
    assert_eq!(calls.calls(), 1);
}
