//! RateLimit header fields (IETF draft `draft-ietf-httpapi-ratelimit-headers`,
//! the revision with the two structured fields `RateLimit-Policy` and
//! `RateLimit`): what an admitted request leaves of the quota, stamped on
//! its response.
//!
//! The limiter picks its header behaviour by type: [`NoHeaders`] (the
//! default) stamps nothing and computes nothing, so a limiter without
//! headers runs exactly the code it ran before; [`RateLimitHeaders`]
//! (feature `http`, set with
//! [`RateLimitBuilder::headers`](super::RateLimitBuilder::headers)) computes
//! the quota from the state the admission stored and writes both fields.

use std::time::Duration;

use crate::clock::Nanos;

/// A limiter's quota right after one decision: what the `RateLimit` field
/// reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The policy's quota (`q`): the token bucket's burst.
    pub limit: u64,
    /// Units left now (`r`).
    pub remaining: u64,
    /// Time until one more unit is available (`t`, sent in whole seconds,
    /// rounded up).
    pub reset: Duration,
}

/// A limiter's named policy for the `RateLimit` header fields (opaque),
/// validated by `build()`: the name is a structured-field String made of
/// printable ASCII.
///
/// Allocated once per `build()` with `.headers(..)` and kept for the life of
/// the program (a few dozen bytes per layer built): a `&'static` keeps
/// [`RateLimited`](super::RateLimited) free of drop glue, so limiters
/// without headers pay nothing for the field on their hot path.
#[derive(Debug, PartialEq, Eq)]
pub struct Policy {
    /// The policy's name, as given.
    pub(crate) name: Box<str>,
    /// The quota `q`.
    pub(crate) quota: u64,
    /// The window `w`, in whole seconds (at least 1).
    pub(crate) window: u64,
}

// Rendered by the `http` feature's header writer.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
impl Policy {
    /// Whether `name` can be sent as a structured-field String (RFC 9651
    /// §3.3.3: printable ASCII, 0x20 to 0x7E).
    pub(crate) fn valid_name(name: &str) -> bool {
        name.bytes().all(|b| (0x20..=0x7e).contains(&b))
    }

    /// The name as a structured-field String: quoted, `"` and `\` escaped.
    fn quoted_name(&self, out: &mut String) {
        out.push('"');
        for c in self.name.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }

    /// The `RateLimit-Policy` field value: `"name";q=Q;w=W`.
    pub(crate) fn policy_value(&self) -> String {
        let mut out = String::with_capacity(self.name.len() + 32);
        self.quoted_name(&mut out);
        out.push_str(&format!(";q={};w={}", self.quota, self.window));
        out
    }

    /// The `RateLimit` field value: `"name";r=R;t=T`.
    pub(crate) fn limit_value(&self, remaining: u64, reset: Duration) -> String {
        let mut out = String::with_capacity(self.name.len() + 32);
        self.quoted_name(&mut out);
        out.push_str(&format!(";r={};t={}", remaining, ceil_secs(reset)));
        out
    }
}

