//! Retry with jittered exponential backoff, a shared retry budget, and
//! server hints.
//!
//! [`RetryLayer`] sends a failed request again after a delay from a
//! [`Backoff`](crate::Backoff), until it succeeds or a limit is reached:
//!
//! - **max attempts** per request (default 3, the first included);
//! - **max elapsed** time per request, measured on the clock from the first
//!   send, so slow calls count too: a retry whose delay would end past the
//!   limit is not attempted;
//! - a **budget** ([`RetryBudget`]) shared by every clone, so retries add at
//!   most a fixed fraction to the load when the upstream is down (see
//!   [`budget`](RetryBudget) for why max attempts alone are not enough);
//! - a **server hint** ([`RetryAfter`]): a result can demand a longer delay;
//!   a demand above [`max_retry_after`](RetryLayerBuilder::max_retry_after)
//!   means "do not retry". With feature `http`, [`HttpRetryAfter`] reads the
//!   `Retry-After` header (seconds or an HTTP date).
//!
//! What is retried is decided by a [`Classify`], the same
//! trait the circuit breaker uses: an [`Outcome::Failure`](crate::Outcome)
//! is retried. The default retries every `Err`; behind a server that answers
//! `Ok(503)`, use [`FailureWhenOk`](crate::classify::FailureWhenOk) or (feature
//! `http`) `ServerErrorsAsFailures`, or any predicate with
//! [`retry_if`](RetryLayerBuilder::retry_if).
//!
//! When the layer gives up it returns the last attempt's result unchanged:
//! retry adds no error type of its own.
//!
//! # Refusals from palisade layers below
//!
//! A [`CircuitOpen`](crate::circuit_breaker::CircuitOpen) or
//! [`RateLimited`](crate::RateLimited) from a layer under the retry (found
//! anywhere in the error's `source()` chain) was decided in this process
//! without calling the upstream. Retrying it at once would be refused again
//! (or hammer an open breaker), so retry handles it itself, before the
//! classifier is asked:
//!
//! - its `retry_after` **fits** when an attempt is left, the request was
//!   copied, the wait is at most
//!   [`max_retry_after`](RetryLayerBuilder::max_retry_after) (default: the
//!   backoff's `max_delay`, 60 s unless set) and it ends before
//!   [`max_elapsed`](RetryLayerBuilder::max_elapsed): the request is sent
//!   again after **exactly** that wait, neither backoff nor jitter added;
//! - otherwise, and always for
//!   [`InsufficientCapacity`](crate::rate_limit::InsufficientCapacity)
//!   (waiting never helps), it is **returned at once**.
//!
//! Either way it spends no retry budget: the budget guards the upstream
//! against retry storms, and these attempts never reached it. Counts:
//! [`RetryHandle::rejections_waited`], [`RetryHandle::rejections_returned`].
//! Set `max_retry_after` to the longest wait a caller should sit through:
//! a client in front of a breaker that opens for 30 s waits up to 30 s by
//! default; with `max_retry_after(Duration::from_secs(1))` it fails fast.
//! Why not give up at once always: a short refusal (a rate limit's few
//! milliseconds, the end of an open period) is exactly what a retry should
//! absorb for the caller.
//!
//! # Example
//!
//! ```
//! use palisade::classify::FailureWhenOk;
//! use palisade::retry::RetryBudget;
//! use palisade::{Jitter, RetryLayer};
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An upstream answering 503 twice, then 200.
//! let calls = Arc::new(AtomicU32::new(0));
//! let upstream = service_fn({
//!     let calls = calls.clone();
//!     move |_req: &'static str| {
//!         let n = calls.fetch_add(1, Ordering::SeqCst);
//!         async move { Ok::<u16, std::io::Error>(if n < 2 { 503 } else { 200 }) }
//!     }
//! });
//!
//! let retry = RetryLayer::exponential(Duration::from_millis(20))
//!     .max_attempts(4)
//!     .jitter(Jitter::Full)
//!     .budget(RetryBudget::ratio(0.2))
//!     .classifier(FailureWhenOk::new(|status: &u16| *status >= 500))
//!     .build()?;
//! let mut client = ServiceBuilder::new().layer(retry).service(upstream);
//!
//! let status = client.ready().await?.call("GET /").await?;
//! assert_eq!(status, 200);
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! # Ok(())
//! # }
//! ```
//!
//! # Requests that cannot be cloned
//!
//! A request is copied before each attempt that may be followed by another
//! (not before the last), with `Clone` by default or a
//! [`clone_request`](RetryLayerBuilder::clone_request) hook that may decline.
//! A request that was not copied is sent once, and its failure returned:
//! never a panic.
//!
//! # Differences from `tower::retry`
//!
//! - No `Policy` to write: backoff, jitter, limits, budget and hints are
//!   settings, and every bad setting is an error from `build()`.
//! - The budget is exact for fractional ratios (tower#857) and reads the
//!   clock on the success path only once per 16 requests (to age its
//!   counts).
//! - One random source per layer, seedable and shared by clones, so a test
//!   can replay the exact delays.
//! - The success path allocates nothing and takes no lock: one `Arc` clone,
//!   a clone of the request and of the inner service, with a budget one
//!   atomic add (and the sampled clock read above), and with
//!   [`max_elapsed`](RetryLayerBuilder::max_elapsed) one clock read for the
//!   request's deadline.
//!
//! # Observability
//!
//! Each retry emits a `tracing` event at `DEBUG` with the attempt number,
//! the delay and the reason; so does each decision to give up (max attempts,
//! max elapsed, budget, hint over the cap, request not clonable). Counts are
//! read from a [`RetryHandle`].

