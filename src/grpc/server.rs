//! [`GrpcErrorLayer`]: a server stack's errors as trailers-only gRPC
//! responses.

use std::error::Error;

use http::Response;
use tower::Layer;

use super::status_from_error;
use crate::http::{ErrorMapper, ErrorResponse, ErrorResponseFuture};

/// Turns every error of the service it wraps into a trailers-only gRPC
/// response ([`status_from_error`], then [`Status::into_http`](tonic::Status::into_http)), so the
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
