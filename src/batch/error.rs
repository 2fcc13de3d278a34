//! What can go wrong: per item ([`ItemError`], [`Elapsed`]) and when
//! configuring the layer ([`BatchConfigError`]).
//!
//! The batch itself never fails (its service error is
//! [`Infallible`](std::convert::Infallible)): every failure belongs to one
//! item and is settled in that item's slot.

use std::error::Error;
use std::fmt;

use crate::BoxError;

/// Why one item of a batch was rejected.
///
/// `E` is the inner service's error, passed through unchanged: an item
/// behind a circuit breaker settles as `ItemError::Service(e)` where `e` is
/// the breaker's own error. The batch adds only two reasons of its own: a
/// limit that fired ([`Elapsed`]) and a failed `poll_ready`, kept apart from
/// a failed call because the request was never sent.
///
/// With a `BoxError` inner error (the tower convention), use
/// [`into_box_error`](Self::into_box_error) to get the inner error back
/// unchanged (so `err.is::<CircuitOpen>()` works) or the [`Elapsed`] reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemError<E> {
    /// The call was made and its future failed with this error.
    Service(E),
    /// The inner service's `poll_ready` failed before this item could be
    /// sent: the request was dropped unsent.
    NotReady(E),
    /// The item did not settle in time; says which limit fired. An item cut
    /// off in flight had its call cancelled (its future dropped); an item the
    /// batch deadline caught before it started was never sent.
    Timeout(Elapsed),
}

impl<E> ItemError<E> {
    /// The inner service's error, if this is one (`Service` or `NotReady`).
    pub fn inner(&self) -> Option<&E> {
        match self {
            Self::Service(e) | Self::NotReady(e) => Some(e),
            Self::Timeout(_) => None,
        }
    }

    /// Takes the inner service's error, if this is one.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Service(e) | Self::NotReady(e) => Some(e),
            Self::Timeout(_) => None,
        }
    }

    /// Which limit fired, if the item timed out.
    pub fn elapsed(&self) -> Option<Elapsed> {
        match self {
            Self::Timeout(limit) => Some(*limit),
            _ => None,
        }
    }

    /// Whether the item timed out (batch deadline or item timeout).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }

    /// The error as a `BoxError`, tower's convention: the inner error
    /// unchanged (so a caller can downcast it), or the [`Elapsed`] reason.
    pub fn into_box_error(self) -> BoxError
    where
        E: Into<BoxError>,
    {
        match self {
            Self::Service(e) | Self::NotReady(e) => e.into(),
            Self::Timeout(limit) => Box::new(limit),
        }
    }
}

impl<E: fmt::Display> fmt::Display for ItemError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The inner error speaks for itself: a batch item that failed is
            // just a failed call.
            Self::Service(e) => e.fmt(f),
            Self::NotReady(e) => write!(f, "service not ready, item not sent: {e}"),
            Self::Timeout(limit) => limit.fmt(f),
        }
    }
}

// Bounded on `Display + Debug` rather than `Error` so that
// `ItemError<BoxError>` (the error of every tower stack) is an error too:
// `Box<dyn Error>` is not itself `Error`. The price is that `source()`
// cannot reach a generic `E`; match on the variant or use `into_inner`.
impl<E: fmt::Display + fmt::Debug> Error for ItemError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Timeout(limit) => Some(limit),
            _ => None,
        }
    }
}

/// Which time limit settled an item as timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Elapsed {
    /// The deadline of the whole batch passed: the item was still in flight
    /// (its call was cancelled) or had not started (it was never sent).
    BatchDeadline,
    /// The item's own call took longer than the per-item timeout and was
    /// cancelled.
    ItemTimeout,
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BatchDeadline => "batch deadline elapsed before the item settled",
            Self::ItemTimeout => "item timeout elapsed",
        })
    }
}

impl Error for Elapsed {}

/// A batch configuration that cannot work, reported by
/// [`BatchBuilder::build`](super::BatchBuilder::build).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchConfigError {
    /// `max_in_flight(0)`: no item could ever start.
    #[error("max_in_flight must be at least 1")]
    ZeroMaxInFlight,
    /// A zero batch deadline: every item would time out unsent.
    #[error("the batch deadline must be longer than zero")]
    ZeroDeadline,
    /// A zero item timeout: every call would be cancelled at once.
    #[error("the item timeout must be longer than zero")]
    ZeroItemTimeout,
}
