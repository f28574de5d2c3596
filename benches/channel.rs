//! Channel throughput: one producer thread sends M = 100,000 `u64`s into the
//! loop, which runs turns until it has received them all and seen the
//! channel close. evloop's channel beside calloop's, in the same run:
//!
//! - `channel_unbounded`: `evloop::channel` / `calloop::channel::channel`.
//! - `channel_bounded_1024`: `evloop::bounded(1024)` /
//!   `calloop::channel::sync_channel(1024)`, the producer using the
//!   blocking `send` (so it waits for the loop whenever the channel is full).
//!
//! An iteration builds the channel, registers its receiver, spawns the
//! producer and turns until done: the same fixed costs on both sides, small
//! beside 100,000 messages. Messages per second and the ratios are printed
//! at the end, from criterion's estimates and from an interleaved re-run
//! (see `common::Report`).
//!
//! `cargo bench --bench channel -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::thread;
use std::time::Duration;

use common::{Report, Unit};
use criterion::Criterion;

/// Messages per iteration.
const M: u64 = 100_000;
/// Capacity of the bounded variants.
const BOUND: usize = 1024;
/// A turn never needs to wait this long; it only bounds a hang if a wake-up is lost.
const PATIENCE: Duration = Duration::from_secs(5);

/// What the loop's handler sees: messages received (and their sum, so the
/// values are really read) and whether the channel has closed.
#[derive(Default)]
struct Tally {
    count: u64,
    sum: u64,
    closed: bool,
}

impl Tally {
    fn take(&mut self, msg: u64) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(msg);
    }

    fn check(&self) {
        assert_eq!(self.count, M);
        assert_eq!(self.sum, M * (M - 1) / 2);
    }
}

/// Send 0..M through `send` on a new thread.
fn produce<T: Send + 'static, E: std::fmt::Debug + 'static>(
    tx: T,
    send: fn(&T, u64) -> Result<(), E>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for i in 0..M {
            send(&tx, i).unwrap();
        }
    })
}

fn evloop_run(el: &mut evloop::EventLoop<Tally>, bound: Option<usize>) {
    let mut tally = Tally::default();
    let (producer, id) = match bound {
        None => {
            let (tx, rx) = evloop::channel::<u64>();
            let id = el
                .add_channel(rx, |msg, _ctx, t: &mut Tally| t.take(msg))
                .unwrap();
            (produce(tx, evloop::Sender::send), id)
        }
        Some(cap) => {
            let (tx, rx) = evloop::bounded::<u64>(cap);
            let id = el
                .add_channel(rx, |msg, _ctx, t: &mut Tally| t.take(msg))
                .unwrap();
            (produce(tx, evloop::Sender::send), id)
        }
    };
    // The receiving source closes itself once the sender is gone and drained.
    while tally.count < M || el.is_open(id) {
        el.turn(&mut tally, Some(PATIENCE)).unwrap();
    }
    producer.join().unwrap();
    tally.check();
}

fn calloop_run(ev: &mut calloop::EventLoop<'static, Tally>, bound: Option<usize>) {
    use calloop::channel::Event;
    let handler = |event, _: &mut (), t: &mut Tally| match event {
        Event::Msg(msg) => t.take(msg),
        Event::Closed => t.closed = true,
    };
    let mut tally = Tally::default();
    let producer = match bound {
        None => {
            let (tx, rx) = calloop::channel::channel::<u64>();
            ev.handle()
                .insert_source(rx, handler)
                .map_err(|e| e.error)
                .unwrap();
            produce(tx, calloop::channel::Sender::send)
        }
        Some(cap) => {
            let (tx, rx) = calloop::channel::sync_channel::<u64>(cap);
            ev.handle()
                .insert_source(rx, handler)
                .map_err(|e| e.error)
                .unwrap();
            produce(tx, calloop::channel::SyncSender::send)
        }
    };
    // calloop removes the source itself after delivering `Closed`.
    while !tally.closed {
        ev.dispatch(Some(PATIENCE), &mut tally).unwrap();
    }
    producer.join().unwrap();
    tally.check();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut report = Report::new("evloop", "calloop", Unit::ElementsPerSec);
    let m = M.to_string();
    for (group_name, bound) in [("channel_unbounded", None), ("channel_bounded_1024", Some(BOUND))] {
        let mut group = c.benchmark_group(group_name);
        // One iteration is 100,000 messages (milliseconds): fewer samples do.
        group.sample_size(20);
        let mut el = evloop::EventLoop::<Tally>::new().unwrap();
        let mut ev = calloop::EventLoop::<Tally>::try_new().unwrap();
        report.compare(
            &mut group,
            group_name,
            &m,
            M,
            || evloop_run(&mut el, bound),
            || calloop_run(&mut ev, bound),
        );
        group.finish();
    }
    c.final_summary();
    report.print();
}
