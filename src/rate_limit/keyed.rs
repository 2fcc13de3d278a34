//! Keyed state in memory: a sharded map from key hash to the algorithm's
//! state, bounded, evicting idle keys itself.
//!
//! # Implementation details
//!
//! - Keys are hashed once with a per-limiter random seed ([`KeyHasher`])
//!   and stored as that 64-bit hash: fixed-size entries, no key cloned or
//!   allocated per new key. Two distinct keys share a limit only on a hash
//!   collision (about `n^2 / 2^65` for `n` keys held; the random seed keeps
//!   an attacker from aiming for one).
//! - The hash is foldhash's quality variant (the hash hashbrown uses),
//!   seeded per limiter from the OS's randomness (through std's
//!   `RandomState`), not SipHash: about 1 ns instead of about 8 for a small
//!   key. It is *randomly seeded*, so no fixed list of keys collides in
//!   every limiter and the map cannot be driven quadratic by keys chosen in
//!   advance; it is not a cryptographic hash, and foldhash claims no
//!   resistance against an attacker who can observe hash values. Here no
//!   hash value leaves the limiter (no iteration order, no key listing is
//!   exposed); only timing could leak one.
//! - Up to 64 shards, each a `std::sync::Mutex` around a `HashMap` held for
//!   one lookup and one decision: short critical sections, no await inside.
//!   The shard is picked from middle bits of the hash, so the map's own use
//!   of the low and top bits stays well spread.
//! - The bound `max_keys` is split across shards (their caps sum to exactly
//!   `max_keys`). A new key that finds its shard full first evicts every
//!   *idle* key of the shard: a key whose state is indistinguishable from a
//!   new key's (bucket full again, windows expired, log empty), so eviction
//!   never changes a decision. If every key is still active, the new key is
//!   refused (`RateLimited`, `remaining: 0`, `retry_after` the earliest time
//!   a key of that shard can become idle): active keys are never evicted,
//!   since evicting one would hand it a fresh limit. A sweep that freed
//!   nothing is not repeated before that time, so a flood of unique keys
//!   costs O(1) per refused key, not a scan.
//! - A request refused for a new key leaves no entry behind.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::clock::Nanos;

/// Hashes keys for one limiter: foldhash (quality), randomly seeded (see
/// the module docs for the trade-off against SipHash).
#[derive(Debug, Clone)]
pub(crate) struct KeyHasher(foldhash::quality::SeedableRandomState);

impl KeyHasher {
    /// A hasher with a fresh random seed: the per-limiter seed from std's
    /// `RandomState` (keys from the OS's randomness), the shared seed
    /// foldhash's process-wide random one.
    pub(crate) fn random() -> Self {
        let seed = std::hash::RandomState::new().hash_one(0x5eed_u64);
        Self(foldhash::quality::SeedableRandomState::with_seed(
            seed,
            foldhash::SharedSeed::global_random(),
        ))
    }
}

impl BuildHasher for KeyHasher {
    type Hasher = foldhash::quality::FoldHasher<'static>;
    #[inline]
    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// Aligns a value to its own cache lines (two, for adjacent-line prefetch).
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

/// The keys are already random-seeded hashes: hash them as themselves.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Map<S> = HashMap<u64, S, BuildHasherDefault<IdHasher>>;

#[derive(Debug)]
struct Shard<S> {
    map: Map<S>,
    cap: usize,
    /// No entry becomes idle before this (a lower bound).
    sweep_at: Nanos,
}

/// The keyed store for one algorithm's per-key state `S`.
#[derive(Debug)]
pub(crate) struct Shards<S> {
    shards: Box<[Padded<Mutex<Shard<S>>>]>,
    mask: u64,
    /// Metrics: keys held (moved after the shard's lock is released).
    keys: crate::metrics::KeysGauge,
}

/// A per-key sliding log: the last `limit` admission times, oldest first.
pub(crate) type LogRing = VecDeque<Nanos>;

/// What a keyed access answers.
#[derive(Debug)]
pub(crate) enum Access<D> {
    /// The algorithm decided.
    Decided(D),
    /// A new key found its shard full of active keys; the earliest time one
    /// can become idle is `retry_after` from now.
    Full { retry_after: Nanos },
}

impl<S> Shards<S> {
    /// A store holding at most `max_keys` keys (`max_keys >= 1`).
    pub(crate) fn new(max_keys: usize) -> Self {
        let n = 64usize.min(max_keys.max(1));
        let n = 1usize << (usize::BITS - 1 - n.leading_zeros()); // power of two <= n
        let (base, extra) = (max_keys / n, max_keys % n);
        let shards = (0..n)
            .map(|i| {
                Padded(Mutex::new(Shard {
                    map: Map::default(),
                    cap: base + usize::from(i < extra),
                    sweep_at: 0,
                }))
            })
            .collect();
        Self {
            shards,
            mask: n as u64 - 1,
            keys: crate::metrics::KeysGauge::noop(),
        }
    }

