//! One loop per core: several threads, each with its own `EventLoop`, all
//! accepting on the same port through SO_REUSEPORT.
//!
//! What to notice:
//! - A loop is single-threaded and keeps no global state, so scaling out is
//!   just "more loops": nothing is shared between the shards, and the kernel
//!   spreads incoming connections over their listeners.
//! - Signals belong to the process, so one loop (here the main thread's) owns
//!   SIGINT/SIGTERM and stops the shards through their `Remote`s, the
//!   thread-safe handle every loop hands out.
//!
//! Usage: `cargo run --release --example sharded [ADDR] [SHARDS]` (default
//! 127.0.0.1:6000, one shard per available core). Stops cleanly on
//! SIGINT/SIGTERM.

use std::sync::mpsc;
use std::thread;

use evloop::net::{self, Conn, Handler, ListenConfig};
use evloop::{Ctx, EventLoop, Remote};

struct Echo;

impl Handler<u64> for Echo {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<u64>, served: &mut u64) -> usize {
        conn.write(data);
        *served += data.len() as u64;
        data.len()
    }
}

/// Run one shard on this thread: report its `Remote`, serve until stopped.
fn shard(index: usize, addr: net::Addr, ready: mpsc::Sender<std::io::Result<Remote<u64>>>) {
    let setup = || -> std::io::Result<EventLoop<u64>> {
        let mut el = EventLoop::new()?;
        let cfg = ListenConfig {
            reuse_port: true,
            ..ListenConfig::default()
        };
        let l = net::listen(&mut el, &addr, cfg, |_, _, _, _| Some(Echo))?;
        log::debug!("shard {index} bound to {}", l.addr);
        Ok(el)
    };
    let mut el = match setup() {
        Ok(el) => el,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(el.remote());
    let mut served = 0u64;
    if let Err(e) = el.run(&mut served) {
        log::error!("shard {index}: {e}");
    }
    log::info!("shard {index} stopped after echoing {served} bytes");
}

fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut args = std::env::args().skip(1);
    let addr: net::Addr = args.next().unwrap_or_else(|| "127.0.0.1:6000".into()).parse()?;
    let shards = match args.next() {
        Some(n) => n
            .parse()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        None => thread::available_parallelism().map_or(2, |n| n.get()),
    };

    let (tx, rx) = mpsc::channel();
    let threads: Vec<_> = (0..shards)
        .map(|i| {
            let (addr, tx) = (addr.clone(), tx.clone());
            thread::spawn(move || shard(i, addr, tx))
        })
        .collect();
    let remotes = (0..shards)
        .map(|_| rx.recv().expect("shard reports"))
        .collect::<Result<Vec<_>, _>>()?;

    // The main thread's loop only waits for a signal, then stops every shard.
    let mut el = EventLoop::<()>::new()?;
    el.add_signals(&[libc::SIGINT, libc::SIGTERM], move |sig, ctx, _| {
        log::info!("signal {sig}: stopping {} shards", remotes.len());
        for r in &remotes {
            r.stop();
        }
        ctx.stop();
    })?;
    // Only now: a SIGTERM sent as soon as this line shows stops the shards
    // instead of killing the process.
    log::info!("{shards} shards listening on {addr}");
    el.run(&mut ())?;
    for t in threads {
        let _ = t.join();
    }
    log::info!("all shards stopped");
    Ok(())
}
