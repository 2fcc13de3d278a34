//! The retry budget: retries allowed as a fraction of recent requests, plus
//! a small floor, shared by every clone of the service.
//!
//! # Why budgets and not only max attempts?
//!
//! `max_attempts(3)` caps what one request may cost, not what the fleet
//! costs: when the upstream is down, every request becomes three, and the
//! retries triple the load on a service that is already failing. A budget
//! (Finagle's `RetryBudget`, Linkerd's retry budgets) caps retries *in
//! aggregate*: at ratio `0.2`, retries add at most 20 % to the load, however
//! many attempts each request is allowed.
//!
//! # Implementation details
//!
//! Counts live in a ring of [`SLOTS`] time slots covering the TTL, each
//! holding the requests (deposits) and retries (withdrawals) of one
//! `ttl / SLOTS` window. A retry is allowed when
//! `withdrawals + 1 <= floor + ratio * deposits` over the ring, where
//! `floor = min_per_sec * ttl`.
//!
//! Deposits and withdrawals are *counted*, not converted to tokens, so a
//! fractional ratio is exact: tower's `TpsBudget` turns ratio `r` into one
//! withdrawal costing `(1 / r) as isize` deposits, which truncates (0.3 gives
//! one retry per 3 requests, not per 3.33: tower#857). Here the ratio is
//! applied once, in `f64`, to the whole count.
//!
//! The hot path (a deposit per request) is one relaxed load and one
//! `fetch_add`, with no clock read: the ring rotates when a withdrawal reads
//! the clock, and a deposit reads it only once every [`SAMPLE`] deposits into
//! the same slot, so the current slot is never more than `SAMPLE - 1`
//! deposits stale. A deposit that lands in a stale slot expires early, never
//! late: the error makes the budget stricter, never looser. After a quiet
//! spell of a whole TTL or more, up to `SAMPLE - 1` deposits made before the
//! next clock read land in a slot the next rotation clears: a budget with
//! no floor (`min_per_sec(0)`) can then refuse up to `ratio * 15` retries it
//! would have allowed. The default floor of 10 per second covers them.
//!
//! A withdrawal is reserved first (`fetch_add`) and checked after, with the
//! reservation undone on refusal, so concurrent retries can never overdraw
//! the budget; under contention one may be refused spuriously instead.

use std::time::Duration;

use crate::clock::{Clock, Nanos, duration_to_nanos};
use crate::sync::{AtomicU64, Ordering};

/// Slots in the ring: the TTL is forgotten in steps of `ttl / SLOTS`.
pub(crate) const SLOTS: usize = 10;
/// A deposit reads the clock once per this many deposits into a slot.
pub(crate) const SAMPLE: u64 = 16;
/// Set in `epoch` while one thread rotates the ring.
const ROTATING: u64 = 1 << 63;
/// Absorbs `f64` rounding in `ratio * deposits` (`0.57 * 100` is
/// `56.99999999999999`); far below one retry.
const EPSILON: f64 = 1e-9;

/// Configuration of a retry budget; give it to
/// [`RetryLayerBuilder::budget`](super::RetryLayerBuilder::budget). The state
/// it configures is created once, when the layer is built, and shared by every
/// service and clone that layer produces.
///
/// Defaults follow Finagle: a TTL of 10 s and a floor of 10 retries per second.
///
/// ```
/// use palisade::retry::RetryBudget;
/// use std::time::Duration;
///
/// // Retries may add 20 % to the load, plus 5 retries a second when traffic
/// // is light, counted over the last 30 seconds.
/// let budget = RetryBudget::ratio(0.2)
///     .min_per_sec(5)
///     .ttl(Duration::from_secs(30));
/// # let _ = budget;
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudget {
    pub(crate) ratio: f64,
    pub(crate) min_per_sec: u32,
    pub(crate) ttl: Duration,
}

impl RetryBudget {
    /// Retries may be at most `ratio` times the requests of the last TTL
    /// (plus the floor). Must be within `0.0..=1.0`; checked by `build()`.
    pub const fn ratio(ratio: f64) -> Self {
        Self {
            ratio,
            min_per_sec: 10,
            ttl: Duration::from_secs(10),
        }
    }

