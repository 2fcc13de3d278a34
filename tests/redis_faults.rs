//! The Redis store when Redis fails: unreachable, hanging, stopped and
//! restarted, scripts flushed. Each policy as configured, no decision
//! waits past its timeout, nothing panics, decisions return to Redis by
//! themselves. Servers this file stops are its own, on free ports.

mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use palisade::rate_limit::RateLimited;
use palisade::rate_limit::redis::{Fallback, RedisStore};
use palisade::{BoxError, RateLimitLayer};
use support::Mock;
use support::redis::{RedisServer, cli, free_port, prefix, redis_url, shared_port};
use tower::{Layer, ServiceExt};

const TIMEOUT: Duration = Duration::from_millis(100);
/// Scheduling slack on a shared 2-core machine.
const SLACK: Duration = Duration::from_millis(150);

#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Admit,
    Limited(Duration),
}

fn answer<T>(r: Result<T, BoxError>) -> Answer {
    match r {
        Ok(_) => Answer::Admit,
        Err(e) => match e.downcast_ref::<RateLimited>() {
            Some(l) => Answer::Limited(l.retry_after),
            None => panic!("unexpected error: {e}"),
        },
    }
}

/// A limiter of 5 per second, burst 2, on `url`.
fn layer(
    url: &str,
    fallback: Fallback,
) -> RateLimitLayer<
    palisade::rate_limit::Unkeyed,
    palisade::rate_limit::PerRequest,
    palisade::rate_limit::redis::Redis,
> {
    RateLimitLayer::token_bucket(5, Duration::from_secs(1))
        .burst(2)
        .redis(RedisStore::open(url).unwrap(), prefix("faults"))
        .timeout(TIMEOUT)
        .fallback(fallback)
        .build()
        .unwrap()
}

/// Runs `n` decisions, each bounded by the timeout, and returns them.
async fn decisions<L>(layer: &L, n: usize) -> Vec<Answer>
where
    L: Layer<Mock<u64>>,
    L::Service: tower::Service<u64, Error = BoxError> + Clone,
{
    let svc = layer.layer(Mock::new());
    let mut out = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        out.push(answer(svc.clone().oneshot(1).await));
        assert!(
            t.elapsed() <= TIMEOUT + SLACK,
            "a decision took {:?}",
            t.elapsed()
        );
    }
    out
}

#[tokio::test]
async fn unreachable_each_policy() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let policies = [
        (Fallback::FailOpen, vec![Answer::Admit; 10]),
        (
            Fallback::FailClosed {
                retry_after: Duration::from_millis(700),
            },
            (0..10)
                .map(|_| Answer::Limited(Duration::from_millis(700)))
                .collect(),
        ),
        (Fallback::local(1), vec![Answer::Admit, Answer::Admit]),
    ];
    for (policy, expected) in policies {
        let layer = layer(&url, policy);
        let handle = layer.handle();
        let got = decisions(&layer, 10).await;
        if let Fallback::Local { .. } = policy {
            // The insurance limiter: the burst of 2, then refusals.
            assert_eq!(got[..2], expected[..], "{policy:?}");
            assert!(
                got[2..].iter().all(|a| matches!(a, Answer::Limited(_))),
                "{policy:?}: {got:?}"
            );
        } else {
            assert_eq!(got, expected, "{policy:?}");
        }
        assert_eq!(
            handle.fallbacks(),
            10,
            "{policy:?}: every decision fell back"
        );
        // The breaker opened after 3 failures: the rest did not try Redis.
        assert!(
            handle.store_calls() <= 4,
            "{policy:?}: {} calls",
            handle.store_calls()
        );
        assert_eq!(handle.store_errors(), handle.store_calls());
    }
}

/// A server that accepts connections and never answers: every decision
/// ends at its timeout, then the breaker answers at once.
#[tokio::test]
async fn hanging_server_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if let Ok((c, _)) = listener.accept() {
                conns.push(c);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let layer = layer(&url, Fallback::FailOpen);
    let handle = layer.handle();
    let started = Instant::now();
    let got = decisions(&layer, 10).await;
    assert_eq!(got, (0..10).map(|_| Answer::Admit).collect::<Vec<_>>());
    assert_eq!(handle.fallbacks(), 10);
    // Three timeouts, then fast fallbacks while the breaker is open.
    assert!(handle.store_calls() <= 4, "{} calls", handle.store_calls());
    assert!(
        started.elapsed() < 4 * (TIMEOUT + SLACK),
        "{:?}",
        started.elapsed()
    );
    held.join().unwrap();
}

