//! A TCP forwarder: every client gets its own connection to the upstream,
//! and bytes flow both ways.
//!
//! What to notice:
//! - **Connecting out is the same `Handler`.** The accept callback learns
//!   the client's id, connects to the upstream with `Connector::connect`
//!   (which returns the upstream's id at once), and gives each side the
//!   other's id. What the client sends before the upstream is connected is
//!   queued on the upstream connection and goes out when it opens.
//! - **Backpressure across the pair.** Each side writes what it reads into
//!   the other (`net::write`) and asks `net::has_room`; when the other side's
//!   queue is above its high-water mark it pauses its own reading, and the
//!   other side's `on_room` resumes it. Neither side throttles on its *own*
//!   queue (`read_backpressure: false`), which would deadlock a relay whose
//!   upstream applies the same rule. So the proxy holds at most about
//!   high water plus one read per direction, whatever the peers do.
//! - **Half-close is passed on** (`on_eof` shuts the other side's write half
//!   once what it owes is written), and so is a close: when one side
//!   closes cleanly, the other is closed after what it is owed is written;
//!   when one fails (a reset, a timeout), the other is aborted. An upstream
//!   that refuses or does not answer closes the client, with a warning.
//! - **A stuck pair ends; a quiet one does not.** A side whose output has
//!   not moved, in its queue or in the kernel's, for two stall checks in a
//!   row (its peer takes nothing: an upstream that accepts and never
//!   reads) ends the pair, both ways by a reset;
//!   otherwise the pair, its other side paused, would hold two fds for
//!   good. A pair that owes nothing stays open however long it is quiet.
//!   (The connections' idle timer is that check: `on_idle` keeps a
//!   connection that owes nothing.)
//!
//! Usage: `cargo run --release --example proxy [LISTEN] [UPSTREAM]`
//! (defaults 127.0.0.1:6000 and 127.0.0.1:6001; UPSTREAM may be a host
//! name, resolved once at start as nginx and haproxy do). Stops cleanly on
//! SIGINT/SIGTERM.

use std::io;
use std::net::ToSocketAddrs;
use std::os::fd::AsRawFd;
use std::time::Duration;

use evloop::net::{
    self, Addr, CloseReason, Conn, ConnConfig, ConnectConfig, Connector, Handler, ListenConfig, Listening,
    Stream, Target,
};
use evloop::{Ctx, EventLoop, SourceId};

/// How long the proxy waits on its peers.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// How long an upstream may take to accept a connection.
    pub connect: Duration,
    /// How often a side that owes output and sees no progress is checked:
    /// two checks in a row with nothing taken (neither its queue nor the
    /// kernel's moved) give the pair up, so a stuck pair ends within two
    /// to three of these.
    pub stall: Duration,
}

/// The defaults: 10 s to connect (as haproxy's `timeout connect`), a
/// minute stalled.
pub const TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(10),
    stall: Duration::from_secs(60),
};
/// How long a peer may be silent before the kernel checks it is there.
const KEEPALIVE: Duration = Duration::from_secs(60);

/// One side of a proxied pair: the other side's id, and what it owed at
/// the last stall check (a pair costs two connections and two table rows,
/// under 512 bytes).
pub struct Side {
    peer: SourceId,
    /// Bytes queued here and unsent in the kernel at the last stall check.
    owed_at_check: Option<(usize, usize)>,
}

impl Side {
    fn new(peer: SourceId) -> Side {
        Side {
            peer,
            owed_at_check: None,
        }
    }
}

/// Bytes the kernel holds for the socket that the peer has not taken yet
/// (SIOCOUTQ: unsent, or sent and not acknowledged).
fn kernel_unsent(stream: &Stream) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (TIOCOUTQ on Linux) writes one c_int through the
    // pointer, valid for the call; the fd is the connection's open socket.
    let r = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if r < 0 {
        0
    } else {
        n.max(0) as usize
    }
}

impl<S> Handler<S> for Side {
    fn on_open(&mut self, conn: &mut Conn, ctx: &mut Ctx<S>, _: &mut S) {
        // The other side may already be gone (closed while this one
        // connected, or never registered): nothing to relay for.
        if !ctx.is_open(self.peer) {
            conn.close();
        }
    }

    fn on_data(&mut self, conn: &mut Conn, data: &[u8], ctx: &mut Ctx<S>, _: &mut S) -> usize {
        net::write(ctx, self.peer, data);
        if !net::has_room(ctx, self.peer) {
            // Resumed by the peer's `on_room`.
            conn.pause_reading();
        }
        data.len()
    }

    fn on_room(&mut self, _: &mut Conn, ctx: &mut Ctx<S>, _: &mut S) {
        net::resume_reading(ctx, self.peer);
    }

