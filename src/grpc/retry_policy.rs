//! gRPC's retry policy (proposal A6) for palisade's [`RetryLayer`]:
//! [`GrpcRetryPolicy`].
//!
//! [`RetryLayer`]: crate::RetryLayer

use std::any::Any;
use std::error::Error;
use std::time::Duration;

use http::Response;
use tonic::{Code, ConnectError, Status, TimeoutExpired};

use super::{Found, GrpcCodes, RETRY_PUSHBACK_MS, find, response_code};
use crate::BoxError;
use crate::classify::{Classify, Outcome, is_local_response, local_rejection_of};
use crate::retry::{RetryAfter, RetryLayerBuilder};

/// Which gRPC results a client retries, and after how long, after gRPC's
/// retry design (proposal A6): both the classifier and the server-hint
/// reader of a [`RetryLayer`](crate::RetryLayer).
///
/// - A result whose code is **retryable** (default: `UNAVAILABLE` only, as
///   in A6's examples: the server did not process the call) is retried,
///   after the backoff, or after the server's pushback when it sends one.
/// - A result whose code is **retryable with pushback** (default:
///   `RESOURCE_EXHAUSTED`) is retried only when the server sends a pushback,
///   after that wait. This goes beyond strict A6, where pushback applies
///   only to retryable codes: `RESOURCE_EXHAUSTED` with a pushback is what a
///   rate limiter (palisade's [`GrpcErrorLayer`](super::GrpcErrorLayer)
///   included) answers, and "come back in 200 ms" is the one case where a
///   retry of it is sure to be welcome; without a pushback it may mean a
///   quota that waiting does not refill, so it is not retried.
///   [`strict_a6`](Self::strict_a6) turns this off.
/// - A pushback that is negative or malformed means "do not retry" (A6),
///   whatever the code.
/// - `OK` and every other code are returned as they are.
///
/// Where the code comes from:
/// - `Ok(response)`: the `grpc-status` and `grpc-retry-pushback-ms`
///   *headers*: a trailers-only answer, which is how servers send errors
///   decided before the handler runs (tonic's for a handler's `Err(Status)`
///   too). A status in the trailers comes after the response's head, which
///   is all a retry layer sees: it cannot be retried (nor could the call:
///   the response is already streaming to the caller).
/// - `Err(error)` with the error a `BoxError` (the error of palisade's
///   breaker or limiter around the channel) or a [`Status`]: a `Status` in
///   its `source()` chain gives the code and the pushback metadata; a
///   tonic connect error is `UNAVAILABLE` and a tonic timeout `CANCELLED`,
///   as tonic's generated clients read them; anything else `UNKNOWN`.
///   Another error type (a bare `Channel`'s `transport::Error`) reads as
///   `UNKNOWN`: put the retry layer over the breaker, or map the error into
///   a `BoxError` first.
/// - A palisade rejection (`CircuitOpen`, `RateLimited`,
///   `InsufficientCapacity`, anywhere in the chain, a `Status` made from
///   one included) is [`Ignored`](Outcome::Ignored): it is not the server's
///   answer, and the retry layer honours its `retry_after` itself.
///
/// Give the policy to both [`classifier`](RetryLayerBuilder::classifier)
/// and [`retry_after`](RetryLayerBuilder::retry_after), or let
/// [`apply`](Self::apply) do it. The pushback is honoured up to the layer's
/// [`max_retry_after`](RetryLayerBuilder::max_retry_after) (default: the
/// backoff's `max_delay`); a longer one is not retried.
///
/// ```
/// use palisade::RetryLayer;
/// use palisade::grpc::{GrpcCodes, GrpcRetryPolicy};
/// use std::time::Duration;
/// use tonic::Code;
///
/// let policy = GrpcRetryPolicy::new()
///     .retryable(GrpcCodes::empty().with(Code::Unavailable).with(Code::Aborted));
/// let retry = policy
///     .apply(RetryLayer::exponential(Duration::from_millis(20)).max_attempts(4))
///     .max_retry_after(Duration::from_secs(2))
///     .build()?;
/// # let _ = retry;
/// # Ok::<(), palisade::retry::InvalidRetry>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcRetryPolicy {
    retryable: GrpcCodes,
    with_pushback: GrpcCodes,
}

