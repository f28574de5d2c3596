//! An in-memory key-value server that speaks RESP2, so `redis-cli` and
//! `redis-benchmark` work against it unmodified.
//!
//! Commands: PING, ECHO, SET (EX/PX, NX/XX, KEEPTTL, GET), GET, DEL, EXISTS,
//! INCR/DECR/INCRBY/DECRBY, MGET, MSET, EXPIRE/PEXPIRE, TTL/PTTL, PERSIST,
//! DBSIZE, FLUSHALL/FLUSHDB, SELECT 0, QUIT, and the housekeeping that the
//! Redis tools send on connect (CONFIG GET, COMMAND, CLIENT, HELLO, INFO).
//!
//! What to notice:
//! - **The application state is the database.** `Store` is the loop's `S`:
//!   every handler and timer callback gets `&mut Store`, no `Rc<RefCell<..>>`.
//! - **Expiry runs on the loop's timers.** A key with a TTL owns a one-shot
//!   timer (its `TimerId` is stored with the value): overwriting the key
//!   cancels it, EXPIRE moves it with `reset_timer`, TTL reads
//!   `timer_remaining`, and when it fires the callback removes the key. A
//!   read also treats an overdue key as gone, since the timer for it only
//!   fires in the next turn's timer phase.
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
//! - **Bad input closes, it does not crash or hang.** A protocol error gets
//!   `-ERR Protocol error: ...` and the connection is closed.
//!
//! Usage: `cargo run --release --example kv [ADDR]` (default 127.0.0.1:6000),
//! then `redis-cli -p 6000 set k v` or `redis-benchmark -p 6000 -t set,get -q`.
//! Stops cleanly on SIGINT/SIGTERM.

#[path = "fair/mod.rs"]
mod fair;
#[path = "proto/resp.rs"]
#[allow(dead_code)] // what the parser offers tests (its work counter, `parse`)
mod resp;

use std::collections::HashMap;
use std::io::{self, Write};
use std::rc::Rc;
use std::time::{Duration, Instant};

use evloop::net::{self, Addr, Conn, ConnConfig, Handler, ListenConfig, Listening};
use evloop::{Ctx, EventLoop, TimerId};
use resp::{reply, Args, Parser};

/// The longest TTL kept (100 years); longer ones are clamped to it.
const MAX_TTL_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// The database: the loop's application state.
#[derive(Default)]
pub struct Store {
    map: HashMap<Vec<u8>, Entry>,
}

/// A stored value. Shared, so that a reply can send it as the peer reads
/// without copying it (and a later write to the key does not change what
/// the reply sends).
type Value = Rc<[u8]>;

struct Entry {
    value: Value,
    /// The timer that deletes this key, if it has a TTL.
    expiry: Option<TimerId>,
}