/// Whole seconds, rounded up (a client told 0 would come back too early).
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Structured-field Integers stop at 999,999,999,999,999 (RFC 9651
/// §3.3.1); larger values are capped there.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) const SF_INTEGER_MAX: u64 = 999_999_999_999_999;

/// The token bucket's quota after an admission stored `tat` for a request
/// conforming at `at`: units left at `at`, and the time until one more.
#[inline]
pub(crate) fn gcra_quota(burst: u64, t: Nanos, b: Nanos, tat: Nanos, at: Nanos) -> Quota {
    // Capacity available at `at`, in nanoseconds of the bucket.
    let available = at.saturating_add(b).saturating_sub(tat.max(at));
    let remaining = available / t;
    // The next whole unit is available when `available` reaches
    // `(remaining + 1) * t`; a full bucket gains nothing more.
    let reset = if remaining >= burst {
        0
    } else {
        (remaining + 1) * t - available
    };
    Quota {
        limit: burst,
        remaining,
        reset: Duration::from_nanos(reset),
    }
}

mod sealed {
    use super::Policy;

    /// Keeps the header behaviours to this crate's own.
    pub trait Sealed {
        /// The behaviour for a limiter with this policy (`None`: no headers).
        fn from_policy(policy: Option<&'static Policy>) -> Self;
    }
}
pub(crate) use sealed::Sealed;

/// What a rate limiter writes on admitted responses: [`NoHeaders`] or
/// [`RateLimitHeaders`]. Sealed.
pub trait ResponseHeaders: Sealed + Clone {
    /// What an admission leaves for its response.
    type Stamp;

    /// The stamp for one admission; `quota` reads the limiter's state and is
    /// called only by behaviours that write headers.
    fn stamp(&self, quota: impl FnOnce() -> Option<Quota>) -> Self::Stamp;
}

/// Writes an admission's stamp on its response of type `T`. Sealed.
pub trait ApplyStamp<T>: Sealed {
    /// Writes the stamp on the response.
    fn apply(self, response: &mut T);
}

/// No rate limit headers (the default): nothing computed, nothing written.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHeaders;

impl Sealed for NoHeaders {
    fn from_policy(_: Option<&'static Policy>) -> Self {
        NoHeaders
    }
}

impl ResponseHeaders for NoHeaders {
    type Stamp = ();

    #[inline(always)]
    fn stamp(&self, _: impl FnOnce() -> Option<Quota>) -> Self::Stamp {}
}

impl Sealed for () {
    fn from_policy(_: Option<&'static Policy>) -> Self {}
}

impl<T> ApplyStamp<T> for () {
    #[inline(always)]
    fn apply(self, _: &mut T) {}
}

/// `RateLimit-Policy` and `RateLimit` on every admitted response (feature
/// `http`); set with
/// [`RateLimitBuilder::headers`](super::RateLimitBuilder::headers).
#[derive(Debug, Clone)]
pub struct RateLimitHeaders {
    policy: Option<&'static Policy>,
}

impl Sealed for RateLimitHeaders {
    fn from_policy(policy: Option<&'static Policy>) -> Self {
        Self { policy }
    }
}

impl ResponseHeaders for RateLimitHeaders {
    type Stamp = HeaderStamp;

    #[inline]
    fn stamp(&self, quota: impl FnOnce() -> Option<Quota>) -> Self::Stamp {
        HeaderStamp(self.policy.and_then(|policy| Some((policy, quota()?))))
    }
}

/// The quota one admission left, carried by its response future to its
/// response ([`RateLimitHeaders`]).
#[derive(Debug, Default)]
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub struct HeaderStamp(Option<(&'static Policy, Quota)>);

impl Sealed for HeaderStamp {
    fn from_policy(_: Option<&'static Policy>) -> Self {
        HeaderStamp(None)
    }
}

#[cfg(feature = "http")]
mod http_impl {
    use http::{HeaderMap, HeaderName, HeaderValue, Response};

    use super::{ApplyStamp, HeaderStamp, Policy, Quota, SF_INTEGER_MAX};

    /// `RateLimit-Policy`.
    pub(crate) static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
    /// `RateLimit`.
    pub(crate) static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

    /// Writes both fields for `policy` and `quota` (replacing any there).
    pub(crate) fn insert(headers: &mut HeaderMap, policy: &Policy, quota: &Quota) {
        let remaining = quota.remaining.min(SF_INTEGER_MAX);
        let reset = quota
            .reset
            .min(std::time::Duration::from_secs(SF_INTEGER_MAX));
        // Printable ASCII only (checked by `build()`), so both are valid
        // header values.
        if let (Ok(p), Ok(r)) = (
            HeaderValue::from_str(&policy.policy_value()),
            HeaderValue::from_str(&policy.limit_value(remaining, reset)),
        ) {
            headers.insert(RATELIMIT_POLICY.clone(), p);
            headers.insert(RATELIMIT.clone(), r);
        }
    }

    impl<B> ApplyStamp<Response<B>> for HeaderStamp {
        fn apply(self, response: &mut Response<B>) {
            if let Some((policy, quota)) = self.0 {
                insert(response.headers_mut(), policy, &quota);
            }
        }
    }
}
#[cfg(feature = "http")]
pub(crate) use http_impl::insert;

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    const S: Nanos = 1_000_000_000;

    fn policy(name: &str) -> Policy {
        Policy {
            name: name.into(),
            quota: 100,
            window: 10,
        }
    }

    /// The draft's own example: `RateLimit-Policy: "default";q=100;w=10`.
    #[test]
    fn renders_the_drafts_policy_example() {
        assert_eq!(policy("default").policy_value(), r#""default";q=100;w=10"#);
    }

    /// The draft's own example: `RateLimit: "default";r=50;t=30`.
    #[test]
    fn renders_the_drafts_ratelimit_example() {
        let p = policy("default");
        assert_eq!(
            p.limit_value(50, Duration::from_secs(30)),
            r#""default";r=50;t=30"#
        );
        // Sub-second remainders round up, never down to 0.
        assert_eq!(
            p.limit_value(0, Duration::from_nanos(1)),
            r#""default";r=0;t=1"#
        );
    }

    #[test]
    fn escapes_quotes_and_backslashes() {
        assert_eq!(policy(r#"a"b\c"#).policy_value(), r#""a\"b\\c";q=100;w=10"#);
        assert!(Policy::valid_name(r#"a "b" \c ~"#));
        assert!(!Policy::valid_name("caf\u{e9}"));
        assert!(!Policy::valid_name("tab\there"));
    }

    /// Burst 3 at 1 per second: after one admission at 0, two left, the
    /// next unit in 1 s; after three, none left and the next in 1 s.
    #[test]
    fn gcra_quota_counts_units_and_time_to_the_next() {
        let (t, b) = (S, 3 * S);
        let q = gcra_quota(3, t, b, S, 0);
        assert_eq!((q.remaining, q.reset), (2, Duration::from_secs(1)));
        let q = gcra_quota(3, t, b, 3 * S, 0);
        assert_eq!((q.remaining, q.reset), (0, Duration::from_secs(1)));
        // Half a unit refilled: 0 left, the next in 0.5 s.
        let q = gcra_quota(3, t, b, 3 * S, S / 2);
        assert_eq!((q.remaining, q.reset), (0, Duration::from_millis(500)));
        // An idle (full) bucket gains nothing more.
        let q = gcra_quota(3, t, b, 0, 10 * S);
        assert_eq!((q.remaining, q.reset), (3, Duration::ZERO));
    }
}
