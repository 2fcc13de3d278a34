//! gRPC integration (feature `tonic`): errors as `tonic::Status`, the
//! trailers-only error layer, the gRPC classifiers and the pushback hint,
//! driven through real palisade layers over in-process `service_fn`
//! upstreams (the shared mock answers `Reply`, not `http::Response`, which
//! is what these classifiers read).
#![cfg(feature = "tonic")]

mod support;

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use palisade::circuit_breaker::{CircuitOpen, State};
use palisade::classify::{Classify, Outcome};
use palisade::grpc::{
    GrpcCodes, GrpcErrorLayer, GrpcErrorsAsFailures, GrpcRetryPushback, StatusErrorsAsFailures,
    status_from_error,
};
use palisade::rate_limit::{InsufficientCapacity, RateLimited};
use palisade::{BoxError, CircuitBreakerLayer, RateLimitLayer, RetryLayer};
use proptest::prelude::*;
use support::ms;
use tokio::time::Instant;
use tonic::{Code, Status};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

/// An error that wraps another, as a layer above palisade's might.
#[derive(Debug)]
struct Wrapped(BoxError);

impl fmt::Display for Wrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("wrapped: secret detail")
    }
}

impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

fn grpc_response(code: &'static str) -> Response<String> {
    Response::builder()
        .header("grpc-status", code)
        .header("content-type", "application/grpc")
        .body(String::new())
        .unwrap()
}

fn header<'a, B>(res: &'a Response<B>, name: &str) -> Option<&'a str> {
    res.headers().get(name).map(|v| v.to_str().unwrap())
}

/// A real `RateLimited` from a real limiter (its fields are not public to
/// construct): one token per `period`, the second call is refused.
async fn rate_limited(period: Duration) -> BoxError {
    let svc = RateLimitLayer::token_bucket(1, period)
        .build()
        .unwrap()
        .layer(service_fn(|()| async { Ok::<_, Infallible>(()) }));
    svc.clone().oneshot(()).await.unwrap();
    let err = svc.oneshot(()).await.unwrap_err();
    assert!(err.is::<RateLimited>());
    err
}

// ---------------------------------------------------------------------------
// Errors to Status

#[test]
fn circuit_open_is_unavailable_with_rounded_up_pushback() {
    let err: BoxError = Box::new(CircuitOpen {
        retry_after: Duration::from_nanos(2_000_000_001),
    });
    let status = status_from_error(&*err);
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "2001"
    );
    assert!(
        status.message().contains("retry after 2001ms"),
        "{}",
        status.message()
    );
}

#[test]
fn zero_wait_still_pushes_back_one_millisecond() {
    // Half-open with every probe taken reports a zero wait: a pushback of 0
    // would tell clients to retry at once.
    let err: BoxError = Box::new(CircuitOpen {
        retry_after: Duration::ZERO,
    });
    let status = status_from_error(&*err);
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "1"
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limited_is_resource_exhausted_with_pushback() {
    let err = rate_limited(Duration::from_micros(2500)).await;
    let status = status_from_error(&*err);
    assert_eq!(status.code(), Code::ResourceExhausted);
    // 2.5 ms rounds up to 3.
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "3"
    );
    assert!(
        status.message().contains("retry after 3ms"),
        "{}",
        status.message()
    );
}

#[tokio::test(start_paused = true)]
async fn insufficient_capacity_is_failed_precondition_and_says_do_not_retry() {
    let svc = RateLimitLayer::token_bucket(1, ms(100))
        .burst(2)
        .cost(|cost: &u64| *cost)
        .build()
        .unwrap()
        .layer(service_fn(|_: u64| async { Ok::<_, Infallible>(()) }));
    let err = svc.oneshot(3).await.unwrap_err();
    assert!(err.is::<InsufficientCapacity>());
    let status = status_from_error(&*err);
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "-1"
    );
}

