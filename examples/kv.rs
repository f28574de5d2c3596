//! An in-memory key-value server that speaks RESP2, so `redis-cli` and
//! `redis-benchmark` work against it unmodified.
//!
//! Commands: PING, ECHO, SET (EX/PX/EXAT/PXAT, NX/XX, KEEPTTL, GET), GET,
//! DEL, EXISTS, INCR/DECR/INCRBY/DECRBY, MGET, MSET, EXPIRE/PEXPIRE/
//! EXPIREAT/PEXPIREAT (NX/XX/GT/LT), TTL/PTTL, EXPIRETIME/PEXPIRETIME,
//! PERSIST, DBSIZE, FLUSHALL/FLUSHDB, SELECT 0, QUIT, and the housekeeping
//! that the Redis tools send on connect (CONFIG GET, COMMAND, CLIENT, HELLO,
//! INFO). Answers, errors included, are redis-server 7's, byte for byte
//! (`.ci/kv_differential.py` checks them against one).
//!
//! What to notice:
//! - **The application state is the database.** `Store` is the loop's `S`:
//!   every handler and timer callback gets `&mut Store`, no `Rc<RefCell<..>>`.
//! - **Expiry runs on one loop timer, a slice at a time.** A key's deadline
//!   is kept as Redis keeps it, in Unix milliseconds (so EXPIRETIME gives
//!   back what EXPIREAT was given, and TTL reads the same clock), and in an
//!   index of the keys by deadline. One timer, armed for the earliest
//!   deadline, deletes the keys that are due, at most `SWEEP_SLICE` of them
//!   a run; with more due, it runs again in the next turn, after the
//!   clients. Each deadline set deletes two that are due, so clients
//!   setting TTLs faster than the timer deletes them cannot pile up
//!   expired keys. A timer per key would fire all of a millisecond's keys
//!   in one timer phase: a client that gave a million keys the same
//!   deadline stopped the server for most of a second when they fell due.
//!   A read also treats an overdue key as gone, since the sweep deletes it
//!   later.
//!   The store reads the time through a clock that tests set by hand
//!   (`Store::with_manual_clock`).
//! - **Pipelining for free.** `on_data` runs every complete command in the
//!   buffer and sends the replies together; a half-arrived command is left
//!   unconsumed and offered again with more bytes, and the parser goes on
//!   where it stopped rather than from the command's start.
//! - **Any answer, however big, to a peer that reads.** Values are shared
//!   (`Rc<[u8]>`), so a reply queues references, not copies, and is handed
//!   to the connection in 64 KiB pieces while `Conn::has_room` says yes;
//!   when it says no, the client stops reading commands and `on_room`
//!   carries on. A peer that does not read holds us to the connection's
//!   high-water mark plus a piece, whatever it asked for (`MGET` of 2,048
//!   copies of a 1 MiB value is 2,048 references).
//! - **One client cannot starve the rest.** A call of `on_data` runs about
//!   a millisecond's worth of commands, then pauses reading and defers its
//!   own `resume_reading`: the rest of the pipeline is offered again once
//!   the other ready clients have had their turn.
//! - **Big keys do not stall the others.** Growing a hash table moves
//!   every entry by its hash; std's map hashes each key again for it, and
//!   1,000 keys of 1 MB made a 0.3 s pause. The table here keeps each key's
//!   hash beside it (`keyspace`), so growing it reads 8 bytes a key.
//! - **Bad input closes, it does not crash or hang.** A protocol error gets
//!   Redis's `-ERR Protocol error: ...` and the connection is closed.
//!
//! Usage: `cargo run --release --example kv [ADDR]` (default 127.0.0.1:6000),
//! then `redis-cli -p 6000 set k v` or `redis-benchmark -p 6000 -t set,get -q`.
//! Stops cleanly on SIGINT/SIGTERM.

#[path = "fair/mod.rs"]
mod fair;
#[path = "keyspace/mod.rs"]
mod keyspace;
#[path = "proto/resp.rs"]
#[allow(dead_code)] // what the parser offers tests (its work counter, `parse`)
mod resp;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use evloop::net::{self, Addr, Conn, ConnConfig, Handler, ListenConfig, Listening};
use evloop::{Ctx, EventLoop, TimerId};
use keyspace::Keyspace;
use resp::{reply, Args, Parser};

/// The furthest ahead the expiry timer is armed (100 years): a later
/// deadline is kept exactly, but the timer fires at this horizon and is
/// armed again (nobody waits a century).
const MAX_TIMER_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// Keys the expiry timer deletes in one run, before the clients get a
/// turn: about half a millisecond here (a million keys due together took
/// 0.46 s to delete).
const SWEEP_SLICE: usize = 1024;

/// Due keys deleted with each deadline set (see `expire_at`).
const DUE_PER_DEADLINE: usize = 2;

/// The database: the loop's application state.
#[derive(Default)]
pub struct Store {
    /// The keys, each with its hash kept beside it, so that growing the
    /// table does not hash every key's bytes again (see `keyspace`).
    map: Keyspace<Entry>,
    /// The keys with a TTL, earliest deadline first. Each key's entry holds
    /// its place here (deadline, and a number that tells apart the keys of
    /// one millisecond), so that dropping a TTL compares no key bytes.
    deadlines: BTreeMap<Expiry, Box<[u8]>>,
    /// Numbers the next deadline set.
    next_seq: u64,
    /// The timer that deletes due keys, and the deadline it was armed for.
    sweep: Option<(TimerId, i64)>,
    /// What FLUSHALL let go of, freed a part a turn.
    trash: Vec<Trash>,
    /// Unix milliseconds set by a test; None reads the system's clock.
    manual_clock: Option<Rc<Cell<i64>>>,
}

/// The keys and deadlines of a flushed store.
struct Trash {
    tables: keyspace::Tables<Entry, Box<[u8]>>,
    deadlines: BTreeMap<Expiry, Box<[u8]>>,
}

/// Deadlines freed in one turn, after the keys.
const FREE_DEADLINES: usize = 8192;

/// A stored value. Shared, so that a reply can send it as the peer reads
/// without copying it (and a later write to the key does not change what
/// the reply sends).
type Value = Rc<[u8]>;

struct Entry {
    value: Value,
    /// When the key expires, if it has a TTL.
    expiry: Option<Expiry>,
}

/// A key's deadline, and its place among the deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Expiry {
    /// Unix milliseconds. The key is gone once the clock is past it (at
    /// this very millisecond it still reads, as in Redis).
    at_ms: i64,
    /// Unique: orders the keys of one deadline by when it was set.
    seq: u64,
}

/// Values up to 16 MiB may be sent in one command (RESP itself allows 512
/// MiB): the per-connection input bound, to which a command still arriving
/// keeps its bytes, and the parser's notes on where its elements lie.
const MAX_INPUT: usize = 16 * 1024 * 1024;

