//! Client-IP keys: the trusted source and nothing else decides the key,
//! hostile headers never panic nor mint keys, and behind axum each client
//! gets its own limit that a forged `X-Forwarded-For` cannot escape.
#![cfg(feature = "http")]

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, StatusCode};
use axum::routing::get;
use palisade::RateLimitLayer;
use palisade::http::{ClientIp, ClientKey, ErrorResponseLayer};
use palisade::rate_limit::RateLimitHandle;
use proptest::prelude::*;
use tower::{ServiceBuilder, ServiceExt};

const PROXY: &str = "10.0.0.1:443";

fn ip(text: &str) -> ClientKey {
    ClientKey::Ip(text.parse().unwrap())
}

/// A request from `peer` with the given header lines, in order.
fn request(peer: Option<&str>, headers: &[(&'static str, &[u8])]) -> Request<Body> {
    let mut req = Request::new(Body::empty());
    for (name, value) in headers {
        req.headers_mut()
            .append(*name, HeaderValue::from_bytes(value).unwrap());
    }
    if let Some(peer) = peer {
        req.extensions_mut()
            .insert(peer.parse::<SocketAddr>().unwrap());
    }
    req
}

fn xff(lines: &[&str]) -> Request<Body> {
    let headers: Vec<_> = lines
        .iter()
        .map(|l| ("x-forwarded-for", l.as_bytes()))
        .collect();
    request(Some(PROXY), &headers)
}

#[test]
fn peer_is_the_socket_addr_extension_and_ignores_headers() {
    let peer = ClientIp::peer();
    let req = request(
        Some("192.0.2.9:5555"),
        &[
            ("x-forwarded-for", b"1.1.1.1"),
            ("x-real-ip", b"2.2.2.2"),
            ("forwarded", b"for=3.3.3.3"),
        ],
    );
    assert_eq!(peer.key(&req), ip("192.0.2.9"));
    // No peer address: the shared unknown key, not a panic.
    assert_eq!(
        peer.key(&request(None, &[("x-forwarded-for", b"1.1.1.1")])),
        ClientKey::Unknown
    );
}

/// What `axum::serve(.., app.into_make_service_with_connect_info::<SocketAddr>())`
/// stores: axum's `ConnectInfo<SocketAddr>`, not a bare `SocketAddr`.
#[cfg(feature = "axum")]
#[test]
fn peer_reads_axum_connect_info_without_configuration() {
    let mut req = Request::new(Body::empty());
    req.extensions_mut().insert(ConnectInfo(
        "[2001:db8::7]:80".parse::<SocketAddr>().unwrap(),
    ));
    assert_eq!(ClientIp::peer().key(&req), ip("2001:db8::"));
    // The peer of a trust of 0 proxies and of `proxied_by` is found too.
    assert_eq!(ClientIp::x_forwarded_for(0).key(&req), ip("2001:db8::"));
    let via_proxy = ClientIp::x_forwarded_for(1).proxied_by(|peer| peer.is_loopback());
    let mut direct = xff(&["6.6.6.6"]);
    direct.extensions_mut().remove::<SocketAddr>();
    direct
        .extensions_mut()
        .insert(ConnectInfo("192.0.2.1:9".parse::<SocketAddr>().unwrap()));
    assert_eq!(via_proxy.key(&direct), ip("192.0.2.1"));
}

/// What tonic's server stores, for plain TCP and (beside its
/// `TlsConnectInfo`) for TLS connections: `TcpConnectInfo`.
#[cfg(feature = "tonic")]
#[test]
fn peer_reads_tonic_tcp_connect_info_without_configuration() {
    use tonic::transport::server::TcpConnectInfo;
    let mut req = Request::new(Body::empty());
    req.extensions_mut().insert(TcpConnectInfo {
        local_addr: Some("127.0.0.1:50051".parse().unwrap()),
        remote_addr: Some("192.0.2.44:40000".parse().unwrap()),
    });
    assert_eq!(ClientIp::peer().key(&req), ip("192.0.2.44"));
    // A connection tonic could not read the peer of: unknown, not the local address.
    let mut req = Request::new(Body::empty());
    req.extensions_mut().insert(TcpConnectInfo {
        local_addr: Some("127.0.0.1:50051".parse().unwrap()),
        remote_addr: None,
    });
    assert_eq!(ClientIp::peer().key(&req), ClientKey::Unknown);
}

/// Without palisade's `axum` feature, axum's extension cannot be named:
/// unknown (and warned about, counted), unless `peer_from` says where.
#[test]
fn peer_from_replaces_the_default_lookup() {
    #[derive(Clone)]
    struct OwnConnInfo {
        remote: SocketAddr,
    }
    let mut req = Request::new(Body::empty());
    req.extensions_mut().insert(OwnConnInfo {
        remote: "192.0.2.8:1".parse().unwrap(),
    });
    assert_eq!(ClientIp::peer().key(&req), ClientKey::Unknown);
    let own = ClientIp::peer().peer_from(|ext| ext.get::<OwnConnInfo>().map(|c| c.remote));
    assert_eq!(own.key(&req), ip("192.0.2.8"));
    // It replaces the default: a bare SocketAddr is no longer read.
    let bare = request(Some("192.0.2.9:1"), &[]);
    assert_eq!(own.key(&bare), ClientKey::Unknown);

    let mut axum_req = Request::new(Body::empty());
    axum_req
        .extensions_mut()
        .insert(ConnectInfo("192.0.2.7:1".parse::<SocketAddr>().unwrap()));
    let axum_peer =
        ClientIp::peer().peer_from(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0));
    assert_eq!(axum_peer.key(&axum_req), ip("192.0.2.7"));
    #[cfg(not(feature = "axum"))]
    assert_eq!(ClientIp::peer().key(&axum_req), ClientKey::Unknown);
}

#[test]
fn x_forwarded_for_counts_trusted_proxies_from_the_right() {
    // client forged "6.6.6.6"; proxies saw 203.0.113.7, then 10.1.1.1, then 10.2.2.2.
    let req = xff(&["6.6.6.6, 203.0.113.7, 10.1.1.1, 10.2.2.2"]);
    assert_eq!(ClientIp::x_forwarded_for(1).key(&req), ip("10.2.2.2"));
    assert_eq!(ClientIp::x_forwarded_for(3).key(&req), ip("203.0.113.7"));
    assert_eq!(ClientIp::x_forwarded_for(4).key(&req), ip("6.6.6.6"));
    // Fewer entries than trusted proxies: not the leftmost, the unknown key.
    assert_eq!(ClientIp::x_forwarded_for(5).key(&req), ClientKey::Unknown);
    assert_eq!(
        ClientIp::x_forwarded_for(usize::MAX).key(&req),
        ClientKey::Unknown
    );
    // No header at all.
    assert_eq!(
        ClientIp::x_forwarded_for(1).key(&request(Some(PROXY), &[])),
        ClientKey::Unknown
    );
    // Trusting 0 proxies reads the peer, never the header.
    assert_eq!(ClientIp::x_forwarded_for(0).key(&req), ip("10.0.0.1"));
    assert_eq!(ClientIp::forwarded(0).key(&req), ip("10.0.0.1"));
}

#[test]
fn forged_leftmost_entries_never_change_the_key() {
    let trusted = ClientIp::x_forwarded_for(1);
    let mut keys = HashSet::new();
    for forged in ["", "1.2.3.4", "1.2.3.4, 5.6.7.8", "garbage", ",,,", "::1"] {
        let line = format!("{forged}, 198.51.100.4");
        keys.insert(trusted.key(&xff(&[&line])));
        // The same, as a separate header line the client sent first.
        keys.insert(trusted.key(&xff(&[forged, "198.51.100.4"])));
    }
    assert_eq!(keys, HashSet::from([ip("198.51.100.4")]));
}

#[test]
fn proxied_by_reads_headers_only_from_proxy_peers() {
    let behind = ClientIp::x_forwarded_for(1).proxied_by(|peer| peer.is_loopback());
    let line: &[(&str, &[u8])] = &[("x-forwarded-for", b"6.6.6.6, 203.0.113.7")];
    // Through the proxy: the entry it appended.
    assert_eq!(
        behind.key(&request(Some("127.0.0.1:9"), line)),
        ip("203.0.113.7")
    );
    // IPv4-mapped loopback is loopback.
    assert_eq!(
        behind.key(&request(Some("[::ffff:127.0.0.1]:9"), line)),
        ip("203.0.113.7")
    );
    // Straight to the server: the peer is the client, its header ignored.
    assert_eq!(
        behind.key(&request(Some("192.0.2.1:9"), line)),
        ip("192.0.2.1")
    );
    assert_eq!(
        behind.key(&request(Some("[2001:db8::5]:9"), line)),
        ip("2001:db8::")
    );
    // No peer address: cannot tell, the unknown key.
    assert_eq!(behind.key(&request(None, line)), ClientKey::Unknown);
    // Same for Forwarded and X-Real-IP.
    let fwd: &[(&str, &[u8])] = &[
        ("forwarded", b"for=203.0.113.7"),
        ("x-real-ip", b"203.0.113.7"),
    ];
    for config in [ClientIp::forwarded(1), ClientIp::x_real_ip()] {
        let config = config.proxied_by(|peer| peer.is_loopback());
        assert_eq!(
            config.key(&request(Some("127.0.0.1:9"), fwd)),
            ip("203.0.113.7")
        );
        assert_eq!(
            config.key(&request(Some("192.0.2.1:9"), fwd)),
            ip("192.0.2.1")
        );
    }
    // No effect on peer().
    assert_eq!(
        ClientIp::peer()
            .proxied_by(|_| true)
            .key(&request(Some("192.0.2.1:9"), line)),
        ip("192.0.2.1")
    );
}

#[test]
fn header_lines_concatenate_and_empty_elements_do_not_count() {
    let req = xff(&["6.6.6.6,", "", " ,203.0.113.7 ,", "10.1.1.1"]);
    assert_eq!(ClientIp::x_forwarded_for(1).key(&req), ip("10.1.1.1"));
    assert_eq!(ClientIp::x_forwarded_for(2).key(&req), ip("203.0.113.7"));
    assert_eq!(ClientIp::x_forwarded_for(3).key(&req), ip("6.6.6.6"));
    assert_eq!(ClientIp::x_forwarded_for(4).key(&req), ClientKey::Unknown);
}

#[test]
fn garbage_in_the_trusted_position_is_the_one_unknown_key() {
    let trusted = ClientIp::x_forwarded_for(1);
    let garbage: [&[u8]; 13] = [
        b"unknown",
        b"_hidden",
        b"localhost",
        b"0x7f.0.0.1",
        b"2130706433",
        b"127.1",
        b"010.0.0.1",
        b"1.2.3.4:99999",
        b"[2001:db8::1",
        b"1.2.3.4 5.6.7.8",
        b"\xff\xfe\x80",
        b"1.2.3.\xc3\xa9",
        b"\"1.2.3.4\"",
    ];
    for g in garbage {
        let req = request(Some(PROXY), &[("x-forwarded-for", g)]);
        assert_eq!(
            trusted.key(&req),
            ClientKey::Unknown,
            "{:?}",
            String::from_utf8_lossy(g)
        );
    }
    // A thousand distinct garbage values: one key between them.
    let keys: HashSet<_> = (0..1000)
        .map(|i| trusted.key(&xff(&[&format!("1.2.3.4, host-{i}")])))
        .collect();
    assert_eq!(keys, HashSet::from([ClientKey::Unknown]));
}

#[test]
fn address_forms_with_ports_brackets_and_zones() {
    let trusted = ClientIp::x_forwarded_for(1).ipv6_prefix(128).unwrap();
    for (entry, key) in [
        ("203.0.113.7:51234", "203.0.113.7"),
        ("[2001:db8::1]:443", "2001:db8::1"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("2001:db8::1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
        ("[fe80::1%25]:80", "fe80::1"),
        // A dual-stack socket's view of an IPv4 client is the IPv4 address.
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("[::ffff:203.0.113.7]:1", "203.0.113.7"),
    ] {
        assert_eq!(trusted.key(&xff(&[entry])), ip(key), "{entry}");
    }
}

#[test]
fn hostile_sizes_are_read_from_the_right_without_panicking() {
    let trusted = ClientIp::x_forwarded_for(2);
    // One huge line: 100k forged entries, then two proxy entries.
    let mut line = "9.9.9.9,".repeat(100_000);
    line.push_str("203.0.113.7, 10.1.1.1");
    assert_eq!(trusted.key(&xff(&[&line])), ip("203.0.113.7"));
    // Ten thousand header lines.
    let mut lines = vec!["9.9.9.9"; 10_000];
    lines.extend(["203.0.113.7", "10.1.1.1"]);
    assert_eq!(trusted.key(&xff(&lines)), ip("203.0.113.7"));
    // Ten thousand empty elements between the proxy entries.
    let line = format!("203.0.113.7{}10.1.1.1", ", ".repeat(10_000));
    assert_eq!(trusted.key(&xff(&[&line])), ip("203.0.113.7"));
    // A huge entry in the trusted position.
    let line = format!("{}, 10.1.1.1", "1".repeat(100_000));
    assert_eq!(trusted.key(&xff(&[&line])), ClientKey::Unknown);
}

#[test]
fn forwarded_reads_for_from_the_right() {
    let fwd = |lines: &[&str]| {
        let headers: Vec<_> = lines.iter().map(|l| ("forwarded", l.as_bytes())).collect();
        request(Some(PROXY), &headers)
    };
    let req = fwd(&[
        "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https",
        "For=198.51.100.4;by=10.0.0.1",
    ]);
    assert_eq!(ClientIp::forwarded(1).key(&req), ip("198.51.100.4"));
    assert_eq!(
        ClientIp::forwarded(2).ipv6_prefix(128).unwrap().key(&req),
        ip("2001:db8:cafe::17")
    );
    assert_eq!(ClientIp::forwarded(3).key(&req), ip("6.6.6.6"));
    assert_eq!(ClientIp::forwarded(4).key(&req), ClientKey::Unknown);
    // Unknown, obfuscated or missing `for=` in the trusted element.
    for element in [
        "for=unknown",
        "for=_hidden",
        "for=\"_x\"",
        "proto=http",
        "x",
    ] {
        assert_eq!(
            ClientIp::forwarded(1).key(&fwd(&[element])),
            ClientKey::Unknown,
            "{element}"
        );
    }
    // An unterminated quote written by the client cannot swallow what the
    // proxy appended after it.
    let req = fwd(&["for=\"6.6.6.6, for=198.51.100.4"]);
    assert_eq!(ClientIp::forwarded(1).key(&req), ip("198.51.100.4"));
    // Forwarded ignores X-Forwarded-For and vice versa.
    let req = request(Some(PROXY), &[("x-forwarded-for", b"1.1.1.1")]);
    assert_eq!(ClientIp::forwarded(1).key(&req), ClientKey::Unknown);
}

#[test]
fn x_real_ip_needs_exactly_one_address() {
    let real = ClientIp::x_real_ip();
    let one = request(Some(PROXY), &[("x-real-ip", b" 198.51.100.4 ")]);
    assert_eq!(real.key(&one), ip("198.51.100.4"));
    for headers in [
        &[][..],
        &[("x-real-ip", &b"1.1.1.1"[..]), ("x-real-ip", b"2.2.2.2")],
        &[("x-real-ip", b"1.1.1.1, 2.2.2.2")],
        &[("x-real-ip", b"garbage")],
        &[("x-forwarded-for", b"1.1.1.1")],
    ] {
        assert_eq!(real.key(&request(Some(PROXY), headers)), ClientKey::Unknown);
    }
}

#[test]
fn ipv6_is_keyed_by_its_64_by_default() {
    let by64 = ClientIp::x_forwarded_for(1);
    let a = by64.key(&xff(&["2001:db8:1:2::1"]));
    let b = by64.key(&xff(&["2001:db8:1:2:ffff:ffff:ffff:ffff"]));
    let other = by64.key(&xff(&["2001:db8:1:3::1"]));
    assert_eq!(a, ip("2001:db8:1:2::"));
    assert_eq!(a, b);
    assert_ne!(a, other);
    // IPv4 stays whole, including IPv4-mapped IPv6: distinct IPv4 clients of
    // a dual-stack socket must not share the ::ffff:0:0 /64.
    assert_ne!(
        by64.key(&xff(&["::ffff:1.2.3.4"])),
        by64.key(&xff(&["::ffff:1.2.3.5"]))
    );
    assert_eq!(by64.key(&xff(&["1.2.3.4"])), ip("1.2.3.4"));

    let by128 = ClientIp::x_forwarded_for(1).ipv6_prefix(128).unwrap();
    assert_ne!(
        by128.key(&xff(&["2001:db8:1:2::1"])),
        by128.key(&xff(&["2001:db8:1:2::2"]))
    );
    let by48 = ClientIp::x_forwarded_for(1).ipv6_prefix(48).unwrap();
    assert_eq!(by48.key(&xff(&["2001:db8:1:ffff::1"])), ip("2001:db8:1::"));
    let by0 = ClientIp::x_forwarded_for(1).ipv6_prefix(0).unwrap();
    assert_eq!(by0.key(&xff(&["2001:db8::1"])), ip("::"));
    assert!(ClientIp::peer().ipv6_prefix(129).is_err());
}

/// Bytes a header value may hold (visible ASCII, space, tab, obs-text).
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(b"0123456789abcdef.:,;=[]%\" _-for".to_vec()),
            1 => 0x20u8..=0x7e,
            1 => 0x80u8..=0xff,
            1 => Just(b'\t'),
        ],
        0..80,
    )
}