impl GrpcRetryPolicy {
    /// Retries `UNAVAILABLE`, and `RESOURCE_EXHAUSTED` when it carries a
    /// pushback.
    pub const fn new() -> Self {
        Self {
            retryable: GrpcCodes::empty().with(Code::Unavailable),
            with_pushback: GrpcCodes::empty().with(Code::ResourceExhausted),
        }
    }

    /// Strict A6: only the retryable codes are retried, pushback or not.
    pub const fn strict_a6() -> Self {
        Self::new().retryable_with_pushback(GrpcCodes::empty())
    }

    /// The codes retried, with or without pushback (A6's
    /// `retryableStatusCodes`).
    pub const fn retryable(mut self, codes: GrpcCodes) -> Self {
        self.retryable = codes;
        self
    }

    /// The codes retried only when the server sends a pushback.
    pub const fn retryable_with_pushback(mut self, codes: GrpcCodes) -> Self {
        self.with_pushback = codes;
        self
    }

    /// The codes retried, with or without pushback.
    pub const fn retryable_codes(&self) -> GrpcCodes {
        self.retryable
    }

    /// The codes retried only when the server sends a pushback.
    pub const fn retryable_with_pushback_codes(&self) -> GrpcCodes {
        self.with_pushback
    }

    /// `builder` with this policy as its classifier and its hint reader.
    pub fn apply<C, K, H>(
        self,
        builder: RetryLayerBuilder<C, K, H>,
    ) -> RetryLayerBuilder<Self, K, Self> {
        builder.classifier(self).retry_after(self)
    }

    /// Whether to retry an answer with `code` and `pushback`, and after
    /// how long (`Some(None)`: after the backoff).
    fn decide(&self, code: Code, pushback: Pushback) -> Option<Option<Duration>> {
        match pushback {
            Pushback::Refused => None,
            Pushback::Wait(wait) => {
                let retried = self.retryable.contains(code) || self.with_pushback.contains(code);
                retried.then_some(Some(wait))
            }
            Pushback::None => self.retryable.contains(code).then_some(None),
        }
    }

    /// The decision for one result; `None` for a success or a result not
    /// retried, `Some(hint)` for a retry.
    fn verdict<B, E: 'static>(&self, result: &Result<Response<B>, E>) -> Verdict {
        match result {
            Ok(response) if is_local_response(response) => Verdict::Return,
            Ok(response) => {
                let Some(code) = response_code(response.status(), response.headers()) else {
                    return Verdict::Success;
                };
                if code == Code::Ok {
                    return Verdict::Success;
                }
                let pushback = Pushback::parse(
                    response
                        .headers()
                        .get(RETRY_PUSHBACK_MS)
                        .map(|v| v.as_bytes()),
                );
                self.decide(code, pushback)
                    .map_or(Verdict::Return, Verdict::Retry)
            }
            Err(error) if local_rejection_of(error).is_some() => Verdict::Return,
            Err(error) => {
                let Some(error) = as_error(error) else {
                    return self
                        .decide(Code::Unknown, Pushback::None)
                        .map_or(Verdict::Return, Verdict::Retry);
                };
                let (code, pushback) = match find(error) {
                    Some(Found::Status(status)) => (
                        status.code(),
                        Pushback::parse(
                            status
                                .metadata()
                                .get(RETRY_PUSHBACK_MS)
                                .map(|v| v.as_encoded_bytes()),
                        ),
                    ),
                    _ => (transport_code(error), Pushback::None),
                };
                self.decide(code, pushback)
                    .map_or(Verdict::Return, Verdict::Retry)
            }
        }
    }
}

impl Default for GrpcRetryPolicy {
    /// [`GrpcRetryPolicy::new`].
    fn default() -> Self {
        Self::new()
    }
}

