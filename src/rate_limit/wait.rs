//! Wait mode: the service and its response future.
//!
//! An unkeyed limiter without a cost function waits in `poll_ready` (see
//! `poll_wait` in the parent module: one timer per service instance, FIFO
//! reservations). A keyed or costed one cannot: the key and the cost are
//! read from the request, which `poll_ready` does not see. It decides in
//! `call` instead, and the response future waits before calling the inner
//! service:
//!
//! - admitted at once: the inner service (made ready by `poll_ready`) is
//!   called in `call`, as in reject mode;
//! - admitted later (a token bucket books the request's conforming time, at
//!   most `max_wait` ahead): the future sleeps until then, holding the
//!   reservation, which it gives back if dropped first;
//! - not before a window frees capacity (sliding window and log, or several
//!   limits): the future sleeps until the `retry_after` it was told, tries
//!   again (someone else may have taken the capacity) and fails with the
//!   last [`RateLimited`](super::RateLimited) once the bound passes;
//! - refused beyond `max_wait`: the future fails at once.
//!
//! # Which service the future calls
//!
//! The future owns a *clone* of the inner service and polls it ready only
//! after the wait, then calls it: the Tower contract holds for the clone
//! (it is called only after its own ready `poll_ready`). The alternative,
//! the `mem::replace` idiom (move the instance `poll_ready` made ready into
//! the future), would hold that readiness while sleeping: for an inner
//! service whose readiness is a reservation (a concurrency permit, a
//! buffer slot) that is up to `max_wait` of capacity taken from requests
//! that could go now. The instance `poll_ready` made ready stays in the
//! service and serves the next call; the clone's readiness is awaited after
//! the limiter admitted, and the reservation is held (and given back on
//! drop) until the clone is ready and called.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::Service;

use super::future::{Refusal, ResponseFuture};
use super::headers::{ApplyStamp, ResponseHeaders};
use super::limiter::{Limiter, Outcome};
use super::mode::Wait;
use super::request::{Cost, KeyExtractor};
use super::store::Undo;
use super::{RateLimit, Slot};
use crate::BoxError;
use crate::clock::{Nanos, duration_to_nanos};

impl<S, K, C, H, Req> Service<Req> for RateLimit<S, K, C, H, Wait>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    K: KeyExtractor<Req>,
    C: Cost<Req>,
    H: ResponseHeaders,
    H::Stamp: ApplyStamp<S::Response> + Default,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = WaitFuture<S, Req, H>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if !self.limiter.waits_in_call {
            ready!(self.poll_wait(cx, self.max_wait.unwrap_or(0)));
            if matches!(self.slot, Slot::Refused(_)) {
                // `call` answers with the error without calling the inner
                // service, so its readiness is not needed.
                return Poll::Ready(Ok(()));
            }
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        if !self.limiter.waits_in_call {
            return WaitFuture::now(self.call_now(req));
        }
        let max_wait = self.max_wait.unwrap_or(0);
        let cost = self.cost.cost(&req);
        if cost == 0 {
            // Not counted against the limit: as in reject mode.
            return WaitFuture::now(self.call_now(req));
        }
        let key = match self.key_of(&req) {
            Ok(key) => key,
            Err(r) => {
                // No key identified: no key to report.
                self.refused(&r, || None);
                return WaitFuture::now(ResponseFuture::refused(r));
            }
        };
        let now = self.limiter.clock.now();
        let (wake, reserved) = match self.limiter.acquire_at(now, key, cost, max_wait) {
            Outcome::Admit { at, undo } if at <= now => {
                self.limiter.counters.admit();
                self.limiter.observe.admitted();
                self.limiter.observe.waited(0);
                let limiter = &self.limiter;
                let stamp = self.headers.stamp(|| limiter.quota_after(at, &undo));
                return WaitFuture::now(ResponseFuture::called(self.inner.call(req), stamp));
            }
            Outcome::Admit { at, undo } => (at, Some((at, undo))),
            Outcome::Deny(e) if duration_to_nanos(e.retry_after) <= max_wait => {
                (now + duration_to_nanos(e.retry_after), None)
            }
            Outcome::Deny(e) => return self.refuse(Refusal::Limited(e), key),
            Outcome::Never(e) => return self.refuse(Refusal::Never(e), key),
        };
        self.defer(
            req,
            key,
            cost,
            (now, now.saturating_add(max_wait)),
            wake,
            reserved,
        )
    }
}