/// Listen on `addr` and serve the store.
pub fn start(ctx: &mut Ctx<Store>, addr: &Addr) -> io::Result<Listening> {
    let cfg = ListenConfig {
        conn: ConnConfig {
            max_input: MAX_INPUT,
            ..ConnConfig::default()
        },
        ..ListenConfig::default()
    };
    net::listen(ctx, addr, cfg, |_, _, _, _| Some(Client::default()))
}

/// Replies are handed to the connection in pieces of about this size, and
/// values longer than this are written from the store's copy in pieces of
/// it rather than copied whole into a reply buffer.
const CHUNK: usize = 64 * 1024;

/// One connection: buffers reused from command to command.
#[derive(Default)]
struct Client {
    parser: Parser,
    args: Args,
    reply: Reply,
    /// Work done in this slice (see `fair`).
    slice: fair::Slice,
}

/// What the connection does after a command.
#[derive(PartialEq, Eq)]
enum Next {
    Continue,
    Close,
}

/// The reply being written: small replies are encoded into `out`; a value
/// is queued by reference (its store copy is shared, not copied) and
/// written as the connection has room, so what one command makes us hold
/// is bounded by the connection's caps, not by the size of its answer.
#[derive(Default)]
struct Reply {
    out: Vec<u8>,
    /// Values still to send, in order, from `next` on (None: a null).
    items: Vec<Option<Value>>,
    next: usize,
    /// A long value being written, and how much of it has gone.
    body: Option<(Value, usize)>,
}

impl Reply {
    /// True while values are queued that the connection has no room for yet.
    fn busy(&self) -> bool {
        self.body.is_some() || self.next < self.items.len()
    }

    /// Reply with `value` (a bulk string, or null), sending it as room allows.
    fn value(&mut self, value: Option<&Value>) {
        if self.busy() || value.is_some_and(|v| v.len() > CHUNK) {
            self.items.push(value.cloned());
        } else {
            match value {
                Some(v) => reply::bulk(&mut self.out, v),
                None => reply::null(&mut self.out),
            }
        }
    }

    /// Reply with `bytes` (an argument: copied, since the next command
    /// reuses its buffer).
    fn bytes(&mut self, bytes: &[u8]) {
        if self.busy() || bytes.len() > CHUNK {
            self.items.push(Some(Value::from(bytes)));
        } else {
            reply::bulk(&mut self.out, bytes);
        }
    }

    /// Hand what is owed to the connection while it has room. True once
    /// everything is handed over (a short tail may stay in `out`, written
    /// with the next command's replies); false when the connection is full,
    /// in which case its `on_room` follows.
    fn pump(&mut self, conn: &mut Conn) -> bool {
        loop {
            if self.out.len() >= CHUNK {
                self.flush(conn);
            }
            if !conn.has_room() {
                return false;
            }
            if let Some((v, sent)) = &mut self.body {
                write_out(&mut self.out, conn);
                let n = (v.len() - *sent).min(CHUNK);
                let ok = conn.write(&v[*sent..*sent + n]);
                *sent += n;
                if *sent == v.len() || !ok {
                    self.body = None;
                    self.out.extend_from_slice(b"\r\n");
                }
                if !ok {
                    // Closing: nothing more will be written.
                    self.items.clear();
                    self.next = 0;
                    return true;
                }
                continue;
            }
            let Some(item) = self.items.get_mut(self.next) else {
                self.next = 0;
                shrink_clear(&mut self.items);
                return true;
            };
            self.next += 1;
            match item.take() {
                None => reply::null(&mut self.out),
                Some(v) if v.len() <= CHUNK => reply::bulk(&mut self.out, &v),
                Some(v) => {
                    let _ = write!(self.out, "${}\r\n", v.len());
                    self.body = Some((v, 0));
                }
            }
        }
    }

    /// Write `out` to the connection.
    fn flush(&mut self, conn: &mut Conn) {
        write_out(&mut self.out, conn);
    }
}

fn write_out(out: &mut Vec<u8>, conn: &mut Conn) {
    if !out.is_empty() {
        conn.write(out);
        out.clear();
    }
}

/// Empty `v`, letting its buffer go if a huge reply grew it.
fn shrink_clear<T>(v: &mut Vec<T>) {
    if v.capacity() * std::mem::size_of::<T>() > 4 * CHUNK {
        *v = Vec::new();
    } else {
        v.clear();
    }
}

impl Handler<Store> for Client {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], ctx: &mut Ctx<Store>, store: &mut Store) -> usize {
        if self.reply.busy() {
            // Offered input again while a reply still waits for room.
            conn.pause_reading();
            return 0;
        }
        let mut used = 0;
        let mut next = Next::Continue;
        let mut tired = false;
        while used < data.len() && !tired {
            match self.parser.parse(&data[used..], &mut self.args) {
                Ok(Some(n)) => {
                    used += n;
                    // A command costs one unit plus one per argument: a long
                    // pipeline lets the other clients have their turn and
                    // comes back for the rest once the loop has been round.
                    tired = self.slice.spend(1 + self.args.len(), conn, ctx);
                    if !self.args.is_empty() {
                        next = execute(&self.args, &mut self.reply, ctx, store);
                    }
                }
                Ok(None) => {
                    // The parser notes where each element of a half-arrived
                    // array lies, 16 bytes for as few as 6 of input: an
                    // array of millions of empty strings held 59 MiB a
                    // connection under the 16 MiB input cap. The notes are
                    // held to that cap too (the input is, by the net layer),
                    // so any command of at most a million elements fits.
                    // Closed as Redis closes a client past its query buffer
                    // limit: no reply.
                    if self.parser.notes_bytes() > MAX_INPUT {
                        log::warn!(
                            "connection {}: a command past the {MAX_INPUT}-byte input cap; closing",
                            conn.id()
                        );
                        next = Next::Close;
                    }
                    break;
                }
                Err(e) => {
                    log::debug!("connection {}: protocol error: {e}", conn.id());
                    reply::error_bytes(&mut self.reply.out, &e.message());
                    next = Next::Close;
                }
            }
            if next == Next::Close {
                break;
            }
            if (self.reply.busy() || self.reply.out.len() >= CHUNK) && !self.reply.pump(conn) {
                // Resumed by on_room once the peer has read enough.
                conn.pause_reading();
                break;
            }
        }
        // Let go of what a huge command grew, rather than keep it while idle.
        self.args.clear();
        self.reply.flush(conn);
        shrink_clear(&mut self.reply.out);
        if next == Next::Close {
            conn.close();
            return data.len();
        }
        used
    }

    fn on_room(&mut self, conn: &mut Conn, _: &mut Ctx<Store>, _: &mut Store) {
        if self.reply.pump(conn) {
            self.reply.flush(conn);
            conn.resume_reading();
        }
    }
}

