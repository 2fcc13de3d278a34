//! Properties of each algorithm over random arrival schedules, through the
//! layer and the mock on paused tokio time, against independent reference
//! models.

mod support;

use std::time::Duration;

use palisade::rate_limit::InsufficientCapacity;
use palisade::{BoxError, RateLimitLayer, RateLimited};
use proptest::prelude::*;
use support::{Mock, Reply};
use tower::{Layer, Service, ServiceExt};

/// What happened to one arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Admitted,
    Limited { retry_after: u64, remaining: u64 },
    Never,
}

/// Builds a limiter with `make` on a fresh paused runtime (its clock reads
/// zero at the first arrival), feeds it `(gap_ns, request)` arrivals through
/// the mock and returns `(arrival time in ns, request, answer)`.
fn run<L>(make: impl FnOnce() -> L, schedule: &[(u64, u64)]) -> Vec<(u64, u64, Answer)>
where
    L: Layer<Mock>,
    L::Service: Service<u64, Response = Reply<u64>, Error = BoxError>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut svc = make().layer(Mock::new());
        let mut t = 0;
        let mut out = Vec::new();
        for &(gap, req) in schedule {
            tokio::time::advance(Duration::from_nanos(gap)).await;
            t += gap;
            let answer = match svc.ready().await.unwrap().call(req).await {
                Ok(_) => Answer::Admitted,
                Err(e) => {
                    if let Some(l) = e.downcast_ref::<RateLimited>() {
                        assert!(l.retry_after > Duration::ZERO, "retry_after never zero");
                        Answer::Limited {
                            retry_after: l.retry_after.as_nanos() as u64,
                            remaining: l.remaining,
                        }
                    } else {
                        assert!(e.is::<InsufficientCapacity>(), "{e}");
                        Answer::Never
                    }
                }
            };
            out.push((t, req, answer));
        }
        out
    })
}

