//! Adaptive concurrency limiting: admit as many calls at once as the
//! upstream can take without queueing, found from latency, and refuse the
//! rest at once.
//!
//! A fixed limit is a guess: too low wastes the upstream, too high lets a
//! queue build inside it, where every call waits behind the excess
//! (latency grows with every call held beyond its capacity). An adaptive
//! limit watches the latency of the calls it admits and moves the limit to
//! where latency stays near what the upstream shows when it is not
//! queueing (Netflix's concurrency-limits, Envoy's adaptive concurrency
//! filter). Excess calls are refused with [`Overloaded`], a local
//! rejection: the caller learns at once, rather than after a queue.
//!
//! ```
//! use palisade::concurrency::Overloaded;
//! use palisade::{BoxError, ConcurrencyLimitLayer};
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let limit = ConcurrencyLimitLayer::gradient2()
//!     .initial_limit(2)
//!     .min_limit(1)
//!     .max_limit(100)
//!     .build()?;
//! let handle = limit.handle();
//! let mut svc = ServiceBuilder::new().layer(limit).service(service_fn(|n: u32| async move {
//!     tokio::time::sleep(Duration::from_millis(10)).await;
//!     Ok::<_, std::io::Error>(n)
//! }));
//!
//! let first = svc.ready().await?.call(1);
//! let second = svc.ready().await?.call(2);
//! let err = svc.ready().await?.call(3).await.unwrap_err(); // two in flight: refused at once
//! assert_eq!(err.downcast_ref::<Overloaded>(), Some(&Overloaded { limit: 2, in_flight: 2 }));
//! assert_eq!((first.await?, second.await?), (1, 2));
//! assert_eq!((handle.in_flight(), handle.refused()), (0, 1));
//! # Ok(())
//! # }
//! ```
//!
//! # Algorithms
//!
//! Each moves the limit once per **sample window** (about two no-load
//! round trips, at least 10 timed calls), from the window's mean latency of
//! successful calls, its drops (calls the [classifier](crate::classify)
//! counts as failures) and whether demand reached the limit (a limit that
//! demand never reaches does not grow; Gradient2 does not move it at all,
//! so a quiet spell does not shrink it before the next burst).
//!
//! - **Gradient2** ([`ConcurrencyLimitLayer::gradient2`], the default
//!   choice): `gradient = clamp(tolerance * baseline / rtt, 0.5, 1)`,
//!   `limit' = gradient * limit`, plus `sqrt(limit)` while latency is
//!   within half the tolerance, smoothed. `baseline` is the no-load
//!   latency, *measured*: once an epoch (after 10, 20, 40, then every 100
//!   windows) a probe holds the limit at 3/4 for two windows, the first to
//!   drain any queue, the second to measure, as Envoy re-measures its
//!   `minRTT` at low concurrency. Netflix's Gradient2 uses a long
//!   exponential average of all samples there, which climbs with the very
//!   queue it should detect, so its limit settles at about `tolerance`
//!   (1.5 by default) times the capacity and creeps up from there;
//!   tower-acc's port inherits that. (A minimum of window means would not
//!   climb, but sits below the typical mean by the noise of the means:
//!   on a noisy upstream the limit then shrinks to the minimum.) On an
//!   upstream with `C` workers holding `L > C` calls, latency is `L / C`
//!   times the no-load latency, so each step heads for `tolerance * C`.
//!   The default tolerance, 1.1, settles within about 10 % above the
//!   capacity.
//! - **AIMD** ([`ConcurrencyLimitLayer::aimd`]): `+1` after a window that
//!   reached the limit, `x 0.9` after one with a drop or a mean latency
//!   above a threshold you give. Predictable; slow to grow; it needs you to
//!   know the latency that means trouble.
//! - **Fixed** ([`ConcurrencyLimitLayer::fixed`]): a fixed limit refused at
//!   once beyond it.
//!
//! `tests/concurrency_sim.rs` runs each on a simulated upstream beside
//! tower-acc's Gradient2 and tower-resilience's AIMD; `cargo run --example
//! adaptive_concurrency` prints a timeline. The limit moves are `tracing`
//! events (target `palisade::concurrency`, level `DEBUG`); the
//! [handle](ConcurrencyLimitHandle) reads the current limit.
//!
//! # Admission and the hot path
//!
//! One atomic word holds the calls in flight: admission is one load of the
//! limit and one compare-and-swap, release one `fetch_sub`, so no clone on
//! any thread is ever admitted while `limit` calls are in flight, and no
//! call takes a lock. A call reads the clock (twice) only if it is
//! sampled: every call while the limit is below 16, then one in `2^k`
//! admissions with `2^k` about `limit / 8`, so a window (two round trips)
//! still sees about 16 samples at the limit; never under a fixed limit. The algorithm runs when a sampled call ends after its
//! window's end, under a lock taken with `try_lock` (a call that finds it
//! taken moves on).
//!
//! Permits are reserved in `poll_ready` and released when the response
//! future completes or is dropped, when the service is dropped before
//! `call`, or when the inner service's `poll_ready` fails. Calling
//! `poll_ready` twice reserves once; a clone starts without a reservation.
//! A call refused in `poll_ready` is refused by its response future
//! (`poll_ready` is ready: tower treats an error there as a dead service).
//!
//! With [`max_wait`](ConcurrencyLimitBuilder::max_wait), `poll_ready`
//! waits up to that long for a place, woken when a call ends or the limit
//! grows (one `tokio::time::Sleep` per service instance, made the first
//! time it waits), then refuses.
//!
//! # Overloaded and retry
//!
//! [`Overloaded`] is a local rejection
//! ([`local_rejection`](crate::classify::local_rejection)): no breaker
//! counts it and retry spends no budget on it. Its
//! [`LocalRejection::retry_after`](crate::classify::LocalRejection) is
//! `None`, so retry returns it **at once**. A concurrency refusal has no
//! honest wait to report: a place frees when some call ends, which nobody
//! can predict, and under sustained overload a retry in the same process
//! offers the same excess to the same limit again and only delays the
//! answer. Shedding at once is the point: the caller (or the balancer in
//! front) can go elsewhere or degrade. To queue briefly for a place, use
//! [`max_wait`](ConcurrencyLimitBuilder::max_wait), which waits for the
//! event itself rather than for a guess.
//!
//! # Where it goes in a stack
//!
//! Nearest the upstream it protects, under the breaker and retry: it
//! measures the latency of what it wraps. A drop (by default any `Err` of
//! the upstream) shrinks the limit; palisade's own refusals from below are
//! ignored.
//!
//! # Differences from `tower::limit::ConcurrencyLimit`
//!
//! tower's limit is fixed and waits in `poll_ready` until a place frees
//! (with no bound); this one adapts, and refuses at once (or after a
//! bounded wait) with an error that says so.

