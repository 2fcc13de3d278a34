//! The limiter's errors: the refusal a caller sees, and the reasons a
//! configuration is refused.

use std::fmt;
use std::time::Duration;

/// The concurrency limiter refused a call without calling the inner
/// service: `in_flight` calls were already running against a limit of
/// `limit`.
///
/// A local rejection ([`crate::classify::local_rejection`]): breakers ignore
/// it, and retry returns it at once without spending budget (its
/// `LocalRejection::retry_after` is `None`; see the
/// [module docs](super#overloaded-and-retry) for why).
///
/// ```
/// use palisade::BoxError;
/// use palisade::concurrency::Overloaded;
///
/// let err: BoxError = Box::new(Overloaded { limit: 12, in_flight: 12 });
/// let overloaded = err.downcast_ref::<Overloaded>().unwrap();
/// assert_eq!(overloaded.limit, 12);
/// assert_eq!(err.to_string(), "overloaded: 12 calls in flight, limit 12");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded {
    /// The concurrency limit when the call was refused.
    pub limit: u32,
    /// Calls in flight then (at least `limit`; more after the limit fell).
    pub in_flight: u32,
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "overloaded: {} calls in flight, limit {}",
            self.in_flight, self.limit
        )
    }
}

impl std::error::Error for Overloaded {}

/// Why [`build()`](super::ConcurrencyLimitBuilder::build) refused a
/// configuration.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A minimum limit of zero: nothing would ever be admitted.
    #[error("minimum limit must be at least 1")]
    ZeroMinLimit,
    /// `min_limit > max_limit`, or a limit above [`MAX_LIMIT`](super::MAX_LIMIT).
    #[error("limits must satisfy 1 <= min ({min}) <= max ({max}) <= {cap}")]
    Limits {
        /// The configured minimum.
        min: u32,
        /// The configured maximum.
        max: u32,
        /// The largest limit supported.
        cap: u32,
    },
    /// An initial limit outside `min..=max`.
    #[error("initial limit {initial} is outside {min}..={max}")]
    InitialLimit {
        /// The configured initial limit.
        initial: u32,
        /// The configured minimum.
        min: u32,
        /// The configured maximum.
        max: u32,
    },
    /// Gradient2's latency tolerance below 1 or not finite.
    #[error("tolerance must be a finite number >= 1, got {0}")]
    Tolerance(f64),
    /// A smoothing factor outside `(0, 1]`, or NaN.
    #[error("smoothing must be in (0, 1], got {0}")]
    Smoothing(f64),
    /// AIMD's backoff ratio outside `[0.5, 1)`, or NaN.
    #[error("backoff ratio must be in [0.5, 1), got {0}")]
    BackoffRatio(f64),
    /// AIMD's latency threshold of zero: every call would be too slow.
    #[error("latency threshold must be above zero")]
    ZeroLatencyThreshold,
    /// A sample window whose minimum is above its maximum, or whose
    /// maximum is zero.
    #[error("sample window must satisfy 0 < min ({min:?}) <= max ({max:?})")]
    SampleWindow {
        /// The configured minimum.
        min: Duration,
        /// The configured maximum.
        max: Duration,
    },
    /// `min_samples(0)`.
    #[error("a sample window needs at least 1 sample")]
    ZeroMinSamples,
    /// A wait bound of zero (leave `max_wait` unset to refuse at once).
    #[error("max_wait must be above zero")]
    ZeroMaxWait,
    /// A setting that has no meaning for the chosen algorithm.
    #[error("{setting} does not apply to the {algorithm} algorithm")]
    NotForAlgorithm {
        /// The setting that was given.
        setting: &'static str,
        /// The algorithm chosen.
        algorithm: &'static str,
    },
}