fn all_configs(trust: usize) -> [ClientIp; 8] {
    [
        ClientIp::x_forwarded_for(trust).proxied_by(|peer| peer.is_loopback()),
        ClientIp::x_real_ip().proxied_by(|peer| peer.is_ipv6()),
        ClientIp::peer(),
        ClientIp::x_forwarded_for(trust),
        ClientIp::forwarded(trust),
        ClientIp::x_real_ip(),
        ClientIp::x_forwarded_for(trust).ipv6_prefix(128).unwrap(),
        ClientIp::forwarded(trust).ipv6_prefix(0).unwrap(),
    ]
}

fn with_lines(peer: SocketAddr, lines: &[(u8, Vec<u8>)]) -> Request<Body> {
    let mut req = Request::new(Body::empty());
    for (which, value) in lines {
        let name = ["x-forwarded-for", "forwarded", "x-real-ip"][usize::from(*which % 3)];
        req.headers_mut()
            .append(name, HeaderValue::from_bytes(value).unwrap());
    }
    req.extensions_mut().insert(peer);
    req
}

proptest! {
    /// Arbitrary header bytes never panic; trusting 0 proxies, the key is
    /// always the peer's address.
    #[test]
    fn arbitrary_headers_never_panic_and_trust_0_is_the_peer(
        lines in prop::collection::vec((any::<u8>(), header_bytes()), 0..8),
        peer in any::<SocketAddr>(),
        trust in 0usize..4,
    ) {
        let req = with_lines(peer, &lines);
        for config in all_configs(trust) {
            let _ = config.key(&req);
        }
        let exact = |c: ClientIp| c.ipv6_prefix(128).unwrap();
        let peer_ip = peer.ip().to_canonical();
        prop_assert_eq!(exact(ClientIp::peer()).key(&req), ClientKey::Ip(peer_ip));
        prop_assert_eq!(exact(ClientIp::x_forwarded_for(0)).key(&req), ClientKey::Ip(peer_ip));
        prop_assert_eq!(exact(ClientIp::forwarded(0)).key(&req), ClientKey::Ip(peer_ip));
    }

    /// Whatever a client writes before the entries its trusted proxies
    /// append, the key is the address the outermost proxy saw.
    #[test]
    fn client_written_prefixes_never_change_the_key(
        forged in prop::collection::vec(header_bytes(), 1..4),
        client in any::<Ipv4Addr>(),
        hops in prop::collection::vec(any::<Ipv4Addr>(), 0..3),
    ) {
        let trust = hops.len() + 1;
        let want = ClientKey::Ip(IpAddr::V4(client));
        // X-Forwarded-For: each proxy appends ", <its peer>" to the last line.
        let mut lines = forged.clone();
        let last = lines.last_mut().unwrap();
        for seen in std::iter::once(client).chain(hops.iter().copied()) {
            last.extend_from_slice(format!(", {seen}").as_bytes());
        }
        let req = with_lines("10.0.0.1:1".parse().unwrap(), &lines.iter().map(|l| (0, l.clone())).collect::<Vec<_>>());
        prop_assert_eq!(ClientIp::x_forwarded_for(trust).key(&req), want);
        // Forwarded: the same, with `for=`.
        let mut lines = forged;
        let last = lines.last_mut().unwrap();
        for seen in std::iter::once(client).chain(hops.iter().copied()) {
            last.extend_from_slice(format!(", for={seen};proto=https").as_bytes());
        }
        let req = with_lines("10.0.0.1:1".parse().unwrap(), &lines.iter().map(|l| (1, l.clone())).collect::<Vec<_>>());
        prop_assert_eq!(ClientIp::forwarded(trust).key(&req), want);
    }
}

