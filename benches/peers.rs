//! palisade's layers beside their peers, driven the same way in one run.
//!
//! Every service, ours and the peers', is driven by the same async loop on a
//! current-thread tokio runtime: `svc.ready().await?.call(x).await`, the
//! request `x` cycling over 10,000 values (the keyed limiters key on it).
//! Each figure is read beside `bare`, the `service_fn` every layer wraps,
//! measured in the same run: the overhead is the difference.
//!
//! governor is not a Tower service; its `check()` / `check_key()` are timed
//! as direct calls (the figure is its whole cost), and also inside a
//! minimal Tower wrapper (`governor_svc/*`) driven like the others.
//!
//! Every limiter is configured to always admit and every breaker stays
//! closed: this is the path where nothing goes wrong.
//!
//! Run with `cargo bench --bench peers`; `scripts/peers-table` prints the
//! overhead table from criterion's estimates afterwards.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use governor::{Quota, RateLimiter};
use palisade::circuit_breaker::Window;
use palisade::{
    CircuitBreakerLayer, ClockSource, ConcurrencyLimitLayer, RateLimitLayer, RetryLayer,
};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt, service_fn};

/// The requests cycle over this many values (the keyed limiters' keys).
const KEYS: u64 = 10_000;

/// Rates far above what one core can ask for: every limiter always admits.
const RATE: u32 = 1_000_000_000;

/// The bare service every layer wraps: answers at once. A concrete closure
/// type, so both the bare and the wrapped call are direct calls.
fn bare()
-> impl Service<u64, Response = u64, Error = Infallible, Future = Ready<Result<u64, Infallible>>>
+ Clone
+ Send
+ 'static {
    service_fn(|x: u64| ready(Ok::<u64, Infallible>(x)))
}

/// `iters` requests through `svc`, each `svc.ready().await?.call(x).await`,
/// in one `block_on` (so the runtime's entry is not measured).
fn drive<S>(rt: &Runtime, svc: &mut S, iters: u64) -> Duration
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        for i in 0..iters {
            let x = black_box(i % KEYS);
            let r = svc.ready().await.unwrap().call(x).await.unwrap();
            black_box(r);
        }
        start.elapsed()
    })
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// governor's direct limiter inside the thinnest Tower wrapper: `check()`
/// in `call` (it always admits here).
#[derive(Clone)]
struct GovernorSvc<S, L> {
    inner: S,
    limiter: std::sync::Arc<L>,
    keyed: bool,
}

type Direct = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
>;
type Keyed = governor::DefaultKeyedRateLimiter<u64>;

impl<S: Service<u64>> Service<u64> for GovernorSvc<S, Direct> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, x: u64) -> S::Future {
        self.limiter.check().expect("always admits");
        self.inner.call(x)
    }
}

impl<S: Service<u64>> Service<u64> for GovernorSvc<S, Keyed> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, x: u64) -> S::Future {
        debug_assert!(self.keyed);
        self.limiter.check_key(&x).expect("always admits");
        self.inner.call(x)
    }
}

/// failsafe's future-aware breaker inside the thinnest Tower wrapper.
#[derive(Clone)]
struct FailsafeSvc<S, B> {
    inner: S,
    breaker: B,
}

impl<S, B> Service<u64> for FailsafeSvc<S, B>
where
    S: Service<u64>,
    B: failsafe::futures::CircuitBreaker,
{
    type Response = S::Response;
    type Error = failsafe::Error<S::Error>;
    type Future = failsafe::futures::ResponseFuture<
        S::Future,
        B::FailurePolicy,
        B::Instrument,
        failsafe::Any,
    >;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(failsafe::Error::Inner)
    }
    fn call(&mut self, x: u64) -> Self::Future {
        self.breaker.call(self.inner.call(x))
    }
}

/// tower's retry policy for the success path: retry errors up to 3 times.
#[derive(Clone)]
struct Attempts(usize);

