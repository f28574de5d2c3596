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
//! words of at most 256 bytes; the message is the rest of the line, spaces
//! and all. A connection may hold 10,000 subscriptions. Try it with two
//! `telnet 127.0.0.1 6000` windows.
//!
//! What to notice:
//! - **Writing to another connection**: the publisher's `on_data` calls
//!   `net::write(ctx, subscriber_id, bytes)`, which reaches the subscriber's
//!   `Conn` through the loop's source table. The publisher's own connection
//!   is the one source it cannot be fetched that way (its handler is running),
//!   so a publisher subscribed to its own topic is written through `conn`.
//! - **Order**: one thread, FIFO write queues: every subscriber sees messages
//!   in the order they were published.
//! - **A subscriber that falls behind waits on references, not copies.**
//!   Its connection queues about 16 KiB (`ConnConfig::high_water`, and
//!   the message that crossed it); once `net::has_room` says no, what
//!   follows waits in the broker's backlog for it as references to the
//!   published message, which every subscriber it went to shares, and
//!   `on_room` hands it over as the connection drains. A 60 KB message for 2,000 subscribers that do not
//!   read is one 60 KB copy, not 120 MB, and after the first few it costs
//!   the publisher a reference per subscriber, not a copy and a system
//!   call. (2,000 subscribers that never read, fed 60 KB messages until
//!   they were cut off: the broker peaked at 73 MB, and a publish took
//!   56 ms at worst; when each connection queued its own copies, up to
//!   1 MiB, 0.5 to 2 GB and 0.6 s.) A connection's own replies wait behind
//!   its backlog too, so it sees everything in order, and so does its close
//!   (at its EOF, or after an over-long line), which would drop the backlog.
//! - **A slow subscriber is cut off, not waited for.** One more than 1 MiB
//!   behind (its backlog, counted as if each message were its own, plus 64
//!   bytes each for its place in the queue: a flood of 7-byte messages held
//!   2 to 7 MiB per subscriber before that) is closed; the publisher and
//!   the other subscribers never notice.
//! - **What a client can make the broker hold is bounded**: its queue (as
//!   above), its command line (64 KiB), and its subscriptions (10,000 topic
//!   names of at most 256 bytes: without the caps, one client subscribing
//!   to 60 KB names grew the broker by 700 MB in 3 s, and every growth of
//!   the topic table rehashed all those bytes while nobody else was served).
//! - **Cleanup in `on_close`**, whatever the reason (quit, reset, overflow):
//!   each connection remembers its topics, and removes itself from them.
//! - **Nothing scans.** A connection's topics are a set, a topic's
//!   subscribers a list with each one's place in it: subscribing,
//!   unsubscribing and the cleanup cost O(1) per topic, however many topics a
//!   connection holds or subscribers a topic has (100,000 SUBs on one
//!   connection were 23 CPU-seconds when each looked through a list). The
//!   maps use std's randomly keyed hash, so chosen topic names cannot make
//!   them collide, and the topic table is kv's (`keyspace`), which grows a
//!   little at a time.
//! - **One client cannot hold up the others.** A pipeline of thousands of
//!   commands is served a slice at a time (`fair::Slice`: commands plus the
//!   messages they queue, a message counted once per KiB it copies), and
//!   the other clients get their turn in between.
//!
//! Usage: `cargo run --release --example pubsub [ADDR]` (default 127.0.0.1:6000).
//! Stops cleanly on SIGINT/SIGTERM.

#[path = "fair/mod.rs"]
mod fair;
#[path = "keyspace/mod.rs"]
mod keyspace;

use std::collections::{HashMap, HashSet, VecDeque};

use keyspace::Keyspace;
use std::io;
use std::rc::Rc;

use evloop::net::{self, Addr, CloseReason, Conn, ConnConfig, Handler, ListenConfig, Listening};
use evloop::{Ctx, EventLoop, SourceId};

