//! Rate limiting: a token bucket (GCRA), a sliding-window counter and an
//! exact sliding-window log behind one layer, unkeyed or per key, refusing
//! at once or waiting up to a bound.
//!
//! ```
//! use palisade::RateLimitLayer;
//! use palisade::rate_limit::RateLimited;
//! use std::time::Duration;
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! // 10 per second, at most 2 at once.
//! let layer = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
//!     .burst(2)
//!     .build()?;
//! let mut svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service_fn(|n: u32| async move { Ok::<_, std::convert::Infallible>(n) });
//!
//! assert_eq!(svc.ready().await?.call(1).await?, 1);
//! assert_eq!(svc.ready().await?.call(2).await?, 2);
//! let err = svc.ready().await?.call(3).await.unwrap_err();
//! let limited = err.downcast_ref::<RateLimited>().unwrap();
//! assert_eq!(limited.retry_after, Duration::from_millis(100));
//! # Ok(())
//! # }
//! ```
//!
//! # Algorithms and what each guarantees
//!
//! All three read time from `tokio::time::Instant` (they follow paused time
//! in tests) and are written as a pure decision over `(state, now, config)`,
//! separate from where the state is stored, so the same arithmetic serves the
//! lock-free unkeyed cell, the keyed map and a shared store.
//!
//! ## Token bucket (GCRA)
//!
//! `token_bucket(rate, period).burst(b)`: emission interval
//! `T = period / rate`, rounded *up* to a whole nanosecond (rounding never
//! exceeds the rate). State: one `AtomicU64`, updated by one
//! compare-and-swap. **Guarantee:** in any closed interval `[t, t + d]`, the
//! cost admitted is at most `b + floor(d / T)`. So the first `period` can
//! admit `b + rate` on a closed interval, `b + rate - 1` on a half-open one:
//! with the default burst of 1, never more than `rate` in any half-open
//! window of length `period`; with `burst(20)` and 100 per second, up to 119
//! in the first second (governor #219). **Full rate:** it is the exact token
//! bucket (capacity `b`, one unit per `T`): a request is refused only when
//! fewer than its cost are available, so under sustained demand it admits
//! `b + floor(d / T)` over `[0, d]`. A cost above `b` fails with
//! [`InsufficientCapacity`], never with [`RateLimited`].
//!
//! ## Sliding-window counter
//!
//! `sliding_window(limit, window)`: two counts per key (this window's and the
//! previous one's, weighted by how much of it the last `window` still
//! covers), compared exactly in integers. **Guarantee:** at most `limit` in
//! every aligned window `[kW, (k+1)W)`, hence at most `2 * limit` in any
//! window of length `W`: it assumes the previous window's requests were
//! spread evenly, so a burst at the end of one window followed by steady
//! traffic can briefly exceed `limit` over a sliding window (the price of
//! two numbers per key; use the log when that matters). **Full rate:** under
//! sustained demand each window after the first admits at least `limit - 1`
//! (no under-admission beyond one request per window; with a limit of 1 that
//! means one request every other window, so prefer the token bucket or the
//! log for very small limits). Limits up to 2^32 per window: up to
//! 1,048,575 the unkeyed counts are 20-bit fields of one `AtomicU64`;
//! above, they are 33-bit fields of one 128-bit word (`portable-atomic`'s
//! `AtomicU128`, a `cmpxchg16b` on x86_64), chosen at build time, so small
//! limits pay nothing for large ones.
//!
//! ## Sliding-window log
//!
//! `sliding_log(limit, window)` or `sliding_window(..).exact()`: the times of
//! the last `limit` admissions. **Guarantee:** never more than `limit` in any
//! half-open window `[t, t + W)`. **Full rate:** a request is refused only
//! when `limit` admissions lie in the last `W`, and `retry_after` is when the
//! oldest of them leaves. Costs `8 * limit` bytes per key; counts requests
//! (no cost function). Limits up to 2^32. Unkeyed, it is a lock-free ring
//! allocated at build up to a limit of 2^20 (8 MiB); above, it grows as it
//! fills, under a short lock (one key of the keyed store).
//!
//! # Where the decision is taken
//!
//! - **Reject mode** (default): the limiter decides in `call`, where the
//!   request (its key, its cost) is known. A refused request's response
//!   future resolves at once to a [`BoxError`] (tower's convention) holding
//!   [`RateLimited`] or [`InsufficientCapacity`], and the inner service is
//!   not called; `poll_ready` only forwards the inner service's readiness,
//!   so nothing is reserved and nothing needs releasing. (axum treats
//!   services as always ready; this mode suits it.)
//! - **Wait mode** (`.wait(max_wait)`): unkeyed without a cost function, the
//!   limiter decides in `poll_ready`, which returns `Pending` until the
//!   request may go; keyed or costed, it decides in `call` and the response
//!   future waits. See below.
//!
//! `retry_after` is exact on the limiter's clock: refused a nanosecond
//! before it, admitted at it (if nothing else took the capacity), and never
//! zero while limited.
//!
//! # Wait mode
//!
//! A wait-mode layer's services need a `Clone` inner service (the mode is a
//! type, [`Wait`], so reject mode asks nothing of it).
//!
//! ## Keyed or costed: waiting in the response future
//!
//! The key and the cost are read from the request, so the decision is
//! taken in `call`. Admitted at once, the request goes to the inner service
//! there, as in reject mode. Otherwise the response future ([`WaitFuture`])
//! waits, at most `max_wait`, then polls a clone of the inner service ready
//! and calls it (the Tower contract holds for the clone; the clone rather
//! than the instance `poll_ready` made ready, so that no readiness of the
//! inner service, such as a concurrency permit, is held while sleeping). A
//! request whose wait would exceed `max_wait` fails at once with
//! [`RateLimited`] and its `retry_after`.
//!
//! - Token bucket: the request's conforming time is booked in `call`, so
//!   waiters of a key go in the order they called and none beyond the
//!   limit. A future dropped before its call gives the booking back when no
//!   later request of the key booked after it (else the slot passes
//!   unused, as below); so does one whose inner readiness fails.
//! - Sliding window and log, several limits: the future sleeps until the
//!   `retry_after` it was told, decides again (another request may have
//!   taken the capacity), and fails with the last refusal once `max_wait`
//!   is spent. Admitted, it holds the admission until the inner call; a
//!   window's admission dropped before it is taken back, a log's entry
//!   stays.
//!
//! Each waiting future has its own timer (inline in the future, no
//! allocation beyond the clone of the inner service).
//!
//! ## Unkeyed, one unit per request: waiting in `poll_ready`
//!
//! `poll_ready` reserves capacity and waits for it with one
//! `tokio::time::Sleep` per service instance, created the first time that
//! instance waits and reset after (no timer allocated per call). Polling
//! ready again keeps the same reservation; `call` consumes it; a clone starts
//! without one. A request whose wait would exceed `max_wait` is refused at
//! once: `poll_ready` is ready and the response future holds the error (a
//! refusal reserves nothing, so polling ready again decides afresh).
//! The reservation is taken before the inner service's own readiness is
//! awaited, and it counts from its booked time.
//!
//! - Token bucket: the reservation books the request's conforming time in
//!   the bucket, so waiters are admitted in the order they reserved and none
//!   beyond the limit. A waiter (or ready service) dropped unused gives its
//!   reservation back when nobody reserved after it; otherwise the slot it
//!   booked (one emission interval per unit of cost) passes unused: capacity
//!   is lost for at most one emission interval, never handed out twice.
//! - Sliding window: a waiter sleeps until `retry_after`, tries again
//!   (another caller may have taken the capacity), and is refused when the
//!   bound passes. An admission reserved and dropped unused is taken back
//!   from its window's count.
//! - Sliding log: as the window, but an entry reserved and dropped unused
//!   stays in the log (a lock-free ring cannot take one back): it counts as
//!   one admission.
//!
//! Waiting needs a tokio runtime with time enabled.
//!
//! # Keyed limiting
//!
//! `.keyed(|req| key).max_keys(n)`: one limit per key, stored in a sharded
//! map (short critical sections under `std::sync::Mutex`; the unkeyed path is
//! lock-free). At most `n` keys are held. When a new key finds its shard
//! full, the limiter itself evicts every *idle* key there (one whose state
//! equals a new key's, so an evicted key behaves exactly like a new one); if
//! all are active, the **new key is refused** (`RateLimited` with
//! `remaining: 0`) rather than evicting an active key, which would hand that
//! key a fresh limit. A flood of unique keys therefore costs at most `n`
//! entries and O(1) per refused key. The bound is split across up to 64
//! shards, so a new key can be refused when its own shard is full slightly
//! before `n` keys are held in total. Keys are stored as 64-bit hashes under
//! a per-limiter random seed: two distinct keys share a limit only on a hash
//! collision (about `n² / 2^65` for `n` keys held), which the random seed
//! keeps an attacker from aiming for. Keyed limiters decide in `call` (the
//! key comes from the request), and wait, in wait mode, in the response
//! future.
//!
//! # Several limits
//!
//! [`RateLimitBuilder::and`] adds limits to one layer ("10 per second and
//! 1,000 per hour"), any mix of the three algorithms, keyed or not, in
//! reject or wait mode. They are checked all-or-nothing: every limit is
//! checked on its current state, and only if all admit is each one charged,
//! so a request refused by any limit is charged to none (two stacked
//! layers would charge the outer one for requests the inner one refuses:
//! Kuadrant/limitador #506). A refusal's `retry_after` is the earliest time
//! all of them admit (each limit's admission only grows with time, so it
//! is the latest of their own), and [`RateLimited::limit_index`] names the
//! limit that admits last. A key's limits are decided together under one
//! short lock (the keyed store's; an unkeyed layer with several limits is
//! its one key), where one limit alone stays lock-free when unkeyed.
//!
//! # Counts and tracing
//!
//! [`RateLimitLayer::handle`] reads admitted, refused and keys held, and
//! for a keyed limiter the requests whose extractor identified no client
//! ([`KeyStatus`]: `http::ClientIp`'s `ClientKey::Unknown`), which share one
//! key, or are refused with [`UnknownKey`] when the extractor is strict.
//! Each refusal emits a `tracing` event at debug level.
//!
//! # RateLimit header fields
//!
//! With feature `http`, [`RateLimitBuilder::headers`] (token bucket, in
//! memory, keyed or not) writes the IETF draft's `RateLimit-Policy` and
//! `RateLimit` fields on admitted responses, computed from the state the
//! admission stored, and [`RateLimited`] carries them to the 429 that
//! `http::ErrorResponseLayer` makes. See [`headers`] for the behaviours.
//!
//! # Differences from `tower::limit::RateLimit`
//!
//! tower's keeps its window per service instance and is not `Clone`, so
//! behind axum (which clones per request) each clone gets its own limit
//! (tower #794). Here every clone and every service of one layer value share
//! one limiter, created in `build()`.