/// Run one command, adding its reply to `reply`.
fn execute(args: &Args, reply: &mut Reply, ctx: &mut Ctx<Store>, store: &mut Store) -> Next {
    let out = &mut reply.out;
    // Command names are case-insensitive: lowercase into a small buffer.
    let mut name_buf = [0u8; 16];
    let name = &args[0];
    let name = if name.len() <= name_buf.len() {
        let lower = &mut name_buf[..name.len()];
        lower.copy_from_slice(name);
        lower.make_ascii_lowercase();
        &*lower
    } else {
        name
    };
    let n = args.len();
    let arity_ok = match name {
        b"ping" => n <= 2,
        b"dbsize" => n == 1,
        b"echo" | b"get" | b"incr" | b"decr" | b"persist" | b"select" => n == 2,
        b"ttl" | b"pttl" | b"expiretime" | b"pexpiretime" => n == 2,
        b"set" | b"expire" | b"pexpire" | b"expireat" | b"pexpireat" => n >= 3,
        b"del" | b"exists" | b"mget" => n >= 2,
        b"incrby" | b"decrby" => n == 3,
        b"mset" => n >= 3 && n % 2 == 1,
        b"config" | b"client" => n >= 2,
        _ => true,
    };
    if !arity_ok {
        let msg = format!(
            "ERR wrong number of arguments for '{}' command",
            String::from_utf8_lossy(name)
        );
        reply::error(out, &msg);
        return Next::Continue;
    }
    match name {
        b"ping" if n == 2 => reply.bytes(&args[1]),
        b"ping" => reply::simple(out, "PONG"),
        b"echo" => reply.bytes(&args[1]),
        b"get" => reply.value(store.get(&args[1]).map(|e| &e.value)),
        b"set" => set(args, reply, ctx, store),
        b"mget" => {
            reply::array(out, n - 1);
            // Every value as it is now (shared, not copied), sent as room allows.
            for key in args.iter().skip(1) {
                let value = store.get(key).map(|e| e.value.clone());
                reply.items.push(value);
            }
        }
        b"mset" => {
            for i in (1..n).step_by(2) {
                store.put(&args[i], &args[i + 1], false);
            }
            reply::simple(out, "OK");
        }
        b"del" => {
            let gone = args.iter().skip(1).filter(|key| store.remove(key)).count();
            reply::int(out, gone as i64);
        }
        b"exists" => {
            let found = args.iter().skip(1).filter(|key| store.get(key).is_some()).count();
            reply::int(out, found as i64);
        }
        b"incr" => incr_by(&args[1], 1, out, store),
        b"decr" => incr_by(&args[1], -1, out, store),
        b"incrby" | b"decrby" => match resp::parse_int(&args[2]) {
            Some(by) if name == b"incrby" => incr_by(&args[1], by, out, store),
            Some(i64::MIN) => reply::error(out, "ERR decrement would overflow"),
            Some(by) => incr_by(&args[1], -by, out, store),
            None => reply::error(out, NOT_AN_INTEGER),
        },
        b"expire" | b"pexpire" | b"expireat" | b"pexpireat" => expire(args, name, out, ctx, store),
        b"ttl" | b"pttl" | b"expiretime" | b"pexpiretime" => ttl(&args[1], name, out, store),
        b"persist" => reply::int(out, i64::from(store.persist(&args[1]))),
        // Like Redis, this counts overdue keys not yet deleted.
        b"dbsize" => reply::int(out, store.map.len() as i64),
        b"flushall" | b"flushdb" => {
            store.flush(ctx);
            reply::simple(out, "OK");
        }
        b"select" => match resp::parse_int(&args[1]) {
            Some(0) => reply::simple(out, "OK"),
            Some(_) => reply::error(out, "ERR DB index is out of range"),
            None => reply::error(out, NOT_AN_INTEGER),
        },
        b"quit" => {
            reply::simple(out, "OK");
            return Next::Close;
        }
        b"config" => config(args, out),
        b"command" => match args.get(1).map(|s| s.to_ascii_lowercase()).as_deref() {
            Some(b"count") => reply::int(out, 0),
            // No command table: clients then go without hints and docs.
            _ => reply::array(out, 0),
        },
        b"client" if args[1].eq_ignore_ascii_case(b"getname") => reply::null(out),
        // SETNAME, SETINFO, NO-EVICT...: accepted and ignored.
        b"client" => reply::simple(out, "OK"),
        b"hello" => hello(args, out),
        b"info" => {
            let keys = store.map.len();
            let expires = store.deadlines.len();
            let text = format!(
                "# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\nserver:evloop-kv\r\n\
                 # Keyspace\r\ndb0:keys={keys},expires={expires},avg_ttl=0\r\n"
            );
            reply::bulk(out, text.as_bytes());
        }
        _ => unknown(args, out),
    }
    Next::Continue
}

const NOT_AN_INTEGER: &str = "ERR value is not an integer or out of range";

fn bad_expire(command: &[u8]) -> String {
    format!(
        "ERR invalid expire time in '{}' command",
        String::from_utf8_lossy(command)
    )
}

/// What C's `%.Ns` prints of `s`: at most `n` bytes, and nothing from a
/// NUL on. Redis formats its messages so; a byte-exact answer must too.
fn c_str(s: &[u8], n: usize) -> &[u8] {
    let s = &s[..s.len().min(n)];
    s.iter().position(|&b| b == 0).map_or(s, |nul| &s[..nul])
}

/// Redis's answer to an unknown command: the name and the first arguments,
/// each cut to 128 bytes (a huge name must not make a huge error line).
fn unknown(args: &Args, out: &mut Vec<u8>) {
    let mut msg = [
        b"ERR unknown command '",
        c_str(&args[0], 128),
        b"', with args beginning with: ",
    ]
    .concat();
    let listed = msg.len();
    for a in args.iter().skip(1) {
        let room = 128usize.saturating_sub(msg.len() - listed);
        if room == 0 {
            break;
        }
        msg.extend_from_slice(&[b"'", c_str(a, room), b"' "].concat());
    }
    reply::error_bytes(out, &msg);
}

/// Which keys EXPIRE and friends may change: their NX/XX/GT/LT options.
#[derive(Default)]
struct ExpireIf {
    /// Only a key with no TTL.
    nx: bool,
    /// Only a key with a TTL.
    xx: bool,
    /// Only a later deadline than the key's (none counts as infinite).
    gt: bool,
    /// Only an earlier deadline than the key's (none counts as infinite).
    lt: bool,
}