/// The longest command line accepted.
const MAX_LINE: usize = 64 * 1024;
/// The longest topic name.
const MAX_TOPIC: usize = 256;
/// The most topics one connection may subscribe to.
const MAX_SUBSCRIPTIONS: usize = 10_000;
/// Output a connection queues itself before what follows waits in the
/// broker's backlog (its high-water mark).
const QUEUE: usize = 16 * 1024;
/// How far behind a subscriber may fall (its backlog) before it is cut off.
const MAX_BEHIND: usize = 1024 * 1024;
/// What one message waiting in a backlog costs besides its bytes: its slot
/// in the queue (16 bytes, twice over while the queue's capacity doubles)
/// and, for a message only this subscriber gets, its allocation's header
/// and rounding. Charged so that a flood of tiny messages (`PUB t`: 7
/// bytes each) is cut off near `MAX_BEHIND` of memory, not 2 to 7 times it.
const ENTRY_COST: usize = 64;

/// The application state: who is subscribed to what, and what waits for
/// the subscribers that are behind.
#[derive(Default)]
pub struct Broker {
    /// Topic names to subscribers, in kv's table: it keeps each name's
    /// hash and grows a 256th at a time (std's map rehashed every name as
    /// it grew: 500 clients' 10,000 subscriptions stopped the broker for
    /// 0.7 s at a time).
    topics: Keyspace<Subscribers, Rc<[u8]>>,
    behind: Behind,
    leaving: Leaving,
}

/// Subscriptions of connections that are gone (or ending), taken off a
/// slice a turn: 50 clients of 10,000 subscriptions each, closing at once,
/// held the broker for 0.65 s when each close took all its own off.
#[derive(Default)]
struct Leaving {
    queue: VecDeque<(SourceId, Vec<Rc<[u8]>>)>,
    /// Who is in `queue`: a publish skips them meanwhile.
    ids: HashSet<SourceId>,
}

/// Subscriptions taken off in one turn.
const LEAVE_SLICE: usize = 2048;

/// Output waiting for connections whose queue is full, oldest first.
#[derive(Default)]
struct Behind(HashMap<SourceId, Backlog>);

#[derive(Default)]
struct Backlog {
    msgs: VecDeque<Rc<[u8]>>,
    /// What `msgs` holds, each counted as if it were its own, plus
    /// [`ENTRY_COST`] each.
    bytes: usize,
    /// Close the connection once `msgs` is written.
    close: bool,
}

/// What [`Behind::take`] did with a message.
enum Taken {
    /// The connection waits for nothing: write it now.
    No,
    /// Queued behind what it waits for.
    Queued,
    /// It would fall more than [`MAX_BEHIND`] behind: cut it off.
    TooFarBehind,
}

impl Behind {
    /// Queue `msg` for `to` if `to` is behind: a reference to `shared`,
    /// made from `msg` by the first that needs it.
    fn take(&mut self, to: SourceId, msg: &[u8], shared: &mut Option<Rc<[u8]>>) -> Taken {
        let Some(backlog) = self.0.get_mut(&to) else {
            return Taken::No;
        };
        let cost = msg.len() + ENTRY_COST;
        if backlog.bytes + cost > MAX_BEHIND {
            log::info!("subscriber {to} fell {} bytes behind; cut off", backlog.bytes);
            self.0.remove(&to);
            return Taken::TooFarBehind;
        }
        backlog.bytes += cost;
        backlog
            .msgs
            .push_back(shared.get_or_insert_with(|| msg.into()).clone());
        Taken::Queued
    }

    fn is_behind(&self, id: SourceId) -> bool {
        self.0.contains_key(&id)
    }

    /// Write one of `conn`'s own replies, after what it is behind on.
    fn reply(&mut self, conn: &mut Conn, bytes: &[u8]) {
        if !self.is_behind(conn.id()) {
            conn.write(bytes);
        } else if let Taken::TooFarBehind = self.take(conn.id(), bytes, &mut None) {
            conn.abort();
        }
    }

    /// `to`'s queue is full: what follows waits until its `on_room`.
    fn wait(&mut self, to: SourceId) {
        self.0.entry(to).or_default();
    }