    /// Retries allowed per second even with no traffic at all (default 10),
    /// so a client with few requests can still retry. Over a TTL this is a
    /// reserve of `min_per_sec * ttl` retries.
    pub const fn min_per_sec(mut self, min_per_sec: u32) -> Self {
        self.min_per_sec = min_per_sec;
        self
    }

    /// How long a request or retry counts (default 10 s). Must be between
    /// 1 s and 60 s, as in Finagle; checked by `build()`.
    pub const fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The checked configuration, as the layer's builder needs it.
    pub(crate) fn validate(&self) -> Result<(), super::InvalidRetry> {
        if !(0.0..=1.0).contains(&self.ratio) {
            // NaN fails `contains` too.
            return Err(super::InvalidRetry::BudgetRatio(self.ratio));
        }
        if self.ttl < Duration::from_secs(1) || self.ttl > Duration::from_secs(60) {
            return Err(super::InvalidRetry::BudgetTtl(self.ttl));
        }
        Ok(())
    }
}

/// The shared, lock-free state of one budget.
#[derive(Debug)]
pub(crate) struct BudgetState {
    clock: Clock,
    /// Nanoseconds per slot.
    window: Nanos,
    ratio: f64,
    /// `min_per_sec * ttl`: retries allowed per TTL with no traffic.
    reserve: f64,
    /// The window number (`now / window`) the current slot belongs to, with
    /// [`ROTATING`] set while a thread clears expired slots.
    epoch: AtomicU64,
    /// Requests per slot; only ever incremented, or cleared on rotation.
    deposits: [AtomicU64; SLOTS],
    /// Retries per slot; a refused or refunded retry is subtracted again, so
    /// the sum is read with wrapping arithmetic.
    withdrawals: [AtomicU64; SLOTS],
}

/// A retry taken from the budget: the window it was counted in, so it can be
/// given back if it is never sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Withdrawal {
    epoch: u64,
}