#[test]
fn unknown_errors_are_unknown_without_their_text() {
    let err: BoxError = "database password is hunter2".into();
    let status = status_from_error(&*err);
    assert_eq!(status.code(), Code::Unknown);
    assert_eq!(status.message(), "internal error");
    assert!(status.metadata().get("grpc-retry-pushback-ms").is_none());
}

#[test]
fn a_status_passes_through_with_its_metadata() {
    let mut original = Status::not_found("no such user");
    original
        .metadata_mut()
        .insert("x-trace", "abc".parse().unwrap());
    let err: BoxError = Box::new(original);
    let status = status_from_error(&*err);
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "no such user");
    assert_eq!(status.metadata().get("x-trace").unwrap(), "abc");
}

#[test]
fn the_source_chain_is_walked() {
    let open: BoxError = Box::new(CircuitOpen { retry_after: ms(5) });
    let err: BoxError = Box::new(Wrapped(Box::new(Wrapped(open))));
    let status = status_from_error(&*err);
    assert_eq!(status.code(), Code::Unavailable);
    assert!(!status.message().contains("secret"));

    let inner: BoxError = Box::new(Status::permission_denied("nope"));
    let err: BoxError = Box::new(Wrapped(inner));
    assert_eq!(status_from_error(&*err).code(), Code::PermissionDenied);
}

#[test]
fn the_outermost_match_wins() {
    // A Status whose source is a breaker rejection: the Status, found
    // first, decides.
    let mut status = Status::aborted("outer");
    status.set_source(Arc::new(CircuitOpen { retry_after: ms(5) }));
    let err: BoxError = Box::new(status);
    assert_eq!(status_from_error(&*err).code(), Code::Aborted);
}

// ---------------------------------------------------------------------------
// GrpcErrorLayer

