//! Configuration: one builder, started from a trip policy on
//! [`CircuitBreakerLayer`], checked by [`build()`](CircuitBreakerBuilder::build).

use std::borrow::Cow;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::classify::ErrorsAsFailures;
use crate::clock::duration_to_nanos;
use crate::rng::SharedRng;
use crate::sync::Arc;

use super::error::ConfigError;
use super::events::{BreakerHooks, CallRejected, Observe, Observer, StateChange};
use super::layer::CircuitBreakerLayer;
use super::policy::{Consecutive, Policy, Rates, Store};
use super::state::{Core, MAX_PROBES, Settings};
use super::window::{CountRing, MAX_COUNT_WINDOW, TimeBuckets, Window, check_time_window};

/// How long a breaker stays open when nothing says otherwise.
pub const DEFAULT_OPEN_FOR: Duration = Duration::from_secs(30);
/// The minimum number of calls in the window before a rate can trip, when
/// not set (lowered to a smaller count window's size).
pub const DEFAULT_MIN_CALLS: u64 = 10;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Consecutive(u32),
    Rate,
}

/// Configures a circuit breaker. Start one with
/// [`CircuitBreakerLayer::consecutive_failures`],
/// [`CircuitBreakerLayer::failure_rate`] or
/// [`CircuitBreakerLayer::slow_call_rate`]; finish with
/// [`build`](Self::build), which checks every setting.
///
/// ```
/// use palisade::backoff::{Backoff, Jitter};
/// use palisade::circuit_breaker::{CircuitBreakerLayer, Window};
/// use std::time::Duration;
///
/// let layer = CircuitBreakerLayer::failure_rate(0.5)
///     .window(Window::time(Duration::from_secs(10)))
///     .min_calls(20)
///     .slow_call_rate(0.8, Duration::from_secs(2))
///     .half_open_probes(3)
///     .open_backoff(
///         Backoff::exponential(Duration::from_secs(5))
///             .max_delay(Duration::from_secs(120))
///             .jitter(Jitter::Equal)
///             .build()?,
///     )
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "call .build() to get a CircuitBreakerLayer"]
pub struct CircuitBreakerBuilder<C = ErrorsAsFailures> {
    mode: Mode,
    failure_rate: Option<f64>,
    slow: Option<(f64, Duration)>,
    window: Option<Window>,
    min_calls: Option<u64>,
    open: Backoff,
    open_base: Duration,
    probes: u32,
    half_open_timeout: Option<Duration>,
    pub(crate) seed: Option<u64>,
    pub(crate) name: Option<Cow<'static, str>>,
    pub(crate) hooks: BreakerHooks,
    pub(crate) classifier: C,
}

impl CircuitBreakerBuilder {
    fn with_mode(mode: Mode) -> Self {
        Self {
            mode,
            failure_rate: None,
            slow: None,
            window: None,
            min_calls: None,
            open: Backoff::constant(DEFAULT_OPEN_FOR),
            open_base: DEFAULT_OPEN_FOR,
            probes: 1,
            half_open_timeout: None,
            seed: None,
            name: None,
            hooks: BreakerHooks::default(),
            classifier: ErrorsAsFailures,
        }
    }

    pub(crate) fn consecutive(n: u32) -> Self {
        Self::with_mode(Mode::Consecutive(n))
    }

    pub(crate) fn rate(failure_rate: Option<f64>, slow: Option<(f64, Duration)>) -> Self {
        let mut b = Self::with_mode(Mode::Rate);
        b.failure_rate = failure_rate;
        b.slow = slow;
        b
    }
}

impl<C> CircuitBreakerBuilder<C> {
    /// Trips when at least this fraction of the calls in the window failed
    /// (`failures / calls >= rate`, `rate` in `(0, 1]`). Adds a failure
    /// rate to a breaker started with
    /// [`slow_call_rate`](CircuitBreakerLayer::slow_call_rate).
    pub fn failure_rate(mut self, rate: f64) -> Self {
        self.failure_rate = Some(rate);
        self
    }

