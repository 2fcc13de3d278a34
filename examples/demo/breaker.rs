//! The circuit breaker: an upstream that is healthy, then failing, then
//! recovering, called in a loop through a breaker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use palisade::backoff::{Backoff, Jitter};
use palisade::circuit_breaker::{CircuitOpen, State, Window};
use palisade::{BoxError, CircuitBreakerLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

const TICK: Duration = Duration::from_millis(500);
const TICKS: u32 = 36;
const CALLS_PER_TICK: u64 = 8;

/// How the upstream behaves `elapsed` into the demo.
fn phase(elapsed: Duration) -> &'static str {
    match elapsed.as_secs() {
        0..5 => "healthy",
        5..10 => "failing",
        _ => "recovering",
    }
}

/// Whether call number `n` fails in `phase`: 2%, 90%, then 25%.
fn fails(phase: &str, n: u64) -> bool {
    match phase {
        "healthy" => n % 50 == 49,
        "failing" => n % 10 != 0,
        _ => n % 4 == 0,
    }
}

pub(crate) async fn run() {
    println!("== circuit breaker: failure rate >= 50% over the last 2 s (min 6 calls),");
    println!("   open 1 s growing x2 per re-trip (capped at 4 s, equal jitter, seed 7), 2 probes");
    let start = Instant::now();
    let reached = Arc::new(AtomicU64::new(0));
    let upstream = {
        let reached = reached.clone();
        service_fn(move |_request: u64| {
            let n = reached.fetch_add(1, Relaxed);
            let failed = fails(phase(start.elapsed()), n);
            async move {
                if failed {
                    Err::<&'static str, BoxError>("upstream error".into())
                } else {
                    Ok("ok")
                }
            }
        })
    };
    let layer = CircuitBreakerLayer::failure_rate(0.5)
        .window(Window::time_with_buckets(Duration::from_secs(2), 4))
        .min_calls(6)
        .half_open_probes(2)
        .open_backoff(
            Backoff::exponential(Duration::from_secs(1))
                .max_delay(Duration::from_secs(4))
                .jitter(Jitter::Equal)
                .build()
                .expect("valid backoff"),
        )
        .seed(7)
        .name("demo-upstream")
        .build()
        .expect("valid breaker");
    let handle = layer.handle();
    let breaker = layer.layer(upstream);

    println!(
        "     time  upstream    calls  ok fail rejected  state during the tick      window (2 s)"
    );
    let (mut ok, mut failed, mut rejected) = (0u64, 0u64, 0u64);
    let mut transitions = 0;
    let mut last = State::Closed;
    for tick in 0..TICKS {
        let (mut t_ok, mut t_failed, mut t_rejected) = (0, 0, 0);
        // Every state the breaker went through during the tick.
        let mut states = vec![handle.state()];
        for i in 0..CALLS_PER_TICK {
            // A clone per call, as a server would make per request.
            let mut svc = breaker.clone();
            let ready = svc.ready().await.expect("ready");
            // Sampled once admitted (a probe shows half-open) and once done.
            let admitted_in = handle.state();
            let result = ready.call(i).await;
            match result {
                Ok(_) => t_ok += 1,
                Err(e) if e.is::<CircuitOpen>() => t_rejected += 1,
                Err(_) => t_failed += 1,
            }
            for now in [admitted_in, handle.state()] {
                if now != last {
                    transitions += 1;
                    last = now;
                }
                if states.last() != Some(&now) {
                    states.push(now);
                }
            }
        }
        let counts = handle.counts();
        let states: Vec<String> = states.iter().map(State::to_string).collect();
        println!(
            "  {:>6.1}s  {:<10} {:>6} {:>3} {:>4} {:>8}  {:<26} {}/{} failed",
            f64::from(tick) * TICK.as_secs_f64(),
            phase(start.elapsed()),
            CALLS_PER_TICK,
            t_ok,
            t_failed,
            t_rejected,
            states.join(" > "),
            counts.failures,
            counts.calls,
        );
        ok += t_ok;
        failed += t_failed;
        rejected += t_rejected;
        tokio::time::sleep(TICK).await;
    }
    let total = u64::from(TICKS) * CALLS_PER_TICK;
    println!(
        "  summary: {total} calls: {ok} ok, {failed} failed at the upstream, {rejected} rejected at once by the breaker"
    );
    println!(
        "           ({} reached the upstream; {transitions} state changes; ends {})\n",
        reached.load(Relaxed),
        handle.state()
    );
}
