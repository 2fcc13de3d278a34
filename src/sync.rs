//! Atomics and `Arc` through one door, so the lock-free state machines run
//! unchanged under [loom](https://docs.rs/loom) when built with `--cfg palisade_loom`.
//!
//! Only the modules whose interleavings we model import from here; anything
//! else keeps using `std` directly.

#[cfg(palisade_loom)]
pub(crate) use loom::sync::Arc;
#[cfg(palisade_loom)]
#[allow(unused_imports)] // the shim offers more than every build uses
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

#[cfg(not(palisade_loom))]
pub(crate) use std::sync::Arc;
#[cfg(not(palisade_loom))]
#[allow(unused_imports)] // the shim offers more than every build uses
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
