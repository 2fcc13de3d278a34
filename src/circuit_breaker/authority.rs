//! [`Authority`]: the key extractor for a breaker per upstream host of an
//! HTTP client.

use http::uri;

use crate::rate_limit::KeyExtractor;

/// Keys an `http::Request` by its upstream authority (`host[:port]`):
/// the URI's authority, as a client such as hyper's sends it, or else the
/// `Host` header, as a server or proxy receives it.
///
/// The key is an `Option<http::uri::Authority>`, which hashes host names
/// case-insensitively. A request with neither (or an unparsable `Host`)
/// has the key `None`: all such requests share one breaker, which a
/// client whose requests always carry absolute URIs never uses.
///
/// For a breaker per route, key by method and path template yourself (the
/// raw path would give each id its own breaker), e.g. with axum's
/// `MatchedPath`: `.keyed(|r: &Request<Body>| r.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()))`.
///
/// ```
/// use palisade::CircuitBreakerLayer;
/// use palisade::circuit_breaker::Authority;
///
/// let layer = CircuitBreakerLayer::consecutive_failures(5)
///     .keyed(Authority)
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), palisade::circuit_breaker::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Authority;

impl<B> KeyExtractor<http::Request<B>> for Authority {
    type Key = Option<uri::Authority>;

    #[inline]
    fn extract(&self, req: &http::Request<B>) -> Self::Key {
        if let Some(authority) = req.uri().authority() {
            return Some(authority.clone());
        }
        let host = req.headers().get(http::header::HOST)?;
        uri::Authority::try_from(host.as_bytes()).ok()
    }
}
