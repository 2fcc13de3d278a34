//! [`KeyedCircuitBreaker`]: one breaker per key (upstream host, route,
//! tenant) behind one layer.
//!
//! # Deciding in `call`
//!
//! An unkeyed breaker decides in `poll_ready`, but the key is only known
//! from the request, in `call`. So a keyed breaker's `poll_ready` only
//! polls the inner service, and `call` looks the key's breaker up and
//! decides there: a closed breaker admits, a half-open one reserves a
//! probe slot (the same compare-and-swap as the unkeyed breaker, so at
//! most `k` probes per key are in flight across every clone and thread),
//! an open one answers with [`CircuitOpen`](super::CircuitOpen) from the
//! response future, without calling the inner service.
//!
//! The inner service's readiness is kept intact: it is called only after
//! it was polled ready, and a rejected call leaves it ready for the next
//! call (a readiness reserved below, such as a concurrency permit, stays
//! reserved until then or until the service is dropped, as for any ready
//! service not yet called). What a keyed breaker cannot do is refuse in
//! `poll_ready`: a caller learns of the rejection from the response future.

use std::fmt;
use std::hash::Hash;
use std::task::{Context, Poll};

use tower::Service;

use crate::BoxError;
use crate::classify::{Classify, ErrorsAsFailures};
use crate::rate_limit::KeyExtractor;

use super::future::{Permit, ResponseFuture};
use super::keyed_handle::KeyedCircuitBreakerHandle;
use super::registry::Registry;
use super::state::Decision;

/// A service guarded by one circuit breaker per key; made by
/// [`KeyedCircuitBreakerLayer`](super::KeyedCircuitBreakerLayer).
///
/// Its error type is [`BoxError`], as for
/// [`CircuitBreaker`](super::CircuitBreaker).
///
/// # Panics
///
/// `call` panics if `poll_ready` did not return `Ready(Ok(()))` on this
/// instance first (the Tower contract).
pub struct KeyedCircuitBreaker<S, X, C = ErrorsAsFailures> {
    inner: S,
    registry: std::sync::Arc<Registry>,
    extractor: X,
    classifier: C,
    ready: bool,
}

impl<S, X, C> KeyedCircuitBreaker<S, X, C> {
    pub(crate) fn from_parts(
        inner: S,
        registry: std::sync::Arc<Registry>,
        extractor: X,
        classifier: C,
    ) -> Self {
        Self {
            inner,
            registry,
            extractor,
            classifier,
            ready: false,
        }
    }

    /// A handle on the breakers this service shares with its clones.
    pub fn handle(&self) -> KeyedCircuitBreakerHandle {
        KeyedCircuitBreakerHandle::new(self.registry.clone())
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, X: Clone, C: Clone> Clone for KeyedCircuitBreaker<S, X, C> {
    /// Shares the breakers, but not readiness: the clone starts not ready.
    fn clone(&self) -> Self {
        Self::from_parts(
            self.inner.clone(),
            self.registry.clone(),
            self.extractor.clone(),
            self.classifier.clone(),
        )
    }
}

impl<S: fmt::Debug, X, C> fmt::Debug for KeyedCircuitBreaker<S, X, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .field("keys", &self.registry.len())
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

impl<S, X, C, Req> Service<Req> for KeyedCircuitBreaker<S, X, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    X: KeyExtractor<Req>,
    X::Key: Hash + fmt::Debug,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The breaker is chosen by the request: nothing to decide here.
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.ready = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => {
                self.ready = false;
                Poll::Ready(Err(err.into()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        assert!(
            std::mem::take(&mut self.ready),
            "KeyedCircuitBreaker::call without a ready poll_ready on this instance (Tower contract)"
        );
        let key = self.extractor.extract(&request);
        let permit = match self.registry.lookup(&key) {
            // No room for a new key: called unguarded (counted by the handle).
            None => None,
            Some(link) => match link.core.acquire() {
                Decision::Closed(generation) => Some(Permit::closed(link, generation)),
                Decision::Probe(generation) => {
                    let mut probe = Permit::probe(link, generation);
                    probe.start();
                    Some(probe)
                }
                Decision::Pass => None,
                Decision::Reject(retry_after) => {
                    // The inner service stays ready below; the next
                    // `poll_ready` finds it so (reserving nothing twice).
                    link.core.count_rejection(retry_after);
                    return ResponseFuture::rejected(retry_after, self.classifier.clone());
                }
            },
        };
        ResponseFuture::called(self.inner.call(request), permit, self.classifier.clone())
    }
}
