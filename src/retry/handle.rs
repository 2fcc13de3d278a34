//! Counts a retry layer keeps, readable while it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::budget::BudgetState;
use crate::rng::SharedRng;

/// State shared by every service and clone one layer produces: the random
/// source, the budget, and counts. Only touched when something fails, except
/// for the budget's deposit.
#[derive(Debug)]
pub(crate) struct RetryState {
    pub(crate) rng: SharedRng,
    pub(crate) budget: Option<BudgetState>,
    pub(crate) retries: AtomicU64,
    pub(crate) budget_denied: AtomicU64,
    pub(crate) exhausted: AtomicU64,
    pub(crate) hint_refused: AtomicU64,
    pub(crate) not_clonable: AtomicU64,
    pub(crate) rejections_waited: AtomicU64,
    pub(crate) rejections_returned: AtomicU64,
}

impl RetryState {
    pub(crate) fn new(rng: SharedRng, budget: Option<BudgetState>) -> Self {
        Self {
            rng,
            budget,
            retries: AtomicU64::new(0),
            budget_denied: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
            hint_refused: AtomicU64::new(0),
            not_clonable: AtomicU64::new(0),
            rejections_waited: AtomicU64::new(0),
            rejections_returned: AtomicU64::new(0),
        }
    }
}

/// Reads a retry layer's counts; from
/// [`RetryLayer::handle`](super::RetryLayer::handle) or
/// [`Retry::handle`](super::Retry::handle). Every service the layer produced
/// contributes to the same counts.
///
/// Requests that succeed are not counted here: that would cost an atomic
/// write on every call. With a budget, [`budget_available`](Self::budget_available)
/// reflects them.
#[derive(Debug, Clone)]
pub struct RetryHandle {
    pub(crate) state: Arc<RetryState>,
}

impl RetryHandle {
    /// Retries sent (attempts after the first).
    pub fn retries(&self) -> u64 {
        self.state.retries.load(Relaxed)
    }

    /// Retries refused because the budget was spent.
    pub fn budget_denied(&self) -> u64 {
        self.state.budget_denied.load(Relaxed)
    }

    /// Failures returned because `max_attempts` or `max_elapsed` was reached.
    pub fn exhausted(&self) -> u64 {
        self.state.exhausted.load(Relaxed)
    }

    /// Failures returned because a server hint asked for a delay above the cap.
    pub fn hint_refused(&self) -> u64 {
        self.state.hint_refused.load(Relaxed)
    }

    /// Failures returned because the request could not be cloned.
    pub fn not_clonable(&self) -> u64 {
        self.state.not_clonable.load(Relaxed)
    }

    /// Local rejections from below (an open breaker, a rate limit) whose
    /// `retry_after` fitted the limits: the request was sent again after
    /// exactly that wait, without spending budget. Also counted in
    /// [`retries`](Self::retries) once sent.
    pub fn rejections_waited(&self) -> u64 {
        self.state.rejections_waited.load(Relaxed)
    }

    /// Local rejections from below returned to the caller at once: their
    /// wait did not fit what remained of the limits, or waiting never helps
    /// (`InsufficientCapacity`).
    pub fn rejections_returned(&self) -> u64 {
        self.state.rejections_returned.load(Relaxed)
    }

    /// Retries the budget would allow now, or `None` without a budget.
    pub fn budget_available(&self) -> Option<u64> {
        self.state.budget.as_ref().map(BudgetState::available)
    }
}
