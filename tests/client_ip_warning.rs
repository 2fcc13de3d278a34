//! A request `ClientIp` finds no address for is warned about once per
//! process and cause, naming the fix. Alone in its binary: the warnings are
//! once per process, and `tracing` caches each callsite's interest
//! process-wide.

#![cfg(feature = "http")]

mod support;

use std::net::SocketAddr;

use palisade::http::{ClientIp, ClientKey};

#[test]
fn each_cause_of_an_unknown_key_is_warned_about_once_naming_the_fix() {
    let (capture, subscriber) = support::tracing_capture::capture(tracing::Level::WARN);
    let no_peer = http::Request::new(());
    let mut proxied_without_header = http::Request::new(());
    proxied_without_header
        .extensions_mut()
        .insert(SocketAddr::from(([127, 0, 0, 1], 4000)));
    let mut known = http::Request::new(());
    known
        .extensions_mut()
        .insert(SocketAddr::from(([192, 0, 2, 1], 4000)));

    tracing::subscriber::with_default(subscriber, || {
        assert_eq!(
            ClientIp::peer().key(&known),
            ClientKey::Ip([192, 0, 2, 1].into())
        );
        for _ in 0..3 {
            assert_eq!(ClientIp::peer().key(&no_peer), ClientKey::Unknown);
            assert_eq!(
                ClientIp::x_forwarded_for(1).key(&proxied_without_header),
                ClientKey::Unknown
            );
        }
    });

    let out = capture.text();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines.iter().all(|l| l.contains("WARN")), "{out}");
    let peer = lines
        .iter()
        .find(|l| l.contains("no peer address"))
        .expect(&out);
    for fix in [
        "into_make_service_with_connect_info::<SocketAddr>()",
        "`axum` feature",
        "`tonic` feature",
        "ClientIp::peer_from",
        "unknown_key_requests",
        "refuse_unknown",
    ] {
        assert!(peer.contains(fix), "{fix}: {peer}");
    }
    let header = lines
        .iter()
        .find(|l| l.contains("no usable address"))
        .expect(&out);
    assert!(header.contains("XForwardedFor(1)"), "{header}");
    assert!(header.contains("ClientIp::proxied_by"), "{header}");
}
