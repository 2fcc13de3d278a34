//! [`BatchLayer`] and its builder.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use tower::{Layer, Service};

use super::error::BatchConfigError;
use super::events::{BatchSettled, Observe};
use super::{Batch, SettleAll};
use crate::hook::Hook;

/// How many calls a batch keeps in flight unless told otherwise.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 32;

/// What one batch may do. Copied into every batch future; validated once by
/// [`BatchBuilder::build`], so the future never meets a zero limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) max_in_flight: usize,
    pub(crate) deadline: Option<Duration>,
    pub(crate) item_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            deadline: None,
            item_timeout: None,
        }
    }
}

/// Turns a `Service<Req>` into a [`Batch`]: a service of request lists
/// whose answer settles every request (see the [module docs](super)).
///
/// Built through [`BatchLayer::builder`], which rejects a configuration
/// that cannot work; [`BatchLayer::default`] keeps at most
/// [`DEFAULT_MAX_IN_FLIGHT`] calls in flight, with no time limits.
///
/// The layer holds only its (immutable) configuration: there is no state
/// shared between batches. `max_in_flight` bounds each batch on its own; to
/// bound the calls of all batches together, put a shared concurrency limit
/// below the batch layer.
///
/// ```
/// use std::time::Duration;
/// use palisade::BatchLayer;
///
/// # fn main() -> Result<(), palisade::batch::BatchConfigError> {
/// let layer = BatchLayer::builder()
///     .max_in_flight(32)
///     .deadline(Duration::from_secs(2))
///     .item_timeout(Duration::from_millis(300))
///     .build()?;
/// assert_eq!(layer.max_in_flight(), 32);
///
/// assert!(BatchLayer::builder().max_in_flight(0).build().is_err());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct BatchLayer {
    config: Config,
    /// Hook and metrics (`None` when there is nothing to report to).
    observe: Option<Arc<Observe>>,
}

impl PartialEq for BatchLayer {
    /// Equal settings (the name and hooks are not compared).
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
    }
}

impl Eq for BatchLayer {}

impl BatchLayer {
    /// A builder starting from the defaults.
    pub fn builder() -> BatchBuilder {
        BatchBuilder {
            config: Config::default(),
            name: None,
            settled: Hook::none(),
            timed: false,
        }
    }

    /// The most calls one batch keeps in flight.
    pub fn max_in_flight(&self) -> usize {
        self.config.max_in_flight
    }

    /// The deadline of a whole batch, if any.
    pub fn deadline(&self) -> Option<Duration> {
        self.config.deadline
    }

    /// The timeout of each call, if any.
    pub fn item_timeout(&self) -> Option<Duration> {
        self.config.item_timeout
    }

    /// Settles `requests` against `service` with this layer's settings,
    /// without building a [`Batch`] service. See
    /// [`settle_all`](super::settle_all).
    pub fn settle_all<S, I>(&self, service: S, requests: I) -> SettleAll<S, I::IntoIter>
    where
        I: IntoIterator,
        S: Service<I::Item> + Clone,
    {
        SettleAll::new(service, requests.into_iter(), self.config).observed(self.observe())
    }

    pub(crate) fn config(&self) -> Config {
        self.config
    }

    pub(crate) fn observe(&self) -> Option<&Arc<Observe>> {
        self.observe.as_ref()
    }
}

impl<S> Layer<S> for BatchLayer {
    type Service = Batch<S>;

    fn layer(&self, inner: S) -> Batch<S> {
        Batch::new(inner, self.clone())
    }
}

/// Configures a [`BatchLayer`]; [`build`](Self::build) checks it.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `build` is called"]
pub struct BatchBuilder {
    config: Config,
    name: Option<Cow<'static, str>>,
    settled: Hook<BatchSettled>,
    timed: bool,
}

impl BatchBuilder {
    /// The most calls one batch keeps in flight at once (default
    /// [`DEFAULT_MAX_IN_FLIGHT`]); must be at least 1. The inner service's
    /// own `poll_ready` can hold a batch below it.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.config.max_in_flight = n;
        self
    }

    /// A deadline for the whole batch, counted from the `call` that starts
    /// it. When it passes, calls still in flight are cancelled and every
    /// unsettled item, started or not, settles as
    /// [`ItemError::Timeout(Elapsed::BatchDeadline)`](super::ItemError).
    /// Must be longer than zero; a deadline too far away to represent as an
    /// instant means no deadline. Needs a tokio runtime with time enabled.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.config.deadline = Some(deadline);
        self
    }

    /// A timeout for each call, counted from the moment it is sent (after
    /// the inner service is ready, so waiting for capacity does not count).
    /// A call that takes longer is cancelled and settles as
    /// [`ItemError::Timeout(Elapsed::ItemTimeout)`](super::ItemError).
    /// Must be longer than zero; needs a tokio runtime with time enabled.
    pub fn item_timeout(mut self, timeout: Duration) -> Self {
        self.config.item_timeout = Some(timeout);
        self
    }

    /// A name for the layer's metrics (label `name`) and hook events.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// With feature `metrics`: report each batch's duration
    /// (`palisade_batch_duration_seconds`). Off by default: it reads the
    /// clock twice per batch, more than the rest of the metrics cost.
    pub fn time_batches(mut self) -> Self {
        self.timed = true;
        self
    }

    /// Calls `hook` once per batch when its last item settles, on the
    /// thread polling it. A panic in `hook` is caught and reported once
    /// through `tracing`; the batch's results are returned as usual. See
    /// [`events`](super::events).
    pub fn on_settled(mut self, hook: impl Fn(&BatchSettled) + Send + Sync + 'static) -> Self {
        self.settled = Hook::new("on_settled", hook);
        self
    }

    /// Checks the configuration and returns the layer (and registers its
    /// metrics, with the recorder installed now).
    pub fn build(self) -> Result<BatchLayer, BatchConfigError> {
        let config = self.config;
        if config.max_in_flight == 0 {
            return Err(BatchConfigError::ZeroMaxInFlight);
        }
        if config.deadline == Some(Duration::ZERO) {
            return Err(BatchConfigError::ZeroDeadline);
        }
        if config.item_timeout == Some(Duration::ZERO) {
            return Err(BatchConfigError::ZeroItemTimeout);
        }
        Ok(BatchLayer {
            config,
            observe: Observe::new(self.name, self.settled, self.timed),
        })
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn build_rejects_what_cannot_work() {
        let b = BatchLayer::builder();
        assert_eq!(
            b.clone().max_in_flight(0).build(),
            Err(BatchConfigError::ZeroMaxInFlight)
        );
        assert_eq!(
            b.clone().deadline(Duration::ZERO).build(),
            Err(BatchConfigError::ZeroDeadline)
        );
        assert_eq!(
            b.clone().item_timeout(Duration::ZERO).build(),
            Err(BatchConfigError::ZeroItemTimeout)
        );
        let layer = b
            .max_in_flight(1)
            .deadline(Duration::MAX)
            .item_timeout(Duration::from_nanos(1))
            .build()
            .unwrap();
        assert_eq!(layer.max_in_flight(), 1);
        assert_eq!(layer.deadline(), Some(Duration::MAX));
        assert_eq!(BatchLayer::default().max_in_flight(), DEFAULT_MAX_IN_FLIGHT);
    }
}