// ---- through axum -------------------------------------------------------

/// `GET /` behind `ErrorResponseLayer` and a keyed token bucket of one
/// request per 10 s per client.
fn app(client_ip: ClientIp) -> Router {
    let limiter = RateLimitLayer::token_bucket(1, Duration::from_secs(10))
        .keyed(client_ip.into_fn())
        .build()
        .unwrap();
    Router::new().route("/", get(|| async { "hello" })).layer(
        ServiceBuilder::new()
            .layer(ErrorResponseLayer::new())
            .layer(limiter),
    )
}

/// `GET /` through `app`, as axum's connect-info service would deliver it:
/// the proxy's address in `ConnectInfo`, then the `X-Forwarded-For` lines.
async fn get_via(app: &Router, peer: &str, xff: &[&str]) -> (StatusCode, Option<String>) {
    let mut req = Request::get("/").body(Body::empty()).unwrap();
    req.extensions_mut()
        .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
    for line in xff {
        req.headers_mut()
            .append("x-forwarded-for", line.parse().unwrap());
    }
    let res = app.clone().oneshot(req).await.unwrap();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (res.status(), retry_after)
}

const OK: (StatusCode, Option<String>) = (StatusCode::OK, None);

fn limited(secs: &str) -> (StatusCode, Option<String>) {
    (StatusCode::TOO_MANY_REQUESTS, Some(secs.to_owned()))
}

