//! The service behind [`ErrorResponseLayer`](super::ErrorResponseLayer) and
//! the `tonic` feature's `GrpcErrorLayer`: it answers every error of the
//! service it wraps with a response, so the stack's error type is
//! `Infallible`. What the response looks like is an [`ErrorMapper`].

use std::convert::Infallible;
use std::error::Error;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use tower::Service;

use crate::BoxError;

/// How an [`ErrorResponse`] service answers an error.
pub trait ErrorMapper<B> {
    /// The response for `error` (and its `source()` chain).
    fn error_response(&self, error: &(dyn Error + 'static)) -> Response<B>;
}

/// Answers the wrapped service's errors with responses made by `M`.
///
/// Successful responses pass through untouched. An error from the inner
/// `poll_ready` (a rejection decided before the request is seen) makes this
/// service report ready and answer the next `call` with the error's
/// response; it does not poll the inner service again until then.
#[derive(Debug)]
pub struct ErrorResponse<S, M = super::HttpErrors> {
    inner: S,
    mapper: M,
    // An error from the inner `poll_ready`, answered by the next `call`.
    failed_ready: Option<BoxError>,
}

impl<S, M> ErrorResponse<S, M> {
    /// Wraps `inner`, answering its errors with `mapper`.
    pub const fn new(inner: S, mapper: M) -> Self {
        Self {
            inner,
            mapper,
            failed_ready: None,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, M: Clone> Clone for ErrorResponse<S, M> {
    /// A clone starts afresh: a pending readiness error belongs to the
    /// instance that was polled.
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.mapper.clone())
    }
}

impl<S, M, Req, B> Service<Req> for ErrorResponse<S, M>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Into<BoxError>,
    M: ErrorMapper<B> + Clone,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = ErrorResponseFuture<S::Future, B, M>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.failed_ready.is_some() {
            // Polling again must not reserve inner capacity the pending
            // answer will never use.
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(error)) => {
                self.failed_ready = Some(error.into());
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let state = match self.failed_ready.take() {
            Some(error) => State::Answered {
                response: Some(answer(&self.mapper, &*error)),
            },
            None => State::Called {
                future: self.inner.call(request),
                mapper: self.mapper.clone(),
            },
        };
        ErrorResponseFuture { state }
    }
}

/// The mapper's response for `error`, marked as palisade's own answer when
/// the error is a local rejection, so that a classifier above (a breaker
/// reading statuses) ignores it whatever the mapper made of it.
fn answer<B, M: ErrorMapper<B>>(mapper: &M, error: &(dyn Error + 'static)) -> Response<B> {
    let mut response = mapper.error_response(error);
    if let Some(rejection) = crate::classify::local_rejection(error) {
        response.extensions_mut().insert(rejection);
    }
    response
}

pin_project! {
    /// The future of [`ErrorResponse`].
    #[derive(Debug)]
    pub struct ErrorResponseFuture<F, B, M = super::HttpErrors> {
        #[pin]
        state: State<F, B, M>,
    }
}

pin_project! {
    #[derive(Debug)]
    #[project = Projected]
    enum State<F, B, M> {
        // The inner call is in flight.
        Called {
            #[pin]
            future: F,
            mapper: M,
        },
        // Answered already, from a readiness error.
        Answered {
            response: Option<Response<B>>,
        },
    }
}

impl<F, B, E, M> Future for ErrorResponseFuture<F, B, M>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    M: ErrorMapper<B>,
{
    type Output = Result<Response<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            Projected::Called { future, mapper } => {
                Poll::Ready(Ok(match ready!(future.poll(cx)) {
                    Ok(response) => response,
                    Err(error) => answer(mapper, &*error.into()),
                }))
            }
            Projected::Answered { response } => Poll::Ready(Ok(response
                .take()
                .expect("ErrorResponseFuture polled after completion"))),
        }
    }
}
