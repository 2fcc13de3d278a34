//! One call of a batch: the inner future, tagged with its input index and
//! raced against the per-item timeout when there is one.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::error::{Elapsed, ItemError};

pin_project! {
    /// Lives in the batch's `FuturesUnordered`; dropping it cancels the call.
    pub(crate) struct Item<F> {
        index: usize,
        #[pin]
        call: F,
        // `None` without an item timeout: no timer is registered at all.
        // Boxed so that a batch without one does not carry 112 bytes of
        // `Sleep` in every call's node of the `FuturesUnordered`.
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<F> Item<F> {
    /// Starts timing the call now, if there is a timeout.
    pub(crate) fn new(index: usize, call: F, timeout: Option<std::time::Duration>) -> Self {
        Self {
            index,
            call,
            // A timeout too long to represent as an instant is no timeout.
            timer: timeout
                .and_then(|t| Instant::now().checked_add(t))
                .map(|at| Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// The position of this item's request in the batch.
    pub(crate) fn index(&self) -> usize {
        self.index
    }
}

impl<F, T, E> Future for Item<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = (usize, Result<T, ItemError<E>>);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        // The call first: an answer that is ready when the timer fires wins.
        if let Poll::Ready(result) = this.call.poll(cx) {
            return Poll::Ready((*this.index, result.map_err(ItemError::Service)));
        }
        if let Some(timer) = this.timer {
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready((*this.index, Err(ItemError::Timeout(Elapsed::ItemTimeout))));
            }
        }
        Poll::Pending
    }
}