#[tokio::test(start_paused = true)]
async fn behind_a_proxy_each_client_has_its_own_limit_that_forgery_cannot_escape() {
    let app = app(ClientIp::x_forwarded_for(1));

    // Two clients behind the same proxy: separate limits.
    assert_eq!(get_via(&app, PROXY, &["203.0.113.7"]).await, OK);
    assert_eq!(get_via(&app, PROXY, &["198.51.100.4"]).await, OK);
    assert_eq!(get_via(&app, PROXY, &["203.0.113.7"]).await, limited("10"));
    assert_eq!(get_via(&app, PROXY, &["198.51.100.4"]).await, limited("10"));

    // 203.0.113.7 forges leftmost entries, on the proxy's line or its own:
    // still its own, exhausted limit.
    for forged in ["1.2.3.4", "198.51.100.99", "unknown", "::1"] {
        let line = format!("{forged}, 203.0.113.7");
        assert_eq!(get_via(&app, PROXY, &[&line]).await, limited("10"));
        assert_eq!(
            get_via(&app, PROXY, &[forged, "203.0.113.7"]).await,
            limited("10")
        );
    }

    // Requests without a usable entry share one key: the first is admitted,
    // the next (different garbage) is not, so garbage cannot mint keys.
    assert_eq!(get_via(&app, PROXY, &[]).await, OK);
    assert_eq!(get_via(&app, PROXY, &["garbage-1"]).await, limited("10"));
    assert_eq!(
        get_via(&app, PROXY, &["1.2.3.4, garbage-2"]).await,
        limited("10")
    );

    // 0.5 s to go: Retry-After rounds up to 1.
    tokio::time::advance(Duration::from_millis(9_500)).await;
    assert_eq!(get_via(&app, PROXY, &["203.0.113.7"]).await, limited("1"));
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(get_via(&app, PROXY, &["203.0.113.7"]).await, OK);
}

