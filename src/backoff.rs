//! Exponential backoff with jitter, shared by retry (the delay before each
//! new attempt) and the circuit breaker (an open period that grows with each
//! consecutive re-trip).
//!
//! The delay before retry number `attempt` (counting from 0) is
//! `base * factor^attempt`, then jittered, then capped at `max_delay`. The
//! cap comes *after* the jitter, so no delay ever exceeds `max_delay`
//! (backon's PR #240 shipped the opposite). The arithmetic is in saturating
//! nanoseconds and `f64`, so attempt 10,000 is as safe as attempt 1.
//!
//! # Jitter
//!
//! Why jitter at all: clients that back off on the same schedule retry at the
//! same instants and hit a recovering service together. Spreading the delays
//! ("Exponential Backoff and Jitter", AWS Architecture Blog) breaks the herd.
//! With `d = min(max_delay, base * factor^attempt)`:
//!
//! | [`Jitter`] | delay |
//! |---|---|
//! | `None` | `d` |
//! | `Full` | uniform in `[0, d]` |
//! | `Equal` | `d/2` + uniform in `[0, d/2]` |
//! | `Decorrelated` | `min(max_delay, uniform in [base, 3 * previous])`, `previous` starting at `base` |
//! | `Additive(j)` | `min(max_delay, base * factor^attempt + uniform in [0, j])` |
//!
//! # Example
//!
//! ```
//! use palisade::backoff::{Backoff, Jitter};
//! use std::time::Duration;
//!
//! let backoff = Backoff::exponential(Duration::from_millis(100))
//!     .max_delay(Duration::from_secs(1))
//!     .build()?;
//! let delays: Vec<_> = backoff.schedule(0).take(5).collect();
//! assert_eq!(delays, [100, 200, 400, 800, 1000].map(Duration::from_millis));
//!
//! // The same seed replays the same jittered schedule.
//! let full = Backoff::exponential(Duration::from_millis(100)).jitter(Jitter::Full).build()?;
//! let a: Vec<_> = full.schedule(42).take(8).collect();
//! let b: Vec<_> = full.schedule(42).take(8).collect();
//! assert_eq!(a, b);
//! # Ok::<(), palisade::backoff::InvalidBackoff>(())
//! ```

use std::time::Duration;

use crate::clock::duration_to_nanos;
use crate::rng::{SharedRng, uniform_up_to};

/// The default cap when none is set: one minute, or `base` if that is larger.
const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(60);

/// How a backoff delay is randomised. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Jitter {
    /// No randomness: `min(max_delay, base * factor^attempt)`.
    #[default]
    None,
    /// Uniform in `[0, d]`: the best spread, the AWS study's recommendation.
    Full,
    /// `d/2` plus uniform in `[0, d/2]`: never less than half the delay.
    Equal,
    /// Uniform in `[base, 3 * previous delay]`, capped: grows from the last
    /// delay actually used rather than from the attempt number.
    Decorrelated,
    /// `base * factor^attempt` plus uniform in `[0, j]`, capped.
    Additive(Duration),
}

/// Why a backoff could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidBackoff {
    /// The growth factor was below 1, NaN or infinite.
    #[error("backoff factor must be a finite number >= 1, got {0}")]
    Factor(f64),
    /// `max_delay` was below `base`.
    #[error("backoff max_delay ({max_delay:?}) is below base ({base:?})")]
    MaxBelowBase {
        /// The configured base delay.
        base: Duration,
        /// The configured cap.
        max_delay: Duration,
    },
}

/// An exponential backoff policy: immutable, cheap to clone, and pure: each
/// delay is a function of the attempt number, the previous delay and 64
/// random bits.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    base: u64,
    factor: f64,
    max_delay: u64,
    jitter: Jitter,
}

/// Builds a [`Backoff`]; see [`Backoff::exponential`].
#[derive(Debug, Clone)]
#[must_use = "call .build() to get a Backoff"]
pub struct BackoffBuilder {
    base: Duration,
    factor: f64,
    max_delay: Option<Duration>,
    jitter: Jitter,
}

