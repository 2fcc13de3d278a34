//! Client-IP keys for the keyed rate limiter: [`ClientIp`] and
//! [`ClientKey`]; the reasoning is in [`ClientIp`]'s docs.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};

use http::header::{FORWARDED, HeaderName};
use http::{Extensions, HeaderMap, Request};

use crate::rate_limit::{KeyExtractor, KeyStatus};

// `X-Forwarded-For` and `X-Real-IP` are not in `http`'s list of standard names.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// Longer than any address form accepted (`[v6%zone]:port`): refused
/// before parsing.
const MAX_NODE_LEN: usize = 96;

/// The key a request is limited under: its client's address, or the one
/// shared key for requests whose client is not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientKey {
    /// The client's address: IPv4, or IPv6 cut to the configured prefix
    /// (the prefix's first address, e.g. `2001:db8:1:2::` for a `/64`).
    Ip(IpAddr),
    /// No trustworthy address: every such request shares this one key
    /// (counted by a keyed limiter, refused with
    /// [`ClientIp::refuse_unknown`]).
    Unknown,
}

impl ClientKey {
    /// The address, if known.
    pub const fn ip(&self) -> Option<IpAddr> {
        match self {
            Self::Ip(ip) => Some(*ip),
            Self::Unknown => None,
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(ip) => ip.fmt(f),
            Self::Unknown => f.write_str("unknown"),
        }
    }
}

/// An IPv6 prefix length above 128.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("IPv6 prefix length {0} is above 128")]
pub struct InvalidPrefixLength(pub u8);

