//! Steady-state dispatch allocates nothing.
//!
//! A counting global allocator, so this must be the only test in its binary.
//! No logger is installed: `log`'s level stays off and `trace!` costs nothing.

mod common;
mod common_alloc;

use std::os::fd::AsRawFd;

use common::{eventfd, eventfd_read, eventfd_write, FdSource};
use std::time::Duration;

use evloop::{Action, Builder, EventLoop, Interest, PollMode};

#[test]
fn dispatching_events_allocates_nothing() {
    dispatch_without_allocating(EventLoop::builder());
    // The latency histograms are fixed arrays, and the spin's state two words.
    dispatch_without_allocating(
        EventLoop::builder()
            .latency_histograms(true)
            .poll_mode(PollMode::SpinThenBlock(Duration::from_micros(50))),
    );
}

fn dispatch_without_allocating(builder: Builder) {
    const WARM_UP: u64 = 1_000;
    const MEASURED: u64 = 100_000;
    let mut el = builder.build::<u64>().unwrap();
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

    let allocations = common_alloc::count_allocations(|| {
        let mut turns = 0u64;
        while n < WARM_UP + MEASURED && turns < 2 * MEASURED {
            el.turn(&mut n, Some(common::TICK)).unwrap();
            turns += 1;
        }
    });

    assert_eq!(n, WARM_UP + MEASURED, "one event per turn");
    assert_eq!(allocations, 0, "allocations while dispatching");
}
