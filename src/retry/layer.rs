//! [`RetryLayer`] and its builder.

use std::sync::Arc;
use std::time::Duration;

use tower::Layer;

use super::budget::{BudgetState, RetryBudget};
use super::events::{BudgetRefused, Observe, RetryHooks, RetryScheduled};
use super::handle::{RetryHandle, RetryState};
use super::hooks::{ByClone, NoHint, RetryIf};
use super::policy::Policy;
use super::{InvalidRetry, Retry};
use crate::backoff::{Backoff, BackoffBuilder, Jitter};
use crate::classify::ErrorsAsFailures;
use crate::rng::SharedRng;

/// Attempts per request when none is set: the first and two retries.
const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// Retries failed calls with exponential backoff and jitter; see the
/// [module docs](super).
///
/// Built by [`RetryLayer::exponential`] or [`RetryLayer::with_backoff`],
/// then [`RetryLayerBuilder::build`], which checks every setting and creates
/// the state (random source, budget, counts) that every service this layer
/// produces, and every clone of those, shares.
///
/// The type parameters are the hooks: the classifier `C` deciding what is
/// retried, the request copier `K`, and the server-hint reader `H`. Their
/// defaults make the common case `RetryLayer` with no turbofish.
pub struct RetryLayer<C = ErrorsAsFailures, K = ByClone, H = NoHint> {
    policy: Arc<Policy<C, K, H>>,
}

/// Configures a [`RetryLayer`]; finish with [`build`](Self::build).
#[must_use = "call .build() to get a RetryLayer"]
pub struct RetryLayerBuilder<C = ErrorsAsFailures, K = ByClone, H = NoHint> {
    backoff: BackoffBuilder,
    max_attempts: u32,
    max_elapsed: Option<Duration>,
    max_hint: Option<Duration>,
    seed: Option<u64>,
    budget: Option<RetryBudget>,
    name: Option<std::borrow::Cow<'static, str>>,
    hooks: RetryHooks,
    classifier: C,
    cloner: K,
    hint: H,
}

impl RetryLayer {
    /// Retries with delays `base * 2^n` (see [`factor`](RetryLayerBuilder::factor)),
    /// no jitter until [`jitter`](RetryLayerBuilder::jitter) is set, capped
    /// at one minute; 3 attempts in all.
    ///
    /// ```
    /// use palisade::{Jitter, RetryLayer};
    /// use palisade::retry::RetryBudget;
    /// use std::time::Duration;
    ///
    /// let layer = RetryLayer::exponential(Duration::from_millis(20))
    ///     .max_attempts(4)
    ///     .jitter(Jitter::Full)
    ///     .budget(RetryBudget::ratio(0.2))
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok::<(), palisade::retry::InvalidRetry>(())
    /// ```
    pub fn exponential(base: Duration) -> RetryLayerBuilder {
        Self::builder(Backoff::exponential(base))
    }

    /// Retries with a backoff built beforehand (the builder's backoff
    /// setters still apply on top of it).
    ///
    /// ```
    /// use palisade::{Backoff, RetryLayer};
    /// use std::time::Duration;
    ///
    /// let layer = RetryLayer::with_backoff(Backoff::constant(Duration::from_millis(50)))
    ///     .max_attempts(5)
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok::<(), palisade::retry::InvalidRetry>(())
    /// ```
    pub fn with_backoff(backoff: Backoff) -> RetryLayerBuilder {
        Self::builder(backoff.to_builder())
    }

    fn builder(backoff: BackoffBuilder) -> RetryLayerBuilder {
        RetryLayerBuilder {
            backoff,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_elapsed: None,
            max_hint: None,
            seed: None,
            budget: None,
            name: None,
            hooks: RetryHooks::default(),
            classifier: ErrorsAsFailures,
            cloner: ByClone,
            hint: NoHint,
        }
    }
}

impl<C, K, H> RetryLayer<C, K, H> {
    /// Counts shared by every service this layer produced.
    pub fn handle(&self) -> RetryHandle {
        RetryHandle {
            state: self.policy.state.clone(),
        }
    }

    /// The backoff in use.
    pub fn backoff(&self) -> &Backoff {
        &self.policy.backoff
    }
}

