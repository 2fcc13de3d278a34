//! Several limits on one request ("10 per second and 1,000 per hour"),
//! checked all-or-nothing.
//!
//! # Implementation details
//!
//! One key's state under every limit is kept together ([`MultiState`]) and
//! decided under one short lock (the keyed store's shard; an unkeyed
//! limiter is the keyed store with one key): every limit is *checked* first
//! on its current state, and only when all admit is each one *charged*. A
//! request refused by any limit therefore charges none (stacking two
//! limiters charges the outer one even when the inner one refuses:
//! Kuadrant/limitador #506).
//!
//! Each algorithm's admissibility only grows with time while nothing else
//! is admitted (a token bucket refills, a window's estimate and a log's
//! oldest entry only age), so the earliest time *all* limits admit is the
//! latest of the times each one admits: `retry_after` is the largest
//! refusal's, and the error names that limit (its index in the order the
//! limits were given).
//!
//! A reservation (wait mode) is taken back only if no other request of the
//! key was admitted after it: the state before the last admission is kept
//! beside the state, with a generation number.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use super::decision::Decision;
use super::limiter::Algorithm;
use crate::clock::Nanos;

/// One limit's state for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Gcra(Nanos),
    Window(super::sliding_window::WindowState),
    /// The last `limit` admission times, oldest first.
    Log(VecDeque<Nanos>),
}

/// What one admission changed in a part, to take it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Before {
    Gcra(Nanos),
    Window(super::sliding_window::WindowState),
    /// The entry the admission pushed out of a full log, if any.
    Log(Option<Nanos>),
}

/// One key's state under every limit.
#[derive(Debug)]
pub(crate) struct MultiState {
    parts: Box<[Part]>,
    /// The parts before the last admission.
    before: Box<[Before]>,
    /// Admissions so far (wrapping): identifies the last one for an undo.
    generation: u64,
}

/// Several limits, in the order they were given.
#[derive(Debug)]
pub(crate) struct Limits {
    algorithms: Box<[Algorithm]>,
    /// Each new state's first generation: a key evicted and held again
    /// starts far from where it was, so an undo kept from its earlier life
    /// (a reservation outliving an eviction) cannot match a new admission.
    epochs: AtomicU64,
}

/// What the limits answer one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MultiDecision {
    /// Every limit admitted and was charged; `generation` names this
    /// admission for an undo.
    Admit { at: Nanos, generation: u64 },
    /// Limit `index` (the one admitting last) refuses until `retry_after`
    /// from now, with `remaining` left under it; no limit was charged.
    Deny {
        index: usize,
        retry_after: Nanos,
        remaining: u64,
    },
    /// Limit `index` can never admit this cost.
    Never { index: usize },
}

impl Limits {
    /// `algorithms` holds at least two limits.
    pub(crate) fn new(algorithms: Vec<Algorithm>) -> Self {
        Self {
            algorithms: algorithms.into_boxed_slice(),
            epochs: AtomicU64::new(0),
        }
    }

    /// The limit of limit `index` (a bucket's burst, a window's limit).
    pub(crate) fn limit(&self, index: usize) -> u64 {
        match &self.algorithms[index] {
            Algorithm::Gcra(g) => g.burst(),
            Algorithm::Window(sw) => sw.limit(),
            Algorithm::Log(log) => log.limit(),
        }
    }

    /// A new key's state.
    pub(crate) fn fresh(&self) -> MultiState {
        let parts = self
            .algorithms
            .iter()
            .map(|a| match a {
                Algorithm::Gcra(_) => Part::Gcra(0),
                Algorithm::Window(_) => Part::Window(Default::default()),
                Algorithm::Log(_) => Part::Log(VecDeque::new()),
            })
            .collect::<Box<[Part]>>();
        let before = parts
            .iter()
            .map(|p| match p {
                Part::Gcra(t) => Before::Gcra(*t),
                Part::Window(st) => Before::Window(*st),
                Part::Log(_) => Before::Log(None),
            })
            .collect();
        MultiState {
            parts,
            before,
            generation: self.epochs.fetch_add(1 << 32, Ordering::Relaxed),
        }
    }

    /// When a state is indistinguishable from a new key's: every part is.
    pub(crate) fn idle_at(&self, st: &MultiState) -> Nanos {
        self.algorithms
            .iter()
            .zip(st.parts.iter())
            .map(|(a, p)| match (a, p) {
                (Algorithm::Gcra(g), Part::Gcra(tat)) => g.idle_at(*tat),
                (Algorithm::Window(sw), Part::Window(w)) => sw.idle_at(*w),
                (Algorithm::Log(log), Part::Log(ring)) => {
                    log.idle_at(ring.back().copied().unwrap_or(0))
                }
                _ => unreachable!("parts follow their algorithms"),
            })
            .max()
            .unwrap_or(0)
    }

