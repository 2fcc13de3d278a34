//! One limiter: an algorithm, its storage (unkeyed cell or keyed shards),
//! the clock, and the counts. Created once in `build()`, shared by `Arc`.

use std::cell::Cell;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash, RandomState};
use std::time::Duration;

use super::decision::Decision;
use super::error::{InsufficientCapacity, RateLimited};
use super::gcra::Gcra;
use super::handle::Counters;
use super::headers::{Policy, Quota, gcra_quota};
use super::keyed::{Access, LogRing, Shards};
use super::sliding_log::SlidingLog;
use super::sliding_window::{SlidingWindow, WindowState};
use super::store::{GcraCell, LogCell, Undo, WindowCell};
use crate::clock::{Clock, Nanos};

/// An algorithm with its storage: one match per request picks both.
#[derive(Debug)]
pub(crate) enum State {
    Gcra(Gcra, GcraCell),
    Window(SlidingWindow, WindowCell),
    Log(SlidingLog, LogCell),
    KeyedGcra(Gcra, Shards<Nanos>),
    KeyedWindow(SlidingWindow, Shards<WindowState>),
    KeyedLog(SlidingLog, Shards<LogRing>),
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
    hasher: RandomState,
    /// The policy reported in `RateLimit` header fields (`.headers(..)`).
    pub(crate) policy: Option<&'static Policy>,
    /// Hooks and metrics (set by `build()`).
    pub(crate) observe: super::events::Observe,
}

impl Limiter {
    pub(crate) fn new(algorithm: Algorithm, max_keys: Option<usize>) -> Self {
        let state = match (algorithm, max_keys) {
            (Algorithm::Gcra(g), None) => State::Gcra(g, GcraCell::new()),
            (Algorithm::Window(sw), None) => State::Window(sw, WindowCell::new()),
            (Algorithm::Log(log), None) => State::Log(log, LogCell::new(log.limit())),
            (Algorithm::Gcra(g), Some(n)) => State::KeyedGcra(g, Shards::new(n)),
            (Algorithm::Window(sw), Some(n)) => State::KeyedWindow(sw, Shards::new(n)),
            (Algorithm::Log(log), Some(n)) => State::KeyedLog(log, Shards::new(n)),
        };
        Self {
            state,
            clock: Clock::new(),
            counters: Counters::new(),
            hasher: RandomState::new(),
            policy: None,
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

    /// Whether requests are told apart by key.
    #[inline]
    pub(crate) fn is_keyed(&self) -> bool {
        matches!(
            self.state,
            State::KeyedGcra(..) | State::KeyedWindow(..) | State::KeyedLog(..)
        )
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
            State::Window(sw, ..) | State::KeyedWindow(sw, _) => sw.limit(),
            State::Log(log, _) | State::KeyedLog(log, _) => log.limit(),
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
            State::Window(..) | State::KeyedWindow(..) => "sliding window",
            State::Log(..) | State::KeyedLog(..) => "sliding log",
        }
    }

    /// Keys held (0 when unkeyed).
    pub(crate) fn keys(&self) -> usize {
        match &self.state {
            State::KeyedGcra(_, s) => s.len(),
            State::KeyedWindow(_, s) => s.len(),
            State::KeyedLog(_, s) => s.len(),
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

    #[inline]
    fn acquire_with(
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
            (State::KeyedGcra(g, shards), Undo::Gcra { tat, cost }) => shards.update(key, |t| {
                if *t == tat {
                    *t = g.undo(tat, cost);
                }
            }),
            (State::KeyedWindow(sw, shards), Undo::Window { idx, cost }) => {
                shards.update(key, |st| *st = sw.undo(*st, idx, cost));
            }
            _ => {}
        }
    }

    #[inline]
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
                policy: self.policy,
            }),
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    const S: Nanos = 1_000_000_000;

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
