//! The state of a keyed breaker: one breaker per key, in the rate
//! limiter's sharded map ([`Shards`]), bounded, evicting idle breakers
//! itself.
//!
//! # Implementation details
//!
//! - Keys are hashed once under a per-layer random seed and stored as that
//!   hash (see [`Shards`]); two keys share a breaker only on a hash
//!   collision. The key's `Debug` text (at most [`MAX_LABEL`] bytes) is
//!   kept beside it for the handle's listing and the `tracing` events.
//! - An entry holds the key's breaker behind the same [`Link`] the unkeyed
//!   breaker's response futures hold, so a keyed call reuses its
//!   [`Permit`](super::future::Permit) and response future unchanged.
//! - A new key is first stored as an empty placeholder, and its breaker
//!   made by the next access (the same call's second lookup). The map
//!   decides whether a new key fits before it is stored, so a flood of
//!   unique keys refused for want of room costs no breaker allocation.
//! - Eviction (a new key finding its shard full sweeps the shard) takes
//!   only breakers that are as good as new: closed, or half-open with no
//!   probe in flight, and unused for `idle_after`; an open breaker not
//!   before its deadline; a breaker with probes in flight, forced open or
//!   disabled, never. So eviction never lets through a call the breaker
//!   would have refused, and the probe cap holds per key.

use std::fmt;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::clock::{Clock, Nanos};
use crate::rate_limit::keyed::{Access, Shards};
use crate::sync::Arc;

use super::builder::CircuitBreakerBuilder;
use super::events::{Observe, Observer};
use super::shared::Link;
use super::state::Core;

/// The longest key text kept per breaker: a flood of huge keys cannot
/// grow memory beyond `max_keys` times this.
pub(crate) const MAX_LABEL: usize = 256;

/// One key's breaker.
#[derive(Debug)]
pub(crate) struct Entry {
    /// `None` while a placeholder (see the module docs).
    link: Option<Arc<Link>>,
    last_used: Nanos,
    key: Box<str>,
}

/// Every breaker of one keyed layer.
#[derive(Debug)]
pub(crate) struct Registry {
    shards: Shards<Entry>,
    hasher: RandomState,
    /// The policy every key's breaker is made with (validated by `build`).
    template: CircuitBreakerBuilder<()>,
    /// Breakers made so far: the `n`-th is seeded with `seed + n`.
    made: AtomicU64,
    /// Calls let through unguarded: a new key found no room.
    unguarded: AtomicU64,
    idle_after: Nanos,
    clock: Clock,
    /// Hooks and metrics, shared by every key's breaker.
    observer: std::sync::Arc<Observer>,
}

impl Registry {
    pub(crate) fn new(
        template: CircuitBreakerBuilder<()>,
        max_keys: usize,
        idle_after: Nanos,
        observer: std::sync::Arc<Observer>,
        keys: crate::metrics::KeysGauge,
    ) -> Self {
        let mut shards = Shards::new(max_keys);
        shards.set_keys_gauge(keys);
        Self {
            shards,
            observer,
            hasher: RandomState::new(),
            template,
            made: AtomicU64::new(0),
            unguarded: AtomicU64::new(0),
            idle_after,
            clock: Clock::new(),
        }
    }

    /// The breaker of `key`, made if new; `None` if the key is new and its
    /// shard is full of breakers that cannot be evicted.
    #[inline]
    pub(crate) fn lookup<K: Hash + fmt::Debug + ?Sized>(&self, key: &K) -> Option<Arc<Link>> {
        let hash = self.hasher.hash_one(key);
        let t = self.clock.now();
        for fill in [false, true] {
            let access = self.shards.access(
                hash,
                || t,
                || Entry {
                    link: None,
                    last_used: t,
                    key: Box::from(""),
                },
                |entry| self.idle_at(entry, t),
                |entry, t| {
                    entry.last_used = t;
                    if fill && entry.link.is_none() {
                        entry.key = label(key);
                        entry.link = Some(self.make(&entry.key));
                    }
                    (entry.link.clone(), true)
                },
            );
            match access {
                Access::Decided(Some(link)) => return Some(link),
                Access::Decided(None) => {} // a placeholder: fill it
                Access::Full { .. } => break,
            }
        }
        self.unguarded.fetch_add(1, Relaxed);
        None
    }

