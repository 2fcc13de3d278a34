//! The sliding-window log: exact, at the price of one timestamp per admitted
//! request in the window.
//!
//! # Implementation details
//!
//! A key remembers the times of its last `limit` admissions. A request at
//! `now` is admitted when the oldest of them is at least `W` old
//! (`oldest + W <= now`), so no half-open interval `[t, t + W)` ever holds
//! more than `limit` admissions; otherwise it is admitted exactly at
//! `oldest + W`.
//!
//! Admission times are recorded non-decreasing (a stale clock reading is
//! recorded as the previous admission's time), which is what makes "any
//! `limit + 1` consecutive admissions span at least `W`" hold.
//!
//! The ring itself lives in [`store`](super::store) (lock-free) or
//! [`keyed`](super::keyed) (a `VecDeque` under a shard lock).

use super::decision::Decision;
use super::error::ConfigError;
use super::sliding_window::check_limit_and_window;
use crate::clock::Nanos;

/// The largest limit, 2^32: the log stores one word per admission in the
/// window, allocated as the window fills.
pub(crate) const MAX_LIMIT: u64 = 1 << 32;

/// The largest limit of the unkeyed lock-free ring, which is allocated
/// whole at build (8 bytes per slot: 8 MiB at this limit). Larger unkeyed
/// logs grow as they fill, under a short lock (the keyed store, one key).
pub(crate) const RING_LIMIT: u64 = 1 << 20;

/// A sliding log's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlidingLog {
    limit: u64,
    window: Nanos,
}

impl SlidingLog {
    /// At most `limit` in any window of `window` nanoseconds.
    pub(crate) fn new(limit: u64, window: Nanos) -> Result<Self, ConfigError> {
        check_limit_and_window(limit, window, MAX_LIMIT)?;
        Ok(Self { limit, window })
    }

    /// The limit per window.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// The decision at `now`, given the time of the `limit`-th most recent
    /// admission (`None` while fewer than `limit` were ever recorded) and of
    /// the most recent one. The admitted state is the time to record.
    #[inline]
    pub(crate) fn decide(
        &self,
        oldest: Option<Nanos>,
        newest: Nanos,
        now: Nanos,
    ) -> Decision<Nanos> {
        let record = now.max(newest);
        match oldest {
            Some(oldest) if oldest.saturating_add(self.window) > now => Decision::Deny {
                retry_after: oldest + self.window - now,
                remaining: 0,
            },
            _ => Decision::Admit {
                state: record,
                at: now,
            },
        }
    }

    /// When a key whose newest admission is `newest` is indistinguishable
    /// from a new one.
    #[inline]
    pub(crate) fn idle_at(&self, newest: Nanos) -> Nanos {
        newest.saturating_add(self.window)
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn exact_retry_after() {
        let log = SlidingLog::new(2, 1_000).unwrap();
        assert!(matches!(
            log.decide(None, 0, 10),
            Decision::Admit { state: 10, .. }
        ));
        assert_eq!(
            log.decide(Some(10), 20, 500),
            Decision::Deny {
                retry_after: 510,
                remaining: 0
            }
        );
        assert!(matches!(
            log.decide(Some(10), 20, 1_009),
            Decision::Deny { retry_after: 1, .. }
        ));
        assert!(matches!(
            log.decide(Some(10), 20, 1_010),
            Decision::Admit { .. }
        ));
    }

    #[test]
    fn stale_reading_recorded_as_newest() {
        let log = SlidingLog::new(2, 1_000).unwrap();
        assert!(matches!(
            log.decide(None, 700, 5),
            Decision::Admit { state: 700, .. }
        ));
    }

    #[test]
    fn rejects_bad_settings() {
        assert_eq!(SlidingLog::new(0, 1), Err(ConfigError::ZeroLimit));
        assert_eq!(SlidingLog::new(1, 0), Err(ConfigError::ZeroWindow));
        assert_eq!(
            SlidingLog::new(MAX_LIMIT + 1, 1),
            Err(ConfigError::LimitTooLarge { max: MAX_LIMIT })
        );
        assert!(SlidingLog::new(MAX_LIMIT, 1).is_ok());
        assert_eq!(SlidingLog::new(1, u64::MAX), Err(ConfigError::Overflow));
    }
}
