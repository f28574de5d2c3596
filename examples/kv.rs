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
//!   buffer and sends all the replies with one write; a half-arrived command
//!   is left unconsumed and offered again with more bytes.
//! - **Bad input closes, it does not crash or hang.** A protocol error gets
//!   `-ERR Protocol error: ...` and the connection is closed.
//!
//! Usage: `cargo run --release --example kv [ADDR]` (default 127.0.0.1:6000),
//! then `redis-cli -p 6000 set k v` or `redis-benchmark -p 6000 -t set,get -q`.
//! Stops cleanly on SIGINT/SIGTERM.

#[path = "proto/resp.rs"]
mod resp;

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use evloop::net::{self, Addr, Conn, ConnConfig, Handler, ListenConfig, Listening};
use evloop::{Ctx, EventLoop, TimerId};
use resp::{reply, Args};

/// The longest TTL kept (100 years); longer ones are clamped to it.
const MAX_TTL_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

/// The database: the loop's application state.
#[derive(Default)]
pub struct Store {
    map: HashMap<Vec<u8>, Entry>,
}

struct Entry {
    value: Vec<u8>,
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

/// One connection: buffers reused from command to command.
#[derive(Default)]
struct Client {
    args: Args,
    out: Vec<u8>,
}

/// What the connection does after a command.
#[derive(PartialEq, Eq)]
enum Next {
    Continue,
    Close,
}

impl Handler<Store> for Client {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], ctx: &mut Ctx<Store>, store: &mut Store) -> usize {
        let mut out = std::mem::take(&mut self.out);
        let mut used = 0;
        let mut next = Next::Continue;
        while used < data.len() && next == Next::Continue {
            match resp::parse(&data[used..], &mut self.args) {
                Ok(Some(n)) => {
                    used += n;
                    if !self.args.is_empty() {
                        next = execute(&self.args, &mut out, ctx, store);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    log::debug!("connection {}: protocol error: {e}", conn.id());
                    reply::error(&mut out, &format!("ERR Protocol error: {e}"));
                    next = Next::Close;
                }
            }
        }
        conn.write(&out);
        out.clear();
        // Keep a modest reply buffer for next time; let a huge one go.
        if out.capacity() <= 64 * 1024 {
            self.out = out;
        }
        if next == Next::Close {
            conn.close();
            return data.len();
        }
        used
    }
}

