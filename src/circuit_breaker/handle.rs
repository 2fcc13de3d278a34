//! [`CircuitBreakerHandle`]: read a breaker's state and counts, force it
//! open, disable it, reset it.

use std::fmt;

use crate::sync::Arc;

use super::state::{Core, State};

/// A handle on one breaker, from [`CircuitBreakerLayer::handle`] or
/// [`CircuitBreaker::handle`]; cheap to clone. Reading it never blocks a
/// call.
///
/// [`CircuitBreakerLayer::handle`]: super::CircuitBreakerLayer::handle
/// [`CircuitBreaker::handle`]: super::CircuitBreaker::handle
///
/// ```
/// use palisade::CircuitBreakerLayer;
/// use palisade::circuit_breaker::State;
///
/// let layer = CircuitBreakerLayer::consecutive_failures(3).build()?;
/// let handle = layer.handle();
/// handle.force_open(); // e.g. during a maintenance window
/// assert_eq!(handle.state(), State::ForcedOpen);
/// handle.reset();
/// assert_eq!(handle.state(), State::Closed);
/// # Ok::<(), palisade::circuit_breaker::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct CircuitBreakerHandle {
    core: Arc<Core>,
}

/// A breaker's counts at one moment; see [`CircuitBreakerHandle::counts`].
///
/// `calls`, `failures` and `slow_calls` describe what the trip policy is
/// looking at: the outcomes in the current window for a rate policy, the
/// current run of failures for a consecutive policy (`calls == failures`).
/// They are emptied when the breaker closes after a half-open period or is
/// reset, and kept while it is open, so they show why it tripped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Counts {
    /// The breaker's state.
    pub state: State,
    /// Outcomes in the window (ignored outcomes are not recorded).
    pub calls: u64,
    /// Failures among them.
    pub failures: u64,
    /// Calls among them that took the slow-call threshold or longer (0
    /// without a slow-call policy).
    pub slow_calls: u64,
    /// Calls rejected since the breaker was built.
    pub rejections: u64,
    /// Half-open probes in flight (0 in other states).
    pub probes_in_flight: u32,
}

impl Counts {
    /// `failures / calls`, or 0 with no calls.
    pub fn failure_rate(&self) -> f64 {
        ratio(self.failures, self.calls)
    }

    /// `slow_calls / calls`, or 0 with no calls.
    pub fn slow_call_rate(&self) -> f64 {
        ratio(self.slow_calls, self.calls)
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

impl CircuitBreakerHandle {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.core.state()
    }

    /// The current state and counts. With a time window this slides the
    /// window to now first (it reads the clock).
    pub fn counts(&self) -> Counts {
        let s = self.core.snapshot();
        Counts {
            state: s.state,
            calls: s.tally.calls,
            failures: s.tally.failures,
            slow_calls: s.tally.slow,
            rejections: s.rejections,
            probes_in_flight: s.probes_in_flight,
        }
    }

    /// Holds the breaker open (every call rejected) until
    /// [`reset`](Self::reset). Calls in flight finish; their outcomes are
    /// not counted.
    pub fn force_open(&self) {
        self.core.force_open();
    }

    /// Lets every call through and counts nothing (resilience4j's
    /// `DISABLED`, or "forced closed") until [`reset`](Self::reset).
    pub fn disable(&self) {
        self.core.disable();
    }

    /// Closes the breaker with empty counts, from any state: the way back
    /// from [`force_open`](Self::force_open) and [`disable`](Self::disable).
    /// The open duration starts again from its base at the next trip.
    pub fn reset(&self) {
        self.core.reset();
    }
}

impl fmt::Debug for CircuitBreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerHandle")
            .field("counts", &self.counts())
            .finish()
    }
}
