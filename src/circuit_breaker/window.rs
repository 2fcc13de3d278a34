//! The windows a failure-rate policy counts over: a ring of the last `N`
//! outcomes, or the last `T` of time in buckets.
//!
//! Both are lock-free and O(1) per recorded call. Both keep running totals
//! that are updated as entries enter and leave (subtract-on-evict), so a
//! decision never scans the window.
//!
//! # Implementation details
//!
//! Counters are `u64` words updated with wrapping arithmetic and read as
//! `i64` clamped at zero: two writers racing on the same slot (possible only
//! when `N` calls end at once around a ring of size `N`) may subtract before
//! the other adds, and a transient "-1" must not read as 2^64 failures.

use std::time::Duration;

use crate::clock::{Nanos, duration_to_nanos};
use crate::sync::{AtomicU64, Ordering::Relaxed};

use super::shared::Padded;

/// The most outcomes a count window may hold (one bit each, twice).
pub(crate) const MAX_COUNT_WINDOW: u32 = 1 << 20;
/// The most buckets a time window may have: eviction walks at most this many.
pub(crate) const MAX_BUCKETS: u32 = 1_000;
/// Buckets of [`Window::time`].
pub(crate) const DEFAULT_BUCKETS: u32 = 10;

/// What a failure-rate or slow-call-rate policy counts over.
///
/// ```
/// use palisade::circuit_breaker::Window;
/// use std::time::Duration;
///
/// let last_100_calls = Window::count(100);
/// let last_10_seconds = Window::time(Duration::from_secs(10)); // 10 buckets of 1 s
/// let finer = Window::time_with_buckets(Duration::from_secs(10), 50);
/// # let _ = (last_100_calls, last_10_seconds, finer);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last `size` recorded outcomes: a true ring, where each new
    /// outcome replaces the oldest (not a counter since the last reset).
    Count {
        /// How many outcomes the ring holds.
        size: u32,
    },
    /// The outcomes recorded in the last `span`, kept in `buckets` buckets
    /// of `span / buckets` each. The window slides a bucket at a time, so it
    /// covers between `span - span / buckets` and `span` of history.
    Time {
        /// How far back the window reaches.
        span: Duration,
        /// How many buckets `span` is cut into.
        buckets: u32,
    },
}

impl Window {
    /// The last `size` outcomes.
    pub const fn count(size: u32) -> Self {
        Self::Count { size }
    }

    /// The last `span` of time, in 10 buckets.
    pub const fn time(span: Duration) -> Self {
        Self::time_with_buckets(span, DEFAULT_BUCKETS)
    }

    /// The last `span` of time, in `buckets` buckets (more buckets: a
    /// smoother slide, a longer walk when a quiet breaker wakes up).
    pub const fn time_with_buckets(span: Duration, buckets: u32) -> Self {
        Self::Time { span, buckets }
    }
}

impl Default for Window {
    /// `Window::count(100)`.
    fn default() -> Self {
        Self::count(100)
    }
}

/// Checks a time window's `span` and `buckets`: a span above zero, cut
/// into 1 to [`MAX_BUCKETS`] buckets of at least a nanosecond each.
pub(crate) fn check_time_window(
    span: Duration,
    buckets: u32,
) -> Result<(), super::error::ConfigError> {
    use super::error::ConfigError;
    if span.is_zero() {
        return Err(ConfigError::ZeroWindow);
    }
    if buckets == 0 || buckets > MAX_BUCKETS {
        return Err(ConfigError::Buckets {
            buckets,
            max: MAX_BUCKETS,
        });
    }
    if duration_to_nanos(span) < u64::from(buckets) {
        return Err(ConfigError::BucketTooNarrow { span, buckets });
    }
    Ok(())
}

/// What a window holds right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

/// A counter that may dip below zero for an instant (see the module docs).
#[inline]
fn read_count(counter: &AtomicU64) -> u64 {
    (counter.load(Relaxed) as i64).max(0) as u64
}

/// The last `n` outcomes, one bit per outcome per kind (failure, slow).
#[derive(Debug)]
pub(crate) struct CountRing {
    size: u64,
    /// Outcomes ever recorded since the last reset; the next slot is
    /// `next % size`. One `fetch_add` claims a slot. Every call writes
    /// it: alone on its line.
    next: Padded<AtomicU64>,
    failed: Box<[AtomicU64]>,
    /// Empty when no slow-call policy is set (nothing to track).
    slow: Box<[AtomicU64]>,
    failures: AtomicU64,
    slow_calls: AtomicU64,
}

fn bit_words(n: u64) -> Box<[AtomicU64]> {
    (0..n.div_ceil(64)).map(|_| AtomicU64::new(0)).collect()
}

