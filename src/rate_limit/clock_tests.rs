//! The same algorithm scenarios, through the limiter and its clock, on both
//! clock sources: tokio's paused time (the default) and a mock quanta clock
//! (the fast clock's source, driven by hand). Each scenario reads the clock
//! only through the limiter, so a source that mis-reads fails the same
//! assertions the default passes.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use super::gcra::Gcra;
use super::limiter::{Algorithm, Limiter, Outcome};
use super::sliding_log::SlidingLog;
use super::sliding_window::SlidingWindow;
use crate::clock::{Clock, Nanos};

const MS: Nanos = 1_000_000;
const S: Nanos = 1_000 * MS;

/// Moves the limiter's clock forward.
type Advance = Box<dyn Fn(Duration) -> Pin<Box<dyn Future<Output = ()>>>>;

/// One limiter on tokio's paused clock, and how to move it.
fn on_tokio(algorithm: Algorithm, keyed: bool) -> (Limiter, Advance) {
    let limiter = Limiter::new(algorithm, keyed.then_some(100));
    let advance: Advance = Box::new(|d| Box::pin(tokio::time::advance(d)));
    (limiter, advance)
}

/// One limiter on a mock quanta clock, and how to move it. tokio's paused
/// time is never moved: the limiter must not be reading it.
fn on_quanta(algorithm: Algorithm, keyed: bool) -> (Limiter, Advance) {
    let mut limiter = Limiter::new(algorithm, keyed.then_some(100));
    let (clock, mock) = quanta::Clock::mock();
    limiter.clock = Clock::quanta(clock);
    let advance: Advance = Box::new(move |d| {
        mock.increment(d);
        Box::pin(async {})
    });
    (limiter, advance)
}

fn admitted(o: Outcome) -> bool {
    matches!(o, Outcome::Admit { .. })
}

/// The wait a refusal states, in nanoseconds.
fn denied(o: Outcome) -> Nanos {
    match o {
        Outcome::Deny(e) => crate::clock::duration_to_nanos(e.retry_after),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn token_bucket(make: fn(Algorithm, bool) -> (Limiter, Advance), keyed: bool) {
    // 10 per second (T = 100 ms), burst 3.
    let (l, advance) = make(Algorithm::Gcra(Gcra::new(10, S, 3).unwrap()), keyed);
    for _ in 0..3 {
        assert!(admitted(l.acquire(1, 1, 0)));
    }
    assert_eq!(denied(l.acquire(1, 1, 0)), 100 * MS);
    if keyed {
        assert!(
            admitted(l.acquire(2, 1, 0)),
            "another key has its own bucket"
        );
    }
    advance(Duration::from_millis(60)).await;
    assert_eq!(denied(l.acquire(1, 1, 0)), 40 * MS);
    advance(Duration::from_millis(40)).await;
    assert!(admitted(l.acquire(1, 1, 0)));
    assert_eq!(denied(l.acquire(1, 1, 0)), 100 * MS);
    // Idle for a second: the whole burst again, and no more.
    advance(Duration::from_secs(1)).await;
    for _ in 0..3 {
        assert!(admitted(l.acquire(1, 1, 0)));
    }
    assert!(!admitted(l.acquire(1, 1, 0)));
}

async fn sliding_window(make: fn(Algorithm, bool) -> (Limiter, Advance), keyed: bool) {
    // 4 per second, the previous window weighted by its overlap.
    let (l, advance) = make(Algorithm::Window(SlidingWindow::new(4, S).unwrap()), keyed);
    for _ in 0..4 {
        assert!(admitted(l.acquire(1, 1, 0)));
    }
    assert!(denied(l.acquire(1, 1, 0)) > 0);
    if keyed {
        assert!(
            admitted(l.acquire(2, 1, 0)),
            "another key has its own window"
        );
    }
    // At 1.5 s the previous window's 4 weigh 2: two more are admitted.
    advance(Duration::from_millis(1500)).await;
    assert!(admitted(l.acquire(1, 1, 0)));
    assert!(admitted(l.acquire(1, 1, 0)));
    assert!(!admitted(l.acquire(1, 1, 0)));
    // Two windows later everything has expired.
    advance(Duration::from_secs(2)).await;
    for _ in 0..4 {
        assert!(admitted(l.acquire(1, 1, 0)));
    }
    assert!(!admitted(l.acquire(1, 1, 0)));
}

async fn sliding_log(make: fn(Algorithm, bool) -> (Limiter, Advance), keyed: bool) {
    // Exactly 2 in any second.
    let (l, advance) = make(Algorithm::Log(SlidingLog::new(2, S).unwrap()), keyed);
    assert!(admitted(l.acquire(1, 1, 0)));
    advance(Duration::from_millis(500)).await;
    assert!(admitted(l.acquire(1, 1, 0)));
    advance(Duration::from_millis(400)).await;
    // The oldest (at 0) leaves the window at 1 s: 100 ms from now.
    assert_eq!(denied(l.acquire(1, 1, 0)), 100 * MS);
    if keyed {
        assert!(admitted(l.acquire(2, 1, 0)), "another key has its own log");
    }
    advance(Duration::from_millis(100)).await;
    assert!(admitted(l.acquire(1, 1, 0)));
    // Now at 1.0 s, holding 0.5 s and 1.0 s: the next slot is at 1.5 s.
    assert_eq!(denied(l.acquire(1, 1, 0)), 500 * MS);
}

macro_rules! on_both_clocks {
    ($($name:ident: $scenario:ident, $keyed:expr;)*) => {
        mod tokio_clock {
            use super::*;
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    $scenario(on_tokio, $keyed).await;
                }
            )*
        }
        mod quanta_clock {
            use super::*;
            $(
                #[tokio::test(start_paused = true)]
                async fn $name() {
                    $scenario(on_quanta, $keyed).await;
                }
            )*
        }
    };
}

on_both_clocks! {
    token_bucket_unkeyed: token_bucket, false;
    token_bucket_keyed: token_bucket, true;
    sliding_window_unkeyed: sliding_window, false;
    sliding_window_keyed: sliding_window, true;
    sliding_log_unkeyed: sliding_log, false;
    sliding_log_keyed: sliding_log, true;
}

/// The layer's builder option reaches the limiter: a real quanta clock
/// (not tokio's paused time) decides, and the default follows paused time.
#[tokio::test(start_paused = true)]
async fn builder_chooses_the_clock() {
    use crate::{ClockSource, RateLimitLayer};
    let build = |source| {
        RateLimitLayer::token_bucket(1, Duration::from_secs(3600))
            .burst(1)
            .clock(source)
            .build()
            .unwrap()
    };
    let fast = build(ClockSource::Quanta);
    let default = build(ClockSource::Tokio);
    assert!(admitted(fast.limiter.acquire(0, 1, 0)));
    assert!(admitted(default.limiter.acquire(0, 1, 0)));
    tokio::time::advance(Duration::from_secs(3600)).await;
    // Paused time moved an hour: the default refilled, the fast clock did
    // not (real time moved by far less than an hour).
    assert!(admitted(default.limiter.acquire(0, 1, 0)));
    let wait = denied(fast.limiter.acquire(0, 1, 0));
    assert!(wait > 3590 * S && wait <= 3600 * S, "{wait}");
}