    /// Reports the number of keys held to `keys` from now on.
    pub(crate) fn set_keys_gauge(&mut self, keys: crate::metrics::KeysGauge) {
        self.keys = keys;
    }

    fn lock(&self, hash: u64) -> MutexGuard<'_, Shard<S>> {
        let i = ((hash >> 32) & self.mask) as usize;
        // A panic while holding a shard cannot leave a state half-written
        // (every state update is one assignment), so poisoning is ignored.
        self.shards[i]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides for the key `hash`: `decide` sees the key's state (a new
    /// state from `fresh` if the key is not held) and the clock reading, and
    /// returns its answer and whether it admitted (only then is a new key
    /// stored). `idle_at` says when a state is as good as new.
    #[inline]
    pub(crate) fn access<D>(
        &self,
        hash: u64,
        clock: impl Fn() -> Nanos,
        fresh: impl FnOnce() -> S,
        idle_at: impl Fn(&S) -> Nanos,
        decide: impl Fn(&mut S, Nanos) -> (D, bool),
    ) -> Access<D> {
        // The clock is read before the lock, keeping the critical section
        // short. A reading older than the key's state is judged stricter;
        // a refusal is retaken on a reading from inside the lock, so a wait
        // for the lock never causes a spurious refusal.
        let t = clock();
        let mut shard = self.lock(hash);
        if let Some(state) = shard.map.get_mut(&hash) {
            let (d, admitted) = decide(state, t);
            if admitted {
                return Access::Decided(d);
            }
            return Access::Decided(decide(state, clock().max(t)).0);
        }
        let mut state = fresh();
        let (d, admitted) = decide(&mut state, t);
        if !admitted {
            return Access::Decided(d);
        }
        let mut evicted = 0;
        if shard.map.len() >= shard.cap {
            if t >= shard.sweep_at {
                let before = shard.map.len();
                shard.sweep(t, &idle_at);
                evicted = before - shard.map.len();
            }
            if shard.map.len() >= shard.cap {
                let retry_after = shard.sweep_at.saturating_sub(t).max(1);
                drop(shard);
                self.keys.removed(evicted);
                return Access::Full { retry_after };
            }
        }
        let idle = idle_at(&state);
        shard.sweep_at = shard.sweep_at.min(idle);
        shard.map.insert(hash, state);
        drop(shard);
        self.keys.removed(evicted);
        self.keys.added();
        Access::Decided(d)
    }

    /// Applies `f` to the key's state if held (to take a reservation back).
    pub(crate) fn update(&self, hash: u64, f: impl FnOnce(&mut S)) {
        if let Some(state) = self.lock(hash).map.get_mut(&hash) {
            f(state);
        }
    }

    /// Visits every held state (locks each shard in turn, one at a time).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&S)) {
        for shard in self.shards.iter() {
            let shard = shard.0.lock().unwrap_or_else(PoisonError::into_inner);
            shard.map.values().for_each(&mut f);
        }
    }

    /// Keys held now (locks each shard in turn).
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(PoisonError::into_inner).map.len())
            .sum()
    }
}