/// 256 cases per property; failing seeds are kept beside this file (as
/// governor keeps its own) so a failure replays first on the next run.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(
                "tests/rate_limit_props.proptest-regressions",
            ),
        )),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Token bucket: every decision, `retry_after` and `remaining` equal an
    /// ideal token bucket's (credit refilled one unit per `T`, capped at the
    /// burst), so it neither over- nor under-admits; and in every closed
    /// interval `[t_i, t_j]` the admitted cost is at most
    /// `burst + floor((t_j - t_i) / T)`.
    #[test]
    fn token_bucket_is_an_exact_token_bucket(
        rate in 1u64..20,
        period_ms in 1u64..200,
        burst in 1u64..6,
        arrivals in prop::collection::vec((0u64..=400, 0u64..=7), 1..150),
    ) {
        let period = period_ms * 1_000_000;
        let t_ns = period.div_ceil(rate);
        // Gaps up to twice the interval, in 1/200ths of it; costs up to
        // burst + 1 (the last: "never").
        let schedule: Vec<(u64, u64)> = arrivals
            .iter()
            .map(|&(g, c)| (g * t_ns / 200, 1 + c % (burst + 1)))
            .collect();
        let out = run(|| {
            RateLimitLayer::token_bucket(rate, Duration::from_nanos(period))
                .burst(burst)
                .cost(|r: &u64| *r)
                .build()
                .unwrap()
        }, &schedule);

        // The ideal bucket, in nanoseconds of credit.
        let cap = burst * t_ns;
        let (mut credit, mut last) = (cap, 0u64);
        for &(t, cost, answer) in &out {
            credit = (credit + (t - last)).min(cap);
            last = t;
            let expected = if cost > burst {
                Answer::Never
            } else if credit >= cost * t_ns {
                credit -= cost * t_ns;
                Answer::Admitted
            } else {
                Answer::Limited { retry_after: cost * t_ns - credit, remaining: credit / t_ns }
            };
            prop_assert_eq!(answer, expected, "at {} cost {}", t, cost);
        }

        let admitted: Vec<(u64, u64)> = out
            .iter()
            .filter(|o| o.2 == Answer::Admitted)
            .map(|o| (o.0, o.1))
            .collect();
        for i in 0..admitted.len() {
            let mut sum = 0;
            for j in i..admitted.len() {
                sum += admitted[j].1;
                let bound = burst + (admitted[j].0 - admitted[i].0) / t_ns;
                prop_assert!(sum <= bound, "{} admitted in [{}, {}], bound {}", sum, admitted[i].0, admitted[j].0, bound);
            }
        }
    }

    /// Sliding-window counter: decisions equal a model recomputed from the
    /// full admission history; `retry_after` equals the first conforming
    /// instant found by search; at most `limit` per aligned window and
    /// `2 * limit` per sliding window of length `W`.
    #[test]
    fn sliding_window_matches_its_model_and_bounds(
        limit in 1u64..7,
        window_us in 1u64..500,
        arrivals in prop::collection::vec((0u64..=100, 0u64..=9), 1..150),
    ) {
        let w = window_us * 1_000;
        let schedule: Vec<(u64, u64)> = arrivals
            .iter()
            .map(|&(g, c)| (g * w / 100, if c == 9 { limit + 1 } else { 1 + c % 2 }))
            .collect();
        let out = run(|| {
            RateLimitLayer::sliding_window(limit, Duration::from_nanos(w))
                .cost(|r: &u64| *r)
                .build()
                .unwrap()
        }, &schedule);

        let mut history: Vec<(u64, u64)> = Vec::new();
        let count = |h: &[(u64, u64)], k: u64| -> u64 {
            h.iter().filter(|a| a.0 / w == k).map(|a| a.1).sum()
        };
        let fits = |h: &[(u64, u64)], t: u64, cost: u64| -> bool {
            let k = t / w;
            let e = t - k * w;
            let prev = if k == 0 { 0 } else { count(h, k - 1) };
            let cur = count(h, k);
            u128::from(prev) * u128::from(w - e) + u128::from(cur + cost) * u128::from(w)
                <= u128::from(limit) * u128::from(w)
        };
        for &(t, cost, answer) in &out {
            if cost > limit {
                prop_assert_eq!(answer, Answer::Never);
                continue;
            }
            if fits(&history, t, cost) {
                prop_assert_eq!(answer, Answer::Admitted, "at {}", t);
                history.push((t, cost));
            } else {
                // First conforming instant by binary search (the estimate
                // only falls with time); 3 windows always suffice.
                let (mut lo, mut hi) = (t, t + 3 * w);
                while lo < hi {
                    let mid = lo + (hi - lo) / 2;
                    if fits(&history, mid, cost) { hi = mid } else { lo = mid + 1 }
                }
                match answer {
                    Answer::Limited { retry_after, .. } => prop_assert_eq!(retry_after, lo - t, "at {}", t),
                    other => prop_assert!(false, "expected a refusal at {}, got {:?}", t, other),
                }
            }
        }
        for (i, a) in history.iter().enumerate() {
            prop_assert!(count(&history, a.0 / w) <= limit);
            let in_window: u64 = history[i..].iter().take_while(|b| b.0 < a.0 + w).map(|b| b.1).sum();
            prop_assert!(in_window <= 2 * limit);
        }
    }

    /// Sliding-window counter under demand above the limit: every complete
    /// window after the first admits at least `limit - 1`.
    #[test]
    fn sliding_window_admits_the_full_rate(
        limit in 1u64..10,
        window_us in 10u64..500,
        gaps in prop::collection::vec(0u64..=100, 200..400),
    ) {
        let w = window_us * 1_000;
        // Gaps up to a quarter of the share of one request.
        let schedule: Vec<(u64, u64)> = gaps.iter().map(|&g| (g * w / (400 * limit), 1)).collect();
        let out = run(|| {
            RateLimitLayer::sliding_window(limit, Duration::from_nanos(w)).build().unwrap()
        }, &schedule);
        let end = out.last().unwrap().0;
        for k in 1..end / w {
            let n = out.iter().filter(|o| o.0 / w == k && o.2 == Answer::Admitted).count() as u64;
            prop_assert!(n + 1 >= limit, "window {} admitted {} of {}", k, n, limit);
            prop_assert!(n <= limit);
        }
    }

    /// Sliding log: exact. Decisions equal "fewer than `limit` admissions in
    /// the last `W`", `retry_after` is when the oldest of them leaves, and no
    /// half-open window `[t, t + W)` holds more than `limit`.
    #[test]
    fn sliding_log_is_exact(
        limit in 1u64..7,
        window_us in 1u64..500,
        gaps in prop::collection::vec(0u64..=100, 1..150),
    ) {
        let w = window_us * 1_000;
        let schedule: Vec<(u64, u64)> = gaps.iter().map(|&g| (g * w / 100, 1)).collect();
        let out = run(|| {
            RateLimitLayer::sliding_log(limit, Duration::from_nanos(w)).build().unwrap()
        }, &schedule);
        let mut admitted: Vec<u64> = Vec::new();
        for &(t, _, answer) in &out {
            let recent: Vec<u64> = admitted.iter().copied().filter(|&a| a + w > t).collect();
            if (recent.len() as u64) < limit {
                prop_assert_eq!(answer, Answer::Admitted, "at {}", t);
                admitted.push(t);
            } else {
                let oldest = recent[recent.len() - limit as usize];
                prop_assert_eq!(answer, Answer::Limited { retry_after: oldest + w - t, remaining: 0 });
            }
        }
        for i in 0..admitted.len() {
            let n = admitted[i..].iter().take_while(|&&b| b < admitted[i] + w).count() as u64;
            prop_assert!(n <= limit);
        }
    }
}

/// Token bucket under saturating demand (an arrival at every conforming
/// instant): exactly `burst + floor(d / T)` admitted over `[0, d]`.
#[test]
fn token_bucket_admits_the_full_rate_under_saturation() {
    let t_ns = 10_000_000; // 100 per second
    let schedule: Vec<(u64, u64)> = std::iter::once((0, 1))
        .chain(std::iter::repeat_n((0, 1), 30))
        .chain((0..500).flat_map(|_| [(t_ns / 2, 1), (t_ns / 2, 1)]))
        .collect();
    let out = run(
        || {
            RateLimitLayer::token_bucket(100, Duration::from_secs(1))
                .burst(20)
                .build()
                .unwrap()
        },
        &schedule,
    );
    let end = out.last().unwrap().0;
    let admitted = out.iter().filter(|o| o.2 == Answer::Admitted).count() as u64;
    assert_eq!(admitted, 20 + end / t_ns);
    // The first second: burst + rate on the closed interval [0, 1 s].
    let first = out
        .iter()
        .filter(|o| o.0 <= 1_000_000_000 && o.2 == Answer::Admitted)
        .count();
    assert_eq!(first, 120);
}
