//! A circuit breaker: stop calling a service that keeps failing, give it
//! time to recover, then let a few probe calls decide whether it has.
//!
//! # States
//!
//! - **Closed**: calls go through; their outcomes (decided by a
//!   [classifier](crate::classify)) feed the trip policy.
//! - **Open**: calls are rejected at once with [`CircuitOpen`], which says
//!   how long until the next probe. After the open duration, the next
//!   `poll_ready` moves the breaker to half-open and becomes its first probe.
//! - **Half-open**: at most `k` probes are admitted, reserved in
//!   `poll_ready`; `k` successes close the breaker, one failure re-opens it
//!   (for longer, with an [open backoff](CircuitBreakerBuilder::open_backoff)).
//! - **Forced open** and **disabled**, set through the
//!   [handle](CircuitBreakerHandle) and left by [`reset`](CircuitBreakerHandle::reset).
//!
//! # Trip policies
//!
//! - [`consecutive_failures(n)`](CircuitBreakerLayer::consecutive_failures):
//!   `n` failures in a row.
//! - [`failure_rate(r)`](CircuitBreakerLayer::failure_rate): `failures /
//!   calls >= r` over a [`Window`]: the last `N` outcomes (a true ring) or
//!   the last `T` of time (buckets, subtract-on-evict), once the window
//!   holds [`min_calls`](CircuitBreakerBuilder::min_calls).
//! - [`slow_call_rate(r, threshold)`](CircuitBreakerLayer::slow_call_rate):
//!   the same for calls that took `threshold` or longer (combinable with a
//!   failure rate on the same window).
//!
//! Each trips exactly at its threshold. The closed path takes no lock,
//! allocates nothing and builds no event; consecutive and count-window
//! breakers do not even read the clock (a time window reads it once per
//! call, slow-call timing twice).
//!
//! # Generations
//!
//! Every transition starts a new generation, and a call counts only in the
//! generation that admitted it: a slow call admitted before the breaker
//! tripped cannot, by failing late, re-open a breaker that has since
//! closed, nor can a late success close it. (For the consecutive policy
//! and half-open probes the check and the count are one compare-and-swap;
//! a window policy checks the generation, then writes: an outcome could
//! only land in a later closed period if its thread stalled between the
//! two for a whole open period.)
//!
//! # Half-open probes that never end
//!
//! A probe future that is dropped gives its slot back; one that is kept
//! but never completes would hold it for ever. Set
//! [`half_open_timeout`](CircuitBreakerBuilder::half_open_timeout) to
//! re-open a half-open breaker whose probes have not decided in time
//! (resilience4j's `maxWaitDurationInHalfOpenState`).
//!
//! # Example
//!
//! ```
//! use palisade::{BoxError, CircuitBreakerLayer};
//! use palisade::circuit_breaker::{CircuitOpen, State};
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let breaker = CircuitBreakerLayer::consecutive_failures(2)
//!     .open_for(Duration::from_secs(5))
//!     .build()?;
//! let handle = breaker.handle();
//! let mut svc = ServiceBuilder::new()
//!     .layer(breaker)
//!     .service(service_fn(|_: ()| async { Err::<(), _>("upstream down") }));
//!
//! for _ in 0..2 {
//!     let err = svc.ready().await?.call(()).await.unwrap_err();
//!     assert_eq!(err.to_string(), "upstream down"); // passed through, boxed
//! }
//! assert_eq!(handle.state(), State::Open);
//!
//! let err: BoxError = svc.ready().await?.call(()).await.unwrap_err();
//! let open = err.downcast_ref::<CircuitOpen>().expect("rejected");
//! assert_eq!(open.retry_after, Duration::from_secs(5));
//! # Ok(())
//! # }
//! ```
//!
//! # Keyed breakers
//!
//! One breaker for a client that talks to many upstreams (hosts, routes,
//! tenants) opens for all of them when one fails.
//! [`keyed`](CircuitBreakerBuilder::keyed) gives each key its own breaker
//! with the same policy, behind one [`KeyedCircuitBreakerLayer`]
//! (resilience4j's registry, Envoy's per-host outlier detection):
//!
//! ```
//! use palisade::{BoxError, CircuitBreakerLayer};
//! use palisade::circuit_breaker::{CircuitOpen, State};
//! use std::time::Duration;
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let layer = CircuitBreakerLayer::consecutive_failures(2)
//!     .open_for(Duration::from_secs(5))
//!     .keyed(|(host, _path): &(&'static str, &'static str)| host.to_string())
//!     .max_keys(1_000)
//!     .build()?;
//! let handle = layer.handle();
//! let mut client = layer.layer(service_fn(|(host, _): (&'static str, &'static str)| async move {
//!     if host == "b.internal" { Err("connection refused") } else { Ok(host) }
//! }));
//! for _ in 0..3 {
//!     for host in ["a.internal", "b.internal"] {
//!         let _ = client.ready().await?.call((host, "/")).await;
//!     }
//! }
//! assert_eq!(handle.breaker("a.internal").unwrap().state(), State::Closed);
//! assert_eq!(handle.breaker("b.internal").unwrap().state(), State::Open);
//! let err = client.ready().await?.call(("b.internal", "/")).await.unwrap_err();
//! assert!(err.is::<CircuitOpen>());
//! # Ok(())
//! # }
//! ```
//!
//! - **Where it decides.** The key is only known from the request, so a
//!   keyed breaker decides in `call`, not `poll_ready`: `poll_ready` polls
//!   the inner service only, `call` finds the key's breaker and admits,
//!   reserves a half-open probe slot (at most `k` per key across every
//!   clone and thread: the same compare-and-swap as an unkeyed breaker),
//!   or answers [`CircuitOpen`] from the response future without calling
//!   the inner service, which stays ready for the next call.
//! - **Bounded.** At most [`max_keys`](KeyedCircuitBreakerBuilder::max_keys)
//!   breakers (default 10,000), in the keyed rate limiter's sharded map. A
//!   new key that finds no room evicts breakers idle for
//!   [`idle_after`](KeyedCircuitBreakerBuilder::idle_after); an open
//!   breaker is never evicted before its open period ends, nor one with
//!   probes in flight or forced by its handle. If nothing can go, the call
//!   is let through unguarded (and counted): a flood of new keys never
//!   refuses calls to the keys already held.
//! - **Observed and controlled per key** through
//!   [`KeyedCircuitBreakerHandle`]: one key's [`CircuitBreakerHandle`],
//!   and the list of breakers that are not closed. Each breaker's
//!   `tracing` events carry its key in the field `breaker`.
//! - **Cost.** A hash of the key, one shard lock and a map lookup per
//!   call, on top of the unkeyed breaker's work; the unkeyed breaker is
//!   unchanged. With feature `http`, [`Authority`] keys requests by
//!   upstream host.
//!
//! # Adaptive throttling
//!
//! A breaker is all or nothing. For an upstream that sheds part of its
//! load rather than failing outright, the [`throttle`] module offers the
//! SRE book's client-side adaptive throttling, which sends about `K` times
//! what the upstream accepts and backs off in proportion; see there for
//! the formula, a worked example and when to choose which.
//!
//! # Differences from other breakers
//!
//! - A rejection is not a `poll_ready` error (which tower treats as a dead
//!   service): `poll_ready` is ready and the response future fails with
//!   [`CircuitOpen`].
//! - Half-open slots are reserved in `poll_ready`, so a router that polls
//!   many clones ready cannot admit more than `k` probes.

