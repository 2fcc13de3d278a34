//! Model-based test: random sequences of calls, outcomes, drops, time,
//! force-open and reset against the breaker (through the mock, on paused
//! time) and against a plain reference model written from the spec; after
//! every step both must agree on the state and the counts.

mod support;

use std::collections::VecDeque;
use std::time::Duration;

use palisade::circuit_breaker::{CircuitBreaker, CircuitOpen, State};
use palisade::classify::Outcome;
use palisade::{BoxError, CircuitBreakerLayer};
use proptest::prelude::*;
use support::{Mock, MockError, Reply, Step};
use tower::{Layer, Service, ServiceExt};

const OPEN_FOR_MS: u64 = 100;

/// How a call ends: the request value tells the mock.
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    Ok,
    Err,
    /// `Ok` with status 404: classified as ignored.
    Ignored,
}

#[derive(Debug, Clone)]
enum Op {
    /// `poll_ready` on a fresh clone, then `call`; the future is kept.
    Start(End),
    /// Polls a kept future to its end.
    Finish(usize),
    /// Drops a kept future without polling it.
    Drop(usize),
    /// `poll_ready` on a fresh clone, then drops the clone unused.
    ReadyThenDrop,
    Advance(u64),
    ForceOpen,
    Disable,
    Reset,
}

#[derive(Debug, Clone, Copy)]
enum Policy {
    Consecutive(u32),
    /// A count window of `size`, `min_calls`, and a rate of `quarters / 4`.
    Ring {
        size: u32,
        min_calls: u64,
        quarters: u64,
    },
    /// A time window of `buckets` buckets of `width_ms` each.
    Time {
        width_ms: u64,
        buckets: u32,
        min_calls: u64,
        quarters: u64,
    },
}

fn classify(r: &Result<Reply<u64>, MockError>) -> Outcome {
    match r {
        Ok(reply) if reply.status == 404 => Outcome::Ignored,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    }
}

type Classifier = fn(&Result<Reply<u64>, MockError>) -> Outcome;
type Svc = CircuitBreaker<Mock<u64>, Classifier>;

/// The reference: the spec, written as plainly as possible.
#[derive(Debug)]
enum MState {
    Closed,
    Open { until: u64 },
    HalfOpen { in_flight: u32, wins: u32 },
    ForcedOpen,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ticket {
    Closed(u64),
    Probe(u64),
    Rejected,
    Pass,
}

#[derive(Debug)]
struct Model {
    policy: Policy,
    probes: u32,
    state: MState,
    generation: u64,
    now: u64,
    run: u64,
    ring: VecDeque<bool>,
    /// For a time window: when (in ns) each recorded outcome ended.
    timed: Vec<(u64, bool)>,
    rejections: u64,
}

impl Model {
    fn new(policy: Policy, probes: u32) -> Self {
        Self {
            policy,
            probes,
            state: MState::Closed,
            generation: 0,
            now: 0,
            run: 0,
            ring: VecDeque::new(),
            timed: Vec::new(),
            rejections: 0,
        }
    }

    fn transition(&mut self, to: MState) {
        self.generation += 1;
        if matches!(to, MState::Closed) {
            self.run = 0;
            self.ring.clear();
            self.timed.clear();
        }
        self.state = to;
    }

    fn trip(&mut self) {
        let until = self.now + OPEN_FOR_MS * 1_000_000;
        self.transition(MState::Open { until });
    }

    fn acquire(&mut self) -> Ticket {
        match self.state {
            MState::Closed => Ticket::Closed(self.generation),
            MState::Disabled => Ticket::Pass,
            MState::ForcedOpen => Ticket::Rejected,
            MState::Open { until } if self.now < until => Ticket::Rejected,
            MState::Open { .. } => {
                self.transition(MState::HalfOpen {
                    in_flight: 1,
                    wins: 0,
                });
                Ticket::Probe(self.generation)
            }
            MState::HalfOpen {
                ref mut in_flight,
                wins,
            } => {
                if *in_flight + wins < self.probes {
                    *in_flight += 1;
                    Ticket::Probe(self.generation)
                } else {
                    Ticket::Rejected
                }
            }
        }
    }

    fn release(&mut self, ticket: Ticket) {
        if let (Ticket::Probe(g), MState::HalfOpen { in_flight, .. }) = (ticket, &mut self.state) {
            if g == self.generation {
                *in_flight -= 1;
            }
        }
    }

