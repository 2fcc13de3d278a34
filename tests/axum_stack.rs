//! palisade in front of a real axum server: `axum::serve` on `127.0.0.1:0`,
//! driven by a real HTTP/1 client (hyper) whose connections are bound to
//! 127.0.0.1, 127.0.0.2 and 127.0.0.3, three distinct peers on loopback.
//!
//! Each peer has its own quota, read from axum's `ConnectInfo` with no
//! configuration; a forged `X-Forwarded-For` buys no new quota; concurrent
//! requests admit exactly the limit; the breaker answers `503` with
//! `Retry-After` and recovers; one greedy client's `429`s never open a
//! breaker for the others, in every order of layers the README names.
//!
//! Real time, real sockets: every request is bounded by `axum_server::TIMEOUT` (10 s), and
//! the only wait is one breaker open period of 300 ms.
#![cfg(feature = "axum")]

mod support;

use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering::SeqCst};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State as AxumState;
use axum::http::{Response, StatusCode};
use axum::routing::get;
use palisade::circuit_breaker::{CircuitBreakerHandle, State};
use palisade::classify::{Classify, ErrorsAsFailures, FailureWhenOk, ServerErrorsAsFailures};
use palisade::http::{ClientIp, ErrorResponseLayer};
use palisade::rate_limit::RateLimitHandle;
use palisade::{BoxError, CircuitBreakerLayer, RateLimitLayer};
use tower::ServiceBuilder;

/// Three distinct peers: every 127.0.0.0/8 address is loopback on Linux.
const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const C: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

// ---- a real server and a real client --------------------------------------

use support::axum_server::{self, Server, serve, serve_without_connect_info};

/// What a client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    status: u16,
    retry_after: Option<String>,
}

fn ok() -> Reply {
    Reply {
        status: 200,
        retry_after: None,
    }
}

fn status(status: u16, retry_after: &str) -> Reply {
    Reply {
        status,
        retry_after: Some(retry_after.to_owned()),
    }
}

/// `GET /` on a new HTTP/1 connection from `from`, with `headers`.
async fn get_from(server: &Server, from: Ipv4Addr, headers: &[(&str, &str)]) -> Reply {
    get_path(server, from, "/", headers).await
}

/// `GET path` on a new HTTP/1 connection from `from`, with `headers`.
async fn get_path(server: &Server, from: Ipv4Addr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let (status, headers) = axum_server::get(server.addr, from, path, headers).await;
    Reply {
        status,
        retry_after: headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned()),
    }
}

/// A handler answering the status in `status`.
fn app_answering(status: Arc<AtomicU16>) -> Router {
    Router::new()
        .route(
            "/",
            get(|AxumState(status): AxumState<Arc<AtomicU16>>| async move {
                StatusCode::from_u16(status.load(SeqCst)).unwrap()
            }),
        )
        .with_state(status)
}

fn healthy() -> Router {
    app_answering(Arc::new(AtomicU16::new(200)))
}

/// One request per minute per key: a refused client waits 60 s.
fn per_client(client_ip: ClientIp) -> RateLimitLayer<ClientIp> {
    RateLimitLayer::token_bucket(1, Duration::from_secs(60))
        .keyed(client_ip)
        .build()
        .unwrap()
}

// ---- keys -------------------------------------------------------------------

/// The first bug: `.keyed(ClientIp::peer())` behind
/// `into_make_service_with_connect_info` keyed every request as unknown,
/// so one client's first request spent everyone's quota.
#[tokio::test]
async fn each_peer_gets_its_own_quota_from_axum_connect_info() {
    let limiter = per_client(ClientIp::peer());
    let handle = limiter.handle();
    let server = serve(
        healthy().layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(limiter),
        ),
    )
    .await;

    for peer in [A, B, C] {
        assert_eq!(get_from(&server, peer, &[]).await, ok(), "{peer}");
    }
    for peer in [A, B, C] {
        assert_eq!(
            get_from(&server, peer, &[]).await,
            status(429, "60"),
            "{peer}"
        );
    }
    assert_eq!(handle.keys(), 3);
    assert_eq!(handle.unknown_key_requests(), 0);
    assert_eq!((handle.admitted(), handle.rejected()), (3, 3));
}

