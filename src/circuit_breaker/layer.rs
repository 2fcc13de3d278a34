//! [`CircuitBreakerLayer`]: wraps services in one shared breaker.

use std::fmt;
use std::time::Duration;

use tower::Layer;

use crate::classify::ErrorsAsFailures;
use crate::sync::Arc;

use super::CircuitBreaker;
use super::builder::CircuitBreakerBuilder;
use super::handle::CircuitBreakerHandle;
use super::shared::Shared;
use super::state::Core;

/// Wraps services in a circuit breaker.
///
/// The breaker's state is created once, by
/// [`build()`](CircuitBreakerBuilder::build): every service this layer
/// value (and its clones) produces, and every clone of those services,
/// shares it. That is what makes it work behind axum, which clones the
/// service for each request.
///
/// ```
/// use palisade::CircuitBreakerLayer;
/// use palisade::circuit_breaker::State;
/// use std::time::Duration;
/// use tower::{Layer, service_fn};
///
/// let layer = CircuitBreakerLayer::consecutive_failures(5)
///     .open_for(Duration::from_secs(10))
///     .build()?;
/// let upstream = service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) });
/// let a = layer.layer(upstream);
/// let b = layer.layer(upstream); // the same breaker as `a`
///
/// layer.handle().force_open();
/// assert_eq!(a.handle().state(), State::ForcedOpen);
/// assert_eq!(b.handle().state(), State::ForcedOpen);
/// # Ok::<(), palisade::circuit_breaker::ConfigError>(())
/// ```
pub struct CircuitBreakerLayer<C = ErrorsAsFailures> {
    shared: Arc<Shared>,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// A breaker that trips after `n` failures in a row (a success ends
    /// the run). Needs no clock on the closed path.
    pub fn consecutive_failures(n: u32) -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::consecutive(n)
    }

    /// A breaker that trips when at least `rate` (in `(0, 1]`) of the
    /// calls in its [window](CircuitBreakerBuilder::window) failed, once
    /// the window holds [`min_calls`](CircuitBreakerBuilder::min_calls).
    pub fn failure_rate(rate: f64) -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::rate(Some(rate), None)
    }

    /// A breaker that trips when at least `rate` of the calls in its
    /// window took `threshold` or longer. Add
    /// [`failure_rate`](CircuitBreakerBuilder::failure_rate) to trip on
    /// failures too.
    pub fn slow_call_rate(rate: f64, threshold: Duration) -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::rate(None, Some((rate, threshold)))
    }
}

impl<C> CircuitBreakerLayer<C> {
    pub(crate) fn from_parts(core: Arc<Core>, classifier: C) -> Self {
        Self {
            shared: Arc::new(Shared::new(core)),
            classifier,
        }
    }

    /// A handle on the breaker: its state and counts, force and reset.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::new(self.shared.core.clone())
    }
}

impl<C: Clone> Clone for CircuitBreakerLayer<C> {
    /// The clone shares the breaker.
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("state", &self.shared.core.state())
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::from_parts(inner, self.shared.clone(), self.classifier.clone())
    }
}
