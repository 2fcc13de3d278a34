//! Metrics through the [`metrics`](https://docs.rs/metrics) facade
//! (feature `metrics`): wire any recorder (Prometheus through
//! `metrics-exporter-prometheus`, OpenTelemetry, StatsD, ...) and every
//! palisade layer reports to it.
//!
//! # Install the recorder first
//!
//! Each layer registers its metric handles **once, in `build()`**, with the
//! recorder installed at that moment, and keeps them: a call then updates a
//! handle (no name lookup, no label allocation). So install the recorder
//! *before* building the layers; a layer built with no recorder installed
//! reports nothing, ever (its handles are no-ops, about a nanosecond each).
//! In a test, build the layer inside
//! [`metrics::with_local_recorder`](https://docs.rs/metrics/latest/metrics/fn.with_local_recorder.html)
//! and run it anywhere: the handles stay bound to that recorder.
//!
//! # The one naming scheme
//!
//! Every metric is named `palisade_<layer>_<what>`, counters end in
//! `_total`, durations are histograms in seconds (`_seconds`). Every metric
//! carries the label `name`, the layer's `.name(..)` (empty when unnamed),
//! so two breakers in one process are told apart; a few carry one more
//! label with a fixed, small set of values. Keys (client IPs, tenants) are
//! never labels: their number is unbounded.
//!
//! | metric | type | unit | labels | meaning |
//! |---|---|---|---|---|
//! | `palisade_breaker_calls_total` | counter | calls | `name`, `outcome` = `success` \| `failure` \| `ignored` | Outcomes of the calls a breaker admitted (closed or half-open), as its classifier judged them. A disabled breaker counts nothing. |
//! | `palisade_breaker_rejections_total` | counter | calls | `name` | Calls rejected with `CircuitOpen` (open, forced open, or half-open with every probe slot taken). |
//! | `palisade_breaker_state` | gauge | state code | `name` | The breaker's state after its last transition: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled. Unkeyed breakers only (a keyed breaker has a state per key). |
//! | `palisade_breaker_transitions_total` | counter | transitions | `name`, `to` = `closed` \| `open` \| `half-open` \| `forced-open` \| `disabled` | State transitions, by the state entered (keyed breakers: summed over keys). |
//! | `palisade_breaker_keys` | gauge | keys | `name` | Keyed breakers: breakers held (one per key, placeholders included), updated as keys are added and evicted. |
//! | `palisade_retry_attempts_total` | counter | requests | `name` | Attempts sent to the inner service, first attempts included. |
//! | `palisade_retry_retries_total` | counter | requests | `name` | Retries sent (attempts after the first). |
//! | `palisade_retry_budget_refusals_total` | counter | retries | `name` | Retries not sent because the retry budget was empty. |
//! | `palisade_retry_budget_balance` | gauge | retries | `name` | Retries the budget allows now, set when a retry is withdrawn from it or refused by it (a layer with a budget). |
//! | `palisade_retry_delay_seconds` | histogram | seconds | `name` | The delay before each scheduled retry (backoff, a server's hint, or a local rejection's `retry_after`). |
//! | `palisade_ratelimit_admitted_total` | counter | requests | `name` | Requests a rate limiter admitted. |
//! | `palisade_ratelimit_refused_total` | counter | requests | `name`, `reason` = `limited` \| `capacity` \| `unknown_key` | Refusals: over the limit now (`RateLimited`, also a Redis limiter's fail-closed answer while Redis is down), a cost above the capacity (`InsufficientCapacity`), no client key (`UnknownKey`). |
//! | `palisade_ratelimit_keys` | gauge | keys | `name` | Keyed in-memory limiters: keys held, updated as keys are added and evicted. |
//! | `palisade_ratelimit_wait_seconds` | histogram | seconds | `name` | Wait mode: how long each admitted request waited for its turn (0 when admitted at once). |
//! | `palisade_batch_items_total` | counter | items | `name`, `outcome` = `fulfilled` \| `rejected` | Items of settled batches (timed-out items are rejected). |
//! | `palisade_batch_duration_seconds` | histogram | seconds | `name` | From a batch's call to its last item settled. Only for layers built with `.time_batches()` (two clock reads per batch: off by default, to keep the path where nothing goes wrong within a few nanoseconds). |
//! | `palisade_concurrency_limit` | gauge | calls | `name` | The adaptive concurrency limit, set when built and on each change. |
//! | `palisade_concurrency_rejections_total` | counter | calls | `name` | Calls refused with `Overloaded`. |
//! | `palisade_throttle_refusals_total` | counter | calls | `name` | Calls an adaptive throttle refused locally with `Throttled`. |
//!
//! [`ALL`] lists these names; palisade's tests check that each is emitted.
//!
//! # Cost
//!
//! A handle update is an atomic add in the usual recorders; with no
//! recorder it is a branch on a `None`. The success path updates only
//! counters (and, in wait mode, one histogram); gauges move on transitions,
//! refusals and limit changes.