#[tokio::test]
async fn a_forged_x_forwarded_for_buys_no_new_quota_from_the_peer_key() {
    let limiter = per_client(ClientIp::peer());
    let handle = limiter.handle();
    let server = serve(
        healthy().layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(limiter),
        ),
    )
    .await;

    assert_eq!(get_from(&server, B, &[]).await, ok());
    for forged in ["203.0.113.1", "203.0.113.2, 127.0.0.9", "garbage", "::1"] {
        for header in ["x-forwarded-for", "x-real-ip"] {
            assert_eq!(
                get_from(&server, B, &[(header, forged)]).await,
                status(429, "60"),
                "{header}: {forged}"
            );
        }
    }
    assert_eq!(
        get_from(&server, B, &[("forwarded", "for=203.0.113.3")]).await,
        status(429, "60")
    );
    assert_eq!(handle.keys(), 1);
}

/// 127.0.0.1 plays the reverse proxy (it appends the address it saw);
/// 127.0.0.2 and 127.0.0.3 reach the server directly and forge the header.
#[tokio::test]
async fn behind_a_trusted_proxy_the_appended_entry_is_the_key_and_direct_clients_cannot_forge_it() {
    let limiter = per_client(ClientIp::x_forwarded_for(1).proxied_by(|peer| peer == A));
    let handle = limiter.handle();
    let server = serve(
        healthy().layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(limiter),
        ),
    )
    .await;

    // Through the proxy: one key per client the proxy saw.
    let via_proxy = |line| [("x-forwarded-for", line)];
    assert_eq!(get_from(&server, A, &via_proxy("203.0.113.7")).await, ok());
    assert_eq!(get_from(&server, A, &via_proxy("203.0.113.8")).await, ok());
    // The client forged entries to the left of the proxy's: same key.
    assert_eq!(
        get_from(&server, A, &via_proxy("6.6.6.6, 203.0.113.7")).await,
        status(429, "60")
    );

    // Direct: keyed by the peer, a new forged header per request or not.
    assert_eq!(get_from(&server, B, &via_proxy("198.51.100.1")).await, ok());
    for forged in ["198.51.100.2", "203.0.113.99", "127.0.0.1"] {
        assert_eq!(
            get_from(&server, B, &via_proxy(forged)).await,
            status(429, "60"),
            "{forged}"
        );
    }
    // Nor can a direct client borrow a proxied client's fresh key.
    assert_eq!(get_from(&server, C, &via_proxy("203.0.113.50")).await, ok());
    assert_eq!(
        get_from(&server, C, &via_proxy("203.0.113.51")).await,
        status(429, "60")
    );
    assert_eq!(handle.keys(), 4);
    assert_eq!(handle.unknown_key_requests(), 0);
}

/// Forgetting `into_make_service_with_connect_info` pools every client, and
/// the limiter says so; strict mode refuses instead, with `500`.
#[tokio::test]
async fn without_connect_info_clients_are_pooled_and_counted_or_refused_in_strict_mode() {
    let limiter = per_client(ClientIp::peer());
    let handle = limiter.handle();
    let server = serve_without_connect_info(
        healthy().layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(limiter),
        ),
    )
    .await;
    assert_eq!(get_from(&server, B, &[]).await, ok());
    // Another client, pooled with the first.
    assert_eq!(get_from(&server, C, &[]).await, status(429, "60"));
    assert_eq!(handle.unknown_key_requests(), 2);
    assert_eq!(handle.keys(), 1);

    let strict = per_client(ClientIp::peer().refuse_unknown());
    let handle = strict.handle();
    let server = serve_without_connect_info(
        healthy().layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(strict),
        ),
    )
    .await;
    let refused = Reply {
        status: 500,
        retry_after: None,
    };
    for peer in [B, C, B] {
        assert_eq!(get_from(&server, peer, &[]).await, refused, "{peer}");
    }
    assert_eq!(handle.unknown_key_requests(), 3);
    assert_eq!(
        (handle.admitted(), handle.rejected(), handle.keys()),
        (0, 3, 0)
    );
}

