//! Keys Redis has refused, answered in process until their refusal ends
//! (Envoy's over-limit cache, rate-limiter-flexible's in-memory block).
//!
//! Redis answers a refusal (and an admission that used the last unit) with
//! the time until a request of cost 1 could pass; until then every request
//! for that key is refused here, with no call to Redis. The time is counted
//! from the answer's arrival, so a local refusal outlasts Redis's by at
//! most the answer's travel time (other instances admitting meanwhile only
//! make Redis stricter); in exchange the first call after it finds the
//! capacity free. When a refusal ends, one request asks Redis and the
//! others wait for its answer (single flight). A flood at a limited key
//! therefore costs at most one call to Redis per refusal period per
//! instance.
//!
//! Memory is bounded: at most `max` keys are held; when full, expired
//! entries are swept, and if none has expired the new refusal is simply not
//! cached (that key keeps asking Redis). Keys are held as 64-bit hashes
//! under a per-process random seed: two keys share an entry only on a hash
//! collision (about `n² / 2^65` for `n` entries), and then one may be
//! refused locally for the rest of the other's refusal period.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

use crate::clock::Nanos;

#[derive(Debug)]
struct Entry {
    /// Refused until then.
    until: Nanos,
    /// After `until`, the one request asking Redis on this instance's
    /// behalf; the others wait for its answer (single flight), so a flood
    /// makes one call per refusal period, not one per concurrent caller.
    probe: Option<watch::Receiver<()>>,
}

#[derive(Debug)]
pub(crate) struct Denials {
    map: Mutex<HashMap<u64, Entry>>,
    /// Entries held, read without the lock so that an empty cache (the
    /// common case) costs one load.
    len: AtomicUsize,
    max: usize,
    hasher: RandomState,
}

/// What the cache says about a key.
#[derive(Debug)]
pub(crate) enum Check<'a> {
    /// Refused until then.
    Denied(Nanos),
    /// Ask Redis; if a probe, hold the guard until the answer is cached.
    Ask(Option<Probe<'a>>),
    /// Another request is asking Redis for this key: wait for it (the
    /// receiver's sender is dropped when it is done), then check again.
    Wait(watch::Receiver<()>),
}

/// The one request asking Redis for a key whose refusal just ended. Dropped
/// (answered, failed or cancelled), it wakes the waiters.
#[derive(Debug)]
pub(crate) struct Probe<'a> {
    denials: &'a Denials,
    key: u64,
    /// The refusal that had ended when this probe started.
    ended: Nanos,
    /// Redis admitted the probe with capacity to spare.
    freed: bool,
    mine: watch::Receiver<()>,
    _tx: watch::Sender<()>,
}

impl Probe<'_> {
    /// Redis admitted this probe and has capacity left for the key.
    pub(crate) fn freed(&mut self) {
        self.freed = true;
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        let mut map = self.denials.lock();
        if let Some(e) = map.get_mut(&self.key) {
            if e.probe.as_ref().is_some_and(|p| p.same_channel(&self.mine)) {
                if self.freed && e.until == self.ended {
                    // Redis admitted with capacity to spare: the key is no
                    // longer known to be limited, so its requests go to
                    // Redis freely again, not one at a time. (After a failed
                    // call they stay one at a time, each within its own
                    // timeout, while the breaker decides.)
                    map.remove(&self.key);
                    self.denials.len.store(map.len(), Ordering::Relaxed);
                } else {
                    e.probe = None;
                }
            }
        }
        // `_tx` drops after this: waiters wake to the updated entry.
    }
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

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        // Nothing panics under this lock; a poisoned map is still valid.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    /// What to do with a request for `key` at `now`.
    pub(crate) fn check(&self, key: u64, now: Nanos) -> Check<'_> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return Check::Ask(None);
        }
        let mut map = self.lock();
        let Some(e) = map.get_mut(&key) else {
            return Check::Ask(None);
        };
        if e.until > now {
            return Check::Denied(e.until);
        }
        if let Some(rx) = &e.probe {
            return Check::Wait(rx.clone());
        }
        let (tx, rx) = watch::channel(());
        e.probe = Some(rx.clone());
        Check::Ask(Some(Probe {
            denials: self,
            key,
            ended: e.until,
            freed: false,
            mine: rx,
            _tx: tx,
        }))
    }

    /// Refuses `key` locally until `until`.
    pub(crate) fn insert(&self, key: u64, until: Nanos, now: Nanos) {
        if until <= now {
            return;
        }
        let mut map = self.lock();
        if map.len() >= self.max && !map.contains_key(&key) {
            map.retain(|_, e| e.until > now || e.probe.is_some());
            if map.len() >= self.max {
                return;
            }
        }
        let e = map.entry(key).or_insert(Entry { until, probe: None });
        e.until = e.until.max(until);
        self.len.store(map.len(), Ordering::Relaxed);
    }

    #[cfg(all(test, not(palisade_loom)))]
    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn refuses_until_then_one_probe() {
        let d = Denials::new(2);
        let k = d.hash(b"a");
        assert!(matches!(d.check(k, 0), Check::Ask(None)));
        d.insert(k, 100, 0);
        assert!(matches!(d.check(k, 99), Check::Denied(100)));
        let Check::Ask(Some(probe)) = d.check(k, 100) else {
            panic!("the first request after the refusal asks")
        };
        let Check::Wait(rx) = d.check(k, 100) else {
            panic!("the others wait")
        };
        d.insert(k, 200, 100);
        drop(probe);
        assert!(rx.has_changed().is_err(), "waiters are woken");
        assert!(matches!(d.check(k, 150), Check::Denied(200)));
        // A probe that fails keeps single flight; one that finds capacity
        // frees the key.
        let Check::Ask(Some(probe)) = d.check(k, 200) else {
            panic!("probe")
        };
        drop(probe);
        let Check::Ask(Some(mut probe)) = d.check(k, 200) else {
            panic!("still one at a time")
        };
        assert!(matches!(d.check(k, 200), Check::Wait(_)));
        probe.freed();
        drop(probe);
        assert!(matches!(d.check(k, 200), Check::Ask(None)));
        assert!(matches!(d.check(k, 200), Check::Ask(None)));
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
        assert!(matches!(d.check(42, 200), Check::Denied(300)));
        assert!(d.len() <= 2);
    }
}
