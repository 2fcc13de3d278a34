//! The breaker's shared core: one state word, the trip policy, the open
//! deadline, and every transition between states.
//!
//! # Implementation details
//!
//! The state lives in one `AtomicU64`:
//!
//! ```text
//!  63            32 31         18 17         4 3     0
//! +----------------+-------------+------------+-------+
//! |   generation   |  probe wins | in flight  |  tag  |
//! +----------------+-------------+------------+-------+
//! ```
//!
//! Every transition is one compare-and-swap on that word that also bumps
//! the generation, so of many callers racing to trip, close or re-open,
//! exactly one wins and performs the side effects (a new open deadline, a
//! `tracing` event). A call remembers the generation that admitted it and
//! its outcome only counts while the breaker is still in that generation.
//!
//! Half-open admission is the same CAS: a probe is admitted when
//! `in flight + wins < k`, and reserves its slot by incrementing `in flight`.
//! A success moves the slot to `wins` (the `k`-th closes the breaker), a
//! failure re-opens it, and a dropped or ignored probe just gives the slot
//! back. So at most `k` probes are ever in flight, whatever the number of
//! clones or threads.
//!
//! The open deadline is a second word, published after the winning CAS
//! together with the generation it belongs to (`deadline_gen`). A reader
//! that finds the breaker open but the deadline not yet published (a window
//! of a few instructions) treats the breaker as open for its base duration.
//!
//! # Memory ordering
//!
//! Transitions are `AcqRel`; admission loads are `Acquire`, so a call
//! admitted in a new closed generation sees the counts reset before that
//! generation was published. Counts themselves are `Relaxed`: they only
//! need to be exact per counter, not ordered with one another.

use std::fmt;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::classify::Outcome;
use crate::clock::{Clock, Nanos};
use crate::rng::SharedRng;
use crate::sync::{
    AtomicU64,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};

use super::policy::Policy;
use super::shared::Padded;
use super::window::Tally;

/// The states of a breaker, as its handle reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Calls go through; outcomes are counted towards a trip.
    Closed,
    /// Calls are rejected with [`CircuitOpen`](super::CircuitOpen) until the
    /// open duration has passed.
    Open,
    /// Up to `k` probe calls go through; their outcomes close or re-open the
    /// breaker. Other calls are rejected.
    HalfOpen,
    /// Held open by [`force_open`](super::CircuitBreakerHandle::force_open)
    /// until [`reset`](super::CircuitBreakerHandle::reset).
    ForcedOpen,
    /// Every call goes through and nothing is counted, until
    /// [`reset`](super::CircuitBreakerHandle::reset).
    Disabled,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half-open",
            State::ForcedOpen => "forced-open",
            State::Disabled => "disabled",
        })
    }
}

const CLOSED: u64 = 0;
const OPEN: u64 = 1;
const HALF_OPEN: u64 = 2;
const FORCED_OPEN: u64 = 3;
const DISABLED: u64 = 4;
/// A reset in progress: counts are being emptied before the new closed
/// generation is published. Calls pass through and are not counted.
const RESETTING: u64 = 5;

const TAG_MASK: u64 = 0xF;
const FIELD_BITS: u32 = 14;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;
const IN_FLIGHT_SHIFT: u32 = 4;
const WINS_SHIFT: u32 = IN_FLIGHT_SHIFT + FIELD_BITS;
const GEN_SHIFT: u32 = 32;

/// The most half-open probes the state word can count.
pub(crate) const MAX_PROBES: u32 = FIELD_MASK as u32;

/// A decoded state word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word(u64);