enum Verdict {
    Success,
    Return,
    Retry(Option<Duration>),
}

impl<B, E: 'static> Classify<Response<B>, E> for GrpcRetryPolicy {
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        match self.verdict(result) {
            Verdict::Success => Outcome::Success,
            Verdict::Return => Outcome::Ignored,
            Verdict::Retry(_) => Outcome::Failure,
        }
    }
}

impl<B, E: 'static> RetryAfter<Response<B>, E> for GrpcRetryPolicy {
    fn retry_after(&self, result: &Result<Response<B>, E>) -> Option<Duration> {
        match self.verdict(result) {
            Verdict::Retry(wait) => wait,
            Verdict::Success | Verdict::Return => None,
        }
    }

    /// A pushback is waited exactly, not lengthened by the backoff (A6).
    fn exact(&self) -> bool {
        true
    }
}

/// A6's `grpc-retry-pushback-ms`, read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pushback {
    /// No pushback sent.
    None,
    /// Retry after exactly this long.
    Wait(Duration),
    /// Negative or malformed: do not retry.
    Refused,
}

impl Pushback {
    fn parse(value: Option<&[u8]>) -> Self {
        match value {
            None => Self::None,
            Some(bytes) if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) => {
                Self::Refused
            }
            Some(bytes) => Self::Wait(Duration::from_millis(bytes.iter().fold(0_u64, |acc, d| {
                acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
            }))),
        }
    }
}

/// The error behind a `BoxError` or a `Status`, the error types of a
/// client stack; `None` for any other type.
fn as_error<E: 'static>(error: &E) -> Option<&(dyn Error + 'static)> {
    let any = error as &dyn Any;
    if let Some(boxed) = any.downcast_ref::<BoxError>() {
        return Some(&**boxed);
    }
    any.downcast_ref::<Status>()
        .map(|s| s as &(dyn Error + 'static))
}

/// The code tonic's generated clients give an error that holds no
/// `Status`: a connect error is `UNAVAILABLE`, a timeout `CANCELLED`.
fn transport_code(error: &(dyn Error + 'static)) -> Code {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.is::<ConnectError>() {
            return Code::Unavailable;
        }
        if e.is::<TimeoutExpired>() {
            return Code::Cancelled;
        }
        next = e.source();
    }
    Code::Unknown
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn pushback_values() {
        assert_eq!(Pushback::parse(None), Pushback::None);
        assert_eq!(Pushback::parse(Some(b"0")), Pushback::Wait(Duration::ZERO));
        assert_eq!(
            Pushback::parse(Some(b"250")),
            Pushback::Wait(Duration::from_millis(250))
        );
        for bad in [&b"-1"[..], b"", b"1.5", b" 1", b"1ms", b"+1"] {
            assert_eq!(Pushback::parse(Some(bad)), Pushback::Refused, "{bad:?}");
        }
        assert_eq!(
            Pushback::parse(Some(b"999999999999999999999999")),
            Pushback::Wait(Duration::from_millis(u64::MAX))
        );
    }

    #[test]
    fn decisions() {
        let p = GrpcRetryPolicy::new();
        let wait = Pushback::Wait(Duration::from_millis(5));
        assert_eq!(p.decide(Code::Unavailable, Pushback::None), Some(None));
        assert_eq!(
            p.decide(Code::Unavailable, wait),
            Some(Some(Duration::from_millis(5)))
        );
        assert_eq!(p.decide(Code::Unavailable, Pushback::Refused), None);
        assert_eq!(p.decide(Code::ResourceExhausted, Pushback::None), None);
        assert_eq!(
            p.decide(Code::ResourceExhausted, wait),
            Some(Some(Duration::from_millis(5)))
        );
        assert_eq!(p.decide(Code::Internal, wait), None);
        assert_eq!(
            GrpcRetryPolicy::strict_a6().decide(Code::ResourceExhausted, wait),
            None
        );
    }
}
