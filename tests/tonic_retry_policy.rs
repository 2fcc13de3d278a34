//! `GrpcRetryPolicy` (gRPC's A6 retry design) in a real `RetryLayer`, and
//! `ClientStatusLayer`, on paused time. The upstreams are in-process
//! `service_fn`s answering `http::Response`s and `Status`es, what a tonic
//! channel answers (the shared mock answers `Reply`, which these policies do
//! not read); `tests/tonic_stack.rs` runs the same over real sockets.
#![cfg(feature = "tonic")]

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use palisade::circuit_breaker::CircuitOpen;
use palisade::classify::{Classify, LocalRejection, Outcome, local_rejection};
use palisade::grpc::{
    ClientStatusLayer, GrpcCodes, GrpcRetryPolicy, client_status, status_from_error,
};
use palisade::{BoxError, RetryLayer};
use support::ms;
use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tower::{Layer, Service, ServiceExt, service_fn};

/// A trailers-only answer: `grpc-status` (and pushback) in the headers.
fn answer(code: Code, pushback: Option<&'static str>) -> Response<()> {
    let mut res = Status::new(code, "scripted").into_http::<()>();
    if let Some(p) = pushback {
        res.headers_mut()
            .insert("grpc-retry-pushback-ms", HeaderValue::from_static(p));
    }
    res
}

/// An upstream answering `first` once, then `OK`; counts calls and keeps
/// their start times.
fn upstream(
    first: Response<()>,
) -> (
    impl Service<(), Response = Response<()>, Error = BoxError, Future = impl Send> + Clone,
    Arc<AtomicU64>,
) {
    let calls = Arc::new(AtomicU64::new(0));
    let seen = calls.clone();
    let first = Arc::new(std::sync::Mutex::new(Some(first)));
    let svc = service_fn(move |()| {
        seen.fetch_add(1, SeqCst);
        let res = first
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| answer(Code::Ok, None));
        async move { Ok::<_, BoxError>(res) }
    });
    (svc, calls)
}

/// Retries with a 100 ms backoff, so a pushback's wait is told apart.
fn retry(
    policy: GrpcRetryPolicy,
) -> RetryLayer<GrpcRetryPolicy, palisade::retry::ByClone, GrpcRetryPolicy> {
    policy
        .apply(RetryLayer::exponential(ms(100)).max_attempts(3))
        .max_retry_after(Duration::from_secs(2))
        .build()
        .unwrap()
}

/// Calls once through the policy; (calls made, time taken, final code).
async fn run(policy: GrpcRetryPolicy, first: Response<()>) -> (u64, Duration, Code) {
    let (svc, calls) = upstream(first);
    let start = Instant::now();
    let res = retry(policy).layer(svc).oneshot(()).await.unwrap();
    let code = Status::from_header_map(res.headers()).map_or(Code::Ok, |s| s.code());
    (calls.load(SeqCst), start.elapsed(), code)
}

#[tokio::test(start_paused = true)]
async fn unavailable_is_retried_after_the_backoff_or_exactly_the_pushback() {
    let p = GrpcRetryPolicy::new();
    assert_eq!(
        run(p, answer(Code::Unavailable, None)).await,
        (2, ms(100), Code::Ok)
    );
    // A pushback shorter than the backoff is waited exactly (A6), not
    // lengthened to the backoff.
    assert_eq!(
        run(p, answer(Code::Unavailable, Some("7"))).await,
        (2, ms(7), Code::Ok)
    );
    assert_eq!(
        run(p, answer(Code::Unavailable, Some("250"))).await,
        (2, ms(250), Code::Ok)
    );
    assert_eq!(
        run(p, answer(Code::Unavailable, Some("0"))).await,
        (2, ms(0), Code::Ok)
    );
}

#[tokio::test(start_paused = true)]
async fn resource_exhausted_is_retried_only_with_a_pushback_by_default() {
    let p = GrpcRetryPolicy::new();
    assert_eq!(
        run(p, answer(Code::ResourceExhausted, Some("30"))).await,
        (2, ms(30), Code::Ok)
    );
    assert_eq!(
        run(p, answer(Code::ResourceExhausted, None)).await,
        (1, ms(0), Code::ResourceExhausted)
    );
    // Strict A6: pushback applies to retryable codes only.
    assert_eq!(
        run(
            GrpcRetryPolicy::strict_a6(),
            answer(Code::ResourceExhausted, Some("30"))
        )
        .await,
        (1, ms(0), Code::ResourceExhausted)
    );
}