    fn finish(&mut self, ticket: Ticket, end: End) {
        match (ticket, end) {
            (Ticket::Rejected | Ticket::Pass, _) => {}
            (Ticket::Probe(_), End::Ignored) => self.release(ticket),
            (Ticket::Closed(_), End::Ignored) => {}
            (Ticket::Closed(g), end) => {
                if !matches!(self.state, MState::Closed) || g != self.generation {
                    return;
                }
                let failed = end == End::Err;
                let trip = match self.policy {
                    Policy::Consecutive(n) => {
                        self.run = if failed { self.run + 1 } else { 0 };
                        self.run >= u64::from(n)
                    }
                    Policy::Ring {
                        size,
                        min_calls,
                        quarters,
                    } => {
                        self.ring.push_back(failed);
                        if self.ring.len() > size as usize {
                            self.ring.pop_front();
                        }
                        let calls = self.ring.len() as u64;
                        let failures = self.ring.iter().filter(|f| **f).count() as u64;
                        calls >= min_calls && 4 * failures >= quarters * calls
                    }
                    Policy::Time {
                        min_calls,
                        quarters,
                        ..
                    } => {
                        self.timed.push((self.now, failed));
                        let (calls, failures) = self.in_time_window();
                        calls >= min_calls && 4 * failures >= quarters * calls
                    }
                };
                if trip {
                    self.trip();
                }
            }
            (Ticket::Probe(g), end) => {
                let MState::HalfOpen { in_flight, wins } = self.state else {
                    return;
                };
                if g != self.generation {
                    return;
                }
                if end == End::Err {
                    self.trip();
                } else if wins + 1 >= self.probes {
                    self.transition(MState::Closed);
                } else {
                    self.state = MState::HalfOpen {
                        in_flight: in_flight - 1,
                        wins: wins + 1,
                    };
                }
            }
        }
    }

    /// Outcomes whose bucket is one of the last `buckets` (the current
    /// one included): `(calls, failures)`.
    fn in_time_window(&self) -> (u64, u64) {
        let Policy::Time {
            width_ms, buckets, ..
        } = self.policy
        else {
            unreachable!()
        };
        let width = width_ms * 1_000_000;
        let current = self.now / width;
        let inside: Vec<bool> = self
            .timed
            .iter()
            .filter(|(at, _)| at / width + u64::from(buckets) > current)
            .map(|(_, failed)| *failed)
            .collect();
        (
            inside.len() as u64,
            inside.iter().filter(|f| **f).count() as u64,
        )
    }

    fn expected(&self) -> (State, u64, u64, u64, u32) {
        let state = match self.state {
            MState::Closed => State::Closed,
            MState::Open { .. } => State::Open,
            MState::HalfOpen { .. } => State::HalfOpen,
            MState::ForcedOpen => State::ForcedOpen,
            MState::Disabled => State::Disabled,
        };
        let (calls, failures) = match self.policy {
            Policy::Consecutive(_) => (self.run, self.run),
            Policy::Ring { .. } => (
                self.ring.len() as u64,
                self.ring.iter().filter(|f| **f).count() as u64,
            ),
            Policy::Time { .. } => self.in_time_window(),
        };
        let in_flight = match self.state {
            MState::HalfOpen { in_flight, .. } => in_flight,
            _ => 0,
        };
        (state, calls, failures, self.rejections, in_flight)
    }
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        (1u32..=4).prop_map(Policy::Consecutive),
        (1u32..=6)
            .prop_flat_map(|size| (Just(size), 1..=u64::from(size), 1u64..=4))
            .prop_map(|(size, min_calls, quarters)| Policy::Ring {
                size,
                min_calls,
                quarters
            }),
        (10u64..=60, 1u32..=5, 1u64..=6, 1u64..=4).prop_map(
            |(width_ms, buckets, min_calls, quarters)| Policy::Time {
                width_ms,
                buckets,
                min_calls,
                quarters
            }
        ),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let end = prop_oneof![
        3 => Just(End::Ok),
        3 => Just(End::Err),
        1 => Just(End::Ignored)
    ];
    prop_oneof![
        6 => end.prop_map(Op::Start),
        5 => any::<usize>().prop_map(Op::Finish),
        1 => any::<usize>().prop_map(Op::Drop),
        1 => Just(Op::ReadyThenDrop),
        // Around the open duration, so the boundary is hit often.
        2 => prop_oneof![Just(OPEN_FOR_MS), 0..=OPEN_FOR_MS + 20].prop_map(Op::Advance),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::Disable),
        1 => Just(Op::Reset),
    ]
}