/// Reads a request's client address from the one source you trust, as the
/// key of a keyed rate limiter.
///
/// Give it to [`RateLimitBuilder::keyed`](crate::rate_limit::RateLimitBuilder::keyed)
/// as it is (`.keyed(ClientIp::peer())`: it is a [`KeyExtractor`] for every
/// `http::Request<B>`), or call [`key`](Self::key) from your own closure. Cheap to copy; reading a key allocates nothing.
///
/// # Why not the leftmost `X-Forwarded-For` entry
///
/// Every proxy *appends* the address of the peer it saw, so the list reads
/// `client-written…, seen by the 1st proxy, …, seen by the last but one`.
/// Anything left of what your own proxies wrote is whatever the client sent:
/// keying on the leftmost entry (tower_governor's `SmartIpKeyExtractor`,
/// adorsys/status-list-server #262) lets a client pick a fresh key, and so a
/// fresh limit, for every request. [`ClientIp`] counts from the *right*
/// instead: behind `n` trusted proxies the client is the `n`-th entry from
/// the right, the address your outermost proxy saw.
///
/// # Design
///
/// - **One source, chosen by you.** There is no "header if present, else
///   peer" chain: a fallback from one source to another lets the client
///   choose which one is read (send a header the proxy does not set, or
///   leave out one it does).
/// - **Nothing trustworthy → [`ClientKey::Unknown`]**: a missing peer
///   address, a missing header, fewer entries than trusted proxies, or an
///   entry that is not an address (`unknown`, an obfuscated `_node`,
///   garbage). All such requests share *one* limit, so sending garbage can
///   never mint keys; the price is that they throttle each other, which is
///   also how a misconfiguration shows up (every client limited together):
///   so it is warned about, counted, and can be refused (see
///   [below](ClientIp#when-no-client-is-identified)).
/// - **IPv6 by prefix.** A single subscriber usually holds a whole `/64`
///   and picks addresses from it at will, so by default an IPv6 address is
///   keyed by its `/64` ([`ipv6_prefix`](ClientIp::ipv6_prefix) changes it;
///   `128` keys each address). IPv4-mapped IPv6 (`::ffff:a.b.c.d`, what a
///   dual-stack socket reports for IPv4 peers) is turned back into IPv4
///   first; otherwise every IPv4 client would fall into one `/64`.
/// - **Hostile input never panics**, allocates nothing and is read from the
///   right, so what a client writes to the left of your proxies' entries
///   cannot change how those are read: not extra header lines (they
///   concatenate in order), not empty list elements (skipped, as RFC 9110
///   says), not an unterminated quote in `Forwarded`. Entries are parsed
///   from bytes (non-UTF-8 is simply not an address); accepted forms are
///   `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`,
///   `[2001:db8::1]:80` and zones (`fe80::1%eth0`, zone dropped). Obfuscated
///   IPv4 (`0x7f.1`, `2130706433`, `127.1`, leading zeros) is refused.
///
/// # Trusting a header
///
/// `x_forwarded_for(n)`, `forwarded(n)` and `x_real_ip()` are only sound if
/// the proxies append to (or, for `X-Real-IP`, overwrite) the header, and
/// *every* request reaches the server through them. If the server can also
/// be reached directly, a client doing so writes the header itself: say
/// which peers are your proxies with [`proxied_by`](ClientIp::proxied_by),
/// and any other peer is taken as the client, its headers ignored. Behind no
/// proxy, use [`ClientIp::peer`].
///
/// # The peer address
///
/// [`ClientIp::peer`] reads the connection's peer address where servers
/// put it, with no configuration:
///
/// | server | extension | needs |
/// |---|---|---|
/// | axum, `axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())` | `axum::extract::ConnectInfo<SocketAddr>` | palisade's feature `axum` (axum 0.8) |
/// | tonic, `Server::builder()…serve(addr)` (also with tonic's TLS) | `tonic::transport::server::TcpConnectInfo` | palisade's feature `tonic` |
/// | hyper or your own accept loop | a plain [`SocketAddr`] | nothing |
///
/// The features only let palisade *name* those types (axum's
/// `ConnectInfo` needs axum's `tokio` feature, tonic's `TcpConnectInfo`
/// tonic's `server` feature, both of which a server using them has on
/// already); palisade does not depend on axum otherwise. Anywhere else
/// (axum served without `into_make_service_with_connect_info`, tonic over
/// `serve_with_incoming` with your own TLS stream, whose extension is
/// `TlsConnectInfo<TcpConnectInfo>`), tell [`ClientIp`] where to look with
/// [`peer_from`](ClientIp::peer_from):
///
/// ```
/// use palisade::http::ClientIp;
/// use std::net::SocketAddr;
/// # #[derive(Clone)] struct MyConnInfo { remote: SocketAddr }
///
/// let client_ip = ClientIp::peer()
///     .peer_from(|ext| ext.get::<MyConnInfo>().map(|info| info.remote));
/// # let _ = client_ip;
/// ```
///
/// # When no client is identified
///
/// A request for which no address is found is keyed
/// [`ClientKey::Unknown`], and every such request shares one limit: behind a
/// misconfigured server, every client throttles every other. So it is never
/// silent:
/// - the first one in the process logs a `tracing` warning naming the fix;
/// - a keyed limiter counts them:
///   [`RateLimitHandle::unknown_key_requests`](crate::rate_limit::RateLimitHandle::unknown_key_requests);
/// - [`refuse_unknown`](ClientIp::refuse_unknown) makes the limiter refuse
///   them instead, with [`UnknownKey`](crate::rate_limit::UnknownKey) (a
///   `500` from the HTTP error layer; a local rejection for classifiers).
///
/// # Example
///
/// ```
/// use palisade::RateLimitLayer;
/// use palisade::http::{ClientIp, ClientKey};
/// use std::time::Duration;
///
/// # fn main() -> Result<(), palisade::BoxError> {
/// // One reverse proxy in front of the server, appending to X-Forwarded-For.
/// let client_ip = ClientIp::x_forwarded_for(1);
/// let limiter = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
///     .keyed(client_ip)
///     .build()?;
/// # let _ = limiter;
///
/// // The client forged the first entry; the proxy appended what it saw.
/// let request = http::Request::builder()
///     .header("x-forwarded-for", "6.6.6.6, 203.0.113.7")
///     .body(String::new())?;
/// assert_eq!(client_ip.key(&request), ClientKey::Ip([203, 0, 113, 7].into()));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy)]
pub struct ClientIp {
    source: Source,
    /// Kept bits of an IPv6 address.
    ipv6_mask: u128,
    peer: fn(&Extensions) -> Option<SocketAddr>,
    /// Which peers may set the header; `None`: every peer.
    is_proxy: Option<fn(IpAddr) -> bool>,
    /// Strict: the limiter refuses a request keyed [`ClientKey::Unknown`].
    refuse_unknown: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Peer,
    XForwardedFor(NonZeroUsize),
    Forwarded(NonZeroUsize),
    XRealIp,
}

