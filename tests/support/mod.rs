//! The one mock service every test drives the layers through: the public
//! test kit, [`palisade::testing`] (feature `test-util`, always on for our
//! own tests through the self dev-dependency in Cargo.toml).
//!
//! A [`Mock`] can fail on a script or at a seeded rate, add latency, hang,
//! answer `Ok` with an HTTP-like status (for classifiers), limit its own
//! concurrency through `poll_ready`, queue like a server with a fixed number
//! of workers, count calls and in-flight requests, and panics when `call`
//! comes without a ready `poll_ready` on the same instance (a clone starts
//! not ready: the Tower contract).
#![allow(dead_code, unreachable_pub, unused_imports)]

pub use palisade::testing::{End, Mock, MockError, MockHandle, ReadyStep, Reply, Step};

use std::time::Duration;

/// Milliseconds, for brevity in tests.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub mod axum_server;
#[cfg(feature = "redis")]
pub mod redis;
pub mod tracing_capture;
