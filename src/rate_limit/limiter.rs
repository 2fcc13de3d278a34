//! One limiter: an algorithm, its storage (unkeyed cell or keyed shards),
//! the clock, and the counts. Created once in `build()`, shared by `Arc`.

use std::cell::Cell;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash};
use std::time::Duration;

use super::decision::Decision;
use super::error::{InsufficientCapacity, RateLimited};
use super::gcra::Gcra;
use super::handle::Counters;
use super::headers::{Policy, Quota, gcra_quota};
use super::keyed::{Access, KeyHasher, LogRing, Shards};
use super::multi::{Limits, MultiDecision, MultiState};
use super::sliding_log::{self, SlidingLog};
use super::sliding_window::{self, SlidingWindow, WindowState};
use super::store::{GcraCell, LogCell, Undo, WindowCell};
use super::wide::WideWindowCell;
use crate::clock::{Clock, Nanos};

/// An algorithm with its storage: one match per request picks both.
#[derive(Debug)]
pub(crate) enum State {
    Gcra(Gcra, GcraCell),
    Window(SlidingWindow, WindowCell),
    /// A window whose limit is above the small cell's (unkeyed).
    WideWindow(SlidingWindow, WideWindowCell),
    Log(SlidingLog, LogCell),
    KeyedGcra(Gcra, Shards<Nanos>),
    KeyedWindow(SlidingWindow, Shards<WindowState>),
    KeyedLog(SlidingLog, Shards<LogRing>),
    /// Several limits, all-or-nothing; unkeyed is one key (0) of the store.
    Multi {
        limits: Limits,
        shards: Shards<MultiState>,
    },
}

/// The algorithm alone, as configured (before storage is chosen).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Algorithm {
    Gcra(Gcra),
    Window(SlidingWindow),
    Log(SlidingLog),
}

/// What the limiter answers one request.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Admitted, conforming at `at` (later than now only in wait mode).
    Admit { at: Nanos, undo: Undo },
    /// Not now.
    Deny(RateLimited),
    /// Never.
    Never(InsufficientCapacity),
}

/// A limiter and its counts.
#[derive(Debug)]
pub(crate) struct Limiter {
    pub(crate) state: State,
    pub(crate) clock: Clock,
    pub(crate) counters: Counters,
    hasher: KeyHasher,
    /// The policy reported in `RateLimit` header fields (`.headers(..)`).
    pub(crate) policy: Option<&'static Policy>,
    /// Wait mode decides in `call` (keyed or costed), not in `poll_ready`.
    pub(crate) waits_in_call: bool,
    /// Requests are told apart by key (an unkeyed limiter may use the
    /// keyed store, with one key).
    keyed: bool,
    /// Hooks and metrics (set by `build()`).
    pub(crate) observe: super::events::Observe,
}

impl Limiter {
    pub(crate) fn new(algorithm: Algorithm, max_keys: Option<usize>) -> Self {
        let state = match (algorithm, max_keys) {
            (Algorithm::Gcra(g), None) => State::Gcra(g, GcraCell::new()),
            (Algorithm::Window(sw), None) if sw.limit() > sliding_window::SMALL_LIMIT => {
                State::WideWindow(sw, WideWindowCell::new())
            }
            (Algorithm::Window(sw), None) => State::Window(sw, WindowCell::new()),
            // A log too large to allocate whole: one key of the keyed store,
            // growing as it fills.
            (Algorithm::Log(log), None) if log.limit() > sliding_log::RING_LIMIT => {
                State::KeyedLog(log, Shards::new(1))
            }
            (Algorithm::Log(log), None) => State::Log(log, LogCell::new(log.limit())),
            (Algorithm::Gcra(g), Some(n)) => State::KeyedGcra(g, Shards::new(n)),
            (Algorithm::Window(sw), Some(n)) => State::KeyedWindow(sw, Shards::new(n)),
            (Algorithm::Log(log), Some(n)) => State::KeyedLog(log, Shards::new(n)),
        };
        Self {
            state,
            clock: Clock::new(),
            counters: Counters::new(),
            hasher: KeyHasher::random(),
            policy: None,
            waits_in_call: false,
            keyed: max_keys.is_some(),
            observe: super::events::Observe::none(),
        }
    }

    /// Reports keys held to `keys` (keyed limiters).
    pub(crate) fn set_keys_gauge(&mut self, keys: crate::metrics::KeysGauge) {
        match &mut self.state {
            State::KeyedGcra(_, s) => s.set_keys_gauge(keys),
            State::KeyedWindow(_, s) => s.set_keys_gauge(keys),
            State::KeyedLog(_, s) => s.set_keys_gauge(keys),
            _ => {}
        }
    }

