//! The two modes of a limiter, as types: what a refused request does is
//! known when the layer is built, and only wait mode needs a clonable inner
//! service (its response future calls a clone of it after the wait).

/// Reject mode (the default): a request over the limit fails at once with
/// [`RateLimited`](super::RateLimited). See
/// [the module docs](super#where-the-decision-is-taken).
#[derive(Debug, Clone, Copy, Default)]
pub struct Reject;

/// Wait mode, set by [`RateLimitBuilder::wait`](super::RateLimitBuilder::wait):
/// a request over the limit waits up to a bound before going on. See
/// [the module docs](super#wait-mode).
#[derive(Debug, Clone, Copy, Default)]
pub struct Wait;
