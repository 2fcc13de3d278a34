//! gRPC integration (feature `tonic`): palisade's rejections as
//! [`tonic::Status`], a layer that answers them as trailers-only gRPC
//! responses, and classifiers that read gRPC status codes.
//!
//! # Errors to `Status`
//!
//! | error | code | `grpc-retry-pushback-ms` |
//! |---|---|---|
//! | [`CircuitOpen`] | `UNAVAILABLE` (14) | milliseconds until the next probe, rounded up |
//! | [`RateLimited`] | `RESOURCE_EXHAUSTED` (8) | milliseconds until admitted, rounded up |
//! | [`InsufficientCapacity`] | `FAILED_PRECONDITION` (9) | `-1`: do not retry |
//! | a [`Status`] | passed through unchanged | whatever it carries |
//! | anything else | `UNKNOWN` (2), fixed message | none |
//!
//! The error and its `source()` chain are searched from the outside in, and
//! the first palisade rejection or `Status` found decides, so a rejection
//! wrapped by another layer is still found.
//!
//! **The wait.** gRPC has no `Retry-After`. The wait goes in the message
//! (for people) and in the `grpc-retry-pushback-ms` metadata entry (for
//! programs): the server pushback of gRPC's retry design (proposal A6),
//! honoured by the official gRPC clients' retry policies when the code is
//! one of their `retryableStatusCodes`. It is rounded *up* to whole
//! milliseconds and is never `0` while the caller is limited (a zero would
//! tell a client to retry at once). A negative pushback means "do not
//! retry" in A6: [`InsufficientCapacity`] sends `-1`, since waiting never
//! helps. On the client side, [`GrpcRetryPushback`] reads the entry for
//! palisade's retry layer.
//!
//! **Why `FAILED_PRECONDITION` for [`InsufficientCapacity`].** The request
//! costs more than the limiter can ever admit: retrying, with or without
//! backoff, never helps until the limiter's configuration changes, which is
//! what gRPC's guide says `FAILED_PRECONDITION` is for. `RESOURCE_EXHAUSTED`
//! is commonly listed as retryable and would invite retries that can never
//! succeed. (The `http` module answers `413` for the same reason.)
//!
//! **Why `UNKNOWN` with a fixed message for other errors.** `UNKNOWN` is
//! what gRPC servers (grpc-go, tonic) answer for an application error that
//! is not a status; the message is fixed (`"internal error"`) so an internal
//! error's text never reaches the client, as with the `http` module's `500`.
//! To show a message, return a `Status` of your own: it is passed through.
//!
//! # Two ways in
//! - [`GrpcErrorLayer`], outermost, turns every error of the stack into a
//!   trailers-only gRPC response (HTTP 200, `content-type: application/grpc`,
//!   `grpc-status`, `grpc-message` and the metadata in the headers, an empty
//!   body). Its error type is `Infallible`. A tonic server stacks palisade
//!   layers with `Server::builder().layer(..)`; tonic itself answers only a
//!   `Status` error with a gRPC status and resets the stream for any other
//!   error (a palisade rejection), so put this layer first (outermost):
//!
//!   ```text
//!   Server::builder()
//!       .layer(GrpcErrorLayer::new())
//!       .layer(breaker)   // CircuitBreakerLayer with GrpcErrorsAsFailures
//!       .layer(limiter)   // RateLimitLayer
//!       .add_service(GreeterServer::new(greeter))
//!   ```
//!
//!   The layers wrap the server's routes, built once and cloned per
//!   connection, so every connection shares one breaker and one limit.
//! - [`status_from_error`], for hand-written handling, or a client that
//!   wants a `Status` out of a palisade error.
//!
//! # Classifiers
//! - [`GrpcErrorsAsFailures`] classifies `Result<http::Response<B>, E>` by
//!   the `grpc-status` *header*, for a layer around a tonic channel or a
//!   tonic server's routes. A status sent only in the trailers (the usual
//!   case for a successful or streaming call) cannot be seen by a response
//!   classifier, which runs when the headers arrive: such a response counts
//!   as a success. Rejections and most early errors are trailers-only, so
//!   they are seen; so is a tonic handler's `Err(Status)`, which tonic's
//!   server answers as a trailers-only response. An error a streaming
//!   handler sends after its first message is not.
//! - [`StatusErrorsAsFailures`] classifies `Result<T, tonic::Status>`, for
//!   a layer around a service whose error is `Status`.
//!
//! Both count the codes in a [`GrpcCodes`] set as failures. The default set
//! is the server's own failures: `UNKNOWN`, `DEADLINE_EXCEEDED`, `INTERNAL`,
//! `UNAVAILABLE` and `DATA_LOSS`. Other non-`OK` codes (`NOT_FOUND`,
//! `INVALID_ARGUMENT`, `PERMISSION_DENIED`, `CANCELLED`, ...) are
//! [`Ignored`](Outcome::Ignored): they are the caller's problem, and a
//! breaker that opened on them would let one bad client cut everyone off.
//! `RESOURCE_EXHAUSTED` is ignored too, because it is what a rate limiter
//! (palisade's included) answers, and a limiter saying "not now" is no sign
//! of ill health; add it with [`GrpcCodes::with`] if your upstream uses it
//! for overload. tower-http's `GrpcErrorsAsFailures` counts every non-`OK`
//! code; [`GrpcCodes::all_errors`] gives that.
//!
//! # Example
//!
//! ```
//! use palisade::RateLimitLayer;
//! use palisade::grpc::GrpcErrorLayer;
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! // `service_fn` stands in for a tonic server's routes.
//! let app = ServiceBuilder::new()
//!     .layer(GrpcErrorLayer::new())
//!     .layer(RateLimitLayer::token_bucket(1, Duration::from_secs(10)).build()?)
//!     .service(service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//!     }));
//!
//! let first = app.clone().oneshot(http::Request::new(())).await?;
//! assert!(first.headers().get("grpc-status").is_none());
//! let second = app.oneshot(http::Request::new(())).await?;
//! assert_eq!(second.status(), 200); // gRPC errors travel in grpc-status
//! assert_eq!(second.headers()["grpc-status"], "8"); // RESOURCE_EXHAUSTED
//! assert_eq!(second.headers()["grpc-retry-pushback-ms"], "10000");
//! # Ok(()) }
//! ```

