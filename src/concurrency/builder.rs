//! Configuration: one builder, started from an algorithm on
//! [`ConcurrencyLimitLayer`], checked by [`build()`](ConcurrencyLimitBuilder::build).

use super::events::{ConcurrencyHooks, ConcurrencyRejected, LimitChanged, Observe};
use std::borrow::Cow;
use std::time::Duration;

use crate::classify::ErrorsAsFailures;
use crate::clock::duration_to_nanos;
use crate::sync::Arc;

use super::algorithm::{Aimd, Algorithm, Gradient2};
use super::error::ConfigError;
use super::layer::ConcurrencyLimitLayer;
use super::limiter::{Limiter, MAX_LIMIT, Settings};

/// The limit a new limiter starts from, unless set.
pub const DEFAULT_INITIAL_LIMIT: u32 = 20;
/// The largest limit an adaptive limiter reaches, unless set.
pub const DEFAULT_MAX_LIMIT: u32 = 1_000;
/// Gradient2's latency tolerance, unless set: the limit shrinks once a
/// window's mean latency is 10 % above the no-load latency.
pub const DEFAULT_TOLERANCE: f64 = 1.1;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Gradient2,
    Aimd(Duration),
    Fixed(u32),
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Gradient2 => "gradient2",
            Kind::Aimd(_) => "aimd",
            Kind::Fixed(_) => "fixed",
        }
    }
}

/// Configures a concurrency limiter. Start one with
/// [`ConcurrencyLimitLayer::gradient2`], [`ConcurrencyLimitLayer::aimd`] or
/// [`ConcurrencyLimitLayer::fixed`]; finish with [`build`](Self::build),
/// which checks every setting.
///
/// ```
/// use palisade::ConcurrencyLimitLayer;
/// use std::time::Duration;
///
/// let layer = ConcurrencyLimitLayer::gradient2()
///     .initial_limit(10)
///     .min_limit(2)
///     .max_limit(500)
///     .tolerance(1.2)
///     .max_wait(Duration::from_millis(5))
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), palisade::concurrency::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "call .build() to get a ConcurrencyLimitLayer"]
pub struct ConcurrencyLimitBuilder<C = ErrorsAsFailures> {
    kind: Kind,
    initial: Option<u32>,
    min: Option<u32>,
    max: Option<u32>,
    tolerance: Option<f64>,
    smoothing: Option<f64>,
    probe_every: Option<u32>,
    backoff: Option<f64>,
    increase: Option<u32>,
    window: (Duration, Duration),
    min_samples: u64,
    max_wait: Option<Duration>,
    name: Option<Cow<'static, str>>,
    hooks: ConcurrencyHooks,
    classifier: C,
}

impl ConcurrencyLimitBuilder {
    fn with_kind(kind: Kind) -> Self {
        Self {
            kind,
            initial: None,
            min: None,
            max: None,
            tolerance: None,
            smoothing: None,
            probe_every: None,
            backoff: None,
            increase: None,
            window: (Duration::from_millis(10), Duration::from_secs(1)),
            min_samples: 10,
            max_wait: None,
            name: None,
            hooks: ConcurrencyHooks::default(),
            classifier: ErrorsAsFailures,
        }
    }

    pub(crate) fn gradient2() -> Self {
        Self::with_kind(Kind::Gradient2)
    }

    pub(crate) fn aimd(latency_threshold: Duration) -> Self {
        Self::with_kind(Kind::Aimd(latency_threshold))
    }

    pub(crate) fn fixed(limit: u32) -> Self {
        Self::with_kind(Kind::Fixed(limit))
    }
}

impl<C> ConcurrencyLimitBuilder<C> {
    /// The limit to start from (default 20, clamped into `min..=max` when
    /// those are set and it is not).
    pub fn initial_limit(mut self, limit: u32) -> Self {
        self.initial = Some(limit);
        self
    }

    /// The limit never falls below this (default 1).
    pub fn min_limit(mut self, limit: u32) -> Self {
        self.min = Some(limit);
        self
    }

    /// The limit never rises above this (default 1,000).
    pub fn max_limit(mut self, limit: u32) -> Self {
        self.max = Some(limit);
        self
    }

