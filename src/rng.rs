//! A seedable random source that many clones of a service share without a
//! lock: SplitMix64, whose state only ever advances by a constant, so the
//! advance is one `fetch_add` and the output a pure function of the old state.
//!
//! Given a seed and an order of draws, the sequence is reproducible, which is
//! what lets a test replay a jittered schedule exactly.

use crate::sync::{AtomicU64, Ordering};

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// A lock-free, seedable random number generator shared by clones.
#[derive(Debug)]
pub(crate) struct SharedRng {
    state: AtomicU64,
}

impl SharedRng {
    /// A generator that replays the same sequence for the same seed.
    pub(crate) fn seeded(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// A generator seeded from the operating system's entropy.
    pub(crate) fn from_entropy() -> Self {
        Self::seeded(rand::random())
    }

    /// The next 64 random bits.
    #[inline]
    pub(crate) fn next_u64(&self) -> u64 {
        let s = self
            .state
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        mix(s)
    }

    /// Uniform in `0..=max` (Lemire's multiply-shift; bias below 2^-64 * max).
    #[inline]
    #[allow(dead_code)] // for layers that draw bounded values
    pub(crate) fn up_to(&self, max: u64) -> u64 {
        uniform_up_to(self.next_u64(), max)
    }
}

/// Maps 64 random bits to `0..=max`.
#[inline]
pub(crate) fn uniform_up_to(bits: u64, max: u64) -> u64 {
    match max.checked_add(1) {
        Some(span) => ((u128::from(bits) * u128::from(span)) >> 64) as u64,
        None => bits,
    }
}

#[inline]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let a = SharedRng::seeded(7);
        let b = SharedRng::seeded(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(
            SharedRng::seeded(8).next_u64(),
            SharedRng::seeded(7).next_u64()
        );
    }

    #[test]
    fn uniform_bounds() {
        assert_eq!(uniform_up_to(u64::MAX, 10), 10);
        assert_eq!(uniform_up_to(0, 10), 0);
        assert_eq!(uniform_up_to(12345, u64::MAX), 12345);
        let rng = SharedRng::seeded(1);
        let mut seen = [false; 4];
        for _ in 0..1000 {
            let v = rng.up_to(3);
            assert!(v <= 3);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|s| *s), "every value in 0..=3 is drawn");
    }
}
