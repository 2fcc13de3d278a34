//! The breaker's errors: the rejection a caller sees, and the reasons a
//! configuration is refused.

use std::fmt;
use std::time::Duration;

/// The breaker rejected a call without calling the inner service.
///
/// The service's error type is [`BoxError`](crate::BoxError); downcast it:
///
/// ```
/// use palisade::BoxError;
/// use palisade::circuit_breaker::CircuitOpen;
/// use std::time::Duration;
///
/// let err: BoxError = Box::new(CircuitOpen { retry_after: Duration::from_secs(3) });
/// if let Some(open) = err.downcast_ref::<CircuitOpen>() {
///     assert_eq!(open.retry_after, Duration::from_secs(3));
/// }
/// assert_eq!(err.to_string(), "circuit breaker is open; next probe in 3s");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitOpen {
    /// How long until the breaker admits a probe:
    /// - open: the time left of the open period (exact, to the nanosecond);
    /// - half-open with every probe slot taken: zero, since the next
    ///   decision comes when a probe ends (or the time left before the
    ///   half-open timeout, if one is set);
    /// - forced open: the configured (base) open duration, a hint only:
    ///   the breaker stays open until its handle resets it.
    pub retry_after: Duration,
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit breaker is open; next probe in {:?}",
            self.retry_after
        )
    }
}

impl std::error::Error for CircuitOpen {}

/// Why [`build()`](super::CircuitBreakerBuilder::build) refused a
/// configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A failure rate outside `(0, 1]`, or NaN.
    #[error("failure rate must be in (0, 1], got {0}")]
    FailureRate(f64),
    /// A slow-call rate outside `(0, 1]`, or NaN.
    #[error("slow-call rate must be in (0, 1], got {0}")]
    SlowCallRate(f64),
    /// A slow-call duration threshold of zero: every call would be slow.
    #[error("slow-call duration threshold must be above zero")]
    ZeroSlowCallThreshold,
    /// `consecutive_failures(0)`.
    #[error("consecutive failure threshold must be at least 1")]
    ZeroConsecutiveFailures,
    /// A count window of size zero, or a time window of zero span.
    #[error("window must not be empty")]
    ZeroWindow,
    /// A count window above the supported maximum.
    #[error("count window of {size} is above the maximum of {max}")]
    WindowTooLarge {
        /// The configured size.
        size: u32,
        /// The largest size allowed.
        max: u32,
    },
    /// A time window with zero buckets, or more than the maximum.
    #[error("time window buckets must be in 1..={max}, got {buckets}")]
    Buckets {
        /// The configured number of buckets.
        buckets: u32,
        /// The largest number allowed.
        max: u32,
    },
    /// A time window span shorter than one nanosecond per bucket.
    #[error("time window span {span:?} is too short for {buckets} buckets")]
    BucketTooNarrow {
        /// The configured span.
        span: Duration,
        /// The configured number of buckets.
        buckets: u32,
    },
    /// `min_calls(0)`.
    #[error("minimum number of calls must be at least 1")]
    ZeroMinCalls,
    /// A minimum number of calls the count window can never hold.
    #[error("minimum number of calls ({min_calls}) is above the count window size ({window})")]
    MinCallsAboveWindow {
        /// The configured minimum.
        min_calls: u64,
        /// The count window's size.
        window: u32,
    },
    /// `half_open_probes(0)`, or more than the state word can count.
    #[error("half-open probes must be in 1..={max}, got {probes}")]
    Probes {
        /// The configured number of probes.
        probes: u32,
        /// The largest number allowed.
        max: u32,
    },
    /// An open duration (or backoff base) of zero.
    #[error("open duration must be above zero")]
    ZeroOpenDuration,
    /// A half-open timeout of zero.
    #[error("half-open timeout must be above zero")]
    ZeroHalfOpenTimeout,
    /// A keyed breaker bounded at zero keys.
    #[error("max_keys must be at least 1")]
    ZeroMaxKeys,
    /// A keyed breaker whose idle breakers would be evicted at once.
    #[error("idle_after must be above zero")]
    ZeroIdleAfter,
    /// An adaptive throttle's `k` below 1 (it would throttle a backend
    /// that accepts everything), infinite, or NaN.
    #[error("adaptive throttling k must be a finite number >= 1, got {0}")]
    ThrottleK(f64),
    /// An adaptive throttle given a count window: it counts over time.
    #[error("adaptive throttling needs a time window, not a count window")]
    ThrottleNeedsTimeWindow,
    /// A setting that has no meaning for the chosen policy (for example a
    /// window for a consecutive-failures breaker).
    #[error("{setting} does not apply to a consecutive-failures breaker")]
    NotForConsecutive {
        /// The setting that was given.
        setting: &'static str,
    },
}
