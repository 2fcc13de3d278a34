//! The layer and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::RateLimit;
use super::error::ConfigError;
use super::events::{Observe, RateLimitHooks, RateLimitRefused};
use super::gcra::Gcra;
use super::handle::RateLimitHandle;
use super::headers::{NoHeaders, Policy, Sealed, ceil_secs};
use super::limiter::{Algorithm, Limiter};
use super::request::{CostBy, PerRequest, Unkeyed};
use super::sliding_log::SlidingLog;
use super::sliding_window::SlidingWindow;
use crate::clock::{Nanos, duration_to_nanos};

/// The bound on keys held when `keyed` is set without `max_keys`.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Applies a rate limit to a service. Build it with
/// [`token_bucket`](RateLimitLayer::token_bucket),
/// [`sliding_window`](RateLimitLayer::sliding_window) or
/// [`sliding_log`](RateLimitLayer::sliding_log), then
/// [`build`](RateLimitBuilder::build).
///
/// The limiter's state is created by `build()`: every service this layer
/// value produces, and every clone of them, shares it. Build the layer once
/// and reuse it; building twice makes two independent limits.
///
/// ```
/// use palisade::RateLimitLayer;
/// use std::time::Duration;
/// use tower::ServiceBuilder;
///
/// # fn main() -> Result<(), palisade::rate_limit::ConfigError> {
/// let layer = RateLimitLayer::token_bucket(100, Duration::from_secs(1))
///     .burst(20)
///     .build()?;
/// let svc = ServiceBuilder::new()
///     .layer(layer)
///     .service_fn(|req: u32| async move { Ok::<_, std::convert::Infallible>(req) });
/// # let _ = svc;
/// # Ok(())
/// # }
/// ```
///
/// The third type parameter says where the limit is kept: [`InMemory`] (the
/// default), or `Redis` for a limit shared by a fleet (feature `redis`, see
/// [`RateLimitBuilder::redis`]). The fourth says what admitted responses
/// carry: nothing ([`NoHeaders`]), or `RateLimit` header fields
/// ([`RateLimitHeaders`](super::RateLimitHeaders), see
/// [`RateLimitBuilder::headers`]).
pub struct RateLimitLayer<K = Unkeyed, C = PerRequest, B = InMemory, H = NoHeaders> {
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) key: K,
    pub(crate) cost: C,
    pub(crate) max_wait: Option<Nanos>,
    pub(crate) backend: B,
    pub(crate) headers: H,
}

/// Where an in-memory [`RateLimitLayer`] keeps its limit: in this process
/// (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct InMemory;

impl<K: Clone, C: Clone, B: Clone, H: Clone> Clone for RateLimitLayer<K, C, B, H> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            key: self.key.clone(),
            cost: self.cost.clone(),
            max_wait: self.max_wait,
            backend: self.backend.clone(),
            headers: self.headers.clone(),
        }
    }
}

impl<K, C, B: fmt::Debug, H> fmt::Debug for RateLimitLayer<K, C, B, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("algorithm", &self.limiter.algorithm_name())
            .field("limit", &self.limiter.limit())
            .field("keyed", &self.limiter.is_keyed())
            .field("max_wait", &self.max_wait)
            .field("backend", &self.backend)
            .field("headers", &self.limiter.policy.is_some())
            .finish_non_exhaustive()
    }
}

impl RateLimitLayer {
    /// A token bucket: `rate` units of cost per `period`, at most `burst`
    /// (default 1) at once. See [the module docs](super#token-bucket-gcra)
    /// for the exact guarantee.
    pub fn token_bucket(rate: u64, period: Duration) -> RateLimitBuilder {
        RateLimitBuilder::new(Spec::TokenBucket {
            rate,
            period,
            burst: None,
        })
    }

    /// A sliding-window counter: at most `limit` per `window`, estimated
    /// from two counts (cheap, approximate; see
    /// [the module docs](super#sliding-window-counter)). `.exact()` turns it
    /// into the exact [`sliding_log`](Self::sliding_log).
    pub fn sliding_window(limit: u64, window: Duration) -> RateLimitBuilder {
        RateLimitBuilder::new(Spec::Window {
            limit,
            window,
            exact: false,
        })
    }

