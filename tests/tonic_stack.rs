//! The gRPC stacks the README recommends, over real loopback sockets: a
//! tonic server (tonic-health's `Health` service) behind
//! `GrpcErrorLayer -> CircuitBreakerLayer(GrpcErrorsAsFailures) -> RateLimitLayer`,
//! and a tonic `Channel` behind
//! `ClientStatusLayer -> BufferBodyLayer -> RetryLayer(GrpcRetryPolicy) -> CircuitBreakerLayer`,
//! called through tonic-health's generated client.
//!
//! Real sockets mean real time: every wait here is a few milliseconds, and
//! every test is bounded by a timeout.
#![cfg(feature = "tonic")]

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade::circuit_breaker::{CircuitBreakerHandle, CircuitOpen, State};
use palisade::classify::local_rejection;
use palisade::grpc::{ClientStatusLayer, GrpcErrorLayer, GrpcErrorsAsFailures, GrpcRetryPolicy};
use palisade::http::{BufferBodyLayer, CloneBuffered};
use palisade::rate_limit::RateLimitHandle;
use palisade::retry::RetryHandle;
use palisade::{BoxError, CircuitBreakerLayer, RateLimitLayer, RetryLayer};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower::{Layer, Service, ServiceBuilder};

/// The longest any test may take: real sockets, but never a hang.
const BOUND: Duration = Duration::from_secs(10);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

// ---------------------------------------------------------------------------
// The server

/// Answers the next calls with scripted errors (`Err(Status)`, which tonic's
/// server would send as trailers-only) before the health service, and
/// counts the calls that reach it.
#[derive(Clone)]
struct Faults<S> {
    inner: S,
    script: Arc<Mutex<VecDeque<Status>>>,
    calls: Arc<Mutex<u64>>,
}

#[derive(Clone, Default)]
struct FaultScript {
    script: Arc<Mutex<VecDeque<Status>>>,
    calls: Arc<Mutex<u64>>,
}

impl FaultScript {
    fn push(&self, status: Status) {
        self.script.lock().unwrap().push_back(status);
    }
    fn calls(&self) -> u64 {
        *self.calls.lock().unwrap()
    }
}

impl<S> Layer<S> for FaultScript {
    type Service = Faults<S>;
    fn layer(&self, inner: S) -> Faults<S> {
        Faults {
            inner,
            script: self.script.clone(),
            calls: self.calls.clone(),
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<http::Request<Body>> for Faults<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = BoxFuture<Result<http::Response<Body>, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        *self.calls.lock().unwrap() += 1;
        if let Some(status) = self.script.lock().unwrap().pop_front() {
            return Box::pin(async move { Err(status.into()) });
        }
        let future = self.inner.call(req);
        Box::pin(async move { future.await.map_err(Into::into) })
    }
}

/// A server on `127.0.0.1:0` and what the tests look at.
struct TestServer {
    addr: SocketAddr,
    breaker: CircuitBreakerHandle,
    limiter: RateLimitHandle,
    faults: FaultScript,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

/// The server stack of the README: `GrpcErrorLayer`, a breaker counting
/// gRPC server errors (3 in a row open it for 30 s), a rate limiter of one
/// call per `period` per `x-client` metadata value, then scripted faults in
/// front of tonic-health's service.
async fn start_server(period: Duration) -> TestServer {
    let breaker = CircuitBreakerLayer::consecutive_failures(3)
        .open_for(Duration::from_secs(30))
        .classifier(GrpcErrorsAsFailures::new())
        .build()
        .unwrap();
    let limiter = RateLimitLayer::token_bucket(1, period)
        .keyed(|req: &http::Request<Body>| {
            req.headers().get("x-client").map(|v| v.as_bytes().to_vec())
        })
        .build()
        .unwrap();
    let faults = FaultScript::default();
    let (breaker_handle, limiter_handle) = (breaker.handle(), limiter.handle());

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("palisade", tonic_health::ServingStatus::Serving)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
    let server = Server::builder()
        .layer(
            ServiceBuilder::new()
                .layer(GrpcErrorLayer::new())
                .layer(breaker)
                .layer(limiter)
                .layer(faults.clone()),
        )
        .add_service(health)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
            let _ = stop.await;
        });
    tokio::spawn(async move {
        let _keep = reporter;
        server.await.unwrap();
    });
    TestServer {
        addr,
        breaker: breaker_handle,
        limiter: limiter_handle,
        faults,
        _shutdown: shutdown,
    }
}