impl<C, K, H> RetryLayerBuilder<C, K, H> {
    /// A name for the layer's metrics (label `name`) and hooks' events.
    pub fn name(mut self, name: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Calls `hook` each time a retry is scheduled (before its delay), on
    /// the thread polling the response, with no lock held. A panic in
    /// `hook` is caught and reported once through `tracing`; the retry goes
    /// on. See [`events`](super::events).
    pub fn on_retry(mut self, hook: impl Fn(&RetryScheduled) + Send + Sync + 'static) -> Self {
        self.hooks.retry = crate::hook::Hook::new("on_retry", hook);
        self
    }

    /// Calls `hook` each time the [retry budget](Self::budget) refuses a
    /// retry. A panic in `hook` is caught and reported once.
    pub fn on_budget_refused(
        mut self,
        hook: impl Fn(&BudgetRefused) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.budget_refused = crate::hook::Hook::new("on_budget_refused", hook);
        self
    }

    /// Attempts per request, the first included (default 3). `1` disables
    /// retries; `0` is an error.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// A limit on one request's total time, measured on the clock from the
    /// moment it is first sent: a retry whose delay would end past it is not
    /// attempted. (Summing the sleeps instead would ignore the calls' own
    /// time: backoff#42.) Costs one clock read per request.
    pub fn max_elapsed(mut self, limit: Duration) -> Self {
        self.max_elapsed = Some(limit);
        self
    }

    /// The growth factor per retry (default 2; finite and `>= 1`).
    pub fn factor(mut self, factor: f64) -> Self {
        self.backoff = self.backoff.factor(factor);
        self
    }

    /// The cap on every backoff delay, applied after jitter.
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.backoff = self.backoff.max_delay(max_delay);
        self
    }

    /// How delays are randomised (default [`Jitter::None`]; prefer
    /// [`Jitter::Full`] for a fleet of clients, see `examples/thundering_herd.rs`).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.backoff = self.backoff.jitter(jitter);
        self
    }

    /// Seeds the random source (default: from the OS), so the delays can be
    /// replayed: a lone request then waits exactly
    /// `backoff.schedule(seed)`'s delays, in order.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Limits retries in aggregate across every clone (default: no budget).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The longest server hint honoured (default: the backoff's
    /// `max_delay`). A longer hint means "do not retry".
    pub fn max_retry_after(mut self, cap: Duration) -> Self {
        self.max_hint = Some(cap);
        self
    }

    /// Decides what is retried with a [`Classify`](crate::Classify): a
    /// [`Failure`](crate::Outcome::Failure) is retried, a success or an
    /// ignored result is returned (default: [`ErrorsAsFailures`], every `Err`).
    pub fn classifier<C2>(self, classifier: C2) -> RetryLayerBuilder<C2, K, H> {
        self.map_hooks(|_, cloner, hint| (classifier, cloner, hint))
    }

    /// Retries the results for which `predicate` returns true.
    ///
    /// ```
    /// # use palisade::RetryLayer;
    /// # use std::time::Duration;
    /// struct Reply { status: u16 }
    /// let layer = RetryLayer::exponential(Duration::from_millis(10))
    ///     .retry_if(|r: &Result<Reply, std::io::Error>| match r {
    ///         Ok(reply) => reply.status == 503,
    ///         Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    ///     })
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok::<(), palisade::retry::InvalidRetry>(())
    /// ```
    pub fn retry_if<F>(self, predicate: F) -> RetryLayerBuilder<RetryIf<F>, K, H> {
        self.classifier(RetryIf::new(predicate))
    }

    /// Copies requests with `cloner` instead of `Clone`; it may return
    /// `None`, and that request is then sent once. Any
    /// `Fn(&Req) -> Option<Req>` will do.
    pub fn clone_request<K2>(self, cloner: K2) -> RetryLayerBuilder<C, K2, H> {
        self.map_hooks(|classifier, _, hint| (classifier, cloner, hint))
    }

    /// Reads a delay the result demands (a server's `Retry-After`): any
    /// `Fn(&Result<T, E>) -> Option<Duration>`, or with feature `http`,
    /// [`HttpRetryAfter`](super::HttpRetryAfter). The delay is the larger of
    /// the hint and the backoff's (exactly the hint for an
    /// [`exact`](super::RetryAfter::exact) reader, such as gRPC's pushback);
    /// a hint above
    /// [`max_retry_after`](Self::max_retry_after) is not retried.
    pub fn retry_after<H2>(self, hint: H2) -> RetryLayerBuilder<C, K, H2> {
        self.map_hooks(|classifier, cloner, _| (classifier, cloner, hint))
    }

    /// The same settings with the hooks (classifier, request cloner, hint
    /// reader) replaced by `f`: the one place the type-changing setters
    /// rebuild the builder.
    fn map_hooks<C2, K2, H2>(
        self,
        f: impl FnOnce(C, K, H) -> (C2, K2, H2),
    ) -> RetryLayerBuilder<C2, K2, H2> {
        let (classifier, cloner, hint) = f(self.classifier, self.cloner, self.hint);
        RetryLayerBuilder {
            backoff: self.backoff,
            max_attempts: self.max_attempts,
            max_elapsed: self.max_elapsed,
            max_hint: self.max_hint,
            seed: self.seed,
            budget: self.budget,
            name: self.name,
            hooks: self.hooks,
            classifier,
            cloner,
            hint,
        }
    }

    /// Checks every setting and creates the shared state.
    pub fn build(self) -> Result<RetryLayer<C, K, H>, InvalidRetry> {
        if self.max_attempts == 0 {
            return Err(InvalidRetry::ZeroAttempts);
        }
        if self.max_elapsed == Some(Duration::ZERO) {
            return Err(InvalidRetry::ZeroElapsed);
        }
        let backoff = self.backoff.build()?;
        let budget = match &self.budget {
            Some(config) => {
                config.validate()?;
                Some(BudgetState::new(config))
            }
            None => None,
        };
        let rng = match self.seed {
            Some(seed) => SharedRng::seeded(seed),
            None => SharedRng::from_entropy(),
        };
        Ok(RetryLayer {
            policy: Arc::new(Policy {
                max_hint: self.max_hint.unwrap_or_else(|| backoff.max_delay()),
                backoff,
                max_attempts: self.max_attempts,
                max_elapsed: self.max_elapsed,
                classifier: self.classifier,
                cloner: self.cloner,
                hint: self.hint,
                observe: Observe::new(self.name, self.hooks, budget.is_some()),
                state: Arc::new(RetryState::new(rng, budget)),
            }),
        })
    }
}