    /// Close `conn` once it has been sent what it is behind on (a close
    /// now would drop that). It reads nothing more meanwhile.
    fn close_after(&mut self, conn: &mut Conn) {
        match self.0.get_mut(&conn.id()) {
            Some(backlog) => {
                backlog.close = true;
                conn.pause_reading();
            }
            None => conn.close(),
        }
    }

    /// Hand `conn` what waits for it while it has room; once nothing is
    /// left, it writes directly again (or closes, if it was to).
    fn drain(&mut self, conn: &mut Conn) {
        let Some(backlog) = self.0.get_mut(&conn.id()) else {
            return;
        };
        if conn.is_closing() {
            // Cut off, or failed: nothing more will be written.
            self.0.remove(&conn.id());
            return;
        }
        while let Some(msg) = backlog.msgs.pop_front() {
            backlog.bytes -= msg.len() + ENTRY_COST;
            conn.write(&msg);
            if !conn.has_room() {
                return; // on_room again once it drains
            }
        }
        if backlog.close {
            conn.close();
        }
        self.0.remove(&conn.id());
    }
}

/// One topic's subscribers: the list a publish walks, and where each one
/// stands in it, so that taking one off is O(1) (the last takes its place).
#[derive(Default)]
struct Subscribers {
    list: Vec<SourceId>,
    at: HashMap<SourceId, usize>,
}

impl Subscribers {
    fn add(&mut self, id: SourceId) {
        if let std::collections::hash_map::Entry::Vacant(e) = self.at.entry(id) {
            e.insert(self.list.len());
            self.list.push(id);
        }
    }

    fn remove(&mut self, id: SourceId) {
        if let Some(i) = self.at.remove(&id) {
            self.list.swap_remove(i);
            if let Some(&moved) = self.list.get(i) {
                self.at.insert(moved, i);
            }
        }
    }
}

/// Listen on `addr` and run the broker.
pub fn start(ctx: &mut Ctx<Broker>, addr: &Addr) -> io::Result<Listening> {
    let cfg = ListenConfig {
        conn: ConnConfig {
            high_water: QUEUE,
            low_water: QUEUE / 4,
            ..ConnConfig::default()
        },
        ..ListenConfig::default()
    };
    net::listen(ctx, addr, cfg, |_, _, _, _| Some(Peer::default()))
}

/// One connection: the topics it subscribed to (sharing the broker's
/// copy of each name), a reused message buffer, its slice of work, and
/// whether it is ending (its input is ignored, and it closes once it is
/// sent what it is owed).
#[derive(Default)]
struct Peer {
    topics: HashSet<Rc<[u8]>>,
    msg: Vec<u8>,
    slice: fair::Slice,
    ending: bool,
}

impl Handler<Broker> for Peer {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], ctx: &mut Ctx<Broker>, broker: &mut Broker) -> usize {
        if self.ending {
            return data.len();
        }
        let mut used = 0;
        loop {
            let rest = &data[used..];
            match rest.iter().take(MAX_LINE + 1).position(|&b| b == b'\n') {
                Some(nl) => {
                    let line = &rest[..nl];
                    used += nl + 1;
                    let work = self.command(conn, line.strip_suffix(b"\r").unwrap_or(line), ctx, broker);
                    if self.slice.spend(work, conn, ctx) {
                        return used;
                    }
                }
                None if rest.len() > MAX_LINE => {
                    broker.behind.reply(conn, b"ERR line too long\n");
                    self.end(conn, ctx, broker);
                    return data.len();
                }
                None => return used,
            }
        }
    }

    fn on_room(&mut self, conn: &mut Conn, _: &mut Ctx<Broker>, broker: &mut Broker) {
        broker.behind.drain(conn);
    }

    fn on_eof(&mut self, conn: &mut Conn, ctx: &mut Ctx<Broker>, broker: &mut Broker) {
        self.end(conn, ctx, broker);
    }

    fn on_close(&mut self, conn: &mut Conn, reason: CloseReason, ctx: &mut Ctx<Broker>, broker: &mut Broker) {
        if reason == CloseReason::Overflow {
            log::info!("subscriber {} was not reading; cut off", conn.id());
        }
        broker.behind.0.remove(&conn.id());
        broker.leave(ctx, conn.id(), std::mem::take(&mut self.topics));
    }
}

