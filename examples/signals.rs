//! Run until SIGINT or SIGTERM, then shut down cleanly.
//!
//! What to notice:
//! - Signals arrive as an ordinary source (a self-pipe written by a tiny C
//!   handler), so the handler runs on the loop thread in the dispatch phase:
//!   it may touch the state, stop the loop, anything a handler can.
//! - The heartbeat is a fixed-rate timer: between beats the loop sleeps in
//!   the poll, it does not wake up to check a flag.
//! - When the signal source is closed (here: when the loop is dropped), the
//!   signals' previous dispositions come back, so a second Ctrl-C after
//!   shutdown would kill the process as usual.
//!
//! Usage: `cargo run --example signals`, then press Ctrl-C (or
//! `kill -TERM <pid>`).

use std::time::Duration;

use evloop::EventLoop;

#[derive(Default)]
struct State {
    beats: u64,
    stopped_by: Option<libc::c_int>,
}

fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "another signal",
    }
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut el = EventLoop::<State>::new()?;

    el.add_signals(&[libc::SIGINT, libc::SIGTERM], |sig, ctx, s: &mut State| {
        log::info!("got {}: shutting down", name(sig));
        s.stopped_by = Some(sig);
        ctx.stop();
    })?;
    el.timer_every(Duration::from_secs(1), |fired, _ctx, s: &mut State| {
        s.beats += 1;
        log::info!("heartbeat {} (missed {})", s.beats, fired.missed);
    });

    log::info!("running (pid {}); press Ctrl-C to stop", std::process::id());
    let mut state = State::default();
    el.run(&mut state)?;
    // Dropping the loop closes every source, the signal one included.
    drop(el);
    log::info!(
        "clean shutdown after {} heartbeat(s), stopped by {}",
        state.beats,
        state.stopped_by.map_or("nothing", name)
    );
    Ok(())
}
