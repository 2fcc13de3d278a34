//! Without feature `metrics`: the same handles as `metrics.rs`, empty, so
//! the layers call them unconditionally and the compiler removes the calls.

use std::borrow::Cow;

use crate::circuit_breaker::State;
use crate::classify::Outcome;

pub(crate) type Name = Cow<'static, str>;

#[derive(Debug)]
pub(crate) struct BreakerMetrics;
impl BreakerMetrics {
    pub(crate) fn new(_: &Name, _: bool) -> Self {
        Self
    }
    pub(crate) fn noop() -> Self {
        Self
    }
    #[inline(always)]
    pub(crate) fn outcome(&self, _: Outcome) {}
    #[inline(always)]
    pub(crate) fn rejected(&self) {}
    #[inline(always)]
    pub(crate) fn transition(&self, _: State) {}
}

#[derive(Debug)]
pub(crate) struct KeysGauge;
impl KeysGauge {
    pub(crate) fn noop() -> Self {
        Self
    }
    pub(crate) fn breaker(_: &Name) -> Self {
        Self
    }
    pub(crate) fn rate_limit(_: &Name) -> Self {
        Self
    }
    #[inline(always)]
    pub(crate) fn added(&self) {}
    #[inline(always)]
    pub(crate) fn removed(&self, _: usize) {}
}

#[derive(Debug)]
pub(crate) struct RetryMetrics;
impl RetryMetrics {
    pub(crate) fn new(_: &Name, _: bool) -> Self {
        Self
    }
    #[inline(always)]
    pub(crate) fn attempt(&self) {}
    #[inline(always)]
    pub(crate) fn retry_sent(&self) {}
    #[inline(always)]
    pub(crate) fn scheduled(&self, _: u64) {}
    #[inline(always)]
    pub(crate) fn budget_refused(&self, _: impl FnOnce() -> u64) {}
    #[inline(always)]
    pub(crate) fn budget_balance(&self, _: impl FnOnce() -> u64) {}
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum RefusedReason {
    Limited,
    Capacity,
    UnknownKey,
}

#[derive(Debug)]
pub(crate) struct RateLimitMetrics;
impl RateLimitMetrics {
    pub(crate) fn new(_: &Name, _: bool) -> Self {
        Self
    }
    pub(crate) fn noop() -> Self {
        Self
    }
    #[inline(always)]
    pub(crate) fn admitted(&self) {}
    #[inline(always)]
    pub(crate) fn refused(&self, _: RefusedReason) {}
    #[inline(always)]
    pub(crate) fn waited(&self, _: u64) {}
}

#[derive(Debug)]
pub(crate) struct BatchMetrics;
impl BatchMetrics {
    pub(crate) fn new(_: &Name, _: bool) -> Self {
        Self
    }
    #[inline(always)]
    pub(crate) fn settled(&self, _: usize, _: usize, _: Option<f64>) {}
    /// No metrics: a batch never reads the clock for them.
    #[inline(always)]
    pub(crate) fn timed(&self) -> bool {
        false
    }
}

#[derive(Debug)]
pub(crate) struct ConcurrencyMetrics;
impl ConcurrencyMetrics {
    pub(crate) fn new(_: &Name, _: u32) -> Self {
        Self
    }
    #[cfg(all(test, palisade_loom))]
    pub(crate) fn noop() -> Self {
        Self
    }
    #[inline(always)]
    pub(crate) fn limit(&self, _: u32) {}
    #[inline(always)]
    pub(crate) fn rejected(&self) {}
}

#[derive(Debug)]
pub(crate) struct ThrottleMetrics;
impl ThrottleMetrics {
    pub(crate) fn new(_: &Name) -> Self {
        Self
    }
    #[inline(always)]
    pub(crate) fn refused(&self) {}
}