impl Peer {
    /// The session is over (the peer's EOF, or a protocol error): no more
    /// messages for it, and it closes once sent what it is owed.
    fn end(&mut self, conn: &mut Conn, ctx: &mut Ctx<Broker>, broker: &mut Broker) {
        self.ending = true;
        broker.leave(ctx, conn.id(), std::mem::take(&mut self.topics));
        broker.behind.close_after(conn);
    }

    /// Run one command; returns the work it cost (one, plus, per message
    /// for a subscriber, one and one more per KiB copied: fanning a 60 KB
    /// message out to 1,000 subscribers copies 60 MB, and counted as 1,000
    /// it let one slice copy 240 MB, seconds of CPU during which nobody
    /// else was served).
    fn command(&mut self, conn: &mut Conn, line: &[u8], ctx: &mut Ctx<Broker>, broker: &mut Broker) -> usize {
        let (verb, rest) = split_word(line);
        match verb {
            b"" => {}
            b"SUB" | b"UNSUB" => {
                const USAGE: &str = "ERR usage: SUB topic | UNSUB topic\n";
                let (topic, extra) = split_word(rest);
                let refused = if extra.is_empty() {
                    refuse_topic(topic, USAGE)
                } else {
                    Some(USAGE.into())
                };
                if let Some(answer) = refused {
                    broker.behind.reply(conn, answer.as_bytes());
                    return 1;
                }
                if verb == b"SUB" && !self.topics.contains(topic) {
                    if self.topics.len() >= MAX_SUBSCRIPTIONS {
                        broker.behind.reply(
                            conn,
                            format!("ERR too many subscriptions (at most {MAX_SUBSCRIPTIONS})\n").as_bytes(),
                        );
                        return 1;
                    }
                    let name = broker.subscribe(topic, conn.id());
                    self.topics.insert(name);
                } else if verb == b"UNSUB" && self.topics.remove(topic) {
                    broker.unsubscribe(topic, conn.id());
                } // else already (un)subscribed
                broker.behind.reply(conn, b"OK\n");
            }
            b"PUB" => {
                let (topic, message) = split_word(rest);
                if let Some(answer) = refuse_topic(topic, "ERR usage: PUB topic message\n") {
                    broker.behind.reply(conn, answer.as_bytes());
                    return 1;
                }
                let msg = &mut self.msg;
                msg.clear();
                for part in [b"MSG ", topic, b" ", message, b"\n"] {
                    msg.extend_from_slice(part);
                }
                // One copy for every subscriber that is behind, if any is.
                let mut shared = None;
                let (mut delivered, mut work) = (0, 1);
                let subs = broker.topics.get(topic).map_or(&[][..], |s| &s.list[..]);
                for &sub in subs {
                    if !broker.leaving.ids.is_empty() && broker.leaving.ids.contains(&sub) {
                        continue;
                    }
                    work += 1;
                    let sent = match broker.behind.take(sub, msg, &mut shared) {
                        Taken::Queued => true,
                        Taken::TooFarBehind if sub == conn.id() => {
                            conn.abort();
                            false
                        }
                        Taken::TooFarBehind => {
                            net::abort(ctx, sub);
                            false
                        }
                        Taken::No => {
                            work += msg.len() / 1024;
                            // Refused (false) when that subscriber is closing:
                            // its on_close takes it off the topic.
                            let (sent, room) = if sub == conn.id() {
                                (conn.write(msg), conn.has_room())
                            } else {
                                (net::write(ctx, sub, msg), net::has_room(ctx, sub))
                            };
                            if sent && !room {
                                broker.behind.wait(sub);
                            }
                            sent
                        }
                    };
                    delivered += usize::from(sent);
                }
                broker.behind.reply(conn, format!("OK {delivered}\n").as_bytes());
                return work;
            }
            _ => {
                broker
                    .behind
                    .reply(conn, b"ERR unknown command (SUB, UNSUB, PUB)\n");
            }
        }
        1
    }
}

