//! [`Mock`]: the scripted upstream, its [`MockHandle`], and what one call
//! does ([`Step`]).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;
use tower::Service;

/// What one call does: how it ends, and after how long.
///
/// ```
/// use palisade::testing::{End, Step};
/// use std::time::Duration;
///
/// let slow_failure = Step::err().after(Duration::from_millis(250));
/// assert_eq!(slow_failure.end, End::Err);
/// assert_eq!(slow_failure.latency, Duration::from_millis(250));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// How the call ends.
    pub end: End,
    /// Time before it ends (on tokio's clock: pause it in tests).
    pub latency: Duration,
}

/// How a call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// `Ok(Reply)` with status 200.
    Ok,
    /// `Ok(Reply)` with this status (e.g. 503: `Ok` but a server error).
    Status(u16),
    /// `Err(MockError)`.
    Err,
    /// Never completes.
    Hang,
}

impl Step {
    /// Succeeds at once: `Ok(Reply)` with status 200.
    pub const fn ok() -> Self {
        Self {
            end: End::Ok,
            latency: Duration::ZERO,
        }
    }
    /// Fails at once with [`MockError`].
    pub const fn err() -> Self {
        Self {
            end: End::Err,
            latency: Duration::ZERO,
        }
    }
    /// Answers `Ok(Reply)` with this status at once (a server's `Ok(503)`).
    pub const fn status(code: u16) -> Self {
        Self {
            end: End::Status(code),
            latency: Duration::ZERO,
        }
    }
    /// Never completes (until its future is dropped).
    pub const fn hang() -> Self {
        Self {
            end: End::Hang,
            latency: Duration::ZERO,
        }
    }
    /// The same step, ending only after `latency`.
    pub const fn after(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }
}

/// What one `poll_ready` answers, when scripted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyStep {
    /// Ready as usual (still subject to [`Mock::capacity`]).
    Ready,
    /// `Err(MockError { call: u64::MAX })`, leaving the instance not ready.
    Err,
}

/// A successful answer: which call it was, its status, and the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<R> {
    /// The call's number, from 0, across every clone.
    pub call: u64,
    /// 200, or the status of a [`Step::status`].
    pub status: u16,
    /// The request, handed back.
    pub request: R,
}

/// A failed call (or a failed `poll_ready`, with `call == u64::MAX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockError {
    /// The failed call's number, or `u64::MAX` for a failed `poll_ready`.
    pub call: u64,
}

impl fmt::Display for MockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.call == u64::MAX {
            write!(f, "mock poll_ready failed")
        } else {
            write!(f, "mock call {} failed", self.call)
        }
    }
}

impl std::error::Error for MockError {}

type OutcomeFn<R> = Box<dyn Fn(u64, &R) -> Step + Send + Sync>;

struct Plan<R> {
    script: VecDeque<Step>,
    default: Step,
    fail_rate: Option<(f64, u64)>,
    latency: Duration,
    outcome_fn: Option<OutcomeFn<R>>,
    ready_script: VecDeque<ReadyStep>,
}

struct Shared<R> {
    plan: Mutex<Plan<R>>,
    capacity: AtomicU64,
    calls: AtomicU64,
    in_flight: AtomicU64,
    peak_in_flight: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    cancelled: AtomicU64,
    ready_polls: AtomicU64,
    waiters: Mutex<Vec<Waker>>,
    started: Mutex<Vec<Instant>>,
    servers: Mutex<Option<Servers>>,
}

/// A server with a fixed number of workers and a FIFO queue in front.
struct Servers {
    service_time: Duration,
    /// `(fraction, seed)`: each service time is drawn in
    /// `service_time * (1 ± fraction)`.
    jitter: Option<(f64, u64)>,
    booked: u64,
    /// When each worker is next free.
    free_at: Vec<Instant>,
}

impl Servers {
    /// Books the worker free soonest for a request arriving `now`; returns
    /// how long the request takes, queueing included.
    fn book(&mut self, now: Instant) -> Duration {
        let Some(worker) = self.free_at.iter_mut().min() else {
            return Duration::MAX; // no worker: the request never ends
        };
        let start = (*worker).max(now);
        let mut service = self.service_time;
        if let Some((fraction, seed)) = self.jitter {
            let u = unit_interval(seed, self.booked);
            service = service.mul_f64((1.0 + fraction * (2.0 * u - 1.0)).max(0.0));
        }
        self.booked += 1;
        *worker = start + service;
        *worker - now
    }

