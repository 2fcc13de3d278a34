//! HTTP integration (feature `http`): palisade's rejections as HTTP
//! responses, so a server stacks the layers in front of its handlers and
//! callers get `503` / `429` with a `Retry-After` they can trust.
//!
//! | error | status | `Retry-After` |
//! |---|---|---|
//! | [`CircuitOpen`] | 503 Service Unavailable | seconds until the next probe, rounded up |
//! | [`RateLimited`] | 429 Too Many Requests | seconds until admitted, rounded up |
//! | [`InsufficientCapacity`] | 413 Content Too Large | none: waiting never helps |
//! | [`UnknownKey`] (strict [`ClientIp`]) | 500 Internal Server Error | none: the server cannot identify the client |
//! | [`Overloaded`] (concurrency limit) | 503 Service Unavailable | none: no wait is known (as Envoy's adaptive concurrency answers) |
//! | [`Throttled`] (adaptive throttling) | 503 Service Unavailable | its hint (one window bucket), rounded up |
//! | anything else | 500 Internal Server Error | none |
//!
//! `Retry-After` is rounded *up* and is never `0` while the client is
//! limited (tower_governor #65 sent `0` for sub-second waits, and clients
//! hammered). The error and its `source()` chain are searched, so a
//! rejection wrapped by another layer is still found. Bodies are short
//! fixed texts: an internal error's message never reaches the client.
//!
//! Two ways in:
//! - [`ErrorResponseLayer`], outermost, turns every error of the stack into
//!   a response; its error type is `Infallible`, which is what axum's
//!   `Router::layer` asks for, so no `HandleErrorLayer` is needed.
//! - [`error_response`], for axum's `HandleErrorLayer` or any hand-written
//!   handling.
//!
//! The other direction, reading a server's `Retry-After`, is
//! [`HttpRetryAfter`](crate::retry::HttpRetryAfter) for the retry layer; and
//! [`ServerErrorsAsFailures`](crate::classify::ServerErrorsAsFailures) counts
//! `5xx` answers as failures, so a breaker behind axum trips on `Ok(500)`.
//!
//! # Retrying requests with bodies
//!
//! An `http::Request` is not `Clone`, so a retry layer over an HTTP or gRPC
//! client could never send one again. [`BufferBodyLayer`], above the retry
//! layer, keeps bodies of up to 64 KiB that are available at once (a unary
//! gRPC message, a small JSON document) in memory, and [`CloneBuffered`],
//! the retry layer's
//! [`clone_request`](crate::retry::RetryLayerBuilder::clone_request),
//! copies such requests whole. A larger or streaming body is sent once,
//! with a warning the first time. Works for tonic's, axum's and
//! http-body-util's body types ([`ReplayBody`]).
//!
//! # Client-IP keys
//!
//! [`ClientIp`] keys a [keyed](crate::rate_limit::RateLimitBuilder::keyed)
//! limiter by client address, read from the one source you trust: the
//! connection's peer, or the `X-Forwarded-For` / `Forwarded` entry that your
//! own proxies wrote, counted from the *right* (the leftmost entry is
//! whatever the client sent). [`ClientIp::peer`] finds the peer where axum
//! (`ConnectInfo<SocketAddr>`, feature `axum`) and tonic (`TcpConnectInfo`,
//! feature `tonic`) put it, with no configuration. Requests without a
//! trustworthy address share one [`ClientKey::Unknown`], so garbage cannot
//! mint keys; that is warned about once, counted by the limiter
//! ([`unknown_key_requests`](crate::rate_limit::RateLimitHandle::unknown_key_requests)),
//! and refused with [`ClientIp::refuse_unknown`]. IPv6 clients are keyed by
//! their `/64` by default.
//!
//! ```
//! use palisade::RateLimitLayer;
//! use palisade::http::ClientIp;
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), palisade::rate_limit::ConfigError> {
//! // Behind one reverse proxy that appends to X-Forwarded-For.
//! let per_client = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
//!     .keyed(ClientIp::x_forwarded_for(1))
//!     .build()?;
//! # let _ = per_client;
//! # Ok(()) }
//! ```
//!
//! # Example
//!
//! ```
//! use palisade::http::ErrorResponseLayer;
//! use palisade::RateLimitLayer;
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! let app = ServiceBuilder::new()
//!     .layer(ErrorResponseLayer::new())
//!     .layer(RateLimitLayer::token_bucket(1, Duration::from_secs(10)).build()?)
//!     .service(service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hello")))
//!     }));
//!
//! let first = app.clone().oneshot(http::Request::new(())).await?;
//! assert_eq!(first.status(), 200);
//! let second = app.oneshot(http::Request::new(())).await?;
//! assert_eq!(second.status(), 429);
//! assert_eq!(second.headers()["retry-after"], "10");
//! # Ok(()) }
//! ```

use std::error::Error;
use std::time::Duration;

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use tower::Layer;

use crate::circuit_breaker::{CircuitOpen, Throttled};
use crate::concurrency::Overloaded;
use crate::rate_limit::{InsufficientCapacity, RateLimited, UnknownKey};

mod body;
mod client_ip;
mod respond;
pub use body::{
    BufferBody, BufferBodyLayer, BufferedBody, CloneBuffered, DEFAULT_BODY_LIMIT, Replay,
    ReplayBody,
};
pub use client_ip::{ClientIp, ClientKey, InvalidPrefixLength};
pub use respond::{ErrorMapper, ErrorResponse, ErrorResponseFuture};

/// The response for an error from a palisade stack; see the
/// [module docs](self) for the mapping.
pub fn error_response<B: From<String>>(error: &(dyn Error + 'static)) -> Response<B> {
    let (status, retry_after, text) = classify_error(error);
    let mut response = Response::new(B::from(text.to_owned()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(wait) = retry_after {
        headers.insert(RETRY_AFTER, retry_after_value(wait));
    }
    // A limiter built with `.headers(..)` reports its quota on its 429s too.
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(limited) = e.downcast_ref::<RateLimited>() {
            limited.insert_headers(headers);
            break;
        }
        next = e.source();
    }
    response
}

/// A `Retry-After` value in whole seconds, rounded up, at least 1.
pub fn retry_after_value(wait: Duration) -> HeaderValue {
    let whole = wait.as_secs();
    let secs = if wait.subsec_nanos() > 0 {
        whole.saturating_add(1)
    } else {
        whole
    };
    HeaderValue::from(secs.max(1))
}

fn classify_error(error: &(dyn Error + 'static)) -> (StatusCode, Option<Duration>, &'static str) {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(open) = e.downcast_ref::<CircuitOpen>() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(open.retry_after),
                "service unavailable: circuit open",
            );
        }
        if let Some(limited) = e.downcast_ref::<RateLimited>() {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                Some(limited.retry_after),
                "too many requests",
            );
        }
        if e.is::<InsufficientCapacity>() {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                "request exceeds the rate limit's capacity",
            );
        }
        if let Some(throttled) = e.downcast_ref::<Throttled>() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(throttled.retry_after),
                "service unavailable: throttled",
            );
        }
        if e.is::<Overloaded>() {
            // No wait is known for a place to free: no `Retry-After`.
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                "service unavailable: overloaded",
            );
        }
        if e.is::<UnknownKey>() {
            // The server cannot tell who the client is: its own deployment
            // is at fault (no connect info, a proxy not appending), and the
            // client can change nothing, so not a 4xx; no `Retry-After`.
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "internal server error: client address unknown",
            );
        }
        next = e.source();
    }
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        None,
        "internal server error",
    )
}

