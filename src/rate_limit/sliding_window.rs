//! The sliding-window counter: pure arithmetic over two counts.
//!
//! # Implementation details
//!
//! Time is cut into aligned windows `[k*W, (k+1)*W)`. A key holds the index
//! `k` of its current window, the count admitted in it (`cur`) and the count
//! admitted in window `k-1` (`prev`). At elapsed `e` into window `k`, the
//! previous window is assumed spread evenly, so its share of the last `W`
//! nanoseconds is `prev * (W - e) / W`; a request of cost `c` is admitted
//! when
//!
//! ```text
//! prev * (W - e) + (cur + c) * W <= limit * W
//! ```
//!
//! compared exactly in 128-bit integers (no rounding, so a limit of 1 works).
//! Without admissions the estimate only falls as time passes, including
//! across a window boundary, so the first conforming time is well defined and
//! `retry_after` is exact.
//!
//! Storage lives elsewhere: [`store`](super::store) packs the state into one
//! `AtomicU64`, [`keyed`](super::keyed) keeps it whole under a shard lock.

use super::decision::Decision;
use super::error::ConfigError;
use crate::clock::Nanos;

/// The largest limit: 2^32 (counts of 33 bits in the wide cell, see
/// `wide`).
pub(crate) const MAX_LIMIT: u64 = super::wide::MAX_LIMIT;

/// The largest limit the small unkeyed cell stores (counts of 20 bits, see
/// `store`); larger limits get the wide cell.
pub(crate) const SMALL_LIMIT: u64 = (1 << 20) - 1;

/// The checks both window algorithms make on `limit` and `window`: neither
/// zero, the limit at most what the algorithm stores (`max_limit`), and the
/// window short enough that `now + 2 * window` arithmetic has headroom.
pub(crate) fn check_limit_and_window(
    limit: u64,
    window: Nanos,
    max_limit: u64,
) -> Result<(), ConfigError> {
    if limit == 0 {
        return Err(ConfigError::ZeroLimit);
    }
    if window == 0 {
        return Err(ConfigError::ZeroWindow);
    }
    if limit > max_limit {
        return Err(ConfigError::LimitTooLarge { max: max_limit });
    }
    if window > u64::MAX / 4 {
        return Err(ConfigError::Overflow);
    }
    Ok(())
}

/// A key's counts: window index, admitted in the previous window, admitted
/// in the current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct WindowState {
    pub(crate) idx: u64,
    pub(crate) prev: u64,
    pub(crate) cur: u64,
}

/// A sliding-window counter's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlidingWindow {
    limit: u64,
    window: Nanos,
}

impl SlidingWindow {
    /// At most `limit` per (weighted) window of `window` nanoseconds.
    pub(crate) fn new(limit: u64, window: Nanos) -> Result<Self, ConfigError> {
        check_limit_and_window(limit, window, MAX_LIMIT)?;
        Ok(Self { limit, window })
    }

