//! [`AdaptiveThrottleLayer`], its builder and its handle.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use crate::classify::ErrorsAsFailures;
use crate::hook::Hook;
use crate::rng::SharedRng;

use super::super::error::ConfigError;
use super::super::window::{Window, check_time_window};
use super::AdaptiveThrottle;
use super::events::{Observe, ThrottleRefused};
use super::state::Throttle;

/// `K` when not set: the SRE book's suggestion.
pub const DEFAULT_K: f64 = 2.0;
/// The window when not set: the last two minutes, in 24 buckets of 5 s.
pub const DEFAULT_THROTTLE_WINDOW: Window = Window::time_with_buckets(Duration::from_secs(120), 24);

/// Wraps services in client-side adaptive throttling; see
/// [the module docs](super) for what it does and when to prefer it to a
/// breaker.
///
/// The state is created by [`build()`](AdaptiveThrottleBuilder::build) and
/// shared by every service the layer makes and every clone of them.
///
/// ```
/// use palisade::circuit_breaker::{AdaptiveThrottleLayer, Window};
/// use std::time::Duration;
///
/// let layer = AdaptiveThrottleLayer::builder()
///     .k(2.0)
///     .window(Window::time_with_buckets(Duration::from_secs(60), 30))
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), palisade::circuit_breaker::ConfigError>(())
/// ```
pub struct AdaptiveThrottleLayer<C = ErrorsAsFailures> {
    state: Arc<Throttle>,
    classifier: C,
}

impl AdaptiveThrottleLayer {
    /// A builder with `K` = 2, a 2-minute window and
    /// [`ErrorsAsFailures`].
    pub fn builder() -> AdaptiveThrottleBuilder {
        AdaptiveThrottleBuilder {
            k: DEFAULT_K,
            window: DEFAULT_THROTTLE_WINDOW,
            seed: None,
            name: None,
            refused: Hook::none(),
            classifier: ErrorsAsFailures,
        }
    }
}

impl<C> AdaptiveThrottleLayer<C> {
    /// A handle on the throttle's counts.
    pub fn handle(&self) -> AdaptiveThrottleHandle {
        AdaptiveThrottleHandle {
            state: self.state.clone(),
        }
    }
}

impl<C: Clone> Clone for AdaptiveThrottleLayer<C> {
    /// The clone shares the throttle.
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<C> fmt::Debug for AdaptiveThrottleLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveThrottleLayer")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone> Layer<S> for AdaptiveThrottleLayer<C> {
    type Service = AdaptiveThrottle<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveThrottle::from_parts(inner, self.state.clone(), self.classifier.clone())
    }
}

/// Configures an [`AdaptiveThrottleLayer`]; checked by
/// [`build`](Self::build).
#[derive(Debug, Clone)]
#[must_use = "call .build() to get an AdaptiveThrottleLayer"]
pub struct AdaptiveThrottleBuilder<C = ErrorsAsFailures> {
    k: f64,
    window: Window,
    seed: Option<u64>,
    name: Option<Cow<'static, str>>,
    refused: Hook<ThrottleRefused>,
    classifier: C,
}

impl<C> AdaptiveThrottleBuilder<C> {
    /// The multiplier `K` (default 2, at least 1): the client sends up to
    /// `K` times what the backend accepts. Lower is more aggressive (less
    /// wasted work on an overloaded backend, slower to notice recovery);
    /// higher lets more requests through.
    pub fn k(mut self, k: f64) -> Self {
        self.k = k;
        self
    }

    /// The window requests and accepts are counted over: a
    /// [`Window::time`] (default: 2 minutes in 24 buckets). A count window
    /// is refused by `build`.
    pub fn window(mut self, window: Window) -> Self {
        self.window = window;
        self
    }

    /// Seeds the random draws, so a test can replay which requests are
    /// throttled (default: seeded from the OS).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// A name for the throttle's metric (label `name`) and hook events.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Calls `hook` for every request refused locally with
    /// [`Throttled`](super::Throttled), on the calling thread. A panic in
    /// `hook` is caught and reported once through `tracing`; the refusal
    /// stands. See [`events`](super::events).
    pub fn on_refused(mut self, hook: impl Fn(&ThrottleRefused) + Send + Sync + 'static) -> Self {
        self.refused = Hook::new("on_refused", hook);
        self
    }

    /// Decides which outcomes are *accepts* (default
    /// [`ErrorsAsFailures`]: every `Ok`). For the SRE book's meaning, count
    /// as failures only the backend's refusals for overload (HTTP 429 and
    /// 503, gRPC `RESOURCE_EXHAUSTED`/`UNAVAILABLE`): a 404 was accepted.
    /// Local rejections from layers below are ignored (not requests the
    /// backend saw).
    pub fn classifier<C2>(self, classifier: C2) -> AdaptiveThrottleBuilder<C2> {
        AdaptiveThrottleBuilder {
            k: self.k,
            window: self.window,
            seed: self.seed,
            name: self.name,
            refused: self.refused,
            classifier,
        }
    }

    /// Checks every setting and creates the throttle's shared state.
    pub fn build(self) -> Result<AdaptiveThrottleLayer<C>, ConfigError> {
        if !(self.k.is_finite() && self.k >= 1.0) {
            return Err(ConfigError::ThrottleK(self.k));
        }
        let Window::Time { span, buckets } = self.window else {
            return Err(ConfigError::ThrottleNeedsTimeWindow);
        };
        check_time_window(span, buckets)?;
        let rng = match self.seed {
            Some(seed) => SharedRng::seeded(seed),
            None => SharedRng::from_entropy(),
        };
        let mut throttle = Throttle::new(self.k, span, buckets, rng);
        throttle.observe = Some(Observe::new(self.name, self.refused));
        Ok(AdaptiveThrottleLayer {
            state: Arc::new(throttle),
            classifier: self.classifier,
        })
    }
}

/// Reads an adaptive throttle's counts; from
/// [`AdaptiveThrottleLayer::handle`]. Cheap to clone.
#[derive(Clone)]
pub struct AdaptiveThrottleHandle {
    state: Arc<Throttle>,
}

/// An adaptive throttle's counts at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct ThrottleCounts {
    /// Requests in the window (throttled ones included).
    pub requests: u64,
    /// Requests in the window the backend accepted.
    pub accepts: u64,
    /// The probability the next request is throttled:
    /// `max(0, (requests - K * accepts) / (requests + 1))`.
    pub rejection_probability: f64,
    /// Requests throttled since the layer was built.
    pub throttled: u64,
}

impl AdaptiveThrottleHandle {
    /// The counts now (slides the window to now first).
    pub fn counts(&self) -> ThrottleCounts {
        let s = self.state.snapshot();
        ThrottleCounts {
            requests: s.requests,
            accepts: s.accepts,
            rejection_probability: s.probability,
            throttled: s.throttled,
        }
    }
}

impl fmt::Debug for AdaptiveThrottleHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveThrottleHandle")
            .field("counts", &self.counts())
            .finish()
    }
}
