//! [`SettleAll`] drives one batch to the end; [`ResponseFuture`] is the
//! same future in the `Result` a `Service` must return.
//!
//! # How it stays linear
//!
//! Calls in flight live in a `FuturesUnordered`, which polls only the calls
//! that were woken, so each call costs O(1) per wake-up however large the
//! batch (`join_all` over every future is O(n) per wake-up, futures-rs
//! #1603). Results go straight into their input slot, so no sort at the end.
//! Requests are pulled from the iterator one at a time as room frees up, so
//! at most `max_in_flight` calls and their futures exist at once.
//!
//! # Cooperation
//!
//! Calls that finish at once (a cache, an in-process service) could keep one
//! `poll` busy for the whole batch and starve the other tasks of its thread
//! (futures-rs #2049, tokio #2390). The future counts the items it starts and
//! settles within one `poll` and, after [`YIELD_AFTER`], wakes itself and
//! returns `Pending`, giving the scheduler its turn. No runtime is assumed:
//! tokio's own budget (`tokio::task::coop`) needs its `rt` feature, and
//! tokio's leaf futures inside the calls still honour that budget.

use std::sync::Arc;

use super::events::Observe;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::Service;

use super::error::{Elapsed, ItemError};
use super::item::Item;
use super::layer::Config;
use super::settled::Settled;

/// Steps (an item started or settled) one `poll` may take before yielding.
/// tokio's task budget is 128 operations; the same figure keeps a batch as
/// polite as one tokio task doing its own I/O.
pub(crate) const YIELD_AFTER: usize = 128;

type Slot<T, E> = Option<Result<T, ItemError<E>>>;

pin_project! {
    #[project = SettleAllProj]
    /// The future of one batch, from [`settle_all`](super::settle_all) or
    /// [`BatchLayer::settle_all`](super::BatchLayer::settle_all): resolves
    /// to a [`Settled`] with one result per request, in input order.
    ///
    /// It owns a clone of the inner service and drives it through
    /// `poll_ready` before each `call`. Dropping it drops every call in
    /// flight (cancelling them) and the requests not yet sent.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct SettleAll<S, I>
    where
        I: Iterator,
        S: Service<I::Item>,
    {
        service: S,
        // `None` once exhausted: the iterator is dropped early, and never
        // polled again (it need not be fused).
        requests: Option<I>,
        // A request taken from the iterator (with its slot) whose
        // `poll_ready` answered `Pending`; it goes first when ready.
        waiting: Option<(usize, I::Item)>,
        in_flight: FuturesUnordered<Item<S::Future>>,
        // One slot per request pulled so far, filled as items settle.
        results: Vec<Slot<S::Response, S::Error>>,
        settled: usize,
        rejected: usize,
        max_in_flight: usize,
        item_timeout: Option<std::time::Duration>,
        done: bool,
        #[pin]
        deadline: Option<Sleep>,
        // Hook and metrics (a layer's batches), and when the batch began.
        observe: Option<Arc<Observe>>,
        started: Option<Instant>,
    }
}

impl<S, I> SettleAll<S, I>
where
    I: Iterator,
    S: Service<I::Item>,
{
    /// A batch that starts its deadline now and its calls on first poll.
    pub(crate) fn new(service: S, requests: I, config: Config) -> Self {
        // The lower bound only: a lying `size_hint` costs a reallocation,
        // never correctness.
        let capacity = requests.size_hint().0;
        Self {
            service,
            requests: Some(requests),
            waiting: None,
            in_flight: FuturesUnordered::new(),
            results: Vec::with_capacity(capacity),
            settled: 0,
            rejected: 0,
            max_in_flight: config.max_in_flight.max(1),
            item_timeout: config.item_timeout,
            done: false,
            // A deadline too far away to represent is no deadline.
            deadline: config
                .deadline
                .and_then(|d| Instant::now().checked_add(d))
                .map(tokio::time::sleep_until),
            observe: None,
            started: None,
        }
    }

    /// Reports the batch to `observe` when it settles.
    pub(crate) fn observed(mut self, observe: Option<&Arc<Observe>>) -> Self {
        if let Some(observe) = observe {
            self.started = observe.start();
            self.observe = Some(observe.clone());
        }
        self
    }
}

/// The projected fields, so the helpers below can borrow them by name.
type Fields<'a, S, I> = SettleAllProj<'a, S, I>;

