//! Backoff schedules: why jitter spreads retries apart.

use palisade::{Backoff, Jitter};
use std::time::Duration;

pub(crate) fn run() {
    println!("== backoff: the first 6 retry delays from base 100 ms, cap 2 s, seed 7");
    for jitter in [
        Jitter::None,
        Jitter::Full,
        Jitter::Equal,
        Jitter::Decorrelated,
    ] {
        let backoff = Backoff::exponential(Duration::from_millis(100))
            .max_delay(Duration::from_secs(2))
            .jitter(jitter)
            .build()
            .expect("valid backoff");
        let delays: Vec<String> = backoff
            .schedule(7)
            .take(6)
            .map(|d| format!("{:>5}ms", d.as_millis()))
            .collect();
        println!("  {:<14} {}", format!("{jitter:?}"), delays.join(" "));
    }
    println!();
}
