//! Fairness between the clients of an example server: one client's burst
//! (a pipeline of thousands of requests, a flood of tiny commands) is
//! served a slice at a time, so the others wait for one slice, not for the
//! whole burst.
//!
//! The net layer already caps what one dispatch *reads* (`read_budget`),
//! but not what the handler *does* with it: 256 KiB of 8-byte commands is
//! 32,768 commands, and a command that fans out to many connections costs
//! more than one. So a handler counts its work in units of its own choosing
//! and, once a slice is used up, stops consuming: it pauses reading and asks
//! for reading to resume in the next turn's deferred phase. The net layer
//! keeps the unconsumed bytes and offers them again first when reading
//! resumes; the rest of this turn's ready connections are served meanwhile.

// Each example uses the part it needs.
#![allow(dead_code)]

use evloop::net::{self, Conn};
use evloop::Ctx;

/// Work one connection may do between two chances for the others: a few
/// hundred microseconds to a few milliseconds of CPU for the examples'
/// commands (measured: 4,096 pubsub commands with one delivery each take
/// ~1 ms here).
pub const SLICE: usize = 4096;

/// Counts a connection's work and ends its slice.
#[derive(Default)]
pub struct Slice {
    used: usize,
}

impl Slice {
    /// Work left in the current slice (at least one unit).
    pub fn left(&self) -> usize {
        SLICE - self.used
    }

    /// Count `units` of work done for `conn`. True when the slice is used
    /// up: the caller must stop consuming input and return what it used;
    /// reading is paused until the next turn.
    pub fn spend<S>(&mut self, units: usize, conn: &mut Conn, ctx: &mut Ctx<S>) -> bool {
        self.used += units;
        if self.used < SLICE {
            return false;
        }
        self.used = 0;
        conn.pause_reading();
        let id = conn.id();
        ctx.defer(move |ctx, _| {
            net::resume_reading(ctx, id);
        });
        true
    }
}
