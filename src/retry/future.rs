//! The response future of [`Retry`](super::Retry): a pinned state machine
//! (calling, waiting, getting ready) in the shape of tower's retry future.
//!
//! On the success path it is the inner future plus a few words, and it
//! allocates nothing. The delay's `tokio::time::Sleep` is boxed, allocated
//! only when a retry waits: stored inline it would triple the future's size,
//! and the success path would pay for moving it (a `memmove` call per
//! request, most of the retry layer's cost when measured).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::Service;

use super::budget::Withdrawal;
use super::hooks::{CloneRequest, RetryAfter};
use super::policy::{Policy, Progress, Verdict};
use crate::classify::Classify;

pin_project! {
    /// The future [`Retry`](super::Retry) returns: the inner service's
    /// result, after as many attempts as the policy allows.
    ///
    /// Dropping it at any point cancels cleanly: the attempt in flight is
    /// dropped (cancelling it), a pending delay is abandoned, and a retry
    /// taken from the budget but never sent is given back.
    pub struct ResponseFuture<S, Req, C, K, H>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        // The delay before a retry, while `state` is `Waiting`. Beside the
        // state rather than in it, and behind `dyn`: the success path's
        // drop is then a null check, inlined, where a `Sleep` in the state
        // or boxed as itself is dropped through a call (measured).
        sleep: Option<Delay>,
        // The service retries are sent through. Present only when a retry
        // may happen: it was swapped out of the `Retry` that `call` was
        // made on (the `mem::replace` idiom), so it is driven ready again
        // before every retry.
        service: Option<S>,
        // A copy of the request for the next attempt, made before each
        // attempt that could be followed by another.
        request: Option<Req>,
        policy: Arc<Policy<C, K, H>>,
        attempts: u32,
        previous: Option<u64>,
        deadline: Option<Instant>,
        withdrawal: Option<Withdrawal>,
    }

    impl<S, Req, C, K, H> PinnedDrop for ResponseFuture<S, Req, C, K, H>
    where
        S: Service<Req>,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(withdrawal) = this.withdrawal.take() {
                this.policy.refund(withdrawal);
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // An attempt is in flight.
        Called {
            #[pin]
            future: F,
        },
        // Waiting out the delay (the future's `sleep`) before a retry.
        Waiting,
        // Driving the service ready for the retry.
        Retrying,
    }
}

/// Moves to the state that sends the next attempt after `delay`
/// nanoseconds.
fn wait<F>(delay: u64, mut state: Pin<&mut State<F>>, sleep: &mut Option<Delay>) {
    if delay == 0 {
        state.set(State::Retrying);
        return;
    }
    *sleep = Some(Box::pin(tokio::time::sleep(Duration::from_nanos(delay))));
    state.set(State::Waiting);
}

/// A boxed `tokio::time::Sleep`, seen as a plain future (see the field).
type Delay = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

impl<S, Req, C, K, H> ResponseFuture<S, Req, C, K, H>
where
    S: Service<Req>,
{
    pub(crate) fn new(
        future: S::Future,
        service: Option<S>,
        request: Option<Req>,
        policy: Arc<Policy<C, K, H>>,
        deadline: Option<Instant>,
    ) -> Self {
        Self {
            state: State::Called { future },
            sleep: None,
            service,
            request,
            policy,
            attempts: 1,
            previous: None,
            deadline,
            withdrawal: None,
        }
    }
}

impl<S, Req, C, K, H> Future for ResponseFuture<S, Req, C, K, H>
where
    S: Service<Req>,
    S::Error: 'static,
    C: Classify<S::Response, S::Error>,
    K: CloneRequest<Req>,
    H: RetryAfter<S::Response, S::Error>,
{
    type Output = Result<S::Response, S::Error>;

    // The first attempt's success is decided inline; anything else (a
    // failure, a wait, a retry) goes on out of line, in `drive`.
    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.as_mut().project();
        if let StateProj::Called { future } = this.state.project() {
            let result = ready!(future.poll(cx));
            let progress = Progress {
                attempts: *this.attempts,
                previous: *this.previous,
                deadline: *this.deadline,
                has_copy: this.request.is_some() && this.service.is_some(),
            };
            match this.policy.decide(&result, progress) {
                Verdict::Return => return Poll::Ready(result),
                verdict => self.as_mut().follow(verdict),
            }
        }
        self.drive(cx)
    }
}