#[tokio::test(start_paused = true)]
async fn breaker_rejection_becomes_a_trailers_only_unavailable() {
    let breaker = CircuitBreakerLayer::consecutive_failures(1)
        .open_for(Duration::from_secs(30))
        .build()
        .unwrap();
    let app = ServiceBuilder::new()
        .layer(GrpcErrorLayer::new())
        .layer(breaker)
        .service(service_fn(|_: Request<()>| async {
            Err::<Response<String>, _>(BoxError::from("upstream down: 10.0.0.7"))
        }));

    // The upstream's own error: UNKNOWN, its text withheld.
    let first = app.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "grpc-status"), Some("2"));
    assert_eq!(header(&first, "grpc-message"), Some("internal%20error"));

    // Then the breaker's rejection.
    let res = app.oneshot(Request::new(())).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(header(&res, "content-type"), Some("application/grpc"));
    assert_eq!(header(&res, "grpc-status"), Some("14"));
    assert_eq!(header(&res, "grpc-retry-pushback-ms"), Some("30000"));
    assert_eq!(
        header(&res, "grpc-message"),
        Some("service%20unavailable:%20circuit%20open;%20retry%20after%2030000ms")
    );
    assert!(res.body().is_empty(), "trailers-only: no message body");
    // A tonic client reads the same status back from the head.
    let status = Status::from_header_map(res.headers()).unwrap();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(
        status.message(),
        "service unavailable: circuit open; retry after 30000ms"
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limit_rejection_becomes_a_trailers_only_resource_exhausted() {
    let calls = Arc::new(AtomicU64::new(0));
    let seen = calls.clone();
    let app = ServiceBuilder::new()
        .layer(GrpcErrorLayer::new())
        .layer(
            RateLimitLayer::token_bucket(2, Duration::from_secs(1))
                .burst(2)
                .build()
                .unwrap(),
        )
        .service(service_fn(move |_: Request<()>| {
            seen.fetch_add(1, SeqCst);
            async { Ok::<_, Infallible>(grpc_response("0")) }
        }));
    for _ in 0..2 {
        let ok = app.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(header(&ok, "grpc-status"), Some("0"));
    }
    let res = app.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(header(&res, "grpc-status"), Some("8"));
    assert_eq!(header(&res, "content-type"), Some("application/grpc"));
    // One token every 500 ms.
    assert_eq!(header(&res, "grpc-retry-pushback-ms"), Some("500"));
    assert_eq!(calls.load(SeqCst), 2);

    tokio::time::advance(ms(500)).await;
    let ok = app.oneshot(Request::new(())).await.unwrap();
    assert_eq!(header(&ok, "grpc-status"), Some("0"));
}

#[tokio::test(start_paused = true)]
async fn an_upstream_status_error_keeps_its_code_and_message() {
    let app = GrpcErrorLayer::new().layer(service_fn(|_: Request<()>| async {
        Err::<Response<String>, _>(Status::invalid_argument("bad name"))
    }));
    let res = app.oneshot(Request::new(())).await.unwrap();
    assert_eq!(header(&res, "grpc-status"), Some("3"));
    assert_eq!(header(&res, "grpc-message"), Some("bad%20name"));
}

/// Fails `poll_ready` once with a breaker rejection, then is ready.
#[derive(Clone)]
struct FailsReadyOnce {
    failed: Arc<AtomicU64>,
}

impl Service<Request<()>> for FailsReadyOnce {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Response<String>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.failed.fetch_add(1, SeqCst) == 0 {
            return Poll::Ready(Err(Box::new(CircuitOpen { retry_after: ms(7) })));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        std::future::ready(Ok(grpc_response("0")))
    }
}

#[tokio::test(start_paused = true)]
async fn a_readiness_error_answers_the_next_call_only() {
    let polls = Arc::new(AtomicU64::new(0));
    let mut app = GrpcErrorLayer::new().layer(FailsReadyOnce {
        failed: polls.clone(),
    });
    app.ready().await.unwrap();
    // Ready twice: the pending error answers; the inner service is not
    // polled again (it could reserve capacity the answer would never use).
    app.ready().await.unwrap();
    assert_eq!(polls.load(SeqCst), 1);
    // A clone holds no pending error of the original's.
    let fresh = app.clone();
    let res = app.call(Request::new(())).await.unwrap();
    assert_eq!(header(&res, "grpc-status"), Some("14"));
    assert_eq!(header(&res, "grpc-retry-pushback-ms"), Some("7"));
    let res = fresh.oneshot(Request::new(())).await.unwrap();
    assert_eq!(header(&res, "grpc-status"), Some("0"));
    let res = app.oneshot(Request::new(())).await.unwrap();
    assert_eq!(header(&res, "grpc-status"), Some("0"));
}

// ---------------------------------------------------------------------------
// Classifiers

const ALL_CODES: [(&str, Code); 17] = [
    ("0", Code::Ok),
    ("1", Code::Cancelled),
    ("2", Code::Unknown),
    ("3", Code::InvalidArgument),
    ("4", Code::DeadlineExceeded),
    ("5", Code::NotFound),
    ("6", Code::AlreadyExists),
    ("7", Code::PermissionDenied),
    ("8", Code::ResourceExhausted),
    ("9", Code::FailedPrecondition),
    ("10", Code::Aborted),
    ("11", Code::OutOfRange),
    ("12", Code::Unimplemented),
    ("13", Code::Internal),
    ("14", Code::Unavailable),
    ("15", Code::DataLoss),
    ("16", Code::Unauthenticated),
];

fn classify_header(c: &GrpcErrorsAsFailures, value: HeaderValue) -> Outcome {
    let mut res = Response::new(());
    res.headers_mut().insert("grpc-status", value);
    c.classify(&Ok::<_, ()>(res))
}

#[test]
fn default_classifier_on_every_code() {
    let c = GrpcErrorsAsFailures::default();
    let s = StatusErrorsAsFailures::default();
    for (text, code) in ALL_CODES {
        let expected = match code {
            Code::Ok => Outcome::Success,
            Code::Unknown
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss => Outcome::Failure,
            _ => Outcome::Ignored,
        };
        assert_eq!(
            c.classify(&Ok::<_, ()>(grpc_response(text))),
            expected,
            "grpc-status {text}"
        );
        if code != Code::Ok {
            assert_eq!(
                s.classify(&Err::<(), _>(Status::new(code, "x"))),
                expected,
                "{code:?}"
            );
        }
    }
    assert_eq!(s.classify(&Ok::<(), Status>(())), Outcome::Success);
}

#[test]
fn all_errors_counts_every_code_but_ok() {
    let c = GrpcErrorsAsFailures::with_failures(GrpcCodes::all_errors());
    let s = StatusErrorsAsFailures::with_failures(GrpcCodes::all_errors());
    for (text, code) in ALL_CODES {
        let expected = if code == Code::Ok {
            Outcome::Success
        } else {
            Outcome::Failure
        };
        assert_eq!(c.classify(&Ok::<_, ()>(grpc_response(text))), expected);
        if code != Code::Ok {
            assert_eq!(s.classify(&Err::<(), _>(Status::new(code, ""))), expected);
        }
    }
}

#[test]
fn custom_failure_set() {
    let codes = GrpcCodes::empty().with(Code::ResourceExhausted);
    let c = GrpcErrorsAsFailures::with_failures(codes);
    assert_eq!(c.failures(), codes);
    assert_eq!(
        c.classify(&Ok::<_, ()>(grpc_response("8"))),
        Outcome::Failure
    );
    assert_eq!(
        c.classify(&Ok::<_, ()>(grpc_response("14"))),
        Outcome::Ignored
    );
}

#[test]
fn malformed_grpc_status_reads_as_unknown() {
    let c = GrpcErrorsAsFailures::new();
    let without_unknown =
        GrpcErrorsAsFailures::with_failures(GrpcCodes::server_errors().without(Code::Unknown));
    let hostile: Vec<HeaderValue> = vec![
        HeaderValue::from_static("garbage"),
        HeaderValue::from_static("17"),
        HeaderValue::from_static("-1"),
        HeaderValue::from_static(" 14"),
        HeaderValue::from_static("014"),
        HeaderValue::from_static("14 "),
        HeaderValue::from_static(""),
        HeaderValue::from_static("99999999999999999999999999999999999999"),
        HeaderValue::from_bytes(&[0xff, 0xfe, b'1', b'4']).unwrap(),
        HeaderValue::from_bytes(&[0x80]).unwrap(),
    ];
    for value in hostile {
        assert_eq!(
            classify_header(&c, value.clone()),
            Outcome::Failure,
            "{value:?}"
        );
        // Read as UNKNOWN, not as any other code: taking UNKNOWN out of
        // the set makes the same header ignored.
        assert_eq!(
            classify_header(&without_unknown, value.clone()),
            Outcome::Ignored,
            "{value:?}"
        );
    }
}

#[test]
fn heads_without_grpc_status() {
    let c = GrpcErrorsAsFailures::new();
    let plain = |s: u16| Response::builder().status(s).body(()).unwrap();
    // 200 without grpc-status: the status is in the trailers, unseen.
    assert_eq!(c.classify(&Ok::<_, ()>(plain(200))), Outcome::Success);
    // A proxy's 503 / 502 / 504 / 429 is UNAVAILABLE to a gRPC client.
    for s in [429, 502, 503, 504] {
        assert_eq!(c.classify(&Ok::<_, ()>(plain(s))), Outcome::Failure, "{s}");
    }
    // Exactly the mapped code, checked one code at a time.
    let only = |code: Code| GrpcErrorsAsFailures::with_failures(GrpcCodes::empty().with(code));
    let mapped = [
        (400, Code::Internal),
        (401, Code::Unauthenticated),
        (403, Code::PermissionDenied),
        (404, Code::Unimplemented),
        (429, Code::Unavailable),
        (500, Code::Unknown),
        (502, Code::Unavailable),
        (503, Code::Unavailable),
        (504, Code::Unavailable),
        (418, Code::Unknown),
    ];
    for (s, code) in mapped {
        assert_eq!(
            only(code).classify(&Ok::<_, ()>(plain(s))),
            Outcome::Failure,
            "{s}"
        );
        let others = GrpcErrorsAsFailures::with_failures(GrpcCodes::all_errors().without(code));
        assert_eq!(
            others.classify(&Ok::<_, ()>(plain(s))),
            Outcome::Ignored,
            "{s}"
        );
    }
    assert_eq!(c.classify(&Ok::<_, ()>(plain(500))), Outcome::Failure); // UNKNOWN
    assert_eq!(c.classify(&Ok::<_, ()>(plain(404))), Outcome::Ignored); // UNIMPLEMENTED
    assert_eq!(c.classify(&Ok::<_, ()>(plain(401))), Outcome::Ignored); // UNAUTHENTICATED
    // A transport error is a failure.
    assert_eq!(
        c.classify(&Err::<Response<()>, _>("connection reset")),
        Outcome::Failure
    );
}

proptest! {
    /// Any header value at all: no panic, and only the exact texts "0" to
    /// "16" are read as their code; everything else is UNKNOWN (a failure).
    #[test]
    fn any_grpc_status_bytes_classify_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..24)) {
        let Ok(value) = HeaderValue::from_bytes(&bytes) else { return Ok(()) };
        let c = GrpcErrorsAsFailures::new();
        let outcome = classify_header(&c, value);
        let code = ALL_CODES.iter().find(|(t, _)| t.as_bytes() == bytes.as_slice());
        let expected = match code {
            Some((_, code)) => c.classify(&Ok::<_, ()>(grpc_response(code_text(*code)))),
            None => Outcome::Failure,
        };
        prop_assert_eq!(outcome, expected);
    }
}