#[cfg(all(test, not(palisade_loom)))]
mod clock_tests;
mod decision;
pub mod error;
pub mod events;
pub mod future;
mod gcra;
mod handle;
pub mod headers;
pub(crate) mod keyed;
mod layer;
mod limiter;
mod mode;
mod multi;
mod request;
mod sliding_log;
mod sliding_window;
mod store;
mod wait;
mod wide;

#[cfg(feature = "redis")]
pub mod redis;

pub use error::{ConfigError, InsufficientCapacity, RateLimited, UnknownKey};
pub use events::{RateLimitRefused, RefusalReason};
pub use future::ResponseFuture;
pub use handle::RateLimitHandle;
pub use headers::{ApplyStamp, HeaderStamp, NoHeaders, Quota, RateLimitHeaders, ResponseHeaders};
pub use layer::{DEFAULT_MAX_KEYS, InMemory, RateLimitBuilder, RateLimitLayer};
pub use mode::{Reject, Wait};
pub use request::{Cost, CostBy, KeyExtractor, KeyStatus, PerRequest, Unkeyed};
pub use wait::WaitFuture;

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::time::Sleep;
use tower::Service;

use crate::BoxError;
use crate::clock::{Nanos, duration_to_nanos};
use future::Refusal;
use limiter::{Limiter, Outcome};
use store::Undo;

