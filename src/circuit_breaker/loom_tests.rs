//! Loom models of the breaker's lock-free transitions: every interleaving
//! of a few threads admitting probes, ending them, tripping and closing.
//!
//! Run with `RUSTFLAGS="--cfg palisade_loom" CARGO_TARGET_DIR=target/loom cargo test
//! --release --lib loom`.

use std::time::Duration;

use loom::sync::atomic::AtomicUsize;
use loom::thread;

use crate::backoff::Backoff;
use crate::classify::Outcome;
use crate::rng::SharedRng;
use crate::sync::{Arc, Ordering::SeqCst};

use super::policy::{Consecutive, Policy};
use super::state::{Core, Decision, Settings, State};

fn core(threshold: u32, probes: u32) -> Arc<Core> {
    Arc::new(Core::new(
        Policy::Consecutive(Consecutive::new(threshold)),
        Settings {
            probes,
            open: Backoff::constant(Duration::from_secs(60)),
            slow_threshold: None,
            half_open_timeout: None,
            name: None,
            observe: super::events::Observe::none(),
        },
        SharedRng::seeded(1),
    ))
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(f);
}

/// Three threads race for two half-open slots: at most two win, and the
/// word counts exactly the winners; releasing them all empties it.
#[test]
fn loom_probe_admission_never_exceeds_k() {
    model(|| {
        let core = core(1, 2);
        core.set_for_test(State::HalfOpen, 5);
        let admitted = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (core, admitted) = (core.clone(), admitted.clone());
                thread::spawn(move || match core.acquire() {
                    Decision::Probe(generation) => {
                        assert_eq!(generation, 5);
                        admitted.fetch_add(1, SeqCst);
                        true
                    }
                    Decision::Reject(_) => false,
                    other => panic!("half-open admitted {other:?}"),
                })
            })
            .collect();
        let winners = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|won| *won)
            .count();
        assert_eq!(winners, 2, "two slots, three contenders: two win");
        assert_eq!(core.snapshot().probes_in_flight, 2);
        core.release_probe(5);
        core.release_probe(5);
        assert_eq!(core.snapshot().probes_in_flight, 0);
        assert_eq!(core.state(), State::HalfOpen);
    });
}

/// A probe slot released while another thread acquires: the slot is
/// reused at most once, never lost.
#[test]
fn loom_release_and_acquire_race() {
    model(|| {
        let core = core(1, 1);
        core.set_for_test(State::HalfOpen, 3);
        assert_eq!(core.acquire(), Decision::Probe(3));
        let releaser = {
            let core = core.clone();
            thread::spawn(move || core.release_probe(3))
        };
        let acquirer = {
            let core = core.clone();
            thread::spawn(move || core.acquire())
        };
        releaser.join().unwrap();
        let got = acquirer.join().unwrap();
        let in_flight = core.snapshot().probes_in_flight;
        match got {
            Decision::Probe(3) => assert_eq!(in_flight, 1),
            Decision::Reject(_) => assert_eq!(in_flight, 0),
            other => panic!("unexpected {other:?}"),
        }
    });
}