impl fmt::Debug for ClientIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientIp")
            .field("source", &self.source)
            .field("ipv6_prefix", &self.ipv6_mask.count_ones())
            .field("proxied_by", &self.is_proxy.is_some())
            .field("refuse_unknown", &self.refuse_unknown)
            .finish_non_exhaustive()
    }
}

/// The peer address where servers put it; see "The peer address" in
/// [`ClientIp`]'s docs. Each lookup is one `TypeId` probe of the
/// extensions' map.
fn peer_address(extensions: &Extensions) -> Option<SocketAddr> {
    if let Some(addr) = extensions.get::<SocketAddr>() {
        return Some(*addr);
    }
    #[cfg(feature = "axum")]
    if let Some(axum::extract::ConnectInfo(addr)) =
        extensions.get::<axum::extract::ConnectInfo<SocketAddr>>()
    {
        return Some(*addr);
    }
    // tonic inserts `TcpConnectInfo` for TLS connections too, beside
    // `TlsConnectInfo<TcpConnectInfo>`.
    #[cfg(feature = "tonic")]
    if let Some(addr) = extensions
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(|info| info.remote_addr)
    {
        return Some(addr);
    }
    None
}

/// Why a request was keyed [`ClientKey::Unknown`], for the one warning.
#[derive(Debug, Clone, Copy)]
enum Unknown {
    NoPeer,
    NoHeaderAddress,
}

static WARNED_NO_PEER: AtomicBool = AtomicBool::new(false);
static WARNED_NO_HEADER_ADDRESS: AtomicBool = AtomicBool::new(false);

/// Warns the first time in the process a request is keyed unknown for
/// `why`: the sign of a misconfiguration, once, naming the fix. A client
/// can trigger the header one at will, hence once, never per request.
#[cold]
#[inline(never)]
fn warn_once(why: Unknown, source: Source) {
    let flag = match why {
        Unknown::NoPeer => &WARNED_NO_PEER,
        Unknown::NoHeaderAddress => &WARNED_NO_HEADER_ADDRESS,
    };
    if flag.load(Ordering::Relaxed) || flag.swap(true, Ordering::Relaxed) {
        return;
    }
    match why {
        Unknown::NoPeer => tracing::warn!(
            ?source,
            "palisade ClientIp found no peer address in a request's extensions: such requests \
             share one rate limit (ClientKey::Unknown). Behind axum, serve \
             `app.into_make_service_with_connect_info::<SocketAddr>()` and enable palisade's \
             `axum` feature; behind tonic, enable palisade's `tonic` feature; elsewhere, say \
             where the address is with `ClientIp::peer_from`. Logged once; \
             `RateLimitHandle::unknown_key_requests` counts them, \
             `ClientIp::refuse_unknown` refuses them."
        ),
        Unknown::NoHeaderAddress => tracing::warn!(
            ?source,
            "palisade ClientIp found no usable address where the configured header should \
             hold it: such requests share one rate limit (ClientKey::Unknown). Check that \
             every request reaches the server through as many proxies as configured, each \
             appending (X-Forwarded-For, Forwarded) or setting (X-Real-IP) the address it \
             saw; if clients can also reach the server directly, say which peers are your \
             proxies with `ClientIp::proxied_by`. Logged once; \
             `RateLimitHandle::unknown_key_requests` counts them, \
             `ClientIp::refuse_unknown` refuses them."
        ),
    }
}

impl ClientIp {
    const fn with(source: Source) -> Self {
        Self {
            source,
            ipv6_mask: prefix_mask(64),
            peer: peer_address,
            is_proxy: None,
            refuse_unknown: false,
        }
    }

    /// The peer address of the connection, found where axum, tonic and
    /// hyper-based servers put it (see
    /// [the peer address](Self#the-peer-address)), or wherever
    /// [`peer_from`](Self::peer_from) says. For a server no proxy stands in
    /// front of.
    pub const fn peer() -> Self {
        Self::with(Source::Peer)
    }

