//! Unkeyed state in memory: one lock-free cell per algorithm, each a
//! compare-and-swap loop around the algorithm's pure decision.
//!
//! # Memory ordering
//!
//! Each cell's invariant lives in one atomic word (GCRA, window counter), or
//! in a ring whose slots are claimed by compare-and-swap and published by
//! advancing `head` (log). Read-modify-write operations on one location are
//! totally ordered whatever the ordering argument, so no admission is lost or
//! doubled; `Acquire`/`Release` pairs only make a slot's content visible with
//! the `head` that publishes it.
//!
//! The clock is read once per request, after the first load of the state.
//! When a compare-and-swap fails, the retry reuses that reading rather than
//! paying for another (a clock read costs more than the rest of the
//! decision), so the reading may be older than the state it meets. Each
//! algorithm takes an older reading as stricter, never looser (GCRA:
//! `max(tat, now)`; window: judged at the start of the stored window; log:
//! recorded as the newest time): a stale reading never mints capacity. And a
//! *refusal* is never based on a stale reading: before refusing after a
//! failed swap, the clock is read again and the decision retaken (a thread
//! preempted between its reading and its swap would otherwise be refused
//! spuriously).

use super::decision::Decision;
use super::gcra::Gcra;
use super::sliding_log::SlidingLog;
use super::sliding_window::{SlidingWindow, WindowState};
use crate::clock::Nanos;
use crate::sync::{AtomicU64, Ordering};

/// How to take back a reservation that was never used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Undo {
    /// Restore `tat - cost*T` if the TAT is still `tat`.
    Gcra { tat: Nanos, cost: u64 },
    /// Take `cost` back from window `idx`.
    Window { idx: u64, cost: u64 },
    /// Several limits: take back admission `generation` of the key if it
    /// was its last.
    Multi { generation: u64 },
    /// Nothing can be taken back (a log entry stays).
    Nothing,
}

/// The token bucket's cell: the TAT in one atomic word.
#[derive(Debug)]
pub(crate) struct GcraCell {
    tat: AtomicU64,
}

impl GcraCell {
    pub(crate) fn new() -> Self {
        Self {
            tat: AtomicU64::new(0),
        }
    }

    /// Decide and, if admitted, store: one load, one clock read, one CAS
    /// when uncontended.
    #[inline]
    pub(crate) fn acquire(
        &self,
        g: &Gcra,
        clock: impl Fn() -> Nanos,
        cost: u64,
        max_wait: Nanos,
    ) -> (Decision<Nanos>, Undo) {
        let mut tat = self.tat.load(Ordering::Acquire);
        let mut now = clock();
        let mut fresh = true;
        loop {
            let d = g.decide(tat, now, cost, max_wait);
            let Decision::Admit { state, .. } = d else {
                if fresh {
                    return (d, Undo::Nothing);
                }
                now = clock().max(now);
                fresh = true;
                continue;
            };
            match self
                .tat
                .compare_exchange_weak(tat, state, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return (d, Undo::Gcra { tat: state, cost }),
                Err(actual) => {
                    tat = actual;
                    fresh = false;
                }
            }
        }
    }

