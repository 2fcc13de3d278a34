//! The errors a rate limiter adds, and the errors of building one.
//!
//! A rejected request fails with a [`BoxError`](crate::BoxError) wrapping
//! either [`RateLimited`] ("not now": try again after `retry_after`) or
//! [`InsufficientCapacity`] ("never": the request costs more than the limiter
//! can ever admit at once). Downcast to tell them apart:
//!
//! ```
//! use palisade::rate_limit::{InsufficientCapacity, RateLimited};
//!
//! fn status(err: &palisade::BoxError) -> u16 {
//!     if err.is::<RateLimited>() {
//!         429
//!     } else if err.is::<InsufficientCapacity>() {
//!         413
//!     } else {
//!         500
//!     }
//! }
//! # let _ = status;
//! ```

use std::fmt;
use std::time::Duration;

use super::headers::Policy;

/// "Not now": the limiter refused this request; the same request would be
/// admitted after `retry_after` if nothing else is admitted meanwhile.
///
/// `retry_after` is exact on the limiter's clock: a retry even one nanosecond
/// earlier is refused, a retry at it is admitted (when no other request took
/// the capacity first). It is never zero. Round it *up* for an HTTP
/// `Retry-After` header (seconds), or clients retry too early.
///
/// One exception: a keyed limiter refusing a *new* key because its key
/// bound is full of active keys reports the earliest time a held key can go
/// idle and make room (a lower bound), with `remaining: 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimited {
    /// How long until this request would be admitted. Never zero.
    pub retry_after: Duration,
    /// The limit: the burst of a token bucket, the per-window limit of a
    /// sliding window.
    pub limit: u64,
    /// Capacity left at the moment of refusal, in cost units (lower than the
    /// request's cost; often zero).
    pub remaining: u64,
    /// Which limit refused, counted from 0 in the order the limits were
    /// given (always 0 for a layer with one limit; see
    /// [`RateLimitBuilder::and`](super::RateLimitBuilder::and)). With
    /// several limits refusing, the one that admits last (on a tie, the
    /// first of them in the order they were added): `retry_after`, `limit`
    /// and `remaining` are its.
    pub limit_index: usize,
    /// The policy to report in `RateLimit` header fields, when the limiter
    /// was built with `.headers(..)`.
    pub(crate) policy: Option<&'static Policy>,
}

impl RateLimited {
    /// A refusal without header policy (the Redis store's and tests').
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn new(retry_after: Duration, limit: u64, remaining: u64) -> Self {
        Self {
            retry_after,
            limit,
            remaining,
            limit_index: 0,
            policy: None,
        }
    }

    /// The `RateLimit-Policy` and `RateLimit` fields for this refusal, when
    /// the limiter was built with `.headers(..)`: `r` is `remaining`, `t` is
    /// `retry_after` rounded up (so never earlier than `Retry-After`).
    #[cfg(feature = "http")]
    pub(crate) fn insert_headers(&self, headers: &mut http::HeaderMap) {
        if let Some(policy) = &self.policy {
            let quota = super::headers::Quota {
                limit: self.limit,
                remaining: self.remaining,
                reset: self.retry_after,
            };
            super::headers::insert(headers, policy, &quota);
        }
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate limited: retry after {:?} (limit {}, remaining {})",
            self.retry_after, self.limit, self.remaining
        )
    }
}

impl std::error::Error for RateLimited {}

/// "Never": the request's cost is above what the limiter can admit at once
/// (a token bucket's burst, a window's limit). Waiting does not help.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InsufficientCapacity {
    /// The request's cost.
    pub cost: u64,
    /// The most the limiter admits at once.
    pub capacity: u64,
}

impl fmt::Display for InsufficientCapacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request cost {} exceeds the limiter's capacity {}",
            self.cost, self.capacity
        )
    }
}

impl std::error::Error for InsufficientCapacity {}

/// "Who are you?": a strict key extractor could not identify the request's
/// client (for `http::ClientIp` with
/// [`refuse_unknown`](crate::http::ClientIp::refuse_unknown): no peer
/// address, no trustworthy header entry), so a keyed limiter refused it
/// rather than let it share one limit with every other such request.
///
/// Nearly always a deployment mistake, not the client's: the server does
/// not record the peer address where the extractor looks, or a proxy does
/// not append the header. The HTTP error layer answers it with `500` and no
/// `Retry-After` (waiting does not help).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnknownKey;

