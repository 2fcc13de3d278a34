//! [`Throttled`]: the adaptive throttle's local rejection.

use std::fmt;
use std::time::Duration;

/// The adaptive throttle refused a request without sending it: the
/// backend has recently accepted too few of this client's requests.
///
/// A local rejection, like [`CircuitOpen`](crate::circuit_breaker::CircuitOpen):
/// every built-in classifier ignores it, and
/// [`local_rejection`](crate::classify::local_rejection) finds it. Tell
/// the two apart by type:
///
/// ```
/// use palisade::BoxError;
/// use palisade::circuit_breaker::{CircuitOpen, Throttled};
/// use std::time::Duration;
///
/// let err: BoxError = Box::new(Throttled {
///     retry_after: Duration::from_secs(5),
///     probability: 0.25,
/// });
/// assert!(err.is::<Throttled>() && !err.is::<CircuitOpen>());
/// assert_eq!(
///     err.to_string(),
///     "request throttled locally (adaptive throttling, rejection probability 0.25)"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throttled {
    /// A hint: the window's step (its span divided by its buckets), the
    /// time after which the window has moved on by one bucket. The next
    /// request may go at once, with a similar chance.
    pub retry_after: Duration,
    /// The rejection probability this request was drawn against.
    pub probability: f64,
}

impl fmt::Display for Throttled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request throttled locally (adaptive throttling, rejection probability {:.2})",
            self.probability
        )
    }
}

impl std::error::Error for Throttled {}