    /// When `entry` may be evicted, as seen at `now`. A breaker that may
    /// not be evicted at all now (probes in flight, forced) is looked at
    /// again `idle_after` from now: the shard schedules its next sweep by
    /// these times, and a breaker's state can change without a sweep.
    fn idle_at(&self, entry: &Entry, now: Nanos) -> Nanos {
        let idle = entry.last_used.saturating_add(self.idle_after);
        match &entry.link {
            None => idle,
            Some(link) => match link.core.evictable_in() {
                Some(wait) => idle.max(now.saturating_add(wait)),
                None => now.saturating_add(self.idle_after),
            },
        }
    }

    fn make(&self, key: &str) -> Arc<Link> {
        let n = self.made.fetch_add(1, Relaxed);
        let seed = self.template.seed.map(|s| s.wrapping_add(n));
        let name = match self.template.name.as_deref() {
            Some(name) => format!("{name}/{key}"),
            None => key.to_owned(),
        };
        let core = self
            .template
            .clone()
            .name(name)
            .core(
                seed,
                Observe::new(self.observer.clone(), Some(std::sync::Arc::from(key))),
            )
            .unwrap_or_else(|_| unreachable!("the template was validated by build()"));
        Arc::new(Link {
            core: Arc::new(core),
        })
    }

    /// The breaker of `key`, if one is held (not counted as a use).
    pub(crate) fn get<K: Hash + ?Sized>(&self, key: &K) -> Option<Arc<Core>> {
        let mut found = None;
        self.shards.update(self.hasher.hash_one(key), |entry| {
            found = entry.link.as_ref().map(|l| l.core.clone());
        });
        found
    }

    /// Every breaker held, with its key's text.
    pub(crate) fn each(&self, mut f: impl FnMut(&str, &Arc<Core>)) {
        self.shards.for_each(|entry| {
            if let Some(link) = &entry.link {
                f(&entry.key, &link.core);
            }
        });
    }

    /// Keys held (placeholders included).
    pub(crate) fn len(&self) -> usize {
        self.shards.len()
    }

    pub(crate) fn unguarded(&self) -> u64 {
        self.unguarded.load(Relaxed)
    }
}

/// The key's `Debug` text, cut to at most [`MAX_LABEL`] bytes on a char
/// boundary.
fn label<K: fmt::Debug + ?Sized>(key: &K) -> Box<str> {
    let mut text = format!("{key:?}");
    if text.len() > MAX_LABEL {
        let mut end = MAX_LABEL;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text.into_boxed_str()
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;
    use crate::circuit_breaker::CircuitBreakerLayer;

    fn registry(max_keys: usize) -> Registry {
        let template = CircuitBreakerLayer::consecutive_failures(1).classifier(());
        Registry::new(
            template,
            max_keys,
            1_000_000_000,
            Observer::new(None, Default::default(), true),
            crate::metrics::KeysGauge::noop(),
        )
    }

    #[test]
    fn a_key_refused_for_want_of_room_makes_no_breaker() {
        let r = registry(1);
        assert!(r.lookup(&1u64).is_some());
        assert!(r.lookup(&1u64).is_some());
        assert_eq!(r.made.load(Relaxed), 1);
        // Held key 1 is not idle yet: key 2 is refused, and costs nothing.
        for _ in 0..3 {
            assert!(r.lookup(&2u64).is_none());
        }
        assert_eq!(r.made.load(Relaxed), 1);
        assert_eq!((r.len(), r.unguarded()), (1, 3));
    }

    #[test]
    fn a_held_key_keeps_its_breaker() {
        let r = registry(10);
        let a = r.lookup(&"a").unwrap();
        let again = r.lookup(&"a").unwrap();
        assert!(Arc::ptr_eq(&a.core, &again.core));
        assert!(Arc::ptr_eq(&a.core, &r.get(&"a").unwrap()));
        assert!(r.get(&"b").is_none());
        let mut seen = Vec::new();
        r.each(|key, _| seen.push(key.to_owned()));
        assert_eq!(seen, ["\"a\""]);
    }

    #[test]
    fn labels_are_cut_on_a_char_boundary_within_the_bound() {
        assert_eq!(&*label("abc"), "\"abc\"");
        // `"` then two-byte chars: byte 256 is inside a char, cut at 255.
        let long = "é".repeat(200);
        let cut = label(&long);
        assert_eq!(cut.len(), MAX_LABEL - 1);
        assert!(long.starts_with(&cut[1..]));
        // Exactly at the bound: kept whole.
        let exact = "x".repeat(MAX_LABEL - 2);
        assert_eq!(label(&exact).len(), MAX_LABEL);
        let over = "x".repeat(MAX_LABEL);
        assert_eq!(label(&over).len(), MAX_LABEL);
    }
}
