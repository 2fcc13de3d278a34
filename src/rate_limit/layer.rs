//! The layer and its builder.

use std::fmt;
use std::marker::PhantomData;
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
use super::mode::{Reject, Wait};
use super::request::{CostBy, PerRequest, Unkeyed};
use super::sliding_log::SlidingLog;
use super::sliding_window::SlidingWindow;
use crate::clock::{Clock, ClockSource, Nanos, duration_to_nanos};

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
///
/// The fifth says what a request over the limit does: fail at once
/// ([`Reject`], the default) or wait ([`Wait`], see
/// [`RateLimitBuilder::wait`]).
pub struct RateLimitLayer<K = Unkeyed, C = PerRequest, B = InMemory, H = NoHeaders, M = Reject> {
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) key: K,
    pub(crate) cost: C,
    pub(crate) max_wait: Option<Nanos>,
    pub(crate) backend: B,
    pub(crate) headers: H,
    pub(crate) mode: PhantomData<fn() -> M>,
}

/// Where an in-memory [`RateLimitLayer`] keeps its limit: in this process
/// (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct InMemory;

impl<K: Clone, C: Clone, B: Clone, H: Clone, M> Clone for RateLimitLayer<K, C, B, H, M> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            key: self.key.clone(),
            cost: self.cost.clone(),
            max_wait: self.max_wait,
            backend: self.backend.clone(),
            headers: self.headers.clone(),
            mode: PhantomData,
        }
    }
}

impl<K, C, B: fmt::Debug, H, M> fmt::Debug for RateLimitLayer<K, C, B, H, M> {
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

impl<K, C, H, M> RateLimitLayer<K, C, InMemory, H, M> {
    /// A handle on this limiter's counts, shared with every service the
    /// layer produces.
    pub fn handle(&self) -> RateLimitHandle {
        RateLimitHandle::new(self.limiter.clone())
    }
}

impl<S, K: Clone, C: Clone, H: Clone, M> Layer<S> for RateLimitLayer<K, C, InMemory, H, M> {
    type Service = RateLimit<S, K, C, H, M>;

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
pub struct RateLimitBuilder<K = Unkeyed, C = PerRequest, H = NoHeaders, M = Reject> {
    spec: Spec,
    mode: PhantomData<fn() -> M>,
    /// The policy name for `RateLimit` header fields (`.headers(..)`).
    policy_name: Option<String>,
    headers: std::marker::PhantomData<fn() -> H>,
    wait: Option<Duration>,
    pub(crate) max_keys: Option<usize>,
    keyed: bool,
    costed: bool,
    misuse: Option<ConfigError>,
    /// Further limits (`and`), checked with `spec` all-or-nothing.
    more: Vec<Spec>,
    hooks: RateLimitHooks,
    key: K,
    cost: C,
    clock: ClockSource,
}

impl<K, C, H, M> fmt::Debug for RateLimitBuilder<K, C, H, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitBuilder")
            .field("spec", &self.spec)
            .field("wait", &self.wait)
            .field("max_keys", &self.max_keys)
            .field("keyed", &self.keyed)
            .field("costed", &self.costed)
            .field("headers", &self.policy_name)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl RateLimitBuilder {
    fn new(spec: Spec) -> Self {
        Self {
            spec,
            mode: PhantomData,
            policy_name: None,
            headers: std::marker::PhantomData,
            wait: None,
            max_keys: None,
            keyed: false,
            costed: false,
            misuse: None,
            more: Vec::new(),
            hooks: RateLimitHooks::default(),
            key: Unkeyed,
            cost: PerRequest,
            clock: ClockSource::Tokio,
        }
    }
}

impl<K, C, H: Sealed, M> RateLimitBuilder<K, C, H, M> {
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

    /// Wait mode: a request over the limit waits up to `max_wait` for
    /// capacity instead of failing at once; one whose wait would exceed
    /// `max_wait` fails at once with [`RateLimited`](super::RateLimited)
    /// and its `retry_after`. The services need a `Clone` inner service.
    ///
    /// An unkeyed limiter without a cost function waits in `poll_ready`
    /// (backpressure, no timer per call); a keyed or costed one decides in
    /// `call`, where the request is known, and its response future waits
    /// before calling a clone of the inner service. See
    /// [the module docs](super#wait-mode).
    ///
    /// ```
    /// use palisade::RateLimitLayer;
    /// use std::time::Duration;
    /// use tokio::time::Instant;
    /// use tower::{Service, ServiceBuilder, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), palisade::BoxError> {
    /// // Outbound shaping: 2 per second per host, waiting up to 5 s.
    /// let layer = RateLimitLayer::token_bucket(2, Duration::from_secs(1))
    ///     .keyed(|host: &&'static str| host.to_string())
    ///     .wait(Duration::from_secs(5))
    ///     .build()?;
    /// let mut svc = ServiceBuilder::new()
    ///     .layer(layer)
    ///     .service_fn(|host: &'static str| async move { Ok::<_, std::convert::Infallible>(host) });
    /// let start = Instant::now();
    /// svc.ready().await?.call("a.example").await?;
    /// svc.ready().await?.call("a.example").await?; // waits 500 ms
    /// assert_eq!(start.elapsed(), Duration::from_millis(500));
    /// svc.ready().await?.call("b.example").await?; // another host: at once
    /// assert_eq!(start.elapsed(), Duration::from_millis(500));
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait(self, max_wait: Duration) -> RateLimitBuilder<K, C, H, Wait> {
        RateLimitBuilder {
            spec: self.spec,
            mode: PhantomData,
            policy_name: self.policy_name,
            headers: self.headers,
            wait: Some(max_wait),
            max_keys: self.max_keys,
            keyed: self.keyed,
            costed: self.costed,
            misuse: self.misuse,
            more: self.more,
            key: self.key,
            cost: self.cost,
            clock: self.clock,
            hooks: self.hooks,
        }
    }

