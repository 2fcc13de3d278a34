//! Batch fan-out that settles every request, like `Promise.allSettled`.
//!
//! [`BatchLayer`] turns a `Service<Req>` into a [`Batch`]: a
//! `Service<Vec<Req>>` whose response is a [`Settled`] holding one `Result` per request, in input
//! order, with counts of fulfilled and rejected items. One failing item
//! never throws the others away, and the batch itself never fails: its
//! error type is [`Infallible`]. Without a layer, [`settle_all`] does the
//! same for any `IntoIterator` of requests.
//!
//! ```
//! use std::time::Duration;
//! use palisade::BatchLayer;
//! use palisade::batch::{Elapsed, ItemError};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let upstream = service_fn(|id: u64| async move {
//!     match id {
//!         3 => Err("not found"),
//!         7 => { tokio::time::sleep(Duration::from_secs(5)).await; Ok(id) }
//!         _ => Ok(id * 10),
//!     }
//! });
//! let batch = ServiceBuilder::new()
//!     .layer(BatchLayer::builder()
//!         .max_in_flight(4)
//!         .item_timeout(Duration::from_secs(1))
//!         .build()?)
//!     .service(upstream);
//!
//! let settled = batch.oneshot((1..=8).collect()).await?;
//! assert_eq!((settled.fulfilled(), settled.rejected()), (6, 2));
//! assert_eq!(settled[0], Ok(10));
//! assert_eq!(settled[2], Err(ItemError::Service("not found")));
//! assert_eq!(settled[6], Err(ItemError::Timeout(Elapsed::ItemTimeout)));
//!
//! let (responses, errors) = settled.into_parts(); // each tagged with its index
//! assert_eq!(responses.len() + errors.len(), 8);
//! # Ok(())
//! # }
//! ```
//!
//! # Behaviour
//!
//! - **Bounded concurrency.** At most `max_in_flight` calls of one batch are
//!   in flight, and every call is preceded by a ready `poll_ready` on the
//!   inner service, so its own backpressure (a concurrency limit, a rate
//!   limiter that waits) holds the batch back too. Requests are pulled from
//!   the iterator only as room frees up.
//! - **Readiness.** The batch's own `poll_ready` is always ready: a batch
//!   holds no reservation of the inner service. Each call clones the inner
//!   service into the response future, which drives that clone (a clone
//!   starts not ready, so nothing is taken from the original).
//! - **`poll_ready` errors** settle the item they were for as
//!   [`ItemError::NotReady`], with the request unsent. As tower-service
//!   asks, the failed instance is discarded and the next item polls a fresh
//!   clone; a service that cannot recover fails each remaining item with its
//!   own error (linear, never the whole batch: unlike tower's `CallAll`,
//!   tower#706).
//! - **Time limits.** An optional per-item timeout, counted from the call,
//!   and an optional deadline for the whole batch, counted from the batch's
//!   `call`. Either cancels the calls it cuts off; items settle as
//!   [`ItemError::Timeout`] naming the limit ([`Elapsed`]). At the batch
//!   deadline, items not yet started settle as timed out unsent.
//! - **Cancellation.** Dropping the response future drops every call in
//!   flight, cancelling them, and the requests not yet sent.
//! - **Observability.** A `tracing` warning, "batch completed with N
//!   failures", when any item failed.
//! - **Cost.** Linear in the batch size: completions are driven by a
//!   `FuturesUnordered` (only woken calls are polled), results go straight
//!   into their slot, no task is spawned per item, and the future yields to
//!   the scheduler every 128 steps (calls started or settled, tokio's own
//!   task budget) so that a batch of instant answers cannot hog its thread. No `Send` or `'static` bound: the future is
//!   `Send` when the service, requests and calls are.
//!
//! Requests must be finite: the answer has one result per request.
//!
//! # Errors
//!
//! Item errors are [`ItemError<E>`] with `E` the inner error unchanged, so a
//! batch above retry and a circuit breaker settles an item rejected by the
//! breaker as `ItemError::Service(e)` with the breaker's own error in `e`;
//! [`ItemError::into_box_error`] hands back that error itself, for tower's
//! downcasting convention.
//!
//! # Differences from what you may know
//!
//! - `futures::future::join_all` polls every future on each wake-up (O(n²)
//!   for a batch, futures-rs #1603) and has no concurrency bound.
//! - `tower::ServiceExt::call_all` yields responses as a stream and ends at
//!   the first error; [`Batch`] settles every item and keeps input order.
//! - `buffer_unordered` on a stream of calls cannot drive `poll_ready`
//!   before each call; the batch does.
//!
//! [`Infallible`]: std::convert::Infallible

mod error;
pub mod events;
mod future;
mod item;
mod layer;
mod settle_all;
mod settled;

pub use error::{BatchConfigError, Elapsed, ItemError};
pub use events::BatchSettled;
pub use future::{ResponseFuture, SettleAll};
pub use layer::{BatchBuilder, BatchLayer, DEFAULT_MAX_IN_FLIGHT};
pub use settle_all::settle_all;
pub use settled::Settled;

use std::convert::Infallible;
use std::task::{Context, Poll};

use tower::Service;

/// A service of request lists, made by [`BatchLayer`]: each call settles
/// every request through the inner service (see the [module docs](self)).
///
/// `Clone` is derived: a `Batch` holds no readiness or reservation of its
/// own, since every batch drives its own clone of the inner service.
#[derive(Debug, Clone)]
pub struct Batch<S> {
    inner: S,
    layer: BatchLayer,
}

impl<S> Batch<S> {
    /// Wraps `inner` with the settings of `layer`.
    pub fn new(inner: S, layer: BatchLayer) -> Self {
        Self { inner, layer }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

// `Vec<Req>` rather than any `IntoIterator`: with one impl, rustc infers
// the request type in `batch.ready().await?.call(requests)`; a generic
// `I: IntoIterator` would ask every caller for a turbofish. The free
// function `settle_all` takes any `IntoIterator`.
impl<S, Req> Service<Vec<Req>> for Batch<S>
where
    S: Service<Req> + Clone,
{
    type Response = Settled<S::Response, ItemError<S::Error>>;
    type Error = Infallible;
    type Future = ResponseFuture<S, Req>;

    /// Always ready: a batch reserves nothing until its future runs, and
    /// then waits for the inner service item by item.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, requests: Vec<Req>) -> Self::Future {
        // A plain clone, not the `mem::replace` idiom: this service never
        // polls `inner` ready, so there is no ready instance to hand over,
        // and the clone starts not ready, as its future expects.
        ResponseFuture::new(
            SettleAll::new(
                self.inner.clone(),
                requests.into_iter(),
                self.layer.config(),
            )
            .observed(self.layer.observe()),
        )
    }
}