    fn resize(&mut self, workers: usize, now: Instant) {
        // Shrinking keeps the workers free soonest; new workers are free now.
        self.free_at.sort_unstable();
        self.free_at.resize(workers, now);
    }
}

/// The mock upstream. Cheap to clone; clones share the plan and counters,
/// and each clone starts not ready.
///
/// Its `call` **panics** if `poll_ready` did not return `Ready(Ok(()))` on
/// the same instance first: a layer that breaks the Tower contract fails
/// the test at once. Latency runs on tokio's clock, so a test with paused
/// time (`#[tokio::test(start_paused = true)]`) covers seconds of upstream
/// behaviour in microseconds.
///
/// See the [module docs](super) for an example.
pub struct Mock<R = u64> {
    shared: Arc<Shared<R>>,
    ready: bool,
}

/// Reads the counters and changes the plan while the mock is in use; from
/// [`Mock::handle`], cheap to clone.
pub struct MockHandle<R = u64> {
    shared: Arc<Shared<R>>,
}

impl<R> Clone for MockHandle<R> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<R> Clone for Mock<R> {
    /// A clone holds no readiness: it must be polled ready itself.
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            ready: false,
        }
    }
}

impl<R> fmt::Debug for Mock<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mock")
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

impl<R> fmt::Debug for MockHandle<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockHandle")
            .field("calls", &self.calls())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl<R> Default for Mock<R> {
    fn default() -> Self {
        Self::new()
    }
}

