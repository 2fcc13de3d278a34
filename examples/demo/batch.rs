//! Batch fan-out: every request settles, good or bad, in input order.

use std::time::Duration;

use palisade::BatchLayer;
use palisade::batch::ItemError;
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};

/// A flaky in-process upstream: user 4 does not exist, every 5th call
/// fails, user 7 is very slow. Latency grows with the id.
async fn fetch_user(id: u32) -> Result<String, String> {
    tokio::time::sleep(Duration::from_millis(20 + 10 * u64::from(id % 4))).await;
    match id {
        4 => Err(format!("user {id}: not found")),
        7 => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(format!("user {id}"))
        }
        _ if id % 5 == 0 => Err(format!("user {id}: upstream 503")),
        _ => Ok(format!("user {id}")),
    }
}

pub(crate) async fn run() {
    println!("== batch: 12 lookups, at most 4 in flight, 200 ms per item");
    let layer = BatchLayer::builder()
        .max_in_flight(4)
        .item_timeout(Duration::from_millis(200))
        .build()
        .expect("valid batch config");
    let batch = layer.layer(service_fn(fetch_user));

    let start = Instant::now();
    let settled = batch
        .oneshot((1..=12).collect())
        .await
        .expect("a batch never fails");
    for (i, result) in settled.iter().enumerate() {
        let line = match result {
            Ok(user) => format!("fulfilled  {user}"),
            Err(ItemError::Timeout(limit)) => format!("rejected   timed out: {limit}"),
            Err(e) => format!("rejected   {e}"),
        };
        println!("  #{:<2} {line}", i + 1);
    }
    println!(
        "  {} fulfilled, {} rejected, settled in {} ms (paused time)",
        settled.fulfilled(),
        settled.rejected(),
        start.elapsed().as_millis()
    );

    // The throughput figure of the issue: 1,000 calls of 10 ms each, 100 at
    // a time, take ten rounds of 10 ms.
    let slow = service_fn(|n: u32| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok::<_, String>(n)
    });
    let layer = BatchLayer::builder()
        .max_in_flight(100)
        .build()
        .expect("valid");
    let start = Instant::now();
    let settled = layer.settle_all(slow, 0..1_000).await;
    println!(
        "  1,000 calls of 10 ms, 100 in flight: {} fulfilled in {} ms",
        settled.fulfilled(),
        start.elapsed().as_millis()
    );
    println!();
}
