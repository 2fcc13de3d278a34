//! What an algorithm answers, shared by every algorithm and every store.

use crate::clock::Nanos;

/// One algorithm's answer for one request: a pure value, so the same
/// arithmetic serves the lock-free cell, the keyed map and (later) a Redis
/// script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision<S> {
    /// Admitted: store `state`; the request conforms at `at` (`>= now`,
    /// later than `now` only when the caller allowed a wait).
    Admit {
        /// The state to store.
        state: S,
        /// When the request conforms.
        at: Nanos,
    },
    /// Not now: admitted `retry_after` nanoseconds from now (never 0).
    Deny {
        /// Nanoseconds until the request would conform.
        retry_after: Nanos,
        /// Capacity left now, in cost units.
        remaining: u64,
    },
    /// Never: the cost is above the algorithm's capacity.
    Never,
}
