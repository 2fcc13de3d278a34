//! What a shared limiter counts, and its rate-limited warnings.

use std::sync::atomic::{AtomicU64, Ordering};

use super::super::handle::RateLimitHandle;
use crate::clock::{Clock, Nanos};

/// One warning per this many nanoseconds at most.
const WARN_EVERY: Nanos = 1_000_000_000;

/// Counts of a limiter decided through Redis, read through
/// [`RateLimitHandle`].
#[derive(Debug)]
pub(crate) struct StoreStats {
    calls: AtomicU64,
    errors: AtomicU64,
    fallbacks: AtomicU64,
    local_denials: AtomicU64,
    /// When the last warning was emitted (clock reading + 1; 0: never).
    warned_at: AtomicU64,
    /// Fallbacks since the last warning.
    unwarned: AtomicU64,
    clock: Clock,
}

impl StoreStats {
    pub(crate) fn new(clock: Clock) -> Self {
        Self {
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            fallbacks: AtomicU64::new(0),
            local_denials: AtomicU64::new(0),
            warned_at: AtomicU64::new(0),
            unwarned: AtomicU64::new(0),
            clock,
        }
    }

    pub(crate) fn call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn local_denial(&self) {
        self.local_denials.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a decision answered by the fallback policy and warns, at most
    /// once a second per limiter (a flood of fallbacks must not become a
    /// flood of log lines), with how many fallbacks the warning covers.
    pub(crate) fn fallback(&self, policy: &'static str, why: &dyn std::fmt::Display) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        self.unwarned.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.now().saturating_add(1);
        let last = self.warned_at.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < WARN_EVERY {
            return;
        }
        if self
            .warned_at
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let covered = self.unwarned.swap(0, Ordering::Relaxed);
            tracing::warn!(
                policy,
                fallbacks = covered,
                error = %why,
                "rate limit store unavailable: decided by the fallback policy"
            );
        }
    }
}

impl RateLimitHandle {
    fn store(&self) -> Option<&StoreStats> {
        self.store.as_deref()
    }

    /// Decisions sent to Redis (0 for an in-memory limiter).
    pub fn store_calls(&self) -> u64 {
        self.store().map_or(0, |s| s.calls.load(Ordering::Relaxed))
    }

    /// Calls to Redis that failed or timed out.
    pub fn store_errors(&self) -> u64 {
        self.store().map_or(0, |s| s.errors.load(Ordering::Relaxed))
    }

    /// Decisions answered by the fallback policy (fail open, fail closed or
    /// the local insurance limiter) because Redis failed, timed out, or was
    /// known to be down (breaker open).
    pub fn fallbacks(&self) -> u64 {
        self.store()
            .map_or(0, |s| s.fallbacks.load(Ordering::Relaxed))
    }

    /// Requests refused in process because Redis had said their key was
    /// limited until a time not yet reached (no call to Redis).
    pub fn local_denials(&self) -> u64 {
        self.store()
            .map_or(0, |s| s.local_denials.load(Ordering::Relaxed))
    }
}