    /// Trips when at least `rate` of the calls in the window took
    /// `threshold` or longer (successful or not). A slow probe counts as a
    /// failed probe.
    pub fn slow_call_rate(mut self, rate: f64, threshold: Duration) -> Self {
        self.slow = Some((rate, threshold));
        self
    }

    /// What the rates are counted over (default `Window::count(100)`).
    pub fn window(mut self, window: Window) -> Self {
        self.window = Some(window);
        self
    }

    /// No rate trips the breaker before the window holds this many calls
    /// (default 10, or the count window's size if smaller).
    pub fn min_calls(mut self, min_calls: u64) -> Self {
        self.min_calls = Some(min_calls);
        self
    }

    /// A fixed open duration (default 30 s). Replaces any
    /// [`open_backoff`](Self::open_backoff).
    pub fn open_for(mut self, duration: Duration) -> Self {
        self.open = Backoff::constant(duration);
        self.open_base = duration;
        self
    }

    /// An open duration that grows with each consecutive re-trip (a
    /// half-open period that fails): attempt 0 for a trip from closed,
    /// then 1, 2, ... until the breaker closes again. Jitter keeps a fleet
    /// of breakers from probing in lockstep; see [`seed`](Self::seed).
    pub fn open_backoff(mut self, backoff: Backoff) -> Self {
        self.open_base = backoff.base();
        self.open = backoff;
        self
    }

