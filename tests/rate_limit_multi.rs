//! Several limits in one layer (`.and(..)`), all-or-nothing: a request
//! refused by any limit is charged to none, and `retry_after` is the
//! earliest time all of them admit. Through the mock, on paused time,
//! against independent models of each limit.

mod support;

use std::time::Duration;

use palisade::rate_limit::{ConfigError, InsufficientCapacity, RateLimitBuilder};
use palisade::{BoxError, ClockSource, RateLimitLayer, RateLimited};
use proptest::prelude::*;
use support::{Mock, Reply, ms};
use tower::{Layer, Service, ServiceExt};

/// A request: key and cost.
type Req = (u64, u64);

/// What happened to one arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Admitted,
    Limited {
        retry_after: u64,
        index: usize,
        limit: u64,
        remaining: u64,
    },
    Never,
}

async fn send<S>(svc: &mut S, req: Req) -> Answer
where
    S: Service<Req, Response = Reply<Req>, Error = BoxError>,
{
    match svc.ready().await.unwrap().call(req).await {
        Ok(_) => Answer::Admitted,
        Err(e) => match e.downcast_ref::<RateLimited>() {
            Some(l) => Answer::Limited {
                retry_after: l.retry_after.as_nanos() as u64,
                index: l.limit_index,
                limit: l.limit,
                remaining: l.remaining,
            },
            None => {
                assert!(e.is::<InsufficientCapacity>(), "{e}");
                Answer::Never
            }
        },
    }
}

/// The limitador #506 case: 1 per second and 2 per 10 s. Stacking two
/// layers charges the outer one for requests the inner one refuses; one
/// layer with both charges neither.
#[tokio::test(start_paused = true)]
async fn a_refused_request_is_charged_to_no_limit() {
    let sec = Duration::from_secs(1);
    let layer = RateLimitLayer::token_bucket(1, sec)
        .and(RateLimitLayer::sliding_log(2, 10 * sec))
        .build()
        .unwrap();
    let mut svc = layer.layer(Mock::new());
    assert_eq!(send(&mut svc, (0, 1)).await, Answer::Admitted);
    // Refused by the bucket for the next second, many times: the log (2
    // per 10 s) is not charged for them.
    for _ in 0..5 {
        assert!(matches!(
            send(&mut svc, (0, 1)).await,
            Answer::Limited { index: 0, .. }
        ));
    }
    tokio::time::advance(sec).await;
    assert_eq!(send(&mut svc, (0, 1)).await, Answer::Admitted);
    tokio::time::advance(sec).await;
    // Now the log refuses: its first entry leaves at 10 s.
    assert_eq!(
        send(&mut svc, (0, 1)).await,
        Answer::Limited {
            retry_after: 8_000_000_000,
            index: 1,
            limit: 2,
            remaining: 0
        }
    );
    assert_eq!(layer.handle().admitted(), 2);
    assert_eq!(layer.handle().rejected(), 6);
}

/// Two limits refusing with the same wait: the first one added is named.
#[tokio::test(start_paused = true)]
async fn on_a_tie_the_first_refusing_limit_is_named() {
    let sec = Duration::from_secs(1);
    let layer = RateLimitLayer::token_bucket(1, sec)
        .and(RateLimitLayer::token_bucket(1, sec))
        .build()
        .unwrap();
    let mut svc = layer.layer(Mock::new());
    assert_eq!(send(&mut svc, (0, 1)).await, Answer::Admitted);
    assert_eq!(
        send(&mut svc, (0, 1)).await,
        Answer::Limited {
            retry_after: 1_000_000_000,
            index: 0,
            limit: 1,
            remaining: 0
        }
    );
}