#[cfg(feature = "http")]
mod authority;
mod builder;
mod error;
pub mod events;
pub mod future;
mod handle;
mod keyed;
mod keyed_handle;
mod keyed_layer;
mod layer;
mod policy;
mod registry;
mod shared;
mod state;
pub mod throttle;
mod window;

use std::fmt;
use std::mem;
use std::task::{Context, Poll};

use tower::Service;

use crate::BoxError;
use crate::classify::{Classify, ErrorsAsFailures};
use crate::sync::Arc;

#[cfg(feature = "http")]
pub use self::authority::Authority;
pub use self::builder::{CircuitBreakerBuilder, DEFAULT_MIN_CALLS, DEFAULT_OPEN_FOR};
pub use self::error::{CircuitOpen, ConfigError};
pub use self::events::{CallRejected, StateChange};
pub use self::future::ResponseFuture;
pub use self::handle::{CircuitBreakerHandle, Counts};
pub use self::keyed::KeyedCircuitBreaker;
pub use self::keyed_handle::{KeyedBreaker, KeyedCircuitBreakerHandle};
pub use self::keyed_layer::{
    DEFAULT_IDLE_AFTER, DEFAULT_MAX_KEYS, KeyedCircuitBreakerBuilder, KeyedCircuitBreakerLayer,
};
pub use self::layer::CircuitBreakerLayer;
pub use self::state::State;
pub use self::throttle::{
    AdaptiveThrottle, AdaptiveThrottleBuilder, AdaptiveThrottleHandle, AdaptiveThrottleLayer,
    ThrottleCounts, ThrottleRefused, Throttled,
};
pub use self::window::Window;

use self::future::Permit;
use self::shared::Shared;
use self::state::Decision;

/// What this instance's last `poll_ready` decided.
#[derive(Debug)]
enum Admit {
    /// Not polled ready (or the call was made).
    None,
    /// Closed in this generation.
    Closed(u32),
    /// Holds a half-open probe slot.
    Probe(Permit),
    /// The call will be rejected.
    Reject(std::time::Duration),
    /// Disabled: call without counting.
    Pass,
}

/// A service guarded by a circuit breaker; made by [`CircuitBreakerLayer`].
///
/// Its error type is [`BoxError`]: the inner service's errors pass through
/// boxed, and rejections are [`CircuitOpen`].
///
/// # Panics
///
/// `call` panics if `poll_ready` did not return `Ready(Ok(()))` on this
/// instance first (the Tower contract).
pub struct CircuitBreaker<S, C = ErrorsAsFailures> {
    inner: S,
    shared: Arc<Shared>,
    classifier: C,
    admit: Admit,
}