    /// How many probes a half-open breaker admits at once, and how many
    /// must succeed to close it (default 1). One failed probe re-opens it.
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.probes = probes;
        self
    }

    /// Re-opens a half-open breaker whose probes have not decided within
    /// `timeout` (a probe that hangs would otherwise hold its slot for as
    /// long as its caller holds the future; resilience4j's
    /// `maxWaitDurationInHalfOpenState`). Checked when a call is rejected
    /// for want of a free slot. Default: no timeout.
    pub fn half_open_timeout(mut self, timeout: Duration) -> Self {
        self.half_open_timeout = Some(timeout);
        self
    }

    /// Seeds the jitter of [`open_backoff`](Self::open_backoff), so a test
    /// can replay the open durations (default: seeded from the OS).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// A name for the breaker's `tracing` events (field `breaker`), its
    /// metrics (label `name`) and its hooks' events.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Calls `hook` after every state transition (of every key, for a
    /// keyed breaker), on the thread that made it, with no lock held. A
    /// panic in `hook` is caught and reported once through `tracing`; the
    /// breaker goes on. See [`events`](super::events).
    pub fn on_state_change(mut self, hook: impl Fn(&StateChange) + Send + Sync + 'static) -> Self {
        self.hooks.state_change = crate::hook::Hook::new("on_state_change", hook);
        self
    }

    /// Calls `hook` for every call rejected with
    /// [`CircuitOpen`](super::CircuitOpen), on the calling thread. A panic
    /// in `hook` is caught and reported once; the rejection stands.
    pub fn on_rejected(mut self, hook: impl Fn(&CallRejected) + Send + Sync + 'static) -> Self {
        self.hooks.rejected = crate::hook::Hook::new("on_rejected", hook);
        self
    }

    /// Decides what counts as a failure (default
    /// [`ErrorsAsFailures`]); for example
    /// [`FailureWhenOk`](crate::classify::FailureWhenOk) to count `Ok`
    /// responses with status 5xx. The classifier is cloned into each
    /// response future, so keep it cheap to clone.
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerBuilder<C2> {
        CircuitBreakerBuilder {
            mode: self.mode,
            failure_rate: self.failure_rate,
            slow: self.slow,
            window: self.window,
            min_calls: self.min_calls,
            open: self.open,
            open_base: self.open_base,
            probes: self.probes,
            half_open_timeout: self.half_open_timeout,
            seed: self.seed,
            name: self.name,
            hooks: self.hooks,
            classifier,
        }
    }

    /// Checks every setting and creates the breaker's one shared state
    /// (and its metric handles, with the recorder installed now).
    pub fn build(self) -> Result<CircuitBreakerLayer<C>, ConfigError> {
        self.core(None, Observe::none())?; // settings first: no metrics for a bad one
        let observer = Observer::new(self.name.as_ref(), self.hooks.clone(), false);
        let core = Arc::new(self.core(self.seed, Observe::new(observer, None))?);
        Ok(CircuitBreakerLayer::from_parts(core, self.classifier))
    }

    /// Checks every setting and makes one breaker's state, its jitter
    /// seeded with `seed` (from the OS if `None`), reporting to `observe`.
    /// A keyed breaker makes one per key.
    pub(crate) fn core(&self, seed: Option<u64>, observe: Observe) -> Result<Core, ConfigError> {
        let policy = self.policy()?;
        if self.probes == 0 || self.probes > MAX_PROBES {
            return Err(ConfigError::Probes {
                probes: self.probes,
                max: MAX_PROBES,
            });
        }
        if self.open_base.is_zero() {
            return Err(ConfigError::ZeroOpenDuration);
        }
        if self.half_open_timeout.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::ZeroHalfOpenTimeout);
        }
        let settings = Settings {
            probes: self.probes,
            open: self.open.clone(),
            slow_threshold: self.slow.map(|(_, t)| duration_to_nanos(t)),
            half_open_timeout: self.half_open_timeout.map(duration_to_nanos),
            name: self.name.clone(),
            observe,
        };
        let rng = match seed {
            Some(seed) => SharedRng::seeded(seed),
            None => SharedRng::from_entropy(),
        };
        Ok(Core::new(policy, settings, rng))
    }

    fn policy(&self) -> Result<Policy, ConfigError> {
        if let Mode::Consecutive(n) = self.mode {
            let misplaced = [
                (self.failure_rate.is_some(), "a failure rate"),
                (self.slow.is_some(), "a slow-call rate"),
                (self.window.is_some(), "a window"),
                (self.min_calls.is_some(), "a minimum number of calls"),
            ];
            if let Some((_, setting)) = misplaced.iter().find(|(set, _)| *set) {
                return Err(ConfigError::NotForConsecutive { setting });
            }
            if n == 0 {
                return Err(ConfigError::ZeroConsecutiveFailures);
            }
            return Ok(Policy::Consecutive(Consecutive::new(n)));
        }
        let valid = |r: f64| r > 0.0 && r <= 1.0; // false for NaN
        if let Some(r) = self.failure_rate.filter(|r| !valid(*r)) {
            return Err(ConfigError::FailureRate(r));
        }
        if let Some((r, threshold)) = self.slow {
            if !valid(r) {
                return Err(ConfigError::SlowCallRate(r));
            }
            if threshold.is_zero() {
                return Err(ConfigError::ZeroSlowCallThreshold);
            }
        }
        let window = self.window.unwrap_or_default();
        let track_slow = self.slow.is_some();
        let (store, default_min) = match window {
            Window::Count { size: 0 } => return Err(ConfigError::ZeroWindow),
            Window::Count { size } if size > MAX_COUNT_WINDOW => {
                return Err(ConfigError::WindowTooLarge {
                    size,
                    max: MAX_COUNT_WINDOW,
                });
            }
            Window::Count { size } => {
                if let Some(min_calls) = self.min_calls.filter(|m| *m > u64::from(size)) {
                    return Err(ConfigError::MinCallsAboveWindow {
                        min_calls,
                        window: size,
                    });
                }
                (
                    Store::Count(CountRing::new(size, track_slow)),
                    DEFAULT_MIN_CALLS.min(u64::from(size)),
                )
            }
            Window::Time { span, buckets } => {
                check_time_window(span, buckets)?;
                (
                    Store::Time(TimeBuckets::new(span, buckets)),
                    DEFAULT_MIN_CALLS,
                )
            }
        };
        let min_calls = self.min_calls.unwrap_or(default_min);
        if min_calls == 0 {
            return Err(ConfigError::ZeroMinCalls);
        }
        Ok(Policy::Rate {
            rates: Rates {
                failure: self.failure_rate,
                slow: self.slow.map(|(r, _)| r),
                min_calls,
            },
            store,
        })
    }
}