    /// One limit's decision on its part, nothing stored.
    #[inline]
    fn check(a: &Algorithm, p: &Part, now: Nanos, cost: u64) -> Decision<()> {
        match (a, p) {
            (Algorithm::Gcra(g), Part::Gcra(tat)) => g.decide(*tat, now, cost, 0).map(|_| ()),
            (Algorithm::Window(sw), Part::Window(st)) => sw.decide(*st, now, cost).map(|_| ()),
            (Algorithm::Log(log), Part::Log(ring)) => {
                let full = ring.len() as u64 == log.limit();
                let oldest = full.then(|| ring[0]);
                let newest = ring.back().copied().unwrap_or(0);
                log.decide(oldest, newest, now).map(|_| ())
            }
            _ => unreachable!("parts follow their algorithms"),
        }
    }

    /// Charges one limit's part (after every check admitted) and says how
    /// to take it back.
    fn charge(a: &Algorithm, p: &mut Part, now: Nanos, cost: u64) -> Before {
        match (a, p) {
            (Algorithm::Gcra(g), Part::Gcra(tat)) => {
                let before = Before::Gcra(*tat);
                if let Decision::Admit { state, .. } = g.decide(*tat, now, cost, 0) {
                    *tat = state;
                }
                before
            }
            (Algorithm::Window(sw), Part::Window(st)) => {
                let before = Before::Window(*st);
                if let Decision::Admit { state, .. } = sw.decide(*st, now, cost) {
                    *st = state;
                }
                before
            }
            (Algorithm::Log(log), Part::Log(ring)) => {
                let newest = ring.back().copied().unwrap_or(0);
                let pushed_out = if ring.len() as u64 == log.limit() {
                    ring.pop_front()
                } else {
                    None
                };
                ring.push_back(now.max(newest));
                Before::Log(pushed_out)
            }
            _ => unreachable!("parts follow their algorithms"),
        }
    }

    /// Checks every limit at `now` for `cost`, then charges all of them or
    /// none. The second value says whether anything was stored.
    pub(crate) fn decide(
        &self,
        st: &mut MultiState,
        now: Nanos,
        cost: u64,
    ) -> (MultiDecision, bool) {
        let mut refusal: Option<(usize, Nanos, u64)> = None;
        for (i, (a, p)) in self.algorithms.iter().zip(st.parts.iter()).enumerate() {
            match Self::check(a, p, now, cost) {
                Decision::Admit { .. } => {}
                Decision::Never => return (MultiDecision::Never { index: i }, false),
                Decision::Deny {
                    retry_after,
                    remaining,
                } => {
                    if refusal.is_none_or(|(_, r, _)| retry_after > r) {
                        refusal = Some((i, retry_after, remaining));
                    }
                }
            }
        }
        if let Some((index, retry_after, remaining)) = refusal {
            return (
                MultiDecision::Deny {
                    index,
                    retry_after,
                    remaining,
                },
                false,
            );
        }
        for ((a, p), b) in self
            .algorithms
            .iter()
            .zip(st.parts.iter_mut())
            .zip(st.before.iter_mut())
        {
            *b = Self::charge(a, p, now, cost);
        }
        st.generation = st.generation.wrapping_add(1);
        (
            MultiDecision::Admit {
                at: now,
                generation: st.generation,
            },
            true,
        )
    }

    /// Takes back admission `generation` if it was the key's last one.
    pub(crate) fn undo(&self, st: &mut MultiState, generation: u64) {
        if st.generation != generation {
            return;
        }
        for (p, b) in st.parts.iter_mut().zip(st.before.iter()) {
            match (p, *b) {
                (Part::Gcra(tat), Before::Gcra(old)) => *tat = old,
                (Part::Window(w), Before::Window(old)) => *w = old,
                (Part::Log(ring), Before::Log(pushed_out)) => {
                    ring.pop_back();
                    if let Some(t) = pushed_out {
                        ring.push_front(t);
                    }
                }
                _ => unreachable!("parts follow their algorithms"),
            }
        }
        // A second undo of the same admission must not apply twice.
        st.generation = st.generation.wrapping_add(1);
    }
}