#[tokio::test(start_paused = true)]
async fn negative_malformed_or_too_long_pushback_is_not_retried() {
    let p = GrpcRetryPolicy::new();
    for bad in ["-1", "", "soon", "1.5", " 5", "-0"] {
        assert_eq!(
            run(p, answer(Code::Unavailable, Some(bad))).await,
            (1, ms(0), Code::Unavailable),
            "{bad:?}"
        );
    }
    // Above max_retry_after (2 s).
    assert_eq!(
        run(p, answer(Code::Unavailable, Some("2001"))).await,
        (1, ms(0), Code::Unavailable)
    );
}

#[tokio::test(start_paused = true)]
async fn other_codes_are_returned_and_the_retryable_set_is_configurable() {
    let p = GrpcRetryPolicy::new();
    for code in [
        Code::NotFound,
        Code::Internal,
        Code::Unknown,
        Code::Aborted,
        Code::DeadlineExceeded,
    ] {
        assert_eq!(
            run(p, answer(code, Some("5"))).await,
            (1, ms(0), code),
            "{code:?}"
        );
    }
    let aborted = p.retryable(GrpcCodes::empty().with(Code::Aborted));
    assert_eq!(
        aborted.retryable_codes(),
        GrpcCodes::empty().with(Code::Aborted)
    );
    assert_eq!(
        run(aborted, answer(Code::Aborted, None)).await,
        (2, ms(100), Code::Ok)
    );
    assert_eq!(
        run(aborted, answer(Code::Unavailable, None)).await,
        (1, ms(0), Code::Unavailable)
    );
    // A plain 200 without grpc-status (the status is in the trailers): done.
    assert_eq!(run(p, Response::new(())).await, (1, ms(0), Code::Ok));
}