#[tokio::test(start_paused = true)]
async fn without_a_proxy_the_peer_is_the_key_and_headers_are_ignored() {
    let app =
        app(ClientIp::peer().peer_from(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)));
    assert_eq!(get_via(&app, "192.0.2.1:1000", &[]).await, OK);
    // Another port of the same address is the same client.
    assert_eq!(
        get_via(&app, "192.0.2.1:2000", &["203.0.113.7"]).await,
        limited("10")
    );
    assert_eq!(get_via(&app, "192.0.2.2:1000", &["192.0.2.1"]).await, OK);
    // An IPv6 client hopping addresses inside its /64 stays one client.
    assert_eq!(get_via(&app, "[2001:db8:0:1::1]:1", &[]).await, OK);
    assert_eq!(
        get_via(&app, "[2001:db8:0:1::2]:1", &[]).await,
        limited("10")
    );
    assert_eq!(get_via(&app, "[2001:db8:0:2::1]:1", &[]).await, OK);
}

#[tokio::test(start_paused = true)]
async fn a_client_bypassing_the_proxy_is_keyed_by_its_own_address() {
    let app = app(ClientIp::x_forwarded_for(1)
        .peer_from(|ext| ext.get::<ConnectInfo<SocketAddr>>().map(|c| c.0))
        .proxied_by(|peer| peer == IpAddr::from([10, 0, 0, 1])));
    // Through the proxy, the appended entry is the client.
    assert_eq!(get_via(&app, PROXY, &["203.0.113.7"]).await, OK);
    assert_eq!(get_via(&app, PROXY, &["203.0.113.8"]).await, OK);
    // Straight to the server, a fresh forged header per request changes
    // nothing: the key is the connection's address.
    assert_eq!(get_via(&app, "192.0.2.1:1", &["198.51.100.1"]).await, OK);
    for i in 2..10 {
        let forged = format!("198.51.100.{i}");
        assert_eq!(
            get_via(&app, "192.0.2.1:1", &[&forged]).await,
            limited("10")
        );
    }
    // Nor can it borrow a proxied client's key by naming it.
    assert_eq!(get_via(&app, "192.0.2.2:1", &["203.0.113.7"]).await, OK);
}