impl<S, C, K, H> Layer<S> for RetryLayer<C, K, H> {
    type Service = Retry<S, C, K, H>;

    fn layer(&self, inner: S) -> Self::Service {
        // The state was made by `build`: every service shares it.
        Retry::new(inner, self.policy.clone())
    }
}

impl<C, K, H> Clone for RetryLayer<C, K, H> {
    fn clone(&self) -> Self {
        Self {
            policy: self.policy.clone(),
        }
    }
}

impl<C, K, H> std::fmt::Debug for RetryLayer<C, K, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryLayer")
            .field("backoff", &self.policy.backoff)
            .field("max_attempts", &self.policy.max_attempts)
            .field("max_elapsed", &self.policy.max_elapsed)
            .field("max_retry_after", &self.policy.max_hint)
            .field("budget", &self.policy.state.budget.is_some())
            .finish_non_exhaustive()
    }
}

impl<C, K, H> std::fmt::Debug for RetryLayerBuilder<C, K, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryLayerBuilder")
            .field("backoff", &self.backoff)
            .field("max_attempts", &self.max_attempts)
            .field("max_elapsed", &self.max_elapsed)
            .field("max_retry_after", &self.max_hint)
            .field("seed", &self.seed)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;
    use crate::retry::policy::{Progress, Verdict};

    /// The nanosecond-exact form of the schedule property (the integration
    /// test sees tokio's millisecond timer): with seed `s`, the delays one
    /// request is given are `backoff.schedule(s)`, one draw per delay.
    #[test]
    fn decisions_follow_the_seeded_schedule_exactly() {
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
            Jitter::Additive(Duration::from_micros(750)),
        ] {
            let layer = RetryLayer::exponential(Duration::from_micros(1_234))
                .jitter(jitter)
                .max_attempts(u32::MAX)
                .seed(99)
                .build()
                .unwrap();
            let expected: Vec<u64> = layer
                .backoff()
                .schedule(99)
                .take(50)
                .map(|d| d.as_nanos() as u64)
                .collect();
            let mut previous = None;
            let mut got = Vec::new();
            for attempts in 1..=50 {
                let at = Progress {
                    attempts,
                    previous,
                    deadline: None,
                    has_copy: true,
                };
                match layer.policy.decide(&Err::<(), ()>(()), at) {
                    Verdict::Retry { delay, withdrawal } => {
                        assert_eq!(withdrawal, None);
                        previous = Some(delay);
                        got.push(delay);
                    }
                    other => panic!("unlimited attempts, no rejection: {other:?}"),
                }
            }
            assert_eq!(got, expected, "{jitter:?}");
        }
    }
}
