//! The token bucket as GCRA (the generic cell rate algorithm): pure
//! arithmetic over one number, the *theoretical arrival time* (TAT).
//!
//! # Implementation details
//!
//! With emission interval `T = period / rate` (rounded *up* to a whole
//! nanosecond, so rounding never exceeds the configured rate) and capacity
//! `B = burst * T`, a request of cost `c` arriving at `now` conforms at
//! `at = max(tat, now) + c*T - B` (or at once if that is `<= now`); admitting
//! it stores `max(tat, now) + c*T`. The bucket is "full" when `tat <= now`.
//! The TAT never decreases, so a stale or backwards clock reading can only
//! make a decision stricter, never mint capacity.
//!
//! This file knows nothing of storage: [`store`](super::store) runs it in a
//! compare-and-swap loop on one `AtomicU64`, [`keyed`](super::keyed) under a
//! shard lock.

use super::decision::Decision;
use super::error::ConfigError;
use crate::clock::Nanos;

/// A token bucket's configuration, as GCRA constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Emission interval: nanoseconds per unit of cost.
    t: Nanos,
    /// Capacity in time: `burst * t`.
    b: Nanos,
    /// The burst, in cost units.
    burst: u64,
}

impl Gcra {
    /// `rate` units per `period` nanoseconds, at most `burst` at once.
    pub(crate) fn new(rate: u64, period: Nanos, burst: u64) -> Result<Self, ConfigError> {
        if rate == 0 {
            return Err(ConfigError::ZeroRate);
        }
        if period == 0 {
            return Err(ConfigError::ZeroPeriod);
        }
        if burst == 0 {
            return Err(ConfigError::ZeroBurst);
        }
        if rate > period {
            return Err(ConfigError::RateTooHigh);
        }
        let t = period.div_ceil(rate);
        let b = t.checked_mul(burst).ok_or(ConfigError::Overflow)?;
        // Headroom so `max(tat, now) + c*T` cannot overflow for centuries.
        if b > u64::MAX / 4 {
            return Err(ConfigError::Overflow);
        }
        Ok(Self { t, b, burst })
    }

    /// The emission interval in nanoseconds.
    pub(crate) fn emission_interval(&self) -> Nanos {
        self.t
    }

    /// The capacity in time: `burst * T` nanoseconds.
    pub(crate) fn capacity(&self) -> Nanos {
        self.b
    }

    /// The burst (capacity in cost units).
    pub(crate) fn burst(&self) -> u64 {
        self.burst
    }

    /// The decision for a request of `cost` at `now` with stored `tat`,
    /// allowing it to conform up to `max_wait` nanoseconds from now (0: only
    /// now).
    #[inline]
    pub(crate) fn decide(
        &self,
        tat: Nanos,
        now: Nanos,
        cost: u64,
        max_wait: Nanos,
    ) -> Decision<Nanos> {
        if cost > self.burst {
            return Decision::Never;
        }
        // cost <= burst, so cost * t <= b: no overflow.
        let base = tat.max(now);
        let new_tat = base.saturating_add(cost * self.t);
        let at = new_tat.saturating_sub(self.b).max(now);
        if at - now <= max_wait {
            Decision::Admit { state: new_tat, at }
        } else {
            Decision::Deny {
                retry_after: at - now,
                remaining: self.remaining(tat, now),
            }
        }
    }

    /// Whole units available at `now`.
    #[inline]
    pub(crate) fn remaining(&self, tat: Nanos, now: Nanos) -> u64 {
        (now.saturating_add(self.b).saturating_sub(tat.max(now))) / self.t
    }

    /// The TAT with a reservation of `cost` taken back, if `tat` is still the
    /// one that reservation stored (nobody reserved after it).
    #[inline]
    pub(crate) fn undo(&self, reserved_tat: Nanos, cost: u64) -> Nanos {
        reserved_tat - cost * self.t
    }

    /// When a key with this TAT is indistinguishable from a new one.
    #[inline]
    pub(crate) fn idle_at(&self, tat: Nanos) -> Nanos {
        tat
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    const S: Nanos = 1_000_000_000;

    #[test]
    fn rejects_bad_settings() {
        assert_eq!(Gcra::new(0, S, 1), Err(ConfigError::ZeroRate));
        assert_eq!(Gcra::new(1, 0, 1), Err(ConfigError::ZeroPeriod));
        assert_eq!(Gcra::new(1, S, 0), Err(ConfigError::ZeroBurst));
        assert_eq!(Gcra::new(2, 1, 1), Err(ConfigError::RateTooHigh));
        assert_eq!(Gcra::new(1, u64::MAX, 2), Err(ConfigError::Overflow));
    }

    #[test]
    fn burst_then_one_per_interval() {
        let g = Gcra::new(10, S, 3).unwrap(); // T = 100ms, burst 3
        let mut tat = 0;
        for _ in 0..3 {
            match g.decide(tat, 0, 1, 0) {
                Decision::Admit { state, at } => {
                    assert_eq!(at, 0);
                    tat = state;
                }
                d => panic!("{d:?}"),
            }
        }
        assert_eq!(
            g.decide(tat, 0, 1, 0),
            Decision::Deny {
                retry_after: 100_000_000,
                remaining: 0
            }
        );
        // Exact: one nanosecond early is refused, on time is admitted.
        assert!(matches!(
            g.decide(tat, 99_999_999, 1, 0),
            Decision::Deny { retry_after: 1, .. }
        ));
        assert!(matches!(
            g.decide(tat, 100_000_000, 1, 0),
            Decision::Admit { .. }
        ));
    }

    #[test]
    fn cost_above_burst_is_never() {
        let g = Gcra::new(10, S, 3).unwrap();
        assert_eq!(g.decide(0, 0, 4, u64::MAX), Decision::Never);
        assert!(matches!(g.decide(0, 0, 3, 0), Decision::Admit { .. }));
    }

    #[test]
    fn backwards_clock_mints_nothing() {
        let g = Gcra::new(10, S, 1).unwrap();
        let Decision::Admit { state, .. } = g.decide(0, 5 * S, 1, 0) else {
            panic!()
        };
        // A reading from before the last admission is stricter, not looser.
        assert!(matches!(g.decide(state, 0, 1, 0), Decision::Deny { .. }));
        assert!(matches!(
            g.decide(state, 5 * S, 1, 0),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn wait_reserves_the_conforming_time() {
        let g = Gcra::new(10, S, 1).unwrap();
        let tat = 100_000_000; // one admitted at 0
        assert_eq!(
            g.decide(tat, 0, 1, 100_000_000),
            Decision::Admit {
                state: 200_000_000,
                at: 100_000_000
            }
        );
        assert!(matches!(
            g.decide(tat, 0, 1, 99_999_999),
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn rounding_never_exceeds_rate() {
        let g = Gcra::new(3, S, 1).unwrap();
        assert_eq!(g.emission_interval(), 333_333_334);
    }
}