impl<E> tower::retry::Policy<u64, u64, E> for Attempts {
    type Future = Ready<()>;
    fn retry(&mut self, _: &mut u64, result: &mut Result<u64, E>) -> Option<Ready<()>> {
        match result {
            Ok(_) => None,
            Err(_) if self.0 > 0 => {
                self.0 -= 1;
                Some(ready(()))
            }
            Err(_) => None,
        }
    }
    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

fn token_bucket(clock: ClockSource) -> RateLimitLayer {
    RateLimitLayer::token_bucket(u64::from(RATE), Duration::from_secs(1))
        .burst(1_000_000)
        .clock(clock)
        .build()
        .unwrap()
}

fn keyed_token_bucket(clock: ClockSource) -> RateLimitLayer<impl Fn(&u64) -> u64 + Clone> {
    RateLimitLayer::token_bucket(u64::from(RATE), Duration::from_secs(1))
        .burst(1_000_000)
        .keyed(|k: &u64| *k)
        .max_keys(100_000)
        .clock(clock)
        .build()
        .unwrap()
}

fn governor_quota() -> Quota {
    Quota::per_second(NonZeroU32::new(RATE).unwrap())
        .allow_burst(NonZeroU32::new(1_000_000).unwrap())
}

fn peers(c: &mut Criterion) {
    let rt = runtime();
    // tower's `RateLimit` arms a timer in `new`: build inside the runtime.
    let _guard = rt.enter();
    let mut g = c.benchmark_group("peers");

    macro_rules! driven {
        ($name:expr, $svc:expr) => {{
            let mut svc = $svc;
            g.bench_function($name, |b| {
                b.iter_custom(|iters| drive(&rt, &mut svc, iters))
            });
        }};
    }

    driven!("bare", bare());

    // What one clock reading costs (direct calls), for reading the rest.
    g.bench_function("clock/tokio_instant_now/direct", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    let quanta = governor::clock::QuantaClock::default();
    g.bench_function("clock/quanta_now/direct", |b| {
        b.iter(|| black_box(governor::clock::Clock::now(&quanta)))
    });

    // Rate limiting.
    let gov = std::sync::Arc::new(RateLimiter::direct(governor_quota()));
    g.bench_function("governor_check/direct", |b| {
        b.iter(|| black_box(gov.check()).unwrap())
    });
    let gov_keyed: std::sync::Arc<Keyed> =
        std::sync::Arc::new(RateLimiter::keyed(governor_quota()));
    g.bench_function("governor_check_key/direct_10000_keys", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(gov_keyed.check_key(&i)).unwrap()
        })
    });
    driven!(
        "governor_check/svc",
        GovernorSvc {
            inner: bare(),
            limiter: gov.clone(),
            keyed: false
        }
    );
    driven!(
        "governor_check_key/svc_10000_keys",
        GovernorSvc {
            inner: bare(),
            limiter: gov_keyed.clone(),
            keyed: true
        }
    );
    driven!(
        "palisade_token_bucket",
        token_bucket(ClockSource::Tokio).layer(bare())
    );
    driven!(
        "palisade_token_bucket/quanta",
        token_bucket(ClockSource::Quanta).layer(bare())
    );
    driven!(
        "palisade_token_bucket/keyed_10000_keys",
        keyed_token_bucket(ClockSource::Tokio).layer(bare())
    );
    driven!(
        "palisade_token_bucket/keyed_10000_keys_quanta",
        keyed_token_bucket(ClockSource::Quanta).layer(bare())
    );
    driven!(
        "palisade_sliding_window",
        RateLimitLayer::sliding_window(1_000_000, Duration::from_millis(1))
            .build()
            .unwrap()
            .layer(bare())
    );
    driven!(
        "tower_rate_limit",
        tower::limit::RateLimitLayer::new(u64::MAX / 2, Duration::from_secs(3600)).layer(bare())
    );
    driven!(
        "tower_resilience_rate_limiter",
        tower_resilience::ratelimiter::RateLimiterLayer::builder()
            .limit_for_period(usize::MAX / 2)
            .refresh_period(Duration::from_secs(3600))
            .timeout_duration(Duration::from_millis(1))
            .build()
            .unwrap()
            .layer(bare())
    );

    // Circuit breakers (closed).
    driven!(
        "palisade_breaker/consecutive",
        CircuitBreakerLayer::consecutive_failures(5)
            .build()
            .unwrap()
            .layer(bare())
    );
    driven!(
        "palisade_breaker/count_window",
        CircuitBreakerLayer::failure_rate(0.5)
            .window(Window::count(100))
            .min_calls(20)
            .build()
            .unwrap()
            .layer(bare())
    );
    driven!(
        "palisade_breaker/time_window",
        CircuitBreakerLayer::failure_rate(0.5)
            .window(Window::time(Duration::from_secs(10)))
            .min_calls(20)
            .build()
            .unwrap()
            .layer(bare())
    );
    driven!(
        "tower_resilience_breaker",
        tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
            .failure_rate_threshold(0.5)
            .sliding_window_size(100)
            .build()
            .unwrap()
            .layer(bare())
    );
    driven!(
        "failsafe_breaker",
        FailsafeSvc {
            inner: bare(),
            breaker: failsafe::Config::new().build()
        }
    );

    // Retry (success path).
    driven!(
        "palisade_retry",
        RetryLayer::exponential(Duration::from_millis(20))
            .max_attempts(4)
            .build()
            .unwrap()
            .layer(bare())
    );
    driven!(
        "palisade_retry/budget",
        RetryLayer::exponential(Duration::from_millis(20))
            .max_attempts(4)
            .budget(palisade::RetryBudget::ratio(0.2))
            .build()
            .unwrap()
            .layer(bare())
    );
    driven!(
        "tower_retry",
        tower::retry::RetryLayer::new(Attempts(3)).layer(bare())
    );
    driven!(
        "tower_resilience_retry",
        tower_resilience::retry::RetryLayer::<u64, u64, Infallible>::builder()
            .max_attempts(4)
            .exponential_backoff(Duration::from_millis(20))
            .build()
            .layer(bare())
    );

    // Concurrency limits.
    driven!(
        "palisade_concurrency/fixed",
        ConcurrencyLimitLayer::fixed(64)
            .build()
            .unwrap()
            .layer(bare())
    );
    driven!(
        "tower_concurrency_limit",
        tower::limit::ConcurrencyLimitLayer::new(64).layer(bare())
    );

    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = peers
}
criterion_main!(benches);