impl Backoff {
    /// Starts a backoff of `base * 2^attempt`, no jitter, capped at one
    /// minute (or at `base` if that is longer).
    pub fn exponential(base: Duration) -> BackoffBuilder {
        BackoffBuilder {
            base,
            factor: 2.0,
            max_delay: None,
            jitter: Jitter::None,
        }
    }

    /// The same delay every time.
    pub fn constant(delay: Duration) -> Self {
        let nanos = duration_to_nanos(delay);
        Self {
            base: nanos,
            factor: 1.0,
            max_delay: nanos,
            jitter: Jitter::None,
        }
    }

    /// The delay before retry `attempt` (0 for the first retry), given the
    /// delay used before the previous one (`None` for the first) and 64
    /// random bits. Never above [`max_delay`](Self::max_delay); never panics.
    pub fn delay(&self, attempt: u32, previous: Option<Duration>, random: u64) -> Duration {
        Duration::from_nanos(self.delay_nanos(attempt, previous.map(duration_to_nanos), random))
    }

    pub(crate) fn delay_nanos(&self, attempt: u32, previous: Option<u64>, random: u64) -> u64 {
        let cap = self.max_delay;
        let exp = self.exponential_nanos(attempt);
        let delay = match self.jitter {
            Jitter::None => exp,
            Jitter::Full => uniform_up_to(random, exp.min(cap)),
            Jitter::Equal => {
                let d = exp.min(cap);
                let half = d / 2;
                half + uniform_up_to(random, d - half)
            }
            Jitter::Decorrelated => {
                let prev = previous.unwrap_or(self.base).max(self.base);
                let high = prev.saturating_mul(3);
                self.base + uniform_up_to(random, high - self.base)
            }
            Jitter::Additive(j) => exp.saturating_add(uniform_up_to(random, duration_to_nanos(j))),
        };
        delay.min(cap)
    }

    /// `base * factor^attempt` in nanoseconds, saturating at `max_delay`
    /// before it could overflow.
    fn exponential_nanos(&self, attempt: u32) -> u64 {
        let power = self.factor.powi(i32::try_from(attempt).unwrap_or(i32::MAX));
        let nanos = self.base as f64 * power;
        if nanos >= self.max_delay as f64 {
            // Covers +inf too; `as` would saturate anyway, this keeps the cap exact.
            self.max_delay.max(self.base)
        } else {
            nanos as u64
        }
    }

    /// A builder holding this backoff's settings, to change some of them.
    ///
    /// ```
    /// # use palisade::backoff::{Backoff, Jitter};
    /// # use std::time::Duration;
    /// let plain = Backoff::constant(Duration::from_millis(50));
    /// let jittered = plain.to_builder().jitter(Jitter::Full).build()?;
    /// assert_eq!(jittered.max_delay(), plain.max_delay());
    /// # Ok::<(), palisade::backoff::InvalidBackoff>(())
    /// ```
    pub fn to_builder(&self) -> BackoffBuilder {
        BackoffBuilder {
            base: self.base(),
            factor: self.factor,
            max_delay: Some(self.max_delay()),
            jitter: self.jitter,
        }
    }

    /// The first delay's nominal size.
    pub fn base(&self) -> Duration {
        Duration::from_nanos(self.base)
    }

    /// The cap every delay respects.
    pub fn max_delay(&self) -> Duration {
        Duration::from_nanos(self.max_delay)
    }

    /// The jitter in use.
    pub fn jitter_kind(&self) -> Jitter {
        self.jitter
    }

    /// The endless sequence of delays this policy yields for `seed`: the
    /// same seed always gives the same sequence. The retry layer draws from
    /// the same generator, so a retry seeded with `seed` waits exactly these
    /// delays (one draw per delay).
    pub fn schedule(&self, seed: u64) -> Schedule {
        Schedule {
            backoff: self.clone(),
            rng: SharedRng::seeded(seed),
            attempt: 0,
            previous: None,
        }
    }
}

