//! The monotonic clock every layer reads, expressed as nanoseconds since an
//! origin so a reading fits one atomic word.
//!
//! This module is the one place that knows which clock is read. By default
//! it is `tokio::time::Instant`, so a test with paused time
//! (`#[tokio::test(start_paused = true)]`) drives every component. A layer
//! can opt into [`ClockSource::Quanta`] instead: a TSC read through the
//! `quanta` crate (the clock governor uses), several times cheaper than
//! `Instant::now()`, which does not follow tokio's paused time.

use std::time::Duration;
use tokio::time::Instant;

/// Nanoseconds since a [`Clock`]'s origin. `u64` nanoseconds last 584 years.
pub(crate) type Nanos = u64;

/// Which clock a layer reads its time from (for example
/// [`RateLimitBuilder::clock`](crate::rate_limit::RateLimitBuilder::clock)).
///
/// # The trade-off
///
/// - [`Tokio`](Self::Tokio), the default, reads `tokio::time::Instant`: it
///   follows `tokio::time::pause` and `advance`, so tests in paused time are
///   exact and deterministic. One reading costs one `Instant::now()` (a
///   vDSO `clock_gettime`, plus tokio's check for a paused clock when its
///   `test-util` feature is on): about 20 to 25 ns on a typical server.
/// - [`Quanta`](Self::Quanta) reads the CPU's time-stamp counter through
///   [`quanta`](https://docs.rs/quanta) (where the CPU has an invariant TSC;
///   otherwise quanta falls back to the OS's monotonic clock), about 5 to
///   10 ns, for the layers whose hot path is a clock read and one atomic
///   update (the token bucket). It is real time: it does **not** follow
///   tokio's paused or advanced time, so a test that pauses time must keep
///   the default. The first quanta clock of a process calibrates the counter
///   against the OS clock, which can take up to 200 ms, once (at `build()`).
///   When a layer sleeps until a reading (wait mode), the reading is turned
///   into a `tokio::time::Instant` relative to the moment of the call
///   (`Instant::now()` plus the reading's distance from now), so the two
///   clocks' slow drift apart does not build up; the wait itself can be off
///   by the counter's calibration error (parts per million of the wait).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClockSource {
    /// `tokio::time::Instant`: follows tokio's paused time (the default).
    #[default]
    Tokio,
    /// The CPU's time-stamp counter, through `quanta`: cheaper, real time
    /// only.
    Quanta,
}

/// A monotonic clock anchored at the moment a layer was built.
///
/// Readings saturate rather than wrap or panic, and never go below zero,
/// so a clock that seems to step back (an `Instant` taken before the
/// origin) reads as the origin.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    /// tokio's reading at the origin (both sources: sleeps are armed on it).
    origin: Instant,
    /// `Some` when the fast clock is read instead of tokio's.
    fast: Option<Fast>,
}

/// The fast clock and its raw reading at the origin.
#[derive(Debug, Clone)]
struct Fast {
    clock: quanta::Clock,
    origin: u64,
}