    /// The `X-Forwarded-For` entry `trusted_proxies` from the right: the
    /// address your outermost proxy saw, behind `trusted_proxies` proxies
    /// that each append the address of their peer. `0` trusts no proxy and
    /// is [`peer`](Self::peer). Fewer entries than `trusted_proxies` give
    /// [`ClientKey::Unknown`].
    pub const fn x_forwarded_for(trusted_proxies: usize) -> Self {
        match NonZeroUsize::new(trusted_proxies) {
            Some(n) => Self::with(Source::XForwardedFor(n)),
            None => Self::peer(),
        }
    }

    /// The `for=` of the RFC 7239 `Forwarded` element `trusted_proxies` from
    /// the right, as for [`x_forwarded_for`](Self::x_forwarded_for). An
    /// element without an address `for=` (`unknown`, an obfuscated
    /// `_node`, none at all) gives [`ClientKey::Unknown`].
    pub const fn forwarded(trusted_proxies: usize) -> Self {
        match NonZeroUsize::new(trusted_proxies) {
            Some(n) => Self::with(Source::Forwarded(n)),
            None => Self::peer(),
        }
    }

    /// The `X-Real-IP` header, for a nearest proxy that *overwrites* it
    /// (nginx's `proxy_set_header X-Real-IP $remote_addr`). More than one
    /// such header, or a list, gives [`ClientKey::Unknown`].
    pub const fn x_real_ip() -> Self {
        Self::with(Source::XRealIp)
    }

    /// Keys IPv6 clients by their first `bits` bits (default 64: one
    /// subscriber usually holds a `/64`); 128 keys every address
    /// separately. IPv4 addresses are always whole.
    pub const fn ipv6_prefix(mut self, bits: u8) -> Result<Self, InvalidPrefixLength> {
        if bits > 128 {
            return Err(InvalidPrefixLength(bits));
        }
        self.ipv6_mask = prefix_mask(bits);
        Ok(self)
    }

    /// Where the peer address is, replacing the default lookup (a
    /// [`SocketAddr`], axum's `ConnectInfo<SocketAddr>` with feature
    /// `axum`, tonic's `TcpConnectInfo` with feature `tonic`). Used by
    /// [`peer`](Self::peer), by [`proxied_by`](Self::proxied_by) and by a
    /// trust of 0 proxies.
    pub const fn peer_from(mut self, peer: fn(&Extensions) -> Option<SocketAddr>) -> Self {
        self.peer = peer;
        self
    }

    /// Reads the header only from a peer for which `is_proxy` holds (given
    /// the peer's canonical address: IPv4-mapped IPv6 as IPv4). Any other
    /// peer reached the server directly and is itself the client; without a
    /// peer address the key is [`ClientKey::Unknown`]. No effect on
    /// [`peer`](Self::peer).
    ///
    /// ```
    /// use palisade::http::{ClientIp, ClientKey};
    /// use std::net::{IpAddr, SocketAddr};
    ///
    /// // The proxy runs on the same host.
    /// let client_ip = ClientIp::x_forwarded_for(1).proxied_by(|peer| peer.is_loopback());
    ///
    /// let mut direct = http::Request::new(());
    /// direct.headers_mut().insert("x-forwarded-for", "6.6.6.6".parse().unwrap());
    /// direct.extensions_mut().insert(SocketAddr::from(([192, 0, 2, 1], 4000)));
    /// assert_eq!(client_ip.key(&direct), ClientKey::Ip([192, 0, 2, 1].into()));
    /// ```
    pub const fn proxied_by(mut self, is_proxy: fn(IpAddr) -> bool) -> Self {
        self.is_proxy = Some(is_proxy);
        self
    }