impl<S, K, C, H, M> RateLimit<S, K, C, H, M> {
    /// A future that waits until `wake`, then (admitted) calls a clone of
    /// the inner service, or (not yet) decides again. Kept out of `call`:
    /// the path admitted at once stays small.
    #[cold]
    #[inline(never)]
    fn defer<Req>(
        &mut self,
        req: Req,
        key: u64,
        cost: u64,
        (start, deadline): (Nanos, Nanos),
        wake: Nanos,
        reserved: Option<(Nanos, Undo)>,
    ) -> WaitFuture<S, Req, H>
    where
        S: Service<Req> + Clone,
        H: ResponseHeaders,
    {
        WaitFuture {
            kind: Kind::Waiting {
                waiting: Box::pin(Waiting {
                    sleep: tokio::time::sleep_until(self.limiter.clock.instant_at(wake)),
                    waiter: Waiter {
                        svc: self.inner.clone(),
                        req: Some(req),
                        limiter: self.limiter.clone(),
                        headers: self.headers.clone(),
                        key,
                        cost,
                        start,
                        deadline,
                        reserved,
                    },
                }),
            },
        }
    }

    fn refuse<Req>(&self, r: Refusal, key: u64) -> WaitFuture<S, Req, H>
    where
        S: Service<Req>,
        H: ResponseHeaders,
    {
        let keyed = self.limiter.is_keyed();
        self.refused(&r, || keyed.then_some(key));
        WaitFuture::now(ResponseFuture::refused(r))
    }
}

/// What a waiting request holds: the clone it will call, the request, and
/// its reservation (given back if dropped before the call).
struct Waiter<S, Req, H> {
    svc: S,
    req: Option<Req>,
    limiter: Arc<Limiter>,
    headers: H,
    key: u64,
    cost: u64,
    /// When the request arrived (for the wait histogram).
    start: Nanos,
    /// Give up once a retry would land after this.
    deadline: Nanos,
    /// Admitted, conforming at `.0`; `None` while waiting for a window.
    reserved: Option<(Nanos, Undo)>,
}

impl<S, Req, H> Drop for Waiter<S, Req, H> {
    /// A reservation never used is given back where the algorithm can.
    fn drop(&mut self) {
        if let Some((_, undo)) = self.reserved.take() {
            self.limiter.release(self.key, undo);
        }
    }
}