// ---- requests no client is identified for -------------------------------

/// `GET /` behind `ErrorResponseLayer` and a token bucket of one request
/// per 10 s, keyed by `client_ip` itself (a `KeyExtractor`, so the limiter
/// sees which keys are unknown).
fn app_keyed_by(client_ip: ClientIp) -> (Router, RateLimitHandle) {
    let limiter = RateLimitLayer::token_bucket(1, Duration::from_secs(10))
        .keyed(client_ip)
        .build()
        .unwrap();
    let handle = limiter.handle();
    let app = Router::new().route("/", get(|| async { "hello" })).layer(
        ServiceBuilder::new()
            .layer(ErrorResponseLayer::new())
            .layer(limiter),
    );
    (app, handle)
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, Option<String>) {
    let res = app.clone().oneshot(req).await.unwrap();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (res.status(), retry_after)
}

const UNKNOWN_REFUSED: (StatusCode, Option<String>) = (StatusCode::INTERNAL_SERVER_ERROR, None);

#[tokio::test(start_paused = true)]
async fn requests_without_a_peer_share_one_key_and_are_counted() {
    let (app, handle) = app_keyed_by(ClientIp::peer());
    assert_eq!(send(&app, request(None, &[])).await, OK);
    // Another client without a peer address: the same, spent key.
    let forged = request(None, &[("x-forwarded-for", b"203.0.113.9")]);
    assert_eq!(send(&app, forged).await, limited("10"));
    assert_eq!(handle.unknown_key_requests(), 2);
    assert_eq!(handle.keys(), 1);
    // A known peer has its own key and is not counted as unknown.
    assert_eq!(send(&app, request(Some("192.0.2.1:1"), &[])).await, OK);
    assert_eq!(handle.unknown_key_requests(), 2);
    assert_eq!(
        (handle.keys(), handle.admitted(), handle.rejected()),
        (2, 2, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn refuse_unknown_answers_500_without_retry_after_and_spares_known_peers() {
    let (app, handle) = app_keyed_by(ClientIp::peer().refuse_unknown());
    for _ in 0..3 {
        assert_eq!(send(&app, request(None, &[])).await, UNKNOWN_REFUSED);
    }
    let res = app.clone().oneshot(request(None, &[])).await.unwrap();
    let body = axum::body::to_bytes(res.into_body(), 1024).await.unwrap();
    assert_eq!(&body[..], b"internal server error: client address unknown");
    assert_eq!(handle.unknown_key_requests(), 4);
    assert_eq!((handle.admitted(), handle.rejected()), (0, 4));
    // A refused request holds no key and spends no one's limit.
    assert_eq!(handle.keys(), 0);
    assert_eq!(send(&app, request(Some("192.0.2.1:1"), &[])).await, OK);
    assert_eq!(
        send(&app, request(Some("192.0.2.1:2"), &[])).await,
        limited("10")
    );
    assert_eq!(send(&app, request(Some("192.0.2.2:1"), &[])).await, OK);
    assert_eq!(handle.unknown_key_requests(), 4);
}

#[tokio::test(start_paused = true)]
async fn unusable_trusted_header_entries_are_counted_and_refusable() {
    let bad = || xff(&["203.0.113.7, garbage"]);
    let (app, handle) = app_keyed_by(ClientIp::x_forwarded_for(1));
    assert_eq!(send(&app, bad()).await, OK);
    assert_eq!(send(&app, xff(&[])).await, limited("10"));
    assert_eq!(handle.unknown_key_requests(), 2);

    let (strict, handle) = app_keyed_by(ClientIp::x_forwarded_for(1).refuse_unknown());
    assert_eq!(send(&strict, bad()).await, UNKNOWN_REFUSED);
    assert_eq!(send(&strict, xff(&[])).await, UNKNOWN_REFUSED);
    assert_eq!(send(&strict, xff(&["203.0.113.7"])).await, OK);
    assert_eq!(handle.unknown_key_requests(), 2);
    // Bypassing the proxy without a peer address is unknown too.
    let (strict, handle) = app_keyed_by(
        ClientIp::x_forwarded_for(1)
            .proxied_by(|peer| peer.is_loopback())
            .refuse_unknown(),
    );
    let no_peer = request(None, &[("x-forwarded-for", b"203.0.113.7")]);
    assert_eq!(send(&strict, no_peer).await, UNKNOWN_REFUSED);
    assert_eq!(handle.unknown_key_requests(), 1);
}

/// A closure's keys are all known to the limiter: it counts nothing and
/// refuses nothing (documented on `ClientIp::into_fn`).
#[tokio::test(start_paused = true)]
async fn a_closure_extractor_is_never_unknown_to_the_limiter() {
    let limiter = RateLimitLayer::token_bucket(1, Duration::from_secs(10))
        .keyed(ClientIp::peer().refuse_unknown().into_fn::<Body>())
        .build()
        .unwrap();
    let handle = limiter.handle();
    let app = Router::new().route("/", get(|| async { "hello" })).layer(
        ServiceBuilder::new()
            .layer(ErrorResponseLayer::new())
            .layer(limiter),
    );
    assert_eq!(send(&app, request(None, &[])).await, OK);
    assert_eq!(send(&app, request(None, &[])).await, limited("10"));
    assert_eq!(handle.unknown_key_requests(), 0);
}
