//! palisade's own refusals, told apart from the upstream's failures.
//!
//! A breaker's [`CircuitOpen`], an adaptive throttle's [`Throttled`], a
//! limiter's [`RateLimited`], [`InsufficientCapacity`] and [`UnknownKey`]
//! (a strict key extractor that identified no client), a concurrency
//! limit's [`Overloaded`] are decided *here*, without calling the
//! upstream: they say nothing about its health. Counted as failures they do
//! harm: one greedy client's 429s open a breaker stacked above the limiter
//! for every client, and a retry above an open breaker hammers it. So every
//! built-in classifier answers [`Outcome::Ignored`](super::Outcome::Ignored)
//! for them, and retry handles them itself (see [`crate::retry`]).
//!
//! The same question is one call for a classifier of your own:
//! [`local_rejection`] for any `dyn Error`, [`local_rejection_of`] for a
//! generic error type. Responses that palisade's error layers (feature
//! `http`) make of a rejection carry a [`LocalRejection`] in their
//! extensions, so a classifier reading responses can ask too.

use std::any::Any;
use std::error::Error;
use std::time::Duration;

use crate::circuit_breaker::{CircuitOpen, Throttled};
use crate::concurrency::Overloaded;
use crate::rate_limit::{InsufficientCapacity, RateLimited, UnknownKey};

/// A refusal made by a palisade layer in this process, not by the upstream.
///
/// Found in an error by [`local_rejection`], and (feature `http`) in the
/// extensions of a response that palisade's error layers made of one.
///
/// ```
/// use palisade::BoxError;
/// use palisade::circuit_breaker::CircuitOpen;
/// use palisade::classify::{LocalRejection, local_rejection};
/// use std::time::Duration;
///
/// let err: BoxError = Box::new(CircuitOpen { retry_after: Duration::from_secs(2) });
/// assert_eq!(
///     local_rejection(&*err),
///     Some(LocalRejection { retry_after: Some(Duration::from_secs(2)) })
/// );
/// let upstream: BoxError = "connection reset".into();
/// assert_eq!(local_rejection(&*upstream), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalRejection {
    /// When the same request could be admitted: `Some(wait)` for "not now"
    /// (an open breaker, a rate limit), `None` for "return it at once":
    /// waiting does not help (a request costing more than a limiter can ever
    /// admit, a client a strict limiter could not identify) or there is no
    /// wait to tell (a concurrency limit's refusal).
    pub retry_after: Option<Duration>,
}

/// The palisade rejection in `error` or its `source()` chain, searched from
/// the outside in, if there is one.
pub fn local_rejection(error: &(dyn Error + 'static)) -> Option<LocalRejection> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(found) = rejection_itself(e) {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// [`local_rejection`] for an error of any type: the crate's `BoxError`
/// (and other boxed errors), a palisade error type itself, or (feature
/// `tonic`) a `tonic::Status` whose source is a palisade rejection. Any
/// other type has none.
///
/// For classifiers generic over the error type, where `E` need not
/// implement `Error`.
///
/// ```
/// use palisade::classify::local_rejection_of;
/// use palisade::rate_limit::RateLimited;
///
/// assert_eq!(local_rejection_of(&"a plain error"), None);
/// assert_eq!(local_rejection_of(&std::io::Error::other("x")), None);
/// ```
pub fn local_rejection_of<E: 'static>(error: &E) -> Option<LocalRejection> {
    let any = error as &dyn Any;
    if let Some(boxed) = any.downcast_ref::<crate::BoxError>() {
        return local_rejection(&**boxed);
    }
    if let Some(boxed) = any.downcast_ref::<Box<dyn Error + Send + 'static>>() {
        return local_rejection(&**boxed);
    }
    if let Some(boxed) = any.downcast_ref::<Box<dyn Error + 'static>>() {
        return local_rejection(&**boxed);
    }
    #[cfg(feature = "tonic")]
    if let Some(status) = any.downcast_ref::<tonic::Status>() {
        return local_rejection(status);
    }
    if let Some(open) = any.downcast_ref::<CircuitOpen>() {
        return Some(not_now(open.retry_after));
    }
    if let Some(throttled) = any.downcast_ref::<Throttled>() {
        return Some(not_now(throttled.retry_after));
    }
    if let Some(limited) = any.downcast_ref::<RateLimited>() {
        return Some(not_now(limited.retry_after));
    }
    if any.is::<InsufficientCapacity>() || any.is::<UnknownKey>() || any.is::<Overloaded>() {
        return Some(NEVER);
    }
    None
}