    /// A sliding-window log: never more than `limit` in any window of
    /// `window` (exact; one timestamp per admission in the window).
    pub fn sliding_log(limit: u64, window: Duration) -> RateLimitBuilder {
        RateLimitBuilder::new(Spec::Window {
            limit,
            window,
            exact: true,
        })
    }
}

impl<K, C, H> RateLimitLayer<K, C, InMemory, H> {
    /// A handle on this limiter's counts, shared with every service the
    /// layer produces.
    pub fn handle(&self) -> RateLimitHandle {
        RateLimitHandle::new(self.limiter.clone())
    }
}

impl<S, K: Clone, C: Clone, H: Clone> Layer<S> for RateLimitLayer<K, C, InMemory, H> {
    type Service = RateLimit<S, K, C, H>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(
            inner,
            self.limiter.clone(),
            self.key.clone(),
            self.cost.clone(),
            self.headers.clone(),
            self.max_wait,
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum Spec {
    TokenBucket {
        rate: u64,
        period: Duration,
        burst: Option<u64>,
    },
    Window {
        limit: u64,
        window: Duration,
        exact: bool,
    },
}

/// Configures a [`RateLimitLayer`]; nothing is checked until
/// [`build`](Self::build), which reports the first problem.
pub struct RateLimitBuilder<K = Unkeyed, C = PerRequest, H = NoHeaders> {
    spec: Spec,
    /// The policy name for `RateLimit` header fields (`.headers(..)`).
    policy_name: Option<String>,
    headers: std::marker::PhantomData<fn() -> H>,
    wait: Option<Duration>,
    pub(crate) max_keys: Option<usize>,
    keyed: bool,
    costed: bool,
    misuse: Option<ConfigError>,
    hooks: RateLimitHooks,
    key: K,
    cost: C,
}

impl<K, C, H> fmt::Debug for RateLimitBuilder<K, C, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitBuilder")
            .field("spec", &self.spec)
            .field("wait", &self.wait)
            .field("max_keys", &self.max_keys)
            .field("keyed", &self.keyed)
            .field("costed", &self.costed)
            .field("headers", &self.policy_name)
            .finish_non_exhaustive()
    }
}

impl RateLimitBuilder {
    fn new(spec: Spec) -> Self {
        Self {
            spec,
            policy_name: None,
            headers: std::marker::PhantomData,
            wait: None,
            max_keys: None,
            keyed: false,
            costed: false,
            misuse: None,
            hooks: RateLimitHooks::default(),
            key: Unkeyed,
            cost: PerRequest,
        }
    }
}

impl<K, C, H: Sealed> RateLimitBuilder<K, C, H> {
    fn misuse(mut self, e: ConfigError) -> Self {
        self.misuse.get_or_insert(e);
        self
    }

    /// A name for the limiter's metrics (label `name`) and hook events.
    pub fn name(mut self, name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.hooks.name = Some(name.into());
        self
    }

    /// Calls `hook` for every refused request, on the calling thread in
    /// `call`, with no lock held. A panic in `hook` is caught and reported
    /// once through `tracing`; the refusal stands. See
    /// [`events`](super::events).
    pub fn on_refused(mut self, hook: impl Fn(&RateLimitRefused) + Send + Sync + 'static) -> Self {
        self.hooks.refused = crate::hook::Hook::new("on_refused", hook);
        self
    }

    /// The token bucket's burst: the most cost admitted at once (default 1,
    /// which spaces requests evenly). Token bucket only.
    pub fn burst(mut self, burst: u64) -> Self {
        match &mut self.spec {
            Spec::TokenBucket { burst: b, .. } => {
                *b = Some(burst);
                self
            }
            Spec::Window { .. } => self.misuse(ConfigError::BurstNotApplicable),
        }
    }

