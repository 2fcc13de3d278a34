//! What counts as a failure: one trait shared by the circuit breaker and
//! retry, modelled on `tower_http::classify`.
//!
//! A layer hands the classifier a reference to each call's result and gets an
//! [`Outcome`]: a success, a failure, or a result to ignore (it neither helps
//! nor hurts: a client's own bad request, a cancellation, a rejection by a
//! rate limiter further down).
//!
//! **palisade's own rejections are never failures.** `CircuitOpen`,
//! `RateLimited` and `InsufficientCapacity` are decided in this process
//! without calling the upstream, so every built-in classifier answers
//! [`Outcome::Ignored`] for them, found anywhere in an error's `source()`
//! chain, and (feature `http`) for the responses palisade's error layers
//! make of them. A classifier of your own asks the same question with
//! [`local_rejection`] or [`local_rejection_of`]; see [`LocalRejection`].
//!
//! The default, [`ErrorsAsFailures`], counts `Err` as failure (palisade's
//! rejections aside) and `Ok` as success. That is wrong behind axum, where a handler answers
//! `Ok(response)` whose status is 500: use [`FailureWhenOk`] (any response
//! type) or, with feature `http`, `ServerErrorsAsFailures` so that a 5xx
//! response counts as a failure.
//!
//! Any closure `Fn(&Result<T, E>) -> Outcome` is a classifier too.
//!
//! ```
//! use palisade::classify::{Classify, ErrorsAsFailures, FailureWhenOk, Outcome};
//!
//! struct Reply { status: u16 }
//!
//! // `Ok` with a 5xx status is a failure.
//! let server_errors = FailureWhenOk::new(|r: &Reply| r.status >= 500);
//! assert_eq!(server_errors.classify(&Ok::<_, ()>(Reply { status: 503 })), Outcome::Failure);
//! assert_eq!(server_errors.classify(&Ok::<_, ()>(Reply { status: 200 })), Outcome::Success);
//!
//! // A closure: timeouts count, "not found" is the caller's problem.
//! let by_error = |r: &Result<(), &str>| match r {
//!     Ok(()) => Outcome::Success,
//!     Err(e) if *e == "not found" => Outcome::Ignored,
//!     Err(_) => Outcome::Failure,
//! };
//! assert_eq!(by_error.classify(&Err("not found")), Outcome::Ignored);
//! assert_eq!(ErrorsAsFailures.classify(&Err::<(), _>("boom")), Outcome::Failure);
//! ```

mod local;

pub(crate) use local::is_local;
#[cfg(feature = "http")]
pub(crate) use local::is_local_response;
pub use local::{LocalRejection, local_rejection, local_rejection_of};

/// How a layer should count one call's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call did what was asked.
    Success,
    /// The call failed in a way that says something about the callee's
    /// health: it moves a breaker towards open and may be retried.
    Failure,
    /// Neither: not recorded by a breaker, not retried.
    Ignored,
}

/// Decides the [`Outcome`] of a call from its result.
///
/// Implemented by [`ErrorsAsFailures`], [`FailureWhenOk`], and every closure
/// `Fn(&Result<T, E>) -> Outcome` (annotate the closure's parameter type so
/// it is general over the reference's lifetime).
pub trait Classify<T, E> {
    /// The outcome of one call.
    fn classify(&self, result: &Result<T, E>) -> Outcome;
}

impl<F, T, E> Classify<T, E> for F
where
    F: Fn(&Result<T, E>) -> Outcome,
{
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self(result)
    }
}

/// The default classifier: `Ok` is a success, `Err` a failure, except
/// palisade's own rejections ([`local_rejection_of`]), which are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorsAsFailures;

impl<T, E: 'static> Classify<T, E> for ErrorsAsFailures {
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => error_outcome(e),
        }
    }
}

/// An `Err`'s outcome for the built-in classifiers: a failure, unless it is
/// a palisade rejection. Out of line: only the error path pays for it.
#[inline(never)]
pub(crate) fn error_outcome<E: 'static>(error: &E) -> Outcome {
    if is_local(error) {
        Outcome::Ignored
    } else {
        Outcome::Failure
    }
}

/// `Err` is a failure (palisade's own rejections aside), and so is an `Ok`
/// response the predicate picks out: the way to make a breaker trip behind
/// a server that answers `Ok(500)`.
#[derive(Debug, Clone, Copy)]
pub struct FailureWhenOk<F> {
    predicate: F,
}

impl<F> FailureWhenOk<F> {
    /// Counts `Ok(response)` as a failure when `predicate(&response)` is true.
    pub const fn new(predicate: F) -> Self {
        Self { predicate }
    }
}

impl<F, T, E: 'static> Classify<T, E> for FailureWhenOk<F>
where
    F: Fn(&T) -> bool,
{
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        match result {
            Ok(response) if (self.predicate)(response) => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(e) => error_outcome(e),
        }
    }
}

/// Counts `5xx` responses and errors as failures (feature `http`), like
/// `tower_http::classify::ServerErrorsAsFailures`; palisade's own
/// rejections, as errors or as the responses its error layers make of them
/// (a `503` from an open breaker further down), are ignored.
///
/// ```
/// # use palisade::classify::{Classify, Outcome, ServerErrorsAsFailures};
/// let res = http::Response::builder().status(503).body(()).unwrap();
/// assert_eq!(ServerErrorsAsFailures.classify(&Ok::<_, ()>(res)), Outcome::Failure);
/// ```
#[cfg(feature = "http")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerErrorsAsFailures;

#[cfg(feature = "http")]
impl<B, E: 'static> Classify<http::Response<B>, E> for ServerErrorsAsFailures {
    #[inline]
    fn classify(&self, result: &Result<http::Response<B>, E>) -> Outcome {
        match result {
            // An empty `Extensions` answers at once: cheap on every response.
            Ok(response) if is_local_response(response) => Outcome::Ignored,
            Ok(response) if response.status().is_server_error() => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(e) => error_outcome(e),
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn default_counts_errors() {
        assert_eq!(
            ErrorsAsFailures.classify(&Ok::<u8, u8>(1)),
            Outcome::Success
        );
        assert_eq!(
            ErrorsAsFailures.classify(&Err::<u8, u8>(1)),
            Outcome::Failure
        );
    }

    #[test]
    fn ok_can_be_a_failure() {
        let c = FailureWhenOk::new(|status: &u16| *status >= 500);
        assert_eq!(c.classify(&Ok::<u16, ()>(500)), Outcome::Failure);
        assert_eq!(c.classify(&Ok::<u16, ()>(499)), Outcome::Success);
        assert_eq!(c.classify(&Err::<u16, ()>(())), Outcome::Failure);
    }

    #[cfg(feature = "http")]
    #[test]
    fn server_errors() {
        let status = |s: u16| http::Response::builder().status(s).body(()).unwrap();
        let c = ServerErrorsAsFailures;
        assert_eq!(c.classify(&Ok::<_, ()>(status(500))), Outcome::Failure);
        assert_eq!(c.classify(&Ok::<_, ()>(status(404))), Outcome::Success);
        assert_eq!(
            c.classify(&Err::<http::Response<()>, _>(())),
            Outcome::Failure
        );
    }
}