use std::borrow::Cow;

use metrics::{Counter, Gauge, Histogram, Unit};

use crate::circuit_breaker::State;
use crate::classify::Outcome;

/// A metric of the table above: name, type and unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// The metric's name.
    pub name: &'static str,
    /// `"counter"`, `"gauge"` or `"histogram"`.
    pub kind: &'static str,
    /// What it counts or measures.
    pub unit: &'static str,
}

macro_rules! metrics_table {
    ($($konst:ident = $name:literal, $kind:literal, $unit:literal;)*) => {
        $(
            #[doc = concat!("`", $name, "` (", $kind, ", ", $unit, ").")]
            pub const $konst: &str = $name;
        )*
        /// Every metric palisade emits, in the table's order.
        pub const ALL: &[Metric] = &[$(Metric { name: $name, kind: $kind, unit: $unit }),*];
    };
}

metrics_table! {
    BREAKER_CALLS = "palisade_breaker_calls_total", "counter", "calls";
    BREAKER_REJECTIONS = "palisade_breaker_rejections_total", "counter", "calls";
    BREAKER_STATE = "palisade_breaker_state", "gauge", "state code";
    BREAKER_TRANSITIONS = "palisade_breaker_transitions_total", "counter", "transitions";
    BREAKER_KEYS = "palisade_breaker_keys", "gauge", "keys";
    RETRY_ATTEMPTS = "palisade_retry_attempts_total", "counter", "requests";
    RETRY_RETRIES = "palisade_retry_retries_total", "counter", "requests";
    RETRY_BUDGET_REFUSALS = "palisade_retry_budget_refusals_total", "counter", "retries";
    RETRY_BUDGET_BALANCE = "palisade_retry_budget_balance", "gauge", "retries";
    RETRY_DELAY = "palisade_retry_delay_seconds", "histogram", "seconds";
    RATELIMIT_ADMITTED = "palisade_ratelimit_admitted_total", "counter", "requests";
    RATELIMIT_REFUSED = "palisade_ratelimit_refused_total", "counter", "requests";
    RATELIMIT_KEYS = "palisade_ratelimit_keys", "gauge", "keys";
    RATELIMIT_WAIT = "palisade_ratelimit_wait_seconds", "histogram", "seconds";
    BATCH_ITEMS = "palisade_batch_items_total", "counter", "items";
    BATCH_DURATION = "palisade_batch_duration_seconds", "histogram", "seconds";
    CONCURRENCY_LIMIT = "palisade_concurrency_limit", "gauge", "calls";
    CONCURRENCY_REJECTIONS = "palisade_concurrency_rejections_total", "counter", "calls";
    THROTTLE_REFUSALS = "palisade_throttle_refusals_total", "counter", "calls";
}

/// The `name` label's value.
pub(crate) type Name = Cow<'static, str>;