impl Word {
    #[inline]
    fn new(tag: u64, generation: u32) -> Self {
        Self(tag | (u64::from(generation) << GEN_SHIFT))
    }
    #[inline]
    fn tag(self) -> u64 {
        self.0 & TAG_MASK
    }
    #[inline]
    fn generation(self) -> u32 {
        (self.0 >> GEN_SHIFT) as u32
    }
    #[inline]
    fn in_flight(self) -> u32 {
        ((self.0 >> IN_FLIGHT_SHIFT) & FIELD_MASK) as u32
    }
    #[inline]
    fn wins(self) -> u32 {
        ((self.0 >> WINS_SHIFT) & FIELD_MASK) as u32
    }
    fn with_probes(self, in_flight: u32, wins: u32) -> Self {
        let cleared = self.0 & !((FIELD_MASK << IN_FLIGHT_SHIFT) | (FIELD_MASK << WINS_SHIFT));
        Self(cleared | (u64::from(in_flight) << IN_FLIGHT_SHIFT) | (u64::from(wins) << WINS_SHIFT))
    }
    /// The same tag's successor: a new generation (wrapping after 2^32
    /// transitions; a call would have to stay in flight that long to be
    /// mistaken for a current one).
    fn next(self, tag: u64) -> Self {
        Self::new(tag, self.generation().wrapping_add(1))
    }
    fn state(self) -> State {
        match self.tag() {
            OPEN => State::Open,
            HALF_OPEN => State::HalfOpen,
            FORCED_OPEN => State::ForcedOpen,
            DISABLED => State::Disabled,
            _ => State::Closed,
        }
    }
}

/// What `poll_ready` decided for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Closed: call, and count the outcome for this generation.
    Closed(u32),
    /// Half-open: a probe slot of this generation is reserved.
    Probe(u32),
    /// Open, or half-open with every slot taken.
    Reject(Duration),
    /// Disabled (or resetting): call, count nothing.
    Pass,
}

/// How a probe ended, as far as the breaker is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeEnd {
    Success,
    Failure,
    /// Dropped, ignored, or its `poll_ready` failed: the slot goes back.
    Release,
}

/// Settings fixed at build time.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) probes: u32,
    pub(crate) open: Backoff,
    pub(crate) slow_threshold: Option<Nanos>,
    pub(crate) half_open_timeout: Option<Nanos>,
    pub(crate) name: Option<std::borrow::Cow<'static, str>>,
    pub(crate) observe: super::events::Observe,
}

/// The one state every clone of a breaker shares (created by `build()`).
#[derive(Debug)]
pub(crate) struct Core {
    state: Padded<AtomicU64>,
    policy: Policy,
    settings: Settings,
    /// Open: when the next probe may go. Half-open with a timeout: when
    /// the half-open period gives up. Valid for generation `deadline_gen`.
    deadline: AtomicU64,
    deadline_gen: AtomicU64,
    /// Consecutive re-opens without closing (the backoff's attempt).
    reopens: AtomicU64,
    /// The last open duration (for decorrelated jitter).
    last_open: AtomicU64,
    rejections: Padded<AtomicU64>,
    rng: SharedRng,
    clock: Clock,
}

/// A snapshot for the handle.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Snapshot {
    pub(crate) state: State,
    pub(crate) tally: Tally,
    pub(crate) rejections: u64,
    pub(crate) probes_in_flight: u32,
}

impl Core {
    pub(crate) fn new(policy: Policy, settings: Settings, rng: SharedRng) -> Self {
        Self {
            state: Padded(AtomicU64::new(Word::new(CLOSED, 0).0)),
            policy,
            settings,
            deadline: AtomicU64::new(0),
            deadline_gen: AtomicU64::new(u64::MAX),
            reopens: AtomicU64::new(0),
            last_open: AtomicU64::new(0),
            rejections: Padded(AtomicU64::new(0)),
            rng,
            clock: Clock::new(),
        }
    }

    #[inline]
    fn load(&self) -> Word {
        Word(self.state.load(Acquire))
    }

    #[inline]
    fn cas(&self, current: Word, next: Word) -> Result<(), Word> {
        self.state
            .compare_exchange(current.0, next.0, AcqRel, Acquire)
            .map(drop)
            .map_err(Word)
    }

    /// The deadline published for `generation`, if it has been.
    fn deadline_for(&self, generation: u32) -> Option<Nanos> {
        (self.deadline_gen.load(Acquire) == u64::from(generation))
            .then(|| self.deadline.load(Relaxed))
    }

    fn publish_deadline(&self, generation: u32, at: Nanos) {
        self.deadline.store(at, Relaxed);
        self.deadline_gen.store(u64::from(generation), Release);
    }