    /// Gradient2: how far above the no-load latency a window's mean may be
    /// before the limit shrinks (default 1.1; at least 1). The limit
    /// settles near `tolerance` times what the upstream takes without
    /// queueing, so a tighter tolerance queues less and a looser one
    /// tolerates noisier latency.
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = Some(tolerance);
        self
    }

    /// Gradient2: how much of each window's verdict is taken at once, in
    /// `(0, 1]` (default 0.2, Netflix's): lower is steadier, higher
    /// settles sooner.
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = Some(smoothing);
        self
    }

    /// Gradient2: windows between two probes of the no-load latency, once
    /// the first few are done (default 100; the first comes after 10
    /// windows, then 20, 40, ...). A probe holds the limit at 3/4 for two
    /// windows: more often learns a change of the upstream's own latency
    /// sooner, and costs more throughput.
    pub fn probe_every(mut self, n: u32) -> Self {
        self.probe_every = Some(n);
        self
    }

    /// AIMD: the factor the limit is multiplied by after a window with a
    /// drop or a latency above the threshold, in `[0.5, 1)` (default 0.9).
    pub fn backoff_ratio(mut self, ratio: f64) -> Self {
        self.backoff = Some(ratio);
        self
    }

    /// AIMD: what the limit grows by after a window that reached it
    /// (default 1).
    pub fn increase_by(mut self, n: u32) -> Self {
        self.increase = Some(n);
        self
    }

    /// How long a sample window lasts: twice the no-load latency (AIMD:
    /// the last window's latency), kept within `min..=max` (default 10 ms
    /// to 1 s). A window also waits for [`min_samples`](Self::min_samples).
    pub fn sample_window(mut self, min: Duration, max: Duration) -> Self {
        self.window = (min, max);
        self
    }

    /// The fewest timed calls a window closes with (default 10), unless it
    /// saw a drop.
    pub fn min_samples(mut self, n: u64) -> Self {
        self.min_samples = n;
        self
    }

    /// Waits up to `max` in `poll_ready` for a place instead of refusing
    /// at once (default: refuse at once). A waiter is woken when a call
    /// ends or the limit grows, and refused with [`Overloaded`] when the
    /// wait runs out. Needs a tokio runtime with time enabled.
    ///
    /// [`Overloaded`]: super::Overloaded
    pub fn max_wait(mut self, max: Duration) -> Self {
        self.max_wait = Some(max);
        self
    }

    /// A name for `tracing` events, metrics (label `name`) and hook events.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Calls `hook` each time the limit changes, after the limiter's lock
    /// is released. A panic in `hook` is caught and reported once through
    /// `tracing`; the limiter goes on. See [`events`](super::events).
    pub fn on_limit_change(mut self, hook: impl Fn(&LimitChanged) + Send + Sync + 'static) -> Self {
        self.hooks.limit_change = crate::hook::Hook::new("on_limit_change", hook);
        self
    }

    /// Calls `hook` for every call refused with
    /// [`Overloaded`](super::Overloaded), on the calling thread. A panic in
    /// `hook` is caught and reported once; the refusal stands.
    pub fn on_rejected(
        mut self,
        hook: impl Fn(&ConcurrencyRejected) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.rejected = crate::hook::Hook::new("on_rejected", hook);
        self
    }

    /// What counts as a drop: a [`Failure`](crate::Outcome::Failure) from
    /// this classifier shrinks the limit (and its latency is not a
    /// sample); an ignored outcome (palisade's own refusals from below
    /// among them) counts for nothing. Default:
    /// [`ErrorsAsFailures`].
    pub fn classifier<C2>(self, classifier: C2) -> ConcurrencyLimitBuilder<C2> {
        ConcurrencyLimitBuilder {
            kind: self.kind,
            initial: self.initial,
            min: self.min,
            max: self.max,
            tolerance: self.tolerance,
            smoothing: self.smoothing,
            probe_every: self.probe_every,
            backoff: self.backoff,
            increase: self.increase,
            window: self.window,
            min_samples: self.min_samples,
            max_wait: self.max_wait,
            name: self.name,
            hooks: self.hooks,
            classifier,
        }
    }

    /// Checks the configuration and builds the layer (and its one shared
    /// limiter).
    pub fn build(self) -> Result<ConcurrencyLimitLayer<C>, ConfigError> {
        let not_for = |setting| ConfigError::NotForAlgorithm {
            setting,
            algorithm: self.kind.name(),
        };
        let gradient_only = [
            ("tolerance", self.tolerance.is_some()),
            ("smoothing", self.smoothing.is_some()),
            ("probe_every", self.probe_every.is_some()),
        ];
        let aimd_only = [
            ("backoff_ratio", self.backoff.is_some()),
            ("increase_by", self.increase.is_some()),
        ];
        let bounds = [
            ("initial_limit", self.initial.is_some()),
            ("min_limit", self.min.is_some()),
            ("max_limit", self.max.is_some()),
        ];
        let refused: Vec<(&'static str, bool)> = match self.kind {
            Kind::Gradient2 => aimd_only.to_vec(),
            Kind::Aimd(_) => gradient_only.to_vec(),
            Kind::Fixed(_) => [&gradient_only[..], &aimd_only[..]].concat(),
        };
        if let Some((setting, _)) = refused.iter().find(|(_, set)| *set) {
            return Err(not_for(setting));
        }
        if let Kind::Fixed(_) = self.kind {
            if let Some((setting, _)) = bounds.iter().find(|(_, set)| *set) {
                return Err(not_for(setting));
            }
        }

        let (initial, min, max) = match self.kind {
            Kind::Fixed(n) => (n, n, n),
            _ => {
                let min = self.min.unwrap_or(1);
                let max = self.max.unwrap_or(DEFAULT_MAX_LIMIT.max(min));
                let initial = self
                    .initial
                    .unwrap_or(DEFAULT_INITIAL_LIMIT.clamp(min, max.max(min)));
                (initial, min, max)
            }
        };
        if min == 0 {
            return Err(ConfigError::ZeroMinLimit);
        }
        if min > max || max > MAX_LIMIT {
            return Err(ConfigError::Limits {
                min,
                max,
                cap: MAX_LIMIT,
            });
        }
        if !(min..=max).contains(&initial) {
            return Err(ConfigError::InitialLimit { initial, min, max });
        }
        let (min_window, max_window) = self.window;
        if max_window.is_zero() || min_window > max_window {
            return Err(ConfigError::SampleWindow {
                min: min_window,
                max: max_window,
            });
        }
        if self.min_samples == 0 {
            return Err(ConfigError::ZeroMinSamples);
        }
        if self.max_wait.is_some_and(|w| w.is_zero()) {
            return Err(ConfigError::ZeroMaxWait);
        }

        let algorithm = match self.kind {
            Kind::Gradient2 => {
                let tolerance = self.tolerance.unwrap_or(DEFAULT_TOLERANCE);
                if !(tolerance.is_finite() && tolerance >= 1.0) {
                    return Err(ConfigError::Tolerance(tolerance));
                }
                let smoothing = self.smoothing.unwrap_or(0.2);
                if !(smoothing > 0.0 && smoothing <= 1.0) {
                    return Err(ConfigError::Smoothing(smoothing));
                }
                Algorithm::Gradient2(Gradient2::new(
                    tolerance,
                    smoothing,
                    self.probe_every.unwrap_or(100),
                ))
            }
            Kind::Aimd(threshold) => {
                if threshold.is_zero() {
                    return Err(ConfigError::ZeroLatencyThreshold);
                }
                let backoff = self.backoff.unwrap_or(0.9);
                if !(0.5..1.0).contains(&backoff) {
                    return Err(ConfigError::BackoffRatio(backoff));
                }
                Algorithm::Aimd(Aimd::new(
                    duration_to_nanos(threshold) as f64,
                    backoff,
                    f64::from(self.increase.unwrap_or(1)),
                ))
            }
            Kind::Fixed(_) => Algorithm::Fixed,
        };
        let settings = Settings {
            min_limit: min,
            max_limit: max,
            min_window: duration_to_nanos(min_window),
            max_window: duration_to_nanos(max_window),
            min_samples: self.min_samples,
            observe: Observe::new(self.name.as_ref(), self.hooks, initial),
            name: self.name,
        };
        let limiter = Arc::new(Limiter::new(algorithm, initial, settings));
        Ok(ConcurrencyLimitLayer::from_parts(
            limiter,
            self.classifier,
            self.max_wait,
        ))
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;
    use crate::ConcurrencyLimitLayer;

    #[test]
    fn bad_configuration_is_an_error() {
        let g = ConcurrencyLimitLayer::gradient2;
        assert_eq!(
            g().min_limit(0).build().unwrap_err(),
            ConfigError::ZeroMinLimit
        );
        assert!(matches!(
            g().min_limit(5).max_limit(4).build(),
            Err(ConfigError::Limits { .. })
        ));
        assert!(matches!(
            g().max_limit(MAX_LIMIT + 1).build(),
            Err(ConfigError::Limits { .. })
        ));
        assert!(matches!(
            g().initial_limit(50).max_limit(10).build(),
            Err(ConfigError::InitialLimit { .. })
        ));
        for t in [0.99, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                g().tolerance(t).build(),
                Err(ConfigError::Tolerance(_))
            ));
        }
        for s in [0.0, 1.5, f64::NAN] {
            assert!(matches!(
                g().smoothing(s).build(),
                Err(ConfigError::Smoothing(_))
            ));
        }
        assert!(matches!(
            g().sample_window(Duration::from_secs(2), Duration::from_secs(1))
                .build(),
            Err(ConfigError::SampleWindow { .. })
        ));
        assert!(matches!(
            g().sample_window(Duration::ZERO, Duration::ZERO).build(),
            Err(ConfigError::SampleWindow { .. })
        ));
        assert_eq!(
            g().min_samples(0).build().unwrap_err(),
            ConfigError::ZeroMinSamples
        );
        assert_eq!(
            g().max_wait(Duration::ZERO).build().unwrap_err(),
            ConfigError::ZeroMaxWait
        );
        assert!(matches!(
            g().backoff_ratio(0.9).build(),
            Err(ConfigError::NotForAlgorithm { .. })
        ));
        let a = || ConcurrencyLimitLayer::aimd(Duration::from_millis(100));
        assert!(matches!(
            a().backoff_ratio(1.0).build(),
            Err(ConfigError::BackoffRatio(_))
        ));
        assert!(matches!(
            a().backoff_ratio(f64::NAN).build(),
            Err(ConfigError::BackoffRatio(_))
        ));
        assert!(matches!(
            a().tolerance(1.5).build(),
            Err(ConfigError::NotForAlgorithm { .. })
        ));
        assert_eq!(
            ConcurrencyLimitLayer::aimd(Duration::ZERO)
                .build()
                .unwrap_err(),
            ConfigError::ZeroLatencyThreshold
        );
        assert_eq!(
            ConcurrencyLimitLayer::fixed(0).build().unwrap_err(),
            ConfigError::ZeroMinLimit
        );
        assert!(matches!(
            ConcurrencyLimitLayer::fixed(4).max_limit(8).build(),
            Err(ConfigError::NotForAlgorithm { .. })
        ));
    }

    #[test]
    fn defaults_fit_the_bounds() {
        let h = ConcurrencyLimitLayer::gradient2().build().unwrap().handle();
        assert_eq!(h.limit(), DEFAULT_INITIAL_LIMIT);
        let h = ConcurrencyLimitLayer::gradient2()
            .max_limit(5)
            .build()
            .unwrap()
            .handle();
        assert_eq!(h.limit(), 5);
        let h = ConcurrencyLimitLayer::gradient2()
            .min_limit(2_000)
            .build()
            .unwrap()
            .handle();
        assert_eq!((h.limit(), h.algorithm()), (2_000, "gradient2"));
        let h = ConcurrencyLimitLayer::fixed(7).build().unwrap().handle();
        assert_eq!((h.limit(), h.algorithm()), (7, "fixed"));
        let h = ConcurrencyLimitLayer::aimd(Duration::from_millis(1))
            .build()
            .unwrap()
            .handle();
        assert_eq!(h.algorithm(), "aimd");
    }
}
