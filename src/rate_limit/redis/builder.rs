//! Configures a limiter shared through Redis.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::super::error::ConfigError;
use super::super::gcra::Gcra;
use super::super::layer::{DEFAULT_MAX_KEYS, RateLimitBuilder, RateLimitLayer};
use super::super::limiter::{Algorithm, Limiter, State};
use super::super::sliding_window::SlidingWindow;
use super::Redis;
use super::leases::Leases;
use super::script::{MAX_CAPACITY_US, MAX_WINDOW_PRODUCT, Params};
use super::shared::{Policy, Shared};
use super::store::RedisStore;
use crate::CircuitBreakerLayer;
use crate::circuit_breaker::CircuitBreakerBuilder;
use crate::clock::duration_to_nanos;

/// A decision's default timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
/// The default bound on keys refused locally (see
/// [`RedisBuilder::local_denials`]).
pub const DEFAULT_LOCAL_DENIALS: usize = 10_000;

/// What a decision does when Redis fails, times out, or is known to be down.
///
/// Every such decision is counted ([`RateLimitHandle::fallbacks`](crate::rate_limit::RateLimitHandle::fallbacks))
/// and warned about through `tracing` (at most one warning a second per
/// limiter, saying how many fallbacks it covers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fallback {
    /// Admit the request: the service stays up, unlimited while Redis is.
    FailOpen,
    /// Refuse the request with [`RateLimited`](crate::rate_limit::RateLimited)
    /// (`remaining: 0`) and this `retry_after` (so HTTP gets a 429 with
    /// `Retry-After`, gRPC `RESOURCE_EXHAUSTED`).
    FailClosed {
        /// What the refusal tells the client to wait. Positive.
        retry_after: Duration,
    },
    /// Decide in process with an "insurance" limiter of the same algorithm
    /// and key, holding `1 / instances` of the limit (rate-limiter-flexible's
    /// insurance): a token bucket with its rate and burst divided by
    /// `instances` (burst at least 1), a window with its limit divided
    /// (at least 1). With `instances` set to the fleet's size, the fleet
    /// stays near its limit while Redis is down.
    Local {
        /// The number of instances sharing the limit. Positive.
        instances: u32,
    },
}

impl Fallback {
    /// [`FailClosed`](Self::FailClosed) with a `retry_after` of one second.
    pub const fn fail_closed() -> Self {
        Self::FailClosed {
            retry_after: Duration::from_secs(1),
        }
    }

    /// [`Local`](Self::Local) for a fleet of `instances`.
    pub const fn local(instances: u32) -> Self {
        Self::Local { instances }
    }
}

impl Default for Fallback {
    /// `Local { instances: 1 }`: each instance keeps the whole limit on its
    /// own while Redis is down (the fleet admits at most `instances` times
    /// the limit, never unlimited). Set the fleet's size for a tighter bound.
    fn default() -> Self {
        Self::local(1)
    }
}

/// Configures a [`RateLimitLayer`] decided through Redis; made by
/// [`RateLimitBuilder::redis`]. Nothing is checked until
/// [`build`](Self::build), which reports the first problem (the in-memory
/// builder's checks first, with the same errors).
pub struct RedisBuilder<K, C> {
    inner: RateLimitBuilder<K, C>,
    store: RedisStore,
    prefix: Vec<u8>,
    timeout: Duration,
    fallback: Fallback,
    breaker: Option<CircuitBreakerBuilder>,
    local_denials: usize,
    cached: Option<(u64, Duration)>,
}

impl<K, C> fmt::Debug for RedisBuilder<K, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBuilder")
            .field("inner", &self.inner)
            .field("store", &self.store)
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .field("timeout", &self.timeout)
            .field("fallback", &self.fallback)
            .field("local_denials", &self.local_denials)
            .field("cached", &self.cached)
            .finish_non_exhaustive()
    }
}