/// A service limited by a [`RateLimitLayer`]. Cheap to clone; clones share
/// the limiter, and a clone starts with no reservation.
///
/// There is no `into_inner`: the service gives a wait-mode reservation back
/// when dropped, so the inner service cannot be moved out of it.
///
/// `H` says what the limiter writes on admitted responses: [`NoHeaders`]
/// (the default) or [`RateLimitHeaders`] (see
/// [`RateLimitBuilder::headers`]).
///
/// `M` is the mode: [`Reject`] (the default) or [`Wait`] (see
/// [`RateLimitBuilder::wait`]).
pub struct RateLimit<S, K = Unkeyed, C = PerRequest, H = NoHeaders, M = Reject> {
    inner: S,
    limiter: Arc<Limiter>,
    key: K,
    cost: C,
    headers: H,
    /// `Some` in wait mode.
    max_wait: Option<Nanos>,
    /// This instance's readiness in wait mode.
    slot: Slot,
    /// Created the first time this instance waits, then reset.
    sleep: Option<Pin<Box<Sleep>>>,
    mode: PhantomData<fn() -> M>,
}

/// Wait mode's per-instance state.
#[derive(Debug)]
enum Slot {
    /// Nothing reserved.
    Empty,
    /// Sleeping until a window may admit; give up at `deadline`.
    Waiting { deadline: Nanos },
    /// Capacity booked, conforming at `at`.
    Reserved { at: Nanos, undo: Undo },
    /// Refused; `call` delivers the error.
    Refused(Refusal),
}