fn counter(
    metric: &'static str,
    name: &Name,
    extra: Option<(&'static str, &'static str)>,
) -> Counter {
    let name = name.to_string();
    match extra {
        Some((k, v)) => metrics::counter!(metric, "name" => name, k => v),
        None => metrics::counter!(metric, "name" => name),
    }
}

fn gauge(metric: &'static str, name: &Name) -> Gauge {
    metrics::gauge!(metric, "name" => name.to_string())
}

fn histogram(metric: &'static str, name: &Name) -> Histogram {
    metrics::histogram!(metric, "name" => name.to_string())
}

fn describe(metric: &'static str, unit: Unit, text: &'static str) {
    let m = ALL.iter().find(|m| m.name == metric).map_or("", |m| m.kind);
    match m {
        "gauge" => metrics::describe_gauge!(metric, unit, text),
        "histogram" => metrics::describe_histogram!(metric, unit, text),
        _ => metrics::describe_counter!(metric, unit, text),
    }
}

/// A circuit breaker's handles.
#[derive(Debug)]
pub(crate) struct BreakerMetrics {
    success: Counter,
    failure: Counter,
    ignored: Counter,
    rejections: Counter,
    state: Gauge,
    transitions: [Counter; 5],
}

fn state_index(state: State) -> usize {
    match state {
        State::Closed => 0,
        State::Open => 1,
        State::HalfOpen => 2,
        State::ForcedOpen => 3,
        State::Disabled => 4,
    }
}

impl BreakerMetrics {
    /// `keyed`: no state gauge (a state per key).
    pub(crate) fn new(name: &Name, keyed: bool) -> Self {
        describe(
            BREAKER_CALLS,
            Unit::Count,
            "Outcomes of the calls a breaker admitted",
        );
        describe(
            BREAKER_REJECTIONS,
            Unit::Count,
            "Calls rejected with CircuitOpen",
        );
        describe(
            BREAKER_TRANSITIONS,
            Unit::Count,
            "Breaker state transitions, by state entered",
        );
        let outcome = |v| counter(BREAKER_CALLS, name, Some(("outcome", v)));
        let to = |v| counter(BREAKER_TRANSITIONS, name, Some(("to", v)));
        let state = if keyed {
            Gauge::noop()
        } else {
            describe(
                BREAKER_STATE,
                Unit::Count,
                "Breaker state: 0 closed, 1 open, 2 half-open, 3 forced open, 4 disabled",
            );
            let g = gauge(BREAKER_STATE, name);
            g.set(0.0);
            g
        };
        Self {
            success: outcome("success"),
            failure: outcome("failure"),
            ignored: outcome("ignored"),
            rejections: counter(BREAKER_REJECTIONS, name, None),
            state,
            transitions: ["closed", "open", "half-open", "forced-open", "disabled"].map(to),
        }
    }

    /// Handles that report nothing (a breaker made only to check settings).
    pub(crate) fn noop() -> Self {
        Self {
            success: Counter::noop(),
            failure: Counter::noop(),
            ignored: Counter::noop(),
            rejections: Counter::noop(),
            state: Gauge::noop(),
            transitions: [const { Counter::noop() }; 5],
        }
    }

    #[inline]
    pub(crate) fn outcome(&self, outcome: Outcome) {
        match outcome {
            Outcome::Success => &self.success,
            Outcome::Failure => &self.failure,
            Outcome::Ignored => &self.ignored,
        }
        .increment(1);
    }

    pub(crate) fn rejected(&self) {
        self.rejections.increment(1);
    }

    pub(crate) fn transition(&self, to: State) {
        let i = state_index(to);
        self.transitions[i].increment(1);
        self.state.set(i as f64);
    }
}

/// A gauge of keys held (keyed breakers and rate limiters).
#[derive(Debug)]
pub(crate) struct KeysGauge(Gauge);

