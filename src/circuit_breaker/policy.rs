//! When a closed breaker trips: the trip policies and the counts they keep.
//!
//! - [`Policy::Consecutive`]: `n` failures in a row, on one atomic word
//!   that also carries the generation it counts for.
//! - [`Policy::Rate`]: a failure rate and/or a slow-call rate over a
//!   [`Window`](super::Window), once the window holds a minimum number of
//!   calls.
//!
//! Neither reads the clock except where it must: a time window needs the
//! time of each outcome, a slow-call rate the duration of each call.

use crate::clock::Nanos;
use crate::sync::{AtomicU64, Ordering::Relaxed, Ordering::Release};

use super::window::{CountRing, Tally, TimeBuckets};

/// A run of consecutive failures, packed with the generation it belongs to:
/// `generation << 32 | run`. Tying the run to its generation makes "a late
/// result from an earlier generation never counts" exact: its update fails
/// the same compare-and-swap that updates the run.
#[derive(Debug)]
pub(crate) struct Consecutive {
    pub(crate) threshold: u32,
    word: AtomicU64,
}

const RUN_MASK: u64 = u32::MAX as u64;

impl Consecutive {
    pub(crate) fn new(threshold: u32) -> Self {
        Self {
            threshold,
            word: AtomicU64::new(0),
        }
    }

    /// Records a failure of generation `generation`; true when the run has
    /// reached the threshold (the caller then trips the breaker).
    #[inline]
    fn failure(&self, generation: u32) -> bool {
        let mut word = self.word.load(Relaxed);
        loop {
            if (word >> 32) as u32 != generation {
                return false;
            }
            let run = (word & RUN_MASK).saturating_add(1).min(RUN_MASK);
            let next = (word & !RUN_MASK) | run;
            match self
                .word
                .compare_exchange_weak(word, next, Relaxed, Relaxed)
            {
                Ok(_) => return run >= u64::from(self.threshold),
                Err(actual) => word = actual,
            }
        }
    }