impl BackoffBuilder {
    /// The growth factor per attempt (default 2). Must be finite and >= 1.
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// The cap on every delay, applied after jitter.
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = Some(max_delay);
        self
    }

    /// The jitter (default [`Jitter::None`]).
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<Backoff, InvalidBackoff> {
        if !(self.factor.is_finite() && self.factor >= 1.0) {
            return Err(InvalidBackoff::Factor(self.factor));
        }
        let max_delay = match self.max_delay {
            Some(max) if max < self.base => {
                return Err(InvalidBackoff::MaxBelowBase {
                    base: self.base,
                    max_delay: max,
                });
            }
            Some(max) => max,
            None => DEFAULT_MAX_DELAY.max(self.base),
        };
        Ok(Backoff {
            base: duration_to_nanos(self.base),
            factor: self.factor,
            max_delay: duration_to_nanos(max_delay),
            jitter: self.jitter,
        })
    }
}

/// An endless iterator over one seeded backoff schedule; see
/// [`Backoff::schedule`].
#[derive(Debug)]
pub struct Schedule {
    backoff: Backoff,
    rng: SharedRng,
    attempt: u32,
    previous: Option<u64>,
}

impl Iterator for Schedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let nanos = self
            .backoff
            .delay_nanos(self.attempt, self.previous, self.rng.next_u64());
        self.attempt = self.attempt.saturating_add(1);
        self.previous = Some(nanos);
        Some(Duration::from_nanos(nanos))
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn exponential_is_base_times_factor_power() {
        let b = Backoff::exponential(ms(10))
            .factor(3.0)
            .max_delay(ms(1000))
            .build()
            .unwrap();
        let got: Vec<_> = b.schedule(1).take(6).collect();
        assert_eq!(got, [10, 30, 90, 270, 810, 1000].map(ms));
    }

    #[test]
    fn huge_attempts_do_not_overflow() {
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
            Jitter::Additive(ms(5)),
        ] {
            let b = Backoff::exponential(ms(1))
                .max_delay(Duration::MAX)
                .jitter(jitter)
                .build()
                .unwrap();
            for attempt in [0, 64, 1_000, 10_000, u32::MAX] {
                assert!(b.delay(attempt, Some(Duration::MAX), u64::MAX) <= Duration::MAX);
            }
        }
    }

    #[test]
    fn additive_jitter_is_capped_after_jitter() {
        let b = Backoff::exponential(ms(100))
            .max_delay(ms(150))
            .jitter(Jitter::Additive(ms(100)))
            .build()
            .unwrap();
        assert_eq!(b.delay(5, None, u64::MAX), ms(150));
        assert_eq!(b.delay(0, None, 0), ms(100));
    }

    #[test]
    fn invalid_settings_are_errors() {
        assert!(matches!(
            Backoff::exponential(ms(1)).factor(0.5).build(),
            Err(InvalidBackoff::Factor(_))
        ));
        assert!(
            Backoff::exponential(ms(1))
                .factor(f64::NAN)
                .build()
                .is_err()
        );
        assert!(
            Backoff::exponential(ms(1))
                .factor(f64::INFINITY)
                .build()
                .is_err()
        );
        assert!(matches!(
            Backoff::exponential(ms(10)).max_delay(ms(9)).build(),
            Err(InvalidBackoff::MaxBelowBase { .. })
        ));
        assert_eq!(
            Backoff::exponential(ms(10))
                .max_delay(ms(10))
                .build()
                .unwrap()
                .max_delay(),
            ms(10)
        );
    }

    #[test]
    fn default_cap() {
        assert_eq!(
            Backoff::exponential(ms(10)).build().unwrap().max_delay(),
            Duration::from_secs(60)
        );
        let long = Duration::from_secs(120);
        assert_eq!(
            Backoff::exponential(long).build().unwrap().max_delay(),
            long
        );
    }

    #[test]
    fn constant() {
        let b = Backoff::constant(ms(7));
        assert!(b.schedule(3).take(20).all(|d| d == ms(7)));
    }
}
