//! A counting global allocator for the memory tests: heap growth and its
//! peak across the process, and allocations made by the calling thread (the
//! test harness's own threads allocate now and then, and are not the code
//! under test).
//!
//! Included only by the memory tests, each alone in its binary:
//! `#[path = "support/counting_alloc.rs"] mod counting_alloc;` (not through
//! `mod support`, which every test binary includes).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Allocations made by this thread.
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        // A const-initialised thread local without a destructor: no
        // allocation, usable here (and absent only while a thread ends).
        let _ = ALLOCS.try_with(|n| n.set(n.get() + 1));
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(now, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made so far by the calling thread.
pub fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

/// Starts a peak measurement: returns the heap in use now, which becomes
/// the peak to beat.
pub fn start_peak() -> usize {
    let base = CURRENT.load(Relaxed);
    PEAK.store(base, Relaxed);
    base
}

/// The highest heap use since [`start_peak`].
pub fn peak() -> usize {
    PEAK.load(Relaxed)
}
