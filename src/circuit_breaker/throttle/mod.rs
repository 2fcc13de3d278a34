//! Client-side adaptive throttling (Google SRE book, "Handling Overload"):
//! reject requests locally, with a probability that grows as the backend
//! accepts less of what this client sends.
//!
//! # The rule
//!
//! Over a sliding window (default: the last 2 minutes), the client counts
//! `requests` (every request it attempted, its own rejections included)
//! and `accepts` (those the backend accepted, as the
//! [classifier](AdaptiveThrottleBuilder::classifier) decides). Each new
//! request is rejected locally with probability
//!
//! ```text
//! p = max(0, (requests - K * accepts) / (requests + 1))
//! ```
//!
//! While the backend accepts at least `1/K` of the requests, `p` is 0 and
//! nothing changes. Beyond that, the client sends about `K * accepts`: it
//! backs off smoothly and in proportion as the backend sheds load, keeps
//! sending enough (the `K - 1` surplus) to see it recover, and ramps up as
//! the accepts come back. No state to flip, so no open/closed flapping.
//!
//! # A worked example
//!
//! `K = 2`. In the last two minutes the client attempted 1,000 requests:
//!
//! | backend accepted | `p` | the client sends |
//! | ---: | ---: | --- |
//! | 1,000 | `max(0, (1000 - 2000) / 1001)` = 0 | everything |
//! | 500 | `(1000 - 1000) / 1001` = 0 | everything: `K` times 500 is 1,000 |
//! | 300 | `(1000 - 600) / 1001` ≈ 0.40 | ≈ 60%: about 600 of 1,000, twice the accepts |
//! | 50 | `(1000 - 100) / 1001` ≈ 0.90 | ≈ 10%: about 100, twice the accepts |
//! | 0 | `1000 / 1001` ≈ 1.0 | almost nothing (a few probes) |
//!
//! # Breaker or throttle?
//!
//! - A **circuit breaker** is for an upstream that is *broken*: failing
//!   most calls, better not called at all for a while. It is all or
//!   nothing: open, it sends nothing; closed, everything. Use a
//!   [keyed breaker](super#keyed-breakers) when one client talks to
//!   several upstreams.
//! - **Adaptive throttling** is for an upstream that is *overloaded*:
//!   shedding part of the load (429, 503, `RESOURCE_EXHAUSTED`) and still
//!   serving the rest. It sends about what gets accepted, times `K`, and
//!   wastes neither the backend's capacity nor its own time on requests
//!   that would be refused. It never stops entirely, so it needs no probes.
//! - Both together: the throttle outside (it sees the breaker's
//!   rejections as local and ignores them), the breaker inside, for the
//!   upstream that goes down entirely.
//!
//! A throttled request fails at once with [`Throttled`], a local rejection
//! (never an upstream failure for a classifier, never a retry budget
//! spent). Like the breaker, the decision is made in `call` on one clock
//! reading, with no lock and no allocation; a random draw only once `p`
//! is above zero.
//!
//! ```
//! use palisade::BoxError;
//! use palisade::circuit_breaker::{AdaptiveThrottleLayer, Throttled};
//! use tower::{Layer, Service, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let layer = AdaptiveThrottleLayer::builder().seed(1).build()?;
//! let handle = layer.handle();
//! let mut svc = layer.layer(service_fn(|_: ()| async { Err::<(), _>("overloaded") }));
//! let mut throttled = 0;
//! for _ in 0..100 {
//!     match svc.ready().await?.call(()).await {
//!         Err(e) if e.is::<Throttled>() => throttled += 1,
//!         _ => {}
//!     }
//! }
//! // Nothing accepted: nearly every request after the first few is
//! // rejected locally, and the backend is left alone.
//! assert!(throttled > 80);
//! assert_eq!(handle.counts().accepts, 0);
//! # Ok(())
//! # }
//! ```

mod error;
pub mod events;
pub mod future;
mod layer;
mod state;

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::Service;

use crate::BoxError;
use crate::classify::{Classify, ErrorsAsFailures};

pub use self::error::Throttled;
pub use self::events::ThrottleRefused;
pub use self::future::ResponseFuture;
pub use self::layer::{
    AdaptiveThrottleBuilder, AdaptiveThrottleHandle, AdaptiveThrottleLayer, DEFAULT_K,
    DEFAULT_THROTTLE_WINDOW, ThrottleCounts,
};

use self::state::Throttle;

/// A service behind client-side adaptive throttling; made by
/// [`AdaptiveThrottleLayer`]. Its error type is [`BoxError`]: the inner
/// service's errors boxed, and [`Throttled`].
pub struct AdaptiveThrottle<S, C = ErrorsAsFailures> {
    inner: S,
    state: Arc<Throttle>,
    classifier: C,
}

impl<S, C> AdaptiveThrottle<S, C> {
    pub(crate) fn from_parts(inner: S, state: Arc<Throttle>, classifier: C) -> Self {
        Self {
            inner,
            state,
            classifier,
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

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C: Clone> Clone for AdaptiveThrottle<S, C> {
    /// Shares the throttle. Holds no readiness of its own: the inner
    /// clone's readiness is the inner service's business.
    fn clone(&self) -> Self {
        Self::from_parts(
            self.inner.clone(),
            self.state.clone(),
            self.classifier.clone(),
        )
    }
}

impl<S: fmt::Debug, C> fmt::Debug for AdaptiveThrottle<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveThrottle")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for AdaptiveThrottle<S, C>
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
        // Decided per request in `call`: a throttled request leaves the
        // inner service ready (and called by no one) for the next.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        let now = self.state.now();
        match self.state.admit(now) {
            Ok(()) => ResponseFuture::sent(
                self.inner.call(request),
                self.state.clone(),
                now,
                self.classifier.clone(),
            ),
            Err(probability) => {
                if let Some(observe) = &self.state.observe {
                    observe.refused(probability, self.state.step());
                }
                ResponseFuture::throttled(self.state.step(), probability, self.classifier.clone())
            }
        }
    }
}