/// Two failures reach a threshold of two at once while a third thread
/// is admitted: exactly one trip (one new generation), and the admission
/// sees either the old closed generation or the open breaker.
#[test]
fn loom_concurrent_failures_trip_once() {
    model(|| {
        let core = core(2, 1);
        let failers: Vec<_> = (0..2)
            .map(|_| {
                let core = core.clone();
                thread::spawn(move || core.finish(0, false, 0, Outcome::Failure))
            })
            .collect();
        let admission = {
            let core = core.clone();
            thread::spawn(move || core.acquire())
        };
        for t in failers {
            t.join().unwrap();
        }
        match admission.join().unwrap() {
            Decision::Closed(0) | Decision::Reject(_) => {}
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(core.state(), State::Open);
        assert_eq!(core.generation_for_test(), 1, "one trip, not two");
    });
}

/// The last probe success (closing) races a probe failure (re-opening)
/// and a release: one of them wins the generation, the others move
/// nothing, and the word is consistent whichever won.
#[test]
fn loom_close_and_reopen_race() {
    model(|| {
        let core = core(1, 2);
        core.set_for_test(State::HalfOpen, 7);
        assert_eq!(core.acquire(), Decision::Probe(7));
        assert_eq!(core.acquire(), Decision::Probe(7));
        // One win already recorded, two in flight would exceed k = 2; so:
        // release one, record a win with the other, and race a fresh
        // probe's failure against the closing success.
        core.finish(7, true, 0, Outcome::Success);
        let success = {
            let core = core.clone();
            thread::spawn(move || core.finish(7, true, 0, Outcome::Success))
        };
        let failure = {
            let core = core.clone();
            thread::spawn(move || core.finish(7, true, 0, Outcome::Failure))
        };
        success.join().unwrap();
        failure.join().unwrap();
        // Both outcomes belong to generation 7; the first to land decides
        // and ends it, the other is a late result and moves nothing.
        let (state, generation) = (core.state(), core.generation_for_test());
        assert_eq!(generation, 8, "exactly one transition");
        assert!(matches!(state, State::Closed | State::Open), "{state:?}");
        assert_eq!(core.snapshot().probes_in_flight, 0);
    });
}

/// `reset` from the handle races a trip: whichever lands first, the
/// reset's own transition comes last, so the breaker ends closed (never in
/// the transient resetting state) with empty counts.
#[test]
fn loom_reset_races_trip() {
    model(|| {
        let core = core(1, 1);
        let tripper = {
            let core = core.clone();
            thread::spawn(move || core.finish(0, false, 0, Outcome::Failure))
        };
        let resetter = {
            let core = core.clone();
            thread::spawn(move || core.reset())
        };
        tripper.join().unwrap();
        resetter.join().unwrap();
        assert_eq!(core.state(), State::Closed);
        assert!(!core.resetting_for_test());
        assert_eq!(
            core.snapshot().tally.failures,
            0,
            "consecutive word {:x}",
            core.policy_word_for_test()
        );
    });
}

/// Three outcomes race into a ring of two slots (two writers may hit the
/// same slot): the failure count always ends equal to the failure bits,
/// and never reads as a huge number in between.
#[test]
fn loom_ring_counts_match_its_bits() {
    use super::window::CountRing;
    model(|| {
        let ring = Arc::new(CountRing::new(2, false));
        let threads: Vec<_> = [true, false, true]
            .into_iter()
            .map(|failed| {
                let ring = ring.clone();
                thread::spawn(move || {
                    let t = ring.record(failed, false);
                    assert!(t.failures <= 2 && t.calls <= 2, "{t:?}");
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let tally = ring.tally();
        assert_eq!(tally.calls, 2);
        assert_eq!(tally.failures, ring.failed_bits());
    });
}

/// Two successes race to clear the same failure bit (a ring of one slot):
/// only the one whose `fetch_and` cleared it takes the failure off the
/// count, so the count never drifts below the bits (a later failure then
/// reads as one, not zero).
#[test]
fn loom_ring_one_bit_cleared_twice_counts_once() {
    use super::window::CountRing;
    model(|| {
        let ring = Arc::new(CountRing::new(1, false));
        ring.record(true, false);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let ring = ring.clone();
                thread::spawn(move || {
                    ring.record(false, false);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(ring.tally().failures, 0);
        assert_eq!(ring.record(true, false).failures, 1);
        assert_eq!(ring.failed_bits(), 1);
    });
}

/// A closed-state failure races `force_open`: once `force_open` has
/// returned, the counts never change again (the run is sealed before the
/// state leaves closed, so a late failure cannot slip in after).
#[test]
fn loom_no_late_count_after_leaving_closed() {
    model(|| {
        let core = core(5, 1);
        let late = {
            let core = core.clone();
            thread::spawn(move || core.finish(0, false, 0, Outcome::Failure))
        };
        core.force_open();
        let seen = core.snapshot().tally.failures;
        late.join().unwrap();
        assert_eq!(core.snapshot().tally.failures, seen);
        assert_eq!(core.state(), State::ForcedOpen);
    });
}
