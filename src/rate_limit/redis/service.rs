//! The service and its response future: the decision is awaited in the
//! future, then the inner service is called.

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tower::Service;

use super::super::error::UnknownKey;
use super::super::future::Refusal;
use super::super::handle::RateLimitHandle;
use super::super::request::{Cost, KeyExtractor, KeyStatus};
use super::key::StoreKey;
use super::shared::Shared;
use crate::BoxError;

/// A service limited through Redis by a [`RateLimitLayer`](crate::RateLimitLayer)
/// built with [`redis`](crate::rate_limit::RateLimitBuilder::redis). Cheap to
/// clone; clones share the limiter.
///
/// `poll_ready` forwards the inner service's readiness; `call` takes the
/// ready inner service (leaving a clone in its place, the Tower
/// `mem::replace` idiom) into the response future, which awaits the
/// decision and only then calls it. A refused request never reaches the
/// inner service. Dropping the future at any point calls nothing and, once
/// Redis has admitted, loses only that admission.
pub struct RedisRateLimit<S, K, C> {
    inner: S,
    shared: Arc<Shared>,
    key: K,
    cost: C,
}

impl<S, K, C> RedisRateLimit<S, K, C> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>, key: K, cost: C) -> Self {
        Self {
            inner,
            shared,
            key,
            cost,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// A handle on the limiter's counts.
    pub fn handle(&self) -> RateLimitHandle {
        self.shared.handle()
    }
}

impl<S: Clone, K: Clone, C: Clone> Clone for RedisRateLimit<S, K, C> {
    fn clone(&self) -> Self {
        Self::new(
            self.inner.clone(),
            self.shared.clone(),
            self.key.clone(),
            self.cost.clone(),
        )
    }
}

impl<S: fmt::Debug, K, C> fmt::Debug for RedisRateLimit<S, K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisRateLimit")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl<S, K, C, Req> Service<Req> for RedisRateLimit<S, K, C>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    K: KeyExtractor<Req>,
    K::Key: StoreKey,
    C: Cost<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // The instance polled ready goes into the future; its clone, not
        // yet ready, stays (tower-service's "be careful when cloning").
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        let cost = self.cost.cost(&req);
        if cost == 0 {
            // As in memory: free requests pass uncounted against the limit.
            self.shared.limiter.counters.admit();
            self.shared.limiter.observe.admitted();
            return ResponseFuture {
                state: State::Called {
                    fut: inner.call(req),
                },
            };
        }
        let mut key = self.shared.prefix.clone();
        let mut refused = None;
        if self.shared.limiter.is_keyed() {
            let extracted = self.key.extract(&req);
            // As in memory: an unknown client is counted, and refused when
            // the extractor is strict, without asking Redis.
            match self.key.status(&extracted) {
                KeyStatus::Known => {}
                KeyStatus::Unknown => self.shared.limiter.counters.unknown_key(),
                KeyStatus::Refuse => {
                    self.shared.limiter.counters.unknown_key();
                    let refusal = Refusal::Unknown(UnknownKey);
                    self.shared.limiter.observe.refused(&refusal, || None);
                    refused = Some(refusal);
                }
            }
            extracted.write_key(&mut key);
        }
        let decision: Decision = match refused {
            Some(refusal) => Box::pin(std::future::ready(Err(refusal))),
            None => Box::pin(self.shared.clone().decide(key, cost)),
        };
        ResponseFuture {
            state: State::Deciding {
                decision,
                inner: Some(inner),
                req: Some(req),
            },
        }
    }
}

type Decision = Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send>>;

pin_project! {
    /// The future of a [`RedisRateLimit`]: the decision, then the inner
    /// call.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        Deciding {
            decision: Decision,
            inner: Option<S>,
            req: Option<Req>,
        },
        Called {
            #[pin]
            fut: S::Future,
        },
        Done,
    }
}

impl<S: Service<Req>, Req> fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Deciding { .. } => "deciding",
            State::Called { .. } => "called",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Deciding {
                    decision,
                    inner,
                    req,
                } => match ready!(decision.as_mut().poll(cx)) {
                    Ok(()) => {
                        let (Some(mut inner), Some(req)) = (inner.take(), req.take()) else {
                            unreachable!("a decision resolves once");
                        };
                        let fut = inner.call(req);
                        state.set(State::Called { fut });
                    }
                    Err(refusal) => {
                        refusal.trace(true);
                        state.set(State::Done);
                        return Poll::Ready(Err(refusal.into()));
                    }
                },
                StateProj::Called { fut } => return fut.poll(cx).map_err(Into::into),
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}
