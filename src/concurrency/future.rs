//! [`ResponseFuture`]: the inner call's future, holding its permit until it
//! ends or is dropped.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use crate::BoxError;
use crate::classify::{Classify, Outcome};
use crate::clock::Nanos;
use crate::sync::Arc;

use super::error::Overloaded;
use super::limiter::{Limiter, Sample};

/// `start` of a permit whose call is not timed.
const UNTIMED: Nanos = Nanos::MAX;

/// One admitted call's place under the limit. Dropping it (the service
/// dropped after `poll_ready`, the response future dropped before the call
/// ended, or the call ended) gives the place back, exactly once.
///
/// Two words, no flag byte: moved on every call, and a byte written next to
/// a word read back stalls the store buffer.
pub(crate) struct Permit {
    limiter: Arc<Limiter>,
    /// When the call started, or [`UNTIMED`] (a clock reading never gets
    /// there: 584 years).
    start: Nanos,
}

impl Permit {
    #[inline]
    pub(crate) fn new(limiter: Arc<Limiter>, timed: bool) -> Self {
        Self {
            limiter,
            start: if timed { 0 } else { UNTIMED },
        }
    }

    #[inline]
    fn timed(&self) -> bool {
        self.start != UNTIMED
    }

    /// Marks the call as started now (reads the clock only if timed).
    #[inline]
    pub(crate) fn start(&mut self) {
        if self.timed() {
            self.start = self.limiter.now().min(UNTIMED - 1);
        }
    }

    /// Gives the place back and, if timed, records the outcome.
    #[inline]
    fn finish(self, outcome: Outcome) {
        if self.timed() {
            let sample = match outcome {
                Outcome::Success => Some(Sample::Latency),
                Outcome::Failure => Some(Sample::Drop),
                // A local rejection from below, a client's own mistake: says
                // nothing about the upstream's latency or load.
                Outcome::Ignored => None,
            };
            if let Some(sample) = sample {
                self.limiter.record(self.start, sample);
            }
        }
        // Dropping `self` releases.
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        self.limiter.release();
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("timed", &self.timed())
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The response future of [`ConcurrencyLimit`](super::ConcurrencyLimit):
    /// the inner call, holding its permit until it ends (and recording its
    /// latency, or a drop, when it was sampled), or an immediate
    /// [`Overloaded`] refusal.
    ///
    /// Dropping it before the call ends gives the permit back and records
    /// nothing.
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
        Refused { overloaded: Overloaded },
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn called(future: F, permit: Permit, classifier: C) -> Self {
        Self {
            kind: Kind::Called { future },
            permit: Some(permit),
            classifier,
        }
    }

    pub(crate) fn refused(overloaded: Overloaded, classifier: C) -> Self {
        Self {
            kind: Kind::Refused { overloaded },
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

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Refused { overloaded } => Poll::Ready(Err(Box::new(*overloaded))),
            KindProj::Called { future } => {
                let result = ready!(future.poll(cx));
                if let Some(permit) = this.permit.take() {
                    permit.finish(this.classifier.classify(&result));
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
            Kind::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .field("permit", &self.permit)
            .finish_non_exhaustive()
    }
}
