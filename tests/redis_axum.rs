//! Two axum "instances" (separate routers, layers and connections) sharing
//! one limit through Redis: refusals are the same 429 with a rounded-up
//! `Retry-After` as in memory, whichever instance answers.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use palisade::RateLimitLayer;
use palisade::http::ErrorResponseLayer;
use palisade::rate_limit::redis::RedisStore;
use support::redis::{prefix, redis_url};
use tower::{ServiceBuilder, ServiceExt};

fn instance(p: &str, calls: Arc<AtomicU32>) -> Router {
    // 2 per minute, burst 2, keyed by the API key header.
    let limiter = RateLimitLayer::token_bucket(2, Duration::from_secs(60))
        .burst(2)
        .keyed(|req: &Request<Body>| {
            req.headers()
                .get("x-api-key")
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default()
        })
        .redis(RedisStore::open(&redis_url()).unwrap(), p)
        .build()
        .unwrap();
    Router::new()
        .route(
            "/",
            get(move || {
                let calls = calls.clone();
                async move {
                    calls.fetch_add(1, SeqCst);
                    "ok"
                }
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(ErrorResponseLayer::new())
                .layer(limiter),
        )
}

async fn get_root(app: &Router, key: &str) -> (StatusCode, Option<String>) {
    let response = app
        .clone()
        .oneshot(
            Request::get("/")
                .header("x-api-key", key)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (response.status(), retry_after)
}

#[tokio::test]
async fn two_instances_share_one_limit_and_answer_429() {
    let p = prefix("axum");
    let calls = Arc::new(AtomicU32::new(0));
    let a = instance(&p, calls.clone());
    let b = instance(&p, calls.clone());
    assert_eq!(get_root(&a, "k1").await.0, StatusCode::OK);
    assert_eq!(get_root(&b, "k1").await.0, StatusCode::OK);
    // The shared burst is spent: both instances refuse, 30 s rounded up.
    for app in [&a, &b] {
        let (status, retry_after) = get_root(app, "k1").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        let secs: u64 = retry_after.expect("Retry-After").parse().unwrap();
        assert!((29..=30).contains(&secs), "{secs}");
    }
    // Another key has a limit of its own.
    assert_eq!(get_root(&b, "k2").await.0, StatusCode::OK);
    assert_eq!(calls.load(SeqCst), 3);
}

/// `ClientIp` keys through Redis behave as in memory: a request whose peer
/// cannot be found is counted, and refused in strict mode without a Redis
/// call; known peers get their own shared quota.
#[tokio::test]
async fn client_ip_keys_with_redis_count_and_refuse_unknown_peers() {
    use palisade::http::ClientIp;
    use palisade::rate_limit::UnknownKey;
    use std::net::SocketAddr;

    let p = prefix("client_ip_keys");
    let layer = RateLimitLayer::token_bucket(1, Duration::from_secs(60))
        .keyed(ClientIp::peer().refuse_unknown())
        .redis(RedisStore::open(&redis_url()).unwrap(), p.as_str())
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service_fn(|_: Request<Body>| async { Ok::<_, std::convert::Infallible>("ok") });

    let from = |peer: Option<&str>| {
        let mut req = Request::get("/").body(Body::empty()).unwrap();
        if let Some(peer) = peer {
            let addr: SocketAddr = peer.parse().unwrap();
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(addr));
        }
        req
    };
    let err = svc.clone().oneshot(from(None)).await.unwrap_err();
    assert!(err.is::<UnknownKey>(), "{err}");
    assert_eq!(handle.unknown_key_requests(), 1);
    assert_eq!(handle.store_calls(), 0, "refused without asking Redis");

    svc.clone()
        .oneshot(from(Some("10.0.0.1:1000")))
        .await
        .unwrap();
    svc.clone()
        .oneshot(from(Some("10.0.0.2:1000")))
        .await
        .unwrap();
    let again = svc.clone().oneshot(from(Some("10.0.0.1:2000"))).await;
    assert!(again.is_err(), "the same peer's second request is limited");
}