impl Clock {
    /// A tokio clock whose zero is now.
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
            fast: None,
        }
    }

    /// A clock of the given source whose zero is now.
    pub(crate) fn with_source(source: ClockSource) -> Self {
        match source {
            ClockSource::Tokio => Self::new(),
            ClockSource::Quanta => Self::quanta(quanta::Clock::new()),
        }
    }

    /// A clock reading the given quanta clock (tests pass `Clock::mock()`).
    pub(crate) fn quanta(clock: quanta::Clock) -> Self {
        let origin = clock.raw();
        Self {
            origin: Instant::now(),
            fast: Some(Fast { clock, origin }),
        }
    }

    /// Nanoseconds elapsed since the origin.
    #[inline]
    pub(crate) fn now(&self) -> Nanos {
        match &self.fast {
            None => self.tokio_nanos(Instant::now()),
            // `delta_as_nanos` answers 0 for a raw reading at or before the
            // origin (TSCs of two cores can disagree slightly).
            Some(f) => f.clock.delta_as_nanos(f.origin, f.clock.raw()),
        }
    }

    /// The reading for a given tokio instant (saturating at both ends).
    #[allow(dead_code)] // used by the tests; kept beside `instant_at`
    pub(crate) fn nanos_at(&self, at: Instant) -> Nanos {
        match &self.fast {
            None => self.tokio_nanos(at),
            // Relative to now (see `instant_at`).
            Some(_) => {
                let now = Instant::now();
                let reading = self.now();
                match at.checked_duration_since(now) {
                    Some(ahead) => reading.saturating_add(duration_to_nanos(ahead)),
                    None => reading.saturating_sub(duration_to_nanos(now - at)),
                }
            }
        }
    }

    /// The tokio instant of a reading, for arming a `tokio::time::Sleep`.
    pub(crate) fn instant_at(&self, nanos: Nanos) -> Instant {
        match &self.fast {
            None => self.origin + Duration::from_nanos(nanos),
            // The reading's distance from now, laid onto tokio's now: the
            // two clocks' drift since the origin does not accumulate.
            Some(_) => {
                let (now, reading) = (Instant::now(), self.now());
                if nanos >= reading {
                    now + Duration::from_nanos(nanos - reading)
                } else {
                    now.checked_sub(Duration::from_nanos(reading - nanos))
                        .unwrap_or(now)
                }
            }
        }
    }

    #[inline]
    fn tokio_nanos(&self, at: Instant) -> Nanos {
        duration_to_nanos(at.saturating_duration_since(self.origin))
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// A duration as nanoseconds, saturating at `u64::MAX` (584 years).
#[inline]
pub(crate) fn duration_to_nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_time() {
        let clock = Clock::new();
        assert_eq!(clock.now(), 0);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(clock.now(), 1_500_000_000);
        assert_eq!(clock.instant_at(clock.now()), Instant::now());
        assert_eq!(clock.nanos_at(Instant::now()), 1_500_000_000);
        // The default source is tokio's.
        let clock = Clock::with_source(ClockSource::default());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(clock.now(), 2_000_000_000);
    }

    /// The fast clock reads its own source, not tokio's paused time.
    #[tokio::test(start_paused = true)]
    async fn fast_clock_ignores_paused_time() {
        let (mock, handle) = quanta::Clock::mock();
        let clock = Clock::quanta(mock);
        assert_eq!(clock.now(), 0);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(clock.now(), 0);
        handle.increment(Duration::from_millis(1500));
        assert_eq!(clock.now(), 1_500_000_000);
    }

    /// A fast reading maps onto tokio's clock relative to now: a reading
    /// 2 s ahead is tokio's now plus 2 s, whatever the origin.
    #[tokio::test(start_paused = true)]
    async fn fast_clock_maps_to_tokio_instants_relative_to_now() {
        let (mock, handle) = quanta::Clock::mock();
        let clock = Clock::quanta(mock);
        handle.increment(Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(3)).await;
        let now = Instant::now();
        assert_eq!(
            clock.instant_at(12_000_000_000),
            now + Duration::from_secs(2)
        );
        assert_eq!(
            clock.instant_at(9_000_000_000),
            now - Duration::from_secs(1)
        );
        assert_eq!(clock.nanos_at(now + Duration::from_secs(2)), 12_000_000_000);
        assert_eq!(clock.nanos_at(now - Duration::from_secs(1)), 9_000_000_000);
    }

    #[test]
    fn real_fast_clock_is_monotonic_from_zero() {
        let clock = Clock::with_source(ClockSource::Quanta);
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
        assert!(a < 1_000_000_000, "read right after its origin: {a}");
    }

    #[test]
    fn saturates() {
        assert_eq!(duration_to_nanos(Duration::MAX), u64::MAX);
    }
}
