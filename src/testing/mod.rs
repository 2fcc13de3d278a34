//! The test kit (feature `test-util`): the scripted mock upstream palisade's
//! own tests drive every layer through, for testing your own stacks.
//!
//! A [`Mock`] is a `tower::Service` that can
//! - follow a script of [`Step`]s (succeed, fail, answer `Ok` with a status,
//!   hang), then a default step, or fail at a seeded rate
//!   ([`Mock::fail_rate`]: the same seed replays the same failures), or
//!   decide each call from its number and request ([`Mock::outcome_fn`]);
//! - add latency ([`Mock::latency`], [`Step::after`]), or behave like a
//!   server with a fixed number of workers and a queue ([`Mock::servers`],
//!   with seeded [jitter](Mock::service_jitter)), whose latency grows with
//!   the calls held beyond its capacity;
//! - limit its own concurrency through `poll_ready` ([`Mock::capacity`]) and
//!   fail `poll_ready` on a script ([`Mock::ready_script`]);
//! - count calls, successes, failures, cancellations and calls in flight
//!   ([`MockHandle`]);
//! - **panic** when `call` comes without a ready `poll_ready` on the same
//!   instance (a clone starts not ready): a layer that breaks the Tower
//!   contract fails your test where it breaks it.
//!
//! Latency runs on tokio's clock: with paused time
//! (`#[tokio::test(start_paused = true)]`) a test covers minutes of an
//! upstream's life in microseconds and never sleeps.
//!
//! # Example: your own retry + breaker stack, in paused time
//!
//! ```
//! use std::time::Duration;
//! use palisade::circuit_breaker::{CircuitOpen, State};
//! use palisade::testing::{Mock, Step};
//! use palisade::{BoxError, CircuitBreakerLayer, RetryLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! // The stack under test, as your application would build it.
//! let upstream = Mock::new()
//!     .script([Step::err(), Step::err()]) // two slow failures, then successes
//!     .latency(Duration::from_millis(50));
//! let counts = upstream.handle();
//! let breaker = CircuitBreakerLayer::consecutive_failures(3)
//!     .open_for(Duration::from_secs(10))
//!     .build()?;
//! let state = breaker.handle();
//! let svc = ServiceBuilder::new()
//!     .layer(
//!         RetryLayer::exponential(Duration::from_millis(100))
//!             .max_attempts(3)
//!             .max_retry_after(Duration::from_secs(1)) // wait out short refusals only
//!             .build()?,
//!     )
//!     .layer(breaker)
//!     .service(upstream);
//!
//! // Retry hides the two failures.
//! let start = tokio::time::Instant::now();
//! assert!(svc.clone().oneshot(7).await.is_ok());
//! assert_eq!((counts.calls(), counts.failures()), (3, 2));
//! assert!(start.elapsed() >= Duration::from_millis(150)); // three calls, plus backoff
//!
//! // A dead upstream: the breaker opens after three failures, and retry
//! // returns its refusal at once (10 s is longer than it will wait).
//! counts.set_default(Step::err());
//! assert!(svc.clone().oneshot(8).await.is_err());
//! assert_eq!(state.state(), State::Open);
//! let err = svc.oneshot(9).await.unwrap_err();
//! assert!(err.is::<CircuitOpen>());
//! assert_eq!(counts.calls(), 6); // the refused call never reached the upstream
//! # Ok(())
//! # }
//! ```

mod mock;

pub use self::mock::{End, Mock, MockError, MockHandle, ReadyStep, Reply, Step};
