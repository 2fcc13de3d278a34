//! A decision through Redis beside a bare `PING` on the same connection, in
//! the same run: latency (p50, p99) with one caller, and decisions per
//! second with 1 and 16 concurrent callers.
//!
//! Needs a Redis at `REDIS_URL` (else 127.0.0.1:6379). The limiter is an
//! unkeyed token bucket that always admits (the decision's full path: one
//! `EVALSHA` round trip, then the inner service), local denials on; the
//! inner service answers at once. The percentile table is measured by hand
//! (criterion reports means and medians only) and printed first; criterion
//! then measures the single-caller latency of both the usual way.
//!
//! Cached mode (leases of 1,000 units) is measured beside them.
//!
//! Targets (issue 14): decision p50 within 1.5x of PING's; 16 callers at
//! least 8x the single caller's decisions per second; cached mode at least
//! 10x the exact mode's decisions per second.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use palisade::RateLimitLayer;
use palisade::rate_limit::redis::RedisStore;
use tower::{Layer, Service, ServiceExt};

#[derive(Clone, Copy)]
struct Bare;

impl Service<u64> for Bare {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn prefix() -> String {
    format!("palisade-bench:{}:", std::process::id())
}

/// Latencies of `n` calls from each of `callers` tasks, and the wall time.
async fn run<F, Fut>(callers: usize, n: usize, op: F) -> (Vec<Duration>, Duration)
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let start = Instant::now();
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = Instant::now();
                    op().await;
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("caller"));
    }
    let wall = start.elapsed();
    all.sort();
    (all, wall)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn table(_: &mut Criterion) {
    let rt = runtime();
    rt.block_on(async {
        let store = RedisStore::open(&url()).expect("url");
        if let Err(e) = store.ping().await {
            panic!(
                "no Redis at {}: {e}; install redis-server and start it",
                url()
            );
        }
        let layer = RateLimitLayer::token_bucket(1_000_000, Duration::from_secs(1))
            .burst(1_000_000_000)
            .redis(store.clone(), prefix())
            .build()
            .expect("layer");
        let handle = layer.handle();
        let svc = layer.layer(Bare);
        let decide = move || {
            let svc = svc.clone();
            async move {
                svc.oneshot(1).await.expect("admitted");
            }
        };
        // Cached mode: leases of 1,000 units, so almost every decision is
        // answered in process.
        let cached = RateLimitLayer::token_bucket(1_000_000, Duration::from_secs(1))
            .burst(1_000_000_000)
            .redis(store.clone(), format!("{}cached:", prefix()))
            .cached(1_000, Duration::from_secs(1))
            .build()
            .expect("cached layer");
        let cached_handle = cached.handle();
        let cached_svc = cached.layer(Bare);
        let decide_cached = move || {
            let svc = cached_svc.clone();
            async move {
                svc.oneshot(1).await.expect("admitted");
            }
        };
        let ping_store = store.clone();
        let ping = move || {
            let s = ping_store.clone();
            async move { s.ping().await.expect("ping") }
        };
        // Warm up both (connection, script load).
        run(1, 2_000, ping.clone()).await;
        run(1, 2_000, decide.clone()).await;
        run(1, 2_000, decide_cached.clone()).await;
        println!("\nredis decision vs PING on one connection (same run)");
        println!("{:<32}{:>10}{:>10}{:>14}", "", "p50", "p99", "ops/s");
        let mut rates = std::collections::HashMap::new();
        for callers in [1usize, 16] {
            let n = 20_000 / callers;
            for (name, lat_wall) in [
                ("PING", run(callers, n, ping.clone()).await),
                ("decision", run(callers, n, decide.clone()).await),
                (
                    "cached decision",
                    run(callers, 5 * n, decide_cached.clone()).await,
                ),
            ] {
                let (lat, wall) = lat_wall;
                let rate = lat.len() as f64 / wall.as_secs_f64();
                rates.insert((name, callers), rate);
                println!(
                    "{:<32}{:>10.1?}{:>10.1?}{:>14.0}",
                    format!("{name}, {callers} caller(s)"),
                    pct(&lat, 0.50),
                    pct(&lat, 0.99),
                    rate
                );
            }
        }
        println!(
            "decision, 16 callers / 1 caller: {:.1}x; cached / exact, 16 callers: {:.1}x",
            rates[&("decision", 16)] / rates[&("decision", 1)],
            rates[&("cached decision", 16)] / rates[&("decision", 16)],
        );
        println!(
            "cached: {} Redis calls for {} decisions",
            cached_handle.store_calls(),
            cached_handle.admitted()
        );
        assert_eq!(handle.fallbacks(), 0, "every decision came from Redis");
        assert_eq!(cached_handle.fallbacks(), 0);
    });
}

fn criterion_latency(c: &mut Criterion) {
    let rt = runtime();
    let store = rt.block_on(async { RedisStore::open(&url()).expect("url") });
    let layer = rt.block_on(async {
        RateLimitLayer::token_bucket(1_000_000, Duration::from_secs(1))
            .burst(1_000_000_000)
            .redis(store.clone(), prefix())
            .build()
            .expect("layer")
    });
    let svc = layer.layer(Bare);
    let mut g = c.benchmark_group("redis");
    g.bench_function("ping", |b| {
        b.iter(|| rt.block_on(store.ping()).expect("ping"));
    });
    g.bench_function("decision", |b| {
        b.iter(|| rt.block_on(svc.clone().oneshot(1)).expect("admitted"));
    });
    g.finish();
}

criterion_group!(benches, table, criterion_latency);
criterion_main!(benches);
