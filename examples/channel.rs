//! Worker threads send results into the loop over `evloop::channel`.
//!
//! What to notice:
//! - The loop's state (`Totals`) is plain `&mut` data: the handler gets each
//!   message on the loop thread, so nothing is shared or locked.
//! - A burst of sends costs one wake-up of the loop, not one per message.
//! - The channel source closes itself once every `Sender` is dropped and the
//!   last message is delivered; a check hook (run after each dispatch phase)
//!   notices and stops the loop. No counting of "done" messages needed.
//!
//! Usage: `cargo run --example channel`

use std::thread;

use evloop::EventLoop;

const WORKERS: u64 = 4;
const PER_WORKER: u64 = 250_000;

#[derive(Default)]
struct Totals {
    sum: u64,
    messages: u64,
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
        if ctx.is_open(results) {
            return true; // keep checking
        }
        log::info!("all workers are done ({} messages)", t.messages);
        ctx.stop();
        false
    });

    for w in 0..WORKERS {
        let tx = tx.clone();
        thread::spawn(move || {
            // Worker w sums its share of 1..=WORKERS*PER_WORKER, sending a
            // partial result every 1000 numbers.
            let mut partial = 0;
            for i in 0..PER_WORKER {
                partial += w * PER_WORKER + i + 1;
                if (i + 1) % 1000 == 0 {
                    tx.send(std::mem::take(&mut partial)).expect("the loop went away");
                }
            }
            tx.send(partial).expect("the loop went away");
            log::info!("worker {w} finished");
            // `tx` drops here.
        });
    }
    drop(tx); // the loop's own copy: only the workers' keep the channel open

    let mut totals = Totals::default();
    el.run(&mut totals)?;
    let n = WORKERS * PER_WORKER;
    log::info!("sum of 1..={n} = {} (expected {})", totals.sum, n * (n + 1) / 2);
    assert_eq!(totals.sum, n * (n + 1) / 2);
    Ok(())
}