mod algorithm;
mod builder;
mod error;
pub mod events;
pub mod future;
mod handle;
mod layer;
mod limiter;

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tower::Service;

use crate::BoxError;
use crate::classify::{Classify, ErrorsAsFailures};
use crate::sync::Arc;

pub use self::builder::{
    ConcurrencyLimitBuilder, DEFAULT_INITIAL_LIMIT, DEFAULT_MAX_LIMIT, DEFAULT_TOLERANCE,
};
pub use self::error::{ConfigError, Overloaded};
pub use self::events::{ConcurrencyRejected, LimitChanged};
pub use self::future::ResponseFuture;
pub use self::handle::ConcurrencyLimitHandle;
pub use self::layer::ConcurrencyLimitLayer;
pub use self::limiter::MAX_LIMIT;

use self::future::Permit;
use self::limiter::{Admission, Limiter};

/// A service under a concurrency limit; made by [`ConcurrencyLimitLayer`].
///
/// Its error type is [`BoxError`]: the inner service's errors pass through
/// boxed, and refusals are [`Overloaded`].
///
/// # Panics
///
/// `call` panics if `poll_ready` did not return `Ready(Ok(()))` on this
/// instance first (the Tower contract).
pub struct ConcurrencyLimit<S, C = ErrorsAsFailures> {
    inner: S,
    limiter: Arc<Limiter>,
    classifier: C,
    max_wait: Option<Duration>,
    /// The place this instance's last `poll_ready` took.
    permit: Option<Permit>,
    /// Or the refusal it decided (kept apart from `permit`: one tag-free
    /// word pair on the path where nothing goes wrong).
    refused: Option<Overloaded>,
    /// While waiting: when to give up.
    wait_until: Option<Instant>,
    /// Made the first time this instance waits, then reset.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S, C> ConcurrencyLimit<S, C> {
    pub(crate) fn from_parts(
        inner: S,
        limiter: Arc<Limiter>,
        classifier: C,
        max_wait: Option<Duration>,
    ) -> Self {
        Self {
            inner,
            limiter,
            classifier,
            max_wait,
            permit: None,
            refused: None,
            wait_until: None,
            sleep: None,
        }
    }

