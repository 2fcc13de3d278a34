//! What the limiter reads from a request: its key and its cost.

use std::fmt;
use std::hash::Hash;

/// Reads the key a keyed limiter counts a request under.
///
/// Implemented by [`Unkeyed`] (one limit for all), every closure
/// `Fn(&Req) -> Key`, and `http::ClientIp` (feature `http`); set one with
/// [`RateLimitBuilder::keyed`](super::RateLimitBuilder::keyed).
pub trait KeyExtractor<Req> {
    /// The key; hashed once per request under the limiter's random seed.
    type Key: Hash;
    /// The key of `req`.
    fn extract(&self, req: &Req) -> Self::Key;
}

/// One limit shared by every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unkeyed;

impl<Req> KeyExtractor<Req> for Unkeyed {
    type Key = ();
    #[inline]
    fn extract(&self, _: &Req) {}
}

/// Any closure `Fn(&Req) -> K` is a key extractor.
///
/// Take keys only from what a client cannot choose freely: the leftmost
/// `X-Forwarded-For` entry is set by the client (PITFALLS: tower_governor's
/// `SmartIpKeyExtractor`); use the peer address, or the entry your own proxy
/// appended (`http::ClientIp`, feature `http`, does exactly that).
impl<Req, F, K> KeyExtractor<Req> for F
where
    F: Fn(&Req) -> K,
    K: Hash,
{
    type Key = K;
    #[inline]
    fn extract(&self, req: &Req) -> K {
        self(req)
    }
}

/// Reads what a request costs in the limiter's units.
pub trait Cost<Req> {
    /// The cost of `req`.
    fn cost(&self, req: &Req) -> u64;
}

/// Every request costs 1.
#[derive(Debug, Clone, Copy, Default)]
pub struct PerRequest;

impl<Req> Cost<Req> for PerRequest {
    #[inline]
    fn cost(&self, _: &Req) -> u64 {
        1
    }
}

/// A cost function from a closure, set with
/// [`RateLimitBuilder::cost`](super::RateLimitBuilder::cost).
#[derive(Clone, Copy)]
pub struct CostBy<F>(pub(crate) F);

impl<F> fmt::Debug for CostBy<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CostBy(..)")
    }
}

impl<Req, F> Cost<Req> for CostBy<F>
where
    F: Fn(&Req) -> u64,
{
    #[inline]
    fn cost(&self, req: &Req) -> u64 {
        (self.0)(req)
    }
}
