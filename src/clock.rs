//! The monotonic clock every layer reads: `tokio::time::Instant`, so a test
//! with paused time (`#[tokio::test(start_paused = true)]`) drives every
//! component, expressed as nanoseconds since an origin so it fits one atomic
//! word.

use std::time::Duration;
use tokio::time::Instant;

/// Nanoseconds since a [`Clock`]'s origin. `u64` nanoseconds last 584 years.
pub(crate) type Nanos = u64;

/// A monotonic clock anchored at the moment a layer was built.
///
/// Reading it costs one `Instant::now()`. Readings saturate rather than wrap
/// or panic, and never go below zero, so a clock that seems to step back
/// (an `Instant` taken before the origin) reads as the origin.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose zero is now.
    pub(crate) fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }

    /// Nanoseconds elapsed since the origin.
    #[inline]
    pub(crate) fn now(&self) -> Nanos {
        self.nanos_at(Instant::now())
    }

    /// The reading for a given instant (saturating at both ends).
    #[inline]
    pub(crate) fn nanos_at(&self, at: Instant) -> Nanos {
        duration_to_nanos(at.saturating_duration_since(self.origin))
    }

    /// The instant of a reading, for arming a `tokio::time::Sleep`.
    #[allow(dead_code)] // used by the layers that sleep until a reading
    pub(crate) fn instant_at(&self, nanos: Nanos) -> Instant {
        self.origin + Duration::from_nanos(nanos)
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
    }

    #[test]
    fn saturates() {
        assert_eq!(duration_to_nanos(Duration::MAX), u64::MAX);
    }
}