#[test]
fn configuration_errors() {
    let sec = Duration::from_secs(1);
    let err = |b: RateLimitBuilder| b.build().map(|_| ()).unwrap_err();
    // The added limit's own misconfiguration is reported.
    assert_eq!(
        err(RateLimitLayer::token_bucket(1, sec).and(RateLimitLayer::token_bucket(0, sec))),
        ConfigError::ZeroRate
    );
    assert_eq!(
        err(RateLimitLayer::token_bucket(1, sec)
            .and(RateLimitLayer::sliding_window(1, sec).burst(2))),
        ConfigError::BurstNotApplicable
    );
    // Key bound, wait, ... belong to the first.
    assert_eq!(
        err(RateLimitLayer::token_bucket(1, sec)
            .and(RateLimitLayer::token_bucket(1, sec).max_keys(3))),
        ConfigError::AndTakesLimitOnly
    );
    // The name and hooks too: they are the layer's.
    assert_eq!(
        err(RateLimitLayer::token_bucket(1, sec)
            .and(RateLimitLayer::token_bucket(1, sec).name("hourly"))),
        ConfigError::AndTakesLimitOnly
    );
    assert_eq!(
        err(RateLimitLayer::token_bucket(1, sec)
            .and(RateLimitLayer::token_bucket(1, sec).on_refused(|_| {}))),
        ConfigError::AndTakesLimitOnly
    );
    // The clock too: it is the layer's.
    assert_eq!(
        err(RateLimitLayer::token_bucket(1, sec)
            .and(RateLimitLayer::token_bucket(1, sec).clock(ClockSource::Quanta))),
        ConfigError::AndTakesLimitOnly
    );
    assert!(
        RateLimitLayer::token_bucket(1, sec)
            .clock(ClockSource::Quanta)
            .and(RateLimitLayer::token_bucket(1, sec))
            .build()
            .is_ok()
    );
    // (A keyed, costed or waiting builder does not type-check as `and`'s
    // argument.)
    // A cost function with a log among the limits.
    let e = RateLimitLayer::token_bucket(1, sec)
        .and(RateLimitLayer::sliding_log(5, sec))
        .cost(|r: &u64| *r)
        .build()
        .map(|_| ())
        .unwrap_err();
    assert_eq!(e, ConfigError::CostWithLog);
    #[cfg(feature = "http")]
    {
        let e = RateLimitLayer::token_bucket(1, sec)
            .and(RateLimitLayer::token_bucket(10, 60 * sec))
            .headers("p")
            .build()
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e, ConfigError::HeadersWithSeveralLimits);
    }
}

#[tokio::test(start_paused = true)]
async fn cost_above_any_limits_capacity_is_never() {
    let sec = Duration::from_secs(1);
    let layer = RateLimitLayer::token_bucket(10, sec)
        .burst(10)
        .and(RateLimitLayer::sliding_window(3, sec))
        .cost(|r: &Req| r.1)
        .build()
        .unwrap();
    let mut svc = layer.layer(Mock::new());
    assert_eq!(send(&mut svc, (0, 4)).await, Answer::Never);
    assert_eq!(send(&mut svc, (0, 3)).await, Answer::Admitted);
}

// ------------------------------------------------------------- the model

#[derive(Debug, Clone, Copy)]
enum LimitSpec {
    /// `rate` per second, `burst`.
    Bucket { rate: u64, burst: u64 },
    /// `limit` per `window_ms`.
    Log { limit: u64, window_ms: u64 },
}

impl LimitSpec {
    fn builder(self) -> RateLimitBuilder {
        match self {
            Self::Bucket { rate, burst } => {
                RateLimitLayer::token_bucket(rate, Duration::from_secs(1)).burst(burst)
            }
            Self::Log { limit, window_ms } => RateLimitLayer::sliding_log(limit, ms(window_ms)),
        }
    }
}

/// One limit's ideal state for one key.
#[derive(Debug, Clone)]
enum ModelState {
    /// Theoretical arrival time (GCRA, virtual scheduling).
    Bucket { tat: u64 },
    /// Every admission time.
    Log { times: Vec<u64> },
}

/// `Ok(())` if the limit admits `cost` at `now`, else `Err((retry_after,
/// remaining))`, or `None` for never.
fn check(spec: LimitSpec, st: &ModelState, now: u64, cost: u64) -> Option<Result<(), (u64, u64)>> {
    match (spec, st) {
        (LimitSpec::Bucket { rate, burst }, ModelState::Bucket { tat }) => {
            if cost > burst {
                return None;
            }
            let t = 1_000_000_000u64.div_ceil(rate);
            let at = ((*tat).max(now) + cost * t).saturating_sub(burst * t);
            if at <= now {
                Some(Ok(()))
            } else {
                let remaining = (now + burst * t - (*tat).max(now)) / t;
                Some(Err((at - now, remaining)))
            }
        }
        (LimitSpec::Log { limit, window_ms }, ModelState::Log { times }) => {
            let w = window_ms * 1_000_000;
            // Admissions in the half-open window ending now.
            let recent: Vec<u64> = times.iter().copied().filter(|&t| t + w > now).collect();
            if (recent.len() as u64) < limit {
                Some(Ok(()))
            } else {
                // The limit-th most recent must leave.
                let oldest = recent[recent.len() - limit as usize];
                Some(Err((oldest + w - now, 0)))
            }
        }
        _ => unreachable!(),
    }
}