impl<R> Mock<R> {
    /// A mock whose every call succeeds at once.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                plan: Mutex::new(Plan {
                    script: VecDeque::new(),
                    default: Step::ok(),
                    fail_rate: None,
                    latency: Duration::ZERO,
                    outcome_fn: None,
                    ready_script: VecDeque::new(),
                }),
                capacity: AtomicU64::new(u64::MAX),
                calls: AtomicU64::new(0),
                in_flight: AtomicU64::new(0),
                peak_in_flight: AtomicU64::new(0),
                successes: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                cancelled: AtomicU64::new(0),
                ready_polls: AtomicU64::new(0),
                waiters: Mutex::new(Vec::new()),
                started: Mutex::new(Vec::new()),
                servers: Mutex::new(None),
            }),
            ready: false,
        }
    }

    /// Calls follow this script first, then the default step.
    pub fn script(self, steps: impl IntoIterator<Item = Step>) -> Self {
        self.handle().push_script(steps);
        self
    }

    /// What calls do once the script is spent (default: `Step::ok()`).
    pub fn default_step(self, step: Step) -> Self {
        self.handle().set_default(step);
        self
    }

    /// Unscripted calls fail with probability `p`, drawn from a generator
    /// seeded with `seed` (the same seed replays the same failures).
    pub fn fail_rate(self, p: f64, seed: u64) -> Self {
        self.shared.plan.lock().unwrap().fail_rate = Some((p, seed));
        self
    }

    /// Latency added to every step that has none of its own.
    pub fn latency(self, latency: Duration) -> Self {
        self.shared.plan.lock().unwrap().latency = latency;
        self
    }

    /// Every call hangs forever.
    pub fn hang(self) -> Self {
        self.default_step(Step::hang())
    }

    /// Decides each unscripted call from its number (from 0) and request;
    /// overrides the default step and the fail rate.
    pub fn outcome_fn(self, f: impl Fn(u64, &R) -> Step + Send + Sync + 'static) -> Self {
        self.shared.plan.lock().unwrap().outcome_fn = Some(Box::new(f));
        self
    }

    /// At most `n` calls in flight: `poll_ready` is `Pending` while full and
    /// wakes when a call ends.
    pub fn capacity(self, n: u64) -> Self {
        self.shared.capacity.store(n, SeqCst);
        self
    }

    /// A server with `workers` workers in front of a FIFO queue: each call
    /// occupies the first free worker for `service_time`, waiting its turn
    /// when all are busy, so its latency is `service_time` while at most
    /// `workers` calls are held and grows with every call held beyond that
    /// (`n` held take about `service_time * n / workers`). The step's own
    /// latency is added on top; a dropped call keeps its worker busy (the
    /// server does not know the client left). Change the number of workers
    /// while running with [`MockHandle::set_workers`].
    ///
    /// ```
    /// use palisade::testing::Mock;
    /// use std::time::Duration;
    /// use tower::ServiceExt;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let upstream = Mock::<u64>::new().servers(2, Duration::from_millis(10));
    /// let start = tokio::time::Instant::now();
    /// let calls = (0..4).map(|n| {
    ///     let svc = upstream.clone();
    ///     async move {
    ///         svc.oneshot(n).await.unwrap();
    ///         start.elapsed()
    ///     }
    /// });
    /// let took = futures::future::join_all(calls).await;
    /// // Two workers: two calls wait their turn behind the first two.
    /// let ms = Duration::from_millis;
    /// assert_eq!(took, [ms(10), ms(10), ms(20), ms(20)]);
    /// # }
    /// ```
    pub fn servers(self, workers: usize, service_time: Duration) -> Self {
        *self.shared.servers.lock().unwrap() = Some(Servers {
            service_time,
            jitter: None,
            booked: 0,
            free_at: vec![Instant::now(); workers],
        });
        self
    }

    /// Spreads a [`servers`](Self::servers) upstream's service times
    /// evenly over `service_time * (1 ± fraction)` (`fraction` in `0..=1`),
    /// drawn from a generator seeded with `seed`. No effect without
    /// `servers`.
    pub fn service_jitter(self, fraction: f64, seed: u64) -> Self {
        if let Some(servers) = self.shared.servers.lock().unwrap().as_mut() {
            // NaN (bad input) means no jitter rather than a panic later.
            let fraction = if fraction.is_nan() {
                0.0
            } else {
                fraction.clamp(0.0, 1.0)
            };
            servers.jitter = Some((fraction, seed));
        }
        self
    }

    /// `poll_ready` answers these first (an `Err` does not make it ready),
    /// then is ready as usual.
    pub fn ready_script(self, steps: impl IntoIterator<Item = ReadyStep>) -> Self {
        self.shared.plan.lock().unwrap().ready_script.extend(steps);
        self
    }

    /// A handle on the counters and the plan.
    pub fn handle(&self) -> MockHandle<R> {
        MockHandle {
            shared: self.shared.clone(),
        }
    }

    fn next_step(&self, call: u64, request: &R) -> Step {
        let mut plan = self.shared.plan.lock().unwrap();
        let step = if let Some(step) = plan.script.pop_front() {
            step
        } else if let Some(f) = &plan.outcome_fn {
            f(call, request)
        } else if let Some((p, seed)) = plan.fail_rate {
            if unit_interval(seed, call) < p {
                Step::err()
            } else {
                Step::ok()
            }
        } else {
            plan.default
        };
        if step.latency.is_zero() {
            step.after(plan.latency)
        } else {
            step
        }
    }
}