fn build(policy: Policy, probes: u32) -> Svc {
    let builder = match policy {
        Policy::Consecutive(n) => CircuitBreakerLayer::consecutive_failures(n),
        Policy::Ring {
            size,
            min_calls,
            quarters,
        } => CircuitBreakerLayer::failure_rate(quarters as f64 / 4.0)
            .window(palisade::circuit_breaker::Window::count(size))
            .min_calls(min_calls),
        Policy::Time {
            width_ms,
            buckets,
            min_calls,
            quarters,
        } => CircuitBreakerLayer::failure_rate(quarters as f64 / 4.0)
            .window(palisade::circuit_breaker::Window::time_with_buckets(
                Duration::from_millis(width_ms * u64::from(buckets)),
                buckets,
            ))
            .min_calls(min_calls),
    };
    let mock = Mock::new().outcome_fn(|_, request: &u64| match *request {
        0 => Step::ok(),
        1 => Step::err(),
        _ => Step::status(404),
    });
    builder
        .open_for(Duration::from_millis(OPEN_FOR_MS))
        .half_open_probes(probes)
        .classifier(classify as Classifier)
        .build()
        .unwrap()
        .layer(mock)
}

async fn run(policy: Policy, probes: u32, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let svc = build(policy, probes);
    let handle = svc.handle();
    let mut model = Model::new(policy, probes);
    let mut pending: Vec<(<Svc as Service<u64>>::Future, Ticket, End)> = Vec::new();
    for (i, op) in ops.into_iter().enumerate() {
        match op {
            Op::Start(end) => {
                let mut one = svc.clone();
                one.ready()
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let request = match end {
                    End::Ok => 0,
                    End::Err => 1,
                    End::Ignored => 2,
                };
                let fut = one.call(request);
                let ticket = model.acquire();
                if ticket == Ticket::Rejected {
                    model.rejections += 1;
                }
                pending.push((fut, ticket, end));
            }
            Op::Finish(n) if !pending.is_empty() => {
                let (fut, ticket, end) = pending.remove(n % pending.len());
                let result: Result<Reply<u64>, BoxError> = fut.await;
                let was_rejected = result.as_ref().err().is_some_and(|e| e.is::<CircuitOpen>());
                prop_assert_eq!(was_rejected, ticket == Ticket::Rejected, "step {}", i);
                model.finish(ticket, end);
            }
            Op::Drop(n) if !pending.is_empty() => {
                let (fut, ticket, _) = pending.remove(n % pending.len());
                drop(fut);
                model.release(ticket);
            }
            Op::Finish(_) | Op::Drop(_) => {}
            Op::ReadyThenDrop => {
                let mut one = svc.clone();
                one.ready()
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                drop(one);
                let ticket = model.acquire();
                model.release(ticket);
            }
            Op::Advance(ms) => {
                tokio::time::advance(Duration::from_millis(ms)).await;
                model.now += ms * 1_000_000;
            }
            Op::ForceOpen => {
                handle.force_open();
                if !matches!(model.state, MState::ForcedOpen) {
                    model.transition(MState::ForcedOpen);
                }
            }
            Op::Disable => {
                handle.disable();
                if !matches!(model.state, MState::Disabled) {
                    model.transition(MState::Disabled);
                }
            }
            Op::Reset => {
                handle.reset();
                model.generation += 1; // the transient resetting generation
                model.transition(MState::Closed);
            }
        }
        let c = handle.counts();
        let got = (
            c.state,
            c.calls,
            c.failures,
            c.rejections,
            c.probes_in_flight,
        );
        prop_assert_eq!(got, model.expected(), "after step {}: {:?}", i, model);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // 512 by default; PROPTEST_CASES for a longer hunt.
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        // Failing seeds land in tests/circuit_breaker_model.regressions.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn breaker_matches_the_reference_model(
        policy in policy(),
        probes in 1u32..=3,
        ops in prop::collection::vec(op(), 1..80),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run(policy, probes, ops))?;
    }
}
