//! A tonic server and client, each behind palisade's recommended stack,
//! talking gRPC over a real port (tonic-health's `Health` service, so no
//! protoc is needed).
//!
//! ```text
//! cargo run --all-features --example tonic_health -- --server [ADDR]   # serve until Ctrl-C
//! cargo run --all-features --example tonic_health -- --client [ADDR]   # a few calls to it
//! cargo run --all-features --example tonic_health -- --self-test       # both, on 127.0.0.1:0
//! ```
//!
//! With no argument it runs the self-test: it starts the server, sends
//! requests through the client stack, prints what happened and exits (1 if
//! anything was not as expected). ADDR defaults to 127.0.0.1:50051.
//!
//! Server: `GrpcErrorLayer -> CircuitBreakerLayer(GrpcErrorsAsFailures) ->
//! RateLimitLayer` (one call per 100 ms per `x-client`).
//! Client: `ClientStatusLayer -> BufferBodyLayer -> RetryLayer(GrpcRetryPolicy)
//! -> CircuitBreakerLayer -> Channel`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use palisade::circuit_breaker::CircuitBreakerHandle;
use palisade::grpc::{ClientStatusLayer, GrpcErrorLayer, GrpcErrorsAsFailures, GrpcRetryPolicy};
use palisade::http::{BufferBodyLayer, CloneBuffered};
use palisade::retry::RetryHandle;
use palisade::{BoxError, CircuitBreakerLayer, RateLimitLayer, RetryLayer};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceBuilder;

const DEFAULT_ADDR: &str = "127.0.0.1:50051";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = |i: usize| -> Result<SocketAddr, BoxError> {
        Ok(args.get(i).map_or(DEFAULT_ADDR, String::as_str).parse()?)
    };
    match args.first().map(String::as_str) {
        Some("--server") => {
            let listener = TcpListener::bind(addr(1)?).await?;
            println!(
                "serving grpc.health.v1.Health on {}",
                listener.local_addr()?
            );
            serve(listener).await
        }
        Some("--client") => {
            let mut client = client(channel(addr(1)?));
            for i in 0..3 {
                let start = Instant::now();
                let result = check(&mut client.health, "example").await;
                println!("call {i}: {} in {:?}", describe(&result), start.elapsed());
            }
            Ok(())
        }
        None | Some("--self-test") => self_test().await,
        Some(other) => {
            Err(format!("unknown argument {other:?}: --server, --client or --self-test").into())
        }
    }
}

/// The server stack: rejections become trailers-only gRPC errors with
/// pushback; the breaker counts only server errors (never the limiter's
/// refusals); one call per 100 ms per `x-client`.
async fn serve(listener: TcpListener) -> Result<(), BoxError> {
    let breaker = CircuitBreakerLayer::consecutive_failures(5)
        .open_for(Duration::from_secs(10))
        .classifier(GrpcErrorsAsFailures::new())
        .build()?;
    let limiter = RateLimitLayer::token_bucket(1, Duration::from_millis(100))
        .keyed(|req: &http::Request<Body>| {
            req.headers().get("x-client").map(|v| v.as_bytes().to_vec())
        })
        .build()?;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("example", tonic_health::ServingStatus::Serving)
        .await;
    Server::builder()
        .layer(
            ServiceBuilder::new()
                .layer(GrpcErrorLayer::new())
                .layer(breaker)
                .layer(limiter),
        )
        .add_service(health)
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await?;
    Ok(())
}

fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid URI")
        .connect_timeout(Duration::from_secs(1))
        .connect_lazy()
}

/// A client behind the recommended stack, and handles on its layers.
struct Client<S> {
    health: HealthClient<S>,
    retry: RetryHandle,
    breaker: CircuitBreakerHandle,
}

fn client(
    channel: Channel,
) -> Client<
    impl tonic::client::GrpcService<Body, Error = Status, ResponseBody = Body, Future = impl Send>
    + Clone,
