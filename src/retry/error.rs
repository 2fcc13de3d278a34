//! Why a retry layer could not be built. Retry adds no runtime error of its
//! own: the response future yields the inner service's result, the last
//! attempt's when it gives up.

use std::time::Duration;

use crate::backoff::InvalidBackoff;

/// A setting rejected by [`RetryLayerBuilder::build`](super::RetryLayerBuilder::build).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidRetry {
    /// `max_attempts(0)`: a request must be sent at least once.
    #[error("max_attempts must be at least 1")]
    ZeroAttempts,
    /// `max_elapsed(Duration::ZERO)`: no time to even start. Use
    /// `max_attempts(1)` to disable retries.
    #[error("max_elapsed must be above zero")]
    ZeroElapsed,
    /// The backoff's settings are invalid.
    #[error(transparent)]
    Backoff(#[from] InvalidBackoff),
    /// The budget's ratio was outside `0.0..=1.0` or NaN.
    #[error("retry budget ratio must be within 0..=1, got {0}")]
    BudgetRatio(f64),
    /// The budget's TTL was outside 1 s ..= 60 s.
    #[error("retry budget ttl must be between 1 s and 60 s, got {0:?}")]
    BudgetTtl(Duration),
}