use std::error::Error;
use std::time::Duration;

use http::{HeaderMap, HeaderName, Response, StatusCode};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tower::Layer;

use crate::circuit_breaker::CircuitOpen;
use crate::classify::{Classify, Outcome};
use crate::http::{ErrorMapper, ErrorResponse, ErrorResponseFuture};
use crate::rate_limit::{InsufficientCapacity, RateLimited};
use crate::retry::RetryAfter;

/// The metadata key of gRPC's server pushback (proposal A6): milliseconds
/// to wait before a retry, or a negative number for "do not retry".
pub const RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";

/// The [`Status`] for an error from a palisade stack; see the
/// [module docs](self) for the mapping.
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
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(status) = e.downcast_ref::<Status>() {
            return status.clone();
        }
        if let Some(open) = e.downcast_ref::<CircuitOpen>() {
            return limited(
                Code::Unavailable,
                "service unavailable: circuit open",
                open.retry_after,
            );
        }
        if let Some(limited_by) = e.downcast_ref::<RateLimited>() {
            return limited(
                Code::ResourceExhausted,
                "too many requests",
                limited_by.retry_after,
            );
        }
        if e.is::<InsufficientCapacity>() {
            let mut status =
                Status::failed_precondition("request exceeds the rate limit's capacity");
            status
                .metadata_mut()
                .insert(RETRY_PUSHBACK_MS, MetadataValue::from(-1_i64));
            return status;
        }
        next = e.source();
    }
    Status::unknown("internal error")
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

// ---------------------------------------------------------------------------
// The layer

/// Turns every error of the service it wraps into a trailers-only gRPC
/// response ([`status_from_error`], then [`Status::into_http`]), so the
/// stack's error type is `Infallible`.
///
/// Successful responses pass through untouched. An error from the inner
/// `poll_ready` (a rejection decided before the request is seen) makes this
/// service report ready and answer the next `call` with the error's status.
/// The service is the `http` module's [`ErrorResponse`] with [`GrpcErrors`]
/// as its mapper.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcErrorLayer {
    _priv: (),
}

