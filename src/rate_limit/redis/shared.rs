//! One shared limiter's local state, and the decision: local denials, then
//! Redis behind a timeout and a circuit breaker, then the fallback.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, timeout_at};
use tower::{Layer, Service};

use super::super::error::{InsufficientCapacity, RateLimited};
use super::super::future::Refusal;
use super::super::limiter::{Limiter, Outcome};
use super::denials::{Check, Denials};
use super::leases::{Leases, Take};
use super::script::{Params, Verdict};
use super::stats::StoreStats;
use super::store::RedisStore;
use crate::circuit_breaker::{CircuitBreaker, CircuitBreakerBuilder};
use crate::{BoxError, CircuitBreakerLayer};

/// The fallback, as built.
pub(crate) enum Policy {
    Open,
    Closed(Duration),
    Local(Box<Limiter>),
}

impl Policy {
    fn name(&self) -> &'static str {
        match self {
            Self::Open => "fail open",
            Self::Closed(_) => "fail closed",
            Self::Local(_) => "local insurance limiter",
        }
    }
}

/// Why a call to Redis gave no verdict.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// One call to Redis.
pub(crate) struct StoreCall {
    key: Vec<u8>,
    cost: u64,
    now_us: Option<u64>,
    timeout: Duration,
}

/// Redis as a service, so palisade's own circuit breaker can wrap it: a
/// failure or a timeout counts against the breaker.
#[derive(Clone)]
pub(crate) struct StoreService {
    store: RedisStore,
    params: Params,
    timeout: Duration,
    stats: Arc<StoreStats>,
}

type StoreFuture = Pin<Box<dyn Future<Output = Result<Verdict, StoreError>> + Send>>;

impl Service<StoreCall> for StoreService {
    type Response = Verdict;
    type Error = StoreError;
    type Future = StoreFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), StoreError>> {
        // The connection is multiplexed: always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: StoreCall) -> StoreFuture {
        let this = self.clone();
        Box::pin(async move {
            this.stats.call();
            let run = this
                .store
                .run(this.params, &call.key, call.cost, call.now_us);
            let result = match tokio::time::timeout(call.timeout, run).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(StoreError::Redis(e)),
                Err(_) => Err(StoreError::Timeout(this.timeout)),
            };
            if result.is_err() {
                this.stats.error();
            }
            result
        })
    }
}

/// The circuit breakers around the store: one for a single server; one per
/// hash slot (created on first use) for a cluster, so a node that fails
/// sends only its own slots to the fallback.
enum Breakers {
    One(CircuitBreaker<StoreService>),
    PerSlot {
        slots: Box<[OnceLock<CircuitBreaker<StoreService>>]>,
        /// Builds each slot's breaker with a state of its own (a layer's
        /// services would share one). Checked once in `build()`.
        builder: CircuitBreakerBuilder,
        service: StoreService,
    },
}

/// Redis Cluster's slot count.
const SLOTS: usize = 16_384;

/// The hash slot of a key: CRC16 (XMODEM) of the key, or of its hash tag
/// (what lies between the first `{` and the next `}`, if not empty).
pub(crate) fn slot(key: &[u8]) -> usize {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    usize::from(crc16::State::<crc16::XMODEM>::calculate(
        tagged.unwrap_or(key),
    )) % SLOTS
}

impl Breakers {
    fn for_key(&self, key: &[u8]) -> CircuitBreaker<StoreService> {
        match self {
            Self::One(b) => b.clone(),
            Self::PerSlot {
                slots,
                builder,
                service,
            } => slots[slot(key)]
                .get_or_init(|| {
                    // The same settings built once in `build()`: building
                    // again cannot fail.
                    let layer = builder.clone().build().expect("checked in build()");
                    layer.layer(service.clone())
                })
                .clone(),
        }
    }
}