impl ExpireIf {
    /// The options, or Redis's error message for them: an unknown option is
    /// reported first, then the combinations that contradict each other.
    fn parse(opts: &[&[u8]]) -> Result<ExpireIf, Vec<u8>> {
        let mut when = ExpireIf::default();
        for opt in opts {
            let flag = match opt.to_ascii_lowercase().as_slice() {
                b"nx" => &mut when.nx,
                b"xx" => &mut when.xx,
                b"gt" => &mut when.gt,
                b"lt" => &mut when.lt,
                _ => return Err([b"ERR Unsupported option ", c_str(opt, usize::MAX)].concat()),
            };
            *flag = true;
        }
        if when.nx && (when.xx || when.gt || when.lt) {
            return Err(b"ERR NX and XX, GT or LT options at the same time are not compatible".to_vec());
        }
        if when.gt && when.lt {
            return Err(b"ERR GT and LT options at the same time are not compatible".to_vec());
        }
        Ok(when)
    }

    /// May a key whose deadline is `current` (None: no TTL) get `at`?
    fn allows(&self, current: Option<i64>, at: i64) -> bool {
        !(self.nx && current.is_some()
            || self.xx && current.is_none()
            || self.gt && current.map_or(true, |c| at <= c)
            || self.lt && current.is_some_and(|c| at >= c))
    }
}

/// EXPIRE/PEXPIRE key ttl and EXPIREAT/PEXPIREAT key unix-time, each with
/// [NX|XX|GT|LT]: checked in Redis's order (options, the number, its range,
/// the key, the condition). A deadline that has passed deletes the key, and
/// that counts as done (1).
fn expire(args: &Args, name: &[u8], out: &mut Vec<u8>, ctx: &mut Ctx<Store>, store: &mut Store) {
    let opts: Vec<&[u8]> = args.iter().skip(3).collect();
    let when = match ExpireIf::parse(&opts) {
        Ok(when) => when,
        Err(msg) => return reply::error_bytes(out, &msg),
    };
    let Some(t) = resp::parse_int(&args[2]) else {
        return reply::error(out, NOT_AN_INTEGER);
    };
    let unit = if name.starts_with(b"p") { 1 } else { 1000 };
    let base = if name.ends_with(b"at") { 0 } else { store.now_ms() };
    // Out of i64's range in milliseconds, or once added to now: refused.
    let Some(at) = t.checked_mul(unit).and_then(|ms| ms.checked_add(base)) else {
        return reply::error(out, &bad_expire(name));
    };
    let key = &args[1];
    let Some(e) = store.get(key) else {
        return reply::int(out, 0);
    };
    if !when.allows(e.expiry.map(|x| x.at_ms), at) {
        return reply::int(out, 0);
    }
    if at <= store.now_ms() {
        store.remove(key);
    } else {
        store.expire_at(ctx, key, at);
    }
    reply::int(out, 1);
}

/// TTL/PTTL (time left) and EXPIRETIME/PEXPIRETIME (the deadline): -2 for
/// no key, -1 for no TTL; seconds are rounded to the nearest, as in Redis.
fn ttl(key: &[u8], name: &[u8], out: &mut Vec<u8>, store: &mut Store) {
    let at = match store.get(key) {
        None => return reply::int(out, -2),
        Some(Entry { expiry: None, .. }) => return reply::int(out, -1),
        Some(Entry { expiry: Some(x), .. }) => x.at_ms,
    };
    let ms = match name {
        b"ttl" | b"pttl" => (at - store.now_ms()).max(0),
        _ => at,
    };
    if name.starts_with(b"p") {
        reply::int(out, ms);
    } else {
        // In i128: a deadline near i64::MAX rounds up past it.
        reply::int(out, ((i128::from(ms) + 500) / 1000) as i64);
    }
}

/// SET's expire options: a TTL (EX seconds, PX ms) or a Unix time (EXAT
/// seconds, PXAT ms).
#[derive(Clone, Copy, PartialEq, Eq)]
enum SetExpiry {
    Ex,
    Px,
    ExAt,
    PxAt,
}

impl SetExpiry {
    fn parse(opt: &[u8]) -> Option<SetExpiry> {
        match opt {
            b"EX" => Some(SetExpiry::Ex),
            b"PX" => Some(SetExpiry::Px),
            b"EXAT" => Some(SetExpiry::ExAt),
            b"PXAT" => Some(SetExpiry::PxAt),
            _ => None,
        }
    }

    /// The deadline in Unix ms for the option's argument `t`, or None where
    /// Redis answers "invalid expire time": `t` not positive, or the
    /// deadline out of i64's range. A Unix time in the past is fine.
    fn deadline(self, t: i64, now_ms: i64) -> Option<i64> {
        let (unit, base) = match self {
            SetExpiry::Ex => (1000, now_ms),
            SetExpiry::Px => (1, now_ms),
            SetExpiry::ExAt => (1000, 0),
            SetExpiry::PxAt => (1, 0),
        };
        if t <= 0 {
            return None;
        }
        t.checked_mul(unit)?.checked_add(base)
    }
}

/// SET key value [NX|XX] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL] [GET], options
/// checked as Redis 7 does: NX and XX exclude each other, the four expire
/// options and KEEPTTL too, but one option may repeat (the last EX wins);
/// the expire time is read only once every option has passed. A deadline
/// already past is set all the same: the key then reads as gone, and its
/// timer deletes it (Redis keeps it until a read or its expiry cycle).
fn set(args: &Args, reply: &mut Reply, ctx: &mut Ctx<Store>, store: &mut Store) {
    let (key, value) = (&args[1], &args[2]);
    let (mut nx, mut xx, mut keep_ttl, mut get) = (false, false, false, false);
    // The expire option and its argument.
    let mut expiry: Option<(SetExpiry, &[u8])> = None;
    let mut i = 3;
    while i < args.len() {
        let opt = args[i].to_ascii_uppercase();
        let arg = args.get(i + 1);
        match (opt.as_slice(), arg) {
            (b"NX", _) if !xx => nx = true,
            (b"XX", _) if !nx => xx = true,
            (b"GET", _) => get = true,
            (b"KEEPTTL", _) if expiry.is_none() => keep_ttl = true,
            (opt, Some(arg)) => match SetExpiry::parse(opt) {
                Some(kind) if !keep_ttl && expiry.map_or(true, |(k, _)| k == kind) => {
                    expiry = Some((kind, arg));
                    i += 1;
                }
                _ => return reply::error(&mut reply.out, "ERR syntax error"),
            },
            _ => return reply::error(&mut reply.out, "ERR syntax error"),
        }
        i += 1;
    }
    let deadline = match expiry {
        None => None,
        Some((kind, arg)) => match resp::parse_int(arg) {
            None => return reply::error(&mut reply.out, NOT_AN_INTEGER),
            Some(t) => match kind.deadline(t, store.now_ms()) {
                Some(at) => Some(at),
                None => return reply::error(&mut reply.out, &bad_expire(b"set")),
            },
        },
    };
    let old = store.get(key).map(|e| e.value.clone());
    let exists = old.is_some();
    if get {
        reply.value(old.as_ref());
    }
    if (nx && exists) || (xx && !exists) {
        if !get {
            reply::null(&mut reply.out);
        }
        return;
    }
    store.put(key, value, keep_ttl);
    if let Some(at) = deadline {
        store.expire_at(ctx, key, at);
    }
    if !get {
        reply::simple(&mut reply.out, "OK");
    }
}

