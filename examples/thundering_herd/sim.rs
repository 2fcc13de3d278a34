//! The simulation behind `examples/thundering_herd.rs`, shared with
//! `tests/thundering_herd.rs`.
//!
//! The model is the one of the AWS Architecture Blog's "Exponential Backoff
//! and Jitter" study: `N` clients each want to update one row once, under
//! optimistic concurrency. A call reads the row's version, then writes
//! conditionally on it; the write fails if another write landed in between.
//! Every message crosses a network whose one-way delay is normal with mean
//! 10 ms and standard deviation 2 ms. A client whose write fails retries the
//! whole read-then-write, through `RetryLayer`, until it succeeds; backoff
//! base 5 ms, cap 2 s, factor 2.
//!
//! Everything runs in tokio's paused time on one thread, with seeded
//! randomness (the network's and each client's jitter): a run is
//! deterministic, and takes milliseconds however long it lasts in
//! simulated time.
#![allow(dead_code)] // the test uses part of it, the example the rest

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::{Backoff, Jitter, RetryLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

/// The backoff strategies compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Retry at once.
    NoBackoff,
    /// Exponential backoff without jitter.
    Exponential,
    /// Exponential with full jitter.
    FullJitter,
    /// Exponential with equal jitter.
    EqualJitter,
    /// Decorrelated jitter.
    Decorrelated,
}

impl Strategy {
    pub const ALL: [Strategy; 5] = [
        Strategy::NoBackoff,
        Strategy::Exponential,
        Strategy::EqualJitter,
        Strategy::Decorrelated,
        Strategy::FullJitter,
    ];

    fn backoff(self) -> Backoff {
        let exponential = |jitter| {
            Backoff::exponential(BASE)
                .max_delay(CAP)
                .jitter(jitter)
                .build()
                .expect("valid backoff")
        };
        match self {
            Strategy::NoBackoff => Backoff::constant(Duration::ZERO),
            Strategy::Exponential => exponential(Jitter::None),
            Strategy::FullJitter => exponential(Jitter::Full),
            Strategy::EqualJitter => exponential(Jitter::Equal),
            Strategy::Decorrelated => exponential(Jitter::Decorrelated),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::NoBackoff => "no backoff",
            Strategy::Exponential => "exponential",
            Strategy::FullJitter => "full jitter",
            Strategy::EqualJitter => "equal jitter",
            Strategy::Decorrelated => "decorrelated",
        })
    }
}

const BASE: Duration = Duration::from_millis(5);
const CAP: Duration = Duration::from_secs(2);
const NET_MEAN_MS: f64 = 10.0;
const NET_SD_MS: f64 = 2.0;

/// What one run measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Write attempts, all clients together (the work the row's server did).
    pub calls: u64,
    /// Simulated time until the last client's write succeeded.
    pub time: Duration,
}

/// Runs `clients` clients with one strategy, in a paused-time runtime of
/// its own.
pub fn simulate(clients: usize, strategy: Strategy, seed: u64) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
    rt.block_on(run(clients, strategy, seed))
}

/// The same, averaged over `runs` seeds (`seed`, `seed + 1`, ...), as the
/// AWS study averaged 100 runs.
pub fn simulate_mean(clients: usize, strategy: Strategy, seed: u64, runs: u64) -> Outcome {
    let mut calls = 0;
    let mut time = Duration::ZERO;
    for s in seed..seed + runs {
        let o = simulate(clients, strategy, s);
        calls += o.calls;
        time += o.time;
    }
    Outcome {
        calls: calls / runs,
        time: time / runs as u32,
    }
}

/// Runs the clients on the current (paused) runtime.
pub async fn run(clients: usize, strategy: Strategy, seed: u64) -> Outcome {
    let row = Row::new(seed);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients as u64 {
        // Each client is its own process: its own layer and jitter seed.
        let layer = RetryLayer::with_backoff(strategy.backoff())
            .max_attempts(u32::MAX)
            .seed(mix(seed ^ mix(client + 1)))
            .build()
            .expect("valid retry settings");
        let mut svc = layer.layer(row.clone());
        tasks.push(tokio::spawn(async move {
            svc.ready().await.expect("always ready").call(()).await.ok();
            Instant::now()
        }));
    }
    let mut last = start;
    for task in tasks {
        last = last.max(task.await.expect("a client finished"));
    }
    Outcome {
        calls: row.shared.calls.load(Relaxed),
        time: last - start,
    }
}

/// The contended row behind a network: a `tower::Service` whose call is a
/// read, then a conditional write.
#[derive(Clone)]
struct Row {
    shared: Arc<RowState>,
}

struct RowState {
    version: AtomicU64,
    calls: AtomicU64,
    /// The network's random source (SplitMix64 state).
    net: AtomicU64,
}

/// A write lost the race: another landed since this client's read.
#[derive(Debug)]
pub struct Conflict;

impl Row {
    fn new(seed: u64) -> Self {
        Self {
            shared: Arc::new(RowState {
                version: AtomicU64::new(0),
                calls: AtomicU64::new(0),
                net: AtomicU64::new(mix(seed)),
            }),
        }
    }
}

impl RowState {
    /// One network crossing: `|N(10 ms, 2 ms)|`, by Box-Muller.
    fn hop(&self) -> Duration {
        let u1 = unit(self.next());
        let u2 = unit(self.next());
        let normal = (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        Duration::from_secs_f64((NET_MEAN_MS + NET_SD_MS * normal).abs() / 1e3)
    }

    fn next(&self) -> u64 {
        mix(self.net.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed))
    }
}

impl Service<()> for Row {
    type Response = ();
    type Error = Conflict;
    type Future = Pin<Box<dyn Future<Output = Result<(), Conflict>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Conflict>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        let row = self.shared.clone();
        Box::pin(async move {
            tokio::time::sleep(row.hop()).await; // read request
            let seen = row.version.load(Relaxed);
            tokio::time::sleep(row.hop()).await; // read reply
            tokio::time::sleep(row.hop()).await; // write request
            row.calls.fetch_add(1, Relaxed);
            let won = row
                .version
                .compare_exchange(seen, seen + 1, Relaxed, Relaxed)
                .is_ok();
            tokio::time::sleep(row.hop()).await; // write reply
            if won { Ok(()) } else { Err(Conflict) }
        })
    }
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64 bits to `[0, 1)`.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 / (1u64 << 53) as f64
}