    /// A limiter checking several limits all-or-nothing (at least two).
    pub(crate) fn multi(algorithms: Vec<Algorithm>, max_keys: Option<usize>) -> Self {
        let mut limiter = Self::new(algorithms[0], max_keys);
        limiter.state = State::Multi {
            limits: Limits::new(algorithms),
            shards: Shards::new(max_keys.unwrap_or(1)),
        };
        limiter
    }

    /// Whether requests are told apart by key.
    #[inline]
    pub(crate) fn is_keyed(&self) -> bool {
        self.keyed
    }

    /// The key as stored: a hash under this limiter's random seed.
    #[inline]
    pub(crate) fn hash_key<K: Hash>(&self, key: &K) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The limit reported in errors and by the handle.
    pub(crate) fn limit(&self) -> u64 {
        match &self.state {
            State::Gcra(g, _) | State::KeyedGcra(g, _) => g.burst(),
            State::Window(sw, ..) | State::WideWindow(sw, _) | State::KeyedWindow(sw, _) => {
                sw.limit()
            }
            State::Log(log, _) | State::KeyedLog(log, _) => log.limit(),
            State::Multi { limits, .. } => limits.limit(0),
        }
    }

    /// The quota an admission left, from the state it stored (`undo`) at
    /// its conforming time `at` (token bucket only; `None` otherwise).
    #[inline]
    pub(crate) fn quota_after(&self, at: Nanos, undo: &Undo) -> Option<Quota> {
        match (&self.state, undo) {
            (State::Gcra(g, _) | State::KeyedGcra(g, _), Undo::Gcra { tat, .. }) => Some(
                gcra_quota(g.burst(), g.emission_interval(), g.capacity(), *tat, at),
            ),
            _ => None,
        }
    }