/// INCR and friends: the value must be a decimal i64; the key keeps its TTL.
fn incr_by(key: &[u8], by: i64, out: &mut Vec<u8>, store: &mut Store) {
    let current = match store.get(key) {
        Some(e) => match resp::parse_int(&e.value) {
            Some(n) => n,
            None => return reply::error(out, NOT_AN_INTEGER),
        },
        None => 0,
    };
    let Some(new) = current.checked_add(by) else {
        return reply::error(out, "ERR increment or decrement would overflow");
    };
    let mut digits = [0u8; 20];
    let len = {
        let mut w = &mut digits[..];
        let _ = write!(w, "{new}");
        20 - w.len()
    };
    store.put(key, &digits[..len], true);
    reply::int(out, new);
}

/// CONFIG GET answers the few parameters the Redis tools ask about; CONFIG
/// SET and the rest are accepted and ignored.
fn config(args: &Args, out: &mut Vec<u8>) {
    const PARAMS: [(&[u8], &[u8]); 3] = [(b"save", b""), (b"appendonly", b"no"), (b"databases", b"1")];
    if !args[1].eq_ignore_ascii_case(b"get") {
        return reply::simple(out, "OK");
    }
    let wanted = |name: &[u8]| {
        args.iter()
            .skip(2)
            .any(|p| p == b"*" || p.eq_ignore_ascii_case(name))
    };
    let found: Vec<_> = PARAMS.iter().filter(|(name, _)| wanted(name)).collect();
    reply::array(out, found.len() * 2);
    for (name, value) in found {
        reply::bulk(out, name);
        reply::bulk(out, value);
    }
}

/// HELLO [2]: the handshake of newer clients. Only RESP2 is spoken.
fn hello(args: &Args, out: &mut Vec<u8>) {
    if args.get(1).is_some_and(|v| v != b"2") {
        return reply::error(out, "NOPROTO this server speaks RESP2 only");
    }
    let fields: [(&[u8], &[u8]); 4] = [
        (b"server", b"evloop-kv"),
        (b"version", b"7.0.0"),
        (b"proto", b"2"),
        (b"mode", b"standalone"),
    ];
    reply::array(out, fields.len() * 2);
    for (k, v) in fields {
        reply::bulk(out, k);
        reply::bulk(out, v);
    }
}

impl Store {
    /// A store that reads the time from `clock`, in Unix milliseconds,
    /// rather than from the system: a test moves time by setting it, and
    /// keys expire by it without anyone sleeping.
    #[cfg(test)]
    pub fn with_manual_clock(clock: Rc<Cell<i64>>) -> Store {
        Store {
            manual_clock: Some(clock),
            ..Store::default()
        }
    }

    /// The time in Unix milliseconds, the clock deadlines are kept in.
    fn now_ms(&self) -> i64 {
        match &self.manual_clock {
            Some(clock) => clock.get(),
            None => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        }
    }

    /// The live entry for `key`. An entry whose deadline has passed but
    /// that the expiry timer has not deleted yet (it runs in a later turn's
    /// timer phase, a slice of keys at a time) is deleted here.
    fn get(&mut self, key: &[u8]) -> Option<&mut Entry> {
        let due = match self.map.get(key)?.expiry {
            Some(x) => x.at_ms < self.now_ms(),
            None => false,
        };
        if due {
            self.remove(key);
            return None;
        }
        self.map.get_mut(key)
    }

    /// Set `key` to `value`, reusing the old value's allocation if it can. The TTL is
    /// dropped unless `keep_ttl`.
    fn put(&mut self, key: &[u8], value: &[u8], keep_ttl: bool) {
        match self.get(key) {
            Some(e) => {
                match Rc::get_mut(&mut e.value) {
                    // Same length and not being sent: overwrite in place.
                    Some(v) if v.len() == value.len() => v.copy_from_slice(value),
                    _ => e.value = Value::from(value),
                }
                if !keep_ttl {
                    if let Some(x) = e.expiry.take() {
                        self.deadlines.remove(&x);
                    }
                }
            }
            None => {
                let e = Entry {
                    value: Value::from(value),
                    expiry: None,
                };
                self.map.insert(key, e);
            }
        }
    }

    /// Delete `key` and its deadline; true if it was live (an overdue key
    /// is deleted too, but was already gone for readers: DEL counts it not).
    /// The expiry timer is left armed: if it was for this key, it finds
    /// nothing due and is armed for the next deadline.
    fn remove(&mut self, key: &[u8]) -> bool {
        let Some(e) = self.map.remove(key) else {
            return false;
        };
        match e.expiry {
            Some(x) => {
                self.deadlines.remove(&x);
                x.at_ms >= self.now_ms()
            }
            None => true,
        }
    }

    /// Give `key`, which exists, the deadline `at_ms` (even one already
    /// past, which the next sweep deletes).
    fn expire_at(&mut self, ctx: &mut Ctx<Store>, key: &[u8], at_ms: i64) {
        // Each deadline set pays for deleting two that are due (before it
        // is set, so a past one is counted until read, as in Redis):
        // clients setting short TTLs faster than the timer's slice a turn
        // would otherwise pile up expired keys for as long as they kept on.
        self.delete_due(DUE_PER_DEADLINE);
        let Some(e) = self.map.get_mut(key) else {
            return;
        };
        let x = Expiry {
            at_ms,
            seq: self.next_seq,
        };
        self.next_seq += 1;
        let bytes = match e.expiry.replace(x) {
            // The index's copy of the key moves to its new place.
            Some(old) => self.deadlines.remove(&old),
            None => None,
        };
        self.deadlines.insert(x, bytes.unwrap_or_else(|| key.into()));
        self.arm_sweep(ctx);
    }

    /// Drop `key`'s TTL; true if it had one.
    fn persist(&mut self, key: &[u8]) -> bool {
        let Some(x) = self.get(key).and_then(|e| e.expiry.take()) else {
            return false;
        };
        self.deadlines.remove(&x);
        true
    }

    /// Empty the store now, and free what it held a part a turn, after
    /// the clients (Redis's FLUSHALL ASYNC): a million keys freed at once
    /// held the server for 0.56 s. (What is left is glibc's: handing the
    /// freed memory back to the system in one call can take 0.1-0.2 s;
    /// `GLIBC_TUNABLES=glibc.malloc.trim_threshold=4000000000` keeps it
    /// for reuse instead.)
    fn flush(&mut self, ctx: &mut Ctx<Store>) {
        self.trash.push(Trash {
            tables: self.map.take_tables(),
            deadlines: std::mem::take(&mut self.deadlines),
        });
        self.arm_sweep(ctx);
        if self.trash.len() == 1 {
            ctx.defer(|ctx, store: &mut Store| store.free_some(ctx));
        }
    }