fn charge(spec: LimitSpec, st: &mut ModelState, now: u64, cost: u64) {
    match (spec, st) {
        (LimitSpec::Bucket { rate, .. }, ModelState::Bucket { tat }) => {
            *tat = (*tat).max(now) + cost * 1_000_000_000u64.div_ceil(rate);
        }
        (LimitSpec::Log { .. }, ModelState::Log { times }) => times.push(now),
        _ => unreachable!(),
    }
}

/// Every limit checked; all charged or none; the refusal is the latest
/// admission time among the refusing limits (the first such limit named).
fn model(specs: &[LimitSpec], arrivals: &[(u64, u64, u64)]) -> Vec<Answer> {
    let mut keys: std::collections::HashMap<u64, Vec<ModelState>> = Default::default();
    let mut now = 0;
    arrivals
        .iter()
        .map(|&(gap, key, cost)| {
            now += gap;
            if cost == 0 {
                return Answer::Admitted;
            }
            let states = keys.entry(key).or_insert_with(|| {
                specs
                    .iter()
                    .map(|s| match s {
                        LimitSpec::Bucket { .. } => ModelState::Bucket { tat: 0 },
                        LimitSpec::Log { .. } => ModelState::Log { times: vec![] },
                    })
                    .collect()
            });
            let mut refusal: Option<(u64, usize, u64)> = None;
            for (i, (spec, st)) in specs.iter().zip(states.iter()).enumerate() {
                match check(*spec, st, now, cost) {
                    None => return Answer::Never,
                    Some(Ok(())) => {}
                    Some(Err((retry, remaining))) => {
                        if refusal.is_none_or(|(r, _, _)| retry > r) {
                            refusal = Some((retry, i, remaining));
                        }
                    }
                }
            }
            if let Some((retry_after, index, remaining)) = refusal {
                let limit = match specs[index] {
                    LimitSpec::Bucket { burst, .. } => burst,
                    LimitSpec::Log { limit, .. } => limit,
                };
                return Answer::Limited {
                    retry_after,
                    index,
                    limit,
                    remaining,
                };
            }
            for (spec, st) in specs.iter().zip(states.iter_mut()) {
                charge(*spec, st, now, cost);
            }
            Answer::Admitted
        })
        .collect()
}

fn run(
    specs: &[LimitSpec],
    keyed: bool,
    costed: bool,
    arrivals: &[(u64, u64, u64)],
) -> Vec<Answer> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut b = specs[0].builder();
        for s in &specs[1..] {
            b = b.and(s.builder());
        }
        let mut out = Vec::new();
        macro_rules! drive {
            ($layer:expr) => {{
                let mut svc = $layer.build().unwrap().layer(Mock::new());
                for &(gap, key, cost) in arrivals {
                    tokio::time::advance(Duration::from_nanos(gap)).await;
                    out.push(send(&mut svc, (key, cost)).await);
                }
            }};
        }
        match (keyed, costed) {
            (false, false) => drive!(b),
            (true, false) => drive!(b.keyed(|r: &Req| r.0)),
            (false, true) => drive!(b.cost(|r: &Req| r.1)),
            (true, true) => drive!(b.keyed(|r: &Req| r.0).cost(|r: &Req| r.1)),
        }
        out
    })
}

fn spec() -> impl Strategy<Value = LimitSpec> {
    prop_oneof![
        (1u64..50, 1u64..5).prop_map(|(rate, burst)| LimitSpec::Bucket { rate, burst }),
        (1u64..6, 10u64..2_000).prop_map(|(limit, window_ms)| LimitSpec::Log { limit, window_ms }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Against the model: every answer, `retry_after`, the refusing
    /// limit's index and its `remaining` (which also shows that no refused
    /// request was charged to any limit: the model charges none).
    #[test]
    fn several_limits_match_the_model(
        specs in proptest::collection::vec(spec(), 2..4),
        keyed in any::<bool>(),
        cost_wanted in any::<bool>(),
        arrivals in proptest::collection::vec((0u64..300_000_000, 0u64..3, 0u64..4), 1..60),
    ) {
        // The log counts requests: a cost function only with buckets.
        let costed = cost_wanted && specs.iter().all(|s| matches!(s, LimitSpec::Bucket { .. }));
        let arrivals: Vec<_> = arrivals
            .into_iter()
            .map(|(gap, key, cost)| {
                let key = if keyed { key } else { 0 };
                (gap, key, if costed { cost } else { 1 })
            })
            .collect();
        prop_assert_eq!(run(&specs, keyed, costed, &arrivals), model(&specs, &arrivals));
    }
}