impl KeysGauge {
    pub(crate) fn noop() -> Self {
        Self(Gauge::noop())
    }

    pub(crate) fn breaker(name: &Name) -> Self {
        describe(BREAKER_KEYS, Unit::Count, "Keyed breakers: breakers held");
        Self(gauge(BREAKER_KEYS, name))
    }

    pub(crate) fn rate_limit(name: &Name) -> Self {
        describe(
            RATELIMIT_KEYS,
            Unit::Count,
            "Keyed rate limiters: keys held",
        );
        Self(gauge(RATELIMIT_KEYS, name))
    }

    pub(crate) fn added(&self) {
        self.0.increment(1.0);
    }

    pub(crate) fn removed(&self, n: usize) {
        if n > 0 {
            self.0.decrement(n as f64);
        }
    }
}

/// A retry layer's handles.
#[derive(Debug)]
pub(crate) struct RetryMetrics {
    attempts: Counter,
    retries: Counter,
    budget_refusals: Counter,
    budget_balance: Gauge,
    delay: Histogram,
}

impl RetryMetrics {
    pub(crate) fn new(name: &Name, budget: bool) -> Self {
        describe(
            RETRY_ATTEMPTS,
            Unit::Count,
            "Attempts sent, first attempts included",
        );
        describe(RETRY_RETRIES, Unit::Count, "Retries sent");
        describe(
            RETRY_BUDGET_REFUSALS,
            Unit::Count,
            "Retries refused by the retry budget",
        );
        describe(
            RETRY_DELAY,
            Unit::Seconds,
            "Delay before each scheduled retry",
        );
        let budget_balance = if budget {
            describe(
                RETRY_BUDGET_BALANCE,
                Unit::Count,
                "Retries the budget allows now",
            );
            gauge(RETRY_BUDGET_BALANCE, name)
        } else {
            Gauge::noop()
        };
        Self {
            attempts: counter(RETRY_ATTEMPTS, name, None),
            retries: counter(RETRY_RETRIES, name, None),
            budget_refusals: counter(RETRY_BUDGET_REFUSALS, name, None),
            budget_balance,
            delay: histogram(RETRY_DELAY, name),
        }
    }

    #[inline]
    pub(crate) fn attempt(&self) {
        self.attempts.increment(1);
    }

    pub(crate) fn retry_sent(&self) {
        self.attempts.increment(1);
        self.retries.increment(1);
    }

    pub(crate) fn scheduled(&self, delay_nanos: u64) {
        self.delay.record(delay_nanos as f64 / 1e9);
    }

    pub(crate) fn budget_refused(&self, balance: impl FnOnce() -> u64) {
        self.budget_refusals.increment(1);
        self.budget_balance.set(balance() as f64);
    }

    pub(crate) fn budget_balance(&self, balance: impl FnOnce() -> u64) {
        self.budget_balance.set(balance() as f64);
    }
}

/// Why a rate limiter refused, as the `reason` label says it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RefusedReason {
    Limited,
    Capacity,
    UnknownKey,
}

/// A rate limiter's handles.
#[derive(Debug)]
pub(crate) struct RateLimitMetrics {
    admitted: Counter,
    refused: [Counter; 3],
    wait: Histogram,
}

impl RateLimitMetrics {
    pub(crate) fn new(name: &Name, wait: bool) -> Self {
        describe(
            RATELIMIT_ADMITTED,
            Unit::Count,
            "Requests a rate limiter admitted",
        );
        describe(
            RATELIMIT_REFUSED,
            Unit::Count,
            "Requests a rate limiter refused, by reason",
        );
        let wait = if wait {
            describe(
                RATELIMIT_WAIT,
                Unit::Seconds,
                "Wait mode: time each admitted request waited",
            );
            histogram(RATELIMIT_WAIT, name)
        } else {
            Histogram::noop()
        };
        Self {
            admitted: counter(RATELIMIT_ADMITTED, name, None),
            refused: ["limited", "capacity", "unknown_key"]
                .map(|r| counter(RATELIMIT_REFUSED, name, Some(("reason", r)))),
            wait,
        }
    }

