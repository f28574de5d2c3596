//! A publish/subscribe broker with a line protocol: one connection's handler
//! writes to many other connections.
//!
//! The protocol, one command per line (ended by `\n` or `\r\n`):
//!
//! | client sends           | broker answers  | and                                          |
//! | ---------------------- | --------------- | -------------------------------------------- |
//! | `SUB topic`            | `OK`            | this connection receives the topic's messages |
//! | `UNSUB topic`          | `OK`            | it no longer does                             |
//! | `PUB topic message...` | `OK n`          | every subscriber gets `MSG topic message...`  |
//! | anything else          | `ERR ...`       | (a line over 64 KiB also closes)              |
//!
//! `n` is how many subscribers the message was queued for. Topics are single
//! words; the message is the rest of the line, spaces and all. Try it with
//! two `telnet 127.0.0.1 6000` windows.
//!
//! What to notice:
//! - **Writing to another connection**: the publisher's `on_data` calls
//!   `net::write(ctx, subscriber_id, bytes)`, which reaches the subscriber's
//!   `Conn` through the loop's source table. The publisher's own connection
//!   is the one source it cannot be fetched that way (its handler is running),
//!   so a publisher subscribed to its own topic is written through `conn`.
//! - **Order**: one thread, FIFO write queues: every subscriber sees messages
//!   in the order they were published.
//! - **A slow subscriber is cut off, not waited for.** Each connection may
//!   queue at most 1 MiB (`ConnConfig::max_queued`). Past that, the write is
//!   refused and that subscriber is closed with `CloseReason::Overflow`;
//!   the publisher and the other subscribers never notice. Without the cap,
//!   one stuck reader would grow the broker's memory without bound.
//! - **Cleanup in `on_close`**, whatever the reason (quit, reset, overflow):
//!   each connection remembers its topics, and removes itself from them.
//!
//! Usage: `cargo run --release --example pubsub [ADDR]` (default 127.0.0.1:6000).
//! Stops cleanly on SIGINT/SIGTERM.

use std::collections::HashMap;
use std::io;

use evloop::net::{self, Addr, CloseReason, Conn, ConnConfig, Handler, ListenConfig, Listening};
use evloop::{Ctx, EventLoop, SourceId};

/// The longest command line accepted.
const MAX_LINE: usize = 64 * 1024;

/// The application state: who is subscribed to what, in subscription order.
#[derive(Default)]
pub struct Broker {
    topics: HashMap<Vec<u8>, Vec<SourceId>>,
}

/// Listen on `addr` and run the broker.
pub fn start(ctx: &mut Ctx<Broker>, addr: &Addr) -> io::Result<Listening> {
    let cfg = ListenConfig {
        conn: ConnConfig {
            // The bound on a subscriber that does not read.
            max_queued: 1024 * 1024,
            ..ConnConfig::default()
        },
        ..ListenConfig::default()
    };
    net::listen(ctx, addr, cfg, |_, _, _, _| Some(Peer::default()))
}

/// One connection: the topics it subscribed to, and a reused message buffer.
#[derive(Default)]
struct Peer {
    topics: Vec<Vec<u8>>,
    msg: Vec<u8>,
}

impl Handler<Broker> for Peer {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], ctx: &mut Ctx<Broker>, broker: &mut Broker) -> usize {
        let mut used = 0;
        loop {
            let rest = &data[used..];
            match rest.iter().take(MAX_LINE + 1).position(|&b| b == b'\n') {
                Some(nl) => {
                    let line = &rest[..nl];
                    used += nl + 1;
                    self.command(conn, line.strip_suffix(b"\r").unwrap_or(line), ctx, broker);
                }
                None if rest.len() > MAX_LINE => {
                    conn.write(b"ERR line too long\n");
                    conn.close();
                    return data.len();
                }
                None => return used,
            }
        }
    }

    fn on_close(&mut self, conn: &mut Conn, reason: CloseReason, _: &mut Ctx<Broker>, broker: &mut Broker) {
        if reason == CloseReason::Overflow {
            log::info!("subscriber {} was not reading; cut off", conn.id());
        }
        for topic in self.topics.drain(..) {
            broker.unsubscribe(&topic, conn.id());
        }
    }
}

impl Peer {
    fn command(&mut self, conn: &mut Conn, line: &[u8], ctx: &mut Ctx<Broker>, broker: &mut Broker) {
        let (verb, rest) = split_word(line);
        match verb {
            b"" => {}
            b"SUB" | b"UNSUB" => {
                let (topic, extra) = split_word(rest);
                if topic.is_empty() || !extra.is_empty() {
                    conn.write(b"ERR usage: SUB topic | UNSUB topic\n");
                    return;
                }
                let known = self.topics.iter().position(|t| t == topic);
                match known {
                    None if verb == b"SUB" => {
                        self.topics.push(topic.to_vec());
                        broker.topics.entry(topic.to_vec()).or_default().push(conn.id());
                    }
                    Some(i) if verb == b"UNSUB" => {
                        self.topics.swap_remove(i);
                        broker.unsubscribe(topic, conn.id());
                    }
                    _ => {} // already (un)subscribed
                }
                conn.write(b"OK\n");
            }
            b"PUB" => {
                let (topic, message) = split_word(rest);
                if topic.is_empty() {
                    conn.write(b"ERR usage: PUB topic message\n");
                    return;
                }
                self.msg.clear();
                self.msg.extend_from_slice(b"MSG ");
                self.msg.extend_from_slice(topic);
                self.msg.push(b' ');
                self.msg.extend_from_slice(message);
                self.msg.push(b'\n');
                let mut delivered = 0;
                for &sub in broker.topics.get(topic).into_iter().flatten() {
                    let queued = if sub == conn.id() {
                        conn.write(&self.msg)
                    } else {
                        // Refused (false) when that subscriber is over its
                        // queue cap: it is being closed, and its on_close
                        // will take it off the topic.
                        net::write(ctx, sub, &self.msg)
                    };
                    delivered += usize::from(queued);
                }
                conn.write(format!("OK {delivered}\n").as_bytes());
            }
            _ => {
                conn.write(b"ERR unknown command (SUB, UNSUB, PUB)\n");
            }
        }
    }
}

impl Broker {
    fn unsubscribe(&mut self, topic: &[u8], id: SourceId) {
        if let Some(subs) = self.topics.get_mut(topic) {
            subs.retain(|&s| s != id);
            if subs.is_empty() {
                self.topics.remove(topic);
            }
        }
    }
}

/// The first space-separated word of `s`, and what follows its space.
fn split_word(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == b' ') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, b""),
    }
}

fn main() -> io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:6000".into());
    let mut el = EventLoop::new()?;
    let server = start(&mut el, &addr.parse()?)?;
    log::info!("pubsub broker listening on {}", server.addr);
    el.add_signals(&[libc::SIGINT, libc::SIGTERM], |sig, ctx, _| {
        log::info!("signal {sig}: shutting down");
        ctx.stop();
    })?;
    el.run(&mut Broker::default())?;
    log::info!("pubsub broker stopped");
    Ok(())
}