    /// Free one part of the flushed keys, or of their deadlines.
    fn free_some(&mut self, ctx: &mut Ctx<Store>) {
        let Some(trash) = self.trash.last_mut() else {
            return;
        };
        if trash.tables.free_some() {
            for _ in 0..FREE_DEADLINES {
                if trash.deadlines.pop_first().is_none() {
                    self.trash.pop();
                    break;
                }
            }
        }
        if !self.trash.is_empty() {
            // Deferred from a deferred callback: the next turn's.
            ctx.defer(|ctx, store: &mut Store| store.free_some(ctx));
        }
    }

    /// Make sure the expiry timer fires by the earliest deadline: arm it,
    /// or move it earlier (never later: a timer that finds nothing due
    /// arms itself for what is due next). With no deadline left, cancel it.
    fn arm_sweep(&mut self, ctx: &mut Ctx<Store>) {
        let Some(first) = self.deadlines.keys().next().map(|x| x.at_ms) else {
            if let Some((timer, _)) = self.sweep.take() {
                ctx.cancel_timer(timer);
            }
            return;
        };
        if self.sweep.is_some_and(|(_, armed)| armed <= first) {
            return;
        }
        let deadline = timer_deadline(ctx, first, self.now_ms());
        let timer = match self.sweep {
            Some((timer, _)) if ctx.reset_timer(timer, deadline) => timer,
            _ => ctx.timer_at(deadline, |_, ctx, store: &mut Store| {
                store.sweep = None;
                store.delete_due(SWEEP_SLICE);
                store.arm_sweep(ctx);
            }),
        };
        self.sweep = Some((timer, first));
    }

    /// Delete the keys whose deadline has passed, at most `max` of them;
    /// how many were deleted.
    fn delete_due(&mut self, max: usize) -> usize {
        let now = self.now_ms();
        let mut deleted = 0;
        while deleted < max {
            let Some(first) = self.deadlines.first_entry() else {
                break;
            };
            if first.key().at_ms >= now {
                break;
            }
            let key = first.remove();
            self.map.remove(&key);
            deleted += 1;
        }
        deleted
    }
}