    /// Makes a sliding window exact: the sliding log. Sliding window only.
    pub fn exact(mut self) -> Self {
        match &mut self.spec {
            Spec::Window { exact, .. } => {
                *exact = true;
                self
            }
            Spec::TokenBucket { .. } => self.misuse(ConfigError::ExactNotApplicable),
        }
    }

    /// Wait mode: `poll_ready` waits up to `max_wait` for capacity instead
    /// of refusing at once; a request whose wait would exceed it is refused
    /// at once. Unkeyed limiters without a cost function only (the request
    /// is not known in `poll_ready`). See
    /// [the module docs](super#wait-mode).
    pub fn wait(mut self, max_wait: Duration) -> Self {
        self.wait = Some(max_wait);
        self
    }

    /// The most keys held at once by a keyed limiter (default
    /// [`DEFAULT_MAX_KEYS`]).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = Some(max_keys);
        self
    }

    /// Limits each key separately; `extract` reads the key from the request
    /// (client IP, API key, tenant): a closure `Fn(&Req) -> K` (annotate its
    /// parameter's type) or any [`KeyExtractor`](super::KeyExtractor), such
    /// as `http::ClientIp` (feature `http`). Keyed limiters decide in `call`.
    pub fn keyed<E>(self, extract: E) -> RateLimitBuilder<E, C, H> {
        RateLimitBuilder {
            spec: self.spec,
            policy_name: self.policy_name,
            headers: self.headers,
            wait: self.wait,
            max_keys: self.max_keys,
            keyed: true,
            costed: self.costed,
            misuse: self.misuse,
            hooks: self.hooks,
            key: extract,
            cost: self.cost,
        }
    }

    /// Charges each request `cost(&request)` units instead of 1 (token
    /// bucket and sliding-window counter). A cost above the burst or limit
    /// fails with [`InsufficientCapacity`](super::InsufficientCapacity); a
    /// cost of 0 passes without being counted against the limit.
    pub fn cost<F>(self, cost: F) -> RateLimitBuilder<K, CostBy<F>, H> {
        RateLimitBuilder {
            spec: self.spec,
            policy_name: self.policy_name,
            headers: self.headers,
            wait: self.wait,
            max_keys: self.max_keys,
            keyed: self.keyed,
            costed: true,
            misuse: self.misuse,
            hooks: self.hooks,
            key: self.key,
            cost: CostBy(cost),
        }
    }

    /// Checks the settings and creates the limiter's state (once: every
    /// service from the returned layer shares it).
    pub fn build(self) -> Result<RateLimitLayer<K, C, InMemory, H>, ConfigError> {
        if let Some(e) = self.misuse {
            return Err(e);
        }
        let algorithm = match self.spec {
            Spec::TokenBucket {
                rate,
                period,
                burst,
            } => Algorithm::Gcra(Gcra::new(
                rate,
                duration_to_nanos(period),
                burst.unwrap_or(1),
            )?),
            Spec::Window {
                limit,
                window,
                exact: false,
            } => Algorithm::Window(SlidingWindow::new(limit, duration_to_nanos(window))?),
            Spec::Window {
                limit,
                window,
                exact: true,
            } => {
                if self.costed {
                    return Err(ConfigError::CostWithLog);
                }
                let w = duration_to_nanos(window);
                Algorithm::Log(SlidingLog::new(limit, w)?)
            }
        };
        if self.wait.is_some() && (self.keyed || self.costed) {
            return Err(ConfigError::WaitNeedsUnkeyed);
        }
        let max_keys = match (self.keyed, self.max_keys) {
            (false, Some(_)) => return Err(ConfigError::MaxKeysWithoutKey),
            (false, None) => None,
            (true, Some(0)) => return Err(ConfigError::ZeroMaxKeys),
            (true, n) => Some(n.unwrap_or(DEFAULT_MAX_KEYS)),
        };
        let policy = match (self.policy_name, algorithm) {
            (None, _) => None,
            (Some(name), Algorithm::Gcra(g)) => {
                if !Policy::valid_name(&name) {
                    return Err(ConfigError::InvalidPolicyName);
                }
                // Leaked once per build (see `Policy`): no drop glue on
                // `RateLimited`, hence none on the hot path.
                let policy: &'static Policy = Box::leak(Box::new(gcra_policy(name, &g)));
                Some(policy)
            }
            (Some(_), _) => return Err(ConfigError::HeadersNeedTokenBucket),
        };
        let mut limiter = Limiter::new(algorithm, max_keys);
        limiter.policy = policy;
        let (observe, keys) = Observe::new(self.hooks, self.wait.is_some(), max_keys.is_some());
        limiter.observe = observe;
        limiter.set_keys_gauge(keys);
        Ok(RateLimitLayer {
            limiter: Arc::new(limiter),
            key: self.key,
            cost: self.cost,
            max_wait: self.wait.map(duration_to_nanos),
            backend: InMemory,
            headers: H::from_policy(policy),
        })
    }
}