    /// The algorithm's name, for `Debug`.
    pub(crate) fn algorithm_name(&self) -> &'static str {
        match &self.state {
            State::Gcra(..) | State::KeyedGcra(..) => "token bucket",
            State::Window(..) | State::WideWindow(..) | State::KeyedWindow(..) => "sliding window",
            State::Log(..) | State::KeyedLog(..) => "sliding log",
            State::Multi { .. } => "several limits",
        }
    }

    /// Keys held (0 when unkeyed).
    pub(crate) fn keys(&self) -> usize {
        if !self.keyed {
            return 0;
        }
        match &self.state {
            State::KeyedGcra(_, s) => s.len(),
            State::KeyedWindow(_, s) => s.len(),
            State::KeyedLog(_, s) => s.len(),
            State::Multi { shards, .. } => shards.len(),
            _ => 0,
        }
    }

    /// Decides for one request of `cost` (for `key`, when keyed), allowing
    /// it to conform up to `max_wait` from now (token bucket only; the
    /// windows admit only at once), and stores the admission.
    #[inline]
    pub(crate) fn acquire(&self, key: u64, cost: u64, max_wait: Nanos) -> Outcome {
        self.acquire_with(key, cost, max_wait, || self.clock.now())
    }

    /// [`acquire`](Self::acquire) for a caller that has just read the clock
    /// (`now`): the algorithm's first reading is `now` rather than a second
    /// clock read; a refusal after a lost race still reads the clock afresh.
    #[inline]
    pub(crate) fn acquire_at(&self, now: Nanos, key: u64, cost: u64, max_wait: Nanos) -> Outcome {
        let first = Cell::new(Some(now));
        self.acquire_with(key, cost, max_wait, || {
            first.take().unwrap_or_else(|| self.clock.now())
        })
    }

    /// The unkeyed token bucket is decided inline; the other storages out
    /// of line. Returned from an out-of-line call, the `Outcome` is read
    /// back at once in wider loads than it was written with, which stalls
    /// store-to-load forwarding: a fair share of the token bucket's cost.
    #[inline]
    fn acquire_with(
        &self,
        key: u64,
        cost: u64,
        max_wait: Nanos,
        now: impl Fn() -> Nanos,
    ) -> Outcome {
        if let State::Gcra(g, cell) = &self.state {
            let (d, undo) = cell.acquire(g, now, cost, max_wait);
            return self.outcome(d, undo, cost);
        }
        self.acquire_stored(key, cost, max_wait, now)
    }

    #[inline(never)]
    fn acquire_stored(
        &self,
        key: u64,
        cost: u64,
        max_wait: Nanos,
        now: impl Fn() -> Nanos,
    ) -> Outcome {
        match &self.state {
            State::Gcra(g, cell) => {
                let (d, undo) = cell.acquire(g, now, cost, max_wait);
                self.outcome(d, undo, cost)
            }
            State::Window(sw, cell) => {
                let (d, undo) = cell.acquire(sw, now, cost);
                self.outcome(d, undo, cost)
            }
            State::WideWindow(sw, cell) => {
                let (d, undo) = cell.acquire(sw, now, cost);
                self.outcome(d, undo, cost)
            }
            State::Log(log, cell) => self.outcome(cell.acquire(log, now), Undo::Nothing, cost),
            State::KeyedGcra(g, shards) => {
                let a = shards.access(
                    key,
                    now,
                    || 0,
                    |tat| g.idle_at(*tat),
                    |tat, t| {
                        let d = g.decide(*tat, t, cost, max_wait);
                        if let Decision::Admit { state, .. } = d {
                            *tat = state;
                            return (d, true);
                        }
                        (d, false)
                    },
                );
                self.keyed_outcome(a, cost, |d| match d {
                    Decision::Admit { state, .. } => Undo::Gcra { tat: *state, cost },
                    _ => Undo::Nothing,
                })
            }
            State::KeyedWindow(sw, shards) => {
                let a = shards.access(
                    key,
                    now,
                    WindowState::default,
                    |st| sw.idle_at(*st),
                    |st, t| {
                        let d = sw.decide(*st, t, cost);
                        if let Decision::Admit { state, .. } = d {
                            *st = state;
                            return (d, true);
                        }
                        (d, false)
                    },
                );
                self.keyed_outcome(a, cost, |d| match d {
                    Decision::Admit { state, .. } => Undo::Window {
                        idx: state.idx,
                        cost,
                    },
                    _ => Undo::Nothing,
                })
            }
            State::KeyedLog(log, shards) => {
                let limit = log.limit() as usize;
                let a = shards.access(
                    key,
                    now,
                    VecDeque::new,
                    |ring| log.idle_at(ring.back().copied().unwrap_or(0)),
                    |ring, t| {
                        let oldest = (ring.len() == limit).then(|| ring[0]);
                        let newest = ring.back().copied().unwrap_or(0);
                        let d = log.decide(oldest, newest, t);
                        if let Decision::Admit { state, .. } = d {
                            if ring.len() == limit {
                                ring.pop_front();
                            }
                            ring.push_back(state);
                            return (d, true);
                        }
                        (d, false)
                    },
                );
                self.keyed_outcome(a, cost, |_| Undo::Nothing)
            }
            State::Multi { limits, shards } => self.acquire_multi(limits, shards, key, cost, now),
        }
    }

    /// Several limits: kept out of `acquire_with`, so that the single-limit
    /// paths inline as before.
    #[inline(never)]
    fn acquire_multi(
        &self,
        limits: &Limits,
        shards: &Shards<MultiState>,
        key: u64,
        cost: u64,
        now: impl Fn() -> Nanos,
    ) -> Outcome {
        // Several limits decide at once only; a waiter retries.
        let a = shards.access(
            key,
            now,
            || limits.fresh(),
            |st| limits.idle_at(st),
            |st, t| limits.decide(st, t, cost),
        );
        match a {
            Access::Decided(MultiDecision::Admit { at, generation }) => Outcome::Admit {
                at,
                undo: Undo::Multi { generation },
            },
            Access::Decided(MultiDecision::Deny {
                index,
                retry_after,
                remaining,
            }) => Outcome::Deny(RateLimited {
                retry_after: Duration::from_nanos(retry_after),
                limit: limits.limit(index),
                remaining,
                limit_index: index,
                policy: self.policy,
            }),
            Access::Decided(MultiDecision::Never { index }) => {
                Outcome::Never(InsufficientCapacity {
                    cost,
                    capacity: limits.limit(index),
                })
            }
            Access::Full { retry_after } => Outcome::Deny(RateLimited {
                retry_after: Duration::from_nanos(retry_after),
                limit: self.limit(),
                remaining: 0,
                limit_index: 0,
                policy: self.policy,
            }),
        }
    }

    /// Takes back an admission that was never used, where the algorithm can.
    pub(crate) fn release(&self, key: u64, undo: Undo) {
        match (&self.state, undo) {
            (State::Gcra(g, cell), Undo::Gcra { tat, cost }) => {
                cell.release(g, tat, cost);
            }
            (State::Window(sw, cell), Undo::Window { idx, cost }) => {
                cell.release(sw, self.clock.now(), idx, cost);
            }
            (State::WideWindow(sw, cell), Undo::Window { idx, cost }) => {
                cell.release(sw, idx, cost);
            }
            (State::KeyedGcra(g, shards), Undo::Gcra { tat, cost }) => shards.update(key, |t| {
                if *t == tat {
                    *t = g.undo(tat, cost);
                }
            }),
            (State::KeyedWindow(sw, shards), Undo::Window { idx, cost }) => {
                shards.update(key, |st| *st = sw.undo(*st, idx, cost));
            }
            (State::Multi { limits, shards, .. }, Undo::Multi { generation }) => {
                shards.update(key, |st| limits.undo(st, generation));
            }
            _ => {}
        }
    }

    // Always inlined: a call here per request costs more than the match.
    #[inline(always)]
    fn outcome<S>(&self, d: Decision<S>, undo: Undo, cost: u64) -> Outcome {
        match d {
            Decision::Admit { at, .. } => Outcome::Admit { at, undo },
            Decision::Deny {
                retry_after,
                remaining,
            } => Outcome::Deny(RateLimited {
                retry_after: Duration::from_nanos(retry_after),
                limit: self.limit(),
                remaining,
                limit_index: 0,
                policy: self.policy,
            }),
            Decision::Never => Outcome::Never(InsufficientCapacity {
                cost,
                capacity: self.limit(),
            }),
        }
    }

    #[inline]
    fn keyed_outcome<S>(
        &self,
        a: Access<Decision<S>>,
        cost: u64,
        undo: impl FnOnce(&Decision<S>) -> Undo,
    ) -> Outcome {
        match a {
            Access::Decided(d) => {
                let u = undo(&d);
                self.outcome(d, u, cost)
            }
            Access::Full { retry_after } => Outcome::Deny(RateLimited {
                retry_after: Duration::from_nanos(retry_after),
                limit: self.limit(),
                remaining: 0,
                limit_index: 0,
                policy: self.policy,
            }),
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    const S: Nanos = 1_000_000_000;

    /// An unkeyed log above the lock-free ring's size (one key of the
    /// keyed store) is exact: `limit` admissions in a window, then a
    /// refusal until the oldest leaves, to the nanosecond.
    #[tokio::test(start_paused = true)]
    async fn a_log_above_the_ring_size_is_exact() {
        let limit = sliding_log::RING_LIMIT + 1;
        let limiter = Limiter::new(Algorithm::Log(SlidingLog::new(limit, S).unwrap()), None);
        assert!(matches!(limiter.state, State::KeyedLog(..)));
        assert!(!limiter.is_keyed());
        assert_eq!(limiter.keys(), 0);
        for i in 0..limit {
            let t = i / 1_000; // spread over the first ~1 ms
            assert!(matches!(
                limiter.acquire_at(t, 0, 1, 0),
                Outcome::Admit { .. }
            ));
        }
        match limiter.acquire_at(S - 1, 0, 1, 0) {
            Outcome::Deny(e) => assert_eq!(e.retry_after, Duration::from_nanos(1)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            limiter.acquire_at(S, 0, 1, 0),
            Outcome::Admit { .. }
        ));
        assert!(matches!(
            limiter.acquire_at(S, 0, 1, 0),
            Outcome::Admit { .. }
        ));
    }

    /// A window above the small cell's limit gets the wide cell.
    #[test]
    fn large_window_limits_get_the_wide_cell() {
        let big = SlidingWindow::new(sliding_window::SMALL_LIMIT + 1, S).unwrap();
        let small = SlidingWindow::new(sliding_window::SMALL_LIMIT, S).unwrap();
        assert!(matches!(
            Limiter::new(Algorithm::Window(big), None).state,
            State::WideWindow(..)
        ));
        assert!(matches!(
            Limiter::new(Algorithm::Window(small), None).state,
            State::Window(..)
        ));
    }

    /// `acquire_at` takes the caller's reading as its own (wait mode reads
    /// the clock once per admission): a reading of 10 s on a clock that
    /// reads 0 books the bucket from 10 s.
    #[tokio::test(start_paused = true)]
    async fn acquire_at_uses_the_callers_reading() {
        let limiter = Limiter::new(Algorithm::Gcra(Gcra::new(1, S, 1).unwrap()), None);
        assert_eq!(limiter.clock.now(), 0);
        match limiter.acquire_at(10 * S, 0, 1, 0) {
            Outcome::Admit { at, .. } => assert_eq!(at, 10 * S),
            other => panic!("{other:?}"),
        }
        // The clock still reads 0: the next unit is 11 s away.
        match limiter.acquire(0, 1, 0) {
            Outcome::Deny(e) => assert_eq!(e.retry_after, Duration::from_secs(11)),
            other => panic!("{other:?}"),
        }
    }
}
