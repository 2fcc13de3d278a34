//! How services and response futures hold the one breaker core without
//! all bumping the same reference count.
//!
//! A response future must own a reference to the core (it records its
//! outcome when it ends, possibly after the service is gone), so each call
//! clones an `Arc` and drops it again. Were that always the core's own
//! `Arc`, every call on every thread would write the same cache line, and
//! two threads sharing a healthy breaker would slow each other down even
//! though the breaker itself only reads on that path. So the core is
//! reached through [`STRIPES`] links, each an `Arc` on its own cache line;
//! a thread always uses the same link, so threads mostly touch different
//! counters.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::sync::Arc;

use super::state::Core;

/// Links per breaker: enough that a few busy threads rarely share one.
pub(crate) const STRIPES: usize = 8;

/// One way to the core, alone on its cache line (with its `Arc` counts).
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Link {
    pub(crate) core: Arc<Core>,
}

/// What a layer and its services hold.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) core: Arc<Core>,
    links: [Arc<Link>; STRIPES],
}

impl Shared {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        let links = std::array::from_fn(|_| Arc::new(Link { core: core.clone() }));
        Self { core, links }
    }

    /// This thread's link, for a response future to keep.
    #[inline]
    pub(crate) fn link(&self) -> Arc<Link> {
        self.links[stripe() % STRIPES].clone()
    }
}

/// A small number fixed per thread, handed out in turn as threads first
/// ask, so that concurrent threads get different links.
#[inline]
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<Option<usize>> = const { Cell::new(None) };
    }
    STRIPE.with(|s| match s.get() {
        Some(stripe) => stripe,
        None => {
            let stripe = NEXT.fetch_add(1, Relaxed);
            s.set(Some(stripe));
            stripe
        }
    })
}

/// Keeps a hot word on its own cache line (128 bytes: two lines, against
/// adjacent-line prefetch), so that a word every call writes does not
/// evict the read-mostly words beside it from other cores' caches.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}
