//! palisade's errors as [`Status`]es (the table in the [module docs](super)).

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

use super::RETRY_PUSHBACK_MS;
use crate::circuit_breaker::{CircuitOpen, Throttled};
use crate::concurrency::Overloaded;
use crate::rate_limit::{InsufficientCapacity, RateLimited, UnknownKey};

/// The [`Status`] for an error from a palisade stack; see the
/// [module docs](super) for the mapping.
///
/// ```
/// use palisade::BoxError;
/// use palisade::circuit_breaker::CircuitOpen;
/// use palisade::grpc::status_from_error;
/// use std::time::Duration;
///
/// let err: BoxError = Box::new(CircuitOpen { retry_after: Duration::from_micros(1500) });
/// let status = status_from_error(&*err);
/// assert_eq!(status.code(), tonic::Code::Unavailable);
/// assert_eq!(status.metadata().get("grpc-retry-pushback-ms").unwrap(), "2");
/// ```
pub fn status_from_error(error: &(dyn Error + 'static)) -> Status {
    match find(error) {
        Some(Found::Status(status)) => status.clone(),
        Some(Found::Rejection(rejection)) => rejection.status(None),
        None => Status::unknown("internal error"),
    }
}

/// What the `source()` chain of an error holds first, from the outside in.
pub(crate) enum Found<'a> {
    /// A `Status`, passed through.
    Status(&'a Status),
    /// One of palisade's own rejections.
    Rejection(Rejection<'a>),
}

/// One of palisade's rejections, found in an error chain.
#[derive(Clone, Copy)]
pub(crate) enum Rejection<'a> {
    Open(&'a CircuitOpen),
    Limited(&'a RateLimited),
    Capacity(&'a InsufficientCapacity),
    Overloaded(&'a Overloaded),
    UnknownKey(&'a UnknownKey),
    Throttled(&'a Throttled),
}

/// The first `Status` or palisade rejection in `error`'s chain.
pub(crate) fn find<'a>(error: &'a (dyn Error + 'static)) -> Option<Found<'a>> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(status) = e.downcast_ref::<Status>() {
            return Some(Found::Status(status));
        }
        if let Some(open) = e.downcast_ref::<CircuitOpen>() {
            return Some(Found::Rejection(Rejection::Open(open)));
        }
        if let Some(limited) = e.downcast_ref::<RateLimited>() {
            return Some(Found::Rejection(Rejection::Limited(limited)));
        }
        if let Some(capacity) = e.downcast_ref::<InsufficientCapacity>() {
            return Some(Found::Rejection(Rejection::Capacity(capacity)));
        }
        if let Some(throttled) = e.downcast_ref::<Throttled>() {
            return Some(Found::Rejection(Rejection::Throttled(throttled)));
        }
        if let Some(overloaded) = e.downcast_ref::<Overloaded>() {
            return Some(Found::Rejection(Rejection::Overloaded(overloaded)));
        }
        if let Some(unknown) = e.downcast_ref::<UnknownKey>() {
            return Some(Found::Rejection(Rejection::UnknownKey(unknown)));
        }
        next = e.source();
    }
    None
}

impl Rejection<'_> {
    /// The rejection's status, whose `source()` is `source` or else a copy
    /// of the rejection itself, so `classify::local_rejection` finds it in
    /// the status as in the error it came from.
    pub(crate) fn status(self, source: Option<Arc<dyn Error + Send + Sync>>) -> Status {
        let (mut status, own): (Status, Arc<dyn Error + Send + Sync>) = match self {
            Rejection::Open(open) => (
                limited(
                    Code::Unavailable,
                    "service unavailable: circuit open",
                    open.retry_after,
                ),
                Arc::new(*open),
            ),
            Rejection::Limited(limited_by) => (
                limited(
                    Code::ResourceExhausted,
                    "too many requests",
                    limited_by.retry_after,
                ),
                Arc::new(limited_by.clone()),
            ),
            Rejection::Capacity(capacity) => {
                let mut status =
                    Status::failed_precondition("request exceeds the rate limit's capacity");
                status
                    .metadata_mut()
                    .insert(RETRY_PUSHBACK_MS, MetadataValue::from(-1_i64));
                (status, Arc::new(capacity.clone()))
            }
            Rejection::Throttled(throttled) => (
                limited(
                    Code::Unavailable,
                    "service unavailable: throttled",
                    throttled.retry_after,
                ),
                Arc::new(*throttled),
            ),
            // No wait is known for a place to free: no pushback, so the
            // client's own backoff decides.
            Rejection::Overloaded(overloaded) => (
                Status::unavailable("service overloaded"),
                Arc::new(*overloaded),
            ),
            // The server cannot tell who the client is: its deployment is at
            // fault, and the client can change nothing.
            Rejection::UnknownKey(unknown) => (
                Status::internal("client address unknown"),
                Arc::new(unknown.clone()),
            ),
        };
        status.set_source(source.unwrap_or(own));
        status
    }
}

/// A status for "not now": the wait in the message and as pushback.
fn limited(code: Code, what: &str, wait: Duration) -> Status {
    let ms = pushback_ms(wait);
    let mut status = Status::new(code, format!("{what}; retry after {ms}ms"));
    status
        .metadata_mut()
        .insert(RETRY_PUSHBACK_MS, MetadataValue::from(ms));
    status
}

/// A wait in whole milliseconds, rounded up, at least 1 (saturating).
pub fn pushback_ms(wait: Duration) -> u64 {
    let whole = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    let ms = if wait.subsec_nanos() % 1_000_000 > 0 {
        whole.saturating_add(1)
    } else {
        whole
    };
    ms.max(1)
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn pushback_rounds_up_and_is_never_zero() {
        assert_eq!(pushback_ms(Duration::ZERO), 1);
        assert_eq!(pushback_ms(Duration::from_nanos(1)), 1);
        assert_eq!(pushback_ms(Duration::from_micros(1001)), 2);
        assert_eq!(pushback_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(pushback_ms(Duration::from_nanos(1_500_000_001)), 1501);
        assert_eq!(pushback_ms(Duration::MAX), u64::MAX);
    }

    #[test]
    fn overload_and_unknown_clients_have_their_codes_and_no_pushback() {
        let overloaded: crate::BoxError = Box::new(Overloaded {
            limit: 4,
            in_flight: 4,
        });
        let status = status_from_error(&*overloaded);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.metadata().get(RETRY_PUSHBACK_MS).is_none());
        assert!(crate::classify::local_rejection_of(&status).is_some());

        let throttled: crate::BoxError = Box::new(Throttled {
            retry_after: Duration::from_millis(2_500),
            probability: 0.3,
        });
        let status = status_from_error(&*throttled);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.metadata().get(RETRY_PUSHBACK_MS).unwrap(), "2500");

        let unknown: crate::BoxError = Box::new(UnknownKey);
        let status = status_from_error(&*unknown);
        assert_eq!(status.code(), Code::Internal);
        assert!(status.metadata().get(RETRY_PUSHBACK_MS).is_none());
    }
}
