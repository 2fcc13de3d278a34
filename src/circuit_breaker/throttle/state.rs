//! The adaptive throttle's shared state: requests and accepts over a time
//! window, and the rejection probability they give.
//!
//! # Implementation details
//!
//! The window is the breaker's [`TimeBuckets`] (lock-free, subtract on
//! evict): a request is one recorded call, a request the backend did not
//! accept one recorded failure, so `accepts = calls - failures`. An outcome
//! is recorded in the bucket of the time the request was made (the reading
//! `admit` took), so each call reads the clock once. A request throttled
//! here is recorded at once, as a request not accepted (the SRE book counts
//! it: that is what lets the probability fall again only as the backend
//! accepts more).

use std::time::Duration;

use crate::classify::Outcome;
use crate::clock::{Clock, Nanos};
use crate::rng::SharedRng;
use crate::sync::{AtomicU64, Ordering::Relaxed};

use super::super::shared::Padded;
use super::super::window::TimeBuckets;

/// `max(0, (requests - k * accepts) / (requests + 1))`: the SRE book's
/// client-side throttling probability.
#[inline]
pub(crate) fn rejection_probability(requests: u64, accepts: u64, k: f64) -> f64 {
    let requests = requests as f64;
    let excess = requests - k * accepts as f64;
    if excess > 0.0 {
        excess / (requests + 1.0)
    } else {
        0.0
    }
}

/// A uniform draw in `[0, 1)` from 64 random bits (the top 53).
#[inline]
pub(crate) fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Counts at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Snapshot {
    pub(crate) requests: u64,
    pub(crate) accepts: u64,
    pub(crate) probability: f64,
    pub(crate) throttled: u64,
}

/// The state every clone of one throttle shares (created by `build()`).
#[derive(Debug)]
pub(crate) struct Throttle {
    k: f64,
    window: TimeBuckets,
    rng: SharedRng,
    clock: Clock,
    /// Requests throttled since the layer was built.
    throttled: Padded<AtomicU64>,
    /// The window's step: the hint a rejection gives.
    step: Duration,
    /// Hook and metric (set by `build()`).
    pub(crate) observe: Option<super::events::Observe>,
}

impl Throttle {
    /// `k >= 1`, `span` and `buckets` validated by the builder.
    pub(crate) fn new(k: f64, span: Duration, buckets: u32, rng: SharedRng) -> Self {
        Self {
            k,
            window: TimeBuckets::new(span, buckets),
            rng,
            clock: Clock::new(),
            throttled: Padded(AtomicU64::new(0)),
            step: span / buckets.max(1),
            observe: None,
        }
    }

    #[inline]
    pub(crate) fn now(&self) -> Nanos {
        self.clock.now()
    }

    /// How long until the window moves on by one bucket.
    pub(crate) fn step(&self) -> Duration {
        self.step
    }

    /// Decides one request made at `now`: `Ok` to send it, or `Err` with
    /// the probability it was throttled with (the rejection is recorded).
    #[inline]
    pub(crate) fn admit(&self, now: Nanos) -> Result<(), f64> {
        let tally = self.window.tally(now);
        let accepts = tally.calls.saturating_sub(tally.failures);
        let p = rejection_probability(tally.calls, accepts, self.k);
        if p > 0.0 && unit(self.rng.next_u64()) < p {
            self.window.record(now, true, false);
            self.throttled.fetch_add(1, Relaxed);
            return Err(p);
        }
        Ok(())
    }

    /// Records the outcome of a request sent at `at`: a success is an
    /// accept, a failure a request the backend refused; an ignored outcome
    /// (a local rejection further down) is not a request it saw at all.
    #[inline]
    pub(crate) fn record(&self, at: Nanos, outcome: Outcome) {
        match outcome {
            Outcome::Success => {
                self.window.record(at, false, false);
            }
            Outcome::Failure => {
                self.window.record(at, true, false);
            }
            Outcome::Ignored => {}
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let tally = self.window.tally(self.now());
        let accepts = tally.calls.saturating_sub(tally.failures);
        Snapshot {
            requests: tally.calls,
            accepts,
            probability: rejection_probability(tally.calls, accepts, self.k),
            throttled: self.throttled.load(Relaxed),
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn probability_matches_the_formula() {
        // (requests, accepts, k, expected)
        let table = [
            (0, 0, 2.0, 0.0),
            (1, 0, 2.0, 0.5),
            (10, 0, 2.0, 10.0 / 11.0),
            (100, 50, 2.0, 0.0), // exactly k * accepts: not yet
            (100, 49, 2.0, 2.0 / 101.0),
            (100, 10, 2.0, 80.0 / 101.0),
            (100, 10, 1.0, 90.0 / 101.0),
            (100, 10, 1.5, 85.0 / 101.0),
            (1000, 100, 2.0, 800.0 / 1001.0),
            (1000, 1000, 2.0, 0.0),
        ];
        for (requests, accepts, k, expected) in table {
            let p = rejection_probability(requests, accepts, k);
            assert!(
                (p - expected).abs() < 1e-12,
                "({requests}, {accepts}, {k}): {p} != {expected}"
            );
        }
    }

    #[test]
    fn unit_draws_cover_the_half_open_interval() {
        assert_eq!(unit(0), 0.0);
        assert!(unit(u64::MAX) < 1.0);
        assert!(unit(u64::MAX) > 0.999_999);
        assert_eq!(unit(1 << 63), 0.5);
    }

    #[test]
    fn a_failure_is_a_request_not_accepted_and_ignored_is_nothing() {
        let t = Throttle::new(2.0, Duration::from_secs(10), 10, SharedRng::seeded(1));
        t.record(0, Outcome::Success);
        t.record(0, Outcome::Failure);
        t.record(0, Outcome::Failure);
        t.record(0, Outcome::Ignored);
        let s = t.window.tally(0);
        assert_eq!((s.calls, s.failures), (3, 2));
        assert_eq!(t.step(), Duration::from_secs(1));
    }

    #[test]
    fn throttling_draws_against_the_probability_and_records_the_rejection() {
        // 1 request, 0 accepts: p = 1/2. Over many draws about half are
        // throttled, and each throttled draw is a request more.
        let t = Throttle::new(2.0, Duration::from_secs(3600), 10, SharedRng::seeded(7));
        t.record(0, Outcome::Failure);
        let mut throttled = 0;
        for _ in 0..1000 {
            if t.admit(0).is_err() {
                throttled += 1;
            }
        }
        let s = t.snapshot();
        assert_eq!(s.throttled, throttled);
        assert_eq!(s.requests, 1 + throttled);
        assert_eq!(s.accepts, 0);
        assert!(throttled > 900, "{throttled}"); // p climbs towards 1
        // Healthy: never throttled, no draw needed.
        let healthy = Throttle::new(2.0, Duration::from_secs(60), 10, SharedRng::seeded(7));
        for _ in 0..100 {
            healthy.record(0, Outcome::Success);
            assert_eq!(healthy.admit(0), Ok(()));
        }
    }
}
