//! `RateLimit-Policy` and `RateLimit` header fields (IETF draft
//! `draft-ietf-httpapi-ratelimit-headers`), read the way a client reads
//! them: parsed as structured-field Lists by the `sfv` crate.
//!
//! Over real HTTP (`axum::serve` on `127.0.0.1:0`, a hyper client bound to
//! 127.0.0.1 / 127.0.0.2): values and syntax on 200s and 429s, unkeyed and
//! keyed, `r` reaching 0 exactly on the last admitted request. Real time,
//! bounded: a handful of requests, each under `axum_server::TIMEOUT` (10 s), with quotas
//! measured in minutes so that elapsed milliseconds never change a value.
//! Then a proptest over paused time: every header the layer writes parses
//! as the draft's fields, and `r = 0` exactly when the next request is
//! refused.
#![cfg(feature = "axum")]

mod support;

use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use palisade::RateLimitLayer;
use palisade::http::{ClientIp, ErrorResponseLayer};
use palisade::rate_limit::ConfigError;
use proptest::prelude::*;
use tower::{Service, ServiceBuilder, ServiceExt};

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

// ---- parsing as a client would ----------------------------------------------

/// One Item of a structured-field List: its String value and its Integer
/// parameters, in order. Panics (fails the test) on anything else.
fn parse_item(field: &str) -> (String, Vec<(String, i64)>) {
    let list: sfv::List = sfv::Parser::new(field)
        .parse()
        .unwrap_or_else(|e| panic!("{field:?} is not a structured-field List: {e}"));
    assert_eq!(list.len(), 1, "{field:?}");
    let sfv::ListEntry::Item(item) = &list[0] else {
        panic!("{field:?}: an inner list");
    };
    let name = item
        .bare_item
        .as_string()
        .unwrap_or_else(|| panic!("{field:?}: the item is not a String"))
        .as_str()
        .to_owned();
    let params = item
        .params
        .iter()
        .map(|(k, v)| {
            let n = v
                .as_integer()
                .unwrap_or_else(|| panic!("{field:?}: {} is not an Integer", k.as_str()));
            (k.as_str().to_owned(), i64::from(n))
        })
        .collect();
    (name, params)
}