    /// Adds a limit, checked with this one all-or-nothing: "10 per second
    /// **and** 1,000 per hour". A request is admitted only if every limit
    /// admits it, and a request refused by any limit is charged to none.
    /// A refusal's [`RateLimited::retry_after`](super::RateLimited) is the
    /// earliest time every limit admits it, and its
    /// [`limit_index`](super::RateLimited::limit_index) says which limit
    /// refused (0 for this one, 1 for the first `and`, ...).
    ///
    /// `limit` is a builder from [`RateLimitLayer::token_bucket`],
    /// [`sliding_window`](RateLimitLayer::sliding_window) or
    /// [`sliding_log`](RateLimitLayer::sliding_log), with its `burst` or
    /// `exact` if any; the key, cost, wait mode and key bound are set once,
    /// here, and hold for every limit (`build()` fails with
    /// [`ConfigError::AndTakesLimitOnly`] otherwise). Keyed, each key has
    /// every limit. The limits of one key are decided together under one
    /// short lock (one limit alone stays lock-free when unkeyed). Not
    /// available with `headers` ([`ConfigError::HeadersWithSeveralLimits`])
    /// or a Redis store ([`ConfigError::SeveralLimitsWithStore`]).
    ///
    /// ```
    /// use palisade::RateLimitLayer;
    /// use palisade::rate_limit::RateLimited;
    /// use std::time::Duration;
    /// use tower::{Service, ServiceBuilder, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), palisade::BoxError> {
    /// let second = Duration::from_secs(1);
    /// // 2 per second and 3 per minute, per user.
    /// let layer = RateLimitLayer::token_bucket(2, second)
    ///     .burst(2)
    ///     .and(RateLimitLayer::sliding_log(3, 60 * second))
    ///     .keyed(|user: &&'static str| user.to_string())
    ///     .build()?;
    /// let mut svc = ServiceBuilder::new()
    ///     .layer(layer)
    ///     .service_fn(|user: &'static str| async move { Ok::<_, std::convert::Infallible>(user) });
    ///
    /// svc.ready().await?.call("ann").await?;
    /// svc.ready().await?.call("ann").await?;
    /// let err = svc.ready().await?.call("ann").await.unwrap_err();
    /// let limited = err.downcast_ref::<RateLimited>().unwrap();
    /// assert_eq!((limited.limit_index, limited.retry_after), (0, second / 2));
    ///
    /// tokio::time::advance(second).await;
    /// svc.ready().await?.call("ann").await?; // the third this minute
    /// tokio::time::advance(second).await;
    /// let err = svc.ready().await?.call("ann").await.unwrap_err();
    /// let limited = err.downcast_ref::<RateLimited>().unwrap();
    /// assert_eq!((limited.limit_index, limited.retry_after), (1, 58 * second));
    /// # Ok(())
    /// # }
    /// ```
    pub fn and(mut self, limit: RateLimitBuilder) -> Self {
        if let Some(e) = limit.misuse {
            return self.misuse(e);
        }
        if limit.keyed
            || limit.costed
            || limit.wait.is_some()
            || limit.max_keys.is_some()
            || limit.policy_name.is_some()
            || limit.clock != ClockSource::default()
            || limit.hooks.name.is_some()
            || limit.hooks.refused.is_set()
            || !limit.more.is_empty()
        {
            return self.misuse(ConfigError::AndTakesLimitOnly);
        }
        self.more.push(limit.spec);
        self
    }

    /// The same settings in reject mode's type, `wait` kept as a setting
    /// (for a store's `build()` to refuse it with its own error).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn into_reject(self) -> RateLimitBuilder<K, C, H, Reject> {
        RateLimitBuilder {
            spec: self.spec,
            mode: PhantomData,
            policy_name: self.policy_name,
            headers: self.headers,
            wait: self.wait,
            max_keys: self.max_keys,
            keyed: self.keyed,
            costed: self.costed,
            misuse: self.misuse,
            more: self.more,
            key: self.key,
            cost: self.cost,
            clock: self.clock,
            hooks: self.hooks,
        }
    }