fn code_text(code: Code) -> &'static str {
    ALL_CODES.iter().find(|(_, c)| *c == code).unwrap().0
}

// ---------------------------------------------------------------------------
// Layers with the classifiers

#[tokio::test(start_paused = true)]
async fn breaker_trips_on_ok_responses_with_grpc_status_unavailable() {
    let breaker = CircuitBreakerLayer::consecutive_failures(3)
        .open_for(Duration::from_secs(5))
        .classifier(GrpcErrorsAsFailures::default())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let calls = Arc::new(AtomicU64::new(0));
    let answer = Arc::new(std::sync::Mutex::new("14"));
    let (seen, code) = (calls.clone(), answer.clone());
    let app = ServiceBuilder::new()
        .layer(GrpcErrorLayer::new())
        .layer(breaker)
        .service(service_fn(move |_: Request<()>| {
            seen.fetch_add(1, SeqCst);
            let code = *code.lock().unwrap();
            async move { Ok::<_, Infallible>(grpc_response(code)) }
        }));

    // NOT_FOUND is the caller's problem: it never trips the breaker.
    *answer.lock().unwrap() = "5";
    for _ in 0..5 {
        app.clone().oneshot(Request::new(())).await.unwrap();
    }
    assert_eq!(handle.state(), State::Closed);

    // Three UNAVAILABLE answers, all `Ok(response)` at the HTTP level.
    *answer.lock().unwrap() = "14";
    for _ in 0..3 {
        let res = app.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(header(&res, "grpc-status"), Some("14"));
    }
    assert_eq!(handle.state(), State::Open);
    assert_eq!(calls.load(SeqCst), 8);

    // Rejected without calling the upstream, as a gRPC UNAVAILABLE.
    tokio::time::advance(ms(1500)).await;
    let res = app.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(header(&res, "grpc-status"), Some("14"));
    assert_eq!(header(&res, "grpc-retry-pushback-ms"), Some("3500"));
    assert_eq!(calls.load(SeqCst), 8);

    // After the open period a probe answering OK closes it.
    tokio::time::advance(ms(3500)).await;
    *answer.lock().unwrap() = "0";
    let res = app.oneshot(Request::new(())).await.unwrap();
    assert_eq!(header(&res, "grpc-status"), Some("0"));
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(calls.load(SeqCst), 9);
}

