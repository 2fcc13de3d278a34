//! `cargo run --example adaptive_throttle`: client-side adaptive throttling
//! (Google SRE book, "Handling Overload") against a backend whose capacity
//! falls to 20% of the offered load, then 5%, then recovers, shown as a
//! timeline minute by minute. Beside it, a keyed breaker: three upstream
//! hosts behind one layer, one of them down.
//!
//! Time is tokio's paused clock: 20 simulated minutes run in about a
//! second.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::circuit_breaker::{AdaptiveThrottleLayer, CircuitOpen, State, Throttled};
use palisade::{BoxError, CircuitBreakerLayer};
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceExt, service_fn};

const OFFERED_PER_SEC: u64 = 50;
const MINUTES: u64 = 20;

/// The backend's capacity per second, as a share of the offered load.
fn capacity(minute: u64) -> f64 {
    match minute {
        0..3 => 1.0,
        3..8 => 0.2,
        8..13 => 0.05,
        _ => 1.0,
    }
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), BoxError> {
    throttle_timeline().await?;
    keyed_breakers().await?;
    Ok(())
}

async fn throttle_timeline() -> Result<(), BoxError> {
    println!("== adaptive throttling, K = 2, window 2 min: the client offers {OFFERED_PER_SEC}/s");
    println!("   p = max(0, (requests - K * accepts) / (requests + 1))\n");
    let start = Instant::now();
    // (second, accepted in it), and per minute (sent, accepted).
    let slot = Arc::new(Mutex::new((0u64, 0u64)));
    let minutes = Arc::new(Mutex::new(vec![(0u64, 0u64); MINUTES as usize]));
    let backend = {
        let (slot, minutes) = (slot.clone(), minutes.clone());
        service_fn(move |_: ()| {
            let second = start.elapsed().as_secs();
            let limit = (capacity(second / 60) * OFFERED_PER_SEC as f64) as u64;
            let mut slot = slot.lock().unwrap();
            if slot.0 != second {
                *slot = (second, 0);
            }
            let accepted = slot.1 < limit;
            slot.1 += u64::from(accepted);
            let mut minutes = minutes.lock().unwrap();
            let m = &mut minutes[(second / 60) as usize];
            m.0 += 1;
            m.1 += u64::from(accepted);
            async move {
                if accepted {
                    Ok(())
                } else {
                    Err::<(), BoxError>("503 overloaded".into())
                }
            }
        })
    };
    let layer = AdaptiveThrottleLayer::builder().seed(7).build()?;
    let handle = layer.handle();
    let mut client = layer.layer(backend);
    let gap = Duration::from_secs(1) / OFFERED_PER_SEC as u32;
    let mut throttled = vec![0u64; MINUTES as usize];
    println!("minute  capacity   sent/s  accepted/s  throttled/s   sent (each # = 2/s)");
    for minute in 0..MINUTES {
        for _ in 0..60 * OFFERED_PER_SEC {
            if let Err(e) = client.ready().await?.call(()).await {
                if e.is::<Throttled>() {
                    throttled[minute as usize] += 1;
                }
            }
            advance(gap).await;
        }
        let (sent, accepted) = minutes.lock().unwrap()[minute as usize];
        let per_sec = |n: u64| n as f64 / 60.0;
        println!(
            "{:>6}  {:>6.0}/s  {:>7.1}  {:>10.1}  {:>11.1}   {}",
            minute + 1,
            capacity(minute) * OFFERED_PER_SEC as f64,
            per_sec(sent),
            per_sec(accepted),
            per_sec(throttled[minute as usize]),
            "#".repeat((per_sec(sent) / 2.0).round() as usize)
        );
    }
    let counts = handle.counts();
    println!(
        "\nnow: {} requests and {} accepts in the window, p = {:.2}; {} throttled in all\n",
        counts.requests, counts.accepts, counts.rejection_probability, counts.throttled
    );
    Ok(())
}

async fn keyed_breakers() -> Result<(), BoxError> {
    println!(
        "== keyed breaker: one breaker per upstream host (3 failures in a row open it for 10 s)"
    );
    let layer = CircuitBreakerLayer::consecutive_failures(3)
        .open_for(Duration::from_secs(10))
        .keyed(|host: &&'static str| *host)
        .max_keys(100)
        .build()?;
    let handle = layer.handle();
    let mut client = layer.layer(service_fn(|host: &'static str| async move {
        if host == "b.internal" {
            Err::<&str, BoxError>("connection refused".into())
        } else {
            Ok(host)
        }
    }));
    for round in 1..=5 {
        let mut line = format!("round {round}:");
        for host in ["a.internal", "b.internal", "c.internal"] {
            let outcome = match client.ready().await?.call(host).await {
                Ok(_) => "ok".to_string(),
                Err(e) => match e.downcast_ref::<CircuitOpen>() {
                    Some(open) => format!("rejected (probe in {:?})", open.retry_after),
                    None => "failed".to_string(),
                },
            };
            line.push_str(&format!("  {host} {outcome}"));
        }
        println!("{line}");
        advance(Duration::from_secs(1)).await;
    }
    for b in handle.not_closed() {
        println!("not closed: {} ({})", b.key, b.state);
    }
    let a = handle.breaker(&"a.internal").map(|h| h.state());
    assert_eq!(a, Some(State::Closed));
    Ok(())
}