// ---------------------------------------------------------------------------
// The client

/// The client stack of the README over a channel to `addr`.
struct TestClient<S> {
    health: HealthClient<S>,
    retry: RetryHandle,
    breaker: CircuitBreakerHandle,
    buffer: BufferBodyLayer,
}

fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect_lazy()
}

fn client(
    channel: Channel,
    max_retry_after: Duration,
) -> TestClient<
    impl tonic::client::GrpcService<Body, Error = Status, ResponseBody = Body, Future = impl Send>
    + Clone
    + Send,
> {
    let retry = GrpcRetryPolicy::new()
        .apply(RetryLayer::exponential(ms(5)).max_attempts(3))
        .clone_request(CloneBuffered)
        .max_retry_after(max_retry_after)
        .build()
        .unwrap();
    let breaker = CircuitBreakerLayer::consecutive_failures(5)
        .open_for(Duration::from_secs(30))
        .classifier(GrpcErrorsAsFailures::new())
        .build()
        .unwrap();
    let buffer = BufferBodyLayer::new();
    let (retry_handle, breaker_handle) = (retry.handle(), breaker.handle());
    let stack = ServiceBuilder::new()
        .layer(ClientStatusLayer::new())
        .layer(buffer.clone())
        .layer(retry)
        .layer(breaker)
        .service(channel);
    TestClient {
        health: HealthClient::new(stack),
        retry: retry_handle,
        breaker: breaker_handle,
        buffer,
    }
}

async fn check<S>(
    health: &mut HealthClient<S>,
    who: &'static str,
) -> Result<HealthCheckResponse, Status>
where
    S: tonic::client::GrpcService<Body>,
    S::Error: Into<BoxError>,
    S::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <S::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: "palisade".into(),
    });
    request
        .metadata_mut()
        .insert("x-client", who.parse().unwrap());
    tokio::time::timeout(BOUND, health.check(request))
        .await
        .expect("a call over loopback took longer than the bound")
        .map(tonic::Response::into_inner)
}

fn serving(response: &HealthCheckResponse) -> bool {
    response.status == ServingStatus::Serving as i32
}

// ---------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn a_unary_call_is_retried_after_unavailable_and_succeeds() {
    let server = start_server(ms(1)).await;
    server.faults.push(Status::unavailable("warming up"));
    let mut c = client(channel(server.addr), Duration::from_secs(1));

    let response = check(&mut c.health, "a").await.unwrap();
    assert!(serving(&response));
    // Two calls reached the server: the UNAVAILABLE one, then the retry,
    // whose body was rebuilt from the buffered bytes.
    assert_eq!(server.faults.calls(), 2);
    assert_eq!(c.retry.retries(), 1);
    assert_eq!(c.buffer.unbuffered(), 0);
    assert_eq!(c.breaker.state(), State::Closed);
}

#[tokio::test]
async fn without_body_buffering_a_tonic_request_is_never_retried() {
    // The same stack without BufferBodyLayer: CloneBuffered finds no bytes,
    // so the request is sent once and counted as not clonable.
    let server = start_server(ms(1)).await;
    server.faults.push(Status::unavailable("warming up"));
    let retry = GrpcRetryPolicy::new()
        .apply(RetryLayer::exponential(ms(5)).max_attempts(3))
        .clone_request(CloneBuffered)
        .build()
        .unwrap();
    let handle = retry.handle();
    let stack = ServiceBuilder::new()
        .layer(ClientStatusLayer::new())
        .layer(retry)
        .service(channel(server.addr));
    let mut health = HealthClient::new(stack);
    let status = check(&mut health, "a").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), "warming up");
    assert_eq!(server.faults.calls(), 1);
    assert_eq!(handle.not_clonable(), 1);
}