impl<S> Decision<S> {
    /// The same decision with the admitted state mapped.
    #[inline]
    fn map<T>(self, f: impl FnOnce(S) -> T) -> Decision<T> {
        match self {
            Decision::Admit { state, at } => Decision::Admit {
                state: f(state),
                at,
            },
            Decision::Deny {
                retry_after,
                remaining,
            } => Decision::Deny {
                retry_after,
                remaining,
            },
            Decision::Never => Decision::Never,
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::super::gcra::Gcra;
    use super::super::sliding_log::SlidingLog;
    use super::super::sliding_window::SlidingWindow;
    use super::*;

    const S: Nanos = 1_000_000_000;

    fn two() -> Limits {
        // 2 per second (burst 2) and 3 per 10 s (log).
        Limits::new(vec![
            Algorithm::Gcra(Gcra::new(2, S, 2).unwrap()),
            Algorithm::Log(SlidingLog::new(3, 10 * S).unwrap()),
        ])
    }

    #[test]
    fn a_refusal_charges_no_limit() {
        let l = two();
        let mut st = l.fresh();
        assert!(matches!(
            l.decide(&mut st, 0, 1).0,
            MultiDecision::Admit { .. }
        ));
        assert!(matches!(
            l.decide(&mut st, 0, 1).0,
            MultiDecision::Admit { .. }
        ));
        let parts = st.parts.clone();
        // The bucket refuses for 500 ms: the log is not charged.
        assert_eq!(
            l.decide(&mut st, 0, 1).0,
            MultiDecision::Deny {
                index: 0,
                retry_after: S / 2,
                remaining: 0
            }
        );
        assert_eq!(st.parts, parts);
        assert!(matches!(
            l.decide(&mut st, S, 1).0,
            MultiDecision::Admit { .. }
        ));
        // The log is full until 10 s; the bucket would admit at 1.5 s.
        let d = l.decide(&mut st, 2 * S, 1).0;
        assert_eq!(
            d,
            MultiDecision::Deny {
                index: 1,
                retry_after: 8 * S,
                remaining: 0
            }
        );
    }

    #[test]
    fn retry_after_is_the_latest_of_the_refusals() {
        let l = Limits::new(vec![
            Algorithm::Window(SlidingWindow::new(1, S).unwrap()),
            Algorithm::Gcra(Gcra::new(1, 3 * S, 1).unwrap()),
        ]);
        let mut st = l.fresh();
        assert!(matches!(
            l.decide(&mut st, 0, 1).0,
            MultiDecision::Admit { .. }
        ));
        // Window: 2 s; bucket: 3 s. Both refuse; the bucket decides.
        assert_eq!(
            l.decide(&mut st, 0, 1).0,
            MultiDecision::Deny {
                index: 1,
                retry_after: 3 * S,
                remaining: 0
            }
        );
        assert!(matches!(
            l.decide(&mut st, 3 * S - 1, 1).0,
            MultiDecision::Deny { .. }
        ));
        assert!(matches!(
            l.decide(&mut st, 3 * S, 1).0,
            MultiDecision::Admit { .. }
        ));
    }

    #[test]
    fn never_names_the_limit() {
        let l = two();
        let mut st = l.fresh();
        assert_eq!(l.decide(&mut st, 0, 3).0, MultiDecision::Never { index: 0 });
    }

    #[test]
    fn undo_restores_the_last_admission_only() {
        let l = two();
        let mut st = l.fresh();
        let fresh = st.parts.clone();
        let MultiDecision::Admit { generation, .. } = l.decide(&mut st, 0, 1).0 else {
            panic!()
        };
        l.undo(&mut st, generation);
        assert_eq!(st.parts, fresh);
        l.undo(&mut st, generation); // twice: nothing more
        assert_eq!(st.parts, fresh);
        let MultiDecision::Admit { generation: g1, .. } = l.decide(&mut st, 0, 1).0 else {
            panic!()
        };
        let after_one = st.parts.clone();
        assert!(matches!(
            l.decide(&mut st, 0, 1).0,
            MultiDecision::Admit { .. }
        ));
        let after_two = st.parts.clone();
        // Not the last one any more: kept.
        l.undo(&mut st, g1);
        assert_eq!(st.parts, after_two);
        assert_ne!(after_one, after_two);
    }

    /// A key held again after an eviction starts a new run of
    /// generations: an undo from its earlier life matches nothing.
    #[test]
    fn a_new_state_does_not_take_an_old_undo() {
        let l = two();
        let mut old = l.fresh();
        let MultiDecision::Admit { generation, .. } = l.decide(&mut old, 0, 1).0 else {
            panic!()
        };
        let mut new = l.fresh();
        assert!(matches!(
            l.decide(&mut new, 0, 1).0,
            MultiDecision::Admit { .. }
        ));
        let parts = new.parts.clone();
        l.undo(&mut new, generation);
        assert_eq!(new.parts, parts);
    }

    #[test]
    fn undo_puts_back_a_full_logs_oldest_entry() {
        let l = Limits::new(vec![
            Algorithm::Log(SlidingLog::new(1, S).unwrap()),
            Algorithm::Gcra(Gcra::new(10, S, 10).unwrap()),
        ]);
        let mut st = l.fresh();
        assert!(matches!(
            l.decide(&mut st, 0, 1).0,
            MultiDecision::Admit { .. }
        ));
        let before = st.parts.clone();
        let MultiDecision::Admit { generation, .. } = l.decide(&mut st, S, 1).0 else {
            panic!()
        };
        l.undo(&mut st, generation);
        assert_eq!(st.parts, before);
        assert!(l.idle_at(&st) >= S);
    }
}