#[tokio::test(start_paused = true)]
async fn breaker_over_a_status_service_ignores_client_errors() {
    let breaker = CircuitBreakerLayer::consecutive_failures(2)
        .classifier(StatusErrorsAsFailures::new())
        .build()
        .unwrap();
    let handle = breaker.handle();
    let code = Arc::new(std::sync::Mutex::new(Code::InvalidArgument));
    let answer = code.clone();
    let svc = breaker.layer(service_fn(move |_: ()| {
        let code = *answer.lock().unwrap();
        async move { Err::<(), _>(Status::new(code, "")) }
    }));
    for _ in 0..4 {
        svc.clone().oneshot(()).await.unwrap_err();
    }
    assert_eq!(handle.state(), State::Closed);
    *code.lock().unwrap() = Code::Internal;
    for _ in 0..2 {
        svc.clone().oneshot(()).await.unwrap_err();
    }
    assert_eq!(handle.state(), State::Open);
}

// ---------------------------------------------------------------------------
// Server pushback read back by a client's retry layer

#[tokio::test(start_paused = true)]
async fn client_retry_waits_for_the_servers_pushback() {
    // Server: a limiter of one call per 800 ms behind GrpcErrorLayer.
    let server = ServiceBuilder::new()
        .layer(GrpcErrorLayer::new())
        .layer(RateLimitLayer::token_bucket(1, ms(800)).build().unwrap())
        .service(service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(grpc_response("0"))
        }));
    // Client: retries RESOURCE_EXHAUSTED, honouring pushback, with a tiny
    // backoff of its own so the wait is the server's.
    let retry = RetryLayer::exponential(ms(1))
        .max_attempts(3)
        .classifier(GrpcErrorsAsFailures::with_failures(
            GrpcCodes::server_errors().with(Code::ResourceExhausted),
        ))
        .retry_after(GrpcRetryPushback)
        .max_retry_after(Duration::from_secs(5))
        .build()
        .unwrap();
    // Between them, a wire: the response's extensions (where the server's
    // error layer marks its own refusals for classifiers in its process)
    // do not cross it.
    let wire =
        server
            .map_request(|()| Request::new(()))
            .map_response(|mut res: http::Response<_>| {
                res.extensions_mut().clear();
                res
            });
    let client = ServiceBuilder::new().layer(retry).service(wire);

    client.clone().oneshot(()).await.unwrap();
    let start = Instant::now();
    let res = client.oneshot(()).await.unwrap();
    assert_eq!(header(&res, "grpc-status"), Some("0"));
    let waited = start.elapsed();
    assert!(waited >= ms(800) && waited < ms(810), "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn negative_pushback_is_not_retried() {
    let calls = Arc::new(AtomicU64::new(0));
    let seen = calls.clone();
    let upstream = service_fn(move |_: ()| {
        seen.fetch_add(1, SeqCst);
        async {
            let mut res = grpc_response("14");
            res.headers_mut()
                .insert("grpc-retry-pushback-ms", HeaderValue::from_static("-1"));
            Ok::<_, Infallible>(res)
        }
    });
    let retry = RetryLayer::exponential(ms(1))
        .max_attempts(4)
        .classifier(GrpcErrorsAsFailures::new())
        .retry_after(GrpcRetryPushback)
        .max_retry_after(Duration::from_secs(60))
        .build()
        .unwrap();
    let res = retry.layer(upstream).oneshot(()).await.unwrap();
    assert_eq!(header(&res, "grpc-status"), Some("14"));
    assert_eq!(calls.load(SeqCst), 1);
}