impl<S, I> Future for SettleAll<S, I>
where
    I: Iterator,
    S: Service<I::Item> + Clone,
{
    type Output = Settled<S::Response, ItemError<S::Error>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        assert!(!*this.done, "batch future polled after completion");

        if let Some(deadline) = this.deadline.as_mut().as_pin_mut() {
            if deadline.poll(cx).is_ready() {
                expire(&mut this);
                return Poll::Ready(finish(&mut this));
            }
        }

        let mut budget = YIELD_AFTER;
        loop {
            // Start calls while there is room, a request, and a ready service.
            while this.in_flight.len() < *this.max_in_flight {
                let Some((index, request)) = next_request(&mut this) else {
                    break;
                };
                match this.service.poll_ready(cx) {
                    Poll::Pending => {
                        // The service will wake us; the request keeps its slot.
                        *this.waiting = Some((index, request));
                        break;
                    }
                    Poll::Ready(Err(e)) => {
                        // The request is dropped unsent and its item settles
                        // with the error. tower-service: a service whose
                        // `poll_ready` failed "should be discarded", so the
                        // next item asks a fresh clone (a clone starts not
                        // ready). A service that cannot recover fails every
                        // clone, and each item settles with its own error:
                        // never the whole batch (tower#706).
                        settle(&mut this, index, Err(ItemError::NotReady(e)));
                        let fresh = this.service.clone();
                        *this.service = fresh;
                    }
                    Poll::Ready(Ok(())) => {
                        let call = this.service.call(request);
                        this.in_flight
                            .push(Item::new(index, call, *this.item_timeout));
                    }
                }
                budget -= 1;
                if budget == 0 {
                    return yield_now(cx);
                }
            }

            match this.in_flight.poll_next_unpin(cx) {
                Poll::Ready(Some((index, result))) => {
                    settle(&mut this, index, result);
                    budget -= 1;
                    if budget == 0 {
                        return yield_now(cx);
                    }
                    // A slot is free: back to starting calls.
                }
                Poll::Ready(None) => {
                    if this.waiting.is_none() && this.requests.is_none() {
                        return Poll::Ready(finish(&mut this));
                    }
                    // Nothing in flight and a request waiting: the inner
                    // service said `Pending` and holds our waker.
                    return Poll::Pending;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Gives the scheduler its turn and asks to be polled again at once.
fn yield_now<T>(cx: &mut Context<'_>) -> Poll<T> {
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// The request that goes next, with the slot its result will fill.
fn next_request<S, I>(this: &mut Fields<'_, S, I>) -> Option<(usize, I::Item)>
where
    I: Iterator,
    S: Service<I::Item>,
{
    if let Some(waiting) = this.waiting.take() {
        return Some(waiting);
    }
    let request = this.requests.as_mut()?.next();
    match request {
        Some(request) => {
            let index = this.results.len();
            this.results.push(None);
            Some((index, request))
        }
        None => {
            *this.requests = None;
            None
        }
    }
}

fn settle<S, I>(
    this: &mut Fields<'_, S, I>,
    index: usize,
    result: Result<S::Response, ItemError<S::Error>>,
) where
    I: Iterator,
    S: Service<I::Item>,
{
    *this.rejected += usize::from(result.is_err());
    *this.settled += 1;
    this.results[index] = Some(result);
}

/// The batch deadline passed: cancel what is in flight and settle every
/// item not yet settled, started or not, as timed out.
fn expire<S, I>(this: &mut Fields<'_, S, I>)
where
    I: Iterator,
    S: Service<I::Item>,
{
    let timed_out = || Some(Err(ItemError::Timeout(Elapsed::BatchDeadline)));
    let mut cut = 0;
    // `iter_pin_ref` because the calls need not be `Unpin`.
    for item in Pin::new(&*this.in_flight).iter_pin_ref() {
        this.results[item.index()] = timed_out();
        cut += 1;
    }
    // Dropping the futures cancels the calls.
    this.in_flight.clear();
    if let Some((index, _request)) = this.waiting.take() {
        this.results[index] = timed_out();
        cut += 1;
    }
    if let Some(requests) = this.requests.take() {
        for _request in requests {
            this.results.push(timed_out());
            cut += 1;
        }
    }
    *this.settled += cut;
    *this.rejected += cut;
    tracing::debug!(
        timed_out = cut,
        total = this.results.len(),
        "batch deadline elapsed"
    );
}

fn finish<S, I>(this: &mut Fields<'_, S, I>) -> Settled<S::Response, ItemError<S::Error>>
where
    I: Iterator,
    S: Service<I::Item>,
{
    *this.done = true;
    debug_assert_eq!(*this.settled, this.results.len());
    let total = this.results.len();
    let failed = *this.rejected;
    if failed > 0 {
        tracing::warn!(failed, total, "batch completed with {failed} failures");
    }
    if let Some(observe) = this.observe.take() {
        observe.settled(total - failed, failed, *this.started);
    }
    let results = std::mem::take(this.results)
        .into_iter()
        .map(|slot| slot.expect("every item of a finished batch has settled"))
        .collect();
    Settled::with_counts(results, failed)
}

impl<S, I> fmt::Debug for SettleAll<S, I>
where
    I: Iterator,
    S: Service<I::Item>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SettleAll")
            .field("pulled", &self.results.len())
            .field("settled", &self.settled)
            .field("rejected", &self.rejected)
            .field("in_flight", &self.in_flight.len())
            .field("max_in_flight", &self.max_in_flight)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// The response future of [`Batch`](super::Batch): a [`SettleAll`]
    /// over the batch's `Vec` of requests, its output wrapped in the `Ok` a
    /// `Service` must return. It never fails.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        inner: SettleAll<S, std::vec::IntoIter<Req>>,
    }
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    pub(crate) fn new(inner: SettleAll<S, std::vec::IntoIter<Req>>) -> Self {
        Self { inner }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req> + Clone,
{
    type Output = Result<Settled<S::Response, ItemError<S::Error>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map(Ok)
    }
}

impl<S, Req> fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ResponseFuture").field(&self.inner).finish()
    }
}
