//! A producer thread sends a million messages into the running loop over
//! `evloop::channel`.
//!
//! What to notice:
//! - The loop's state (`Totals`) is plain `&mut` data: the handler gets each
//!   message on the loop thread, so nothing is shared or locked.
//! - What a burst costs: the first send of a batch writes the loop's eventfd;
//!   later sends ride on that wake-up until the loop takes the batch. So the
//!   loop wakes once per batch it takes, not once per message: the producer
//!   starts only once the loop runs (from a deferred callback), and the last
//!   line prints how many batches the million messages came in. Sends that
//!   all happen before the loop first looks cost one wake-up in total.
//! - The channel source closes itself once every `Sender` is dropped and the
//!   last message is delivered; a check hook (run after each dispatch phase)
//!   notices and stops the loop. No counting of "done" messages needed.
//!
//! Usage: `cargo run --release --example channel`. To count the eventfd
//! writes themselves (8-byte writes; nothing else in the process writes 8
//! bytes): `strace -f -e trace=write target/release/examples/channel 2>&1 |
//! grep -cE ', 8\) += 8'`.

use std::thread;

use evloop::EventLoop;

const MESSAGES: u64 = 1_000_000;

#[derive(Default)]
struct Totals {
    sum: u64,
    messages: u64,
    /// Dispatch phases that delivered messages: one per batch, one wake-up each.
    batches: u64,
    seen: u64,
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut el = EventLoop::<Totals>::new()?;
    let (tx, rx) = evloop::channel::<u64>();
    let results = el.add_channel(rx, |n, _ctx, t: &mut Totals| {
        t.sum += n;
        t.messages += 1;
    })?;
    el.add_check(move |ctx, t| {
        if t.messages != t.seen {
            t.seen = t.messages;
            t.batches += 1;
        }
        if ctx.is_open(results) {
            return true; // keep checking
        }
        log::info!("the producer is done ({} messages)", t.messages);
        ctx.stop();
        false
    });

    // Start the producer from the first turn, so that it sends while the
    // loop polls and dispatches: the case that costs more than one wake-up.
    el.defer(move |_, _| {
        thread::spawn(move || {
            for i in 1..=MESSAGES {
                tx.send(i).expect("the loop went away");
            }
            log::info!("producer finished");
            // `tx` drops here: the channel closes once it is drained.
        });
    });

    let mut totals = Totals::default();
    el.run(&mut totals)?;
    log::info!(
        "sum of 1..={MESSAGES} = {} (expected {})",
        totals.sum,
        MESSAGES * (MESSAGES + 1) / 2
    );
    assert_eq!(totals.sum, MESSAGES * (MESSAGES + 1) / 2);
    log::info!(
        "{} messages in {} batches, one wake-up (eventfd write) each; {} turns",
        totals.messages,
        totals.batches,
        el.metrics().turns
    );
    Ok(())
}