    /// Decides admission for one call (called from `poll_ready`).
    #[inline]
    pub(crate) fn acquire(&self) -> Decision {
        let mut word = self.load();
        loop {
            match word.tag() {
                CLOSED => return Decision::Closed(word.generation()),
                DISABLED | RESETTING => return Decision::Pass,
                FORCED_OPEN => return Decision::Reject(self.settings.open.base()),
                OPEN => {
                    let now = self.clock.now();
                    let Some(until) = self.deadline_for(word.generation()) else {
                        // The trip is being published right now.
                        return Decision::Reject(self.settings.open.base());
                    };
                    if now < until {
                        return Decision::Reject(Duration::from_nanos(until - now));
                    }
                    let next = word.next(HALF_OPEN).with_probes(1, 0);
                    match self.cas(word, next) {
                        Ok(()) => {
                            if let Some(timeout) = self.settings.half_open_timeout {
                                self.publish_deadline(
                                    next.generation(),
                                    now.saturating_add(timeout),
                                );
                            }
                            self.event(word, next);
                            return Decision::Probe(next.generation());
                        }
                        Err(actual) => word = actual,
                    }
                }
                _ /* HALF_OPEN */ => {
                    let (in_flight, wins) = (word.in_flight(), word.wins());
                    if in_flight + wins < self.settings.probes {
                        match self.cas(word, word.with_probes(in_flight + 1, wins)) {
                            Ok(()) => return Decision::Probe(word.generation()),
                            Err(actual) => word = actual,
                        }
                        continue;
                    }
                    let Some(timeout) = self.settings.half_open_timeout else {
                        // Every slot is taken; the next decision comes when a
                        // probe ends, so there is no better hint than zero.
                        return Decision::Reject(Duration::ZERO);
                    };
                    let now = self.clock.now();
                    let until = self
                        .deadline_for(word.generation())
                        .unwrap_or_else(|| now.saturating_add(timeout));
                    if now < until {
                        return Decision::Reject(Duration::from_nanos(until - now));
                    }
                    // The probes took too long: give up on them and re-open.
                    match self.cas(word, word.next(OPEN)) {
                        Ok(()) => {
                            self.opened(word, word.next(OPEN), now, true);
                            word = self.load();
                        }
                        Err(actual) => word = actual,
                    }
                }
            }
        }
    }

    /// The generation if the breaker is closed (one load): the first step
    /// of [`acquire`](Self::acquire), for callers to take inline.
    #[inline]
    pub(crate) fn closed_generation(&self) -> Option<u32> {
        let word = self.load();
        (word.tag() == CLOSED).then(|| word.generation())
    }

    /// Whether a closed-state admission made in `generation` still stands:
    /// one load, the re-check `call` makes on the hot path.
    #[inline]
    pub(crate) fn closed_is_current(&self, generation: u32) -> bool {
        let word = self.load();
        word.tag() == CLOSED && word.generation() == generation
    }

    /// Whether a probe reserved in `generation` still holds its slot.
    #[inline]
    pub(crate) fn probe_is_current(&self, generation: u32) -> bool {
        let word = self.load();
        word.tag() == HALF_OPEN && word.generation() == generation
    }

    /// Gives back a probe slot of `generation` (a dropped probe, a dropped
    /// ready service, an ignored outcome). Records nothing.
    pub(crate) fn release_probe(&self, generation: u32) {
        self.end_probe(generation, ProbeEnd::Release, None);
    }

    /// Whether `call` should read the clock (to time slow calls).
    #[inline]
    pub(crate) fn times_calls(&self) -> bool {
        self.settings.slow_threshold.is_some()
    }

    #[inline]
    pub(crate) fn now(&self) -> Nanos {
        self.clock.now()
    }

    pub(crate) fn count_rejection(&self, retry_after: Duration) {
        self.rejections.fetch_add(1, Relaxed);
        self.settings.observe.rejected(retry_after);
    }

    /// Hooks and metrics.
    #[inline]
    pub(crate) fn observe(&self) -> &super::events::Observe {
        &self.settings.observe
    }