pin_project! {
    /// The future of a wait-mode [`RateLimit`]: the inner call, a refusal
    /// that resolves at once, or a request waiting for the limiter (keyed
    /// or costed limiters, see [the module docs](super#wait-mode)), then
    /// for a clone of the inner service to be ready, before it is called.
    /// Dropped while waiting, it gives its reservation back.
    pub struct WaitFuture<S, Req, H>
    where
        S: Service<Req>,
        H: ResponseHeaders,
    {
        #[pin]
        kind: Kind<S, Req, H>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<S, Req, H>
    where
        S: Service<Req>,
        H: ResponseHeaders,
    {
        Now { #[pin] fut: ResponseFuture<S::Future, H::Stamp> },
        // Boxed: the future of a request admitted at once stays small (one
        // allocation per request that waits, none otherwise).
        Waiting { waiting: Pin<Box<Waiting<S, Req, H>>> },
    }
}

pin_project! {
    /// A request waiting: its timer and what it holds.
    #[project = WaitingProj]
    struct Waiting<S, Req, H> {
        #[pin]
        sleep: Sleep,
        waiter: Waiter<S, Req, H>,
    }
}

impl<S, Req, H> WaitFuture<S, Req, H>
where
    S: Service<Req>,
    H: ResponseHeaders,
{
    #[inline]
    fn now(fut: ResponseFuture<S::Future, H::Stamp>) -> Self {
        Self {
            kind: Kind::Now { fut },
        }
    }
}

impl<S, Req, H> fmt::Debug for WaitFuture<S, Req, H>
where
    S: Service<Req>,
    H: ResponseHeaders,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.kind {
            Kind::Now { .. } => "now",
            Kind::Waiting { waiting } if waiting.waiter.reserved.is_some() => "reserved",
            Kind::Waiting { .. } => "waiting",
        };
        f.debug_struct("WaitFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<S, Req, H> Future for WaitFuture<S, Req, H>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    H: ResponseHeaders,
    H::Stamp: ApplyStamp<S::Response> + Default,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        if let KindProj::Now { fut } = kind.as_mut().project() {
            return fut.poll(cx);
        }
        poll_waiting(kind, cx)
    }
}

/// The waiting states of [`WaitFuture::poll`], apart from the path that
/// calls at once.
#[cold]
#[inline(never)]
fn poll_waiting<S, Req, H>(
    mut kind: Pin<&mut Kind<S, Req, H>>,
    cx: &mut Context<'_>,
) -> Poll<Result<S::Response, BoxError>>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    H: ResponseHeaders,
    H::Stamp: ApplyStamp<S::Response> + Default,
{
    {
        let next = match kind.as_mut().project() {
            KindProj::Now { fut } => return fut.poll(cx),
            KindProj::Waiting { waiting } => loop {
                let WaitingProj { mut sleep, waiter } = waiting.as_mut().project();
                ready!(sleep.as_mut().poll(cx));
                let Some((at, undo)) = waiter.reserved else {
                    // A window's wait is over: decide again.
                    let now = waiter.limiter.clock.now();
                    let budget = waiter.deadline.saturating_sub(now);
                    match waiter
                        .limiter
                        .acquire_at(now, waiter.key, waiter.cost, budget)
                    {
                        Outcome::Admit { at, undo } => {
                            waiter.reserved = Some((at, undo));
                            if at > now {
                                sleep.as_mut().reset(waiter.limiter.clock.instant_at(at));
                            }
                        }
                        Outcome::Deny(e) if duration_to_nanos(e.retry_after) <= budget => {
                            let at = now + duration_to_nanos(e.retry_after);
                            sleep.as_mut().reset(waiter.limiter.clock.instant_at(at));
                        }
                        Outcome::Deny(e) => break Err(Refusal::Limited(e)),
                        Outcome::Never(e) => break Err(Refusal::Never(e)),
                    }
                    continue;
                };
                // Admitted and due: the clone must be ready before its call.
                if let Err(e) = ready!(waiter.svc.poll_ready(cx)) {
                    // Not sent: the reservation goes back (by `Waiter`'s drop).
                    return Poll::Ready(Err(e.into()));
                }
                waiter.reserved = None;
                waiter.limiter.counters.admit();
                waiter.limiter.observe.admitted();
                waiter
                    .limiter
                    .observe
                    .waited(at.saturating_sub(waiter.start));
                let limiter = &waiter.limiter;
                let stamp = waiter.headers.stamp(|| limiter.quota_after(at, &undo));
                let req = waiter
                    .req
                    .take()
                    .expect("WaitFuture polled after completion");
                break Ok(ResponseFuture::called(waiter.svc.call(req), stamp));
            },
        };
        match next {
            Ok(fut) => {
                kind.set(Kind::Now { fut });
                match kind.project() {
                    KindProj::Now { fut } => fut.poll(cx),
                    KindProj::Waiting { .. } => unreachable!("just set"),
                }
            }
            Err(r) => {
                // The waiter's limiter counts the refusal; nothing was reserved.
                if let KindProj::Waiting { waiting } = kind.as_mut().project() {
                    let waiter = &waiting.waiter;
                    waiter.limiter.counters.reject();
                    let keyed = waiter.limiter.is_keyed();
                    waiter
                        .limiter
                        .observe
                        .refused(&r, || keyed.then_some(waiter.key));
                    tracing::debug!("rate limited: the wait would exceed max_wait");
                }
                kind.set(Kind::Now {
                    fut: ResponseFuture::refused(r),
                });
                match kind.project() {
                    KindProj::Now { fut } => fut.poll(cx),
                    KindProj::Waiting { .. } => unreachable!("just set"),
                }
            }
        }
    }
}
