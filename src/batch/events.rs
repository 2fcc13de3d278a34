//! What a batch layer tells the outside: an event hook and metrics, fired
//! once per batch when its last item settles.
//!
//! ```
//! use palisade::BatchLayer;
//!
//! let layer = BatchLayer::builder()
//!     .name("prices")
//!     .on_settled(|e| eprintln!("{}: {} fulfilled, {} rejected", e.name, e.fulfilled, e.rejected))
//!     .build()?;
//! # let _ = layer;
//! # Ok::<(), palisade::batch::BatchConfigError>(())
//! ```
//!
//! The hook runs on the thread that polls the batch to completion, before
//! the batch's future returns. A panicking hook is caught (reported once
//! through `tracing`); the batch's results are returned as usual.
//!
//! With feature `metrics` and
//! [`time_batches`](super::BatchBuilder::time_batches), a batch reads the
//! clock when called and when settled, to report its duration.

use std::borrow::Cow;
use std::sync::Arc;

use tokio::time::Instant;

use crate::hook::Hook;
use crate::metrics::BatchMetrics;

/// A batch settled; see [`on_settled`](super::BatchBuilder::on_settled).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchSettled {
    /// The layer's `.name(..)` (empty when unnamed).
    pub name: Arc<str>,
    /// Items that settled `Ok`.
    pub fulfilled: usize,
    /// Items that settled `Err` (timed-out items included).
    pub rejected: usize,
}

/// A batch layer's name, hook and metric handles, made by `build()`.
#[derive(Debug)]
pub(crate) struct Observe {
    name: Arc<str>,
    settled: Hook<BatchSettled>,
    metrics: BatchMetrics,
}

impl Observe {
    /// `None` when there is nothing to report to (no metrics compiled in,
    /// no hook): a batch then carries no observer at all.
    ///
    /// Shared by `Arc`, not leaked: a layer built per connection must not
    /// leak its hook (and what the hook captured). One reference count
    /// per batch, not per call.
    pub(crate) fn new(
        name: Option<Cow<'static, str>>,
        settled: Hook<BatchSettled>,
        timed: bool,
    ) -> Option<Arc<Self>> {
        if !cfg!(feature = "metrics") && !settled.is_set() {
            return None;
        }
        let name = name.unwrap_or_default();
        Some(Arc::new(Self {
            metrics: BatchMetrics::new(&name, timed),
            name: Arc::from(&*name),
            settled,
        }))
    }

    /// When a batch starts: the clock, if its duration is reported.
    pub(crate) fn start(&self) -> Option<Instant> {
        self.metrics.timed().then(Instant::now)
    }

    pub(crate) fn settled(&self, fulfilled: usize, rejected: usize, started: Option<Instant>) {
        let seconds = started.map(|s| s.elapsed().as_secs_f64());
        self.metrics.settled(fulfilled, rejected, seconds);
        self.settled.fire(|| BatchSettled {
            name: self.name.clone(),
            fulfilled,
            rejected,
        });
    }
}