// ---- concurrency ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_from_one_client_admit_exactly_the_limit() {
    const LIMIT: u64 = 5;
    const REQUESTS: usize = 40;
    let limiter = RateLimitLayer::token_bucket(LIMIT, Duration::from_secs(600))
        .burst(LIMIT)
        .keyed(ClientIp::peer())
        .build()
        .unwrap();
    let handle = limiter.handle();
    let server = Arc::new(
        serve(
            healthy().layer(
                ServiceBuilder::new()
                    .layer(ErrorResponseLayer::new())
                    .layer(limiter),
            ),
        )
        .await,
    );

    let requests: Vec<_> = (0..REQUESTS)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move { get_from(&server, B, &[]).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.unwrap());
    }
    let admitted = statuses.iter().filter(|&&s| s == 200).count();
    let limited = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(
        (admitted, limited),
        (LIMIT as usize, REQUESTS - LIMIT as usize)
    );
    assert_eq!((handle.admitted(), handle.keys()), (LIMIT, 1));
    // Another client still has its whole burst.
    assert_eq!(get_from(&server, C, &[]).await, ok());
}

// ---- the breaker ------------------------------------------------------------

#[tokio::test]
async fn the_breaker_answers_503_with_retry_after_and_recovers_after_its_open_period() {
    let upstream = Arc::new(AtomicU16::new(500));
    let breaker = CircuitBreakerLayer::consecutive_failures(3)
        .open_for(Duration::from_millis(300))
        .classifier(ServerErrorsAsFailures)
        .build()
        .unwrap();
    let breaker_state = breaker.handle();
    let server = serve(
        app_answering(upstream.clone()).layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(per_client_generous())
                .layer(breaker),
        ),
    )
    .await;

    for peer in [A, B, C] {
        assert_eq!(get_from(&server, peer, &[]).await.status, 500);
    }
    assert_eq!(breaker_state.state(), State::Open);
    // 300 ms to go: rounded up to 1 s, never 0.
    for peer in [A, B, C] {
        assert_eq!(get_from(&server, peer, &[]).await, status(503, "1"));
    }

    upstream.store(200, SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(get_from(&server, B, &[]).await, ok());
    assert_eq!(breaker_state.state(), State::Closed);
    assert_eq!(get_from(&server, C, &[]).await, ok());
}

/// A limiter no test here reaches: it only puts a keyed limiter in the
/// stack where the README does.
fn per_client_generous() -> RateLimitLayer<ClientIp> {
    RateLimitLayer::token_bucket(1_000, Duration::from_secs(1))
        .burst(1_000)
        .keyed(ClientIp::peer())
        .build()
        .unwrap()
}

// ---- one greedy client, every order of layers -------------------------------

/// Where the breaker stands relative to the limiter and the error layer.
#[derive(Debug, Clone, Copy)]
enum Order {
    /// `ErrorResponseLayer -> breaker -> limiter -> handler`: the breaker
    /// sees the limiter's `Err(RateLimited)`.
    ErrorsBreakerLimiter,
    /// `ErrorResponseLayer -> breaker -> ErrorResponseLayer -> limiter ->
    /// handler`: the breaker sees the limiter's refusal as a response.
    BreakerErrorsLimiter,
    /// `ErrorResponseLayer -> limiter -> breaker -> handler` (the README's):
    /// refused requests never reach the breaker.
    LimiterOutermost,
}

const ORDERS: [Order; 3] = [
    Order::ErrorsBreakerLimiter,
    Order::BreakerErrorsLimiter,
    Order::LimiterOutermost,
];