impl<S> Shard<S> {
    /// Evicts every idle key and records when the next one can go idle.
    fn sweep(&mut self, now: Nanos, idle_at: &impl Fn(&S) -> Nanos) {
        let mut next = Nanos::MAX;
        self.map.retain(|_, s| {
            let at = idle_at(s);
            if at <= now {
                false
            } else {
                next = next.min(at);
                true
            }
        });
        self.sweep_at = next;
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    /// Each limiter draws its own seed: a key's hash differs between two
    /// limiters (so one limiter's collisions say nothing of another's).
    #[test]
    fn every_key_hasher_is_seeded_afresh() {
        let (a, b) = (KeyHasher::random(), KeyHasher::random());
        let (ha, hb): (Vec<u64>, Vec<u64>) =
            (0..4u64).map(|k| (a.hash_one(k), b.hash_one(k))).unzip();
        assert_ne!(ha, hb);
        assert_eq!(
            ha,
            (0..4u64).map(|k| a.hash_one(k)).collect::<Vec<_>>(),
            "stable per limiter"
        );
    }

    /// The map's keys are hashes already: `IdHasher` passes a `u64`
    /// through, and folds bytes (unused by the map, but a `Hasher` must
    /// take them) by rotating and xoring.
    #[test]
    fn id_hasher_passes_a_u64_through() {
        let mut h = IdHasher::default();
        h.write_u64(0xDEAD_BEEF_0000_0001);
        assert_eq!(h.finish(), 0xDEAD_BEEF_0000_0001);
        let mut h = IdHasher::default();
        h.write(&[0xFF; 9]);
        assert_eq!(h.finish(), 0xFFFF_FFFF_FFFF_FF00);
        let mut h = IdHasher::default();
        h.write(&[1, 2]);
        assert_eq!(h.finish(), 0x0102);
    }

    fn take(store: &Shards<Nanos>, key: u64, now: Nanos) -> Access<bool> {
        // A toy state: "busy until", admitting when free.
        store.access(
            key,
            || now,
            || 0,
            |s| *s,
            |s, t| {
                if *s <= t {
                    *s = t + 10;
                    (true, true)
                } else {
                    (false, false)
                }
            },
        )
    }

    /// Each limiter has its own random seed: a key's hash is stable within
    /// one limiter and differs between two (so no fixed set of keys
    /// collides everywhere).
    #[test]
    fn key_hashes_are_seeded_per_limiter() {
        let (a, b) = (KeyHasher::random(), KeyHasher::random());
        assert_eq!(a.hash_one("10.0.0.1"), a.hash_one("10.0.0.1"));
        assert_ne!(a.hash_one("10.0.0.1"), b.hash_one("10.0.0.1"));
        assert_ne!(a.hash_one(1u64), a.hash_one(2u64));
    }

    #[test]
    fn caps_sum_to_the_bound() {
        for max in [1, 2, 3, 63, 64, 65, 1000] {
            let s: Shards<Nanos> = Shards::new(max);
            let total: usize = s.shards.iter().map(|s| s.0.lock().unwrap().cap).sum();
            assert_eq!(total, max);
            assert!(s.shards.iter().all(|s| s.0.lock().unwrap().cap >= 1));
        }
    }

    #[test]
    fn full_of_active_keys_refuses_new_ones_then_evicts_idle() {
        let store: Shards<Nanos> = Shards::new(1);
        assert!(matches!(take(&store, 1, 0), Access::Decided(true)));
        assert!(matches!(
            take(&store, 2, 5),
            Access::Full { retry_after: 5 }
        ));
        assert_eq!(store.len(), 1);
        // At 10 key 1 is idle: evicted for key 2.
        assert!(matches!(take(&store, 2, 10), Access::Decided(true)));
        assert_eq!(store.len(), 1);
        // Key 1 comes back as new: refused while key 2 is active.
        assert!(matches!(take(&store, 1, 11), Access::Full { .. }));
    }
}