impl<S, K, C, H, M> RateLimit<S, K, C, H, M> {
    fn new(
        inner: S,
        limiter: Arc<Limiter>,
        key: K,
        cost: C,
        headers: H,
        max_wait: Option<Nanos>,
    ) -> Self {
        Self {
            inner,
            limiter,
            key,
            cost,
            headers,
            max_wait,
            slot: Slot::Empty,
            sleep: None,
            mode: PhantomData,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// A handle on the shared limiter's counts.
    pub fn handle(&self) -> RateLimitHandle {
        RateLimitHandle::new(self.limiter.clone())
    }

    /// Waits (wait mode) until this instance holds a reservation or a
    /// refusal.
    fn poll_wait(&mut self, cx: &mut Context<'_>, max_wait: Nanos) -> Poll<()> {
        // A refusal holds nothing: polled ready again, decide afresh rather
        // than deliver a refusal (and a `retry_after`) from an earlier poll.
        if let Slot::Refused(_) = self.slot {
            self.slot = Slot::Empty;
        }
        loop {
            let now = self.limiter.clock.now();
            match self.slot {
                Slot::Refused(_) => return Poll::Ready(()),
                Slot::Reserved { at, .. } => {
                    if at <= now {
                        return Poll::Ready(());
                    }
                    ready!(self.poll_sleep(cx, at));
                    // The timer fired (at or after `at`, tokio rounds up).
                    return Poll::Ready(());
                }
                Slot::Empty | Slot::Waiting { .. } => {
                    let deadline = match self.slot {
                        Slot::Waiting { deadline } => deadline,
                        _ => now.saturating_add(max_wait),
                    };
                    let budget = deadline.saturating_sub(now);
                    // The reading above is the limiter's too: one clock
                    // read when the request may go at once.
                    match self.limiter.acquire_at(now, 0, 1, budget) {
                        Outcome::Admit { at, undo } => {
                            // Waited from the first poll (the deadline's
                            // start) until the admission's time.
                            let start = deadline.saturating_sub(max_wait);
                            self.limiter
                                .observe
                                .waited(at.max(now).saturating_sub(start));
                            self.slot = Slot::Reserved { at, undo };
                            if at <= now {
                                return Poll::Ready(());
                            }
                        }
                        Outcome::Never(e) => self.slot = Slot::Refused(Refusal::Never(e)),
                        Outcome::Deny(e) => {
                            let retry = duration_to_nanos(e.retry_after);
                            if retry <= budget {
                                // A window: sleep until it may admit, then
                                // try again (someone else may take it).
                                self.slot = Slot::Waiting { deadline };
                                ready!(self.poll_sleep(cx, now + retry));
                            } else {
                                self.slot = Slot::Refused(Refusal::Limited(e));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Polls this instance's one timer, armed for `at`.
    fn poll_sleep(&mut self, cx: &mut Context<'_>, at: Nanos) -> Poll<()> {
        let deadline = self.limiter.clock.instant_at(at);
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            slot @ None => slot.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        sleep.as_mut().poll(cx)
    }

    /// Decides for one request at once (reject mode): `Ok` with the
    /// admission's conforming time and stored state (`None` for a request
    /// of cost 0, which is not counted), or the refusal.
    #[inline]
    fn decide<Req>(&self, req: &Req) -> Result<Option<(Nanos, Undo)>, Refusal>
    where
        K: KeyExtractor<Req>,
        C: Cost<Req>,
    {
        let cost = self.cost.cost(req);
        if cost == 0 {
            return Ok(None);
        }
        let key = self.key_of(req)?;
        match self.limiter.acquire(key, cost, 0) {
            Outcome::Admit { at, undo } => Ok(Some((at, undo))),
            Outcome::Deny(e) => Err(Refusal::Limited(e)),
            Outcome::Never(e) => Err(Refusal::Never(e)),
        }
    }

    /// The request's key as stored (0 when unkeyed), or the refusal of a
    /// strict extractor.
    #[inline]
    fn key_of<Req>(&self, req: &Req) -> Result<u64, Refusal>
    where
        K: KeyExtractor<Req>,
    {
        if !self.limiter.is_keyed() {
            return Ok(0);
        }
        let key = self.key.extract(req);
        match self.key.status(&key) {
            KeyStatus::Known => {}
            KeyStatus::Unknown => self.limiter.counters.unknown_key(),
            KeyStatus::Refuse => {
                self.limiter.counters.unknown_key();
                return Err(Refusal::Unknown(UnknownKey));
            }
        }
        Ok(self.limiter.hash_key(&key))
    }

    /// Counts, reports (metrics, hook) and traces a refusal; `key_hash` is
    /// asked only when a hook is set.
    fn refused(&self, r: &Refusal, key_hash: impl FnOnce() -> Option<u64>) {
        self.limiter.counters.reject();
        self.limiter.observe.refused(r, key_hash);
        r.trace(false);
    }

    /// `call` after a ready `poll_ready` in reject mode, and in wait mode
    /// when the wait happened in `poll_ready`: the decision is in the slot
    /// (wait mode) or taken now.
    #[inline]
    fn call_now<Req>(&mut self, req: Req) -> ResponseFuture<S::Future, H::Stamp>
    where
        S: Service<Req>,
        K: KeyExtractor<Req>,
        C: Cost<Req>,
        H: ResponseHeaders,
    {
        let decided = match mem::replace(&mut self.slot, Slot::Empty) {
            Slot::Reserved { at, undo } => Ok(Some((at, undo))),
            Slot::Refused(r) => Err(r),
            // Reject mode, or wait mode called without a ready poll: decide
            // now, without waiting.
            Slot::Empty | Slot::Waiting { .. } => self.decide(&req),
        };
        match decided {
            Ok(admitted) => {
                self.limiter.counters.admit();
                self.limiter.observe.admitted();
                // `NoHeaders` never calls the closure: nothing computed.
                let limiter = &self.limiter;
                let stamp = self.headers.stamp(|| {
                    let (at, undo) = admitted?;
                    limiter.quota_after(at, &undo)
                });
                ResponseFuture::called(self.inner.call(req), stamp)
            }
            Err(r) => {
                let (limiter, key) = (&self.limiter, &self.key);
                self.refused(&r, || {
                    limiter
                        .is_keyed()
                        .then(|| limiter.hash_key(&key.extract(&req)))
                });
                ResponseFuture::refused(r)
            }
        }
    }
}

impl<S, K, C, H, Req> Service<Req> for RateLimit<S, K, C, H, Reject>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: KeyExtractor<Req>,
    C: Cost<Req>,
    H: ResponseHeaders,
    H::Stamp: ApplyStamp<S::Response> + Default,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, H::Stamp>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        self.call_now(req)
    }
}

impl<S: Clone, K: Clone, C: Clone, H: Clone, M> Clone for RateLimit<S, K, C, H, M> {
    /// Shares the limiter; the clone holds no reservation and no timer (the
    /// Tower contract: a clone must be polled ready itself).
    fn clone(&self) -> Self {
        Self::new(
            self.inner.clone(),
            self.limiter.clone(),
            self.key.clone(),
            self.cost.clone(),
            self.headers.clone(),
            self.max_wait,
        )
    }
}

impl<S, K, C, H, M> Drop for RateLimit<S, K, C, H, M> {
    /// A reservation never called is given back where the algorithm can.
    fn drop(&mut self) {
        if let Slot::Reserved { undo, .. } = mem::replace(&mut self.slot, Slot::Empty) {
            self.limiter.release(0, undo);
        }
    }
}

impl<S: fmt::Debug, K, C, H, M> fmt::Debug for RateLimit<S, K, C, H, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("max_wait", &self.max_wait)
            .field("slot", &self.slot)
            .finish_non_exhaustive()
    }
}
