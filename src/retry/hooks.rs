//! The user's hooks into a retry: how to copy a request, which results to
//! retry, and how long a server asks to wait.

use std::time::Duration;

use crate::classify::{Classify, Outcome};

/// Copies a request so it can be sent again.
///
/// [`ByClone`] (the default) uses `Clone`. Any closure
/// `Fn(&Req) -> Option<Req>` works too and may decline with `None` (a
/// streaming body already half sent, say): that request is then sent once,
/// and its failure is returned as is.
pub trait CloneRequest<Req> {
    /// A copy of `request` for a later attempt, or `None` if it cannot be
    /// retried.
    fn clone_request(&self, request: &Req) -> Option<Req>;
}

/// The default [`CloneRequest`]: the request's own `Clone`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByClone;

impl<Req: Clone> CloneRequest<Req> for ByClone {
    #[inline]
    fn clone_request(&self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

impl<Req, F> CloneRequest<Req> for F
where
    F: Fn(&Req) -> Option<Req>,
{
    #[inline]
    fn clone_request(&self, request: &Req) -> Option<Req> {
        self(request)
    }
}

/// A delay a result demands before it is retried: a server's `Retry-After`,
/// a rate limiter's `retry_after`.
///
/// A hint lengthens the backoff's delay, never shortens it (the delay is the
/// larger of the two), unless the hint reader says it is
/// [`exact`](Self::exact) (gRPC's pushback). A hint above the layer's
/// [`max_retry_after`](super::RetryLayerBuilder::max_retry_after) means "do
/// not retry": the result is returned at once.
///
/// [`NoHint`] is the default; any closure
/// `Fn(&Result<T, E>) -> Option<Duration>` is a hint too, and with feature
/// `http` [`HttpRetryAfter`](super::HttpRetryAfter) reads the header.
pub trait RetryAfter<T, E> {
    /// The delay `result` demands, if any.
    fn retry_after(&self, result: &Result<T, E>) -> Option<Duration>;

    /// Whether a hint *replaces* the backoff's delay: the retry waits
    /// exactly the hint, as gRPC's server pushback asks (proposal A6).
    /// `false` (the default) makes the delay the larger of the hint and the
    /// backoff's, as suits HTTP's `Retry-After` ("not before").
    fn exact(&self) -> bool {
        false
    }
}

/// The default [`RetryAfter`]: no hints, the backoff alone decides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoHint;

impl<T, E> RetryAfter<T, E> for NoHint {
    #[inline]
    fn retry_after(&self, _: &Result<T, E>) -> Option<Duration> {
        None
    }
}

impl<T, E, F> RetryAfter<T, E> for F
where
    F: Fn(&Result<T, E>) -> Option<Duration>,
{
    #[inline]
    fn retry_after(&self, result: &Result<T, E>) -> Option<Duration> {
        self(result)
    }
}

/// A retry predicate as a classifier: `true` retries (a failure), `false`
/// returns the result (a success). Made by
/// [`RetryLayerBuilder::retry_if`](super::RetryLayerBuilder::retry_if).
#[derive(Debug, Clone, Copy)]
pub struct RetryIf<F> {
    predicate: F,
}

impl<F> RetryIf<F> {
    /// Retries the results for which `predicate` is true.
    pub const fn new(predicate: F) -> Self {
        Self { predicate }
    }
}

impl<F, T, E> Classify<T, E> for RetryIf<F>
where
    F: Fn(&Result<T, E>) -> bool,
{
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        if (self.predicate)(result) {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }
}