/// The token bucket's policy for `RateLimit-Policy`: `w` is the time to
/// refill the whole burst, in whole seconds rounded up (at least 1, the
/// draft has no sub-second windows), and `q` the units refilled in `w`
/// (at least the burst, so `r` never exceeds `q`).
fn gcra_policy(name: String, g: &Gcra) -> Policy {
    let window = ceil_secs(std::time::Duration::from_nanos(g.capacity())).max(1);
    let quota = (u128::from(window) * 1_000_000_000 / u128::from(g.emission_interval()))
        .max(u128::from(g.burst()));
    Policy {
        name: name.into_boxed_str(),
        quota: u64::try_from(quota).unwrap_or(u64::MAX),
        window,
    }
}

#[cfg(feature = "http")]
impl<K, C> RateLimitBuilder<K, C, NoHeaders> {
    /// Opt-in `RateLimit-Policy` and `RateLimit` header fields (IETF draft
    /// `draft-ietf-httpapi-ratelimit-headers`, feature `http`) under the
    /// policy name `name`, token bucket only, in-memory limiters (keyed or
    /// not) only.
    ///
    /// Every admitted response gets `RateLimit-Policy: "name";q=Q;w=W` and
    /// `RateLimit: "name";r=R;t=T`, from the state the admission itself
    /// stored: `R` units left for this client (its key, when keyed), `T` the
    /// seconds (rounded up) until one more unit is available. A refusal
    /// answered by [`ErrorResponseLayer`](crate::http::ErrorResponseLayer)
    /// carries both too, with `t` equal to its `Retry-After`. `W` is the time
    /// to refill the whole burst (whole seconds, at least 1) and `Q` the
    /// units refilled in `W`. A request of cost 0 is not counted and gets no
    /// `RateLimit` field.
    ///
    /// `build()` fails with [`ConfigError::HeadersNeedTokenBucket`] for the
    /// windows and [`ConfigError::InvalidPolicyName`] for a name that is
    /// not printable ASCII.
    ///
    /// ```
    /// use palisade::RateLimitLayer;
    /// use std::time::Duration;
    /// use tower::{Service, ServiceBuilder, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), palisade::BoxError> {
    /// let layer = RateLimitLayer::token_bucket(1, Duration::from_secs(1))
    ///     .burst(3)
    ///     .headers("default")
    ///     .build()?;
    /// let mut svc = ServiceBuilder::new().layer(layer).service_fn(|_: ()| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(()))
    /// });
    /// let response = svc.ready().await?.call(()).await?;
    /// assert_eq!(response.headers()["ratelimit-policy"], r#""default";q=3;w=3"#);
    /// assert_eq!(response.headers()["ratelimit"], r#""default";r=2;t=1"#);
    /// # Ok(())
    /// # }
    /// ```
    pub fn headers(
        self,
        name: impl Into<String>,
    ) -> RateLimitBuilder<K, C, super::headers::RateLimitHeaders> {
        RateLimitBuilder {
            spec: self.spec,
            policy_name: Some(name.into()),
            headers: std::marker::PhantomData,
            wait: self.wait,
            max_keys: self.max_keys,
            keyed: self.keyed,
            costed: self.costed,
            misuse: self.misuse,
            hooks: self.hooks,
            key: self.key,
            cost: self.cost,
        }
    }
}