fn params(list: &[(&str, i64)]) -> Vec<(String, i64)> {
    list.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// The parser reads the draft's own examples as the draft means them.
#[test]
fn the_drafts_examples_parse_as_the_draft_says() {
    assert_eq!(
        parse_item(r#""default";q=100;w=10"#),
        ("default".into(), params(&[("q", 100), ("w", 10)]))
    );
    assert_eq!(
        parse_item(r#""default";r=50;t=30"#),
        ("default".into(), params(&[("r", 50), ("t", 30)]))
    );
    assert_eq!(
        parse_item(r#""problemPolicy";r=0;t=10"#),
        ("problemPolicy".into(), params(&[("r", 0), ("t", 10)]))
    );
    // Two policies in one field: a List of two Items.
    let two: sfv::List = sfv::Parser::new(r#""permin";q=50;w=60,"perhr";q=1000;w=3600"#)
        .parse()
        .unwrap();
    assert_eq!(two.len(), 2);
}

// ---- a real server and a real client -----------------------------------------

use support::axum_server::{self, Server, serve};

/// What a client saw: status, `Retry-After`, `RateLimit-Policy`, `RateLimit`.
#[derive(Debug)]
struct Reply {
    status: u16,
    retry_after: Option<String>,
    policy: Option<String>,
    limit: Option<String>,
}

async fn get_from(server: &Server, from: Ipv4Addr) -> Reply {
    let (status, headers) = axum_server::get(server.addr, from, "/", &[]).await;
    let header = |name: &str| {
        let mut values = headers.get_all(name).iter();
        let first = values.next().map(|v| v.to_str().unwrap().to_owned());
        assert!(values.next().is_none(), "{name} sent twice");
        first
    };
    Reply {
        status,
        retry_after: header("retry-after"),
        policy: header("ratelimit-policy"),
        limit: header("ratelimit"),
    }
}

fn app() -> Router {
    Router::new().route("/", get(|| async { StatusCode::OK }))
}

/// Checks a reply's status and both fields, parsed.
fn expect(reply: &Reply, status: u16, policy: (&str, i64, i64), r: i64, t: i64) {
    assert_eq!(reply.status, status, "{reply:?}");
    let (name, q, w) = policy;
    assert_eq!(
        parse_item(reply.policy.as_deref().expect("no RateLimit-Policy")),
        (name.to_owned(), params(&[("q", q), ("w", w)])),
        "{reply:?}"
    );
    assert_eq!(
        parse_item(reply.limit.as_deref().expect("no RateLimit")),
        (name.to_owned(), params(&[("r", r), ("t", t)])),
        "{reply:?}"
    );
}

/// One per minute, burst 3: three 200s with `r` = 2, 1, 0 and `t=60` (the
/// next unit is a minute away), then a 429 with `r=0;t=60` matching its
/// `Retry-After`. The policy: 3 units refilled over 180 s.
#[tokio::test]
async fn unkeyed_headers_count_down_to_the_refusal_over_http() {
    let limiter = RateLimitLayer::token_bucket(1, Duration::from_secs(60))
        .burst(3)
        .headers("default")
        .build()
        .unwrap();
    let server = serve(
        app().layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(limiter),
        ),
    )
    .await;
    let policy = ("default", 3, 180);
    for r in [2, 1, 0] {
        let reply = get_from(&server, A).await;
        expect(&reply, 200, policy, r, 60);
        assert_eq!(reply.retry_after, None);
    }
    let refused = get_from(&server, A).await;
    expect(&refused, 429, policy, 0, 60);
    assert_eq!(refused.retry_after.as_deref(), Some("60"));
}

/// Keyed by peer: each peer counts down its own quota, and one peer's 429
/// leaves the other's fields untouched.
#[tokio::test]
async fn keyed_headers_report_each_clients_own_quota_over_http() {
    let limiter = RateLimitLayer::token_bucket(1, Duration::from_secs(60))
        .burst(2)
        .keyed(ClientIp::peer())
        .headers("per-client")
        .build()
        .unwrap();
    let server = serve(
        app().layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(limiter),
        ),
    )
    .await;
    let policy = ("per-client", 2, 120);
    expect(&get_from(&server, A).await, 200, policy, 1, 60);
    expect(&get_from(&server, A).await, 200, policy, 0, 60);
    let refused = get_from(&server, A).await;
    expect(&refused, 429, policy, 0, 60);
    assert_eq!(refused.retry_after.as_deref(), Some("60"));
    expect(&get_from(&server, B).await, 200, policy, 1, 60);
}

/// Without `.headers(..)`, nothing is written, on 200s or 429s.
#[tokio::test]
async fn no_headers_unless_asked_over_http() {
    let limiter = RateLimitLayer::token_bucket(1, Duration::from_secs(60))
        .build()
        .unwrap();
    let server = serve(
        app().layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(limiter),
        ),
    )
    .await;
    for status in [200, 429] {
        let reply = get_from(&server, A).await;
        assert_eq!(reply.status, status);
        assert_eq!((reply.policy, reply.limit), (None, None));
    }
}

#[test]
fn headers_are_refused_where_they_cannot_be_exact() {
    let window = RateLimitLayer::sliding_window(10, Duration::from_secs(1))
        .headers("w")
        .build();
    assert_eq!(window.unwrap_err(), ConfigError::HeadersNeedTokenBucket);
    let log = RateLimitLayer::sliding_log(10, Duration::from_secs(1))
        .headers("w")
        .build();
    assert_eq!(log.unwrap_err(), ConfigError::HeadersNeedTokenBucket);
    let name = RateLimitLayer::token_bucket(10, Duration::from_secs(1))
        .headers("caf\u{e9}")
        .build();
    assert_eq!(name.unwrap_err(), ConfigError::InvalidPolicyName);
}

/// Wait mode: a request that waited for its unit reports the quota at the
/// time it conformed (nothing left, the next unit a second away), and cost
/// counts in units: a keyed limiter charging 3 of 5 leaves `r=2`.
#[tokio::test(start_paused = true)]
async fn waiting_and_costed_requests_report_their_own_quota() {
    let layer = RateLimitLayer::token_bucket(1, Duration::from_secs(1))
        .wait(Duration::from_secs(5))
        .headers("shaped")
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|_: ()| async { Ok::<_, Infallible>(axum::http::Response::new(())) });
    let start = tokio::time::Instant::now();
    for _ in 0..3 {
        let response = svc.ready().await.unwrap().call(()).await.unwrap();
        assert_eq!(response.headers()["ratelimit"], r#""shaped";r=0;t=1"#);
        assert_eq!(
            response.headers()["ratelimit-policy"],
            r#""shaped";q=1;w=1"#
        );
    }
    assert_eq!(start.elapsed(), Duration::from_secs(2));

    let layer = RateLimitLayer::token_bucket(1, Duration::from_secs(10))
        .burst(5)
        .keyed(|n: &u64| *n)
        .cost(|n: &u64| *n)
        .headers("costed")
        .build()
        .unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|_: u64| async { Ok::<_, Infallible>(axum::http::Response::new(())) });
    let response = svc.ready().await.unwrap().call(3).await.unwrap();
    assert_eq!(response.headers()["ratelimit"], r#""costed";r=2;t=10"#);
    assert_eq!(
        response.headers()["ratelimit-policy"],
        r#""costed";q=5;w=50"#
    );
    // Cost 0 is not counted and reports nothing.
    let response = svc.ready().await.unwrap().call(0).await.unwrap();
    assert!(response.headers().get("ratelimit").is_none());
}

// ---- every header parses, and r = 0 means the next one is refused ------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any token bucket, any printable-ASCII name, any spacing of requests:
    /// every response (200 or 429) carries both fields, they parse as the
    /// draft's Lists with the configured name, `r <= q`, `w >= 1`, a 429's
    /// `t` equals its `Retry-After`, and a 200 says `r=0` exactly when an
    /// immediate next request is refused.
    #[test]
    fn headers_always_parse_as_the_drafts_fields(
        rate in 1u64..50,
        period_ms in 1u64..120_000,
        burst in 1u64..20,
        name in "[ -~]{0,24}",
        gaps_ms in prop::collection::vec(0u64..5_000, 1..30),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let layer = RateLimitLayer::token_bucket(rate, Duration::from_millis(period_ms))
                .burst(burst)
                .headers(name.clone())
                .build()
                .unwrap();
            let mut svc = ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(layer)
                .service_fn(|_: ()| async {
                    Ok::<_, Infallible>(axum::http::Response::new(String::new()))
                });
            let mut last_r: Option<i64> = None;
            for gap in gaps_ms {
                let response = svc.ready().await.unwrap().call(()).await.unwrap();
                let h = response.headers();
                let (pname, policy) = parse_item(h["ratelimit-policy"].to_str().unwrap());
                let (lname, limit) = parse_item(h["ratelimit"].to_str().unwrap());
                assert_eq!(&pname, &name);
                assert_eq!(&lname, &name);
                assert_eq!(policy.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), ["q", "w"]);
                assert_eq!(limit.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(), ["r", "t"]);
                let (q, w, r, t) = (policy[0].1, policy[1].1, limit[0].1, limit[1].1);
                assert!(w >= 1 && r <= q && r <= burst as i64 && t >= 1, "q={q} w={w} r={r} t={t}");
                match response.status().as_u16() {
                    200 => {}
                    429 => {
                        assert_eq!(h["retry-after"].to_str().unwrap(), t.to_string());
                        // The request before, at the same instant, said 0.
                        if let Some(prev) = last_r {
                            assert_eq!(prev, 0, "refused right after r={prev}");
                        }
                    }
                    other => panic!("status {other}"),
                }
                last_r = Some(r);
                if gap > 0 {
                    tokio::time::advance(Duration::from_millis(gap)).await;
                    last_r = None;
                }
            }
            // Drain at one instant: `r` counts down by one per admission, a
            // 200 after `r=0` or a 429 after `r>0` is a lie.
            let mut prev = last_r;
            loop {
                let response = svc.ready().await.unwrap().call(()).await.unwrap();
                let (_, limit) = parse_item(response.headers()["ratelimit"].to_str().unwrap());
                let r = limit[0].1;
                if response.status() == 429 {
                    if let Some(p) = prev {
                        assert_eq!(p, 0, "refused right after r={p}");
                    }
                    break;
                }
                if let Some(p) = prev {
                    assert_eq!(r, p - 1, "r={p} then admitted with r={r}");
                }
                prev = Some(r);
            }
        });
    }
}
