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
    /// Whether `key` identifies the request's client. The default, for
    /// closures too, is [`KeyStatus::Known`]; `http::ClientIp` answers
    /// [`KeyStatus::Unknown`] for `ClientKey::Unknown`, or
    /// [`KeyStatus::Refuse`] when it was told to refuse such requests.
    #[inline]
    fn status(&self, key: &Self::Key) -> KeyStatus {
        let _ = key;
        KeyStatus::Known
    }
}

/// What a [`KeyExtractor`] says of a key it produced, read by a keyed
/// limiter for each request.
///
/// An unknown key is a request the extractor could not tell apart from
/// others (no peer address, no trustworthy header): every such request
/// shares one limit, which is how a misconfiguration pools every client into
/// one bucket. The limiter counts them
/// ([`RateLimitHandle::unknown_key_requests`](super::RateLimitHandle::unknown_key_requests)),
/// whatever the status says to do with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyStatus {
    /// The key identifies the client: limited under its own key.
    Known,
    /// No client identified: limited under the key every such request
    /// shares, and counted.
    Unknown,
    /// No client identified, and the extractor is strict: refused with
    /// [`UnknownKey`](super::UnknownKey) without being limited, and counted.
    Refuse,
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
