//! Keys Redis has refused, answered in process until their refusal ends
//! (Envoy's over-limit cache, rate-limiter-flexible's in-memory block).
//!
//! Redis answers a refusal with the time until a request of cost 1 could
//! pass; until then every request for that key is refused here, with no
//! call to Redis. The time is counted from *before* the call was sent, so
//! the local refusal ends no later than Redis's would: it never refuses a
//! request Redis would have admitted (other instances admitting meanwhile
//! only make Redis stricter). A flood at a limited key therefore costs at
//! most one call to Redis per refusal period per instance.
//!
//! Memory is bounded: at most `max` keys are held; when full, expired
//! entries are swept, and if none has expired the new refusal is simply not
//! cached (that key keeps asking Redis). Keys are held as 64-bit hashes
//! under a per-process random seed: two keys share an entry only on a hash
//! collision (about `n² / 2^65` for `n` entries), and then one may be
//! refused locally for the rest of the other's refusal period.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::clock::Nanos;

#[derive(Debug)]
pub(crate) struct Denials {
    map: Mutex<HashMap<u64, Nanos>>,
    /// Entries held, read without the lock so that an empty cache (the
    /// common case) costs one load.
    len: AtomicUsize,
    max: usize,
    hasher: RandomState,
}

impl Denials {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            len: AtomicUsize::new(0),
            max,
            hasher: RandomState::new(),
        }
    }

    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// When the key's cached refusal ends, if it has not yet.
    pub(crate) fn until(&self, key: u64, now: Nanos) -> Option<Nanos> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&key) {
            Some(&until) if until > now => Some(until),
            Some(_) => {
                map.remove(&key);
                self.len.store(map.len(), Ordering::Relaxed);
                None
            }
            None => None,
        }
    }

    /// Refuses `key` locally until `until`.
    pub(crate) fn insert(&self, key: u64, until: Nanos, now: Nanos) {
        if until <= now {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.max && !map.contains_key(&key) {
            map.retain(|_, u| *u > now);
            if map.len() >= self.max {
                return;
            }
        }
        let entry = map.entry(key).or_insert(until);
        *entry = (*entry).max(until);
        self.len.store(map.len(), Ordering::Relaxed);
    }

    #[cfg(all(test, not(loom)))]
    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn refuses_until_then_forgets() {
        let d = Denials::new(2);
        let k = d.hash(b"a");
        assert_eq!(d.until(k, 0), None);
        d.insert(k, 100, 0);
        assert_eq!(d.until(k, 99), Some(100));
        assert_eq!(d.until(k, 100), None);
        assert_eq!(d.len(), 0);
    }

    #[test]
    fn bounded() {
        let d = Denials::new(2);
        for i in 0..10u64 {
            d.insert(i, 100, 0);
        }
        assert_eq!(d.len(), 2);
        // Expired entries make room.
        d.insert(42, 300, 200);
        assert_eq!(d.until(42, 200), Some(300));
        assert!(d.len() <= 2);
    }
}
