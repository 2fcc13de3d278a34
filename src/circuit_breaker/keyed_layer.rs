//! [`KeyedCircuitBreakerLayer`] and its builder: one breaker per key,
//! started from any [`CircuitBreakerBuilder`] with
//! [`keyed`](CircuitBreakerBuilder::keyed).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use crate::clock::duration_to_nanos;

use super::builder::CircuitBreakerBuilder;
use super::error::ConfigError;
use super::events::{Observe, Observer};
use super::keyed::KeyedCircuitBreaker;
use super::keyed_handle::KeyedCircuitBreakerHandle;
use super::registry::Registry;

/// The bound on breakers held when `keyed` is set without `max_keys`.
pub const DEFAULT_MAX_KEYS: usize = 10_000;
/// How long a closed breaker must go unused before it may be evicted,
/// when not set.
pub const DEFAULT_IDLE_AFTER: Duration = Duration::from_secs(300);

impl<C> CircuitBreakerBuilder<C> {
    /// One breaker per key instead of one for every call: each key that
    /// `extractor` reads from a request (upstream host, authority, route,
    /// tenant) gets its own breaker with this builder's policy, so one
    /// failing upstream opens only its own breaker.
    ///
    /// `extractor` is a [`KeyExtractor`](crate::rate_limit::KeyExtractor),
    /// as for the rate limiter: any closure `Fn(&Req) -> K` with `K: Hash +
    /// Debug`, or (feature `http`) [`Authority`](super::Authority).
    /// See [`KeyedCircuitBreakerBuilder`] for the bound on keys.
    pub fn keyed<X>(self, extractor: X) -> KeyedCircuitBreakerBuilder<X, C> {
        KeyedCircuitBreakerBuilder {
            base: self,
            extractor,
            max_keys: DEFAULT_MAX_KEYS,
            idle_after: DEFAULT_IDLE_AFTER,
        }
    }
}

/// Configures a keyed breaker; from [`CircuitBreakerBuilder::keyed`].
///
/// ```
/// use palisade::CircuitBreakerLayer;
/// use palisade::circuit_breaker::Window;
/// use std::time::Duration;
///
/// struct Request { tenant: u32 }
///
/// let layer = CircuitBreakerLayer::failure_rate(0.5)
///     .window(Window::time(Duration::from_secs(30)))
///     .keyed(|r: &Request| r.tenant)
///     .max_keys(50_000)
///     .idle_after(Duration::from_secs(600))
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), palisade::circuit_breaker::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "call .build() to get a KeyedCircuitBreakerLayer"]
pub struct KeyedCircuitBreakerBuilder<X, C> {
    base: CircuitBreakerBuilder<C>,
    extractor: X,
    max_keys: usize,
    idle_after: Duration,
}

impl<X, C: Clone> KeyedCircuitBreakerBuilder<X, C> {
    /// At most this many breakers are held (default 10,000). A new key
    /// that finds no room first evicts idle breakers (see
    /// [`idle_after`](Self::idle_after)); if none can go, its call is let
    /// through *unguarded* (no breaker counts it) and counted by
    /// [`unguarded_calls`](KeyedCircuitBreakerHandle::unguarded_calls):
    /// a flood of new keys never refuses calls to the keys already held.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// A closed breaker unused this long may be evicted to make room for
    /// a new key (default 5 minutes); it comes back as a new closed
    /// breaker with empty counts. Keep it at least as long as a time
    /// window. An open breaker is never evicted before its open period
    /// ends, nor one with half-open probes in flight, nor one forced open
    /// or disabled through its handle.
    pub fn idle_after(mut self, idle_after: Duration) -> Self {
        self.idle_after = idle_after;
        self
    }

    /// Checks every setting (those of the policy too) and creates the
    /// layer's one shared map of breakers.
    pub fn build(self) -> Result<KeyedCircuitBreakerLayer<X, C>, ConfigError> {
        if self.max_keys == 0 {
            return Err(ConfigError::ZeroMaxKeys);
        }
        if self.idle_after.is_zero() {
            return Err(ConfigError::ZeroIdleAfter);
        }
        // Validates the policy once; each key's breaker is made from it.
        self.base.core(Some(0), Observe::none())?;
        let classifier = self.base.classifier.clone();
        let template = self.base.classifier(());
        let name = template.name.clone().unwrap_or_default();
        let observer = Observer::new(Some(&name), template.hooks.clone(), true);
        let registry = Registry::new(
            template,
            self.max_keys,
            duration_to_nanos(self.idle_after),
            observer,
            crate::metrics::KeysGauge::breaker(&name),
        );
        Ok(KeyedCircuitBreakerLayer {
            registry: Arc::new(registry),
            extractor: self.extractor,
            classifier,
        })
    }
}

/// Wraps services in one circuit breaker per key; built with
/// [`CircuitBreakerBuilder::keyed`].
///
/// As with [`CircuitBreakerLayer`](super::CircuitBreakerLayer), the
/// breakers are created by `build()` and shared by every service the layer
/// makes and every clone of them. See [the module docs](super#keyed-breakers)
/// for how a keyed breaker decides.
pub struct KeyedCircuitBreakerLayer<X, C> {
    registry: Arc<Registry>,
    extractor: X,
    classifier: C,
}

impl<X, C> KeyedCircuitBreakerLayer<X, C> {
    /// A handle on the breakers: one key's, or the list of those not closed.
    pub fn handle(&self) -> KeyedCircuitBreakerHandle {
        KeyedCircuitBreakerHandle::new(self.registry.clone())
    }
}

impl<X: Clone, C: Clone> Clone for KeyedCircuitBreakerLayer<X, C> {
    /// The clone shares the breakers.
    fn clone(&self) -> Self {
        Self {
            registry: self.registry.clone(),
            extractor: self.extractor.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<X, C> fmt::Debug for KeyedCircuitBreakerLayer<X, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("keys", &self.registry.len())
            .finish_non_exhaustive()
    }
}

impl<S, X: Clone, C: Clone> Layer<S> for KeyedCircuitBreakerLayer<X, C> {
    type Service = KeyedCircuitBreaker<S, X, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker::from_parts(
            inner,
            self.registry.clone(),
            self.extractor.clone(),
            self.classifier.clone(),
        )
    }
}
