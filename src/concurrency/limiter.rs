//! The shared core: one atomic word admits calls against the current
//! limit; sample windows, closed by whichever completion first finds one
//! over, move the limit.
//!
//! # Implementation details
//!
//! `gate` packs the calls in flight (low 32 bits) and a count of
//! admissions (high 32 bits, wrapping). Admission is one load and one
//! compare-and-swap against `limit`, so no call is ever admitted while
//! `limit` are in flight, whatever the number of clones and threads;
//! release is one `fetch_sub`. The admission count picks the calls that are
//! timed: every `2^k`-th, with `2^k` about `limit / 8`, so a window sees
//! about 8 samples per round trip at the limit and a call that is not
//! timed reads no clock.
//!
//! A timed completion adds its latency to the window (two `fetch_add`s)
//! and, when the window's end has passed, tries to close it: the algorithm's
//! state sits behind a `Mutex` taken with `try_lock` only then, so no call
//! ever waits for it (a completion that finds it taken leaves the window
//! to the one holding it). The new limit is stored with one atomic store;
//! admission never locks.

use std::sync::Mutex;
use std::task::Waker;

use crate::clock::{Clock, Nanos};
use crate::sync::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::algorithm::{Algorithm, WindowSummary};

/// The largest limit (calls in flight are a 32-bit field).
pub const MAX_LIMIT: u32 = 1 << 30;

const IN_FLIGHT_MASK: u64 = u32::MAX as u64;
const ADMISSION: u64 = 1 << 32;
/// About this many timed calls per limit's worth of admissions (a window,
/// two round trips at the limit, sees about twice as many).
const SAMPLES_PER_LIMIT: u32 = 8;

/// Settings fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) min_limit: u32,
    pub(crate) max_limit: u32,
    pub(crate) min_window: Nanos,
    pub(crate) max_window: Nanos,
    pub(crate) min_samples: u64,
    pub(crate) name: Option<std::borrow::Cow<'static, str>>,
    pub(crate) observe: std::sync::Arc<super::events::Observe>,
}

/// The sample mask of a fixed limit: a call is timed only when the
/// wrapping admission count is 0, once in 2^32 calls (and that sample
/// moves nothing).
const NEVER_TIMED: u32 = u32::MAX;

/// What admission decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Admitted; time the call if `timed`.
    Admitted { timed: bool },
    /// Refused: `in_flight` calls against `limit`.
    Full { limit: u32, in_flight: u32 },
}

#[derive(Debug)]
struct Control {
    algorithm: Algorithm,
    /// The limit as the algorithm sees it (fractional).
    estimate: f64,
}

/// The current window's accumulators, on their own cache line: timed
/// completions write them, and admission (on `gate`) should not pay for it.
#[derive(Debug)]
#[repr(align(128))]
struct Accumulators {
    rtt_sum: AtomicU64,
    rtt_count: AtomicU64,
    drops: AtomicU64,
    refusals: AtomicU64,
}

/// The admission word, alone on its cache line (away from the `Arc`'s
/// counts and the accumulators).
#[derive(Debug)]
#[repr(align(128))]
struct Gate(AtomicU64);

/// One limiter, shared by a layer, its services and their futures.
#[derive(Debug)]
pub(crate) struct Limiter {
    gate: Gate,
    limit: AtomicU32,
    /// `limit / 8` rounded down to a power of two, minus one (which
    /// admissions are timed).
    sample_mask: AtomicU32,
    window: Accumulators,
    window_end: AtomicU64,
    refused: AtomicU64,
    waiting: AtomicUsize,
    waiters: Mutex<Vec<Waker>>,
    control: Mutex<Control>,
    algorithm_name: &'static str,
    clock: Clock,
    settings: Settings,
}