impl Broker {
    /// Add `id` to `topic`'s subscribers; returns the broker's copy of the
    /// name, for the connection to share.
    fn subscribe(&mut self, topic: &[u8], id: SourceId) -> Rc<[u8]> {
        // Each subscription pays for taking two leaving ones off: clients
        // subscribing and leaving faster than a slice a turn would
        // otherwise grow the queue for as long as they kept on.
        if !self.leaving.queue.is_empty() {
            self.take_off(2);
        }
        let name = match self.topics.key(topic) {
            Some(name) => name.clone(),
            None => self.topics.insert_shared(topic, Subscribers::default()),
        };
        if let Some(subs) = self.topics.get_mut(topic) {
            subs.add(id);
        }
        name
    }

    fn unsubscribe(&mut self, topic: &[u8], id: SourceId) {
        unsubscribe(&mut self.topics, topic, id);
    }

    /// Take connection `id` off `topics`, now if they are few, else a
    /// slice a turn (publishes skip it meanwhile).
    fn leave(&mut self, ctx: &mut Ctx<Broker>, id: SourceId, topics: HashSet<Rc<[u8]>>) {
        if topics.len() <= LEAVE_SLICE {
            for topic in topics {
                self.unsubscribe(&topic, id);
            }
            return;
        }
        self.leaving.ids.insert(id);
        self.leaving.queue.push_back((id, topics.into_iter().collect()));
        if self.leaving.queue.len() == 1 {
            ctx.defer(|ctx, broker: &mut Broker| broker.leave_some(ctx));
        }
    }

    /// One slice of the leaving connections' subscriptions, oldest first.
    fn leave_some(&mut self, ctx: &mut Ctx<Broker>) {
        self.take_off(LEAVE_SLICE);
        if !self.leaving.queue.is_empty() {
            // Deferred from a deferred callback: the next turn's.
            ctx.defer(|ctx, broker: &mut Broker| broker.leave_some(ctx));
        }
    }

    /// Take up to `budget` of the leaving connections' subscriptions off.
    fn take_off(&mut self, mut budget: usize) {
        while let Some((id, topics)) = self.leaving.queue.front_mut() {
            let take = topics.len().min(budget);
            for topic in topics.drain(topics.len() - take..) {
                unsubscribe(&mut self.topics, &topic, *id);
            }
            budget -= take;
            if !topics.is_empty() {
                break;
            }
            let id = *id;
            self.leaving.queue.pop_front();
            self.leaving.ids.remove(&id);
        }
    }
}

/// Take `id` off `topic`'s subscribers; a topic left with none goes.
fn unsubscribe(topics: &mut Keyspace<Subscribers, Rc<[u8]>>, topic: &[u8], id: SourceId) {
    if let Some(subs) = topics.get_mut(topic) {
        subs.remove(id);
        if subs.list.is_empty() {
            topics.remove(topic);
        }
    }
}

/// The answer refusing `topic` if it is no topic name: `usage` when it is
/// missing.
fn refuse_topic(topic: &[u8], usage: &str) -> Option<String> {
    if topic.is_empty() {
        return Some(usage.into());
    }
    (topic.len() > MAX_TOPIC).then(|| format!("ERR topic longer than {MAX_TOPIC} bytes\n"))
}

/// The first space-separated word of `s`, and what follows its space.
fn split_word(s: &[u8]) -> (&[u8], &[u8]) {
    match s.iter().position(|&b| b == b' ') {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, b""),
    }
}

