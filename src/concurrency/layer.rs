//! [`ConcurrencyLimitLayer`]: wraps services in one shared limiter.

use std::fmt;
use std::time::Duration;

use tower::Layer;

use crate::classify::ErrorsAsFailures;
use crate::sync::Arc;

use super::ConcurrencyLimit;
use super::builder::ConcurrencyLimitBuilder;
use super::handle::ConcurrencyLimitHandle;
use super::limiter::Limiter;

/// Wraps services in an adaptive concurrency limit.
///
/// The limiter is created once, by
/// [`build()`](ConcurrencyLimitBuilder::build): every service this layer
/// value (and its clones) produces, and every clone of those services,
/// shares one limit and one count of calls in flight (axum clones a
/// service per request; a limit per clone is no limit).
///
/// ```
/// use palisade::ConcurrencyLimitLayer;
/// use tower::{Layer, service_fn};
///
/// let layer = ConcurrencyLimitLayer::gradient2().initial_limit(8).build()?;
/// let upstream = service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) });
/// let a = layer.layer(upstream);
/// let b = layer.layer(upstream); // the same limit as `a`
/// assert_eq!(a.handle().limit(), 8);
/// assert_eq!(b.handle().limit(), 8);
/// # Ok::<(), palisade::concurrency::ConfigError>(())
/// ```
pub struct ConcurrencyLimitLayer<C = ErrorsAsFailures> {
    limiter: Arc<Limiter>,
    classifier: C,
    max_wait: Option<Duration>,
}

impl ConcurrencyLimitLayer {
    /// An adaptive limit by Gradient2 (the default choice): it grows while
    /// latency stays near the no-load latency and shrinks in proportion as
    /// latency rises above it. See the [module docs](super#algorithms).
    pub fn gradient2() -> ConcurrencyLimitBuilder {
        ConcurrencyLimitBuilder::gradient2()
    }

    /// An adaptive limit by AIMD: one more after each window that reached
    /// the limit, 10 % less after one with a drop or a mean latency above
    /// `latency_threshold`. Simple and predictable when you know the
    /// latency that means trouble.
    pub fn aimd(latency_threshold: Duration) -> ConcurrencyLimitBuilder {
        ConcurrencyLimitBuilder::aimd(latency_threshold)
    }

    /// A fixed limit of `limit` calls in flight, refused at once beyond it
    /// (tower's `ConcurrencyLimit` waits instead).
    pub fn fixed(limit: u32) -> ConcurrencyLimitBuilder {
        ConcurrencyLimitBuilder::fixed(limit)
    }
}

impl<C> ConcurrencyLimitLayer<C> {
    pub(crate) fn from_parts(
        limiter: Arc<Limiter>,
        classifier: C,
        max_wait: Option<Duration>,
    ) -> Self {
        Self {
            limiter,
            classifier,
            max_wait,
        }
    }

    /// A handle on the limiter: its limit, calls in flight, refusals.
    pub fn handle(&self) -> ConcurrencyLimitHandle {
        ConcurrencyLimitHandle::new(self.limiter.clone())
    }
}

impl<C: Clone> Clone for ConcurrencyLimitLayer<C> {
    /// The clone shares the limiter.
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            classifier: self.classifier.clone(),
            max_wait: self.max_wait,
        }
    }
}

impl<C> fmt::Debug for ConcurrencyLimitLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimitLayer")
            .field("limit", &self.limiter.limit())
            .field("in_flight", &self.limiter.in_flight())
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone> Layer<S> for ConcurrencyLimitLayer<C> {
    type Service = ConcurrencyLimit<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit::from_parts(
            inner,
            self.limiter.clone(),
            self.classifier.clone(),
            self.max_wait,
        )
    }
}