/// A server stopped mid-run and started again: decisions fall back while it
/// is down, each within its timeout, and go back to Redis by themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_and_restarted() {
    let mut server = RedisServer::start();
    // Fail closed: while Redis is down nothing is admitted, so an admission
    // after the restart proves the decision came from Redis again.
    let layer = RateLimitLayer::token_bucket(1_000, Duration::from_secs(1))
        .burst(1_000)
        .redis(RedisStore::open(&server.url()).unwrap(), prefix("restart"))
        .timeout(TIMEOUT)
        .fallback(Fallback::fail_closed())
        .build()
        .unwrap();
    let handle = layer.handle();
    assert!(
        decisions(&layer, 20)
            .await
            .iter()
            .all(|a| *a == Answer::Admit)
    );
    assert_eq!(handle.fallbacks(), 0);

    server.stop();
    let down = decisions(&layer, 30).await;
    assert!(
        down.iter()
            .all(|a| *a == Answer::Limited(Duration::from_secs(1))),
        "{down:?}"
    );
    assert_eq!(handle.fallbacks(), 30);
    let calls_while_down = handle.store_calls();

    server.restart();
    let back = Instant::now();
    let svc = layer.layer(Mock::new());
    loop {
        let t = Instant::now();
        let a = answer(svc.clone().oneshot(1).await);
        assert!(
            t.elapsed() <= TIMEOUT + SLACK,
            "a decision took {:?}",
            t.elapsed()
        );
        if a == Answer::Admit {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "never went back to Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "back to Redis {:?} after the restart ({} calls while down)",
        back.elapsed(),
        calls_while_down
    );
    let fallbacks = handle.fallbacks();
    assert!(
        decisions(&layer, 20)
            .await
            .iter()
            .all(|a| *a == Answer::Admit)
    );
    assert_eq!(handle.fallbacks(), fallbacks, "stays on Redis");
}

/// `SCRIPT FLUSH` mid-run: the next call gets `NOSCRIPT`, loads the script
/// and runs it again; no decision falls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_mid_run() {
    let url = redis_url();
    let bucket = RateLimitLayer::token_bucket(10_000, Duration::from_secs(1))
        .burst(10_000)
        .redis(RedisStore::open(&url).unwrap(), prefix("flush"))
        .fallback(Fallback::fail_closed())
        .build()
        .unwrap();
    let window = RateLimitLayer::sliding_window(10_000, Duration::from_secs(1))
        .redis(RedisStore::open(&url).unwrap(), prefix("flush-window"))
        .fallback(Fallback::fail_closed())
        .build()
        .unwrap();
    for round in 0..3 {
        assert!(
            decisions(&bucket, 10)
                .await
                .iter()
                .all(|a| *a == Answer::Admit),
            "round {round}"
        );
        assert!(
            decisions(&window, 10)
                .await
                .iter()
                .all(|a| *a == Answer::Admit),
            "round {round}"
        );
        assert_eq!(cli(shared_port(), &["SCRIPT", "FLUSH"]).trim(), "OK");
    }
    assert_eq!(bucket.handle().fallbacks() + window.handle().fallbacks(), 0);
    assert_eq!(
        bucket.handle().store_errors() + window.handle().store_errors(),
        0
    );
}

/// A stalled server while a key's local refusal ends: one request probes
/// Redis, the others wait for its answer, and none waits past its own
/// timeout; all fall back, and Redis answers again once thawed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_behind_a_stalled_probe_keep_their_timeout() {
    let server = RedisServer::start();
    // 10 per second, burst 1: one admission, then refused for 100 ms.
    let layer = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
        .redis(RedisStore::open(&server.url()).unwrap(), prefix("stalled"))
        .timeout(TIMEOUT)
        .fallback(Fallback::FailOpen)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(Mock::<u64>::new());
    assert_eq!(answer(svc.clone().oneshot(1).await), Answer::Admit);
    assert!(matches!(
        answer(svc.clone().oneshot(1).await),
        Answer::Limited(_)
    ));
    assert_eq!(handle.local_denials(), 1);
    server.freeze(true);
    tokio::time::sleep(Duration::from_millis(120)).await;
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let t = Instant::now();
                let a = answer(svc.oneshot(1).await);
                (a, t.elapsed())
            })
        })
        .collect();
    for t in tasks {
        let (a, took) = t.await.unwrap();
        assert_eq!(a, Answer::Admit, "failed open");
        assert!(took <= TIMEOUT + SLACK, "waited {took:?}");
    }
    assert_eq!(handle.fallbacks(), 8);
    assert!(
        handle.store_calls() <= 2 + 3,
        "one probe, not one call each"
    );
    server.freeze(false);
}