impl<K, C, M> RateLimitBuilder<K, C, crate::rate_limit::NoHeaders, M> {
    /// Keeps the limit in Redis, shared by every instance that builds the
    /// same limiter with the same `prefix` (feature `redis`). Call it last,
    /// after `keyed` and `cost`.
    ///
    /// `prefix` starts every Redis key of this limiter: give each limiter
    /// its own (two limiters on one prefix would share, and corrupt, their
    /// counts). See [the module docs](crate::rate_limit::redis) for keys, units and
    /// failure handling.
    pub fn redis(self, store: RedisStore, prefix: impl Into<Vec<u8>>) -> RedisBuilder<K, C> {
        RedisBuilder {
            // Wait mode is kept as a setting, for `build()` to refuse.
            inner: self.into_reject(),
            store,
            prefix: prefix.into(),
            timeout: DEFAULT_TIMEOUT,
            fallback: Fallback::default(),
            breaker: None,
            local_denials: DEFAULT_LOCAL_DENIALS,
            cached: None,
        }
    }
}

impl<K, C> RedisBuilder<K, C> {
    /// How long one decision may wait for Redis (default
    /// [`DEFAULT_TIMEOUT`]); past it, the [fallback](Self::fallback)
    /// decides.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// What to do when Redis fails or times out (default
    /// [`Fallback::default`]).
    pub fn fallback(mut self, fallback: Fallback) -> Self {
        self.fallback = fallback;
        self
    }

    /// The circuit breaker around Redis: while it is open, decisions go to
    /// the fallback at once instead of waiting for a timeout each, and its
    /// probes find Redis again when it returns. Default: open after 3
    /// consecutive failures, for 500 ms, then one probe. Through a cluster
    /// connection, each hash slot gets a breaker of its own, built from
    /// these settings.
    pub fn breaker(mut self, breaker: CircuitBreakerBuilder) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// At most `max` keys refused in process, without asking Redis, until
    /// the refusal Redis gave them ends (default
    /// [`DEFAULT_LOCAL_DENIALS`]); 0 turns local denials off.
    pub fn local_denials(mut self, max: usize) -> Self {
        self.local_denials = max;
        self
    }

    /// Cached mode, for very hot keys: each instance leases `share` units
    /// of a key's limit from Redis in one call and admits from them
    /// in process, for at most `ttl` after the lease. One Redis call per
    /// `share` admissions instead of one per admission, at a stated price:
    /// a fleet of `N` instances may admit up to **`N * share`** more than
    /// the exact guarantee in any interval, and may lose up to `N * share`
    /// units per `ttl` (leases that expire unspent). Requests costing more
    /// than `share` are decided exactly. See
    /// [the module docs](crate::rate_limit::redis#cached-mode).
    pub fn cached(mut self, share: u64, ttl: Duration) -> Self {
        self.cached = Some((share, ttl));
        self
    }