/// Public so that tests/example_torture.rs can run the whole server, signal
/// handling included, in a child process.
pub fn main() -> io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:6000".into());
    let mut el = EventLoop::new()?;
    let server = start(&mut el, &addr.parse()?)?;
    el.add_signals(&[libc::SIGINT, libc::SIGTERM], |sig, ctx, _| {
        log::info!("signal {sig}: shutting down");
        ctx.stop();
    })?;
    // Only now: whoever reads this line may stop us with a signal at once.
    log::info!("pubsub broker listening on {}", server.addr);
    el.run(&mut Broker::default())?;
    log::info!("pubsub broker stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A subscriber behind on a flood of the shortest messages is cut off
    /// before what its backlog really holds (the messages, their slots in
    /// a queue that doubles, each message's allocation) passes the cap by
    /// more than a tenth.
    #[test]
    fn a_backlog_of_tiny_messages_is_cut_off_near_the_cap_in_memory() {
        let mut el = EventLoop::<()>::new().unwrap();
        let sub = el.spawn(std::future::pending::<()>()).unwrap();
        let mut behind = Behind::default();
        behind.wait(sub);
        let msg = b"MSG t \n";
        let mut held = 0;
        loop {
            match behind.take(sub, msg, &mut None) {
                Taken::Queued => {
                    let b = &behind.0[&sub];
                    // An `Rc<[u8]>` of n bytes: two counts, then the bytes,
                    // in a chunk of a multiple of 16 bytes.
                    let alloc = (16 + msg.len()).next_multiple_of(16);
                    let slots = b.msgs.capacity() * std::mem::size_of::<Rc<[u8]>>();
                    held = slots + b.msgs.len() * alloc;
                }
                Taken::TooFarBehind => break,
                Taken::No => unreachable!("it waits"),
            }
        }
        assert!(!behind.is_behind(sub), "cut off");
        assert!(held > MAX_BEHIND / 2, "cut off early, holding {held} bytes");
        assert!(
            held < MAX_BEHIND * 11 / 10,
            "held {held} bytes before it was cut off"
        );
    }

    /// A connection leaving with more subscriptions than a slice: it is
    /// skipped by publishes at once, and its subscriptions go a slice a
    /// turn; the others' stay.
    #[test]
    fn a_big_leaver_goes_a_slice_a_turn() {
        let mut el = EventLoop::<Broker>::new().unwrap();
        let mut broker = Broker::default();
        // Any two source ids will do: two tasks that never finish.
        let a = el.spawn(std::future::pending::<()>()).unwrap();
        let b = el.spawn(std::future::pending::<()>()).unwrap();
        let n = 2 * LEAVE_SLICE + 5;
        let mine: HashSet<Rc<[u8]>> = (0..n)
            .map(|i| broker.subscribe(format!("t{i}").as_bytes(), a))
            .collect();
        broker.subscribe(b"t0", b);
        broker.subscribe(b"other", b);
        broker.leave(&mut el, a, mine);
        assert!(broker.leaving.ids.contains(&a), "skipped by publishes from now");
        let subscriptions = |b: &Broker| b.topics.values().map(|s| s.list.len()).sum::<usize>();
        let mut counts = vec![subscriptions(&broker)];
        for _ in 0..4 {
            el.turn(&mut broker, Some(Duration::ZERO)).unwrap();
            counts.push(subscriptions(&broker));
        }
        let all = n + 2;
        assert_eq!(counts, [all, all - LEAVE_SLICE, all - 2 * LEAVE_SLICE, 2, 2]);
        assert_eq!(broker.topics.len(), 2);
        assert!(broker.leaving.ids.is_empty() && broker.leaving.queue.is_empty());
        assert_eq!(broker.topics.get(b"t0").unwrap().list, [b]);
    }

    /// Each subscription takes two leaving ones off: subscribing as fast
    /// as others leave does not grow the queue.
    #[test]
    fn subscribing_pays_for_the_leavers() {
        let mut el = EventLoop::<Broker>::new().unwrap();
        let mut broker = Broker::default();
        let a = el.spawn(std::future::pending::<()>()).unwrap();
        let b = el.spawn(std::future::pending::<()>()).unwrap();
        let n = 3 * LEAVE_SLICE;
        let mine: HashSet<Rc<[u8]>> = (0..n)
            .map(|i| broker.subscribe(format!("a{i}").as_bytes(), a))
            .collect();
        broker.leave(&mut el, a, mine);
        for i in 0..n / 2 {
            broker.subscribe(format!("b{i}").as_bytes(), b);
        }
        assert!(
            broker.leaving.queue.is_empty(),
            "the subscriptions took them all off"
        );
        assert!(broker.leaving.ids.is_empty());
        assert_eq!(broker.topics.len(), n / 2);
    }
}
