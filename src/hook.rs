//! One user hook: a closure called with an event, isolated from the layer
//! that calls it.
//!
//! - Unset, a hook is `None`: the event is never built, so a layer pays
//!   one branch, and only on the paths that fire events (transitions and
//!   refusals, never a call that goes through).
//! - Set, it runs on the thread that caused the event, after the layer has
//!   finished its own work and released any lock it held.
//! - A panic inside the hook is caught (`catch_unwind`): the layer goes on
//!   as if the hook had returned, and the first panic of each hook is
//!   reported once as a `tracing` error (target `palisade::hook`); later
//!   panics of the same hook are dropped silently. (The process's panic
//!   hook, which runs before the unwind is caught, still prints the panic
//!   message, as for any caught panic.) With `panic = "abort"` nothing can
//!   be caught: a panicking hook aborts the process.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

struct Inner<E> {
    f: Box<dyn Fn(&E) + Send + Sync>,
    /// Which hook, for the panic report.
    what: &'static str,
    reported: AtomicBool,
}

/// A hook of events `E`; cheap to clone (the closure is shared).
pub(crate) struct Hook<E>(Option<Arc<Inner<E>>>);

impl<E> Hook<E> {
    /// The unset hook.
    pub(crate) const fn none() -> Self {
        Self(None)
    }

    /// A hook calling `f`; `what` names it in a panic report.
    pub(crate) fn new(what: &'static str, f: impl Fn(&E) + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(Inner {
            f: Box::new(f),
            what,
            reported: AtomicBool::new(false),
        })))
    }

    /// Whether a closure is set.
    #[inline]
    pub(crate) fn is_set(&self) -> bool {
        self.0.is_some()
    }

    /// Calls the hook with the event `make` builds, if a hook is set.
    #[inline]
    pub(crate) fn fire(&self, make: impl FnOnce() -> E) {
        if let Some(inner) = &self.0 {
            inner.call(&make());
        }
    }
}

impl<E> Inner<E> {
    #[cold]
    #[inline(never)]
    fn call(&self, event: &E) {
        if catch_unwind(AssertUnwindSafe(|| (self.f)(event))).is_err()
            && !self.reported.swap(true, Relaxed)
        {
            tracing::error!(
                target: "palisade::hook",
                hook = self.what,
                "an event hook panicked; the panic was caught and the layer goes on \
                 (reported once per hook)"
            );
        }
    }
}

impl<E> Clone for Hook<E> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<E> Default for Hook<E> {
    fn default() -> Self {
        Self::none()
    }
}

impl<E> fmt::Debug for Hook<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(inner) => write!(f, "Hook({})", inner.what),
            None => f.write_str("Hook(unset)"),
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn an_unset_hook_never_builds_its_event() {
        let hook: Hook<u32> = Hook::none();
        hook.fire(|| unreachable!("no hook, no event"));
        assert!(!hook.is_set());
    }

    #[test]
    fn a_panicking_hook_is_caught_every_time() {
        let calls = Arc::new(AtomicU32::new(0));
        let seen = calls.clone();
        let hook = Hook::new("test", move |e: &u32| {
            seen.fetch_add(*e, Relaxed);
            panic!("boom");
        });
        hook.fire(|| 1);
        hook.fire(|| 2);
        assert_eq!(calls.load(Relaxed), 3);
        assert!(hook.0.as_ref().unwrap().reported.load(Relaxed));
    }
}