/// The [`ErrorMapper`] of [`ErrorResponseLayer`]: [`error_response`].
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpErrors;

impl<B: From<String>> ErrorMapper<B> for HttpErrors {
    fn error_response(&self, error: &(dyn Error + 'static)) -> Response<B> {
        error_response(error)
    }
}

/// Turns every error of the service it wraps into an HTTP response
/// ([`error_response`], or your own [`ErrorMapper`]), so the stack's error
/// type is `Infallible`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorResponseLayer<M = HttpErrors> {
    mapper: M,
}

impl ErrorResponseLayer {
    /// The layer, answering with [`error_response`].
    pub const fn new() -> Self {
        Self { mapper: HttpErrors }
    }
}

impl<M> ErrorResponseLayer<M> {
    /// The layer, answering with responses made by `mapper`.
    pub const fn with_mapper(mapper: M) -> Self {
        Self { mapper }
    }
}

impl<S, M: Clone> Layer<S> for ErrorResponseLayer<M> {
    type Service = ErrorResponse<S, M>;

    fn layer(&self, inner: S) -> ErrorResponse<S, M> {
        ErrorResponse::new(inner, self.mapper.clone())
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_value(Duration::ZERO), "1");
        assert_eq!(retry_after_value(Duration::from_nanos(1)), "1");
        assert_eq!(retry_after_value(Duration::from_millis(1500)), "2");
        assert_eq!(retry_after_value(Duration::from_secs(3)), "3");
        assert_eq!(
            retry_after_value(Duration::MAX),
            u64::MAX.to_string().as_str()
        );
    }

    #[test]
    fn throttled_is_503_with_its_hint() {
        let err: crate::BoxError = Box::new(Throttled {
            retry_after: Duration::from_millis(4_500),
            probability: 0.5,
        });
        let res: Response<String> = error_response(&*err);
        assert_eq!(res.status(), 503);
        assert_eq!(res.headers()[RETRY_AFTER], "5");
    }

    #[test]
    fn overload_is_503_without_retry_after_and_marked_local() {
        let err: crate::BoxError = Box::new(Overloaded {
            limit: 4,
            in_flight: 4,
        });
        let res: Response<String> = error_response(&*err);
        assert_eq!(res.status(), 503);
        assert!(res.headers().get(RETRY_AFTER).is_none());
    }

    #[test]
    fn unknown_errors_are_500_without_their_text() {
        let err: crate::BoxError = "database password is hunter2".into();
        let res: Response<String> = error_response(&*err);
        assert_eq!(res.status(), 500);
        assert!(!res.body().contains("hunter2"));
        assert!(res.headers().get(RETRY_AFTER).is_none());
    }
}
