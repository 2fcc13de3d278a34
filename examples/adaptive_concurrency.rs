//! The adaptive concurrency limit finding an upstream's capacity, in paused
//! time (30 simulated seconds in about a second of real time).
//!
//! The upstream has `C` workers taking 20 ms per call behind a queue: 20 ms
//! while at most `C` calls are held, and longer with every call beyond. It
//! is offered 1.5 times what it can serve. `C` is 20, then halves to 10 at
//! 10 s, then recovers at 20 s. The timeline shows the limit following `C`;
//! the summary compares it with a fixed limit of 2C, which holds a queue
//! as long as the capacity and so doubles latency (quadruples it while the
//! capacity is halved) for no more goodput.
//!
//! `cargo run --example adaptive_concurrency`

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::testing::Mock;
use palisade::{BoxError, ConcurrencyLimitLayer};
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

const SERVICE_TIME: Duration = Duration::from_millis(20);
const PHASE: Duration = Duration::from_secs(10);
const CAPACITY: [usize; 3] = [20, 10, 20];

struct Outcome {
    latencies: Vec<Duration>,
    refused: u64,
}

/// Offers 1,500 requests a second to `layer` over an upstream whose
/// capacity changes by phase; calls `tick` every 500 ms.
async fn run(layer: ConcurrencyLimitLayer, mut tick: impl FnMut(Duration, usize, u32)) -> Outcome {
    let mock = Mock::<u64>::new().servers(CAPACITY[0], SERVICE_TIME);
    let upstream = mock.handle();
    let handle = layer.handle();
    let svc = layer.layer(mock);
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + PHASE * CAPACITY.len() as u32;
    let mut arrivals = tokio::time::interval(Duration::from_micros(667));
    let mut ticks = tokio::time::interval(Duration::from_millis(500));
    let mut phase = 0;
    loop {
        tokio::select! {
            biased;
            at = ticks.tick() => {
                if at >= end {
                    break;
                }
                let now_phase = ((at - start).as_secs() / PHASE.as_secs()) as usize;
                if now_phase != phase {
                    phase = now_phase;
                    upstream.set_workers(CAPACITY[phase]);
                }
                tick(at - start, CAPACITY[phase], handle.limit());
            }
            _ = arrivals.tick() => {
                let call = svc.clone().oneshot(0);
                let (latencies, refused) = (latencies.clone(), refused.clone());
                tokio::spawn(async move {
                    let sent = Instant::now();
                    let result: Result<_, BoxError> = call.await;
                    match result {
                        Ok(_) => latencies.lock().unwrap().push(sent.elapsed()),
                        Err(_) => {
                            refused.fetch_add(1, Relaxed);
                        }
                    }
                });
            }
        }
    }
    let mut latencies = std::mem::take(&mut *latencies.lock().unwrap());
    latencies.sort_unstable();
    Outcome {
        latencies,
        refused: refused.load(Relaxed),
    }
}

fn summary(name: &str, o: &Outcome) {
    let at = |p: f64| o.latencies[((o.latencies.len() - 1) as f64 * p) as usize];
    println!(
        "{name:<22} p50 {:>5.1} ms   p99 {:>5.1} ms   goodput {:>4.0}/s   refused {:>5}",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        o.latencies.len() as f64 / 30.0,
        o.refused,
    );
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), BoxError> {
    println!("Gradient2 on an upstream of C workers (20 ms a call), offered 1.5x C:\n");
    println!("  time    C  limit  (# a place, | the capacity, + both)");
    let adaptive = run(
        ConcurrencyLimitLayer::gradient2()
            .initial_limit(10)
            .build()?,
        |t, c, limit| {
            // One `#` per place, `|` at the capacity.
            let bar: String = (1..=c.max(limit as usize))
                .map(|i| match i {
                    i if i == c && i <= limit as usize => '+',
                    i if i == c => '|',
                    i if i <= limit as usize => '#',
                    _ => ' ',
                })
                .collect();
            println!("{:>5.1} s {c:>4} {limit:>5}  {bar}", t.as_secs_f64());
        },
    )
    .await;
    let fixed = run(ConcurrencyLimitLayer::fixed(40).build()?, |_, _, _| {}).await;

    println!("\nAdmitted requests over the 30 s (unloaded latency: 20 ms):");
    summary("Gradient2", &adaptive);
    summary("fixed limit 2C (40)", &fixed);
    Ok(())
}