impl<S, C> CircuitBreaker<S, C> {
    /// Asks the breaker for admission now. In the closed state this is one
    /// atomic load; in half-open it may reserve a probe slot.
    #[inline(never)]
    fn decide(&self) -> Admit {
        match self.shared.core.acquire() {
            Decision::Closed(generation) => Admit::Closed(generation),
            Decision::Probe(generation) => {
                Admit::Probe(Permit::probe(self.shared.link(), generation))
            }
            Decision::Reject(retry_after) => Admit::Reject(retry_after),
            Decision::Pass => Admit::Pass,
        }
    }

    /// The admission of a call whose closed or disabled admission is out of
    /// date: a permit (none when disabled), or the rejection's wait.
    #[cold]
    #[inline(never)]
    fn readmit(&self) -> Result<Option<Permit>, std::time::Duration> {
        match self.decide() {
            Admit::Pass | Admit::None => Ok(None),
            Admit::Closed(generation) => Ok(Some(Permit::closed(self.shared.link(), generation))),
            Admit::Probe(mut permit) => {
                permit.start();
                Ok(Some(permit))
            }
            Admit::Reject(retry_after) => Err(retry_after),
        }
    }

    pub(crate) fn from_parts(inner: S, shared: Arc<Shared>, classifier: C) -> Self {
        Self {
            inner,
            shared,
            classifier,
            admit: Admit::None,
        }
    }

    /// A handle on the breaker this service shares with its clones.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::new(self.shared.core.clone())
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service (a reserved probe slot is given back).
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    /// Shares the breaker, but not readiness: the clone starts not ready
    /// and holds no probe slot (the Tower contract; a copied reservation
    /// would let two calls through one slot).
    fn clone(&self) -> Self {
        Self::from_parts(
            self.inner.clone(),
            self.shared.clone(),
            self.classifier.clone(),
        )
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("state", &self.shared.core.state())
            .field("admit", &self.admit)
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A probe slot already reserved is kept (polling ready twice
        // reserves once), unless its generation has ended, which took the
        // slot with it. Anything else is decided afresh: one atomic load
        // while closed.
        let core = &self.shared.core;
        let keep = match &self.admit {
            Admit::Probe(permit) => core.probe_is_current(permit.generation()),
            _ => false,
        };
        if !keep {
            // Closed is decided inline (what `decide` would answer, from
            // the same one load); the rest out of line.
            // Each arm writes the field itself: a `match` assigned whole
            // is built in a temporary and copied in wider loads than it
            // was written with (a store-to-load forwarding stall, measured
            // at a third of the closed path).
            match core.closed_generation() {
                Some(generation) => self.admit = Admit::Closed(generation),
                None => self.admit = self.decide(),
            }
        }
        if let Admit::Reject(_) = self.admit {
            // Rejected calls never reach the inner service: no need for it
            // to be ready.
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(err)) => {
                // Gives back a probe slot (dropping its permit).
                self.admit = Admit::None;
                Poll::Ready(Err(err.into()))
            }
        }
    }

    // The closed path is inlined and builds the response future from
    // scalars, so it is written once, where the caller keeps it: a future
    // (or a permit) returned from an out-of-line call, or assembled through
    // a `match` into a temporary, is copied in wider loads than it was
    // written with, which stalls store-to-load forwarding (measured: most
    // of this layer's cost before).
    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        // A closed admission reserves nothing, so it is re-checked here
        // (one atomic load): a service made ready before a trip and called
        // after it (a balancer or buffer keeps services ready for long) is
        // rejected like any other call.
        if let Admit::Closed(generation) = self.admit {
            if self.shared.core.closed_is_current(generation) {
                self.admit = Admit::None;
                let permit = Permit::closed(self.shared.link(), generation);
                return ResponseFuture::called(
                    self.inner.call(request),
                    Some(permit),
                    self.classifier.clone(),
                );
            }
        }
        self.call_otherwise(request)
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// `call` for every admission but a current closed one: a probe, a
    /// rejection, a disabled breaker, or a closed admission gone stale.
    ///
    /// Inlined as well: were it out of line, the future it returns and the
    /// closed path's would meet in one temporary, and the closed path would
    /// be copied through it again (measured: 32 ns against 26 ns).
    #[inline(always)]
    fn call_otherwise<Req>(&mut self, request: Req) -> ResponseFuture<S::Future, C>
    where
        S: Service<Req>,
        C: Clone,
    {
        let permit = match mem::replace(&mut self.admit, Admit::None) {
            Admit::None => panic!(
                "CircuitBreaker::call without a ready poll_ready on this instance (Tower contract)"
            ),
            Admit::Reject(retry_after) => Err(retry_after),
            Admit::Closed(_) | Admit::Pass => self.readmit(),
            Admit::Probe(mut permit) => {
                debug_assert!(permit.is_probe());
                permit.start();
                Ok(Some(permit))
            }
        };
        match permit {
            Ok(permit) => {
                ResponseFuture::called(self.inner.call(request), permit, self.classifier.clone())
            }
            Err(retry_after) => {
                self.shared.core.count_rejection(retry_after);
                ResponseFuture::rejected(retry_after, self.classifier.clone())
            }
        }
    }
}

#[cfg(all(test, palisade_loom))]
mod loom_tests;
