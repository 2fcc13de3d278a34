//! One limit for a whole fleet: the token bucket and the sliding-window
//! counter kept in Redis (feature `redis`).
//!
//! ```no_run
//! use palisade::RateLimitLayer;
//! use palisade::rate_limit::redis::{Fallback, RedisStore};
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = RedisStore::open("redis://127.0.0.1:6379")?;
//! // 100 per second per API key, for the whole fleet of 4 instances.
//! let layer = RateLimitLayer::token_bucket(100, Duration::from_secs(1))
//!     .burst(20)
//!     .keyed(|req: &(String, u32)| req.0.clone())
//!     .redis(store, "api:")
//!     .timeout(Duration::from_millis(50))
//!     .fallback(Fallback::local(4))
//!     .build()?;
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service_fn(|req: (String, u32)| async move { Ok::<_, std::convert::Infallible>(req.1) });
//! # let _ = svc;
//! # Ok(())
//! # }
//! ```
//!
//! # Same answers as in memory
//!
//! Each decision is one atomic Lua script (sent as `EVALSHA`, reloaded on
//! `NOSCRIPT`) running the same arithmetic as the in-memory algorithm, on
//! the server's clock (`TIME`), touching exactly one key. Refusals are the
//! same [`RateLimited`](super::RateLimited) (`retry_after`, `limit`,
//! `remaining`) and [`InsufficientCapacity`](super::InsufficientCapacity),
//! so the HTTP (429 / 413) and gRPC mappings are the same, and `build()`
//! reports the same configuration errors, plus:
//!
//! - the sliding log and wait mode are in-memory only
//!   ([`ConfigError::LogWithStore`](super::ConfigError::LogWithStore),
//!   [`WaitWithStore`](super::ConfigError::WaitWithStore));
//! - time in Redis is whole **microseconds** (`TIME`'s resolution), kept
//!   exact in Lua's doubles: a token bucket's emission interval is rounded
//!   *up* to a whole microsecond (never above the rate; exact whenever
//!   `period / rate` is whole microseconds), a rate above one per
//!   microsecond is [`RateTooHigh`](super::ConfigError::RateTooHigh), and a
//!   capacity (`burst * period / rate`) above 2^51 µs (71 years), or a
//!   window whose `limit * window` exceeds 2^51 µs, is
//!   [`Overflow`](super::ConfigError::Overflow). A window is rounded up to
//!   a whole microsecond and aligned on the Unix epoch (in memory, on the
//!   limiter's creation).
//!
//! # Keys
//!
//! The Redis key is the prefix given to [`redis`](super::RateLimitBuilder::redis)
//! followed by the request's key bytes ([`StoreKey`]: the same bytes on
//! every instance, unlike the in-memory per-process hash). An unkeyed
//! limiter uses the prefix alone. Keys are binary-safe and any length.
//! Every key expires (`PX`) when its state equals a new key's, so idle keys
//! vanish by themselves; a refusal writes nothing.
//!
//! **Redis Cluster.** Each decision touches one key, so keys may spread over
//! every slot. A key's slot follows Redis's hash-tag rule: if the full key
//! contains `{...}`, only what is inside the first braces is hashed. Do not
//! put braces in the prefix unless you want every key of the limiter on one
//! node; a client-chosen key containing braces only picks its own slot.
//!
//! # When Redis fails
//!
//! Each decision waits at most its [timeout](RedisBuilder::timeout). A
//! failure or timeout is decided by the [`Fallback`]: fail open, fail
//! closed, or the local insurance limiter (the default). palisade's own
//! [circuit breaker](crate::CircuitBreakerLayer) wraps the store: after a
//! few failures in a row, decisions go to the fallback at once, without
//! waiting; its probes find Redis again when it returns, and decisions go
//! back to Redis by themselves. Every fallback is counted
//! ([`RateLimitHandle::fallbacks`](super::RateLimitHandle::fallbacks)) and
//! warned about through `tracing` at most once a second per limiter.
//!
//! # Denied keys answered locally
//!
//! When Redis refuses a key, it also says when a request of cost 1 could
//! pass; until then this instance refuses that key without asking Redis
//! (on by default, at most [`DEFAULT_LOCAL_DENIALS`] keys held, see
//! [`RedisBuilder::local_denials`]). An admission that used the last unit
//! says the same. The time is counted from the answer's arrival, so a
//! local refusal outlasts Redis's by at most that answer's travel time;
//! when it ends, one request asks Redis while the others for that key wait
//! for its answer. A flood at a limited key costs at most one call to Redis
//! per refusal period per instance.
//! Local refusals report `remaining: 0` and a `retry_after` for cost 1.
//!
//! # Cached mode
//!
//! For very hot keys, [`RedisBuilder::cached(share, ttl)`](RedisBuilder::cached)
//! trades exactness for calls: an instance leases `share` units of a key's
//! limit in one call (one decision of cost `share`, taken from the shared
//! state as that many requests would be) and admits from them in process
//! for at most `ttl`. A key with fewer than `share` units free is refused
//! (with the time until a share is) until a whole share is.
//! One lease at a time per key and instance; other requests wait for it.
//!
//! **Bound.** Units are taken when leased and spent later, so in any
//! interval the fleet admits at most the exact guarantee plus the units
//! held at its start: **`instances * share`** at most. Unspent units are
//! dropped when their lease expires: at most `instances * share` lost per
//! `ttl` per key. Under steady demand an instance makes one Redis call per
//! `share` admissions. Requests costing more than `share` are decided
//! exactly; a failed lease goes to the fallback like any decision.
//!
//! # Connections
//!
//! [`RedisStore`] wraps a multiplexed connection (a `ConnectionManager`, a
//! `MultiplexedConnection` or a cluster connection): concurrent decisions
//! are pipelined on it. The decision is awaited in the response future; the
//! inner service is called only after Redis admitted the request.

