//! The herd, asserted: at N = 100, full jitter needs at least 2x fewer
//! calls and finishes at least 5x sooner than un-jittered exponential
//! backoff (the AWS "Exponential Backoff and Jitter" finding). Runs the
//! example's own simulation, unchanged.

#[path = "../examples/thundering_herd/sim.rs"]
mod sim;

use sim::{Strategy, simulate, simulate_mean};

#[test]
fn full_jitter_beats_plain_exponential_at_100_clients() {
    // The mean of 3 seeded runs, as the example prints.
    let expo = simulate_mean(100, Strategy::Exponential, 2015, 3);
    let full = simulate_mean(100, Strategy::FullJitter, 2015, 3);
    assert!(
        full.calls * 2 <= expo.calls,
        "calls: full jitter {} vs exponential {}",
        full.calls,
        expo.calls
    );
    assert!(
        full.time * 5 <= expo.time,
        "time: full jitter {:?} vs exponential {:?}",
        full.time,
        expo.time
    );
}

#[test]
fn the_simulation_is_deterministic_and_every_client_succeeds() {
    let a = simulate(30, Strategy::FullJitter, 9);
    let b = simulate(30, Strategy::FullJitter, 9);
    assert_eq!(a, b);
    // 30 clients, 30 successful writes at least; far fewer than 30^2.
    assert!(a.calls >= 30 && a.calls < 900, "{a:?}");
    assert_ne!(simulate(30, Strategy::FullJitter, 10), a);
}

#[test]
fn one_client_never_conflicts() {
    for strategy in Strategy::ALL {
        let o = simulate(1, strategy, 1);
        assert_eq!(o.calls, 1, "{strategy}");
    }
}
