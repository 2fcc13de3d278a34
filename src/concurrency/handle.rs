//! [`ConcurrencyLimitHandle`]: read a limiter's current limit and load.

use std::fmt;

use crate::sync::Arc;

use super::limiter::Limiter;

/// A handle on one limiter, from [`ConcurrencyLimitLayer::handle`] or
/// [`ConcurrencyLimit::handle`]; cheap to clone. Reading it never blocks a
/// call.
///
/// [`ConcurrencyLimitLayer::handle`]: super::ConcurrencyLimitLayer::handle
/// [`ConcurrencyLimit::handle`]: super::ConcurrencyLimit::handle
///
/// ```
/// use palisade::ConcurrencyLimitLayer;
///
/// let layer = ConcurrencyLimitLayer::gradient2().initial_limit(16).build()?;
/// let handle = layer.handle();
/// assert_eq!((handle.limit(), handle.in_flight(), handle.refused()), (16, 0, 0));
/// # Ok::<(), palisade::concurrency::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct ConcurrencyLimitHandle {
    limiter: Arc<Limiter>,
}

impl ConcurrencyLimitHandle {
    pub(crate) fn new(limiter: Arc<Limiter>) -> Self {
        Self { limiter }
    }

    /// The current limit: calls admitted at once, across every clone.
    pub fn limit(&self) -> u32 {
        self.limiter.limit()
    }

    /// Calls admitted and not yet ended (or dropped). Can exceed the limit
    /// for a while after the limit falls: calls in flight are never cut.
    pub fn in_flight(&self) -> u32 {
        self.limiter.in_flight()
    }

    /// Calls refused with [`Overloaded`](super::Overloaded) since the layer
    /// was built.
    pub fn refused(&self) -> u64 {
        self.limiter.refused()
    }

    /// The algorithm's name: `"gradient2"`, `"aimd"` or `"fixed"`.
    pub fn algorithm(&self) -> &'static str {
        self.limiter.algorithm_name()
    }
}

impl fmt::Debug for ConcurrencyLimitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimitHandle")
            .field("limit", &self.limit())
            .field("in_flight", &self.in_flight())
            .field("refused", &self.refused())
            .finish()
    }
}