/// Listen on `addr` and serve the store.
pub fn start(ctx: &mut Ctx<Store>, addr: &Addr) -> io::Result<Listening> {
    let cfg = ListenConfig {
        conn: ConnConfig {
            // Values up to 16 MiB may be sent in one command (RESP itself
            // allows 512 MiB; this is the per-connection input bound).
            max_input: 16 * 1024 * 1024,
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
                Ok(None) => break,
                Err(e) => {
                    log::debug!("connection {}: protocol error: {e}", conn.id());
                    reply::error(&mut self.reply.out, &format!("ERR Protocol error: {e}"));
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
        b"echo" | b"get" | b"incr" | b"decr" | b"ttl" | b"pttl" | b"persist" | b"select" => n == 2,
        b"set" => n >= 3,
        b"del" | b"exists" | b"mget" => n >= 2,
        b"incrby" | b"decrby" | b"expire" | b"pexpire" => n == 3,
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
        b"get" => reply.value(store.get(ctx, &args[1]).map(|e| &e.value)),
        b"set" => set(args, reply, ctx, store),
        b"mget" => {
            reply::array(out, n - 1);
            // Every value as it is now (shared, not copied), sent as room allows.
            for key in args.iter().skip(1) {
                let value = store.get(ctx, key).map(|e| e.value.clone());
                reply.items.push(value);
            }
        }
        b"mset" => {
            for i in (1..n).step_by(2) {
                store.put(ctx, &args[i], &args[i + 1], false);
            }
            reply::simple(out, "OK");
        }
        b"del" => {
            let gone = args.iter().skip(1).filter(|key| store.remove(ctx, key)).count();
            reply::int(out, gone as i64);
        }
        b"exists" => {
            let found = args
                .iter()
                .skip(1)
                .filter(|key| store.get(ctx, key).is_some())
                .count();
            reply::int(out, found as i64);
        }
        b"incr" => incr_by(&args[1], 1, out, ctx, store),
        b"decr" => incr_by(&args[1], -1, out, ctx, store),
        b"incrby" | b"decrby" => match resp::parse_int(&args[2]) {
            Some(by) if name == b"incrby" => incr_by(&args[1], by, out, ctx, store),
            Some(i64::MIN) => reply::error(out, "ERR decrement would overflow"),
            Some(by) => incr_by(&args[1], -by, out, ctx, store),
            None => reply::error(out, NOT_AN_INTEGER),
        },
        b"expire" | b"pexpire" => {
            let unit = if name == b"expire" { 1000 } else { 1 };
            match resp::parse_int(&args[2]).map(|t| expire_ms(t, unit)) {
                None => reply::error(out, NOT_AN_INTEGER),
                Some(None) => reply::error(out, &bad_expire(name)),
                Some(Some(ms)) => reply::int(out, i64::from(store.expire(ctx, &args[1], ms))),
            }
        }
        b"ttl" | b"pttl" => {
            let ttl = match store.get(ctx, &args[1]) {
                None => -2,
                Some(Entry { expiry: None, .. }) => -1,
                Some(Entry { expiry: Some(t), .. }) => {
                    let left = ctx.timer_remaining(*t).unwrap_or_default().as_millis() as i64;
                    // TTL rounds to the nearest second, as Redis does.
                    if name == b"ttl" {
                        (left + 500) / 1000
                    } else {
                        left
                    }
                }
            };
            reply::int(out, ttl);
        }
        b"persist" => {
            let timer = store.get(ctx, &args[1]).and_then(|e| e.expiry.take());
            reply::int(out, i64::from(timer.is_some_and(|t| ctx.cancel_timer(t))));
        }
        b"dbsize" => reply::int(out, store.map.len() as i64),
        b"flushall" | b"flushdb" => {
            for (_, e) in store.map.drain() {
                if let Some(t) = e.expiry {
                    ctx.cancel_timer(t);
                }
            }
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
            let expires = store.map.values().filter(|e| e.expiry.is_some()).count();
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

/// Redis's answer to an unknown command: the name and the first arguments,
/// each cut to 128 bytes (a huge name must not make a huge error line).
fn unknown(args: &Args, out: &mut Vec<u8>) {
    let cut = |a: &[u8], n: usize| String::from_utf8_lossy(&a[..a.len().min(n)]).into_owned();
    let mut listed = String::new();
    for a in args.iter().skip(1) {
        if listed.len() >= 128 {
            break;
        }
        listed.push_str(&format!("'{}' ", cut(a, 128 - listed.len())));
    }
    let msg = format!(
        "ERR unknown command '{}', with args beginning with: {listed}",
        cut(&args[0], 128)
    );
    reply::error(out, &msg);
}

/// Milliseconds since the Unix epoch: Redis keeps expiry as absolute times
/// and refuses a TTL whose deadline would overflow, so we check against the
/// same clock.
fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// An EXPIRE/PEXPIRE argument `t` in `unit` ms as a TTL in ms, or None
/// where Redis answers "invalid expire time": the product or the deadline
/// (now plus it) out of i64's range. Negative TTLs are fine (they delete).
fn expire_ms(t: i64, unit: i64) -> Option<i64> {
    let ms = t.checked_mul(unit)?;
    ms.checked_add(unix_ms())?;
    Some(ms)
}

/// SET key value [NX|XX] [EX s|PX ms|KEEPTTL] [GET], options checked as
/// Redis 7 does: NX and XX exclude each other, EX, PX and KEEPTTL too, but
/// one option may repeat (the last EX wins); the expire time is read only
/// once every option has passed.
fn set(args: &Args, reply: &mut Reply, ctx: &mut Ctx<Store>, store: &mut Store) {
    let (key, value) = (&args[1], &args[2]);
    let (mut nx, mut xx, mut keep_ttl, mut get) = (false, false, false, false);
    // The TTL's argument and its unit in ms.
    let mut ttl: Option<(&[u8], i64)> = None;
    let mut i = 3;
    while i < args.len() {
        let opt = args[i].to_ascii_uppercase();
        let arg = args.get(i + 1);
        let unit = ttl.map(|(_, unit)| unit);
        match (opt.as_slice(), arg) {
            (b"NX", _) if !xx => nx = true,
            (b"XX", _) if !nx => xx = true,
            (b"GET", _) => get = true,
            (b"KEEPTTL", _) if ttl.is_none() => keep_ttl = true,
            (b"EX", Some(arg)) if !keep_ttl && unit != Some(1) => {
                ttl = Some((arg, 1000));
                i += 1;
            }
            (b"PX", Some(arg)) if !keep_ttl && unit != Some(1000) => {
                ttl = Some((arg, 1));
                i += 1;
            }
            _ => return reply::error(&mut reply.out, "ERR syntax error"),
        }
        i += 1;
    }
    let ttl_ms = match ttl {
        None => None,
        Some((arg, unit)) => match resp::parse_int(arg) {
            None => return reply::error(&mut reply.out, NOT_AN_INTEGER),
            Some(t) => match expire_ms(t, unit) {
                Some(ms) if t > 0 => Some(ms),
                _ => return reply::error(&mut reply.out, &bad_expire(b"set")),
            },
        },
    };
    let old = store.get(ctx, key).map(|e| e.value.clone());
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
    store.put(ctx, key, value, keep_ttl);
    if let Some(ms) = ttl_ms {
        store.expire(ctx, key, ms);
    }
    if !get {
        reply::simple(&mut reply.out, "OK");
    }
}

/// INCR and friends: the value must be a decimal i64; the key keeps its TTL.
fn incr_by(key: &[u8], by: i64, out: &mut Vec<u8>, ctx: &mut Ctx<Store>, store: &mut Store) {
    let current = match store.get(ctx, key) {
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
    store.put(ctx, key, &digits[..len], true);
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
    /// The live entry for `key`. An entry whose timer is due but has not
    /// fired yet (it fires in the next turn's timer phase) is removed here.
    fn get(&mut self, ctx: &mut Ctx<Store>, key: &[u8]) -> Option<&mut Entry> {
        let due = match self.map.get(key)?.expiry {
            Some(t) => ctx.timer_remaining(t).map_or(true, |left| left.is_zero()),
            None => false,
        };
        if due {
            self.remove(ctx, key);
            return None;
        }
        self.map.get_mut(key)
    }

    /// Set `key` to `value`, reusing the old value's allocation if it can. The TTL is
    /// dropped unless `keep_ttl`.
    fn put(&mut self, ctx: &mut Ctx<Store>, key: &[u8], value: &[u8], keep_ttl: bool) {
        match self.get(ctx, key) {
            Some(e) => {
                match Rc::get_mut(&mut e.value) {
                    // Same length and not being sent: overwrite in place.
                    Some(v) if v.len() == value.len() => v.copy_from_slice(value),
                    _ => e.value = Value::from(value),
                }
                if !keep_ttl {
                    if let Some(t) = e.expiry.take() {
                        ctx.cancel_timer(t);
                    }
                }
            }
            None => {
                let e = Entry {
                    value: Value::from(value),
                    expiry: None,
                };
                self.map.insert(key.to_vec(), e);
            }
        }
    }

    /// Delete `key` and its timer; true if it existed.
    fn remove(&mut self, ctx: &mut Ctx<Store>, key: &[u8]) -> bool {
        match self.map.remove(key) {
            Some(e) => {
                if let Some(t) = e.expiry {
                    ctx.cancel_timer(t);
                }
                true
            }
            None => false,
        }
    }

    /// Give `key` a TTL of `ms` (deleting it now if that is not positive);
    /// false if there is no such key.
    fn expire(&mut self, ctx: &mut Ctx<Store>, key: &[u8], ms: i64) -> bool {
        if ms <= 0 {
            return self.remove(ctx, key);
        }
        // Clamped so the deadline stays representable; nobody waits a century.
        let deadline = ctx.now() + Duration::from_millis(ms.min(MAX_TTL_MS) as u64);
        let Some(e) = self.get(ctx, key) else {
            return false;
        };
        match e.expiry {
            // Same key, same callback: just move its timer.
            Some(t) if ctx.reset_timer(t, deadline) => {}
            _ => e.expiry = Some(arm(ctx, key.to_vec(), deadline)),
        }
        true
    }
}

/// The timer that deletes `key` at `deadline`. It checks that the key still
/// owns this timer, in case the key was deleted and set again meanwhile.
fn arm(ctx: &mut Ctx<Store>, key: Vec<u8>, deadline: Instant) -> TimerId {
    ctx.timer_at(deadline, move |fired, _, store: &mut Store| {
        if store.map.get(&key).is_some_and(|e| e.expiry == Some(fired.id)) {
            store.map.remove(&key);
        }
    })
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
