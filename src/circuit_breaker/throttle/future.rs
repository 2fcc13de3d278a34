//! [`ResponseFuture`]: the request sent, recording whether the backend
//! accepted it, or the local [`Throttled`] rejection.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;

use crate::BoxError;
use crate::classify::Classify;
use crate::clock::Nanos;

use super::error::Throttled;
use super::state::Throttle;

pin_project! {
    /// The response future of [`AdaptiveThrottle`](super::AdaptiveThrottle).
    ///
    /// Dropping it before the call ends records nothing.
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F>,
        classifier: C,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Sent { #[pin] future: F, state: Option<Arc<Throttle>>, at: Nanos },
        Throttled { retry_after: Duration, probability: f64 },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn sent(future: F, state: Arc<Throttle>, at: Nanos, classifier: C) -> Self {
        Self {
            kind: Kind::Sent {
                future,
                state: Some(state),
                at,
            },
            classifier,
        }
    }

    pub(crate) fn throttled(retry_after: Duration, probability: f64, classifier: C) -> Self {
        Self {
            kind: Kind::Throttled {
                retry_after,
                probability,
            },
            classifier,
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Throttled {
                retry_after,
                probability,
            } => Poll::Ready(Err(Box::new(Throttled {
                retry_after: *retry_after,
                probability: *probability,
            }))),
            KindProj::Sent { future, state, at } => {
                let result = ready!(future.poll(cx));
                if let Some(state) = state.take() {
                    state.record(*at, this.classifier.classify(&result));
                }
                Poll::Ready(result.map_err(Into::into))
            }
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Sent { .. } => "sent",
            Kind::Throttled { .. } => "throttled",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}