impl CountRing {
    pub(crate) fn new(size: u32, track_slow: bool) -> Self {
        let size = u64::from(size.max(1));
        Self {
            size,
            next: Padded(AtomicU64::new(0)),
            failed: bit_words(size),
            slow: if track_slow {
                bit_words(size)
            } else {
                bit_words(0)
            },
            failures: AtomicU64::new(0),
            slow_calls: AtomicU64::new(0),
        }
    }

    /// The bits set in the failure words (models and tests).
    #[cfg(test)]
    pub(crate) fn failed_bits(&self) -> u64 {
        self.failed
            .iter()
            .map(|w| u64::from(w.load(Relaxed).count_ones()))
            .sum()
    }

    /// Writes one outcome over the oldest and returns the tally after it.
    #[inline]
    pub(crate) fn record(&self, failed: bool, slow: bool) -> Tally {
        let index = self.next.fetch_add(1, Relaxed);
        let slot = index % self.size;
        set_bit(&self.failed, slot, failed, &self.failures);
        if !self.slow.is_empty() {
            set_bit(&self.slow, slot, slow, &self.slow_calls);
        }
        Tally {
            calls: index.saturating_add(1).min(self.size),
            failures: read_count(&self.failures),
            slow: read_count(&self.slow_calls),
        }
    }

    pub(crate) fn tally(&self) -> Tally {
        Tally {
            calls: self.next.load(Relaxed).min(self.size),
            failures: read_count(&self.failures),
            slow: read_count(&self.slow_calls),
        }
    }

    pub(crate) fn reset(&self) {
        // Swaps rather than stores, for loom (see `Consecutive::reset`).
        for word in self.failed.iter().chain(self.slow.iter()) {
            word.swap(0, Relaxed);
        }
        self.failures.swap(0, Relaxed);
        self.slow_calls.swap(0, Relaxed);
        self.next.swap(0, Relaxed);
    }
}

/// Sets slot `slot` to `value` and moves `counter` by the change.
///
/// A success over a success (the common case) only reads: no write, so no
/// cache line bounces between threads for it.
#[inline]
fn set_bit(words: &[AtomicU64], slot: u64, value: bool, counter: &AtomicU64) {
    let word = &words[(slot / 64) as usize];
    let mask = 1u64 << (slot % 64);
    if value {
        if word.fetch_or(mask, Relaxed) & mask == 0 {
            counter.fetch_add(1, Relaxed);
        }
    } else if word.load(Relaxed) & mask != 0 && word.fetch_and(!mask, Relaxed) & mask != 0 {
        counter.fetch_sub(1, Relaxed);
    }
}

/// One bucket of a time window.
#[derive(Debug, Default)]
struct Bucket {
    calls: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
}

/// The last `span` of time in buckets, with running totals.
///
/// `head` is the newest bucket's epoch (`now / width`). Moving it forward
/// is one CAS; its winner empties the buckets that fell out of the window
/// and subtracts what they held from the totals. A recorder adds to the
/// totals *before* its bucket, and the evictor swaps the bucket to zero
/// *before* subtracting, so the totals never drop below the buckets' sum.
/// A call that ends in the very instant its bucket is evicted may be
/// evicted with it; the totals and the buckets still agree.
#[derive(Debug)]
pub(crate) struct TimeBuckets {
    width: Nanos,
    head: AtomicU64,
    buckets: Box<[Bucket]>,
    /// Every call writes it: alone on its line.
    calls: Padded<AtomicU64>,
    failures: AtomicU64,
    slow: AtomicU64,
}

impl TimeBuckets {
    /// `span` and `buckets` are validated by the builder (non-zero, span
    /// at least one nanosecond per bucket).
    pub(crate) fn new(span: Duration, buckets: u32) -> Self {
        let buckets = buckets.max(1);
        Self {
            width: (duration_to_nanos(span) / u64::from(buckets)).max(1),
            head: AtomicU64::new(0),
            buckets: (0..buckets).map(|_| Bucket::default()).collect(),
            calls: Padded(AtomicU64::new(0)),
            failures: AtomicU64::new(0),
            slow: AtomicU64::new(0),
        }
    }

    fn len(&self) -> u64 {
        self.buckets.len() as u64
    }

