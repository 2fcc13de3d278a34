//! The Redis store through a three-node Redis Cluster this test starts on
//! free ports: a fleet of four sharing per-key limits with keys over every
//! node, then one node stopped: only its slots fall back.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use palisade::RateLimitLayer;
use palisade::rate_limit::RateLimited;
use palisade::rate_limit::redis::{Fallback, RedisStore};
use redis::cluster::ClusterClient;
use support::Mock;
use support::redis::{Cluster, cli, prefix};
use tower::{Layer, ServiceExt};

const KEYS: u64 = 24;
const RATE: u64 = 25;
const BURST: u64 = 5;
const CLOSED: Duration = Duration::from_millis(777);
const TIMEOUT: Duration = Duration::from_millis(300);

async fn store(urls: &[String]) -> RedisStore {
    let client = ClusterClient::builder(urls.to_vec())
        .retries(1)
        .connection_timeout(Duration::from_millis(200))
        .response_timeout(Duration::from_millis(200))
        .build()
        .expect("cluster client");
    RedisStore::from(
        client
            .get_async_connection()
            .await
            .expect("cluster connection"),
    )
}

fn server_time_us(port: u16) -> u64 {
    let out = cli(port, &["TIME"]);
    let mut parts = out
        .split_whitespace()
        .map(|p| p.parse::<u64>().expect("TIME"));
    let (s, us) = (parts.next().expect("s"), parts.next().expect("us"));
    s * 1_000_000 + us
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_fleet_then_one_node_down() {
    let mut cluster = Cluster::start();
    let urls = cluster.urls();
    let p = prefix("cluster");
    // Which node holds each key.
    let owners: Vec<usize> = (0..KEYS)
        .map(|k| cluster.owner(cluster.slot(format!("{p}{k}").as_bytes())))
        .collect();
    for node in 0..3 {
        assert!(owners.contains(&node), "keys on every node: {owners:?}");
    }

    let mut instances = Vec::new();
    for _ in 0..4 {
        let layer = RateLimitLayer::token_bucket(RATE, Duration::from_secs(1))
            .burst(BURST)
            .keyed(|k: &u64| *k)
            .redis(store(&urls).await, p.clone())
            .timeout(TIMEOUT)
            .fallback(Fallback::FailClosed {
                retry_after: CLOSED,
            })
            .build()
            .unwrap();
        instances.push((layer.handle(), layer.layer(Mock::<u64>::new())));
    }

    // The fleet: 4 instances x 3 callers over every key, for 2 s.
    let admitted: Arc<Vec<AtomicU64>> = Arc::new((0..KEYS).map(|_| AtomicU64::new(0)).collect());
    let start = server_time_us(cluster.nodes[0].port);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    let mut tasks = Vec::new();
    for (i, (_, svc)) in instances.iter().enumerate() {
        for j in 0..3u64 {
            let svc = svc.clone();
            let admitted = admitted.clone();
            tasks.push(tokio::spawn(async move {
                let mut k = (i as u64 * 3 + j) % KEYS;
                while tokio::time::Instant::now() < deadline {
                    if svc.clone().oneshot(k).await.is_ok() {
                        admitted[k as usize].fetch_add(1, Ordering::Relaxed);
                    }
                    k = (k + 1) % KEYS;
                    // Local refusals are ready at once: yield, as per-request
                    // tasks would, so the connection's driver runs.
                    tokio::task::yield_now().await;
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let d = server_time_us(cluster.nodes[0].port) - start;
    let allowed = BURST + d / (1_000_000 / RATE);
    let mut total = 0;
    for (k, a) in admitted.iter().enumerate() {
        let a = a.load(Ordering::Relaxed);
        assert!(a <= allowed, "key {k}: admitted {a} > allowed {allowed}");
        total += a;
    }
    for (h, _) in &instances {
        assert_eq!(h.fallbacks(), 0);
    }
    eprintln!(
        "cluster fleet: admitted {total} of {} allowed over {d} µs",
        allowed * KEYS
    );
    // Near the full limit. Each local refusal ends one answer's travel
    // time after Redis's, so every refusal period of every key can lose
    // up to a round trip (and a loaded machine's scheduling delay): allow
    // 3 % with T = 40 ms (tests/redis.rs holds the single-server fleet to
    // 2 %).
    assert!(
        total * 100 >= allowed * KEYS * 97,
        "full limit: {total} of {}",
        allowed * KEYS
    );

    // One node down: its keys fall back (fail closed), the others still get
    // Redis's answers, each decision within its timeout.
    let down = 1;
    cluster.nodes[down].stop();
    tokio::time::sleep(Duration::from_millis(200)).await; // local denials end
    let (handle, svc) = &instances[0];
    // The stopped node's keys first, several times each (enough failures in
    // a row to trip a breaker), then the live keys: one breaker for the
    // whole cluster would now send every key to the fallback.
    let mut order: Vec<u64> = (0..KEYS).filter(|k| owners[*k as usize] == down).collect();
    order = order.iter().flat_map(|k| [*k; 4]).collect();
    order.extend((0..KEYS).filter(|k| owners[*k as usize] != down));
    for pass in 0..3 {
        for &k in &order {
            let before = handle.fallbacks();
            let t = Instant::now();
            let r = svc.clone().oneshot(k).await;
            assert!(
                t.elapsed() <= TIMEOUT + Duration::from_millis(200),
                "took {:?}",
                t.elapsed()
            );
            let fell_back = handle.fallbacks() - before;
            if owners[k as usize] == down {
                assert_eq!(fell_back, 1, "pass {pass}, key {k} on the stopped node");
                let e = r.unwrap_err();
                assert_eq!(e.downcast_ref::<RateLimited>().unwrap().retry_after, CLOSED);
            } else {
                assert_eq!(fell_back, 0, "pass {pass}, key {k} on a live node");
                if let Err(e) = r {
                    let l = e.downcast_ref::<RateLimited>().unwrap();
                    assert!(l.retry_after < CLOSED, "a Redis answer: {l:?}");
                }
            }
        }
    }
}