/// An upstream failing with `first` once (as a breaker over a channel
/// does: a `BoxError`), then answering OK.
async fn run_err(first: BoxError) -> (u64, Duration) {
    let calls = Arc::new(AtomicU64::new(0));
    let seen = calls.clone();
    let first = Arc::new(std::sync::Mutex::new(Some(first)));
    let svc = service_fn(move |()| {
        seen.fetch_add(1, SeqCst);
        let err = first.lock().unwrap().take();
        async move {
            match err {
                Some(e) => Err(e),
                None => Ok(answer(Code::Ok, None)),
            }
        }
    });
    let start = Instant::now();
    let _ = retry(GrpcRetryPolicy::new()).layer(svc).oneshot(()).await;
    (calls.load(SeqCst), start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn errors_read_as_the_status_a_tonic_client_would_see() {
    // A connection refused is UNAVAILABLE to tonic: retried.
    let refused: BoxError = Box::new(tonic::ConnectError("connection refused".into()));
    assert_eq!(run_err(refused).await, (2, ms(100)));
    // A Status error, with its pushback in the metadata.
    let mut status = Status::unavailable("draining");
    status
        .metadata_mut()
        .insert("grpc-retry-pushback-ms", MetadataValue::from_static("12"));
    assert_eq!(run_err(Box::new(status)).await, (2, ms(12)));
    assert_eq!(run_err(Box::new(Status::not_found("no"))).await, (1, ms(0)));
    // Anything else is UNKNOWN: not retried by default.
    assert_eq!(run_err("boom".into()).await, (1, ms(0)));
}

#[tokio::test(start_paused = true)]
async fn a_status_error_type_is_read_too() {
    // Retry over a service whose error is `Status` (below ClientStatusLayer).
    let calls = Arc::new(AtomicU64::new(0));
    let seen = calls.clone();
    let svc = service_fn(move |()| {
        let n = seen.fetch_add(1, SeqCst);
        async move {
            if n == 0 {
                Err(Status::unavailable("once"))
            } else {
                Ok(answer(Code::Ok, None))
            }
        }
    });
    retry(GrpcRetryPolicy::new())
        .layer(svc)
        .oneshot(())
        .await
        .unwrap();
    assert_eq!(calls.load(SeqCst), 2);
}

#[test]
fn local_rejections_are_ignored_by_the_policy() {
    let p = GrpcRetryPolicy::new();
    let open = CircuitOpen { retry_after: ms(5) };
    let err: BoxError = Box::new(open);
    assert_eq!(p.classify(&Err::<Response<()>, _>(err)), Outcome::Ignored);
    // Behind a Status made from it (ClientStatusLayer below the retry).
    let status = client_status(Box::new(open));
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        p.classify(&Err::<Response<()>, _>(status)),
        Outcome::Ignored
    );
    // A response palisade's error layer made of a rejection.
    let mut res = answer(Code::Unavailable, Some("5"));
    res.extensions_mut().insert(LocalRejection {
        retry_after: Some(ms(5)),
    });
    assert_eq!(p.classify(&Ok::<_, BoxError>(res)), Outcome::Ignored);
    // The same answer from a server is retried.
    assert_eq!(
        p.classify(&Ok::<_, BoxError>(answer(Code::Unavailable, Some("5")))),
        Outcome::Failure
    );
}

// ---------------------------------------------------------------------------
// Statuses carry the rejection as their source

#[test]
fn every_status_made_from_a_rejection_has_it_as_source() {
    let open: BoxError = Box::new(CircuitOpen { retry_after: ms(5) });
    let server = status_from_error(&*open);
    assert_eq!(
        local_rejection(&server),
        Some(LocalRejection {
            retry_after: Some(ms(5))
        })
    );
    let client = client_status(open);
    assert_eq!(
        local_rejection(&client),
        Some(LocalRejection {
            retry_after: Some(ms(5))
        })
    );
    // Non-rejections: no rejection found.
    assert_eq!(
        local_rejection(&status_from_error(&*BoxError::from("x"))),
        None
    );
    assert_eq!(local_rejection(&client_status("x".into())), None);
}

#[test]
fn client_status_passes_tonics_statuses_through() {
    let mut original = Status::permission_denied("nope");
    original
        .metadata_mut()
        .insert("x-trace", MetadataValue::from_static("abc"));
    let status = client_status(Box::new(original));
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "nope");
    assert_eq!(status.metadata().get("x-trace").unwrap(), "abc");
    // Other errors keep their text on the client side (unlike the server
    // side's mapping, which withholds it).
    let status = client_status("connection reset by peer".into());
    assert_eq!(status.code(), Code::Unknown);
    assert!(status.message().contains("connection reset by peer"));
}

/// Fails `poll_ready` once with a breaker rejection, then is ready.
#[derive(Clone)]
struct FailsReadyOnce {
    polls: Arc<AtomicU64>,
}

impl Service<Request<()>> for FailsReadyOnce {
    type Response = Response<()>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Response<()>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.polls.fetch_add(1, SeqCst) == 0 {
            return Poll::Ready(Err(Box::new(CircuitOpen { retry_after: ms(9) })));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        std::future::ready(Ok(Response::new(())))
    }
}

#[tokio::test(start_paused = true)]
async fn a_readiness_error_answers_the_next_call_as_its_status() {
    let polls = Arc::new(AtomicU64::new(0));
    let mut svc = ClientStatusLayer::new().layer(FailsReadyOnce {
        polls: polls.clone(),
    });
    // Ready, twice, without polling the inner service again.
    svc.ready().await.unwrap();
    svc.ready().await.unwrap();
    assert_eq!(polls.load(SeqCst), 1);
    let fresh = svc.clone();
    let status = svc.call(Request::new(())).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "9"
    );
    assert!(local_rejection(&status).is_some());
    // A clone holds no pending error; the next call goes through.
    fresh.oneshot(Request::new(())).await.unwrap();
    svc.oneshot(Request::new(())).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn call_errors_become_statuses() {
    let svc = ClientStatusLayer::new().layer(service_fn(|_: Request<()>| async {
        Err::<Response<()>, _>(BoxError::from(tonic::ConnectError("refused".into())))
    }));
    let status = svc.oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let ok = ClientStatusLayer::new().layer(service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(()))
    }));
    ok.oneshot(Request::new(())).await.unwrap();
}
