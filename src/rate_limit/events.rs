//! What a rate limiter tells the outside: an event hook and metrics, fired
//! on refusals (never on an admitted request, apart from the metrics'
//! admission counter and, in wait mode, the wait histogram).
//!
//! ```
//! use palisade::RateLimitLayer;
//! use std::time::Duration;
//!
//! let layer = RateLimitLayer::token_bucket(100, Duration::from_secs(1))
//!     .name("api")
//!     .on_refused(|e| eprintln!("{}: refused ({:?}), retry in {:?}", e.name, e.reason, e.retry_after))
//!     .build()?;
//! # let _ = layer;
//! # Ok::<(), palisade::rate_limit::ConfigError>(())
//! ```
//!
//! The hook runs on the calling thread, in `call`, after the decision: no
//! shard lock is held. A panicking hook is caught (reported once through
//! `tracing`); the refusal stands and the limiter goes on.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use crate::hook::Hook;
use crate::metrics::{KeysGauge, RateLimitMetrics, RefusedReason};

use super::future::Refusal;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalReason {
    /// Over the limit now ([`RateLimited`](super::RateLimited)).
    Limited,
    /// Its cost is above the limiter's capacity
    /// ([`InsufficientCapacity`](super::InsufficientCapacity)).
    InsufficientCapacity,
    /// The key extractor identified no client ([`UnknownKey`](super::UnknownKey)).
    UnknownKey,
}

/// A rate limiter refused a request; see
/// [`on_refused`](super::RateLimitBuilder::on_refused).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitRefused {
    /// The layer's `.name(..)` (empty when unnamed).
    pub name: Arc<str>,
    /// Why.
    pub reason: RefusalReason,
    /// When a retry may be admitted (`None` when waiting never helps).
    pub retry_after: Option<Duration>,
    /// Keyed limiters: the key, as the limiter stores it (a hash under the
    /// layer's random seed: the same for the same key during the layer's
    /// life, so refusals can be grouped by client without the limiter
    /// requiring keys to be `Debug`).
    pub key_hash: Option<u64>,
}

/// The hooks a builder collects, and the layer's name.
#[derive(Debug, Clone, Default)]
pub(crate) struct RateLimitHooks {
    pub(crate) name: Option<Cow<'static, str>>,
    pub(crate) refused: Hook<RateLimitRefused>,
}

/// A limiter's name, hook and metric handles, made by `build()`.
#[derive(Debug)]
pub(crate) struct Observe {
    name: Arc<str>,
    refused: Hook<RateLimitRefused>,
    metrics: RateLimitMetrics,
}

impl Observe {
    /// No hook, no metrics.
    pub(crate) fn none() -> Self {
        Self {
            name: Arc::from(""),
            refused: Hook::none(),
            metrics: RateLimitMetrics::noop(),
        }
    }

    /// Registers the metrics (`wait`: the layer waits) and, for a keyed
    /// limiter, the keys gauge it returns.
    pub(crate) fn new(hooks: RateLimitHooks, wait: bool, keyed: bool) -> (Self, KeysGauge) {
        let name = hooks.name.unwrap_or_default();
        let keys = if keyed {
            KeysGauge::rate_limit(&name)
        } else {
            KeysGauge::noop()
        };
        let observe = Self {
            metrics: RateLimitMetrics::new(&name, wait),
            name: Arc::from(&*name),
            refused: hooks.refused,
        };
        (observe, keys)
    }

    #[inline]
    pub(crate) fn admitted(&self) {
        self.metrics.admitted();
    }

    /// Wait mode: an admitted request waited `nanos`.
    #[inline]
    pub(crate) fn waited(&self, nanos: u64) {
        self.metrics.waited(nanos);
    }

    /// A refusal; `key_hash` is asked only if the hook is set.
    pub(crate) fn refused(&self, refusal: &Refusal, key_hash: impl FnOnce() -> Option<u64>) {
        let (reason, metric, retry_after) = match refusal {
            Refusal::Limited(e) => (
                RefusalReason::Limited,
                RefusedReason::Limited,
                Some(e.retry_after),
            ),
            Refusal::Never(_) => (
                RefusalReason::InsufficientCapacity,
                RefusedReason::Capacity,
                None,
            ),
            Refusal::Unknown(_) => (RefusalReason::UnknownKey, RefusedReason::UnknownKey, None),
        };
        self.metrics.refused(metric);
        self.refused.fire(|| RateLimitRefused {
            name: self.name.clone(),
            reason,
            retry_after,
            key_hash: key_hash(),
        });
    }
}
