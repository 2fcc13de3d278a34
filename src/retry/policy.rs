//! The decision after each attempt: return the result, or wait and retry.
//! Pure configuration plus the shared state; the response future drives it.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;

use super::budget::Withdrawal;
use super::handle::RetryState;
use super::hooks::RetryAfter;
use crate::backoff::Backoff;
use crate::classify::{Classify, LocalRejection, Outcome, local_rejection_of};
use crate::clock::duration_to_nanos;

/// Everything one layer decides with; one `Arc` of it per layer, cloned into
/// each response future.
#[derive(Debug)]
pub(crate) struct Policy<C, K, H> {
    pub(crate) backoff: Backoff,
    pub(crate) max_attempts: u32,
    pub(crate) max_elapsed: Option<Duration>,
    /// Hints above this mean "do not retry".
    pub(crate) max_hint: Duration,
    pub(crate) classifier: C,
    pub(crate) cloner: K,
    pub(crate) hint: H,
    pub(crate) state: Arc<RetryState>,
    pub(crate) observe: super::events::Observe,
}

/// What to do with an attempt's result.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Return the result to the caller.
    Return,
    /// Wait `delay` nanoseconds, then send the request again.
    Retry {
        delay: u64,
        withdrawal: Option<Withdrawal>,
    },
    /// Wait out a local rejection's `retry_after` (`delay` nanoseconds),
    /// then send the request again: no budget, no backoff step.
    WaitOut { delay: u64 },
}

/// Where one request stands after an attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    /// Calls made so far, the one that just ended included.
    pub(crate) attempts: u32,
    /// The delay before the previous retry, for decorrelated jitter.
    pub(crate) previous: Option<u64>,
    /// When the request must be done by (`max_elapsed` after its start).
    pub(crate) deadline: Option<Instant>,
    /// Whether a copy of the request is in hand.
    pub(crate) has_copy: bool,
}

impl<C, K, H> Policy<C, K, H> {
    /// Whether another attempt could follow attempt number `attempts`, and
    /// so whether the request is worth cloning before sending it.
    #[inline]
    pub(crate) fn may_retry_after(&self, attempts: u32) -> bool {
        attempts < self.max_attempts
    }

    /// Decides after an attempt. The checks run cheapest first, and the
    /// budget is asked last, so a retry refused for another reason never
    /// spends budget. Exactly one random draw per delay computed.
    ///
    /// Inlined up to the classifier's answer: the success path is this
    /// test and nothing else; a failure goes on out of line.
    #[inline]
    pub(crate) fn decide<T, E: 'static>(&self, result: &Result<T, E>, at: Progress) -> Verdict
    where
        C: Classify<T, E>,
        H: RetryAfter<T, E>,
    {
        // palisade's own refusals from below are handled here, before the
        // classifier is asked: whatever it says of them, retrying at once
        // would only be refused again.
        if let Err(error) = result {
            if let Some(rejection) = local_rejection_of(error) {
                return self.decide_rejected(rejection, at);
            }
        }
        if self.classifier.classify(result) != Outcome::Failure {
            return Verdict::Return;
        }
        self.decide_failure(result, at)
    }

