//! The unkeyed sliding-window counter for large limits: the same
//! compare-and-swap loop as [`WindowCell`](super::store::WindowCell), on a
//! 128-bit word.
//!
//! # Implementation details
//!
//! The small cell packs `[idx: 24 | prev: 20 | cur: 20]` into one
//! `AtomicU64`, so limits stop at 2^20 - 1. This one packs
//! `[idx: 62 | prev: 33 | cur: 33]` into one `AtomicU128`
//! ([`portable_atomic`]: one `cmpxchg16b` on x86_64, `casp` on aarch64 with
//! LSE, detected at run time; portable-atomic's lock-based fallback only
//! where the CPU has no 128-bit compare-and-swap). Counts of 33 bits
//! hold limits up to 2^32 exactly; the window index is stored whole (62
//! bits: the limiter's clock would need 146 years to overflow it at a
//! window of one nanosecond), so unlike the small cell there is no wrap.
//!
//! The layer picks this cell at build time only for limits above the small
//! cell's: small limits keep the 64-bit word (measured in
//! `benches/rate_limit.rs`).
//!
//! Memory ordering and stale readings: as in [`store`](super::store).

use super::decision::Decision;
use super::sliding_window::{SlidingWindow, WindowState};
use super::store::Undo;
use crate::clock::Nanos;

/// The largest limit a wide window stores: counts are 33 bits.
pub(crate) const MAX_LIMIT: u64 = 1 << 32;

const COUNT_BITS: u32 = 33;
const COUNT_MASK: u128 = (1 << COUNT_BITS) - 1;
const IDX_MASK: u128 = (1 << 62) - 1;

fn pack(st: WindowState) -> u128 {
    ((u128::from(st.idx) & IDX_MASK) << (2 * COUNT_BITS))
        | ((u128::from(st.prev) & COUNT_MASK) << COUNT_BITS)
        | (u128::from(st.cur) & COUNT_MASK)
}

fn unpack(word: u128) -> WindowState {
    WindowState {
        idx: (word >> (2 * COUNT_BITS)) as u64,
        prev: ((word >> COUNT_BITS) & COUNT_MASK) as u64,
        cur: (word & COUNT_MASK) as u64,
    }
}

/// The sliding-window counter's cell for limits above 2^20 - 1.
#[derive(Debug)]
pub(crate) struct WideWindowCell {
    word: Word,
}

impl WideWindowCell {
    pub(crate) fn new() -> Self {
        Self { word: Word::new(0) }
    }

    /// Decide and, if admitted, store: one load, one clock read, one
    /// 128-bit CAS when uncontended.
    #[inline]
    pub(crate) fn acquire(
        &self,
        sw: &SlidingWindow,
        clock: impl Fn() -> Nanos,
        cost: u64,
    ) -> (Decision<WindowState>, Undo) {
        let mut word = self.word.load();
        let mut now = clock();
        let mut k = sw.index(now);
        let mut fresh = true;
        loop {
            let d = sw.decide_at(unpack(word), now, k, cost);
            let Decision::Admit { state, .. } = d else {
                if fresh {
                    return (d, Undo::Nothing);
                }
                // Never refuse on a stale reading (see `store`).
                now = clock().max(now);
                k = sw.index(now);
                fresh = true;
                continue;
            };
            match self.word.compare_exchange_weak(word, pack(state)) {
                Ok(()) => {
                    return (
                        d,
                        Undo::Window {
                            idx: state.idx,
                            cost,
                        },
                    );
                }
                Err(actual) => {
                    word = actual;
                    fresh = false;
                }
            }
        }
    }

    /// Takes `cost` back from window `idx` if it still counts.
    pub(crate) fn release(&self, sw: &SlidingWindow, idx: u64, cost: u64) {
        let mut word = self.word.load();
        loop {
            let new = pack(sw.undo(unpack(word), idx, cost));
            match self.word.compare_exchange_weak(word, new) {
                Ok(()) => return,
                Err(actual) => word = actual,
            }
        }
    }

    #[cfg(all(test, palisade_loom))]
    fn state(&self) -> WindowState {
        unpack(self.word.load())
    }
}

/// The 128-bit word: `portable_atomic::AtomicU128`; under loom, which has
/// no 128-bit atomics, a loom mutex standing for it (each operation one
/// atomic step, so loom explores the same interleavings of the CAS loop).
#[cfg(not(palisade_loom))]
#[derive(Debug)]
struct Word(portable_atomic::AtomicU128);

#[cfg(not(palisade_loom))]
impl Word {
    fn new(v: u128) -> Self {
        Self(portable_atomic::AtomicU128::new(v))
    }

