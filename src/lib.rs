//! # palisade
//!
//! Composable [Tower](https://docs.rs/tower) layers that keep a service
//! standing when what it calls fails, slows down or floods it.
//!
//! Every layer wraps any `tower::Service`, stacks with `ServiceBuilder`, and
//! shares one state across all clones of the service it produces (axum
//! clones a service per request; a limit per clone is no limit).
//!
//! - [`classify`]: what counts as a failure, shared by every layer.
//! - [`backoff`]: exponential backoff with jitter.
//! - [`circuit_breaker`]: stop calling what keeps failing ([`CircuitBreakerLayer`]).
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod backoff;
pub mod circuit_breaker;
pub mod classify;

mod clock;
mod rng;
mod sync;

pub use backoff::{Backoff, Jitter};
pub use circuit_breaker::CircuitBreakerLayer;
pub use classify::{Classify, Outcome};

/// The error type of layers that add failures of their own, tower's
/// convention: downcast it to the layer's error type
/// (`err.downcast_ref::<CircuitOpen>()`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