/// Run one command, appending its reply to `out`.
fn execute(args: &Args, out: &mut Vec<u8>, ctx: &mut Ctx<Store>, store: &mut Store) -> Next {
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
        b"ping" if n == 2 => reply::bulk(out, &args[1]),
        b"ping" => reply::simple(out, "PONG"),
        b"echo" => reply::bulk(out, &args[1]),
        b"get" => match store.get(ctx, &args[1]) {
            Some(e) => reply::bulk(out, &e.value),
            None => reply::null(out),
        },
        b"set" => set(args, out, ctx, store),
        b"mget" => {
            reply::array(out, n - 1);
            for key in args.iter().skip(1) {
                match store.get(ctx, key) {
                    Some(e) => reply::bulk(out, &e.value),
                    None => reply::null(out),
                }
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
            Some(by) if by != i64::MIN => incr_by(&args[1], -by, out, ctx, store),
            _ => reply::error(out, "ERR value is not an integer or out of range"),
        },
        b"expire" | b"pexpire" => {
            let unit = if name == b"expire" { 1000 } else { 1 };
            match resp::parse_int(&args[2]).and_then(|t| t.checked_mul(unit)) {
                Some(ms) => reply::int(out, i64::from(store.expire(ctx, &args[1], ms))),
                None => reply::error(out, "ERR value is not an integer or out of range"),
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
        b"select" if &args[1] == b"0" => reply::simple(out, "OK"),
        b"select" => reply::error(out, "ERR DB index is out of range"),
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
        _ => {
            let msg = format!("ERR unknown command '{}'", String::from_utf8_lossy(&args[0]));
            reply::error(out, &msg);
        }
    }
    Next::Continue
}

/// SET key value [NX|XX] [EX s|PX ms|KEEPTTL] [GET]
fn set(args: &Args, out: &mut Vec<u8>, ctx: &mut Ctx<Store>, store: &mut Store) {
    let (key, value) = (&args[1], &args[2]);
    let (mut nx, mut xx, mut keep_ttl, mut get) = (false, false, false, false);
    let mut ttl_ms: Option<i64> = None;
    let mut i = 3;
    while i < args.len() {
        let opt = args[i].to_ascii_uppercase();
        let arg = args.get(i + 1);
        match opt.as_slice() {
            b"NX" if !xx => nx = true,
            b"XX" if !nx => xx = true,
            b"GET" => get = true,
            b"KEEPTTL" if ttl_ms.is_none() => keep_ttl = true,
            b"EX" | b"PX" if ttl_ms.is_none() && !keep_ttl && arg.is_some() => {
                let unit = if opt == b"EX" { 1000 } else { 1 };
                match arg.and_then(resp::parse_int).and_then(|t| t.checked_mul(unit)) {
                    Some(ms) if ms > 0 => ttl_ms = Some(ms),
                    Some(_) => return reply::error(out, "ERR invalid expire time in 'set' command"),
                    None => return reply::error(out, "ERR value is not an integer or out of range"),
                }
                i += 1;
            }
            _ => return reply::error(out, "ERR syntax error"),
        }
        i += 1;
    }
    let old = store.get(ctx, key);
    let exists = old.is_some();
    if get {
        match old {
            Some(e) => reply::bulk(out, &e.value),
            None => reply::null(out),
        }
    }
    if (nx && exists) || (xx && !exists) {
        if !get {
            reply::null(out);
        }
        return;
    }
    store.put(ctx, key, value, keep_ttl);
    if let Some(ms) = ttl_ms {
        store.expire(ctx, key, ms);
    }
    if !get {
        reply::simple(out, "OK");
    }
}

/// INCR and friends: the value must be a decimal i64; the key keeps its TTL.
fn incr_by(key: &[u8], by: i64, out: &mut Vec<u8>, ctx: &mut Ctx<Store>, store: &mut Store) {
    let current = match store.get(ctx, key) {
        Some(e) => match resp::parse_int(&e.value) {
            Some(n) => n,
            None => return reply::error(out, "ERR value is not an integer or out of range"),
        },
        None => 0,
    };
    let Some(new) = current.checked_add(by) else {
        return reply::error(out, "ERR increment or decrement would overflow");
    };
    let mut digits = Vec::with_capacity(20);
    let _ = write!(digits, "{new}");
    store.put(ctx, key, &digits, true);
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

    /// Set `key` to `value`, reusing the old value's allocation. The TTL is
    /// dropped unless `keep_ttl`.
    fn put(&mut self, ctx: &mut Ctx<Store>, key: &[u8], value: &[u8], keep_ttl: bool) {
        match self.get(ctx, key) {
            Some(e) => {
                e.value.clear();
                e.value.extend_from_slice(value);
                if !keep_ttl {
                    if let Some(t) = e.expiry.take() {
                        ctx.cancel_timer(t);
                    }
                }
            }
            None => {
                let e = Entry {
                    value: value.to_vec(),
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

fn main() -> io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:6000".into());
    let mut el = EventLoop::new()?;
    let server = start(&mut el, &addr.parse()?)?;
    log::info!("kv server listening on {}", server.addr);
    el.add_signals(&[libc::SIGINT, libc::SIGTERM], |sig, ctx, _| {
        log::info!("signal {sig}: shutting down");
        ctx.stop();
    })?;
    el.run(&mut Store::default())?;
    log::info!("kv server stopped");
    Ok(())
}