#[tokio::test]
async fn resource_exhausted_with_pushback_is_retried_after_exactly_that_wait() {
    let period = ms(120);
    let server = start_server(period).await;
    let mut c = client(channel(server.addr), Duration::from_secs(1));
    // Connect first, so the timing below is the limiter's alone.
    check(&mut c.health, "warm-up").await.unwrap();

    check(&mut c.health, "a").await.unwrap();
    let start = Instant::now();
    let response = check(&mut c.health, "a").await.unwrap();
    let waited = start.elapsed();
    assert!(serving(&response));
    // Refused once with a pushback of at most 120 ms, admitted on the
    // retry: the client waited the pushback (not its 5 ms backoff) and
    // nothing like a second retry.
    assert!(waited >= ms(80), "{waited:?}");
    assert!(waited < period + ms(400), "{waited:?}");
    assert_eq!(c.retry.retries(), 1);
    assert_eq!(server.limiter.rejected(), 1);
    // The server's breaker ignored its own limiter's refusal.
    assert_eq!(server.breaker.counts().failures, 0);
}

#[tokio::test]
async fn a_greedy_clients_resource_exhausted_never_opens_the_servers_breaker() {
    let server = start_server(Duration::from_secs(5)).await;
    // No retries: the greedy client sees every refusal.
    let mut greedy = HealthClient::new(
        ServiceBuilder::new()
            .layer(ClientStatusLayer::new())
            .service(channel(server.addr)),
    );
    check(&mut greedy, "greedy").await.unwrap();
    for _ in 0..10 {
        let status = check(&mut greedy, "greedy").await.unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        let pushback: u64 = status
            .metadata()
            .get("grpc-retry-pushback-ms")
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(pushback > 0 && pushback <= 5_000, "{pushback}");
    }
    // Three failures in a row would open it: ten refusals did not.
    assert_eq!(server.breaker.state(), State::Closed);
    assert_eq!(server.breaker.counts().failures, 0);
    assert_eq!(server.limiter.rejected(), 10);

    // Everyone else is served.
    let mut other = client(channel(server.addr), Duration::from_secs(1));
    for who in ["b", "c", "d"] {
        assert!(serving(&check(&mut other.health, who).await.unwrap()));
    }
}

#[tokio::test]
async fn an_open_client_breaker_reaches_the_caller_as_unavailable_with_pushback() {
    let server = start_server(ms(1)).await;
    // A wait above max_retry_after is not sat through: the caller gets it.
    let mut c = client(channel(server.addr), ms(50));
    check(&mut c.health, "a").await.unwrap();
    c.breaker.force_open();

    let calls = server.faults.calls();
    let status = check(&mut c.health, "a").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    let pushback = status.metadata().get("grpc-retry-pushback-ms").unwrap();
    assert!(!pushback.is_empty());
    assert!(
        status.message().contains("circuit open"),
        "{}",
        status.message()
    );
    // The rejection is the status's source.
    let rejection = local_rejection(&status).expect("the rejection in the source chain");
    assert!(rejection.retry_after.is_some());
    assert!(
        std::error::Error::source(&status)
            .unwrap()
            .is::<CircuitOpen>()
    );
    // Decided in the client: the server saw nothing.
    assert_eq!(server.faults.calls(), calls);
}

#[tokio::test]
async fn a_transport_error_keeps_tonics_status() {
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);

    // What a bare tonic client reports.
    let mut bare = HealthClient::new(channel(addr));
    let expected = check(&mut bare, "a").await.unwrap_err();
    assert_eq!(expected.code(), Code::Unavailable);

    // The full stack reports the same status, after retrying (a connection
    // refused is UNAVAILABLE, retryable).
    let mut c = client(channel(addr), Duration::from_secs(1));
    let status = check(&mut c.health, "a").await.unwrap_err();
    assert_eq!(status.code(), expected.code());
    assert_eq!(status.message(), expected.message());
    assert_eq!(c.retry.retries(), 2);
}

#[tokio::test]
async fn without_the_status_layer_a_rejection_reaches_the_caller_as_unknown() {
    // Why ClientStatusLayer exists: tonic's generated client turns a
    // palisade error into UNKNOWN with the error's text.
    let server = start_server(ms(1)).await;
    let breaker = CircuitBreakerLayer::consecutive_failures(1)
        .build()
        .unwrap();
    breaker.handle().force_open();
    let mut health = HealthClient::new(
        ServiceBuilder::new()
            .layer(breaker)
            .service(channel(server.addr)),
    );
    let status = check(&mut health, "a").await.unwrap_err();
    assert_eq!(status.code(), Code::Unknown);
    assert!(local_rejection(&status).is_some());
}
