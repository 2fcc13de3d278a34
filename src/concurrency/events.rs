//! What an adaptive concurrency limit tells the outside: event hooks and
//! metrics, fired when the limit changes and when a call is refused (never
//! on an admitted call).
//!
//! ```
//! use palisade::ConcurrencyLimitLayer;
//!
//! let layer = ConcurrencyLimitLayer::gradient2()
//!     .name("search")
//!     .on_limit_change(|e| eprintln!("{}: limit {} -> {}", e.name, e.from, e.to))
//!     .on_rejected(|e| eprintln!("{}: refused at {}/{}", e.name, e.in_flight, e.limit))
//!     .build()?;
//! # let _ = layer;
//! # Ok::<(), palisade::concurrency::ConfigError>(())
//! ```
//!
//! `on_limit_change` runs on the thread whose completed call closed the
//! sampling window, after the limiter's lock is released; `on_rejected` on
//! the calling thread. A panicking hook is caught (reported once through
//! `tracing`); the limiter goes on.

use std::borrow::Cow;
use std::sync::Arc;

use crate::hook::Hook;
use crate::metrics::ConcurrencyMetrics;

/// The concurrency limit changed; see
/// [`on_limit_change`](super::ConcurrencyLimitBuilder::on_limit_change).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitChanged {
    /// The layer's `.name(..)` (empty when unnamed).
    pub name: Arc<str>,
    /// The limit before.
    pub from: u32,
    /// The limit now.
    pub to: u32,
}

/// A call was refused with [`Overloaded`](super::Overloaded); see
/// [`on_rejected`](super::ConcurrencyLimitBuilder::on_rejected).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConcurrencyRejected {
    /// The layer's `.name(..)` (empty when unnamed).
    pub name: Arc<str>,
    /// The limit when the call was refused.
    pub limit: u32,
    /// Calls in flight then.
    pub in_flight: u32,
}

/// The hooks a builder collects.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConcurrencyHooks {
    pub(crate) limit_change: Hook<LimitChanged>,
    pub(crate) rejected: Hook<ConcurrencyRejected>,
}

/// A limiter's name, hooks and metric handles, made by `build()`.
#[derive(Debug)]
pub(crate) struct Observe {
    name: Arc<str>,
    hooks: ConcurrencyHooks,
    metrics: ConcurrencyMetrics,
}

impl Observe {
    pub(crate) fn new(
        name: Option<&Cow<'static, str>>,
        hooks: ConcurrencyHooks,
        initial: u32,
    ) -> Arc<Self> {
        let name = name.cloned().unwrap_or_default();
        Arc::new(Self {
            metrics: ConcurrencyMetrics::new(&name, initial),
            name: Arc::from(&*name),
            hooks,
        })
    }

    /// Neither hooks nor metrics (the loom models).
    #[cfg(all(test, palisade_loom))]
    pub(crate) fn none() -> Arc<Self> {
        Arc::new(Self {
            metrics: ConcurrencyMetrics::noop(),
            name: Arc::from(""),
            hooks: ConcurrencyHooks::default(),
        })
    }

    /// The limit moved (called with no lock held).
    pub(crate) fn limit_changed(&self, from: u32, to: u32) {
        self.metrics.limit(to);
        self.hooks.limit_change.fire(|| LimitChanged {
            name: self.name.clone(),
            from,
            to,
        });
    }

    pub(crate) fn rejected(&self, limit: u32, in_flight: u32) {
        self.metrics.rejected();
        self.hooks.rejected.fire(|| ConcurrencyRejected {
            name: self.name.clone(),
            limit,
            in_flight,
        });
    }
}
