//! Bounds of every jitter kind, for any settings and any attempt number.

use std::time::Duration;

use palisade::backoff::{Backoff, Jitter};
use proptest::prelude::*;

/// `min(cap, base * factor^attempt)` in nanoseconds, computed independently
/// of the crate (in `f64`, then compared with a relative tolerance).
fn nominal(base: u64, factor: f64, cap: u64, attempt: u32) -> f64 {
    let exp = base as f64 * factor.powf(f64::from(attempt));
    exp.min(cap as f64)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()) + 1.0
}

fn attempts() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..80, Just(1_000), Just(10_000), Just(u32::MAX)]
}

fn jitters() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        Just(Jitter::Decorrelated),
        (0u64..10_000_000_000).prop_map(|j| Jitter::Additive(Duration::from_nanos(j))),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_delay_within_its_documented_range(
        base in 1u64..3_600_000_000_000,
        factor in 1.0f64..10.0,
        extra in prop_oneof![0u64..1_000_000_000, Just(u64::MAX / 2)],
        jitter in jitters(),
        attempt in attempts(),
        previous in proptest::option::of(any::<u64>()),
        random in any::<u64>(),
    ) {
        let cap = base.saturating_add(extra);
        let backoff = Backoff::exponential(Duration::from_nanos(base))
            .factor(factor)
            .max_delay(Duration::from_nanos(cap))
            .jitter(jitter)
            .build()
            .unwrap();
        let got = backoff
            .delay(attempt, previous.map(Duration::from_nanos), random)
            .as_nanos() as u64;
        prop_assert!(got <= cap, "{got} above the cap {cap}");
        let d = nominal(base, factor, cap, attempt);
        let g = got as f64;
        match jitter {
            Jitter::None => prop_assert!(close(g, d), "{g} != {d}"),
            Jitter::Full => prop_assert!(g <= d + 1.0),
            Jitter::Equal => prop_assert!(g + 1.0 >= d / 2.0 && g <= d + 1.0, "{g} not in [{d}/2, {d}]"),
            Jitter::Decorrelated => {
                let prev = previous.unwrap_or(base).max(base);
                let high = (prev as f64 * 3.0).min(cap as f64);
                prop_assert!(got >= base.min(cap) && g <= high + 1.0, "{g} not in [{base}, {high}]");
            }
            Jitter::Additive(j) => {
                let high = (d + j.as_nanos() as f64).min(cap as f64);
                prop_assert!(g + 1.0 >= d.min(cap as f64) * (1.0 - 1e-9) && g <= high + 1.0);
            }
        }
    }

    /// The schedule never exceeds the cap, however long it runs.
    #[test]
    fn schedules_stay_under_the_cap(
        base_ms in 1u64..1_000,
        cap_ms in 0u64..100_000,
        jitter in jitters(),
        seed in any::<u64>(),
    ) {
        let cap = Duration::from_millis(base_ms + cap_ms);
        let backoff = Backoff::exponential(Duration::from_millis(base_ms))
            .max_delay(cap)
            .jitter(jitter)
            .build()
            .unwrap();
        prop_assert!(backoff.schedule(seed).take(200).all(|d| d <= cap));
    }
}

#[test]
fn full_jitter_spreads_over_the_whole_range() {
    // Not a bound but a sanity check of the spread: over 10,000 draws, full
    // jitter reaches both ends of [0, d].
    let b = Backoff::exponential(Duration::from_millis(100))
        .jitter(Jitter::Full)
        .build()
        .unwrap();
    let draws: Vec<_> = (0u64..10_000)
        .map(|i| b.delay(0, None, i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
        .collect();
    let min = draws.iter().min().unwrap();
    let max = draws.iter().max().unwrap();
    assert!(*min < Duration::from_millis(1) && *max > Duration::from_millis(99));
}
