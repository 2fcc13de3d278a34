//! [`ResponseFuture`]: the inner call's future, recording its outcome.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;

use crate::BoxError;
use crate::classify::Classify;
use crate::clock::Nanos;
use crate::sync::Arc;

use super::error::CircuitOpen;
use super::shared::Link;

/// The right to report one call's outcome to the breaker, for the
/// generation that admitted it.
///
/// A probe's permit holds a half-open slot: dropping the permit unused (the
/// service dropped after `poll_ready`, or the response future dropped
/// before the call ended) gives the slot back and records nothing.
///
/// Three words, and `Option<Permit>` too (the `Arc`'s niche): the response
/// future holds it as an `Option`, taken when the outcome is reported.
pub(crate) struct Permit {
    link: Arc<Link>,
    /// `generation << 1 | probe`.
    ticket: u64,
    /// When the call started (only read when timing slow calls).
    start: Nanos,
}

impl Permit {
    /// A closed-state admission of `generation`, starting now.
    #[inline]
    pub(crate) fn closed(link: Arc<Link>, generation: u32) -> Self {
        let start = start_of(&link);
        Self {
            link,
            ticket: u64::from(generation) << 1,
            start,
        }
    }

    /// A half-open probe of `generation` (started by [`Permit::start`]).
    #[inline]
    pub(crate) fn probe(link: Arc<Link>, generation: u32) -> Self {
        Self {
            link,
            ticket: (u64::from(generation) << 1) | 1,
            start: 0,
        }
    }

    #[inline]
    pub(crate) fn generation(&self) -> u32 {
        (self.ticket >> 1) as u32
    }

    #[inline]
    pub(crate) fn is_probe(&self) -> bool {
        self.ticket & 1 == 1
    }

    /// Marks the call as started now: a probe is reserved in `poll_ready`
    /// and called later.
    #[inline]
    pub(crate) fn start(&mut self) {
        self.start = start_of(&self.link);
    }

    /// Reports the outcome. The permit is spent: the caller drops it next
    /// (in place: moving it out first would copy it in wider loads than it
    /// was written with, stalling store-to-load forwarding).
    #[inline]
    fn finish(&mut self, outcome: crate::classify::Outcome) {
        let core = &self.link.core;
        core.observe().outcome(outcome);
        core.finish(self.generation(), self.is_probe(), self.start, outcome);
        // Reported: dropping it now must not give a probe slot back too.
        self.ticket &= !1;
    }
}

/// The start reading of a call through `link`: the clock only when the
/// breaker times slow calls.
#[inline]
fn start_of(link: &Link) -> Nanos {
    if link.core.times_calls() {
        link.core.now()
    } else {
        0
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        if self.is_probe() {
            self.link.core.release_probe(self.generation());
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("generation", &self.generation())
            .field("probe", &self.is_probe())
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The response future of [`CircuitBreaker`](super::CircuitBreaker):
    /// either the inner call, whose outcome it classifies and records when
    /// it ends, or an immediate [`CircuitOpen`] rejection.
    ///
    /// Dropping it before the call ends records nothing (and gives a
    /// probe's slot back).
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F>,
        permit: Option<Permit>,
        classifier: C,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called { #[pin] future: F },
        Rejected { retry_after: Duration },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(future: F, permit: Option<Permit>, classifier: C) -> Self {
        Self {
            kind: Kind::Called { future },
            permit,
            classifier,
        }
    }

    pub(crate) fn rejected(retry_after: Duration, classifier: C) -> Self {
        Self {
            kind: Kind::Rejected { retry_after },
            permit: None,
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

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Rejected { retry_after } => Poll::Ready(Err(Box::new(CircuitOpen {
                retry_after: *retry_after,
            }))),
            KindProj::Called { future } => {
                let result = ready!(future.poll(cx));
                if let Some(permit) = this.permit {
                    permit.finish(this.classifier.classify(&result));
                    *this.permit = None;
                }
                Poll::Ready(result.map_err(Into::into))
            }
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Called { .. } => "called",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .field("permit", &self.permit)
            .finish_non_exhaustive()
    }
}