impl fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("refused: the rate limiter's key extractor could not identify the client")
    }
}

impl std::error::Error for UnknownKey {}

/// Why a rate limiter could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A token bucket with a rate of zero would admit nothing.
    #[error("rate must be at least 1")]
    ZeroRate,
    /// The period of a token bucket must be positive.
    #[error("period must be positive")]
    ZeroPeriod,
    /// A token bucket with a burst of zero would admit nothing.
    #[error("burst must be at least 1")]
    ZeroBurst,
    /// A window limit of zero would admit nothing.
    #[error("window limit must be at least 1")]
    ZeroLimit,
    /// The window length must be positive.
    #[error("window must be positive")]
    ZeroWindow,
    /// A keyed limiter must be allowed to hold at least one key.
    #[error("max_keys must be at least 1")]
    ZeroMaxKeys,
    /// More than one request per nanosecond cannot be represented.
    #[error("rate above one request per nanosecond")]
    RateTooHigh,
    /// A duration or product of settings overflows 584 years of nanoseconds.
    #[error("settings overflow the clock's range")]
    Overflow,
    /// The limit is above what this algorithm stores (`max` is the largest
    /// accepted).
    #[error("limit above {max} for this algorithm")]
    LimitTooLarge {
        /// The largest accepted limit.
        max: u64,
    },
    /// `burst` applies to the token bucket only.
    #[error("burst applies to the token bucket only")]
    BurstNotApplicable,
    /// `exact` applies to the sliding window only.
    #[error("exact applies to the sliding window only")]
    ExactNotApplicable,
    /// `max_keys` without `keyed`.
    #[error("max_keys needs a keyed limiter")]
    MaxKeysWithoutKey,
    /// Wait mode waits in `poll_ready`, which sees no request: it needs an
    /// unkeyed limiter without a per-request cost.
    #[error("wait mode needs an unkeyed limiter without a cost function")]
    WaitNeedsUnkeyed,
    /// The exact sliding log counts requests; it takes no cost function.
    #[error("the sliding log counts requests and takes no cost function")]
    CostWithLog,
    /// `RateLimit` header fields are computed for the token bucket only.
    #[error("RateLimit headers need a token bucket")]
    HeadersNeedTokenBucket,
    /// A `RateLimit` policy name must be printable ASCII (a structured-field
    /// String).
    #[error("a RateLimit policy name must be printable ASCII")]
    InvalidPolicyName,
    /// A Redis store runs the token bucket and the sliding-window counter;
    /// the sliding log is in-memory only.
    #[error("the sliding log is not available with a Redis store")]
    LogWithStore,
    /// A Redis store decides in `call`: wait mode is in-memory only.
    #[error("wait mode is not available with a Redis store")]
    WaitWithStore,
    /// A shared limiter needs a non-empty key prefix of its own.
    #[error("a Redis store needs a non-empty key prefix")]
    EmptyPrefix,
    /// A Redis store runs one limit per layer.
    #[error("several limits are not available with a Redis store")]
    SeveralLimitsWithStore,
    /// `and` takes a limit only (an algorithm, its burst or `exact`): key,
    /// cost, wait mode, key bound, headers, clock, name and hooks are set
    /// once, on the first.
    #[error(
        "and() takes a limit only; set keyed, cost, wait, max_keys, headers, clock, name and hooks on the first"
    )]
    AndTakesLimitOnly,
    /// `RateLimit` header fields describe one limit: not available with
    /// several.
    #[error("RateLimit headers describe one limit; not available with several")]
    HeadersWithSeveralLimits,
    /// A decision's timeout must be positive.
    #[error("the store timeout must be positive")]
    ZeroTimeout,
    /// A fallback setting of zero (instances, or a fail-closed
    /// `retry_after`) cannot be honoured.
    #[error("fallback settings must be positive")]
    ZeroFallback,
    /// The store's circuit breaker settings do not build (see the
    /// breaker's own `ConfigError`).
    #[error("invalid circuit breaker settings for the store")]
    InvalidBreaker,
    /// A cached mode's share must be between 1 and the limit's capacity
    /// (burst or window limit), and its lease time positive.
    #[error("cached share must be 1..=capacity with a positive lease time")]
    InvalidShare,
}