/// A healthy handler (and `/fail`, answering `500`) behind a breaker that
/// trips on 2 consecutive failures (open 30 s) and a limit of one request
/// per minute per peer, in `order`.
fn greedy_stack<K>(
    order: Order,
    classifier: K,
    client_ip: ClientIp,
) -> (Router, CircuitBreakerHandle, RateLimitHandle)
where
    K: Classify<Response<Body>, BoxError>
        + Classify<Response<Body>, Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    let breaker = CircuitBreakerLayer::consecutive_failures(2)
        .open_for(Duration::from_secs(30))
        .classifier(classifier)
        .build()
        .unwrap();
    let limiter = per_client(client_ip);
    let handles = (breaker.handle(), limiter.handle());
    let app = healthy().route("/fail", get(|| async { StatusCode::INTERNAL_SERVER_ERROR }));
    let app = match order {
        Order::ErrorsBreakerLimiter => app.layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(breaker)
                .layer(limiter),
        ),
        Order::BreakerErrorsLimiter => app.layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(breaker)
                .layer(ErrorResponseLayer::new())
                .layer(limiter),
        ),
        Order::LimiterOutermost => app.layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(limiter)
                .layer(breaker),
        ),
    };
    (app, handles.0, handles.1)
}

/// The second bug: three `429`s sent to one greedy client opened
/// the breaker, and the next client got `503, retry-after: 30`.
///
/// With `counts_5xx`, the same breaker then opens on two real `500`s from
/// fresh peers, and the next client gets its `503`: it ignored the `429`s,
/// not everything.
async fn greedy_client_never_opens_the_breaker<K>(classifier: K, counts_5xx: bool)
where
    K: Classify<Response<Body>, BoxError>
        + Classify<Response<Body>, Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
{
    for order in ORDERS {
        let (app, breaker, limiter) = greedy_stack(order, classifier.clone(), ClientIp::peer());
        let server = serve(app).await;
        assert_eq!(get_from(&server, B, &[]).await, ok(), "{order:?}");
        for _ in 0..5 {
            assert_eq!(
                get_from(&server, B, &[]).await,
                status(429, "60"),
                "{order:?}"
            );
        }
        assert_eq!(limiter.rejected(), 5, "{order:?}");
        assert_eq!(breaker.state(), State::Closed, "{order:?}");
        assert_eq!(breaker.counts().failures, 0, "{order:?}");
        for peer in [A, C] {
            assert_eq!(get_from(&server, peer, &[]).await, ok(), "{order:?} {peer}");
        }
        if counts_5xx {
            for last in [4, 5] {
                let peer = Ipv4Addr::new(127, 0, 0, last);
                let reply = get_path(&server, peer, "/fail", &[]).await;
                assert_eq!(reply.status, 500, "{order:?}");
            }
            assert_eq!(breaker.state(), State::Open, "{order:?}");
            let next = get_from(&server, Ipv4Addr::new(127, 0, 0, 6), &[]).await;
            assert_eq!(next, status(503, "30"), "{order:?}");
        }
    }
}

#[tokio::test]
async fn a_greedy_clients_429s_never_open_a_server_errors_breaker_in_any_order() {
    greedy_client_never_opens_the_breaker(ServerErrorsAsFailures, true).await;
}

#[tokio::test]
async fn a_greedy_clients_429s_never_open_an_errors_as_failures_breaker_in_any_order() {
    // Counts `Err` only: an axum handler's `500` is an `Ok` to it.
    greedy_client_never_opens_the_breaker(ErrorsAsFailures, false).await;
}

#[tokio::test]
async fn a_greedy_clients_429s_never_open_a_failure_when_ok_breaker_in_any_order() {
    let status_5xx: fn(&Response<Body>) -> bool = |r| r.status().is_server_error();
    greedy_client_never_opens_the_breaker(FailureWhenOk::new(status_5xx), true).await;
}

/// Strict mode's `500`s are palisade's own refusals too: a server without
/// connect info refuses every request, and no breaker opens over it.
#[tokio::test]
async fn strict_mode_refusals_never_open_the_breaker_in_any_order() {
    for order in ORDERS {
        let (app, breaker, limiter) = greedy_stack(
            order,
            ServerErrorsAsFailures,
            ClientIp::peer().refuse_unknown(),
        );
        let server = serve_without_connect_info(app).await;
        for peer in [A, B, C, B, C] {
            assert_eq!(
                get_from(&server, peer, &[]).await,
                Reply {
                    status: 500,
                    retry_after: None
                },
                "{order:?}"
            );
        }
        assert_eq!(limiter.unknown_key_requests(), 5, "{order:?}");
        assert_eq!(breaker.state(), State::Closed, "{order:?}");
    }
}
