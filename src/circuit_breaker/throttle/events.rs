//! What an adaptive throttle tells the outside: an event hook and a
//! metric, fired when it refuses a request locally (never on a request it
//! sends).
//!
//! ```
//! use palisade::circuit_breaker::AdaptiveThrottleLayer;
//!
//! let layer = AdaptiveThrottleLayer::builder()
//!     .name("ads")
//!     .on_refused(|e| eprintln!("{}: throttled (p = {:.2})", e.name, e.probability))
//!     .build()?;
//! # let _ = layer;
//! # Ok::<(), palisade::circuit_breaker::ConfigError>(())
//! ```
//!
//! The hook runs on the calling thread, in `call`, with no lock held. A
//! panicking hook is caught (reported once through `tracing`); the
//! refusal stands and the throttle goes on.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use crate::hook::Hook;
use crate::metrics::ThrottleMetrics;

/// An adaptive throttle refused a request; see
/// [`on_refused`](super::AdaptiveThrottleBuilder::on_refused).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ThrottleRefused {
    /// The layer's `.name(..)` (empty when unnamed).
    pub name: Arc<str>,
    /// The rejection probability it was refused with.
    pub probability: f64,
    /// The wait its [`Throttled`](super::Throttled) error carries.
    pub retry_after: Duration,
}

/// A throttle's name, hook and metric handle, made by `build()`.
#[derive(Debug)]
pub(crate) struct Observe {
    name: Arc<str>,
    refused: Hook<ThrottleRefused>,
    metrics: ThrottleMetrics,
}

impl Observe {
    pub(crate) fn new(name: Option<Cow<'static, str>>, refused: Hook<ThrottleRefused>) -> Self {
        let name = name.unwrap_or_default();
        Self {
            metrics: ThrottleMetrics::new(&name),
            name: Arc::from(&*name),
            refused,
        }
    }

    pub(crate) fn refused(&self, probability: f64, retry_after: Duration) {
        self.metrics.refused();
        self.refused.fire(|| ThrottleRefused {
            name: self.name.clone(),
            probability,
            retry_after,
        });
    }
}