impl BudgetState {
    pub(crate) fn new(config: &RetryBudget) -> Self {
        let ttl = duration_to_nanos(config.ttl);
        Self {
            clock: Clock::new(),
            // ttl >= 1 s was checked, so the window is far from zero.
            window: (ttl / SLOTS as u64).max(1),
            ratio: config.ratio,
            reserve: f64::from(config.min_per_sec) * config.ttl.as_secs_f64(),
            epoch: AtomicU64::new(0),
            deposits: std::array::from_fn(|_| AtomicU64::new(0)),
            withdrawals: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Counts one request. No clock read, except once per [`SAMPLE`].
    #[inline]
    pub(crate) fn deposit(&self) {
        let epoch = self.epoch.load(Ordering::Relaxed) & !ROTATING;
        let before = self.deposits[slot(epoch)].fetch_add(1, Ordering::Relaxed);
        if before % SAMPLE == SAMPLE - 1 {
            self.rotate(self.clock.now() / self.window);
        }
    }

    /// Takes one retry from the budget, or refuses.
    pub(crate) fn withdraw(&self) -> Option<Withdrawal> {
        let epoch = self.current_epoch();
        let slot = &self.withdrawals[slot(epoch)];
        // Reserve first, check after: whoever reads the sums sees its own
        // reservation and every earlier one, so two racing retries cannot
        // both take the last token.
        slot.fetch_add(1, Ordering::AcqRel);
        let (deposits, withdrawals) = self.sums();
        if withdrawals as f64 <= self.reserve + self.ratio * deposits as f64 + EPSILON {
            Some(Withdrawal { epoch })
        } else {
            slot.fetch_sub(1, Ordering::AcqRel);
            None
        }
    }

    /// Gives back a retry that was never sent (its future was dropped while
    /// waiting). A withdrawal whose window has expired is gone already.
    pub(crate) fn refund(&self, withdrawal: Withdrawal) {
        let epoch = self.epoch.load(Ordering::Acquire) & !ROTATING;
        if epoch.wrapping_sub(withdrawal.epoch) < SLOTS as u64 {
            self.withdrawals[slot(withdrawal.epoch)].fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Retries the budget would allow right now.
    pub(crate) fn available(&self) -> u64 {
        self.current_epoch();
        let (deposits, withdrawals) = self.sums();
        let left = self.reserve + self.ratio * deposits as f64 + EPSILON - withdrawals as f64;
        // `as` saturates: negative reads as 0.
        left.floor() as u64
    }

    /// Brings the ring up to date with the clock; returns the current epoch.
    fn current_epoch(&self) -> u64 {
        self.rotate(self.clock.now() / self.window);
        self.epoch.load(Ordering::Acquire) & !ROTATING
    }

    /// Moves the ring to window `now`, clearing the slots it passes over.
    /// One thread at a time (the [`ROTATING`] bit); a thread that finds the
    /// bit set goes on with the slightly stale epoch, which only makes its
    /// count land in the previous window.
    fn rotate(&self, now: u64) {
        let current = self.epoch.load(Ordering::Acquire);
        if current & ROTATING != 0 || now <= current {
            return;
        }
        if self
            .epoch
            .compare_exchange(
                current,
                current | ROTATING,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return;
        }
        // Clear the windows between the old epoch and now before publishing
        // `now`, so nobody counts into a slot that is about to be cleared.
        let passed = (now - current).min(SLOTS as u64);
        for step in 1..=passed {
            let i = slot(current + step);
            self.deposits[i].store(0, Ordering::Relaxed);
            self.withdrawals[i].store(0, Ordering::Relaxed);
        }
        self.epoch.store(now, Ordering::Release);
    }

    /// Deposits and withdrawals over the whole ring.
    fn sums(&self) -> (u64, i64) {
        let deposits = self
            .deposits
            .iter()
            .fold(0u64, |acc, d| acc.saturating_add(d.load(Ordering::Acquire)));
        let withdrawals = self
            .withdrawals
            .iter()
            .fold(0u64, |acc, w| acc.wrapping_add(w.load(Ordering::Acquire)));
        // A refund racing with a rotation can leave a slot "negative"; the
        // wrapped sum read as signed is the true count.
        (deposits, withdrawals as i64)
    }
}

#[inline]
fn slot(epoch: u64) -> usize {
    (epoch % SLOTS as u64) as usize
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_sec: u32) -> BudgetState {
        BudgetState::new(&RetryBudget::ratio(ratio).min_per_sec(min_per_sec))
    }

    #[tokio::test(start_paused = true)]
    async fn fractional_ratio_is_exact() {
        // tower#857: ratio 0.3 must allow 3 retries per 10 requests, not 1 per 3.
        let b = budget(0.3, 0);
        for _ in 0..1000 {
            b.deposit();
        }
        let mut granted = 0;
        while b.withdraw().is_some() {
            granted += 1;
        }
        assert_eq!(granted, 300);
    }

    #[tokio::test(start_paused = true)]
    async fn floor_only_with_zero_ratio() {
        let b = budget(0.0, 2);
        for _ in 0..100 {
            b.deposit();
        }
        // 2 per second over 10 s.
        assert_eq!(b.available(), 20);
        let granted = std::iter::from_fn(|| b.withdraw()).take(100).count();
        assert_eq!(granted, 20);
    }

    #[tokio::test(start_paused = true)]
    async fn counts_expire_after_ttl() {
        let b = budget(1.0, 0);
        for _ in 0..5 {
            b.deposit();
        }
        tokio::time::advance(Duration::from_millis(9_500)).await;
        assert_eq!(b.available(), 5, "still within the TTL");
        tokio::time::advance(Duration::from_millis(1_000)).await;
        assert_eq!(b.available(), 0, "expired");
    }

    #[tokio::test(start_paused = true)]
    async fn refund_restores() {
        let b = budget(0.0, 1);
        let taken: Vec<_> = std::iter::from_fn(|| b.withdraw()).take(20).collect();
        assert_eq!(taken.len(), 10);
        assert!(b.withdraw().is_none());
        b.refund(taken[0]);
        assert!(b.withdraw().is_some());
        assert!(b.withdraw().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_rotate_without_withdrawals() {
        // Only deposits for a long time: their sampled clock reads keep the
        // ring current, so old ones expire and recent ones count.
        let b = budget(1.0, 0);
        for _ in 0..20 {
            for _ in 0..SAMPLE {
                b.deposit();
            }
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        // The last 10 seconds hold 9 batches (t = 11..=19). The ring keeps
        // windows 11..=20, and each batch was counted one window late (the
        // clock is read at the end of a batch), so one batch expired early:
        // stricter, never looser.
        let avail = b.available();
        assert!(
            (8 * SAMPLE..=9 * SAMPLE).contains(&avail),
            "available {avail}"
        );
    }

    proptest::proptest! {
        /// Any sequence of requests and retries within one window: a retry
        /// is granted exactly when `granted + 1 <= floor + ratio * requests`
        /// (never overdrawn, never refused while there is room).
        #[test]
        fn grants_exactly_what_the_ratio_allows(
            ratio in 0.0f64..=1.0,
            min_per_sec in 0u32..5,
            ops in proptest::collection::vec(proptest::bool::ANY, 0..400),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let _guard = rt.enter();
            let b = budget(ratio, min_per_sec);
            let reserve = f64::from(min_per_sec) * 10.0;
            let (mut requests, mut granted) = (0u64, 0u64);
            for is_request in ops {
                if is_request {
                    b.deposit();
                    requests += 1;
                } else {
                    let room = (granted + 1) as f64 <= reserve + ratio * requests as f64 + EPSILON;
                    let got = b.withdraw().is_some();
                    proptest::prop_assert_eq!(got, room);
                    granted += u64::from(got);
                }
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn refunds_count_in_the_window_they_were_taken_from() {
        // Away from epoch 0, where a lost `& !ROTATING` would hide.
        let b = budget(0.0, 1); // 10 retries per TTL, no ratio
        tokio::time::advance(Duration::from_secs(3)).await;
        let taken: Vec<_> = std::iter::from_fn(|| b.withdraw()).take(20).collect();
        assert_eq!(taken.len(), 10);
        b.refund(taken[0]);
        assert_eq!(b.available(), 1);

        // A withdrawal exactly one TTL old: its slot was cleared and is the
        // current one again, so a refund must not free a current retry.
        let old = taken[1];
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.available(), 10, "the old window expired");
        let now: Vec<_> = std::iter::from_fn(|| b.withdraw()).take(20).collect();
        assert_eq!(now.len(), 10);
        b.refund(old);
        assert_eq!(b.available(), 0, "an expired withdrawal refunds nothing");
        // One window short of a TTL, a refund still counts.
        tokio::time::advance(Duration::from_secs(9)).await;
        b.refund(now[0]);
        assert_eq!(b.available(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn withdrawals_live_in_the_current_window() {
        let b = budget(0.0, 1);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(b.withdraw().is_some());
        // Eight windows on, the withdrawal of window 3 still counts...
        tokio::time::advance(Duration::from_secs(8)).await;
        assert_eq!(b.available(), 9);
        // ...and expires with its window, a TTL after it.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(b.available(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_rotation_changes_nothing() {
        let b = budget(1.0, 0);
        b.rotate(13);
        b.deposit();
        b.rotate(12); // a reading taken before the last rotation
        assert_eq!(b.epoch.load(Ordering::Relaxed), 13);
        assert_eq!(b.sums().0, 1);
    }

    /// Deposits read the clock once per `SAMPLE`: after a quiet spell of a
    /// whole TTL, the first `SAMPLE` deposits still land in the stale slot,
    /// which the sampled rotation then clears (the documented strict side).
    #[tokio::test(start_paused = true)]
    async fn deposits_read_the_clock_once_per_sample() {
        let b = budget(1.0, 0);
        tokio::time::advance(Duration::from_secs(11)).await;
        for _ in 0..SAMPLE {
            b.deposit();
        }
        assert_eq!(b.sums().0, 0, "no clock read before the SAMPLE-th deposit");
        b.deposit();
        assert_eq!(b.sums().0, 1);
        assert_eq!(b.epoch.load(Ordering::Relaxed), 11);
    }

    #[test]
    fn invalid_configs() {
        use super::super::InvalidRetry;
        assert!(matches!(
            RetryBudget::ratio(1.5).validate(),
            Err(InvalidRetry::BudgetRatio(_))
        ));
        assert!(RetryBudget::ratio(-0.1).validate().is_err());
        assert!(RetryBudget::ratio(f64::NAN).validate().is_err());
        assert!(matches!(
            RetryBudget::ratio(0.1)
                .ttl(Duration::from_millis(999))
                .validate(),
            Err(InvalidRetry::BudgetTtl(_))
        ));
        assert!(
            RetryBudget::ratio(0.1)
                .ttl(Duration::from_secs(61))
                .validate()
                .is_err()
        );
        assert!(RetryBudget::ratio(0.0).validate().is_ok());
        assert!(RetryBudget::ratio(1.0).validate().is_ok());
        // The TTL's bounds are inclusive.
        let ttl = |s| {
            RetryBudget::ratio(0.1)
                .ttl(Duration::from_secs(s))
                .validate()
        };
        assert!(ttl(1).is_ok() && ttl(60).is_ok());
    }
}

#[cfg(all(test, palisade_loom))]
mod loom_tests {
    use super::*;
    use crate::sync::Arc;

    /// Two threads race for the last retry: never both get it.
    #[test]
    fn loom_budget_never_overdrawn() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let b = Arc::new(BudgetState::new(&RetryBudget::ratio(0.5).min_per_sec(0)));
            b.deposit();
            b.deposit();
            // Exactly one retry in the budget.
            let b2 = b.clone();
            let t = loom::thread::spawn(move || b2.withdraw().is_some());
            let mine = b.withdraw().is_some();
            let theirs = t.join().unwrap();
            assert!(!(mine && theirs), "the budget was overdrawn");
        });
    }

    /// Two threads rotate the ring to the same window; one then deposits.
    /// One rotation at a time: the slower rotator never clears a slot the
    /// other already published and counted in.
    #[test]
    fn loom_budget_rotation_is_exclusive() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let b = Arc::new(BudgetState::new(&RetryBudget::ratio(1.0).min_per_sec(0)));
            b.rotate(5);
            let b2 = b.clone();
            let t = loom::thread::spawn(move || b2.rotate(7));
            b.rotate(7);
            b.deposit();
            t.join().unwrap();
            assert_eq!(b.sums().0, 1, "a deposit made after rotating was cleared");
        });
    }

    /// A deposit racing a rotation from window 5 to 7 lands in window 5 or
    /// 7, never in a slot the rotation does not own (the epoch never reads
    /// as anything else mid-rotation).
    #[test]
    fn loom_budget_deposit_during_rotation_lands_in_a_live_slot() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let b = Arc::new(BudgetState::new(&RetryBudget::ratio(1.0).min_per_sec(0)));
            b.rotate(5);
            let b2 = b.clone();
            let t = loom::thread::spawn(move || b2.rotate(7));
            b.deposit();
            t.join().unwrap();
            for (i, slot) in b.deposits.iter().enumerate() {
                let n = slot.load(Ordering::Relaxed);
                assert!(n == 0 || i == 5 || i == 7, "deposit in slot {i}");
            }
            assert_eq!(b.sums().0, 1);
        });
    }

    /// A deposit racing a withdrawal: the retry is granted only if the
    /// deposit is counted, and the counts stay consistent either way.
    #[test]
    fn loom_budget_deposit_and_refund() {
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(3);
        builder.check(|| {
            let b = Arc::new(BudgetState::new(&RetryBudget::ratio(1.0).min_per_sec(0)));
            let b2 = b.clone();
            let t = loom::thread::spawn(move || b2.deposit());
            let got = b.withdraw();
            t.join().unwrap();
            if let Some(w) = got {
                b.refund(w);
            }
            let (deposits, withdrawals) = b.sums();
            assert_eq!(deposits, 1);
            assert_eq!(withdrawals, 0);
        });
    }
}
