//! Counts readable while the limiter runs.

use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::keyed::Padded;
use super::limiter::Limiter;

const STRIPES: usize = 16;

/// Admitted and rejected counts, striped across cache lines so that threads
/// admitting at once do not contend on one counter (a relaxed increment on
/// a line of their own); a read sums the stripes.
pub(crate) struct Counters {
    admitted: [Padded<AtomicU64>; STRIPES],
    rejected: AtomicU64,
    unknown_key: AtomicU64,
}

impl fmt::Debug for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Counters")
            .field("admitted", &self.admitted())
            .field("rejected", &self.rejected())
            .field("unknown_key", &self.unknown_key_requests())
            .finish()
    }
}

fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
            s.set(i);
        }
        i
    })
}

impl Counters {
    pub(crate) fn new() -> Self {
        Self {
            admitted: std::array::from_fn(|_| Padded(AtomicU64::new(0))),
            rejected: AtomicU64::new(0),
            unknown_key: AtomicU64::new(0),
        }
    }

    #[inline]
    pub(crate) fn admit(&self) {
        self.admitted[stripe()].0.fetch_add(1, Ordering::Relaxed);
    }

    /// Rejections are the slow path: one shared counter is enough.
    pub(crate) fn reject(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// A request whose extractor identified no client: off the path where
    /// nothing goes wrong, so one shared counter.
    pub(crate) fn unknown_key(&self) {
        self.unknown_key.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn unknown_key_requests(&self) -> u64 {
        self.unknown_key.load(Ordering::Relaxed)
    }

    pub(crate) fn admitted(&self) -> u64 {
        self.admitted
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .sum()
    }

    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

/// Reads a limiter's counts. Cheap to clone; shared with every service the
/// layer produced.
///
/// ```
/// use palisade::RateLimitLayer;
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = RateLimitLayer::token_bucket(10, Duration::from_secs(1)).build()?;
/// let handle = layer.handle();
/// assert_eq!((handle.admitted(), handle.rejected(), handle.keys()), (0, 0, 0));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RateLimitHandle {
    pub(crate) limiter: Arc<Limiter>,
    /// The shared store's counts, for a limiter decided through Redis.
    #[cfg(feature = "redis")]
    pub(crate) store: Option<Arc<super::redis::StoreStats>>,
}

impl fmt::Debug for RateLimitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitHandle")
            .field("admitted", &self.admitted())
            .field("rejected", &self.rejected())
            .field("keys", &self.keys())
            .field("unknown_key_requests", &self.unknown_key_requests())
            .finish_non_exhaustive()
    }
}

impl RateLimitHandle {
    /// The handle of an in-memory limiter.
    pub(crate) fn new(limiter: Arc<Limiter>) -> Self {
        Self {
            limiter,
            #[cfg(feature = "redis")]
            store: None,
        }
    }

    /// Requests admitted (passed to the inner service) so far.
    pub fn admitted(&self) -> u64 {
        self.limiter.counters.admitted()
    }

    /// Requests refused so far (`RateLimited`, `InsufficientCapacity` or
    /// `UnknownKey`).
    pub fn rejected(&self) -> u64 {
        self.limiter.counters.rejected()
    }

    /// Requests whose key extractor could not identify the client
    /// ([`KeyStatus::Unknown`](super::KeyStatus::Unknown) or
    /// [`Refuse`](super::KeyStatus::Refuse); with `http::ClientIp`,
    /// `ClientKey::Unknown`), admitted, limited or refused alike. Anything
    /// above 0 behind a server that should see every peer is a
    /// misconfiguration: those requests share one limit (or are refused, in
    /// strict mode). Always 0 for an unkeyed limiter.
    pub fn unknown_key_requests(&self) -> u64 {
        self.limiter.counters.unknown_key_requests()
    }

    /// Keys held by a keyed limiter (0 for an unkeyed one). Locks each shard
    /// in turn: for monitoring, not for the hot path.
    pub fn keys(&self) -> usize {
        self.limiter.keys()
    }

    /// The limit: a token bucket's burst, a window's limit.
    pub fn limit(&self) -> u64 {
        self.limiter.limit()
    }
}