    /// Strict mode: a keyed rate limiter refuses a request keyed
    /// [`ClientKey::Unknown`] with
    /// [`UnknownKey`](crate::rate_limit::UnknownKey) (answered `500` by the
    /// HTTP error layer) instead of limiting it under the key every such
    /// request shares. For a server that must always know its peer: a
    /// missing address is then a loud error, not one bucket for everyone.
    ///
    /// ```
    /// use palisade::RateLimitLayer;
    /// use palisade::http::ClientIp;
    /// use palisade::rate_limit::UnknownKey;
    /// use std::time::Duration;
    /// use tower::{ServiceBuilder, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), palisade::BoxError> {
    /// let limiter = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
    ///     .keyed(ClientIp::peer().refuse_unknown())
    ///     .build()?;
    /// let handle = limiter.handle();
    /// let svc = ServiceBuilder::new()
    ///     .layer(limiter)
    ///     .service_fn(|_req: http::Request<()>| async { Ok::<_, palisade::BoxError>("hi") });
    ///
    /// // No peer address anywhere in the extensions: refused, and counted.
    /// let err = svc.oneshot(http::Request::new(())).await.unwrap_err();
    /// assert!(err.is::<UnknownKey>());
    /// assert_eq!(handle.unknown_key_requests(), 1);
    /// # Ok(()) }
    /// ```
    pub const fn refuse_unknown(mut self) -> Self {
        self.refuse_unknown = true;
        self
    }

    /// The key of `request`.
    pub fn key<B>(&self, request: &Request<B>) -> ClientKey {
        self.key_from_parts(request.headers(), request.extensions())
    }

    /// The key of a request with these headers and extensions (for
    /// [`http::request::Parts`] or a framework's own request type).
    pub fn key_from_parts(&self, headers: &HeaderMap, extensions: &Extensions) -> ClientKey {
        if let (Some(is_proxy), false) = (self.is_proxy, self.source == Source::Peer) {
            match (self.peer)(extensions).map(|addr| addr.ip().to_canonical()) {
                Some(peer) if is_proxy(peer) => {}
                Some(client) => return ClientKey::Ip(self.normalise(client)),
                None => return self.unknown(Unknown::NoPeer),
            }
        }
        let ip = match self.source {
            Source::Peer => (self.peer)(extensions).map(|addr| addr.ip()),
            Source::XForwardedFor(n) => {
                nth_from_right(headers, &X_FORWARDED_FOR, n).and_then(parse_node)
            }
            Source::Forwarded(n) => nth_from_right(headers, &FORWARDED, n).and_then(forwarded_for),
            Source::XRealIp => single_value(headers, &X_REAL_IP).and_then(parse_node),
        };
        match ip {
            Some(ip) => ClientKey::Ip(self.normalise(ip)),
            None if self.source == Source::Peer => self.unknown(Unknown::NoPeer),
            None => self.unknown(Unknown::NoHeaderAddress),
        }
    }

    /// This extractor as a closure over `http::Request<B>` (name `B` if it
    /// cannot be inferred), for code that wants an `Fn` rather than a
    /// [`KeyExtractor`]. A limiter keyed by the closure neither counts
    /// unknown keys nor honours [`refuse_unknown`](Self::refuse_unknown)
    /// (a closure's keys are all known to it); the warning is still logged.
    pub fn into_fn<B>(self) -> impl Fn(&Request<B>) -> ClientKey + Clone + Send + Sync {
        move |request| self.key(request)
    }

    #[cold]
    fn unknown(&self, why: Unknown) -> ClientKey {
        warn_once(why, self.source);
        ClientKey::Unknown
    }

    fn normalise(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V4(v4) => IpAddr::V4(v4),
            IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & self.ipv6_mask)),
        }
    }
}

impl<B> KeyExtractor<Request<B>> for ClientIp {
    type Key = ClientKey;

    fn extract(&self, request: &Request<B>) -> ClientKey {
        self.key(request)
    }

    #[inline]
    fn status(&self, key: &ClientKey) -> KeyStatus {
        match (key, self.refuse_unknown) {
            (ClientKey::Ip(_), _) => KeyStatus::Known,
            (ClientKey::Unknown, false) => KeyStatus::Unknown,
            (ClientKey::Unknown, true) => KeyStatus::Refuse,
        }
    }
}

const fn prefix_mask(bits: u8) -> u128 {
    match bits {
        0 => 0,
        1..=127 => u128::MAX << (128 - bits),
        _ => u128::MAX,
    }
}