mod builder;
mod denials;
mod key;
mod leases;
mod script;
mod service;
mod shared;
mod stats;
mod store;

pub use builder::{DEFAULT_LOCAL_DENIALS, DEFAULT_TIMEOUT, Fallback, RedisBuilder};
pub use key::{DisplayKey, StoreKey};
pub use service::{RedisRateLimit, ResponseFuture};
pub use store::RedisStore;

pub(crate) use stats::StoreStats;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::handle::RateLimitHandle;
use super::layer::RateLimitLayer;
use crate::BoxError;
use shared::Shared;

/// Where a shared [`RateLimitLayer`] keeps its limit: Redis. Made by
/// [`RedisBuilder::build`].
#[derive(Clone)]
pub struct Redis {
    shared: Arc<Shared>,
}

impl fmt::Debug for Redis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl Shared {
    pub(crate) fn handle(&self) -> RateLimitHandle {
        RateLimitHandle {
            limiter: self.limiter.clone(),
            store: Some(self.stats.clone()),
        }
    }
}

impl<K, C> RateLimitLayer<K, C, Redis> {
    /// A handle on this limiter's counts, including the store's
    /// ([`store_calls`](RateLimitHandle::store_calls),
    /// [`fallbacks`](RateLimitHandle::fallbacks),
    /// [`local_denials`](RateLimitHandle::local_denials)).
    pub fn handle(&self) -> RateLimitHandle {
        self.backend.shared.handle()
    }

    /// The script's decision for `key` as if the server's clock read
    /// `now` (since the Unix epoch), bypassing local denials, the breaker
    /// and the fallback. For tests that compare the Redis arithmetic with
    /// the in-memory one at chosen instants; not for production (it stores
    /// state at that instant).
    #[doc(hidden)]
    pub async fn decide_at<Q: StoreKey + ?Sized>(
        &self,
        key: &Q,
        cost: u64,
        now: Duration,
    ) -> Result<(), BoxError> {
        let shared = &self.backend.shared;
        let mut full = shared.prefix.clone();
        if shared.limiter.is_keyed() {
            key.write_key(&mut full);
        }
        let now_us = u64::try_from(now.as_micros()).unwrap_or(u64::MAX);
        shared.decide_at(full, cost, now_us).await
    }
}

impl<S, K: Clone, C: Clone> Layer<S> for RateLimitLayer<K, C, Redis> {
    type Service = RedisRateLimit<S, K, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RedisRateLimit::new(
            inner,
            self.backend.shared.clone(),
            self.key.clone(),
            self.cost.clone(),
        )
    }
}