/// When the loop should delete a key whose deadline is `at_ms` while the
/// clock reads `now_ms`: the first millisecond past the deadline, when the
/// key is gone for readers too (at once if that has come), but no more
/// than MAX_TIMER_MS ahead.
fn timer_deadline(ctx: &Ctx<Store>, at_ms: i64, now_ms: i64) -> Instant {
    let wait = at_ms
        .saturating_sub(now_ms)
        .saturating_add(1)
        .clamp(0, MAX_TIMER_MS);
    ctx.now() + Duration::from_millis(wait as u64)
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
    log::info!("kv server listening on {}", server.addr);
    el.run(&mut Store::default())?;
    log::info!("kv server stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Commands run straight through `execute` against a store whose clock
    //! is set by hand, on a loop whose clock is too, so expiry is tested
    //! without sleeping. Every reply here is redis-server 7's.

    use super::*;
    use evloop::{Clock, ManualClock};

    /// 2023-11-14 22:13:20 UTC in Unix milliseconds: where the clock starts.
    const T0: i64 = 1_700_000_000_000;

    struct Db {
        el: EventLoop<Store>,
        store: Store,
        clock: Rc<Cell<i64>>,
        loop_clock: ManualClock,
    }

    impl Db {
        fn new() -> Db {
            let clock = Rc::new(Cell::new(T0));
            let loop_clock = ManualClock::new();
            Db {
                el: EventLoop::builder()
                    .clock(Clock::Manual(loop_clock.clone()))
                    .build()
                    .unwrap(),
                store: Store::with_manual_clock(clock.clone()),
                clock,
                loop_clock,
            }
        }

        /// Run one inline command; its reply, as text.
        fn run(&mut self, line: &str) -> String {
            let mut args = Args::default();
            let parsed = resp::parse(format!("{line}\r\n").as_bytes(), &mut args);
            assert!(matches!(parsed, Ok(Some(_))), "{line}: {parsed:?}");
            let mut reply = Reply::default();
            execute(&args, &mut reply, &mut self.el, &mut self.store);
            assert!(!reply.busy(), "{line}: values queued by reference");
            String::from_utf8(reply.out).unwrap()
        }

        /// Run commands, checking each reply.
        fn check(&mut self, script: &[(&str, &str)]) {
            for (line, want) in script {
                assert_eq!(self.run(line), format!("{want}\r\n"), "{line}");
            }
        }

        /// Move the store's clock (the one deadlines are read by).
        fn advance(&self, ms: i64) {
            self.clock.set(self.clock.get() + ms);
        }

        /// Move the loop's clock (the one its timers fire by).
        fn advance_loop(&self, ms: u64) {
            self.loop_clock.advance(Duration::from_millis(ms));
        }

        /// Move both clocks.
        fn advance_both(&self, ms: i64) {
            self.advance(ms);
            self.advance_loop(ms as u64);
        }

        fn turn(&mut self) {
            self.el.turn(&mut self.store, Some(Duration::ZERO)).unwrap();
        }

        /// The index of deadlines holds exactly the keys with a TTL, each
        /// at the deadline its entry gives.
        fn check_index(&self) {
            let with_ttl = self.store.map.values().filter(|e| e.expiry.is_some());
            assert_eq!(with_ttl.count(), self.store.deadlines.len());
            for (x, key) in &self.store.deadlines {
                let e = self.store.map.get(key).expect("an indexed key exists");
                assert_eq!(e.expiry, Some(*x));
            }
            // One timer at most, armed by the earliest deadline (it may
            // outlive the keys it was armed for, and then finds none).
            assert!(self.el.timer_count() <= 1);
            if let Some(first) = self.store.deadlines.keys().next() {
                assert_eq!(self.el.timer_count(), 1);
                assert!(self.store.sweep.is_some_and(|(_, at)| at <= first.at_ms));
            }
        }
    }

    #[test]
    fn expireat_sets_a_unix_deadline_that_expiretime_gives_back() {
        let mut db = Db::new();
        db.check(&[
            ("SET k v", "+OK"),
            ("EXPIREAT k 1700000100", ":1"),
            ("EXPIRETIME k", ":1700000100"),
            ("PEXPIRETIME k", ":1700000100000"),
            ("TTL k", ":100"),
            ("PTTL k", ":100000"),
            ("PEXPIREAT k 1700000000500", ":1"),
            ("TTL k", ":1"),
            ("EXPIRETIME k", ":1700000001"),
            ("PEXPIRETIME nokey", ":-2"),
            ("SET p v", "+OK"),
            ("EXPIRETIME p", ":-1"),
        ]);
        // At its deadline's millisecond the key still reads; one later it is gone.
        db.advance(500);
        db.check(&[("PTTL k", ":0"), ("GET k", "$1\r\nv")]);
        db.advance(1);
        db.check(&[("GET k", "$-1"), ("TTL k", ":-2"), ("EXPIRETIME k", ":-2")]);
    }

    #[test]
    fn relative_ttls_count_from_the_store_clock() {
        let mut db = Db::new();
        db.check(&[
            ("SET k v EX 10", "+OK"),
            ("PTTL k", ":10000"),
            ("PEXPIRETIME k", ":1700000010000"),
            ("PEXPIRE k 1499", ":1"),
            ("TTL k", ":1"),
            ("PEXPIRE k 1500", ":1"),
            ("TTL k", ":2"),
        ]);
        db.advance(1500);
        db.check(&[("EXISTS k", ":1")]);
        db.advance(1);
        db.check(&[("EXISTS k", ":0")]);
    }

    #[test]
    fn a_deadline_already_past_deletes_the_key_and_counts_as_done() {
        let mut db = Db::new();
        db.check(&[
            ("SET k v", "+OK"),
            ("EXPIREAT k 1", ":1"),
            ("EXISTS k", ":0"),
            ("DBSIZE", ":0"),
            ("PEXPIREAT k 1", ":0"),
            ("SET k v", "+OK"),
            ("PEXPIREAT k 1700000000000", ":1"),
            ("DBSIZE", ":0"),
            ("SET k v", "+OK"),
            ("EXPIREAT k -5", ":1"),
            ("SET k v", "+OK"),
            ("EXPIRE k 0", ":1"),
            ("DBSIZE", ":0"),
        ]);
    }

    #[test]
    fn nx_xx_gt_lt_decide_which_keys_change() {
        let mut db = Db::new();
        db.check(&[
            ("SET k v", "+OK"),
            ("EXPIRE k 100 XX", ":0"),
            // No TTL counts as infinite: never less, always more.
            ("EXPIRE k 100 GT", ":0"),
            ("EXPIRE k 100 LT", ":1"),
            ("EXPIRE k 200 NX", ":0"),
            ("EXPIRE k 200 LT", ":0"),
            ("EXPIRE k 50 lt", ":1"),
            ("TTL k", ":50"),
            ("EXPIRE k 50 GT", ":0"),
            ("EXPIRE k 60 gt XX", ":1"),
            ("TTL k", ":60"),
            ("PERSIST k", ":1"),
            ("PERSIST k", ":0"),
            ("PEXPIREAT k 1700000001000 NX", ":1"),
            ("PTTL k", ":1000"),
            ("EXPIRE nokey 10", ":0"),
            ("EXPIRE nokey 10 LT", ":0"),
            // A past deadline that passes the condition deletes.
            ("EXPIRE k -1 LT", ":1"),
            ("EXISTS k", ":0"),
        ]);
    }

    #[test]
    fn expire_errors_come_in_redis_order() {
        let mut db = Db::new();
        let nx = "-ERR NX and XX, GT or LT options at the same time are not compatible";
        db.check(&[
            ("SET k v", "+OK"),
            ("EXPIRE k 10 NX XX", nx),
            ("EXPIRE k 10 GT NX", nx),
            ("PEXPIREAT k 10 NX LT", nx),
            (
                "EXPIRE k 10 GT LT",
                "-ERR GT and LT options at the same time are not compatible",
            ),
            // An unknown option is reported before a conflict, and the
            // options before the number.
            ("EXPIRE k 10 NX XX BOGUS", "-ERR Unsupported option BOGUS"),
            ("EXPIRE k abc NX XX", nx),
            ("EXPIRE k abc", "-ERR value is not an integer or out of range"),
            ("EXPIRE k", "-ERR wrong number of arguments for 'expire' command"),
            (
                "EXPIRETIME k 1",
                "-ERR wrong number of arguments for 'expiretime' command",
            ),
            // Out of range once in ms, or once now is added: refused, even
            // for a key that does not exist.
            (
                "EXPIREAT nokey 9223372036854776",
                "-ERR invalid expire time in 'expireat' command",
            ),
            (
                "EXPIRE nokey 9223372036854775",
                "-ERR invalid expire time in 'expire' command",
            ),
            (
                "PEXPIRE k 9223372036854775807",
                "-ERR invalid expire time in 'pexpire' command",
            ),
            // The largest deadline there is: kept exactly, rounded up in seconds.
            ("PEXPIREAT k 9223372036854775807", ":1"),
            ("PEXPIRETIME k", ":9223372036854775807"),
            ("EXPIRETIME k", ":9223372036854776"),
        ]);
    }

    #[test]
    fn set_exat_and_pxat() {
        let mut db = Db::new();
        let syntax = "-ERR syntax error";
        let invalid = "-ERR invalid expire time in 'set' command";
        db.check(&[
            ("SET k v EXAT 1700000100", "+OK"),
            ("PEXPIRETIME k", ":1700000100000"),
            ("SET k w PXAT 1700000000250 GET", "$1\r\nv"),
            ("PEXPIRETIME k", ":1700000000250"),
            ("SET k v exat 1700000100 EXAT 1700000200", "+OK"),
            ("EXPIRETIME k", ":1700000200"),
            ("SET k v KEEPTTL", "+OK"),
            ("EXPIRETIME k", ":1700000200"),
            ("SET k v EX 10 EXAT 1700000100", syntax),
            ("SET k v PXAT 1 KEEPTTL", syntax),
            ("SET k v KEEPTTL PXAT 1", syntax),
            ("SET k v PX 1 PXAT 5", syntax),
            ("SET k v EXAT 5 PXAT 5", syntax),
            ("SET k v EXAT", syntax),
            ("SET k v EXAT 0", invalid),
            ("SET k v PXAT -5", invalid),
            ("SET k v EXAT 9223372036854776", invalid),
            (
                "SET k v EXAT soon",
                "-ERR value is not an integer or out of range",
            ),
            ("PEXPIRETIME k", ":1700000200000"),
            ("SET k v PXAT 9223372036854775807", "+OK"),
            ("PEXPIRETIME k", ":9223372036854775807"),
        ]);
        // A Unix time in the past is set all the same: the key is gone for
        // readers at once, and counted until something deletes it.
        db.check(&[
            ("SET k v EXAT 1", "+OK"),
            ("DBSIZE", ":1"),
            ("GET k", "$-1"),
            ("DBSIZE", ":0"),
            ("SET k v", "+OK"),
            ("SET k w PXAT 1 GET", "$1\r\nv"),
            ("EXISTS k", ":0"),
        ]);
    }

    #[test]
    fn an_overdue_key_is_not_counted_by_del_and_incr_keeps_the_ttl() {
        let mut db = Db::new();
        db.check(&[
            ("SET k v PX 10", "+OK"),
            ("SET n 1 PX 100", "+OK"),
            ("INCR n", ":2"),
        ]);
        db.advance(11);
        db.check(&[
            ("DBSIZE", ":2"),
            ("DEL k", ":0"),
            ("DBSIZE", ":1"),
            ("PTTL n", ":89"),
            ("MSET n 5", "+OK"),
            ("PTTL n", ":-1"),
        ]);
    }

    /// The key's timer fires by the loop's clock but deletes by the store's:
    /// while the store's clock says the key lives, the timer is armed again.
    #[test]
    fn the_expiry_timer_deletes_by_the_store_clock() {
        let mut db = Db::new();
        db.check(&[("SET k v PX 5", "+OK")]);
        for _ in 0..5 {
            db.advance_loop(10);
            db.turn();
        }
        db.check(&[("DBSIZE", ":1"), ("PTTL k", ":5")]);
        assert_eq!(db.el.timer_count(), 1, "the timer is armed again");
        db.advance(6);
        db.advance_loop(10);
        db.turn();
        assert!(db.store.map.is_empty(), "the timer deleted the key");
        assert_eq!(db.el.timer_count(), 0);
    }

    /// Keys that fall due together are deleted a slice a turn, so the
    /// clients are served between slices; for readers they are all gone at
    /// once.
    #[test]
    fn keys_due_together_are_deleted_a_slice_a_turn() {
        let mut db = Db::new();
        let n = 2 * SWEEP_SLICE + 10;
        for i in 0..n {
            db.check(&[(&format!("SET k{i} v PX 5"), "+OK")]);
        }
        db.check(&[("SET kept v PX 50", "+OK"), ("SET plain v", "+OK")]);
        db.check_index();
        db.advance_both(6);
        // Due: gone for a reader (who deletes it), counted by DBSIZE until
        // the timer deletes it.
        let all = format!(":{}", n + 2);
        db.check(&[("DBSIZE", &all), ("EXISTS k5", ":0"), ("PTTL k6", ":-2")]);
        let mut sizes = Vec::new();
        for _ in 0..4 {
            db.turn();
            sizes.push(db.store.map.len());
        }
        let left = |k: usize| n - k;
        assert_eq!(sizes, [left(SWEEP_SLICE), left(2 * SWEEP_SLICE), 2, 2]);
        db.check(&[("PTTL kept", ":44")]);
        db.check_index();
        // The timer now waits for `kept`, which lives through its deadline's
        // millisecond.
        db.advance_both(44);
        db.turn();
        db.check(&[("DBSIZE", ":2")]);
        db.advance_both(1);
        db.turn();
        db.check(&[("DBSIZE", ":1"), ("TTL plain", ":-1")]);
        db.check_index();
    }

    /// A deadline earlier than the one the timer waits for moves it
    /// earlier; dropping the earliest leaves the timer to find nothing due
    /// and wait for the next.
    #[test]
    fn the_expiry_timer_follows_the_earliest_deadline() {
        let mut db = Db::new();
        db.check(&[("SET late v PX 100", "+OK"), ("SET soon v PX 5", "+OK")]);
        db.check_index();
        db.advance_both(6);
        db.turn();
        db.check(&[("DBSIZE", ":1"), ("PTTL late", ":94")]);
        db.check(&[("SET soon v PX 5", "+OK"), ("PERSIST soon", ":1")]);
        db.check(&[("SET gone v PX 5", "+OK"), ("DEL gone", ":1")]);
        db.check_index();
        db.advance_both(6);
        db.turn();
        db.check(&[("DBSIZE", ":2")]);
        db.check_index();
        db.check(&[("FLUSHALL", "+OK"), ("DBSIZE", ":0")]);
        db.check_index();
    }

    /// FLUSHALL empties the store at once, and what it held is freed a
    /// part a turn while the store goes on serving.
    #[test]
    fn flushall_empties_at_once_and_frees_a_part_a_turn() {
        let mut db = Db::new();
        for i in 0..1000 {
            db.check(&[(&format!("SET k{i} v PX 50"), "+OK")]);
        }
        db.check(&[("SET plain v", "+OK"), ("FLUSHALL", "+OK")]);
        db.check(&[("DBSIZE", ":0"), ("GET k1", "$-1"), ("GET plain", "$-1")]);
        db.check_index();
        assert_eq!(db.el.timer_count(), 0, "no deadline left to wait for");
        db.check(&[("SET after v PX 5", "+OK")]);
        let mut turns = 0;
        while !db.store.trash.is_empty() {
            db.turn();
            turns += 1;
            assert!(turns <= 300, "still freeing after {turns} turns");
        }
        assert!(turns > 100, "freed a part a turn, not in one go ({turns} turns)");
        db.check(&[("DBSIZE", ":1"), ("PTTL after", ":5")]);
        db.advance_both(6);
        db.turn();
        db.check(&[("DBSIZE", ":0")]);
    }

    /// Clients setting TTLs faster than the timer's slice a turn do not
    /// pile up expired keys: each deadline set deletes two that are due.
    #[test]
    fn ttl_writes_pay_for_the_expired_keys() {
        let mut db = Db::new();
        let due = |db: &Db| {
            let now = db.store.now_ms();
            db.store.deadlines.keys().filter(|x| x.at_ms < now).count()
        };
        let mut next = 0;
        let mut backlog = Vec::new();
        for _ in 0..6 {
            // Twice the slice in a turn, each key due a millisecond on.
            for _ in 0..2 * SWEEP_SLICE {
                db.check(&[(&format!("SET k{next} v PX 1"), "+OK")]);
                next += 1;
            }
            db.advance_both(2);
            db.turn();
            backlog.push(due(&db));
        }
        // What the last turn's writes left due, no more: without the
        // writes' share it grew by a slice a turn.
        assert!(
            backlog.iter().all(|&n| n <= SWEEP_SLICE),
            "expired keys left: {backlog:?}"
        );
        db.check_index();
    }

    /// Random commands on a few keys, with the clocks moving: the index
    /// stays in step with the keys, and every key whose deadline has
    /// passed is deleted once the timer has had its turns.
    #[test]
    fn the_deadline_index_stays_in_step() {
        let mut db = Db::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |m: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % m
        };
        for _ in 0..5_000 {
            let key = format!("k{}", next(20));
            let ms = next(30) + 1;
            let line = match next(9) {
                0 => format!("SET {key} v"),
                1 => format!("SET {key} v PX {ms}"),
                2 => format!("SET {key} w KEEPTTL"),
                3 => format!("PEXPIRE {key} {ms}"),
                4 => format!("PERSIST {key}"),
                5 => format!("DEL {key}"),
                6 => format!("INCR {key}"),
                7 => format!("GET {key}"),
                _ => {
                    db.advance_both(next(10) as i64);
                    db.turn();
                    db.check_index();
                    continue;
                }
            };
            db.run(&line);
            db.check_index();
        }
        db.advance_both(40);
        for _ in 0..3 {
            db.turn();
        }
        assert!(db.store.map.values().all(|e| e.expiry.is_none()));
        db.check_index();
    }
}