    /// The limit per window.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// The window's length in nanoseconds.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn window(&self) -> Nanos {
        self.window
    }

    /// The state as seen from window `k`: rolled forward, previous and
    /// current recomputed. A state from a *later* window (a stale reading,
    /// the clock seeming to step back) is kept as is and judged at the start
    /// of its own window: stricter, never looser.
    #[inline]
    fn rolled(&self, st: WindowState, now: Nanos, k: u64) -> (WindowState, Nanos) {
        if st.idx >= k {
            let e = if st.idx == k {
                now - k * self.window
            } else {
                0
            };
            return (st, e);
        }
        let st = if st.idx + 1 == k {
            WindowState {
                idx: k,
                prev: st.cur,
                cur: 0,
            }
        } else {
            WindowState {
                idx: k,
                prev: 0,
                cur: 0,
            }
        };
        (st, now - k * self.window)
    }

    /// Does `(prev, cur)` admit `cost` at elapsed `e`?
    #[inline]
    fn fits(&self, prev: u64, cur: u64, cost: u64, e: Nanos) -> bool {
        let w = u128::from(self.window);
        let used = u128::from(prev) * (w - u128::from(e)) + u128::from(cur + cost) * w;
        used <= u128::from(self.limit) * w
    }

    /// The index of the window holding `now`.
    #[inline]
    pub(crate) fn index(&self, now: Nanos) -> u64 {
        now / self.window
    }

    /// The decision for a request of `cost` at `now` (admits only at once).
    #[inline]
    pub(crate) fn decide(&self, st: WindowState, now: Nanos, cost: u64) -> Decision<WindowState> {
        self.decide_at(st, now, self.index(now), cost)
    }

    /// [`decide`](Self::decide) with `k = index(now)` already computed.
    #[inline]
    pub(crate) fn decide_at(
        &self,
        st: WindowState,
        now: Nanos,
        k: u64,
        cost: u64,
    ) -> Decision<WindowState> {
        if cost > self.limit {
            return Decision::Never;
        }
        let (st, e) = self.rolled(st, now, k);
        if self.fits(st.prev, st.cur, cost, e) {
            return Decision::Admit {
                state: WindowState {
                    cur: st.cur + cost,
                    ..st
                },
                at: now,
            };
        }
        let at = self.earliest(st, cost);
        Decision::Deny {
            retry_after: at.saturating_sub(now).max(1),
            remaining: self.remaining(st, e),
        }
    }

    /// Whole units of capacity left at elapsed `e` of the rolled state.
    fn remaining(&self, st: WindowState, e: Nanos) -> u64 {
        let w = u128::from(self.window);
        let used = u128::from(st.prev) * (w - u128::from(e)) + u128::from(st.cur) * w;
        let room = (u128::from(self.limit) * w).saturating_sub(used) / w;
        room as u64 // <= limit
    }

    /// The first instant at which `cost` fits, if nothing else is admitted
    /// (`cost <= limit`). Searches window `st.idx`, then the next two: by
    /// window `idx + 2` both counts have expired.
    fn earliest(&self, st: WindowState, cost: u64) -> Nanos {
        let w = self.window;
        let need = self.limit - cost;
        let mut prev = st.prev;
        let mut cur = st.cur;
        for k in st.idx..st.idx + 2 {
            let start = k.saturating_mul(w);
            if cur <= need {
                if prev == 0 {
                    return start;
                }
                // prev * (W - e) <= (need - cur) * W  <=>  e >= W - floor(..)
                let room = u128::from(need - cur) * u128::from(w) / u128::from(prev);
                let e = u128::from(w).saturating_sub(room) as u64;
                if e < w {
                    return start + e;
                }
            }
            prev = cur;
            cur = 0;
        }
        (st.idx + 2).saturating_mul(w)
    }

    /// When a key with this state is indistinguishable from a new one.
    #[inline]
    pub(crate) fn idle_at(&self, st: WindowState) -> Nanos {
        if st.cur == 0 && st.prev == 0 {
            0
        } else if st.cur == 0 {
            (st.idx + 1).saturating_mul(self.window)
        } else {
            (st.idx + 2).saturating_mul(self.window)
        }
    }

    /// The state with `cost` admitted in window `idx` taken back, if that
    /// window is still current or previous.
    #[inline]
    pub(crate) fn undo(&self, st: WindowState, idx: u64, cost: u64) -> WindowState {
        let mut st = st;
        if st.idx == idx {
            st.cur = st.cur.saturating_sub(cost);
        } else if st.idx == idx + 1 {
            st.prev = st.prev.saturating_sub(cost);
        }
        st
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    const W: Nanos = 1_000;

    fn admit(sw: &SlidingWindow, st: &mut WindowState, now: Nanos) -> bool {
        match sw.decide(*st, now, 1) {
            Decision::Admit { state, .. } => {
                *st = state;
                true
            }
            _ => false,
        }
    }

    #[test]
    fn rejects_bad_settings() {
        assert_eq!(SlidingWindow::new(0, W), Err(ConfigError::ZeroLimit));
        assert_eq!(SlidingWindow::new(1, 0), Err(ConfigError::ZeroWindow));
        assert!(matches!(
            SlidingWindow::new(MAX_LIMIT + 1, W),
            Err(ConfigError::LimitTooLarge { .. })
        ));
        assert!(SlidingWindow::new(MAX_LIMIT, W).is_ok());
        assert_eq!(SlidingWindow::new(1, u64::MAX), Err(ConfigError::Overflow));
    }

    #[test]
    fn weighted_previous_window() {
        let sw = SlidingWindow::new(10, W).unwrap();
        let mut st = WindowState::default();
        for _ in 0..10 {
            assert!(admit(&sw, &mut st, 500));
        }
        assert!(!admit(&sw, &mut st, 999));
        // At 1000 the previous 10 weigh fully: nothing fits.
        assert!(!admit(&sw, &mut st, 1000));
        // At 1100 they weigh 9: one fits, and retry_after says exactly when.
        match sw.decide(st, 1000, 1) {
            Decision::Deny { retry_after, .. } => assert_eq!(retry_after, 100),
            d => panic!("{d:?}"),
        }
        assert!(!admit(&sw, &mut st, 1099));
        assert!(admit(&sw, &mut st, 1100));
        assert!(!admit(&sw, &mut st, 1100));
    }

    #[test]
    fn limit_one() {
        let sw = SlidingWindow::new(1, W).unwrap();
        let mut st = WindowState::default();
        assert!(admit(&sw, &mut st, 0));
        match sw.decide(st, 0, 1) {
            Decision::Deny { retry_after, .. } => assert_eq!(retry_after, 2000),
            d => panic!("{d:?}"),
        }
        assert!(!admit(&sw, &mut st, 1999));
        assert!(admit(&sw, &mut st, 2000));
    }

    #[test]
    fn backwards_reading_is_stricter() {
        let sw = SlidingWindow::new(2, W).unwrap();
        let mut st = WindowState::default();
        assert!(admit(&sw, &mut st, 5_500));
        assert!(admit(&sw, &mut st, 5_500));
        assert!(!admit(&sw, &mut st, 10));
        assert!(!admit(&sw, &mut st, 5_999));
    }

    #[test]
    fn remaining_is_exact_when_denied() {
        let sw = SlidingWindow::new(10, W).unwrap();
        // Window 1 at elapsed 500: the previous 8 weigh 4, the current 3
        // count whole: 7 used, 3 left; a cost of 4 is denied with 3 left.
        let st = WindowState {
            idx: 1,
            prev: 8,
            cur: 3,
        };
        match sw.decide(st, 1_500, 4) {
            Decision::Deny { remaining, .. } => assert_eq!(remaining, 3),
            d => panic!("{d:?}"),
        }
        // The previous window's share is rounded in the limiter's favour:
        // at elapsed 250, 8 weigh 6 exactly; at 251 they weigh 5.992 and
        // one more whole unit is not yet free.
        let full = WindowState {
            idx: 1,
            prev: 8,
            cur: 4,
        };
        match sw.decide(full, 1_250, 1) {
            Decision::Deny { remaining, .. } => assert_eq!(remaining, 0),
            d => panic!("{d:?}"),
        }
        match sw.decide(full, 1_100, 1) {
            Decision::Deny { remaining, .. } => assert_eq!(remaining, 0),
            d => panic!("{d:?}"),
        }
        assert_eq!(sw.remaining(full, 250), 0);
        assert_eq!(sw.remaining(full, 500), 2);
        assert_eq!(sw.remaining(full, 999), 5);
        assert_eq!(sw.remaining(WindowState::default(), 0), 10);
    }

    #[test]
    fn idle_at_is_when_both_counts_have_expired() {
        let sw = SlidingWindow::new(10, W).unwrap();
        let st = |prev, cur| WindowState { idx: 3, prev, cur };
        assert_eq!(sw.idle_at(st(0, 0)), 0);
        // Only the previous window counts: idle when window 4 begins.
        assert_eq!(sw.idle_at(st(5, 0)), 4_000);
        // The current window counts until the end of the next one.
        assert_eq!(sw.idle_at(st(0, 5)), 5_000);
        assert_eq!(sw.idle_at(st(5, 5)), 5_000);
        // Up to then the state is not that of a new key: a full-limit
        // request a new key would take is refused.
        assert!(matches!(
            sw.decide(st(0, 10), 4_999, 10),
            Decision::Deny { .. }
        ));
        assert!(matches!(
            sw.decide(st(10, 0), 3_999, 10),
            Decision::Deny { .. }
        ));
        assert!(matches!(
            sw.decide(st(0, 10), 5_000, 10),
            Decision::Admit { .. }
        ));
    }

    #[test]
    fn undo_takes_back_from_the_window_it_was_counted_in() {
        let sw = SlidingWindow::new(10, W).unwrap();
        let st = WindowState {
            idx: 5,
            prev: 4,
            cur: 6,
        };
        // Counted in the current window.
        assert_eq!(sw.undo(st, 5, 2), WindowState { cur: 4, ..st });
        // Counted in what is now the previous window.
        assert_eq!(sw.undo(st, 4, 3), WindowState { prev: 1, ..st });
        // Expired already, or from a window not yet seen: nothing to take.
        assert_eq!(sw.undo(st, 3, 1), st);
        assert_eq!(sw.undo(st, 6, 1), st);
        // Never below zero.
        assert_eq!(sw.undo(st, 5, 9), WindowState { cur: 0, ..st });
        assert_eq!(sw.undo(st, 4, 9), WindowState { prev: 0, ..st });
    }

    #[test]
    fn limits_at_their_bounds() {
        assert_eq!(SlidingWindow::new(7, W).unwrap().limit(), 7);
        assert!(SlidingWindow::new(MAX_LIMIT, W).is_ok());
        assert!(SlidingWindow::new(1, u64::MAX / 4).is_ok());
        assert_eq!(
            SlidingWindow::new(1, u64::MAX / 4 + 1),
            Err(ConfigError::Overflow)
        );
    }
}
