//! gRPC integration (feature `tonic`): palisade's layers in front of a
//! tonic server and around a tonic client, speaking gRPC's statuses and
//! its retry design (proposal A6).
//!
//! # Server: the recommended order
//!
//! ```text
//! Server::builder()
//!     .layer(ServiceBuilder::new()
//!         .layer(GrpcErrorLayer::new())  // 1. every error -> a gRPC status
//!         .layer(breaker)                // 2. CircuitBreakerLayer with GrpcErrorsAsFailures
//!         .layer(limiter))               // 3. RateLimitLayer
//!     .add_service(GreeterServer::new(greeter))
//! ```
//!
//! 1. [`GrpcErrorLayer`] **outermost**: tonic answers only a `Status` error
//!    with a gRPC status and resets the stream for any other error (a
//!    palisade rejection). This layer turns every error below it into a
//!    trailers-only response (HTTP 200, `content-type: application/grpc`,
//!    `grpc-status`, `grpc-message` and the metadata in the headers, an
//!    empty body) carrying `grpc-retry-pushback-ms`; its error type is
//!    `Infallible`.
//! 2. The **breaker above the limiter**, counting with
//!    [`GrpcErrorsAsFailures`]: it sees the handlers' answers (a handler's
//!    `Err(Status)` is a trailers-only response by then) and ignores the
//!    limiter's refusals, so one greedy client's `RESOURCE_EXHAUSTED` never
//!    opens it for everyone; and while it is open, refused calls spend no
//!    rate-limit tokens.
//! 3. The **limiter innermost**: it admits exactly the calls that reach the
//!    service.
//!
//! The layers wrap the server's routes, built once and cloned per
//! connection, so every connection shares one breaker and one limit.
//!
//! # Client: the recommended order
//!
//! ```text
//! ServiceBuilder::new()
//!     .layer(ClientStatusLayer::new())   // 1. every error -> the right Status
//!     .layer(BufferBodyLayer::new())     // 2. bodies up to 64 KiB kept for retries
//!     .layer(retry)                      // 3. RetryLayer: GrpcRetryPolicy + CloneBuffered
//!     .layer(breaker)                    // 4. CircuitBreakerLayer with GrpcErrorsAsFailures
//!     .service(channel)                  // 5. tonic::transport::Channel
//! // then HealthClient::new(stack), GreeterClient::new(stack), ...
//! ```
//!
//! 1. [`ClientStatusLayer`] **outermost**: tonic's generated client turns
//!    its service's error into a `Status` with `Status::from_error`, which
//!    makes a palisade rejection `UNKNOWN`, and a `poll_ready` error
//!    `UNKNOWN "Service was not ready"`. This layer gives the caller
//!    `UNAVAILABLE` / `RESOURCE_EXHAUSTED` with pushback for palisade's
//!    rejections, tonic's own status for everything else (a refused
//!    connection stays `UNAVAILABLE "tcp connect error"`), and never fails
//!    `poll_ready`.
//! 2. [`BufferBodyLayer`](crate::http::BufferBodyLayer) **above retry**:
//!    tonic's request body is not `Clone`, so without it no request is
//!    ever retried. It keeps small bodies (a unary message) in memory for
//!    the retry layer's
//!    [`CloneBuffered`](crate::http::CloneBuffered); a larger or streaming
//!    body is sent once, with a warning.
//! 3. The **retry above the breaker**, deciding with [`GrpcRetryPolicy`]:
//!    every attempt passes the breaker, so it is counted and stopped like
//!    any call; an open breaker's rejection is waited out by the retry when
//!    its wait fits `max_retry_after`, or returned at once (and becomes
//!    `UNAVAILABLE` with pushback in layer 1), without spending retry
//!    budget.
//! 4. The **breaker directly over the channel**, counting with
//!    [`GrpcErrorsAsFailures`]: it sees each attempt's real outcome (a
//!    trailers-only server error, a transport error). Its error type is
//!    palisade's `BoxError`, which the retry policy reads.
//!
//! A rate limiter that *waits* (shaping outbound traffic) goes between the
//! breaker and the channel.
//!
//! # Errors to `Status`
//!
//! | error | code | `grpc-retry-pushback-ms` |
//! |---|---|---|
//! | [`CircuitOpen`] | `UNAVAILABLE` (14) | milliseconds until the next probe, rounded up |
//! | [`RateLimited`] | `RESOURCE_EXHAUSTED` (8) | milliseconds until admitted, rounded up |
//! | [`InsufficientCapacity`] | `FAILED_PRECONDITION` (9) | `-1`: do not retry |
//! | [`Throttled`] (adaptive throttling) | `UNAVAILABLE` (14) | its hint (one window bucket), rounded up |
//! | [`Overloaded`] (concurrency limit) | `UNAVAILABLE` (14) | none: no wait is known; the client's own backoff decides (as Envoy's adaptive concurrency answers 503) |
//! | [`UnknownKey`] (strict `ClientIp`) | `INTERNAL` (13) | none: the server cannot identify the client, its own misconfiguration |
//! | a [`Status`] | passed through unchanged | whatever it carries |
//! | anything else, server side ([`status_from_error`]) | `UNKNOWN` (2), fixed message | none |
//! | anything else, client side ([`client_status`]) | tonic's `Status::from_error` | none |
//!
//! The error and its `source()` chain are searched from the outside in, and
//! the first palisade rejection or `Status` found decides, so a rejection
//! wrapped by another layer is still found. A status made from a rejection
//! has it as its `source()`, so
//! [`classify::local_rejection`](crate::classify::local_rejection) finds it
//! there too.
//!
//! **The wait.** gRPC has no `Retry-After`. The wait goes in the message
//! (for people) and in the `grpc-retry-pushback-ms` metadata entry (for
//! programs): the server pushback of A6, honoured by gRPC clients' retry
//! policies. It is rounded *up* to whole milliseconds and is never `0`
//! while the caller is limited (a zero would tell a client to retry at
//! once). A negative pushback means "do not retry": [`InsufficientCapacity`]
//! sends `-1`, since waiting never helps.
//!
//! **Why `FAILED_PRECONDITION` for [`InsufficientCapacity`].** The request
//! costs more than the limiter can ever admit: retrying never helps until
//! the limiter's configuration changes, which is what gRPC's guide says
//! `FAILED_PRECONDITION` is for. (The `http` module answers `413` for the
//! same reason.)
//!
//! **Why `UNKNOWN` with a fixed message on the server.** `UNKNOWN` is what
//! gRPC servers answer for an application error that is not a status; the
//! message is fixed (`"internal error"`) so an internal error's text never
//! reaches the client. To show a message, return a `Status` of your own.
//! On the client side the text stays in the process, so [`client_status`]
//! keeps tonic's message.
//!
//! # Retrying: [`GrpcRetryPolicy`]
//!
//! The classifier and server-hint reader for a client's
//! [`RetryLayer`](crate::RetryLayer), after A6: `UNAVAILABLE` is retried
//! (configurable), `RESOURCE_EXHAUSTED` only when it carries a pushback,
//! after exactly that wait ([`RetryAfter::exact`](crate::retry::RetryAfter::exact));
//! a negative or malformed pushback is never retried. It reads trailers-only
//! answers (`Ok(response)` with `grpc-status` in the headers), `Status`
//! errors and tonic's transport errors, and leaves palisade's own
//! rejections to the retry layer. [`GrpcRetryPushback`] reads only the
//! pushback, for a classifier of your own.
//!
//! # Classifiers for breakers
//! - [`GrpcErrorsAsFailures`] classifies `Result<http::Response<B>, E>` by
//!   the `grpc-status` *header*, for a layer around a tonic channel or a
//!   tonic server's routes. A status sent only in the trailers (the usual
//!   case for a successful or streaming call) cannot be seen by a response
//!   classifier, which runs when the headers arrive: such a response counts
//!   as a success. Rejections and most early errors are trailers-only, so
//!   they are seen; so is a tonic handler's `Err(Status)`, which tonic's
//!   server answers as a trailers-only response. An error a streaming
//!   handler sends after its first message is not.
//! - [`StatusErrorsAsFailures`] classifies `Result<T, tonic::Status>`, for
//!   a layer around a service whose error is `Status`.
//!
//! Both count the codes in a [`GrpcCodes`] set as failures. The default set
//! is the server's own failures: `UNKNOWN`, `DEADLINE_EXCEEDED`, `INTERNAL`,
//! `UNAVAILABLE` and `DATA_LOSS`. Other non-`OK` codes (`NOT_FOUND`,
//! `INVALID_ARGUMENT`, `PERMISSION_DENIED`, `CANCELLED`, ...) are
//! [`Ignored`](crate::Outcome::Ignored): they are the caller's problem, and
//! a breaker that opened on them would let one bad client cut everyone off.
//! `RESOURCE_EXHAUSTED` is ignored too, because it is what a rate limiter
//! answers, and a limiter saying "not now" is no sign of ill health; add it
//! with [`GrpcCodes::with`] if your upstream uses it for overload.
//! tower-http's `GrpcErrorsAsFailures` counts every non-`OK` code;
//! [`GrpcCodes::all_errors`] gives that. palisade's own rejections, and the
//! responses [`GrpcErrorLayer`] makes of them, are always ignored.
//!
//! `examples/tonic_health.rs` runs both stacks over a real port.
//!
//! # Example
//!
//! ```
//! use palisade::RateLimitLayer;
//! use palisade::grpc::GrpcErrorLayer;
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! // `service_fn` stands in for a tonic server's routes.
//! let app = ServiceBuilder::new()
//!     .layer(GrpcErrorLayer::new())
//!     .layer(RateLimitLayer::token_bucket(1, Duration::from_secs(10)).build()?)
//!     .service(service_fn(|_req: http::Request<()>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//!     }));
//!
//! let first = app.clone().oneshot(http::Request::new(())).await?;
//! assert!(first.headers().get("grpc-status").is_none());
//! let second = app.oneshot(http::Request::new(())).await?;
//! assert_eq!(second.status(), 200); // gRPC errors travel in grpc-status
//! assert_eq!(second.headers()["grpc-status"], "8"); // RESOURCE_EXHAUSTED
//! assert_eq!(second.headers()["grpc-retry-pushback-ms"], "10000");
//! # Ok(()) }
//! ```
//!
//! A client stack, compiled (a channel needs tonic's `transport` feature):
//!
//! ```no_run
//! use palisade::grpc::{ClientStatusLayer, GrpcErrorsAsFailures, GrpcRetryPolicy};
//! use palisade::http::{BufferBodyLayer, CloneBuffered};
//! use palisade::{CircuitBreakerLayer, RetryLayer};
//! use std::time::Duration;
//! use tonic::transport::Endpoint;
//! use tonic_health::pb::HealthCheckRequest;
//! use tonic_health::pb::health_client::HealthClient;
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! let channel = Endpoint::from_static("http://127.0.0.1:50051").connect_lazy();
//! let retry = GrpcRetryPolicy::new()
//!     .apply(RetryLayer::exponential(Duration::from_millis(20)).max_attempts(3))
//!     .clone_request(CloneBuffered)
//!     .max_retry_after(Duration::from_secs(1))
//!     .build()?;
//! let breaker = CircuitBreakerLayer::consecutive_failures(5)
//!     .classifier(GrpcErrorsAsFailures::new())
//!     .build()?;
//! let stack = ServiceBuilder::new()
//!     .layer(ClientStatusLayer::new())
//!     .layer(BufferBodyLayer::new())
//!     .layer(retry)
//!     .layer(breaker)
//!     .service(channel);
//! let mut client = HealthClient::new(stack);
//! let reply = client.check(HealthCheckRequest { service: String::new() }).await;
//! if let Err(status) = reply {
//!     println!("{:?}: {}", status.code(), status.message());
//! }
//! # Ok(()) }
//! ```
//!
//! [`CircuitOpen`]: crate::circuit_breaker::CircuitOpen
//! [`RateLimited`]: crate::RateLimited
//! [`InsufficientCapacity`]: crate::rate_limit::InsufficientCapacity
//! [`Overloaded`]: crate::concurrency::Overloaded
//! [`Throttled`]: crate::circuit_breaker::Throttled
//! [`UnknownKey`]: crate::rate_limit::UnknownKey
//! [`Status`]: tonic::Status

mod classify;
mod client;
mod pushback;
mod retry_policy;
mod server;
mod status;

pub use classify::{GrpcCodes, GrpcErrorsAsFailures, StatusErrorsAsFailures};
pub use client::{ClientStatus, ClientStatusFuture, ClientStatusLayer, client_status};
pub use pushback::GrpcRetryPushback;
pub use retry_policy::GrpcRetryPolicy;
pub use server::{GrpcError, GrpcErrorFuture, GrpcErrorLayer, GrpcErrors};
pub use status::{pushback_ms, status_from_error};

pub(crate) use classify::response_code;
pub(crate) use status::{Found, find};

/// The metadata key of gRPC's server pushback (proposal A6): milliseconds
/// to wait before a retry, or a negative number for "do not retry".
pub const RETRY_PUSHBACK_MS: &str = "grpc-retry-pushback-ms";
