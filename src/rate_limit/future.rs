//! The response future: the inner call, or a refusal delivered without
//! calling the inner service.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::error::{InsufficientCapacity, RateLimited, UnknownKey};
use crate::BoxError;

/// Why a request was refused, kept unboxed until the future is polled (the
/// error is allocated only on the refusal path).
#[derive(Debug)]
pub(crate) enum Refusal {
    Limited(RateLimited),
    Never(InsufficientCapacity),
    Unknown(UnknownKey),
}

impl From<Refusal> for BoxError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Limited(e) => Box::new(e),
            Refusal::Never(e) => Box::new(e),
            Refusal::Unknown(e) => Box::new(e),
        }
    }
}

pin_project! {
    /// The future returned by [`RateLimit`](super::RateLimit): the inner
    /// service's future, or a [`RateLimited`] / [`InsufficientCapacity`] /
    /// [`UnknownKey`] error that resolves at once.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Called { #[pin] fut: F },
        Refused { refusal: Option<Refusal> },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(fut: F) -> Self {
        Self {
            kind: Kind::Called { fut },
        }
    }

    pub(crate) fn refused(refusal: Refusal) -> Self {
        Self {
            kind: Kind::Refused {
                refusal: Some(refusal),
            },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { fut } => fut.poll(cx).map_err(Into::into),
            KindProj::Refused { refusal } => Poll::Ready(Err(refusal
                .take()
                .expect("ResponseFuture polled after completion")
                .into())),
        }
    }
}
