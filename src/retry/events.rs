//! What a retry layer tells the outside: event hooks and metrics, fired
//! when a retry is scheduled or refused by the budget (never on a call
//! that succeeds, apart from the metrics' attempt counter).
//!
//! ```
//! use palisade::RetryLayer;
//! use std::time::Duration;
//!
//! let layer = RetryLayer::exponential(Duration::from_millis(10))
//!     .name("inventory")
//!     .on_retry(|e| eprintln!("{}: attempt {} in {:?}", e.name, e.attempt, e.delay))
//!     .on_budget_refused(|e| eprintln!("{}: budget empty after attempt {}", e.name, e.attempt))
//!     .build()?;
//! # let _ = layer;
//! # Ok::<(), palisade::retry::InvalidRetry>(())
//! ```
//!
//! A hook runs on the thread polling the response future, when the
//! decision is made (before the delay), with no lock held. A panicking hook
//! is caught (reported once through `tracing`); the retry goes on as
//! decided.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use crate::hook::Hook;
use crate::metrics::RetryMetrics;

/// A retry was scheduled; see [`on_retry`](super::RetryLayerBuilder::on_retry).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryScheduled {
    /// The layer's `.name(..)` (empty when unnamed).
    pub name: Arc<str>,
    /// The attempt that will be sent after the delay (2 for the first retry).
    pub attempt: u32,
    /// The delay before it.
    pub delay: Duration,
    /// Whether the retry waits out a local rejection's `retry_after` (a
    /// breaker or limiter below) rather than a backoff step.
    pub after_rejection: bool,
}

/// A retry was not sent because the retry budget was empty; see
/// [`on_budget_refused`](super::RetryLayerBuilder::on_budget_refused).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BudgetRefused {
    /// The layer's `.name(..)` (empty when unnamed).
    pub name: Arc<str>,
    /// The attempt whose failure is returned as is.
    pub attempt: u32,
}

/// The hooks a builder collects.
#[derive(Debug, Clone, Default)]
pub(crate) struct RetryHooks {
    pub(crate) retry: Hook<RetryScheduled>,
    pub(crate) budget_refused: Hook<BudgetRefused>,
}

/// A retry layer's name, hooks and metric handles, made by `build()`.
#[derive(Debug)]
pub(crate) struct Observe {
    name: Arc<str>,
    hooks: RetryHooks,
    pub(crate) metrics: RetryMetrics,
}

impl Observe {
    pub(crate) fn new(name: Option<Cow<'static, str>>, hooks: RetryHooks, budget: bool) -> Self {
        let name = name.unwrap_or_default();
        Self {
            metrics: RetryMetrics::new(&name, budget),
            name: Arc::from(&*name),
            hooks,
        }
    }

    /// A retry decided: `attempt` is the one to be sent after `delay`.
    pub(crate) fn scheduled(&self, attempt: u32, delay: u64, after_rejection: bool) {
        self.metrics.scheduled(delay);
        self.hooks.retry.fire(|| RetryScheduled {
            name: self.name.clone(),
            attempt,
            delay: Duration::from_nanos(delay),
            after_rejection,
        });
    }

    pub(crate) fn budget_refused(&self, attempt: u32, balance: impl FnOnce() -> u64) {
        self.metrics.budget_refused(balance);
        self.hooks.budget_refused.fire(|| BudgetRefused {
            name: self.name.clone(),
            attempt,
        });
    }
}