impl GrpcErrorLayer {
    /// The layer.
    pub const fn new() -> Self {
        Self { _priv: () }
    }
}

impl<S> Layer<S> for GrpcErrorLayer {
    type Service = GrpcError<S>;

    fn layer(&self, inner: S) -> GrpcError<S> {
        ErrorResponse::new(inner, GrpcErrors)
    }
}

/// The [`ErrorMapper`] of [`GrpcErrorLayer`]: [`status_from_error`] as a
/// trailers-only response.
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcErrors;

impl<B: Default> ErrorMapper<B> for GrpcErrors {
    fn error_response(&self, error: &(dyn Error + 'static)) -> Response<B> {
        status_from_error(error).into_http()
    }
}

/// The service of [`GrpcErrorLayer`].
pub type GrpcError<S> = ErrorResponse<S, GrpcErrors>;

/// The future of [`GrpcError`].
pub type GrpcErrorFuture<F, B> = ErrorResponseFuture<F, B, GrpcErrors>;

// ---------------------------------------------------------------------------
// Classifiers

/// A set of gRPC codes, one bit per code (like tower-http's
/// `GrpcCodeBitmask`): the codes a classifier counts as failures.
///
/// ```
/// use palisade::grpc::GrpcCodes;
/// use tonic::Code;
///
/// let codes = GrpcCodes::server_errors().with(Code::ResourceExhausted);
/// assert!(codes.contains(Code::Unavailable));
/// assert!(codes.contains(Code::ResourceExhausted));
/// assert!(!codes.contains(Code::NotFound));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GrpcCodes(u32);

impl GrpcCodes {
    /// No code.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Every code but `OK` (tower-http's default).
    pub const fn all_errors() -> Self {
        // Codes 1..=16.
        Self(0x1_fffe)
    }

    /// The server's own failures: `UNKNOWN`, `DEADLINE_EXCEEDED`,
    /// `INTERNAL`, `UNAVAILABLE`, `DATA_LOSS` (the default).
    pub const fn server_errors() -> Self {
        Self::empty()
            .with(Code::Unknown)
            .with(Code::DeadlineExceeded)
            .with(Code::Internal)
            .with(Code::Unavailable)
            .with(Code::DataLoss)
    }

    /// This set and `code`.
    pub const fn with(self, code: Code) -> Self {
        Self(self.0 | bit(code))
    }

    /// This set without `code`.
    pub const fn without(self, code: Code) -> Self {
        Self(self.0 & !bit(code))
    }

    /// Whether `code` is in the set.
    pub const fn contains(self, code: Code) -> bool {
        self.0 & bit(code) != 0
    }
}

impl Default for GrpcCodes {
    /// [`GrpcCodes::server_errors`].
    fn default() -> Self {
        Self::server_errors()
    }
}

const fn bit(code: Code) -> u32 {
    // `Code` is a fieldless enum numbered 0..=16; the mask keeps a shift
    // in range should a later tonic add codes.
    1 << ((code as u32) & 31)
}

/// Classifies `Result<http::Response<B>, E>` by the gRPC status in the
/// response *headers* (trailers-only responses); see the
/// [module docs](self) for what it can and cannot see.
///
/// - `Err(_)` (a transport error) is a failure.
/// - A `grpc-status` header: `OK` is a success, a code in the failure set
///   (default [`GrpcCodes::server_errors`]) a failure, any other code
///   ignored. A malformed header (not a number in `0..=16`, not ASCII,
///   padded) reads as `UNKNOWN`, as tonic's client reads it, and so counts
///   as a failure by default: a server that sends garbage is not healthy.
/// - No `grpc-status` header and HTTP status 200: a success (the status, if
///   any, comes in the trailers, which a response classifier cannot see).
/// - No `grpc-status` header and another HTTP status (a proxy's error page):
///   the code gRPC clients derive from it (gRPC's
///   "HTTP to gRPC Status Code Mapping": 502, 503, 504 and 429 are
///   `UNAVAILABLE`, 401 `UNAUTHENTICATED`, 403 `PERMISSION_DENIED`, 404
///   `UNIMPLEMENTED`, 400 `INTERNAL`, anything else `UNKNOWN`).
///
/// ```
/// use palisade::classify::{Classify, Outcome};
/// use palisade::grpc::GrpcErrorsAsFailures;
///
/// let res = |code: &'static str| {
///     http::Response::builder().header("grpc-status", code).body(()).unwrap()
/// };
/// let c = GrpcErrorsAsFailures::new();
/// assert_eq!(c.classify(&Ok::<_, ()>(res("0"))), Outcome::Success);
/// assert_eq!(c.classify(&Ok::<_, ()>(res("14"))), Outcome::Failure); // UNAVAILABLE
/// assert_eq!(c.classify(&Ok::<_, ()>(res("5"))), Outcome::Ignored); // NOT_FOUND
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrpcErrorsAsFailures {
    failures: GrpcCodes,
}

impl GrpcErrorsAsFailures {
    /// Counts [`GrpcCodes::server_errors`] as failures.
    pub const fn new() -> Self {
        Self::with_failures(GrpcCodes::server_errors())
    }