/// The `n`-th non-empty element from the right of a comma-separated list
/// header, over all its lines in order. Read from the right so nothing the
/// client wrote to the left can shift the count.
fn nth_from_right<'h>(
    headers: &'h HeaderMap,
    name: &HeaderName,
    n: NonZeroUsize,
) -> Option<&'h [u8]> {
    let mut left = n.get();
    for line in headers.get_all(name).iter().rev() {
        for element in line.as_bytes().rsplit(|&b| b == b',') {
            if element.trim_ascii().is_empty() {
                continue;
            }
            left -= 1;
            if left == 0 {
                return Some(element);
            }
        }
    }
    None
}

/// The header's value if it occurs exactly once.
fn single_value<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h [u8]> {
    let mut values = headers.get_all(name).iter();
    let value = values.next()?;
    values.next().is_none().then(|| value.as_bytes())
}

/// The address of a `Forwarded` element's `for=`; `None` if it has none,
/// more than one, or one that is not an address.
fn forwarded_for(element: &[u8]) -> Option<IpAddr> {
    let mut found = None;
    for pair in element.split(|&b| b == b';') {
        let pair = pair.trim_ascii();
        if pair.is_empty() {
            continue;
        }
        let eq = pair.iter().position(|&b| b == b'=')?;
        if pair[..eq].trim_ascii().eq_ignore_ascii_case(b"for") {
            if found.is_some() {
                return None;
            }
            found = Some(pair[eq + 1..].trim_ascii());
        }
    }
    let value = found?;
    let value = match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    };
    // A quoted-pair or stray quote never occurs in an address.
    if value.iter().any(|&b| b == b'"' || b == b'\\') {
        return None;
    }
    parse_node(value)
}

/// One address as proxies write it: `1.2.3.4`, `1.2.3.4:80`,
/// `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`, with an optional
/// IPv6 zone (`%eth0`, dropped). Anything else is `None`.
fn parse_node(raw: &[u8]) -> Option<IpAddr> {
    let raw = raw.trim_ascii();
    if raw.is_empty() || raw.len() > MAX_NODE_LEN {
        return None;
    }
    let text = std::str::from_utf8(raw).ok()?;
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        if !after.is_empty() && !is_port(after.strip_prefix(':')?) {
            return None;
        }
        return parse_ipv6_zoned(inner).map(IpAddr::V6);
    }
    if text.contains('%') {
        return parse_ipv6_zoned(text).map(IpAddr::V6);
    }
    // IPv4 with a port: exactly one colon (an IPv6 address has several).
    let (host, port) = text.split_once(':')?;
    if is_port(port) {
        host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else {
        None
    }
}

fn parse_ipv6_zoned(text: &str) -> Option<Ipv6Addr> {
    let (address, zone) = match text.split_once('%') {
        Some((address, zone)) => (address, Some(zone)),
        None => (text, None),
    };
    if let Some(zone) = zone {
        let valid = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
        if zone.is_empty() || !zone.bytes().all(valid) {
            return None;
        }
    }
    address.parse().ok()
}