impl Limiter {
    pub(crate) fn new(algorithm: Algorithm, initial: u32, settings: Settings) -> Self {
        let clock = Clock::new();
        let fixed = matches!(algorithm, Algorithm::Fixed);
        Self {
            gate: Gate(AtomicU64::new(0)),
            limit: AtomicU32::new(initial),
            sample_mask: AtomicU32::new(if fixed {
                NEVER_TIMED
            } else {
                sample_mask(initial)
            }),
            window: Accumulators {
                rtt_sum: AtomicU64::new(0),
                rtt_count: AtomicU64::new(0),
                drops: AtomicU64::new(0),
                refusals: AtomicU64::new(0),
            },
            window_end: AtomicU64::new(settings.min_window),
            refused: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            waiters: Mutex::new(Vec::new()),
            algorithm_name: algorithm.name(),
            control: Mutex::new(Control {
                algorithm,
                estimate: f64::from(initial),
            }),
            clock,
            settings,
        }
    }

    /// Admits one call if fewer than the limit are in flight.
    #[inline]
    pub(crate) fn try_acquire(&self) -> Admission {
        let limit = self.limit.load(Ordering::Acquire);
        let mut gate = self.gate.0.load(Ordering::Relaxed);
        loop {
            let in_flight = (gate & IN_FLIGHT_MASK) as u32;
            if in_flight >= limit {
                return Admission::Full { limit, in_flight };
            }
            let next = gate.wrapping_add(ADMISSION + 1);
            match self
                .gate
                .0
                .compare_exchange_weak(gate, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    let ticket = (next >> 32) as u32;
                    let mask = self.sample_mask.load(Ordering::Relaxed);
                    return Admission::Admitted {
                        timed: ticket & mask == 0,
                    };
                }
                Err(actual) => gate = actual,
            }
        }
    }

    /// Counts a refusal (the rejection path only).
    #[cold]
    pub(crate) fn count_refusal(&self, refused: &super::Overloaded) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.window.refusals.fetch_add(1, Ordering::Relaxed);
        self.settings
            .observe
            .rejected(refused.limit, refused.in_flight);
    }

    /// Gives one permit back.
    #[inline]
    pub(crate) fn release(&self) {
        // SeqCst with the load of `waiting`, paired with `register`: either
        // a waiter sees this release, or this release sees the waiter.
        self.gate.0.fetch_sub(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.wake_waiters();
        }
    }

    /// Now, on the limiter's clock (read only for timed calls).
    #[inline]
    pub(crate) fn now(&self) -> Nanos {
        self.clock.now()
    }

    /// Records a timed call's outcome, and closes the window if it is over.
    #[inline]
    pub(crate) fn record(&self, start: Nanos, sample: Sample) {
        let now = self.clock.now();
        match sample {
            Sample::Latency => {
                self.window
                    .rtt_sum
                    .fetch_add(now.saturating_sub(start), Ordering::Relaxed);
                self.window.rtt_count.fetch_add(1, Ordering::Relaxed);
            }
            Sample::Drop => {
                self.window.drops.fetch_add(1, Ordering::Relaxed);
            }
        }
        if now >= self.window_end.load(Ordering::Relaxed) {
            self.close_window(now);
        }
    }

    /// Calls in flight now.
    pub(crate) fn in_flight(&self) -> u32 {
        (self.gate.0.load(Ordering::Acquire) & IN_FLIGHT_MASK) as u32
    }

    /// The current limit.
    pub(crate) fn limit(&self) -> u32 {
        self.limit.load(Ordering::Acquire)
    }

    /// Calls refused since the limiter was built.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    pub(crate) fn algorithm_name(&self) -> &'static str {
        self.algorithm_name
    }

    #[cold]
    #[inline(never)]
    fn close_window(&self, now: Nanos) {
        // Whoever holds the lock is closing this window already.
        let Ok(mut control) = self.control.try_lock() else {
            return;
        };
        if now < self.window_end.load(Ordering::Relaxed) {
            return; // closed by another completion meanwhile
        }
        let count = self.window.rtt_count.load(Ordering::Relaxed);
        let drops = self.window.drops.load(Ordering::Relaxed);
        if count < self.settings.min_samples && drops == 0 {
            return; // too few samples yet: the window stays open
        }
        let count = self.window.rtt_count.swap(0, Ordering::Relaxed);
        let sum = self.window.rtt_sum.swap(0, Ordering::Relaxed);
        let drops = self.window.drops.swap(0, Ordering::Relaxed);
        let refusals = self.window.refusals.swap(0, Ordering::Relaxed);
        let old = self.limit.load(Ordering::Relaxed);
        let window = WindowSummary {
            rtt: (count > 0).then(|| sum as f64 / count as f64),
            drops,
            limited: refusals > 0 || u64::from(self.in_flight()) * 2 >= u64::from(old),
        };
        let min = f64::from(self.settings.min_limit);
        let max = f64::from(self.settings.max_limit);
        let estimate = control.estimate;
        let next = control.algorithm.update(estimate, &window);
        control.estimate = if next.is_finite() {
            next.clamp(min, max)
        } else {
            estimate
        };
        let new = control.estimate as u32;
        let window_len = control
            .algorithm
            .rtt_hint()
            .map_or(self.settings.min_window, |rtt| (rtt * 2.0) as Nanos)
            .clamp(self.settings.min_window, self.settings.max_window);
        self.window_end
            .store(now.saturating_add(window_len), Ordering::Relaxed);
        if new != old {
            // Stored under the lock, so limits land in the order decided.
            self.limit.store(new, Ordering::Release);
            self.sample_mask.store(sample_mask(new), Ordering::Relaxed);
        }
        drop(control);
        if new != old {
            self.trace(old, new, &window);
            self.settings.observe.limit_changed(old, new);
            if new > old && self.waiting.load(Ordering::SeqCst) > 0 {
                self.wake_waiters();
            }
        }
    }

    fn trace(&self, old: u32, new: u32, window: &WindowSummary) {
        let name = self.settings.name.as_deref().unwrap_or("");
        let rtt = window
            .rtt
            .map(|r| std::time::Duration::from_nanos(r as u64));
        tracing::debug!(
            target: "palisade::concurrency",
            limiter = name,
            from = old,
            to = new,
            ?rtt,
            drops = window.drops,
            "concurrency limit changed"
        );
    }

    /// Registers a waiter to wake when a permit is released or the limit
    /// grows. The caller tries to acquire again *after* this, so a release
    /// in between is not missed.
    pub(crate) fn register(&self, waker: &Waker) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if !waiters.iter().any(|w| w.will_wake(waker)) {
            waiters.push(waker.clone());
            self.waiting.fetch_add(1, Ordering::SeqCst);
        }
        drop(waiters);
        // Orders the registration before the caller's next look at `gate`
        // (a relaxed load in `try_acquire`): with `release`'s SeqCst
        // `fetch_sub` then load of `waiting`, either the waiter sees the
        // place freed or the releaser sees the waiter.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    }

    #[cold]
    #[inline(never)]
    fn wake_waiters(&self) {
        let drained: Vec<Waker> = {
            let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            self.waiting.fetch_sub(waiters.len(), Ordering::SeqCst);
            std::mem::take(&mut *waiters)
        };
        // Every waiter tries again; those that lose register again.
        for waker in drained {
            waker.wake();
        }
    }
}

/// What a timed call contributes to its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sample {
    /// A success: its latency counts.
    Latency,
    /// A failure (the classifier's): a drop.
    Drop,
}

fn sample_mask(limit: u32) -> u32 {
    let per = (limit / SAMPLES_PER_LIMIT).max(1);
    // The largest power of two not above `per`, minus one.
    (1u32 << (31 - per.leading_zeros())) - 1
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_every_call_below_16_then_thins() {
        assert_eq!(sample_mask(1), 0);
        assert_eq!(sample_mask(15), 0);
        assert_eq!(sample_mask(16), 1);
        assert_eq!(sample_mask(1000), 63); // 1000 / 8 = 125 -> every 64th
        assert_eq!(sample_mask(MAX_LIMIT), (MAX_LIMIT / 8) - 1);
    }
}