/// A deterministic draw in [0, 1) for call `n` under `seed` (SplitMix64).
fn unit_interval(seed: u64, n: u64) -> f64 {
    let mut z = seed.wrapping_add(n.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

impl<R> MockHandle<R> {
    /// Calls started.
    pub fn calls(&self) -> u64 {
        self.shared.calls.load(SeqCst)
    }
    /// Calls started and not yet ended or dropped.
    pub fn in_flight(&self) -> u64 {
        self.shared.in_flight.load(SeqCst)
    }
    /// The most calls ever in flight at once.
    pub fn peak_in_flight(&self) -> u64 {
        self.shared.peak_in_flight.load(SeqCst)
    }
    /// Calls that ended `Ok` (any status).
    pub fn successes(&self) -> u64 {
        self.shared.successes.load(SeqCst)
    }
    /// Calls that ended `Err`.
    pub fn failures(&self) -> u64 {
        self.shared.failures.load(SeqCst)
    }
    /// Calls whose future was dropped before it ended.
    pub fn cancelled(&self) -> u64 {
        self.shared.cancelled.load(SeqCst)
    }
    /// `poll_ready` calls on any clone.
    pub fn ready_polls(&self) -> u64 {
        self.shared.ready_polls.load(SeqCst)
    }
    /// When each call started, in order.
    pub fn call_times(&self) -> Vec<Instant> {
        self.shared.started.lock().unwrap().clone()
    }
    /// Appends steps to the script.
    pub fn push_script(&self, steps: impl IntoIterator<Item = Step>) {
        self.shared.plan.lock().unwrap().script.extend(steps);
    }
    /// Changes the number of workers of a [`Mock::servers`] upstream (no
    /// effect on a mock without one): fewer keeps the workers free
    /// soonest, and new ones are free at once.
    pub fn set_workers(&self, workers: usize) {
        if let Some(servers) = self.shared.servers.lock().unwrap().as_mut() {
            servers.resize(workers, Instant::now());
        }
    }
    /// Changes what unscripted calls do (e.g. healthy -> failing).
    pub fn set_default(&self, step: Step) {
        let mut plan = self.shared.plan.lock().unwrap();
        plan.default = step;
        plan.fail_rate = None;
    }
}

impl<R: Send + 'static> Service<R> for Mock<R> {
    type Response = Reply<R>;
    type Error = MockError;
    type Future = Pin<Box<dyn Future<Output = Result<Reply<R>, MockError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), MockError>> {
        self.shared.ready_polls.fetch_add(1, SeqCst);
        if let Some(step) = self.shared.plan.lock().unwrap().ready_script.pop_front() {
            match step {
                ReadyStep::Ready => {}
                ReadyStep::Err => {
                    self.ready = false;
                    return Poll::Ready(Err(MockError { call: u64::MAX }));
                }
            }
        }
        if self.shared.in_flight.load(SeqCst) >= self.shared.capacity.load(SeqCst) {
            self.shared.waiters.lock().unwrap().push(cx.waker().clone());
            // Re-check: a call may have ended between the load and the push.
            if self.shared.in_flight.load(SeqCst) >= self.shared.capacity.load(SeqCst) {
                return Poll::Pending;
            }
        }
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        assert!(
            std::mem::replace(&mut self.ready, false),
            "Tower contract broken: `call` without a ready `poll_ready` on this instance"
        );
        let call = self.shared.calls.fetch_add(1, SeqCst);
        self.shared.started.lock().unwrap().push(Instant::now());
        let mut step = self.next_step(call, &request);
        if let Some(servers) = self.shared.servers.lock().unwrap().as_mut() {
            step.latency = step.latency.saturating_add(servers.book(Instant::now()));
        }
        let in_flight = self.shared.in_flight.fetch_add(1, SeqCst) + 1;
        self.shared.peak_in_flight.fetch_max(in_flight, SeqCst);
        let guard = InFlight {
            shared: self.shared.clone(),
            done: AtomicBool::new(false),
        };
        Box::pin(async move {
            if !step.latency.is_zero() {
                tokio::time::sleep(step.latency).await;
            }
            let result = match step.end {
                End::Ok => Ok(Reply {
                    call,
                    status: 200,
                    request,
                }),
                End::Status(status) => Ok(Reply {
                    call,
                    status,
                    request,
                }),
                End::Err => Err(MockError { call }),
                End::Hang => std::future::pending().await,
            };
            guard.finish(result.is_ok());
            result
        })
    }
}

/// Tracks one call in flight; counts it cancelled if dropped unfinished.
struct InFlight<R> {
    shared: Arc<Shared<R>>,
    done: AtomicBool,
}

impl<R> InFlight<R> {
    fn finish(&self, ok: bool) {
        self.done.store(true, SeqCst);
        if ok {
            self.shared.successes.fetch_add(1, SeqCst);
        } else {
            self.shared.failures.fetch_add(1, SeqCst);
        }
    }
}

impl<R> Drop for InFlight<R> {
    fn drop(&mut self) {
        if !self.done.load(SeqCst) {
            self.shared.cancelled.fetch_add(1, SeqCst);
        }
        self.shared.in_flight.fetch_sub(1, SeqCst);
        for waker in self.shared.waiters.lock().unwrap().drain(..) {
            waker.wake();
        }
    }
}
