//! The response future: the inner call, or a refusal delivered without
//! calling the inner service.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use super::error::{InsufficientCapacity, RateLimited, UnknownKey};
use super::headers::ApplyStamp;
use crate::BoxError;

/// Why a request was refused, kept unboxed until the future is polled (the
/// error is allocated only on the refusal path).
#[derive(Debug)]
pub(crate) enum Refusal {
    Limited(RateLimited),
    Never(InsufficientCapacity),
    Unknown(UnknownKey),
}

impl Refusal {
    /// The `DEBUG` event every refusal emits; `shared` says whether the
    /// Redis store decided it.
    pub(crate) fn trace(&self, shared: bool) {
        match self {
            Refusal::Limited(e) => tracing::debug!(
                retry_after = ?e.retry_after,
                limit = e.limit,
                remaining = e.remaining,
                shared,
                "rate limited"
            ),
            Refusal::Never(e) => tracing::debug!(
                cost = e.cost,
                capacity = e.capacity,
                shared,
                "request cost above the limiter's capacity"
            ),
            Refusal::Unknown(_) => {
                tracing::debug!(shared, "refused: the key extractor identified no client")
            }
        }
    }
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
    /// [`UnknownKey`] error that resolves at once. `St` is what the
    /// admission leaves for the response (`()`: nothing; a
    /// [`HeaderStamp`](super::HeaderStamp) with `.headers(..)`).
    #[derive(Debug)]
    pub struct ResponseFuture<F, St = ()> {
        #[pin]
        kind: Kind<F, St>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, St> {
        Called { #[pin] fut: F, stamp: St },
        Refused { refusal: Option<Refusal> },
    }
}

impl<F, St> ResponseFuture<F, St> {
    pub(crate) fn called(fut: F, stamp: St) -> Self {
        Self {
            kind: Kind::Called { fut, stamp },
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

impl<F, T, E, St> Future for ResponseFuture<F, St>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    St: ApplyStamp<T> + Default,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { fut, stamp } => {
                let mut response = ready!(fut.poll(cx)).map_err(Into::into)?;
                std::mem::take(stamp).apply(&mut response);
                Poll::Ready(Ok(response))
            }
            KindProj::Refused { refusal } => Poll::Ready(Err(refusal
                .take()
                .expect("ResponseFuture polled after completion")
                .into())),
        }
    }
}
