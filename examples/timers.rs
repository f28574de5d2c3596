//! Timers: a periodic tick, one-shots, a cancel and a reset.
//!
//! What to notice: timers fire in the *timers* phase at the start of a turn,
//! ordered by deadline (ties in arm order), never before their deadline. The
//! loop has no periodic tick: the poll sleeps until the next deadline, or
//! earlier for a timer more than 64 wheel ticks (67.1 ms) away, which the
//! loop wakes once to file closer. Run with `RUST_LOG=evloop=trace`: of the
//! 14 turns, 7 fire nothing, the first and six such early wake-ups
//! (`tests/guide_claims.rs` counts them).
//!
//! Usage: `cargo run --example timers`

use std::time::Duration;

use evloop::EventLoop;

#[derive(Default)]
struct State {
    ticks: u32,
    log: Vec<String>,
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut el = EventLoop::<State>::new()?;
    let t0 = el.now();

    // A fixed-rate tick every 100 ms: stays on its grid even if a turn is late.
    el.timer_every(Duration::from_millis(100), move |fired, ctx, s: &mut State| {
        s.ticks += 1;
        log::info!(
            "tick {} at +{:?} (missed {})",
            s.ticks,
            ctx.now() - t0,
            fired.missed
        );
        if s.ticks == 5 {
            ctx.cancel_timer(fired.id);
            ctx.stop();
        }
    });

    // Two one-shots with the same deadline fire in the order they were armed.
    for name in ["first", "second"] {
        el.timer_after(Duration::from_millis(150), move |_, ctx, s: &mut State| {
            log::info!("one-shot {name} at +{:?}", ctx.now() - t0);
            s.log.push(name.to_string());
        });
    }

    // This one is cancelled before it can fire.
    let doomed = el.timer_after(Duration::from_millis(200), |_, _, s: &mut State| {
        s.log.push("doomed".into());
    });
    el.cancel_timer(doomed);

    // This one is pushed back from 50 ms to 250 ms.
    let late = el.timer_after(Duration::from_millis(50), move |_, ctx, s: &mut State| {
        log::info!("reset one-shot at +{:?}", ctx.now() - t0);
        s.log.push("reset".into());
    });
    el.reset_timer(late, t0 + Duration::from_millis(250));
    log::info!(
        "reset timer due in {:?}",
        el.timer_remaining(late).unwrap_or_default()
    );

    let mut state = State::default();
    el.run(&mut state)?;
    log::info!("done: {} ticks, one-shots fired: {:?}", state.ticks, state.log);
    assert_eq!(state.log, ["first", "second", "reset"]);
    Ok(())
}
