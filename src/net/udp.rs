//! A UDP socket source: datagrams arrive in the loop's shared buffer, and
//! sends that would block are queued (bounded) until the socket is writable.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

use mio::Interest;

use crate::{Action, Ctx, SourceId};

/// Datagrams received per dispatch before yielding to other sources.
const RECV_BUDGET: usize = 64;
/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
const _: () = assert!(MAX_DATAGRAM <= crate::ctx::SCRATCH_SIZE);

/// A bound UDP socket, as seen by its handler.
pub struct Udp {
    socket: mio::net::UdpSocket,
    queue: VecDeque<(SocketAddr, Vec<u8>)>,
    max_queue: usize,
    dropped: u64,
    polled_writable: bool,
}

impl Udp {
    /// Send `data` to `to`. If the socket would block the datagram is queued
    /// and sent when it is writable; if the queue is full (1024 datagrams) it
    /// is dropped (UDP may drop anyway), counted in [`dropped`](Self::dropped)
    /// and false is returned.
    ///
    /// The queue is watched from the socket's handler: outside it (a timer,
    /// another source's handler), send with [`net::send_to`](crate::net::send_to),
    /// or a queued datagram waits for the next inbound one.
    pub fn send_to(&mut self, data: &[u8], to: SocketAddr) -> bool {
        if self.queue.is_empty() {
            match self.socket.send_to(data, to) {
                Ok(_) => return true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    log::debug!("evloop: udp send_to {to}: {e}");
                    return false;
                }
            }
        }
        if self.queue.len() >= self.max_queue {
            self.dropped += 1;
            log::warn!("evloop: udp send queue full; dropped a datagram to {to}");
            return false;
        }
        self.queue.push_back((to, data.to_vec()));
        true
    }

    /// Datagrams dropped because the send queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn flush(&mut self) {
        while let Some((to, data)) = self.queue.front() {
            match self.socket.send_to(data, *to) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => log::debug!("evloop: udp send_to {to}: {e}"),
            }
            self.queue.pop_front();
        }
    }
}

impl mio::event::Source for Udp {
    fn register(&mut self, r: &mio::Registry, t: mio::Token, i: Interest) -> io::Result<()> {
        self.socket.register(r, t, i)
    }
    fn reregister(&mut self, r: &mio::Registry, t: mio::Token, i: Interest) -> io::Result<()> {
        self.socket.reregister(r, t, i)
    }
    fn deregister(&mut self, r: &mio::Registry) -> io::Result<()> {
        self.socket.deregister(r)
    }
}

/// Send a datagram from UDP socket `id` from anywhere in the loop: as
/// [`Udp::send_to`], and if the kernel refuses it and it is queued, the
/// socket's handler is scheduled, so the queue goes out as soon as the
/// socket is writable instead of waiting for the next inbound datagram.
/// False if `id` is not an open UDP socket, or as [`Udp::send_to`].
pub fn send_to<S>(ctx: &mut Ctx<S>, id: SourceId, data: &[u8], to: SocketAddr) -> bool {
    let Some(udp) = ctx.source_mut::<Udp>(id) else {
        return false;
    };
    let sent = udp.send_to(data, to);
    if !udp.queue.is_empty() && !udp.polled_writable {
        // Its handler sends what it can and watches for writability.
        ctx.schedule(id);
    }
    sent
}

/// Bind a UDP socket at `addr`; `handler` gets each datagram with its sender.
pub fn bind_udp<S, F>(
    ctx: &mut Ctx<S>,
    addr: SocketAddr,
    mut handler: F,
) -> io::Result<(SourceId, SocketAddr)>
where
    F: FnMut(&mut Udp, &[u8], SocketAddr, &mut Ctx<S>, &mut S) + 'static,
{
    let socket = mio::net::UdpSocket::bind(addr)?;
    let local = socket.local_addr()?;
    let udp = Udp {
        socket,
        queue: VecDeque::new(),
        max_queue: 1024,
        dropped: 0,
        polled_writable: false,
    };
    let id = ctx.register(udp, Interest::READABLE, move |udp: &mut Udp, ev, ctx, state| {
        let mut buf = ctx.take_scratch();
        let mut action = Action::Keep;
        for i in 0.. {
            if i == RECV_BUDGET {
                action = Action::Reschedule;
                break;
            }
            match udp.socket.recv_from(&mut buf[..MAX_DATAGRAM]) {
                Ok((n, from)) => {
                    handler(udp, &buf[..n], from, ctx, state);
                    // Closed by its handler: nothing more for it.
                    if !ctx.is_open(ev.id) {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors (e.g. port unreachable) surface here; not fatal.
                    log::debug!("evloop: udp recv on {}: {e}", ev.id);
                    break;
                }
            }
        }
        ctx.put_scratch(buf);
        udp.flush();
        let want_w = !udp.queue.is_empty();
        if want_w != udp.polled_writable {
            let i = if want_w {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if ctx.set_interest(ev.id, i).is_ok() {
                udp.polled_writable = want_w;
            }
        }
        action
    })?;
    Ok((id, local))
}