impl<S, Req, C, K, H> ResponseFuture<S, Req, C, K, H>
where
    S: Service<Req>,
    S::Error: 'static,
    C: Classify<S::Response, S::Error>,
    K: CloneRequest<Req>,
    H: RetryAfter<S::Response, S::Error>,
{
    /// Moves to the wait a verdict other than `Return` calls for.
    fn follow(self: Pin<&mut Self>, verdict: Verdict) {
        let this = self.project();
        follow(
            verdict,
            this.withdrawal,
            this.previous,
            this.state,
            this.sleep,
        );
    }

    /// The state machine past the first attempt's answer.
    #[inline(never)]
    fn drive(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<S::Response, S::Error>> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    let result = ready!(future.poll(cx));
                    let progress = Progress {
                        attempts: *this.attempts,
                        previous: *this.previous,
                        deadline: *this.deadline,
                        has_copy: this.request.is_some() && this.service.is_some(),
                    };
                    match this.policy.decide(&result, progress) {
                        Verdict::Return => return Poll::Ready(result),
                        verdict => follow(
                            verdict,
                            this.withdrawal,
                            this.previous,
                            this.state.as_mut(),
                            this.sleep,
                        ),
                    }
                }
                StateProj::Waiting => {
                    let Some(sleep) = this.sleep.as_mut() else {
                        unreachable!("a wait is entered with its sleep")
                    };
                    ready!(sleep.as_mut().poll(cx));
                    this.state.set(State::Retrying);
                }
                StateProj::Retrying => {
                    let (Some(service), Some(_)) = (this.service.as_mut(), this.request.as_ref())
                    else {
                        unreachable!("a retry is decided only with a service and a request copy")
                    };
                    if let Err(error) = ready!(service.poll_ready(cx)) {
                        // The retry is not sent: give its budget back.
                        if let Some(withdrawal) = this.withdrawal.take() {
                            this.policy.refund(withdrawal);
                        }
                        return Poll::Ready(Err(error));
                    }
                    let Some(request) = this.request.take() else {
                        unreachable!("checked above")
                    };
                    *this.attempts = this.attempts.saturating_add(1);
                    if this.policy.may_retry_after(*this.attempts) {
                        *this.request = this.policy.cloner.clone_request(&request);
                    }
                    // The budget's retry is spent now that it is sent.
                    *this.withdrawal = None;
                    this.policy.state.retries.fetch_add(1, Relaxed);
                    this.policy.observe.metrics.retry_sent();
                    let future = service.call(request);
                    this.state.set(State::Called { future });
                }
            }
        }
    }
}

/// Moves to the wait a verdict other than `Return` calls for.
fn follow<F>(
    verdict: Verdict,
    withdrawal: &mut Option<Withdrawal>,
    previous: &mut Option<u64>,
    state: Pin<&mut State<F>>,
    sleep: &mut Option<Delay>,
) {
    match verdict {
        Verdict::Return => unreachable!("returned by the caller"),
        Verdict::Retry {
            delay,
            withdrawal: taken,
        } => {
            *withdrawal = taken;
            *previous = Some(delay);
            wait(delay, state, sleep);
        }
        // A local rejection's wait is not a backoff step: `previous`
        // (decorrelated jitter) stays as it was.
        Verdict::WaitOut { delay } => wait(delay, state, sleep),
    }
}

impl<S, Req, C, K, H> std::fmt::Debug for ResponseFuture<S, Req, C, K, H>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.attempts)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}