    /// A handle on the limiter this service shares with its clones.
    pub fn handle(&self) -> ConcurrencyLimitHandle {
        ConcurrencyLimitHandle::new(self.limiter.clone())
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service (a reserved place is given back).
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Decides admission now, or waits for it (with `max_wait`): a place,
    /// or the refusal.
    fn poll_admit(&mut self, cx: &mut Context<'_>) -> Poll<Result<Permit, Overloaded>> {
        let (limit, in_flight) = match self.limiter.try_acquire() {
            Admission::Admitted { timed } => return Poll::Ready(Ok(self.held(timed))),
            Admission::Full { limit, in_flight } => (limit, in_flight),
        };
        let refused = Err(Overloaded { limit, in_flight });
        let Some(max_wait) = self.max_wait else {
            return Poll::Ready(refused);
        };
        let deadline = *self.wait_until.get_or_insert_with(|| {
            let now = Instant::now();
            // A bound too far to add is "for ever" (a century), not a panic.
            now.checked_add(max_wait)
                .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
        });
        self.limiter.register(cx.waker());
        // Again after registering: a place freed in between is not missed.
        if let Admission::Admitted { timed } = self.limiter.try_acquire() {
            return Poll::Ready(Ok(self.held(timed)));
        }
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            slot @ None => slot.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.wait_until = None;
                Poll::Ready(refused)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    #[inline]
    fn held(&mut self, timed: bool) -> Permit {
        self.wait_until = None;
        Permit::new(self.limiter.clone(), timed)
    }
}

use std::future::Future as _;

impl<S: Clone, C: Clone> Clone for ConcurrencyLimit<S, C> {
    /// Shares the limiter, but not readiness: the clone starts not ready
    /// and holds no place (the Tower contract; a copied place would let
    /// two calls through one).
    fn clone(&self) -> Self {
        Self::from_parts(
            self.inner.clone(),
            self.limiter.clone(),
            self.classifier.clone(),
            self.max_wait,
        )
    }
}

impl<S: fmt::Debug, C> fmt::Debug for ConcurrencyLimit<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("inner", &self.inner)
            .field("limit", &self.limiter.limit())
            .field("permit", &self.permit)
            .field("refused", &self.refused)
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for ConcurrencyLimit<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A place already held is kept (polling ready twice reserves once);
        // anything else is decided afresh.
        if self.permit.is_none() {
            self.refused = None;
            match self.poll_admit(cx) {
                Poll::Ready(Ok(permit)) => self.permit = Some(permit),
                Poll::Ready(Err(overloaded)) => {
                    // Refused calls never reach the inner service.
                    self.refused = Some(overloaded);
                    return Poll::Ready(Ok(()));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(err)) => {
                // Gives the place back (dropping its permit).
                self.permit = None;
                Poll::Ready(Err(err.into()))
            }
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        if let Some(mut permit) = self.permit.take() {
            permit.start();
            return ResponseFuture::called(
                self.inner.call(request),
                permit,
                self.classifier.clone(),
            );
        }
        match self.refused.take() {
            Some(overloaded) => {
                self.limiter.count_refusal(&overloaded);
                ResponseFuture::refused(overloaded, self.classifier.clone())
            }
            None => panic!(
                "ConcurrencyLimit::call without a ready poll_ready on this instance (Tower contract)"
            ),
        }
    }
}

#[cfg(all(test, palisade_loom))]
mod loom_tests;