    /// The most keys held at once by a keyed limiter (default
    /// [`DEFAULT_MAX_KEYS`]).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = Some(max_keys);
        self
    }

    /// The clock the limiter reads (default [`ClockSource::Tokio`], which
    /// follows tokio's paused time). [`ClockSource::Quanta`] reads the CPU's
    /// time-stamp counter instead: cheaper per request, but real time only;
    /// see [`ClockSource`] for the trade-off.
    ///
    /// ```
    /// use palisade::{ClockSource, RateLimitLayer};
    /// use std::time::Duration;
    ///
    /// let layer = RateLimitLayer::token_bucket(100, Duration::from_secs(1))
    ///     .burst(10)
    ///     .clock(ClockSource::Quanta)
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn clock(mut self, source: ClockSource) -> Self {
        self.clock = source;
        self
    }

    /// Limits each key separately; `extract` reads the key from the request
    /// (client IP, API key, tenant): a closure `Fn(&Req) -> K` (annotate its
    /// parameter's type) or any [`KeyExtractor`](super::KeyExtractor), such
    /// as `http::ClientIp` (feature `http`). Keyed limiters decide in `call`.
    pub fn keyed<E>(self, extract: E) -> RateLimitBuilder<E, C, H, M> {
        RateLimitBuilder {
            spec: self.spec,
            mode: PhantomData,
            policy_name: self.policy_name,
            headers: self.headers,
            wait: self.wait,
            max_keys: self.max_keys,
            keyed: true,
            costed: self.costed,
            misuse: self.misuse,
            more: self.more,
            hooks: self.hooks,
            key: extract,
            cost: self.cost,
            clock: self.clock,
        }
    }

    /// Charges each request `cost(&request)` units instead of 1 (token
    /// bucket and sliding-window counter). A cost above the burst or limit
    /// fails with [`InsufficientCapacity`](super::InsufficientCapacity); a
    /// cost of 0 passes without being counted against the limit.
    pub fn cost<F>(self, cost: F) -> RateLimitBuilder<K, CostBy<F>, H, M> {
        RateLimitBuilder {
            spec: self.spec,
            mode: PhantomData,
            policy_name: self.policy_name,
            headers: self.headers,
            wait: self.wait,
            max_keys: self.max_keys,
            keyed: self.keyed,
            costed: true,
            misuse: self.misuse,
            more: self.more,
            hooks: self.hooks,
            key: self.key,
            cost: CostBy(cost),
            clock: self.clock,
        }
    }

    /// Checks the settings and creates the limiter's state (once: every
    /// service from the returned layer shares it).
    pub fn build(self) -> Result<RateLimitLayer<K, C, InMemory, H, M>, ConfigError> {
        if let Some(e) = self.misuse {
            return Err(e);
        }
        let algorithm = algorithm_of(self.spec, self.costed)?;
        let more = self
            .more
            .iter()
            .map(|spec| algorithm_of(*spec, self.costed))
            .collect::<Result<Vec<_>, _>>()?;
        if !more.is_empty() && self.policy_name.is_some() {
            return Err(ConfigError::HeadersWithSeveralLimits);
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
        let mut limiter = if more.is_empty() {
            Limiter::new(algorithm, max_keys)
        } else {
            Limiter::multi([algorithm].into_iter().chain(more).collect(), max_keys)
        };
        limiter.policy = policy;
        limiter.waits_in_call = self.keyed || self.costed;
        limiter.clock = Clock::with_source(self.clock);
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
            mode: PhantomData,
        })
    }
}

/// One limit's algorithm, checked.
fn algorithm_of(spec: Spec, costed: bool) -> Result<Algorithm, ConfigError> {
    Ok(match spec {
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
            if costed {
                return Err(ConfigError::CostWithLog);
            }
            Algorithm::Log(SlidingLog::new(limit, duration_to_nanos(window))?)
        }
    })
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
impl<K, C, M> RateLimitBuilder<K, C, NoHeaders, M> {
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
    /// windows, [`ConfigError::HeadersWithSeveralLimits`] with
    /// [`and`](Self::and) (the draft allows several policies, but each
    /// response's one `r`/`t` would have to pick a limit: left out rather
    /// than chosen silently), and [`ConfigError::InvalidPolicyName`] for a
    /// name that is not printable ASCII.
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
    ) -> RateLimitBuilder<K, C, super::headers::RateLimitHeaders, M> {
        RateLimitBuilder {
            spec: self.spec,
            mode: PhantomData,
            policy_name: Some(name.into()),
            headers: std::marker::PhantomData,
            wait: self.wait,
            max_keys: self.max_keys,
            keyed: self.keyed,
            costed: self.costed,
            misuse: self.misuse,
            more: self.more,
            hooks: self.hooks,
            key: self.key,
            cost: self.cost,
            clock: self.clock,
        }
    }
}