> {
    let retry = GrpcRetryPolicy::new()
        .apply(RetryLayer::exponential(Duration::from_millis(20)).max_attempts(3))
        .clone_request(CloneBuffered)
        .max_retry_after(Duration::from_millis(500))
        .build()
        .expect("valid retry settings");
    let breaker = CircuitBreakerLayer::consecutive_failures(5)
        .open_for(Duration::from_secs(5))
        .classifier(GrpcErrorsAsFailures::new())
        .build()
        .expect("valid breaker settings");
    let (retry_handle, breaker_handle) = (retry.handle(), breaker.handle());
    let stack = ServiceBuilder::new()
        .layer(ClientStatusLayer::new()) // every error reaches the caller as the right Status
        .layer(BufferBodyLayer::new()) // keeps bodies up to 64 KiB so they can be sent again
        .layer(retry) // A6: UNAVAILABLE, and RESOURCE_EXHAUSTED after its pushback
        .layer(breaker) // under retry: each attempt counts
        .service(channel);
    Client {
        health: HealthClient::new(stack),
        retry: retry_handle,
        breaker: breaker_handle,
    }
}

async fn check<S>(health: &mut HealthClient<S>, who: &str) -> Result<i32, Status>
where
    S: tonic::client::GrpcService<Body, Error = Status, ResponseBody = Body>,
{
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: "example".into(),
    });
    request
        .metadata_mut()
        .insert("x-client", who.parse().expect("ASCII metadata"));
    let call = health.check(request);
    match tokio::time::timeout(Duration::from_secs(5), call).await {
        Ok(result) => result.map(|r| r.into_inner().status),
        Err(_) => Err(Status::deadline_exceeded("no answer within 5 s")),
    }
}

fn describe(result: &Result<i32, Status>) -> String {
    match result {
        Ok(status) => format!("OK, serving status {status}"),
        Err(status) => {
            let pushback = status
                .metadata()
                .get("grpc-retry-pushback-ms")
                .and_then(|v| v.to_str().ok())
                .map(|ms| format!(", pushback {ms} ms"))
                .unwrap_or_default();
            format!("{:?} {:?}{pushback}", status.code(), status.message())
        }
    }
}

/// Starts the server on 127.0.0.1:0, exercises the client stack, and says
/// what happened; an error if anything was not as expected.
async fn self_test() -> Result<(), BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(serve(listener));
    println!("server on {addr}");
    let mut c = client(channel(addr));

    // 1. Three calls in a row from one client: the server admits one per
    // 100 ms and pushes back the others; the client waits each pushback.
    let start = Instant::now();
    for i in 0..3 {
        let t = Instant::now();
        let result = check(&mut c.health, "self-test").await;
        println!("call {i}: {} after {:?}", describe(&result), t.elapsed());
        expect(result.is_ok(), "a pushed-back call succeeds on retry")?;
    }
    println!(
        "  3 calls in {:?}, {} retries after pushback",
        start.elapsed(),
        c.retry.retries()
    );
    expect(
        c.retry.retries() >= 2,
        "the second and third calls were pushed back and retried",
    )?;

    // 2. The client's breaker open: decided in the client, reported as
    // UNAVAILABLE with the wait as pushback.
    c.breaker.force_open();
    let result = check(&mut c.health, "self-test").await;
    println!("open breaker: {}", describe(&result));
    expect(
        matches!(&result, Err(s) if s.code() == Code::Unavailable && s.metadata().contains_key("grpc-retry-pushback-ms")),
        "an open breaker is UNAVAILABLE with pushback",
    )?;
    c.breaker.reset();

    // 3. Nothing listening: tonic's own status, after the retries.
    let closed = TcpListener::bind("127.0.0.1:0").await?;
    let nowhere = closed.local_addr()?;
    drop(closed);
    let mut lost = client(channel(nowhere));
    let result = check(&mut lost.health, "self-test").await;
    println!(
        "closed port: {} ({} retries)",
        describe(&result),
        lost.retry.retries()
    );
    expect(
        matches!(&result, Err(s) if s.code() == Code::Unavailable),
        "a refused connection is UNAVAILABLE",
    )?;

    server.abort();
    println!("self-test passed");
    Ok(())
}

fn expect(ok: bool, what: &str) -> Result<(), BoxError> {
    if ok {
        Ok(())
    } else {
        Err(format!("self-test failed: {what}").into())
    }
}
