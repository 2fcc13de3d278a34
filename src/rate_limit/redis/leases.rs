//! The cached mode's local shares: units leased from Redis in one call and
//! spent in process (limitador's cached counters; Envoy's quota leasing).
//!
//! An instance whose share for a key is spent asks Redis for a new lease:
//! one decision of cost `share` (all or nothing), taking `share` units from
//! the shared bucket or window at once, exactly as that many requests
//! would. The instance then admits from the lease without calling Redis,
//! until it is spent or `ttl` after it was granted, when what is left is
//! dropped. A refused lease is refused to the request (with the time until
//! a whole share is free) and cached as a local denial until then.
//!
//! # What it costs
//!
//! - **Overshoot.** Leased units are taken from Redis when leased, not when
//!   spent: an admission in `[t, t + d]` spends a unit taken in
//!   `[t - ttl, t + d]`. So on top of the exact guarantee for `[t, t + d]`,
//!   a fleet of `N` instances admits at most the units it held at `t`: at
//!   most **`N * share`** more (each instance holds at most one lease of at
//!   most `share` units per key). With the default `share` of 1/100 of the
//!   limit and 10 instances, 10 % over in the worst window.
//! - **Under-admission.** Units left when a lease expires are lost: at most
//!   `N * share` per `ttl` per key; and a key with fewer than `share` units
//!   free is refused until a whole share is (at most `share - 1` emission
//!   intervals, or until the window admits `share`).
//! - **Calls.** One Redis call per `share` admissions (per instance and
//!   key) under steady demand, instead of one per admission.
//!
//! One lease is fetched at a time per key and instance: while it is in
//! flight, other requests for that key wait for it (bounded by the store's
//! timeout) rather than fetch their own. Memory is bounded by `max` keys;
//! when full, expired leases are swept, and a key that still finds no room
//! is decided exactly.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

use crate::clock::Nanos;

#[derive(Debug)]
struct Lease {
    units: u64,
    expires: Nanos,
    fetching: Option<watch::Receiver<()>>,
}

/// The local shares of a limiter in cached mode.
#[derive(Debug)]
pub(crate) struct Leases {
    map: Mutex<HashMap<u64, Lease>>,
    pub(crate) share: u64,
    ttl: Nanos,
    max: usize,
    hasher: RandomState,
}

/// What the pool says to a request.
#[derive(Debug)]
pub(crate) enum Take<'a> {
    /// Admitted from the local share.
    Taken,
    /// Fetch a lease, holding this until it is deposited (or failed).
    Fetch(Fetch<'a>),
    /// A lease is being fetched: wait for it, then try again.
    Wait(watch::Receiver<()>),
    /// No room for this key: decide exactly.
    Exact,
}

/// The one fetch in flight for a key; dropped, it wakes the waiters.
#[derive(Debug)]
pub(crate) struct Fetch<'a> {
    leases: &'a Leases,
    key: u64,
    _tx: watch::Sender<()>,
}

impl Fetch<'_> {
    /// Keeps what is left of a lease of `granted` units after the
    /// fetching request spent `cost`, until `now + ttl`. Leftovers of an
    /// earlier lease are dropped (they are fewer than `cost`).
    pub(crate) fn deposit(&self, granted: u64, cost: u64, now: Nanos) {
        let mut map = self.leases.lock();
        if let Some(l) = map.get_mut(&self.key) {
            l.units = granted.saturating_sub(cost);
            l.expires = now.saturating_add(self.leases.ttl);
        }
    }
}

impl Drop for Fetch<'_> {
    fn drop(&mut self) {
        if let Some(l) = self.leases.lock().get_mut(&self.key) {
            l.fetching = None;
        }
    }
}

impl Leases {
    pub(crate) fn new(share: u64, ttl: Nanos, max: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            share,
            ttl,
            max,
            hasher: RandomState::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Lease>> {
        // Nothing panics under this lock; a poisoned map is still valid.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// Spends `cost` from `key`'s share at `now`, or says how to get more.
    pub(crate) fn take(&self, key: u64, cost: u64, now: Nanos) -> Take<'_> {
        let mut map = self.lock();
        if !map.contains_key(&key) && map.len() >= self.max {
            map.retain(|_, l| l.expires > now || l.fetching.is_some());
            if map.len() >= self.max {
                return Take::Exact;
            }
        }
        let l = map.entry(key).or_insert(Lease {
            units: 0,
            expires: 0,
            fetching: None,
        });
        if l.expires > now && l.units >= cost {
            l.units -= cost;
            return Take::Taken;
        }
        if let Some(rx) = &l.fetching {
            return Take::Wait(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        l.fetching = Some(rx);
        Take::Fetch(Fetch {
            leases: self,
            key,
            _tx: tx,
        })
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn spends_a_lease_then_fetches_once() {
        let l = Leases::new(10, 100, 4);
        let Take::Fetch(f) = l.take(1, 1, 0) else {
            panic!("an empty share fetches")
        };
        let Take::Wait(rx) = l.take(1, 1, 0) else {
            panic!("one fetch at a time")
        };
        f.deposit(10, 1, 0);
        drop(f);
        assert!(rx.has_changed().is_err(), "waiters woken");
        for _ in 0..9 {
            assert!(matches!(l.take(1, 1, 50), Take::Taken));
        }
        assert!(matches!(l.take(1, 1, 50), Take::Fetch(_)));
    }

    #[test]
    fn leases_expire_and_memory_is_bounded() {
        let l = Leases::new(10, 100, 2);
        for k in 0..2 {
            let Take::Fetch(f) = l.take(k, 1, 0) else {
                panic!()
            };
            f.deposit(10, 1, 0);
        }
        assert!(matches!(l.take(0, 1, 99), Take::Taken));
        assert!(matches!(l.take(0, 1, 100), Take::Fetch(_)), "expired");
        assert!(
            matches!(l.take(7, 1, 50), Take::Exact),
            "full of live leases"
        );
        assert!(matches!(l.take(7, 1, 200), Take::Fetch(_)), "swept");
    }
}