/// One error, not its sources.
fn rejection_itself(e: &(dyn Error + 'static)) -> Option<LocalRejection> {
    if let Some(open) = e.downcast_ref::<CircuitOpen>() {
        return Some(not_now(open.retry_after));
    }
    if let Some(throttled) = e.downcast_ref::<Throttled>() {
        return Some(not_now(throttled.retry_after));
    }
    if let Some(limited) = e.downcast_ref::<RateLimited>() {
        return Some(not_now(limited.retry_after));
    }
    if e.is::<InsufficientCapacity>() || e.is::<UnknownKey>() || e.is::<Overloaded>() {
        return Some(NEVER);
    }
    None
}

const NEVER: LocalRejection = LocalRejection { retry_after: None };

fn not_now(wait: Duration) -> LocalRejection {
    LocalRejection {
        retry_after: Some(wait),
    }
}

/// Whether an error result is a local rejection: the check every built-in
/// classifier makes before counting an `Err`.
#[inline]
pub(crate) fn is_local<E: 'static>(error: &E) -> bool {
    local_rejection_of(error).is_some()
}

/// Whether a response is palisade's own answer to a rejection.
#[cfg(feature = "http")]
#[inline]
pub(crate) fn is_local_response<B>(response: &http::Response<B>) -> bool {
    response.extensions().get::<LocalRejection>().is_some()
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;
    use crate::BoxError;

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    fn limited(ms: u64) -> RateLimited {
        RateLimited::new(Duration::from_millis(ms), 10, 0)
    }

    #[test]
    fn each_rejection_is_found_with_its_wait() {
        let open: BoxError = Box::new(CircuitOpen {
            retry_after: Duration::from_millis(7),
        });
        assert_eq!(
            local_rejection(&*open),
            Some(not_now(Duration::from_millis(7)))
        );
        let rl: BoxError = Box::new(limited(3));
        assert_eq!(
            local_rejection(&*rl),
            Some(not_now(Duration::from_millis(3)))
        );
        let never: BoxError = Box::new(InsufficientCapacity {
            cost: 5,
            capacity: 2,
        });
        assert_eq!(local_rejection(&*never), Some(NEVER));
        let unknown: BoxError = Box::new(UnknownKey);
        assert_eq!(local_rejection(&*unknown), Some(NEVER));
        assert!(is_local(&UnknownKey));
    }

    #[test]
    fn a_wrapped_rejection_is_found_and_others_are_not() {
        let inner: BoxError = Box::new(limited(9));
        let outer: BoxError = Box::new(Wrapper(inner));
        assert_eq!(
            local_rejection(&*outer),
            Some(not_now(Duration::from_millis(9)))
        );
        let plain: BoxError = Box::new(Wrapper("upstream down".into()));
        assert_eq!(local_rejection(&*plain), None);
    }

    #[test]
    fn generic_errors_of_every_shape() {
        let boxed: BoxError = Box::new(limited(1));
        assert!(is_local(&boxed));
        let unsync: Box<dyn Error + Send> = Box::new(limited(1));
        assert!(is_local(&unsync));
        let plain: Box<dyn Error> = Box::new(InsufficientCapacity {
            cost: 5,
            capacity: 2,
        });
        assert!(is_local(&plain));
        assert!(is_local(&CircuitOpen {
            retry_after: Duration::ZERO
        }));
        assert!(is_local(&limited(2)));
        assert!(is_local(&InsufficientCapacity {
            cost: 5,
            capacity: 2,
        }));
        assert_eq!(
            local_rejection_of(&Overloaded {
                limit: 1,
                in_flight: 1
            }),
            Some(NEVER)
        );
        let overloaded: BoxError = Box::new(Overloaded {
            limit: 1,
            in_flight: 1,
        });
        assert_eq!(local_rejection(&*overloaded), Some(NEVER));
        assert!(!is_local(&"text"));
        assert!(!is_local(&()));
        let other: BoxError = "boom".into();
        assert!(!is_local(&other));
    }

    #[cfg(feature = "tonic")]
    #[test]
    fn a_status_carrying_a_rejection_is_local() {
        let mut status = tonic::Status::unavailable("open");
        assert!(!is_local(&status));
        status.set_source(std::sync::Arc::new(CircuitOpen {
            retry_after: Duration::from_millis(4),
        }));
        assert_eq!(
            local_rejection_of(&status),
            Some(not_now(Duration::from_millis(4)))
        );
    }
}