    /// [`decide`](Self::decide) for an attempt classified as a failure.
    #[inline(never)]
    fn decide_failure<T, E: 'static>(&self, result: &Result<T, E>, at: Progress) -> Verdict
    where
        H: RetryAfter<T, E>,
    {
        let state = &*self.state;
        let reason = if result.is_err() {
            "error"
        } else {
            "response classified as failure"
        };
        if !at.has_copy {
            if self.may_retry_after(at.attempts) {
                // Only when a retry was otherwise possible: a last attempt
                // is not cloned on purpose.
                state.not_clonable.fetch_add(1, Relaxed);
                tracing::debug!(
                    attempt = at.attempts,
                    reason,
                    "not retrying: the request could not be cloned"
                );
            } else {
                state.exhausted.fetch_add(1, Relaxed);
                tracing::debug!(
                    attempt = at.attempts,
                    reason,
                    "not retrying: max attempts reached"
                );
            }
            return Verdict::Return;
        }

        let hint = self.hint.retry_after(result);
        if let Some(over) = hint.filter(|h| *h > self.max_hint) {
            state.hint_refused.fetch_add(1, Relaxed);
            tracing::debug!(
                attempt = at.attempts,
                hint_ms = over.as_millis() as u64,
                max_ms = self.max_hint.as_millis() as u64,
                "not retrying: the server asked to wait longer than the cap"
            );
            return Verdict::Return;
        }

        let backoff = self.backoff.delay_nanos(
            at.attempts.saturating_sub(1),
            at.previous,
            state.rng.next_u64(),
        );
        let delay = match hint {
            Some(h) if self.hint.exact() => duration_to_nanos(h),
            Some(h) => backoff.max(duration_to_nanos(h)),
            None => backoff,
        };

        if let Some(deadline) = at.deadline {
            let now = Instant::now();
            let ends = now.checked_add(Duration::from_nanos(delay));
            if ends.is_none_or(|ends| ends > deadline) {
                state.exhausted.fetch_add(1, Relaxed);
                tracing::debug!(
                    attempt = at.attempts,
                    delay_ms = delay / 1_000_000,
                    reason,
                    "not retrying: the delay would end past max_elapsed"
                );
                return Verdict::Return;
            }
        }

        let withdrawal = match &state.budget {
            None => None,
            Some(budget) => match budget.withdraw() {
                Some(w) => Some(w),
                None => {
                    state.budget_denied.fetch_add(1, Relaxed);
                    self.observe
                        .budget_refused(at.attempts, || budget.available());
                    tracing::debug!(
                        attempt = at.attempts,
                        reason,
                        "not retrying: retry budget exhausted"
                    );
                    return Verdict::Return;
                }
            },
        };

        tracing::debug!(
            attempt = at.attempts + 1,
            delay_ms = delay as f64 / 1e6,
            reason,
            hinted = hint.is_some(),
            "retrying"
        );
        if let Some(budget) = &state.budget {
            self.observe.metrics.budget_balance(|| budget.available());
        }
        self.observe.scheduled(at.attempts + 1, delay, false);
        Verdict::Retry { delay, withdrawal }
    }

    /// Decides after a palisade layer below refused the attempt without
    /// calling the upstream. Retrying at once would only be refused again
    /// (or hammer an open breaker), and the refusal says nothing about the
    /// upstream's health, so: wait exactly its `retry_after` and send again
    /// if that fits every limit left (attempts, `max_retry_after`,
    /// `max_elapsed`), spending no budget; otherwise return it at once.
    #[inline(never)]
    fn decide_rejected(&self, rejection: LocalRejection, at: Progress) -> Verdict {
        let state = &*self.state;
        let returned = |why: &'static str| {
            state.rejections_returned.fetch_add(1, Relaxed);
            tracing::debug!(attempt = at.attempts, why, "not retrying a local rejection");
            Verdict::Return
        };
        let Some(wait) = rejection.retry_after else {
            return returned("waiting never helps");
        };
        if !self.may_retry_after(at.attempts) {
            return returned("max attempts reached");
        }
        if !at.has_copy {
            return returned("the request could not be cloned");
        }
        if wait > self.max_hint {
            return returned("its wait is above max_retry_after");
        }
        if let Some(deadline) = at.deadline {
            if Instant::now()
                .checked_add(wait)
                .is_none_or(|ends| ends > deadline)
            {
                return returned("its wait would end past max_elapsed");
            }
        }
        state.rejections_waited.fetch_add(1, Relaxed);
        tracing::debug!(
            attempt = at.attempts + 1,
            delay_ms = wait.as_secs_f64() * 1e3,
            "retrying a local rejection after its retry_after"
        );
        self.observe
            .scheduled(at.attempts + 1, duration_to_nanos(wait), true);
        Verdict::WaitOut {
            delay: duration_to_nanos(wait),
        }
    }

    /// Gives back a withdrawal whose retry was never sent.
    pub(crate) fn refund(&self, withdrawal: Withdrawal) {
        if let Some(budget) = &self.state.budget {
            budget.refund(withdrawal);
        }
    }
}