    pub(crate) fn noop() -> Self {
        Self {
            admitted: Counter::noop(),
            refused: [const { Counter::noop() }; 3],
            wait: Histogram::noop(),
        }
    }

    #[inline]
    pub(crate) fn admitted(&self) {
        self.admitted.increment(1);
    }

    pub(crate) fn refused(&self, reason: RefusedReason) {
        self.refused[reason as usize].increment(1);
    }

    #[inline]
    pub(crate) fn waited(&self, nanos: u64) {
        self.wait.record(nanos as f64 / 1e9);
    }
}

/// A batch layer's handles.
#[derive(Debug)]
pub(crate) struct BatchMetrics {
    fulfilled: Counter,
    rejected: Counter,
    duration: Histogram,
    timed: bool,
}

impl BatchMetrics {
    /// `timed`: the layer times its batches (`.time_batches()`).
    pub(crate) fn new(name: &Name, timed: bool) -> Self {
        describe(
            BATCH_ITEMS,
            Unit::Count,
            "Items of settled batches, by outcome",
        );
        let duration = if timed {
            describe(
                BATCH_DURATION,
                Unit::Seconds,
                "From a batch's call to its last item settled",
            );
            histogram(BATCH_DURATION, name)
        } else {
            Histogram::noop()
        };
        Self {
            fulfilled: counter(BATCH_ITEMS, name, Some(("outcome", "fulfilled"))),
            rejected: counter(BATCH_ITEMS, name, Some(("outcome", "rejected"))),
            duration,
            timed,
        }
    }

    pub(crate) fn settled(&self, fulfilled: usize, rejected: usize, seconds: Option<f64>) {
        self.fulfilled.increment(fulfilled as u64);
        self.rejected.increment(rejected as u64);
        if let Some(s) = seconds {
            self.duration.record(s);
        }
    }

    /// Whether a batch should read the clock to time itself.
    #[inline]
    pub(crate) fn timed(&self) -> bool {
        self.timed
    }
}

/// An adaptive concurrency limit's handles.
#[derive(Debug)]
pub(crate) struct ConcurrencyMetrics {
    limit: Gauge,
    rejections: Counter,
}

impl ConcurrencyMetrics {
    pub(crate) fn new(name: &Name, initial: u32) -> Self {
        describe(
            CONCURRENCY_LIMIT,
            Unit::Count,
            "The adaptive concurrency limit",
        );
        describe(
            CONCURRENCY_REJECTIONS,
            Unit::Count,
            "Calls refused with Overloaded",
        );
        let limit = gauge(CONCURRENCY_LIMIT, name);
        limit.set(f64::from(initial));
        Self {
            limit,
            rejections: counter(CONCURRENCY_REJECTIONS, name, None),
        }
    }

    #[cfg(all(test, palisade_loom))]
    pub(crate) fn noop() -> Self {
        Self {
            limit: Gauge::noop(),
            rejections: Counter::noop(),
        }
    }

    pub(crate) fn limit(&self, limit: u32) {
        self.limit.set(f64::from(limit));
    }

    pub(crate) fn rejected(&self) {
        self.rejections.increment(1);
    }
}

/// An adaptive throttle's handles.
#[derive(Debug)]
pub(crate) struct ThrottleMetrics {
    refusals: Counter,
}

impl ThrottleMetrics {
    pub(crate) fn new(name: &Name) -> Self {
        describe(
            THROTTLE_REFUSALS,
            Unit::Count,
            "Calls an adaptive throttle refused",
        );
        Self {
            refusals: counter(THROTTLE_REFUSALS, name, None),
        }
    }

    pub(crate) fn refused(&self) {
        self.refusals.increment(1);
    }
}