    /// Counts the codes in `failures` as failures.
    pub const fn with_failures(failures: GrpcCodes) -> Self {
        Self { failures }
    }

    /// The codes counted as failures.
    pub const fn failures(&self) -> GrpcCodes {
        self.failures
    }
}

impl<B, E: 'static> Classify<Response<B>, E> for GrpcErrorsAsFailures {
    #[inline]
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        match result {
            // palisade's own answer to a rejection further down.
            Ok(response) if crate::classify::is_local_response(response) => Outcome::Ignored,
            Ok(response) => match response_code(response.status(), response.headers()) {
                None | Some(Code::Ok) => Outcome::Success,
                Some(code) => by_code(self.failures, code),
            },
            Err(e) => crate::classify::error_outcome(e),
        }
    }
}

/// Classifies `Result<T, tonic::Status>`: `Ok` is a success, an `Err`
/// whose code is in the failure set (default [`GrpcCodes::server_errors`])
/// a failure, any other `Err` ignored.
///
/// ```
/// use palisade::classify::{Classify, Outcome};
/// use palisade::grpc::StatusErrorsAsFailures;
/// use tonic::Status;
///
/// let c = StatusErrorsAsFailures::new();
/// assert_eq!(c.classify(&Ok::<(), Status>(())), Outcome::Success);
/// assert_eq!(c.classify(&Err::<(), _>(Status::internal("boom"))), Outcome::Failure);
/// assert_eq!(c.classify(&Err::<(), _>(Status::not_found("no"))), Outcome::Ignored);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusErrorsAsFailures {
    failures: GrpcCodes,
}

impl StatusErrorsAsFailures {
    /// Counts [`GrpcCodes::server_errors`] as failures.
    pub const fn new() -> Self {
        Self::with_failures(GrpcCodes::server_errors())
    }

    /// Counts the codes in `failures` as failures.
    pub const fn with_failures(failures: GrpcCodes) -> Self {
        Self { failures }
    }

    /// The codes counted as failures.
    pub const fn failures(&self) -> GrpcCodes {
        self.failures
    }
}

impl<T> Classify<T, Status> for StatusErrorsAsFailures {
    #[inline]
    fn classify(&self, result: &Result<T, Status>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(status) if crate::classify::is_local(status) => Outcome::Ignored,
            Err(status) => by_code(self.failures, status.code()),
        }
    }
}

fn by_code(failures: GrpcCodes, code: Code) -> Outcome {
    if failures.contains(code) {
        Outcome::Failure
    } else {
        Outcome::Ignored
    }
}