/// Everything a shared limiter's services share.
pub(crate) struct Shared {
    pub(crate) limiter: Arc<Limiter>,
    pub(crate) prefix: Vec<u8>,
    pub(crate) stats: Arc<StoreStats>,
    store: RedisStore,
    params: Params,
    capacity: u64,
    timeout: Duration,
    breakers: Breakers,
    policy: Policy,
    denials: Option<Denials>,
    leases: Option<Leases>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("prefix", &String::from_utf8_lossy(&self.prefix))
            .field("params", &self.params)
            .field("policy", &self.policy.name())
            .field("local_denials", &self.denials.is_some())
            .field("cached_share", &self.leases.as_ref().map(|l| l.share))
            .finish_non_exhaustive()
    }
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        limiter: Arc<Limiter>,
        store: RedisStore,
        params: Params,
        capacity: u64,
        prefix: Vec<u8>,
        timeout: Duration,
        builder: CircuitBreakerBuilder,
        breaker: &CircuitBreakerLayer,
        policy: Policy,
        local_denials: usize,
        leases: Option<Leases>,
    ) -> Self {
        let stats = Arc::new(StoreStats::new(limiter.clock.clone()));
        let service = StoreService {
            store: store.clone(),
            params,
            timeout,
            stats: stats.clone(),
        };
        let breakers = if store.is_cluster() {
            Breakers::PerSlot {
                slots: (0..SLOTS).map(|_| OnceLock::new()).collect(),
                builder,
                service,
            }
        } else {
            Breakers::One(breaker.layer(service))
        };
        Self {
            breakers,
            limiter,
            prefix,
            stats,
            store,
            params,
            capacity,
            timeout,
            policy,
            denials: (local_denials > 0).then(|| Denials::new(local_denials)),
            leases,
        }
    }

    fn limited(&self, retry_after: Duration, remaining: u64) -> Refusal {
        Refusal::Limited(RateLimited::new(
            retry_after.max(Duration::from_nanos(1)),
            self.limiter.limit(),
            remaining,
        ))
    }

    /// Decides for one request of `cost` (> 0) under the full Redis `key`,
    /// and counts the answer.
    pub(crate) async fn decide(self: Arc<Self>, key: Vec<u8>, cost: u64) -> Result<(), Refusal> {
        let result = self.decide_uncounted(key, cost).await;
        match &result {
            Ok(()) => {
                self.limiter.counters.admit();
                self.limiter.observe.admitted();
            }
            Err(r) => {
                self.limiter.counters.reject();
                self.limiter.observe.refused(r, || None);
            }
        }
        result
    }

    async fn decide_uncounted(&self, key: Vec<u8>, cost: u64) -> Result<(), Refusal> {
        // Local denials and leases answer at once: take part in tokio's
        // cooperative scheduling like any resource, so a task looping over
        // local answers still yields to its neighbours.
        tokio::task::coop::consume_budget().await;
        if cost > self.capacity {
            return Err(Refusal::Never(InsufficientCapacity {
                cost,
                capacity: self.capacity,
            }));
        }
        // The whole decision, waits for another request's call included,
        // ends by its timeout.
        let deadline = Instant::now() + self.timeout;
        if let Some(leases) = self.leases.as_ref().filter(|l| cost <= l.share) {
            let hash = leases.hash(&key);
            loop {
                match leases.take(hash, cost, self.limiter.clock.now()) {
                    Take::Taken => return Ok(()),
                    Take::Exact => break,
                    Take::Wait(mut rx) => {
                        if timeout_at(deadline, rx.changed()).await.is_err() {
                            return self.out_of_time(&key, cost);
                        }
                    }
                    Take::Fetch(fetch) => {
                        // A lease is a decision of cost `share`: all or
                        // nothing, so that one call buys `share` admissions.
                        let granted = self.ask(key, leases.share, Some(cost), deadline).await?;
                        fetch.deposit(granted, cost, self.limiter.clock.now());
                        return Ok(());
                    }
                }
            }
        }
        self.ask(key, cost, None, deadline).await.map(|_| ())
    }

    /// The fallback for a decision whose time ran out waiting for another
    /// request's call to Redis.
    fn out_of_time(&self, key: &[u8], cost: u64) -> Result<(), Refusal> {
        let insurance_key = match &self.policy {
            Policy::Local(l) if l.is_keyed() => l.hash_key(&key),
            _ => 0,
        };
        self.fall_back(insurance_key, cost, &StoreError::Timeout(self.timeout))
    }

    /// Asks Redis (unless a local denial answers) for `cost` units: one
    /// request's, or a lease for a request of cost `leasing`. The units
    /// granted: `cost`, or the request's alone when a fallback admitted it.
    async fn ask(
        &self,
        key: Vec<u8>,
        cost: u64,
        leasing: Option<u64>,
        deadline: Instant,
    ) -> Result<u64, Refusal> {
        let mut now = self.limiter.clock.now();
        let denied = self.denials.as_ref().map(|d| (d, d.hash(&key)));
        // Held until the answer is cached: other requests for this key wait
        // for it rather than ask Redis too.
        let mut probe = None;
        if let Some((d, hash)) = denied {
            loop {
                match d.check(hash, now) {
                    Check::Denied(until) => {
                        self.stats.local_denial();
                        return Err(self.limited(Duration::from_nanos(until - now), 0));
                    }
                    Check::Ask(p) => {
                        probe = p;
                        break;
                    }
                    Check::Wait(mut rx) => {
                        if timeout_at(deadline, rx.changed()).await.is_err() {
                            let request = leasing.unwrap_or(cost);
                            return self.out_of_time(&key, request).map(|()| request);
                        }
                        now = self.limiter.clock.now();
                    }
                }
            }
        }
        let insurance_key = match &self.policy {
            Policy::Local(l) if l.is_keyed() => l.hash_key(&key),
            _ => 0,
        };
        let mut breaker = self.breakers.for_key(&key);
        let call = StoreCall {
            key,
            cost,
            now_us: None,
            // What is left of the decision's time (all of it, unless it
            // waited for another request's call).
            timeout: deadline.saturating_duration_since(Instant::now()),
        };
        let answer = async {
            poll_fn(|cx| breaker.poll_ready(cx)).await?;
            breaker.call(call).await
        };
        let answer = answer.await;
        // Counted from the answer's arrival: the local refusal ends after
        // Redis's (by at most the answer's travel time), so the next call
        // finds the capacity free: one call per refusal period.
        let cache = |free_after: u64| {
            if let (Some((d, hash)), true) = (denied, free_after > 0) {
                let now = self.limiter.clock.now();
                d.insert(
                    hash,
                    now.saturating_add(free_after.saturating_mul(1_000)),
                    now,
                );
            }
        };
        match answer {
            Ok(Verdict::Admit { free_after }) => {
                cache(free_after);
                if let (Some(p), 0) = (probe.as_mut(), free_after) {
                    p.freed();
                }
                Ok(cost)
            }
            Ok(Verdict::Deny {
                retry_after,
                remaining,
                free_after,
            }) => {
                // A lease needs `cost` units free, not one.
                cache(if leasing.is_some() {
                    retry_after
                } else {
                    free_after
                });
                Err(self.limited(Duration::from_micros(retry_after), remaining))
            }
            Err(e) => {
                let request = leasing.unwrap_or(cost);
                self.fall_back(insurance_key, request, &*e)
                    .map(|()| request)
            }
        }
    }

    fn fall_back(
        &self,
        key: u64,
        cost: u64,
        why: &(dyn std::error::Error + Send + Sync),
    ) -> Result<(), Refusal> {
        self.stats.fallback(self.policy.name(), &why);
        match &self.policy {
            Policy::Open => Ok(()),
            Policy::Closed(retry_after) => Err(self.limited(*retry_after, 0)),
            Policy::Local(limiter) => match limiter.acquire(key, cost, 0) {
                Outcome::Admit { .. } => Ok(()),
                Outcome::Deny(mut e) => {
                    // Report the shared limit, not the insurance share.
                    e.limit = self.limiter.limit();
                    Err(Refusal::Limited(e))
                }
                Outcome::Never(e) => Err(Refusal::Never(e)),
            },
        }
    }

    /// The script's verdict at a given time (µs since the epoch), bypassing
    /// local denials, the breaker and the fallback: for tests comparing the
    /// script with the in-memory arithmetic.
    pub(crate) async fn decide_at(
        &self,
        key: Vec<u8>,
        cost: u64,
        now_us: u64,
    ) -> Result<(), BoxError> {
        if cost > self.capacity {
            return Err(Refusal::Never(InsufficientCapacity {
                cost,
                capacity: self.capacity,
            })
            .into());
        }
        match self
            .store
            .run(self.params, &key, cost, Some(now_us))
            .await?
        {
            Verdict::Admit { .. } => Ok(()),
            Verdict::Deny {
                retry_after,
                remaining,
                ..
            } => Err(self
                .limited(Duration::from_micros(retry_after), remaining)
                .into()),
        }
    }
}

impl fmt::Debug for StoreService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreService")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::slot;

    /// Redis Cluster's own examples (cluster spec, "Key distribution model").
    #[test]
    fn slots_as_redis_computes_them() {
        assert_eq!(slot(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"{user1000}.followers"));
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        // Empty braces are no tag: the whole key is hashed.
        assert_eq!(slot(b"foo{}{bar}"), usize::from(crc(b"foo{}{bar}")));
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b""), 0);
    }

    fn crc(key: &[u8]) -> u16 {
        crc16::State::<crc16::XMODEM>::calculate(key) % 16_384
    }
}
