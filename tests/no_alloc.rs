//! Steady-state dispatch allocates nothing.
//!
//! A counting global allocator, so this must be the only test in its binary.
//! No logger is installed: `log`'s level stays off and `trace!` costs nothing.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{eventfd, eventfd_read, eventfd_write, FdSource};
use evloop::{Action, EventLoop, Interest};

/// Counts allocations made on a thread while it has counting switched on
/// (the test harness's own threads allocate whenever they like).
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note_allocation() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counting touches only an atomic and a const-initialised thread-local Cell,
// neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller's contract for `alloc` is passed on as is.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn dispatching_events_allocates_nothing() {
    const WARM_UP: u64 = 1_000;
    const MEASURED: u64 = 100_000;
    let mut el = EventLoop::<u64>::new().unwrap();
    let efd = eventfd();
    eventfd_write(efd.as_raw_fd(), 1);
    // Each dispatch consumes the counter and bumps it again: a new edge, so
    // every turn polls exactly one kernel event.
    el.register(
        efd,
        Interest::READABLE,
        |fd: &mut FdSource, ev, _ctx, n: &mut u64| {
            assert!(ev.ready.is_readable());
            assert_eq!(eventfd_read(fd.as_raw_fd()), 1);
            eventfd_write(fd.as_raw_fd(), 1);
            *n += 1;
            Action::Keep
        },
    )
    .unwrap();
    let mut n = 0;
    while n < WARM_UP {
        el.turn(&mut n, Some(common::TICK)).unwrap();
    }

    COUNTING.with(|c| c.set(true));
    let mut turns = 0u64;
    while n < WARM_UP + MEASURED && turns < 2 * MEASURED {
        el.turn(&mut n, Some(common::TICK)).unwrap();
        turns += 1;
    }
    COUNTING.with(|c| c.set(false));

    assert_eq!(n, WARM_UP + MEASURED, "one event per turn");
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "allocations while dispatching"
    );
}
