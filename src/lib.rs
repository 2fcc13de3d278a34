//! # palisade
//!
//! Composable [Tower](https://docs.rs/tower) layers that keep a service
//! standing when what it calls fails, slows down or floods it.
//!
//! Every layer wraps any `tower::Service`, stacks with `ServiceBuilder`, and
//! shares one state across all clones of the service it produces, and across
//! every service one layer value produces (axum clones a service per
//! request; a limit per clone is no limit). State is created by `build()`,
//! which is also where bad configuration becomes an error, never a panic.
//!
//! The layers:
//! - [`circuit_breaker`]: stop calling what keeps failing
//!   ([`CircuitBreakerLayer`]).
//! - [`retry`]: retries with jittered backoff, a shared retry budget and
//!   server hints ([`RetryLayer`]).
//! - [`rate_limit`]: token bucket (GCRA), sliding-window counter and exact
//!   sliding log, unkeyed or per key, refusing at once or waiting
//!   ([`RateLimitLayer`]).
//! - [`concurrency`]: an adaptive concurrency limit (Gradient2, AIMD)
//!   that refuses the excess at once ([`ConcurrencyLimitLayer`]).
//! - [`batch`]: fan a list of requests out and settle every one, in order
//!   ([`BatchLayer`], [`batch::settle_all`]).
//!
//! What they share:
//! - [`classify`]: what counts as a failure (an `Ok(500)` can).
//! - [`backoff`]: exponential backoff with jitter.
//! - `http` (feature `http`): rejections as `503` / `429` responses with
//!   `Retry-After`, client-IP keys, for axum and hyper servers; request
//!   bodies buffered so retries can resend them.
//! - `grpc` (feature `tonic`): rejections as `tonic::Status` and
//!   trailers-only gRPC responses, a client's errors as the right `Status`,
//!   gRPC's retry policy (A6, with server pushback), and classifiers reading
//!   gRPC codes.
//! - `metrics` (feature `metrics`): every layer's counters, gauges and
//!   histograms through the `metrics` facade, one naming scheme, one table.
//!   Every layer also takes event hooks (`on_state_change`, `on_rejected`,
//!   `on_retry`, `on_refused`, ...) and a `.name(..)` for both.
//! - `testing` (feature `test-util`): the scripted mock upstream palisade's
//!   own tests use, for testing your own stacks in paused time.
//!
//! # Errors
//!
//! Layers that add a failure of their own return [`BoxError`] wrapping a
//! small public type to downcast: [`circuit_breaker::CircuitOpen`],
//! [`RateLimited`], [`rate_limit::InsufficientCapacity`],
//! [`concurrency::Overloaded`]. Retry passes the
//! inner error through; a batch never fails (one `Result` per item).
//!
//! ```
//! use std::time::Duration;
//! use palisade::circuit_breaker::CircuitOpen;
//! use palisade::{BoxError, CircuitBreakerLayer, RetryLayer};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let breaker = CircuitBreakerLayer::consecutive_failures(2)
//!     .open_for(Duration::from_secs(30))
//!     .build()?;
//! let retry = RetryLayer::exponential(Duration::from_millis(1))
//!     .max_attempts(2)
//!     // The longest wait for a refusal (an open breaker below) worth waiting out.
//!     .max_retry_after(Duration::from_secs(1))
//!     .build()?;
//! let client = ServiceBuilder::new()
//!     .layer(retry)
//!     .layer(breaker)
//!     .service(service_fn(|_: ()| async { Err::<(), BoxError>("down".into()) }));
//!
//! // Two attempts fail and trip the breaker; the next call is rejected, and
//! // returned at once: its 30 s wait is above the retry's cap.
//! assert!(client.clone().oneshot(()).await.is_err());
//! let err = client.oneshot(()).await.unwrap_err();
//! assert!(err.is::<CircuitOpen>());
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backoff;
pub mod batch;
pub mod circuit_breaker;
pub mod classify;
pub mod concurrency;
#[cfg(feature = "tonic")]
pub mod grpc;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
#[cfg(not(feature = "metrics"))]
#[path = "metrics_off.rs"]
mod metrics;
pub mod rate_limit;
pub mod retry;
#[cfg(feature = "test-util")]
pub mod testing;

mod clock;
mod hook;
mod rng;
mod sync;

pub use backoff::{Backoff, Jitter};
pub use batch::BatchLayer;
pub use circuit_breaker::CircuitBreakerLayer;
pub use classify::{Classify, Outcome};
pub use clock::ClockSource;
pub use concurrency::{ConcurrencyLimitLayer, Overloaded};
pub use rate_limit::{RateLimitLayer, RateLimited};
pub use retry::{RetryBudget, RetryLayer};

// The README's examples are compiled and run as doctests (they use every
// feature, so only when every feature is on: `cargo test --all-features`).
#[cfg(all(
    doctest,
    feature = "http",
    feature = "tonic",
    feature = "axum",
    feature = "redis"
))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The error type of layers that add failures of their own, tower's
/// convention: downcast it to the layer's error type
/// (`err.downcast_ref::<CircuitOpen>()`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