    fn on_idle(&mut self, conn: &mut Conn, ctx: &mut Ctx<S>, _: &mut S) {
        // Nothing read or flushed for the stall timeout. Owing nothing, it
        // is a quiet pair (a pooled connection): keep it. Owing bytes, it
        // may be a slow reader, which frees the kernel's send buffer a
        // little at a time without waking us (the kernel tells us of room
        // only once about a third is free): stuck only if neither our
        // queue nor the kernel's moved since the last check.
        if conn.queued() == 0 {
            self.owed_at_check = None;
            return;
        }
        let owed = (conn.queued(), kernel_unsent(conn.stream()));
        if self.owed_at_check.replace(owed) != Some(owed) {
            return;
        }
        log::warn!(
            "connection {}: {} bytes owed and none taken over two stall checks; ending its pair",
            conn.id(),
            conn.queued()
        );
        linger_off(conn.stream());
        conn.abort();
        reset(ctx, self.peer);
    }

    fn on_eof(&mut self, _: &mut Conn, ctx: &mut Ctx<S>, _: &mut S) {
        // Keep this side open for what the peer still sends back; the
        // connection closes itself once both halves are shut.
        net::shutdown_write(ctx, self.peer);
    }

    fn on_close(&mut self, conn: &mut Conn, reason: CloseReason, ctx: &mut Ctx<S>, _: &mut S) {
        if let CloseReason::ConnectFailed(kind) = reason {
            log::warn!(
                "upstream connection {} failed ({kind:?}); closing its client",
                conn.id()
            );
        } else {
            log::debug!("connection {} closed: {reason:?}", conn.id());
        }
        match reason {
            // This side ended cleanly: the other gets what it is owed,
            // then a close.
            CloseReason::Local | CloseReason::PeerClosed | CloseReason::ConnectFailed(_) => {
                net::close(ctx, self.peer);
            }
            // It failed (reset, timed out, overflowed): pass it on as a
            // reset, so the other end can tell its stream was cut short. A
            // graceful close could wait for good: what this side owed the
            // other is only written once the other reads, and the other
            // may itself be waiting for the reads this side, now gone,
            // stopped doing.
            _ => reset(ctx, self.peer),
        }
    }
}

/// Close connection `id` (another than the one being dispatched) by a
/// reset, dropping what it owes.
fn reset<S>(ctx: &mut Ctx<S>, id: SourceId) {
    if let Some(conn) = ctx.source_mut::<Conn>(id) {
        linger_off(conn.stream());
    }
    net::abort(ctx, id);
}

/// Linger off with a zero time: the close sends a reset.
fn linger_off(stream: &Stream) {
    if let Stream::Tcp(s) = stream {
        let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
    }
}

/// Forward every connection accepted on `listen` to `upstream`, waiting
/// on peers as `timeouts` says.
pub fn start<S: 'static>(
    ctx: &mut Ctx<S>,
    listen: &Addr,
    upstream: Target,
    timeouts: Timeouts,
) -> io::Result<Listening> {
    // Both sides relay: each throttles the other, never itself (see above).
    // The idle timer checks for a stall (see `on_idle`).
    let conn = ConnConfig {
        read_backpressure: false,
        idle_timeout: Some(timeouts.stall),
        ..ConnConfig::default()
    };
    // A peer that vanishes without a FIN or a reset is found by the
    // kernel's keepalive probes, which cost no timer of ours; a quiet pair
    // whose peers are alive (a pooled database connection) stays open, as
    // it would without the proxy.
    let connector = Connector::new(ConnectConfig {
        conn: conn.clone(),
        timeout: Some(timeouts.connect),
        keepalive: Some(KEEPALIVE),
        ..ConnectConfig::default()
    });
    let cfg = ListenConfig {
        conn,
        keepalive: Some(KEEPALIVE),
        ..ListenConfig::default()
    };
    net::listen(ctx, listen, cfg, move |_, client, ctx, _| {
        match connector.connect(ctx, &upstream, Side::new(client)) {
            Ok(up) => Some(Side::new(up)),
            Err(e) => {
                log::warn!("cannot connect to the upstream {upstream}: {e}; refusing the client");
                None
            }
        }
    })
}

/// The upstream as given: an address, or a name resolved here, once.
fn upstream_target(arg: &str) -> io::Result<Target> {
    match arg.parse::<Target>()? {
        Target::Name { host, port } => {
            let addrs: Vec<_> = (host.as_str(), port).to_socket_addrs()?.collect();
            Ok(Target::Addrs(addrs))
        }
        target => Ok(target),
    }
}

fn main() -> io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:6000".into());
    let upstream = args.next().unwrap_or_else(|| "127.0.0.1:6001".into());
    let target = upstream_target(&upstream)?;
    let mut el = EventLoop::new()?;
    let server = start(&mut el, &listen.parse()?, target, TIMEOUTS)?;
    el.add_signals(&[libc::SIGINT, libc::SIGTERM], |sig, ctx, _| {
        log::info!("signal {sig}: shutting down");
        ctx.stop();
    })?;
    log::info!("proxy listening on {}, forwarding to {upstream}", server.addr);
    el.run(&mut ())?;
    log::info!("proxy stopped");
    Ok(())
}