mod budget;
mod error;
pub mod events;
pub mod future;
mod handle;
#[cfg(feature = "http")]
mod hint;
mod hooks;
mod layer;
mod policy;

use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::Service;

pub use self::budget::RetryBudget;
pub use self::error::InvalidRetry;
pub use self::events::{BudgetRefused, RetryScheduled};
pub use self::future::ResponseFuture;
pub use self::handle::RetryHandle;
#[cfg(feature = "http")]
pub use self::hint::{HttpRetryAfter, parse_retry_after};
pub use self::hooks::{ByClone, CloneRequest, NoHint, RetryAfter, RetryIf};
pub use self::layer::{RetryLayer, RetryLayerBuilder};

use self::policy::Policy;
use crate::classify::Classify;

/// A service that retries failed calls to `S`; made by [`RetryLayer`].
///
/// Cloning it is cheap and shares the layer's state (random source, budget,
/// counts); the clone of the inner service it holds is as ready as `S`'s
/// `Clone` makes it (a Tower service clone starts not ready).
pub struct Retry<S, C = crate::classify::ErrorsAsFailures, K = ByClone, H = NoHint> {
    inner: S,
    policy: Arc<Policy<C, K, H>>,
}

impl<S, C, K, H> Retry<S, C, K, H> {
    pub(crate) fn new(inner: S, policy: Arc<Policy<C, K, H>>) -> Self {
        Self { inner, policy }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Counts shared with the layer and every other service it produced.
    pub fn handle(&self) -> RetryHandle {
        RetryHandle {
            state: self.policy.state.clone(),
        }
    }
}

impl<S, Req, C, K, H> Service<Req> for Retry<S, C, K, H>
where
    S: Service<Req> + Clone,
    S::Error: 'static,
    C: Classify<S::Response, S::Error>,
    K: CloneRequest<Req>,
    H: RetryAfter<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req, C, K, H>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    // Inlined, so the response future is written where the caller keeps it:
    // returned from an out-of-line call it is read back at once in wider
    // loads than it was written with, which stalls store-to-load forwarding
    // (most of this layer's measured cost before).
    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        let policy = &self.policy;
        policy.observe.metrics.attempt();
        if let Some(budget) = &policy.state.budget {
            budget.deposit();
        }
        let copy = if policy.may_retry_after(1) {
            policy.cloner.clone_request(&request)
        } else {
            None
        };
        if copy.is_none() {
            // No retry can follow: call in place, keep no service.
            let future = self.inner.call(request);
            return ResponseFuture::new(future, None, None, policy.clone(), None);
        }
        let deadline = policy.max_elapsed.and_then(deadline_after);
        // `self.inner` is the instance that was polled ready: it makes this
        // call and goes into the future for the retries, while a fresh clone
        // (not ready) takes its place here (tower-service's "be careful when
        // cloning inner services").
        let fresh = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, fresh);
        let future = ready.call(request);
        ResponseFuture::new(future, Some(ready), copy, policy.clone(), deadline)
    }
}

/// When a request started now must be done by (`max_elapsed`), out of line:
/// most layers set no `max_elapsed`.
#[inline(never)]
fn deadline_after(limit: std::time::Duration) -> Option<Instant> {
    Instant::now().checked_add(limit)
}

impl<S: Clone, C, K, H> Clone for Retry<S, C, K, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
        }
    }
}

impl<S: std::fmt::Debug, C, K, H> std::fmt::Debug for Retry<S, C, K, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}