fn is_port(text: &str) -> bool {
    (1..=5).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_digit())
        && text.parse::<u16>().is_ok()
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> Option<IpAddr> {
        Some(IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
    }

    fn v6(text: &str) -> Option<IpAddr> {
        Some(IpAddr::V6(text.parse().unwrap()))
    }

    #[test]
    fn parse_node_accepts_the_forms_proxies_write() {
        assert_eq!(parse_node(b"1.2.3.4"), v4(1, 2, 3, 4));
        assert_eq!(parse_node(b" \t1.2.3.4 "), v4(1, 2, 3, 4));
        assert_eq!(parse_node(b"1.2.3.4:8080"), v4(1, 2, 3, 4));
        assert_eq!(parse_node(b"2001:db8::1"), v6("2001:db8::1"));
        assert_eq!(parse_node(b"[2001:db8::1]"), v6("2001:db8::1"));
        assert_eq!(parse_node(b"[2001:db8::1]:443"), v6("2001:db8::1"));
        assert_eq!(parse_node(b"fe80::1%eth0"), v6("fe80::1"));
        assert_eq!(parse_node(b"[fe80::1%25]:1"), v6("fe80::1"));
        assert_eq!(parse_node(b"::ffff:1.2.3.4"), v6("::ffff:1.2.3.4"));
    }

    #[test]
    fn parse_node_refuses_garbage_and_obfuscated_forms() {
        for raw in [
            &b""[..],
            b"   ",
            b"unknown",
            b"_hidden",
            b"localhost",
            b"0x7f.0.0.1",
            b"2130706433",
            b"127.1",
            b"010.0.0.1",
            b"1.2.3.4.5",
            b"1.2.3.256",
            b"1.2.3.4:",
            b"1.2.3.4:65536",
            b"1.2.3.4:80:80",
            b"1.2.3.4:-1",
            b"1.2.3.4 5.6.7.8",
            b"[1.2.3.4]",
            b"[2001:db8::1",
            b"[2001:db8::1]x",
            b"[2001:db8::1]:",
            b"2001:db8::1%",
            b"fe80::1%e th0",
            b"1.2.3.4%eth0",
            b"\xff\xfe1.2.3.4",
            b"1.2.3.4\x00",
        ] {
            assert_eq!(parse_node(raw), None, "{:?}", String::from_utf8_lossy(raw));
        }
        let long = format!("{}1.2.3.4", " ".repeat(10_000));
        assert_eq!(
            parse_node(long.as_bytes()),
            v4(1, 2, 3, 4),
            "whitespace trimmed"
        );
        let long = format!("1.2.3.4{}", "0".repeat(MAX_NODE_LEN));
        assert_eq!(parse_node(long.as_bytes()), None);
    }

    #[test]
    fn forwarded_for_reads_one_address_for() {
        assert_eq!(
            forwarded_for(b"for=192.0.2.60;proto=http;by=203.0.113.43"),
            v4(192, 0, 2, 60)
        );
        assert_eq!(
            forwarded_for(b" For = \"192.0.2.60:80\" "),
            v4(192, 0, 2, 60)
        );
        assert_eq!(
            forwarded_for(b"FOR=\"[2001:db8:cafe::17]:4711\""),
            v6("2001:db8:cafe::17")
        );
        assert_eq!(
            forwarded_for(b"proto=https;for=\"[2001:db8::1]\""),
            v6("2001:db8::1")
        );
        for bad in [
            &b"for=unknown"[..],
            b"for=_hidden",
            b"for=\"_SEVKISEK\"",
            b"proto=http;by=1.2.3.4",
            b"for=1.2.3.4;for=5.6.7.8",
            b"for=\"1.2.3.4",
            b"for=\"1.2.\\3.4\"",
            b"for",
            b"garbage",
            b"",
        ] {
            assert_eq!(
                forwarded_for(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn prefix_masks() {
        assert_eq!(prefix_mask(0), 0);
        assert_eq!(prefix_mask(1), 1 << 127);
        assert_eq!(prefix_mask(64), u128::MAX << 64);
        assert_eq!(prefix_mask(128), u128::MAX);
        assert_eq!(
            ClientIp::peer().ipv6_prefix(129).unwrap_err(),
            InvalidPrefixLength(129)
        );
        assert_eq!(
            ClientIp::peer().ipv6_prefix(255).unwrap_err(),
            InvalidPrefixLength(255)
        );
    }

    #[test]
    fn nth_from_right_concatenates_lines_and_skips_empty_elements() {
        let mut headers = HeaderMap::new();
        headers.append(X_FORWARDED_FOR, "a, ,b,".parse().unwrap());
        headers.append(X_FORWARDED_FOR, "".parse().unwrap());
        headers.append(X_FORWARDED_FOR, "c ,, d".parse().unwrap());
        let nth = |n| {
            nth_from_right(&headers, &X_FORWARDED_FOR, NonZeroUsize::new(n).unwrap())
                .map(<[u8]>::trim_ascii)
        };
        assert_eq!(nth(1), Some(&b"d"[..]));
        assert_eq!(nth(2), Some(&b"c"[..]));
        assert_eq!(nth(3), Some(&b"b"[..]));
        assert_eq!(nth(4), Some(&b"a"[..]));
        assert_eq!(nth(5), None);
        assert_eq!(nth(usize::MAX), None);
    }
}
