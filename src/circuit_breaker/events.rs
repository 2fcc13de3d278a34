//! What a breaker tells the outside: event hooks and metrics, fired on
//! transitions and rejections (never on a call that goes through, apart
//! from the metrics' outcome counter).
//!
//! Register hooks on the builder:
//!
//! ```
//! use palisade::CircuitBreakerLayer;
//! use std::sync::{Arc, Mutex};
//!
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let log = seen.clone();
//! let layer = CircuitBreakerLayer::consecutive_failures(3)
//!     .name("payments")
//!     .on_state_change(move |e| log.lock().unwrap().push((e.from, e.to)))
//!     .on_rejected(|e| eprintln!("{} rejected a call; retry in {:?}", e.name, e.retry_after))
//!     .build()?;
//! layer.handle().force_open();
//! assert_eq!(seen.lock().unwrap().len(), 1);
//! # Ok::<(), palisade::circuit_breaker::ConfigError>(())
//! ```
//!
//! A hook runs on the thread that made the transition (or the rejected
//! call), after the transition is published; the breaker holds no lock.
//! Transitions made by one thread reach its hook in order; two threads
//! racing may run their hooks at the same time. A panicking hook is caught
//! (reported once through `tracing`) and the breaker goes on unchanged.

use std::sync::Arc;
use std::time::Duration;

use crate::classify::Outcome;
use crate::hook::Hook;
use crate::metrics::{BreakerMetrics, Name};

use super::state::State;

/// A breaker changed state; see [`on_state_change`](super::CircuitBreakerBuilder::on_state_change).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateChange {
    /// The breaker's `.name(..)` (empty when unnamed).
    pub name: Arc<str>,
    /// A keyed breaker's key (its `Debug` text, cut to 256 bytes).
    pub key: Option<Arc<str>>,
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
}

/// A breaker rejected a call; see [`on_rejected`](super::CircuitBreakerBuilder::on_rejected).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallRejected {
    /// The breaker's `.name(..)` (empty when unnamed).
    pub name: Arc<str>,
    /// A keyed breaker's key (its `Debug` text).
    pub key: Option<Arc<str>>,
    /// The wait the rejection carries (`CircuitOpen::retry_after`).
    pub retry_after: Duration,
}

/// The hooks a builder collects.
#[derive(Debug, Clone, Default)]
pub(crate) struct BreakerHooks {
    pub(crate) state_change: Hook<StateChange>,
    pub(crate) rejected: Hook<CallRejected>,
}

/// A breaker's name, hooks and metric handles: made once by `build()`,
/// shared by every key of a keyed breaker.
#[derive(Debug)]
pub(crate) struct Observer {
    name: Arc<str>,
    hooks: BreakerHooks,
    metrics: BreakerMetrics,
}

impl Observer {
    pub(crate) fn new(name: Option<&Name>, hooks: BreakerHooks, keyed: bool) -> Arc<Self> {
        let name: Name = name.cloned().unwrap_or_default();
        Arc::new(Self {
            metrics: BreakerMetrics::new(&name, keyed),
            name: Arc::from(&*name),
            hooks,
        })
    }
}

/// What one breaker core holds: the shared observer and its key, if any.
#[derive(Debug, Clone)]
pub(crate) struct Observe {
    observer: Arc<Observer>,
    key: Option<Arc<str>>,
}

impl Observe {
    pub(crate) fn new(observer: Arc<Observer>, key: Option<Arc<str>>) -> Self {
        Self { observer, key }
    }

    /// Neither hooks nor metrics (tests, and `build()`'s validation).
    pub(crate) fn none() -> Self {
        Self::new(
            Arc::new(Observer {
                name: Arc::from(""),
                hooks: BreakerHooks::default(),
                metrics: BreakerMetrics::noop(),
            }),
            None,
        )
    }

    /// The outcome of an admitted call (metrics only).
    #[inline]
    pub(crate) fn outcome(&self, outcome: Outcome) {
        self.observer.metrics.outcome(outcome);
    }

    /// After a transition's CAS won.
    pub(crate) fn transition(&self, from: State, to: State) {
        let o = &*self.observer;
        o.metrics.transition(to);
        o.hooks.state_change.fire(|| StateChange {
            name: o.name.clone(),
            key: self.key.clone(),
            from,
            to,
        });
    }

    /// A call rejected.
    pub(crate) fn rejected(&self, retry_after: Duration) {
        let o = &*self.observer;
        o.metrics.rejected();
        o.hooks.rejected.fire(|| CallRejected {
            name: o.name.clone(),
            key: self.key.clone(),
            retry_after,
        });
    }
}