    /// Takes a reservation back if nobody reserved after it; otherwise its
    /// `cost * T` of capacity stays spent (see the module docs of
    /// `rate_limit`).
    pub(crate) fn release(&self, g: &Gcra, tat: Nanos, cost: u64) -> bool {
        self.tat
            .compare_exchange(tat, g.undo(tat, cost), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    #[cfg(all(test, palisade_loom))]
    pub(crate) fn tat(&self) -> Nanos {
        self.tat.load(Ordering::Acquire)
    }
}

const IDX_BITS: u32 = 24;
const IDX_MASK: u64 = (1 << IDX_BITS) - 1;
const COUNT_BITS: u32 = 20;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
/// A stored window index this close below the current one (mod 2^24) is
/// taken as *ahead* of it (a stale reading), not as an old one.
const AHEAD: u64 = 4;

/// The sliding-window counter's cell: `[idx: 24 | prev: 20 | cur: 20]` in
/// one atomic word.
///
/// The window index is kept modulo 2^24 and widened against the current
/// one. An idle gap of exactly a multiple of 2^24 windows (194 days of 1 s
/// windows) would read stale counts as current: stricter for at most two
/// windows, never looser.
#[derive(Debug)]
pub(crate) struct WindowCell {
    word: AtomicU64,
}

fn pack(st: WindowState) -> u64 {
    ((st.idx & IDX_MASK) << (2 * COUNT_BITS))
        | ((st.prev & COUNT_MASK) << COUNT_BITS)
        | (st.cur & COUNT_MASK)
}

fn unpack(word: u64, now_idx: u64) -> WindowState {
    let stored = word >> (2 * COUNT_BITS);
    let behind = (now_idx & IDX_MASK).wrapping_sub(stored) & IDX_MASK;
    let idx = if behind > IDX_MASK - AHEAD {
        now_idx + (IDX_MASK + 1 - behind)
    } else {
        now_idx.saturating_sub(behind)
    };
    WindowState {
        idx,
        prev: (word >> COUNT_BITS) & COUNT_MASK,
        cur: word & COUNT_MASK,
    }
}

impl WindowCell {
    pub(crate) fn new() -> Self {
        Self {
            word: AtomicU64::new(0),
        }
    }

    #[inline]
    pub(crate) fn acquire(
        &self,
        sw: &SlidingWindow,
        clock: impl Fn() -> Nanos,
        cost: u64,
    ) -> (Decision<WindowState>, Undo) {
        let mut word = self.word.load(Ordering::Acquire);
        let mut now = clock();
        let mut k = sw.index(now);
        let mut fresh = true;
        loop {
            let st = unpack(word, k);
            let d = sw.decide_at(st, now, k, cost);
            let Decision::Admit { state, .. } = d else {
                if fresh {
                    return (d, Undo::Nothing);
                }
                now = clock().max(now);
                k = sw.index(now);
                fresh = true;
                continue;
            };
            match self.word.compare_exchange_weak(
                word,
                pack(state),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
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
    pub(crate) fn release(&self, sw: &SlidingWindow, now: Nanos, idx: u64, cost: u64) {
        let mut word = self.word.load(Ordering::Acquire);
        loop {
            let st = unpack(word, sw.index(now).max(idx));
            let new = pack(sw.undo(st, idx, cost));
            match self
                .word
                .compare_exchange_weak(word, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }
}

const TAG: u64 = 1 << 63;

/// The sliding log's ring: the last `limit` admission times, lock-free.
///
/// Admission number `h` (counted by `head`) goes to slot `h % limit`, which
/// holds admission `h - limit`: the one to compare with. Each slot carries
/// in its top bit the parity of its generation (`h / limit`), so a thread
/// can tell "still holds `h - limit`" from "already written for `h`", claim
/// the slot with one CAS, and help advance a `head` another thread left
/// behind. Recorded times never decrease and two generations of one slot
/// are at least two windows apart, so a slot never repeats a value (no ABA).
#[derive(Debug)]
pub(crate) struct LogCell {
    head: AtomicU64,
    slots: Box<[AtomicU64]>,
}

impl LogCell {
    pub(crate) fn new(limit: u64) -> Self {
        // Generation -1 has parity 1: every slot starts "previous".
        let slots = (0..limit).map(|_| AtomicU64::new(TAG)).collect();
        Self {
            head: AtomicU64::new(0),
            slots,
        }
    }

    /// Moves `head` past admission `h` once its slot is written: by the
    /// writer, or by any thread that finds the slot written first (so a
    /// writer preempted before this step never stalls the others).
    #[inline]
    fn advance_head(&self, h: u64) {
        let _ = self
            .head
            .compare_exchange(h, h + 1, Ordering::AcqRel, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn acquire(&self, log: &SlidingLog, clock: impl Fn() -> Nanos) -> Decision<Nanos> {
        let limit = self.slots.len() as u64;
        let mut now = None;
        let mut fresh = true;
        loop {
            let h = self.head.load(Ordering::Acquire);
            let slot = &self.slots[(h % limit) as usize];
            let parity = ((h / limit) & 1) << 63;
            let s = slot.load(Ordering::Acquire);
            if s & TAG == parity {
                // Written for admission `h` by a thread that has not yet
                // advanced `head`: help it.
                self.advance_head(h);
                fresh = false;
                continue;
            }
            let t = *now.get_or_insert_with(&clock);
            let oldest = (h >= limit).then_some(s & !TAG);
            let newest = if h == 0 {
                0
            } else {
                self.slots[((h - 1) % limit) as usize].load(Ordering::Acquire) & !TAG
            };
            let d = log.decide(oldest, newest, t);
            let Decision::Admit { state, .. } = d else {
                if fresh {
                    return d;
                }
                now = Some(clock().max(t));
                fresh = true;
                continue;
            };
            if slot
                .compare_exchange(
                    s,
                    (state & !TAG) | parity,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                self.advance_head(h);
                return d;
            }
            fresh = false;
        }
    }

    /// Admissions published so far.
    #[cfg(all(test, palisade_loom))]
    pub(crate) fn head(&self) -> u64 {
        self.head.load(Ordering::Acquire)
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn window_packing_round_trips() {
        let st = WindowState {
            idx: 12_345,
            prev: 7,
            cur: COUNT_MASK,
        };
        assert_eq!(unpack(pack(st), 12_345), st);
        assert_eq!(unpack(pack(st), 12_346).idx, 12_345);
        // Ahead by one (a stale reading): still recognised as ahead.
        assert_eq!(unpack(pack(st), 12_344).idx, 12_345);
        // Across the 2^24 wrap.
        let st = WindowState {
            idx: (1 << 24) + 3,
            prev: 1,
            cur: 2,
        };
        assert_eq!(unpack(pack(st), (1 << 24) + 5).idx, (1 << 24) + 3);
    }

    #[test]
    fn window_index_wraps_at_2_pow_24() {
        let at = |idx: u64| WindowState {
            idx,
            prev: 3,
            cur: 4,
        };
        let wrap = 1u64 << 24;
        // Stored just below the wrap, read just above it: two windows old.
        assert_eq!(unpack(pack(at(wrap - 1)), wrap + 1).idx, wrap - 1);
        // Stored just above the wrap (ahead: a stale reading), read below.
        assert_eq!(unpack(pack(at(wrap)), wrap - 1).idx, wrap);
        assert_eq!(unpack(pack(at(wrap + 1)), wrap - 1).idx, wrap + 1);
        // Ahead by AHEAD is still ahead; one more is read as old: the
        // boundary of the stale-reading allowance.
        assert_eq!(unpack(pack(at(wrap + 2)), wrap - 2).idx, wrap + 2);
        assert_eq!(unpack(pack(at(100 + AHEAD)), 100).idx, 100 + AHEAD);
        // More than AHEAD ahead is taken as almost 2^24 windows old
        // (before window 0 here, so window 0).
        assert_eq!(unpack(pack(at(100 + AHEAD + 1)), 100).idx, 0);
        assert_eq!(
            unpack(pack(at(5 * wrap + AHEAD + 1)), 5 * wrap).idx,
            4 * wrap + AHEAD + 1
        );
        // Counts are untouched by the index arithmetic.
        let st = unpack(pack(at(wrap + 1)), wrap - 1);
        assert_eq!((st.prev, st.cur), (3, 4));
    }

    /// A 1 ms window wraps its packed index after 2^24 ms (4.7 hours): the
    /// limiter is as strict just after the wrap as anywhere else.
    #[test]
    fn a_window_limiter_keeps_counting_across_the_wrap() {
        let sw = SlidingWindow::new(2, 1_000_000).unwrap(); // 2 per ms
        let cell = WindowCell::new();
        let wrap_ns = (1u64 << 24) * 1_000_000;
        for start in [wrap_ns - 1_000_000, wrap_ns, wrap_ns + 500_000] {
            let admitted = (0..5)
                .filter(|_| matches!(cell.acquire(&sw, || start, 1).0, Decision::Admit { .. }))
                .count();
            assert!(
                admitted <= 2,
                "at {start}: {admitted} admitted in one window"
            );
        }
        // Two windows after the last admission, a fresh window's worth again.
        let later = wrap_ns + 3_000_000;
        let admitted = (0..5)
            .filter(|_| matches!(cell.acquire(&sw, || later, 1).0, Decision::Admit { .. }))
            .count();
        assert_eq!(admitted, 2);
    }

    #[test]
    fn backwards_readings_mint_nothing() {
        let g = Gcra::new(10, 1_000, 2).unwrap(); // T = 100
        let cell = GcraCell::new();
        for _ in 0..2 {
            assert!(matches!(
                cell.acquire(&g, || 5_000, 1, 0).0,
                Decision::Admit { .. }
            ));
        }
        // Readings from before the admissions: refused, and the retry is
        // measured from the stale reading (so never shorter than the truth).
        for t in [0, 4_000, 5_000] {
            assert!(matches!(
                cell.acquire(&g, || t, 1, 0).0,
                Decision::Deny { .. }
            ));
        }
        let sw = SlidingWindow::new(2, 1_000).unwrap();
        let cell = WindowCell::new();
        for _ in 0..2 {
            assert!(matches!(
                cell.acquire(&sw, || 7_500, 1).0,
                Decision::Admit { .. }
            ));
        }
        for t in [0, 6_999, 7_000, 7_999] {
            assert!(
                matches!(cell.acquire(&sw, || t, 1).0, Decision::Deny { .. }),
                "{t}"
            );
        }
        let log = SlidingLog::new(1, 1_000).unwrap();
        let cell = LogCell::new(1);
        assert!(matches!(
            cell.acquire(&log, || 3_000),
            Decision::Admit { .. }
        ));
        assert!(matches!(cell.acquire(&log, || 10), Decision::Deny { .. }));
    }

    #[test]
    fn log_cell_is_exact() {
        let log = SlidingLog::new(3, 100).unwrap();
        let cell = LogCell::new(3);
        let at = |t: Nanos| cell.acquire(&log, || t);
        for t in [0, 10, 20] {
            assert!(matches!(at(t), Decision::Admit { .. }));
        }
        assert!(matches!(at(99), Decision::Deny { retry_after: 1, .. }));
        assert!(matches!(at(100), Decision::Admit { .. }));
        assert!(matches!(at(109), Decision::Deny { retry_after: 1, .. }));
        assert!(matches!(at(110), Decision::Admit { .. }));
        assert!(matches!(at(120), Decision::Admit { .. }));
        assert!(matches!(at(199), Decision::Deny { .. }));
    }

    /// A clock reading older than the newest admission (another thread's
    /// earlier `now`) records the newest time instead, so recorded times
    /// never decrease.
    #[test]
    fn log_cell_records_never_go_back() {
        let log = SlidingLog::new(3, 1_000).unwrap();
        let cell = LogCell::new(3);
        let recorded = |t: Nanos| match cell.acquire(&log, || t) {
            Decision::Admit { state, .. } => state,
            d => panic!("{d:?}"),
        };
        assert_eq!(recorded(500), 500);
        assert_eq!(
            recorded(100),
            500,
            "the newest admission, not the stale reading"
        );
        assert_eq!(recorded(700), 700);
        // The ring is full: at 1 400 the oldest (500) still counts.
        assert!(matches!(
            cell.acquire(&log, || 1_400),
            Decision::Deny {
                retry_after: 100,
                ..
            }
        ));
    }
}

#[cfg(all(test, palisade_loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Arc;
    use loom::thread;

    /// Three threads take one unit each from a bucket of burst 2 at the same
    /// instant: exactly two are admitted, and the TAT records exactly two.
    #[test]
    fn loom_gcra_concurrent_admissions_never_exceed_burst() {
        loom::model(|| {
            let g = Gcra::new(1, 1_000, 2).unwrap(); // T = 1000, burst 2
            let cell = Arc::new(GcraCell::new());
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let cell = cell.clone();
                    thread::spawn(move || {
                        matches!(cell.acquire(&g, || 500, 1, 0).0, Decision::Admit { .. })
                    })
                })
                .collect();
            let admitted = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|a| *a)
                .count();
            assert_eq!(admitted, 2);
            assert_eq!(cell.tat(), 2_500);
        });
    }

    /// A reservation taken back while another thread admits: never more
    /// than the burst in total, and the undo only succeeds when nobody
    /// reserved after it.
    #[test]
    fn loom_gcra_release_races_admission() {
        loom::model(|| {
            let g = Gcra::new(1, 1_000, 1).unwrap();
            let cell = Arc::new(GcraCell::new());
            let (d, undo) = cell.acquire(&g, || 0, 1, 0);
            assert!(matches!(d, Decision::Admit { .. }));
            let other = {
                let cell = cell.clone();
                thread::spawn(move || {
                    matches!(cell.acquire(&g, || 0, 1, 0).0, Decision::Admit { .. })
                })
            };
            let Undo::Gcra { tat, cost } = undo else {
                panic!()
            };
            let released = cell.release(&g, tat, cost);
            let admitted = other.join().unwrap();
            // The first reservation is undone, so at most one other admission.
            assert!(released);
            assert_eq!(cell.tat(), if admitted { 1_000 } else { 0 });
        });
    }

    /// The packed window counter under three concurrent admissions with a
    /// limit of 2: exactly two admitted, the word counts exactly two.
    #[test]
    fn loom_window_counter_never_exceeds_limit() {
        loom::model(|| {
            let sw = SlidingWindow::new(2, 1_000).unwrap();
            let cell = Arc::new(WindowCell::new());
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let cell = cell.clone();
                    thread::spawn(move || {
                        matches!(cell.acquire(&sw, || 1_500, 1).0, Decision::Admit { .. })
                    })
                })
                .collect();
            let admitted = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|a| *a)
                .count();
            assert_eq!(admitted, 2);
            let st = unpack(cell.word.load(Ordering::Acquire), 1);
            assert_eq!((st.idx, st.prev, st.cur), (1, 0, 2));
        });
    }

    /// The lock-free log ring under three concurrent admissions with a
    /// limit of 2: exactly two admitted, head advanced exactly twice.
    #[test]
    fn loom_log_ring_never_exceeds_limit() {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(3);
        b.check(|| {
            let log = SlidingLog::new(2, 1_000).unwrap();
            let cell = Arc::new(LogCell::new(2));
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let cell = cell.clone();
                    thread::spawn(move || {
                        matches!(cell.acquire(&log, || 10), Decision::Admit { .. })
                    })
                })
                .collect();
            let admitted = handles
                .into_iter()
                .map(|h| h.join().unwrap())
                .filter(|a| *a)
                .count();
            assert_eq!(admitted, 2);
            assert_eq!(cell.head(), 2);
        });
    }
}