/// The gRPC code a client reads from a response's head, if the head has
/// one: the `grpc-status` header, or for a non-200 response without it,
/// the code mapped from the HTTP status.
fn response_code(status: StatusCode, headers: &HeaderMap) -> Option<Code> {
    const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
    if let Some(value) = headers.get(GRPC_STATUS) {
        // `Code::from_bytes` reads exactly "0".."16"; anything else is
        // `Unknown`, without allocating or panicking.
        return Some(Code::from_bytes(value.as_bytes()));
    }
    match status.as_u16() {
        200 => None,
        400 => Some(Code::Internal),
        401 => Some(Code::Unauthenticated),
        403 => Some(Code::PermissionDenied),
        404 => Some(Code::Unimplemented),
        429 | 502 | 503 | 504 => Some(Code::Unavailable),
        _ => Some(Code::Unknown),
    }
}

// ---------------------------------------------------------------------------
// Reading the pushback (client side)

/// Reads gRPC server pushback (`grpc-retry-pushback-ms`, proposal A6) from
/// the headers of an `Ok(http::Response)` (a trailers-only answer), for
/// [`RetryLayerBuilder::retry_after`](crate::retry::RetryLayerBuilder::retry_after).
///
/// A non-negative integer is a delay in milliseconds. As A6 says, a negative
/// or unparseable value asks the client not to retry: it reads as
/// `Duration::MAX`, above any [`max_retry_after`] cap, so the retry layer
/// returns the result instead. No header, or an `Err`, is no hint.
///
/// [`max_retry_after`]: crate::retry::RetryLayerBuilder::max_retry_after
///
/// ```
/// use palisade::retry::RetryAfter;
/// use palisade::grpc::GrpcRetryPushback;
/// use std::time::Duration;
///
/// let res = http::Response::builder()
///     .header("grpc-status", "8")
///     .header("grpc-retry-pushback-ms", "250")
///     .body(())
///     .unwrap();
/// assert_eq!(
///     GrpcRetryPushback.retry_after(&Ok::<_, ()>(res)),
///     Some(Duration::from_millis(250)),
/// );
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GrpcRetryPushback;

impl<B, E> RetryAfter<Response<B>, E> for GrpcRetryPushback {
    fn retry_after(&self, result: &Result<Response<B>, E>) -> Option<Duration> {
        let value = result.as_ref().ok()?.headers().get(RETRY_PUSHBACK_MS)?;
        Some(parse_pushback(value.as_bytes()))
    }
}

/// A6 pushback: digits are milliseconds (saturating); anything else,
/// a minus sign included, is "do not retry".
fn parse_pushback(bytes: &[u8]) -> Duration {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return Duration::MAX;
    }
    let ms = bytes.iter().fold(0_u64, |acc, d| {
        acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    });
    Duration::from_millis(ms)
}

#[cfg(all(test, not(loom)))]
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
    fn code_bits_cover_every_code() {
        let every = (0..=16)
            .map(Code::from)
            .fold(GrpcCodes::empty(), GrpcCodes::with);
        assert_eq!(every, GrpcCodes::all_errors().with(Code::Ok));
        assert!(!GrpcCodes::all_errors().contains(Code::Ok));
        assert!(
            !GrpcCodes::server_errors()
                .without(Code::Internal)
                .contains(Code::Internal)
        );
    }

    #[test]
    fn pushback_parsing_follows_a6() {
        assert_eq!(parse_pushback(b"0"), Duration::ZERO);
        assert_eq!(parse_pushback(b"1500"), Duration::from_millis(1500));
        assert_eq!(parse_pushback(b"-1"), Duration::MAX);
        assert_eq!(parse_pushback(b""), Duration::MAX);
        assert_eq!(parse_pushback(b"12ms"), Duration::MAX);
        assert_eq!(
            parse_pushback(b"99999999999999999999999999"),
            Duration::from_millis(u64::MAX)
        );
    }

    #[test]
    fn head_without_grpc_status_maps_http_status() {
        let none = HeaderMap::new();
        assert_eq!(response_code(StatusCode::OK, &none), None);
        assert_eq!(
            response_code(StatusCode::SERVICE_UNAVAILABLE, &none),
            Some(Code::Unavailable)
        );
        assert_eq!(
            response_code(StatusCode::NOT_FOUND, &none),
            Some(Code::Unimplemented)
        );
        assert_eq!(
            response_code(StatusCode::IM_A_TEAPOT, &none),
            Some(Code::Unknown)
        );
    }
}