    /// Slides the window to `now` and returns the epoch to record into.
    #[inline]
    fn advance(&self, now: Nanos) -> u64 {
        let mut head = self.head.load(Relaxed);
        // Most readings fall in the head's bucket (or before it): known
        // without dividing, since `now / width > head` exactly when
        // `now >= (head + 1) * width`. A 64-bit division costs tens of
        // cycles, a fair share of the closed path.
        if now < head.saturating_add(1).saturating_mul(self.width) {
            return head;
        }
        let epoch = now / self.width;
        while epoch > head {
            match self
                .head
                .compare_exchange_weak(head, epoch, Relaxed, Relaxed)
            {
                Ok(_) => {
                    // Epochs head+1 ..= epoch reuse buckets that held
                    // epochs a window ago: empty them (at most all of them).
                    let stale = (epoch - head).min(self.len());
                    for k in 1..=stale {
                        self.evict(((head + k) % self.len()) as usize);
                    }
                    return epoch;
                }
                Err(actual) => head = actual,
            }
        }
        // A reading older than the head (another thread read the clock
        // later and moved on) goes into the newest bucket.
        head
    }

    fn evict(&self, index: usize) {
        let bucket = &self.buckets[index];
        let calls = bucket.calls.swap(0, Relaxed);
        let failures = bucket.failures.swap(0, Relaxed);
        let slow = bucket.slow.swap(0, Relaxed);
        self.calls.fetch_sub(calls, Relaxed);
        self.failures.fetch_sub(failures, Relaxed);
        self.slow.fetch_sub(slow, Relaxed);
    }

    /// Records one outcome at `now` and returns the tally after it.
    #[inline]
    pub(crate) fn record(&self, now: Nanos, failed: bool, slow: bool) -> Tally {
        let epoch = self.advance(now);
        let bucket = &self.buckets[(epoch % self.len()) as usize];
        let calls = self.calls.fetch_add(1, Relaxed).wrapping_add(1);
        bucket.calls.fetch_add(1, Relaxed);
        if failed {
            self.failures.fetch_add(1, Relaxed);
            bucket.failures.fetch_add(1, Relaxed);
        }
        if slow {
            self.slow.fetch_add(1, Relaxed);
            bucket.slow.fetch_add(1, Relaxed);
        }
        Tally {
            calls: (calls as i64).max(0) as u64,
            failures: read_count(&self.failures),
            slow: read_count(&self.slow),
        }
    }

    /// The tally at `now` (sliding the window first).
    pub(crate) fn tally(&self, now: Nanos) -> Tally {
        self.advance(now);
        Tally {
            calls: read_count(&self.calls),
            failures: read_count(&self.failures),
            slow: read_count(&self.slow),
        }
    }

    pub(crate) fn reset(&self) {
        for index in 0..self.buckets.len() {
            self.evict(index);
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn ring_forgets_the_oldest() {
        let ring = CountRing::new(4, true);
        for _ in 0..1000 {
            ring.record(false, false);
        }
        assert_eq!(ring.tally().failures, 0);
        let counts: Vec<_> = (0..5).map(|_| ring.record(true, true).failures).collect();
        assert_eq!(counts, [1, 2, 3, 4, 4]);
        assert_eq!(ring.record(false, false).failures, 3);
        assert_eq!(ring.failed_bits(), 3);
        assert_eq!(ring.tally().slow, 3);
        assert_eq!(ring.tally().calls, 4);
        ring.reset();
        assert_eq!(ring.tally(), Tally::default());
        assert_eq!(ring.record(true, false).calls, 1);
    }

    #[test]
    fn ring_larger_than_a_word() {
        let ring = CountRing::new(130, false);
        for i in 0..130 {
            ring.record(i % 2 == 0, true);
        }
        let t = ring.tally();
        assert_eq!((t.calls, t.failures, t.slow), (130, 65, 0));
        for _ in 0..130 {
            ring.record(false, false);
        }
        assert_eq!(ring.tally().failures, 0);
    }

    #[test]
    fn buckets_subtract_on_evict() {
        // 4 buckets of 10 ns.
        let w = TimeBuckets::new(Duration::from_nanos(40), 4);
        w.record(0, true, false);
        w.record(15, false, true);
        w.record(39, true, false);
        assert_eq!(
            w.tally(39),
            Tally {
                calls: 3,
                failures: 2,
                slow: 1
            }
        );
        // Epoch 4 reuses bucket 0: the call at t=0 leaves.
        assert_eq!(w.tally(40).calls, 2);
        assert_eq!(w.tally(40).failures, 1);
        // Epoch 5 evicts the call at t=15.
        assert_eq!(w.tally(50).slow, 0);
        // A long silence empties everything, once.
        assert_eq!(w.tally(10_000), Tally::default());
        let t = w.record(10_001, true, false);
        assert_eq!((t.calls, t.failures), (1, 1));
        // An older reading lands in the newest bucket.
        assert_eq!(w.record(5, false, false).calls, 2);
        w.reset();
        assert_eq!(w.tally(10_001), Tally::default());
    }
}