    /// Records a success: ends the run. Writes only when there is a run to
    /// end, so a healthy breaker shared by many threads only reads it.
    #[inline]
    fn success(&self, generation: u32) {
        let mut word = self.word.load(Relaxed);
        while word & RUN_MASK != 0 && (word >> 32) as u32 == generation {
            match self
                .word
                .compare_exchange_weak(word, word & !RUN_MASK, Relaxed, Relaxed)
            {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }

    /// Stops generation `generation` from counting, keeping the run (the
    /// counts show why the breaker tripped): the word moves on to the
    /// next generation, which is never a closed one (every closed
    /// generation starts with [`reset`](Self::reset)). Called *before* the
    /// state leaves closed, so no late outcome can slip in between.
    fn seal(&self, generation: u32) {
        let mut word = self.word.load(Relaxed);
        while (word >> 32) as u32 == generation {
            let sealed = (u64::from(generation.wrapping_add(1)) << 32) | (word & RUN_MASK);
            match self
                .word
                .compare_exchange_weak(word, sealed, Relaxed, Relaxed)
            {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }

    #[cfg(all(test, palisade_loom))]
    pub(crate) fn word_for_test(&self) -> u64 {
        self.word.load(Relaxed)
    }

    pub(crate) fn run(&self) -> u64 {
        self.word.load(Relaxed) & RUN_MASK
    }

    fn reset(&self, generation: u32) {
        // A swap rather than a store: the same effect, and loom 0.7 models
        // a plain store racing a compare-and-swap too loosely (it let the
        // CAS read a value the store had replaced, a false alarm).
        self.word.swap(u64::from(generation) << 32, Release);
    }
}

/// The rates that trip a rate policy, and the minimum calls before they do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rates {
    pub(crate) failure: Option<f64>,
    pub(crate) slow: Option<f64>,
    pub(crate) min_calls: u64,
}

impl Rates {
    /// Trips at the threshold: `failures / calls >= rate`, once the window
    /// holds `min_calls` outcomes.
    ///
    /// Compared as a quotient, not as `failures >= rate * calls`: the
    /// product can round *up* past a whole count (`0.55 * 100` is
    /// `55.00000000000001`), which would never trip at the threshold. The
    /// quotient is correctly rounded, so an exact `k / n == rate` compares
    /// equal to the rate as written.
    #[inline]
    pub(crate) fn exceeded(&self, t: Tally) -> bool {
        // With no failures and no slow calls no rate can be reached (rates
        // are above zero, checked by `build()`): no division on the path
        // where nothing goes wrong.
        if t.calls < self.min_calls || t.calls == 0 || (t.failures == 0 && t.slow == 0) {
            return false;
        }
        let calls = t.calls as f64;
        self.failure.is_some_and(|r| t.failures as f64 / calls >= r)
            || self.slow.is_some_and(|r| t.slow as f64 / calls >= r)
    }
}

/// Where a rate policy counts.
#[derive(Debug)]
pub(crate) enum Store {
    Count(CountRing),
    Time(TimeBuckets),
}

/// A trip policy with its counts.
#[derive(Debug)]
// One per breaker, inside its shared core; boxing the large variant would
// only add a pointer chase to every call.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Policy {
    Consecutive(Consecutive),
    Rate { rates: Rates, store: Store },
}

impl Policy {
    /// Records the outcome of a call admitted while closed in `generation`,
    /// and says whether the breaker should trip. `current` tells whether
    /// `generation` is still the breaker's (read only by the window
    /// policies; the consecutive word carries its own generation).
    #[inline]
    pub(crate) fn record(
        &self,
        generation: u32,
        current: impl FnOnce() -> bool,
        failed: bool,
        slow: bool,
        now: impl FnOnce() -> Nanos,
    ) -> bool {
        match self {
            Policy::Consecutive(c) => {
                if failed {
                    c.failure(generation)
                } else {
                    c.success(generation);
                    false
                }
            }
            Policy::Rate { rates, store } => {
                if !current() {
                    return false;
                }
                let tally = match store {
                    Store::Count(ring) => ring.record(failed, slow),
                    Store::Time(buckets) => buckets.record(now(), failed, slow),
                };
                rates.exceeded(tally)
            }
        }
    }

    /// Empties the counts for a fresh closed period of `generation`.
    pub(crate) fn reset(&self, generation: u32) {
        match self {
            Policy::Consecutive(c) => c.reset(generation),
            Policy::Rate { store, .. } => match store {
                Store::Count(ring) => ring.reset(),
                Store::Time(buckets) => buckets.reset(),
            },
        }
    }

    /// Called before the state leaves closed generation `generation`: from
    /// then on, outcomes of that generation are not counted. (The windows
    /// check the state word itself; the consecutive word carries its own
    /// generation and needs telling.)
    pub(crate) fn seal(&self, generation: u32) {
        if let Policy::Consecutive(c) = self {
            c.seal(generation);
        }
    }

    /// The current counts (a time window slides to `now` first).
    pub(crate) fn tally(&self, now: impl FnOnce() -> Nanos) -> Tally {
        match self {
            Policy::Consecutive(c) => {
                let run = c.run();
                Tally {
                    calls: run,
                    failures: run,
                    slow: 0,
                }
            }
            Policy::Rate { store, .. } => match store {
                Store::Count(ring) => ring.tally(),
                Store::Time(buckets) => buckets.tally(now()),
            },
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn consecutive_counts_its_generation_only() {
        let c = Policy::Consecutive(Consecutive::new(3));
        c.reset(7);
        let rec = |g, f| c.record(g, || true, f, false, || 0);
        assert!(!rec(7, true));
        assert!(!rec(7, true));
        assert!(!rec(6, true), "an older generation is not counted");
        assert!(!rec(6, false), "nor does it end the run");
        assert!(rec(7, true));
        assert!(!rec(7, false));
        assert_eq!(c.tally(|| 0).failures, 0);
    }

    #[test]
    fn rates_trip_at_the_threshold() {
        let r = Rates {
            failure: Some(0.5),
            slow: None,
            min_calls: 4,
        };
        let t = |calls, failures| Tally {
            calls,
            failures,
            slow: 0,
        };
        assert!(!r.exceeded(t(3, 3)), "below min calls");
        assert!(!r.exceeded(t(4, 1)));
        assert!(r.exceeded(t(4, 2)));
        assert!(!r.exceeded(t(10, 4)));
        assert!(r.exceeded(t(10, 5)));
        // Rates whose product with the count rounds up in f64.
        for (rate, calls, failures) in [(0.55, 100, 55), (0.07, 100, 7), (0.28, 75, 21)] {
            let r = Rates {
                failure: Some(rate),
                slow: Some(rate),
                min_calls: 1,
            };
            assert!(r.exceeded(t(calls, failures)), "{rate}");
            assert!(!r.exceeded(t(calls, failures - 1)), "{rate}");
            let slow = Tally {
                calls,
                failures: 0,
                slow: failures,
            };
            assert!(r.exceeded(slow), "slow {rate}");
        }
    }
}