    #[inline]
    fn load(&self) -> u128 {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    #[inline]
    fn compare_exchange_weak(&self, current: u128, new: u128) -> Result<(), u128> {
        use std::sync::atomic::Ordering;
        self.0
            .compare_exchange_weak(current, new, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
    }
}

#[cfg(palisade_loom)]
#[derive(Debug)]
struct Word(loom::sync::Mutex<u128>);

#[cfg(palisade_loom)]
impl Word {
    fn new(v: u128) -> Self {
        Self(loom::sync::Mutex::new(v))
    }

    fn load(&self) -> u128 {
        *self.0.lock().unwrap()
    }

    fn compare_exchange_weak(&self, current: u128, new: u128) -> Result<(), u128> {
        let mut w = self.0.lock().unwrap();
        if *w == current {
            *w = new;
            Ok(())
        } else {
            Err(*w)
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips_at_the_bounds() {
        for st in [
            WindowState::default(),
            WindowState {
                idx: (1 << 62) - 1,
                prev: MAX_LIMIT,
                cur: MAX_LIMIT,
            },
            WindowState {
                idx: 12_345,
                prev: 7,
                cur: (1 << 33) - 1,
            },
        ] {
            assert_eq!(unpack(pack(st)), st);
        }
    }

    /// A limit of exactly 2^32: all of it is admitted in one window, not
    /// one more, and the counts survive the roll into the next window.
    #[test]
    fn a_limit_of_2_pow_32() {
        let w = 1_000;
        let sw = SlidingWindow::new(MAX_LIMIT, w).unwrap();
        let cell = WideWindowCell::new();
        let admit =
            |t: Nanos, cost: u64| matches!(cell.acquire(&sw, || t, cost).0, Decision::Admit { .. });
        assert!(admit(0, MAX_LIMIT - 1));
        assert!(admit(10, 1));
        assert_eq!(cell.word.load() & COUNT_MASK, u128::from(MAX_LIMIT));
        assert!(!admit(20, 1));
        // Next window at elapsed 500: the previous 2^32 weigh 2^31.
        let (d, _) = cell.acquire(&sw, || 1_500, 1 << 31);
        assert!(matches!(d, Decision::Admit { .. }), "{d:?}");
        assert!(!admit(1_500, 1));
        let st = unpack(cell.word.load());
        assert_eq!((st.idx, st.prev, st.cur), (1, MAX_LIMIT, 1 << 31));
    }

    #[test]
    fn release_takes_back_from_its_window() {
        let sw = SlidingWindow::new(MAX_LIMIT, 1_000).unwrap();
        let cell = WideWindowCell::new();
        let (_, undo) = cell.acquire(&sw, || 0, 3_000_000_000);
        let Undo::Window { idx, cost } = undo else {
            panic!("{undo:?}")
        };
        cell.release(&sw, idx, cost);
        assert_eq!(unpack(cell.word.load()).cur, 0);
    }

    #[test]
    fn backwards_readings_mint_nothing() {
        let sw = SlidingWindow::new(MAX_LIMIT, 1_000).unwrap();
        let cell = WideWindowCell::new();
        assert!(matches!(
            cell.acquire(&sw, || 7_500, MAX_LIMIT).0,
            Decision::Admit { .. }
        ));
        for t in [0, 6_999, 7_000, 7_999] {
            assert!(
                matches!(cell.acquire(&sw, || t, 1).0, Decision::Deny { .. }),
                "{t}"
            );
        }
    }
}

#[cfg(all(test, palisade_loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Arc;
    use loom::thread;

    /// Three concurrent admissions of 2^31 against a limit of 2^32:
    /// exactly two admitted, and the word counts exactly 2^32.
    #[test]
    fn loom_wide_window_never_exceeds_limit() {
        loom::model(|| {
            let sw = SlidingWindow::new(MAX_LIMIT, 1_000).unwrap();
            let cell = Arc::new(WideWindowCell::new());
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let cell = cell.clone();
                    thread::spawn(move || {
                        matches!(
                            cell.acquire(&sw, || 1_500, 1 << 31).0,
                            Decision::Admit { .. }
                        )
                    })
                })
                .collect();
            let admitted = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|a| *a)
                .count();
            assert_eq!(admitted, 2);
            let st = cell.state();
            assert_eq!((st.idx, st.prev, st.cur), (1, 0, MAX_LIMIT));
        });
    }

    /// A release racing an admission: the count ends exactly at what was
    /// admitted and not taken back.
    #[test]
    fn loom_wide_window_release_races_admission() {
        loom::model(|| {
            let sw = SlidingWindow::new(MAX_LIMIT, 1_000).unwrap();
            let cell = Arc::new(WideWindowCell::new());
            let (d, undo) = cell.acquire(&sw, || 0, MAX_LIMIT);
            assert!(matches!(d, Decision::Admit { .. }));
            let other = {
                let cell = cell.clone();
                thread::spawn(move || {
                    matches!(cell.acquire(&sw, || 0, 1).0, Decision::Admit { .. })
                })
            };
            let Undo::Window { idx, cost } = undo else {
                panic!()
            };
            cell.release(&sw, idx, cost);
            let admitted = other.join().unwrap();
            assert_eq!(cell.state().cur, u64::from(admitted));
        });
    }
}