    /// Checks the settings (the in-memory builder's first, with its
    /// errors) and creates the shared limiter's local state once: every
    /// service from the returned layer shares it.
    pub fn build(self) -> Result<RateLimitLayer<K, C, Redis>, ConfigError> {
        let max_keys = self.inner.max_keys;
        let layer = self.inner.build()?;
        if layer.max_wait.is_some() {
            return Err(ConfigError::WaitWithStore);
        }
        if self.prefix.is_empty() {
            return Err(ConfigError::EmptyPrefix);
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout);
        }
        let keyed = layer.limiter.is_keyed();
        let (params, capacity, algorithm) = params_of(&layer.limiter.state)?;
        let policy = match self.fallback {
            Fallback::FailOpen => Policy::Open,
            Fallback::FailClosed { retry_after } if retry_after.is_zero() => {
                return Err(ConfigError::ZeroFallback);
            }
            Fallback::FailClosed { retry_after } => Policy::Closed(retry_after),
            Fallback::Local { instances: 0 } => return Err(ConfigError::ZeroFallback),
            Fallback::Local { instances } => {
                let share = share_of(algorithm, u64::from(instances))?;
                let max_keys = keyed.then(|| max_keys.unwrap_or(DEFAULT_MAX_KEYS));
                Policy::Local(Box::new(Limiter::new(share, max_keys)))
            }
        };
        let builder = self.breaker.unwrap_or_else(|| {
            CircuitBreakerLayer::consecutive_failures(3)
                .open_for(Duration::from_millis(500))
                .half_open_probes(1)
                .name("rate limit store")
        });
        let breaker = builder
            .clone()
            .build()
            .map_err(|_| ConfigError::InvalidBreaker)?;
        let leases = match self.cached {
            None => None,
            Some((share, ttl)) if share == 0 || share > capacity || ttl.is_zero() => {
                return Err(ConfigError::InvalidShare);
            }
            Some((share, ttl)) => Some(Leases::new(
                share,
                duration_to_nanos(ttl),
                if keyed {
                    max_keys.unwrap_or(DEFAULT_MAX_KEYS)
                } else {
                    1
                },
            )),
        };
        let shared = Shared::new(
            layer.limiter.clone(),
            self.store,
            params,
            capacity,
            self.prefix,
            self.timeout,
            builder,
            &breaker,
            policy,
            self.local_denials,
            leases,
        );
        Ok(RateLimitLayer {
            limiter: layer.limiter,
            key: layer.key,
            cost: layer.cost,
            max_wait: None,
            backend: Redis {
                shared: Arc::new(shared),
            },
            // A Redis-backed limiter writes no `RateLimit` header fields.
            headers: layer.headers,
            mode: std::marker::PhantomData,
        })
    }
}

/// The scripts' constants for a configured algorithm, its capacity (the
/// most one request may cost), and the algorithm itself.
fn params_of(state: &State) -> Result<(Params, u64, Algorithm), ConfigError> {
    match state {
        State::Multi { .. } => Err(ConfigError::SeveralLimitsWithStore),
        State::Gcra(g, _) | State::KeyedGcra(g, _) => {
            let t_ns = g.emission_interval();
            // The server's clock counts microseconds: a faster rate would be
            // rounded down by up to 1000 times.
            if t_ns < 1_000 {
                return Err(ConfigError::RateTooHigh);
            }
            // Rounded up: the shared limit never exceeds the rate.
            let t = t_ns.div_ceil(1_000);
            let b = t
                .checked_mul(g.burst())
                .filter(|b| *b <= MAX_CAPACITY_US)
                .ok_or(ConfigError::Overflow)?;
            Ok((Params::Gcra { t, b }, g.burst(), Algorithm::Gcra(*g)))
        }
        State::Window(sw, _) | State::WideWindow(sw, _) | State::KeyedWindow(sw, _) => {
            let w = sw.window().div_ceil(1_000);
            w.checked_mul(sw.limit())
                .filter(|p| *p <= MAX_WINDOW_PRODUCT)
                .ok_or(ConfigError::Overflow)?;
            Ok((
                Params::Window {
                    w,
                    limit: sw.limit(),
                },
                sw.limit(),
                Algorithm::Window(*sw),
            ))
        }
        State::Log(..) | State::KeyedLog(..) => Err(ConfigError::LogWithStore),
    }
}

/// One instance's share of the limit, for the insurance limiter.
fn share_of(algorithm: Algorithm, instances: u64) -> Result<Algorithm, ConfigError> {
    match algorithm {
        Algorithm::Gcra(g) => {
            let t = g
                .emission_interval()
                .checked_mul(instances)
                .ok_or(ConfigError::Overflow)?;
            Ok(Algorithm::Gcra(Gcra::new(
                1,
                t,
                (g.burst() / instances).max(1),
            )?))
        }
        Algorithm::Window(sw) => Ok(Algorithm::Window(SlidingWindow::new(
            (sw.limit() / instances).max(1),
            sw.window(),
        )?)),
        Algorithm::Log(_) => Err(ConfigError::LogWithStore),
    }
}