    /// Records the outcome of a call admitted in `generation` (a probe or
    /// a closed-state call) that started at `start` (0 unless timed).
    #[inline]
    pub(crate) fn finish(&self, generation: u32, probe: bool, start: Nanos, outcome: Outcome) {
        let failed = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignored => {
                if probe {
                    self.release_probe(generation);
                }
                return;
            }
        };
        let mut end = None;
        let slow = match self.settings.slow_threshold {
            Some(threshold) => {
                let now = self.clock.now();
                end = Some(now);
                now.saturating_sub(start) >= threshold
            }
            None => false,
        };
        if probe {
            let how = if failed || slow {
                ProbeEnd::Failure
            } else {
                ProbeEnd::Success
            };
            self.end_probe(generation, how, end);
            return;
        }
        let current = || self.load() == Word::new(CLOSED, generation);
        let now = || end.unwrap_or_else(|| self.clock.now());
        if self.policy.record(generation, current, failed, slow, now) {
            self.trip(generation);
        }
    }

    /// Closed -> open, if still closed in `generation`.
    fn trip(&self, generation: u32) {
        self.policy.seal(generation);
        let word = Word::new(CLOSED, generation);
        let next = word.next(OPEN);
        if self.cas(word, next).is_ok() {
            self.opened(word, next, self.clock.now(), false);
        }
    }

    /// After a winning CAS into open: the open duration, its deadline, the
    /// event. `reopen` is true when a half-open period failed.
    fn opened(&self, from: Word, to: Word, now: Nanos, reopen: bool) {
        let attempt = if reopen {
            self.reopens.fetch_add(1, Relaxed)
        } else {
            self.reopens.swap(1, Relaxed);
            0
        };
        // A first trip starts the schedule over: no previous period, or
        // decorrelated jitter would grow from the last chain's longest one.
        let previous = match self.last_open.load(Relaxed) {
            0 => None,
            _ if !reopen => None,
            p => Some(p),
        };
        let attempt = u32::try_from(attempt).unwrap_or(u32::MAX);
        let open_for = self
            .settings
            .open
            .delay_nanos(attempt, previous, self.rng.next_u64());
        self.last_open.store(open_for, Relaxed);
        self.publish_deadline(to.generation(), now.saturating_add(open_for));
        self.event_open(from, to, open_for);
    }

    fn end_probe(&self, generation: u32, how: ProbeEnd, now: Option<Nanos>) {
        let mut word = self.load();
        loop {
            if word.tag() != HALF_OPEN || word.generation() != generation {
                return; // an earlier generation's probe: moves nothing
            }
            let (in_flight, wins) = (word.in_flight(), word.wins());
            debug_assert!(in_flight > 0, "a probe ended that was never admitted");
            let in_flight = in_flight.saturating_sub(1);
            let next = match how {
                ProbeEnd::Release => word.with_probes(in_flight, wins),
                ProbeEnd::Failure => word.next(OPEN),
                ProbeEnd::Success if wins + 1 >= self.settings.probes => {
                    // Empty the counts *before* publishing the new closed
                    // generation, so no call of it can see the old ones.
                    // If the CAS loses, the breaker was not closed anyway.
                    let next = word.next(CLOSED);
                    self.policy.reset(next.generation());
                    next
                }
                ProbeEnd::Success => word.with_probes(in_flight, wins + 1),
            };
            match self.cas(word, next) {
                Ok(()) => {
                    match next.tag() {
                        OPEN => {
                            let now = now.unwrap_or_else(|| self.clock.now());
                            self.opened(word, next, now, true);
                        }
                        CLOSED => self.event(word, next),
                        _ => {}
                    }
                    return;
                }
                Err(actual) => word = actual,
            }
        }
    }

    /// Moves to `tag` from any state (the handle's force and disable).
    pub(crate) fn force(&self, tag: u64) {
        let mut word = self.load();
        loop {
            if word.tag() == tag {
                return; // already there: no new generation, no event
            }
            if word.tag() == CLOSED {
                self.policy.seal(word.generation());
            }
            let next = word.next(tag);
            match self.cas(word, next) {
                Ok(()) => return self.event(word, next),
                Err(actual) => word = actual,
            }
        }
    }

    pub(crate) fn force_open(&self) {
        self.force(FORCED_OPEN);
    }

    pub(crate) fn disable(&self) {
        self.force(DISABLED);
    }

    /// Back to closed with empty counts, from any state.
    pub(crate) fn reset(&self) {
        let mut word = self.load();
        // No seal of a closed generation here (unlike `trip` and `force`):
        // `policy.reset` below overwrites the consecutive word with the new
        // generation before anything can be counted again, and an outcome
        // of the old generation is ignored from then on. (Mutation testing
        // found the seal had no effect; the loom reset models agree.)
        let resetting = loop {
            let next = word.next(RESETTING);
            match self.cas(word, next) {
                Ok(()) => break next,
                Err(actual) => word = actual,
            }
        };
        let closed = resetting.next(CLOSED);
        self.policy.reset(closed.generation());
        // Losing this CAS means another transition came after ours: fine.
        if self.cas(resetting, closed).is_ok() {
            self.event(word, closed);
        }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let word = self.load();
        Snapshot {
            state: word.state(),
            tally: self.policy.tally(|| self.clock.now()),
            rejections: self.rejections.load(Relaxed),
            probes_in_flight: if word.tag() == HALF_OPEN {
                word.in_flight()
            } else {
                0
            },
        }
    }

    pub(crate) fn state(&self) -> State {
        self.load().state()
    }

    /// How long from now until a keyed registry may evict this breaker
    /// without changing what any call sees: `Some(0)` when closed or
    /// half-open with no probe in flight (its open period is over), the
    /// time left of the open period when open, `None` (never) while probes
    /// are in flight or the breaker is forced open, disabled or resetting:
    /// a fresh breaker would admit calls this one refuses.
    pub(crate) fn evictable_in(&self) -> Option<Nanos> {
        let word = self.load();
        match word.tag() {
            CLOSED => Some(0),
            HALF_OPEN if word.in_flight() == 0 => Some(0),
            OPEN => {
                // A deadline being published: not now, look again later.
                let until = self.deadline_for(word.generation())?;
                Some(until.saturating_sub(self.clock.now()))
            }
            _ => None,
        }
    }

    /// Puts the breaker in `state` at `generation` (for the models).
    #[cfg(all(test, palisade_loom))]
    pub(crate) fn set_for_test(&self, state: State, generation: u32) {
        let tag = match state {
            State::Closed => CLOSED,
            State::Open => OPEN,
            State::HalfOpen => HALF_OPEN,
            State::ForcedOpen => FORCED_OPEN,
            State::Disabled => DISABLED,
        };
        self.state.store(Word::new(tag, generation).0, Release);
    }

    #[cfg(all(test, palisade_loom))]
    pub(crate) fn generation_for_test(&self) -> u32 {
        self.load().generation()
    }

    #[cfg(all(test, palisade_loom))]
    pub(crate) fn policy_word_for_test(&self) -> u64 {
        match &self.policy {
            Policy::Consecutive(c) => c.word_for_test(),
            Policy::Rate { .. } => 0,
        }
    }

    #[cfg(all(test, palisade_loom))]
    pub(crate) fn resetting_for_test(&self) -> bool {
        self.load().tag() == RESETTING
    }

    fn event(&self, from: Word, to: Word) {
        let name = self.settings.name.as_deref().unwrap_or("");
        let (from, to, generation) = (from.state(), to.state(), to.generation());
        match to {
            State::Open | State::ForcedOpen => {
                tracing::warn!(target: "palisade::circuit_breaker", breaker = name, %from, %to, generation, "circuit breaker transition")
            }
            _ => {
                tracing::info!(target: "palisade::circuit_breaker", breaker = name, %from, %to, generation, "circuit breaker transition")
            }
        }
        self.settings.observe.transition(from, to);
    }

    fn event_open(&self, from: Word, to: Word, open_for: Nanos) {
        let name = self.settings.name.as_deref().unwrap_or("");
        let (from, to, generation) = (from.state(), to.state(), to.generation());
        let open_for = Duration::from_nanos(open_for);
        tracing::warn!(target: "palisade::circuit_breaker", breaker = name, %from, %to, generation, ?open_for, "circuit breaker opened");
        self.settings.observe.transition(from, to);
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;
    use crate::circuit_breaker::policy::Consecutive;

    fn core() -> Core {
        Core::new(
            Policy::Consecutive(Consecutive::new(1)),
            Settings {
                probes: 1,
                open: Backoff::constant(Duration::from_secs(60)),
                slow_threshold: None,
                half_open_timeout: None,
                name: None,
                observe: super::super::events::Observe::none(),
            },
            SharedRng::seeded(1),
        )
    }

    #[test]
    fn trip_then_reset() {
        let c = core();
        c.finish(0, false, 0, Outcome::Failure);
        assert_eq!(c.state(), State::Open);
        c.reset();
        assert_eq!(c.state(), State::Closed);
        assert_eq!(c.snapshot().tally.failures, 0);
    }

    #[test]
    fn reset_then_late_failure() {
        let c = core();
        c.reset();
        c.finish(0, false, 0, Outcome::Failure);
        assert_eq!((c.state(), c.snapshot().tally.failures), (State::Closed, 0));
    }
}
