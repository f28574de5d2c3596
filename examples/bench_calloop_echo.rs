//! Peer for the end-to-end benchmark: an echo server on calloop, each socket a
//! `Generic` event source.
//!
//! The listener is level-triggered; every connection is registered
//! edge-triggered for reading and writing, reads until `WouldBlock` into a
//! buffer shared through the loop's data, and writes each chunk back at once.
//! Output the kernel does not take waits in the connection's closure until the
//! next writable edge; past 1 MiB queued the connection stops reading.
//!
//! Usage: `cargo run --release --example bench_calloop_echo [ADDR]` (default 127.0.0.1:6000).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use calloop::generic::Generic;
use calloop::{EventLoop, Interest, LoopHandle, Mode, PostAction};

const MAX_QUEUED: usize = 1 << 20;

/// The loop's shared data: one read buffer for every connection.
struct Shared {
    buf: Vec<u8>,
}

fn main() -> io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:6000".into());
    let addr: SocketAddr = addr
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut event_loop: EventLoop<Shared> = EventLoop::try_new().map_err(io::Error::other)?;
    let handle = event_loop.handle();
    let listener = bind(addr)?;
    eprintln!("calloop echo listening on {}", listener.local_addr()?);
    let conns = handle.clone();
    handle
        .insert_source(
            Generic::new(listener, Interest::READ, Mode::Level),
            move |_, l, _| {
                accept_all(l, &conns);
                Ok(PostAction::Continue)
            },
        )
        .map_err(|e| io::Error::other(e.error))?;
    let mut shared = Shared {
        buf: vec![0u8; 64 * 1024],
    };
    event_loop
        .run(None, &mut shared, |_| {})
        .map_err(io::Error::other)
}

/// A listener with the same backlog as mio's and evloop's (1024).
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

fn accept_all(listener: &TcpListener, handle: &LoopHandle<'static, Shared>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let mut queue = Vec::new();
                let source = Generic::new(stream, Interest::BOTH, Mode::Edge);
                let inserted = handle.insert_source(source, move |_, stream, shared: &mut Shared| {
                    Ok(if serve(stream, &mut queue, &mut shared.buf) {
                        PostAction::Continue
                    } else {
                        PostAction::Remove
                    })
                });
                if let Err(e) = inserted {
                    eprintln!("register: {}", e.error);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("accept: {e}");
                return;
            }
        }
    }
}

/// Flush the queue, then read and echo until `WouldBlock`. False: close it.
fn serve(mut stream: &TcpStream, queue: &mut Vec<u8>, buf: &mut [u8]) -> bool {
    if !queue.is_empty() {
        let Some(w) = write_some(stream, queue) else {
            return false;
        };
        queue.drain(..w);
    }
    while queue.len() < MAX_QUEUED {
        let n = match stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        if queue.is_empty() {
            let Some(w) = write_some(stream, &buf[..n]) else {
                return false;
            };
            queue.extend_from_slice(&buf[w..n]);
        } else {
            queue.extend_from_slice(&buf[..n]);
        }
    }
    true
}

/// Write as much as the kernel takes; None on a fatal error.
fn write_some(mut stream: &TcpStream, data: &[u8]) -> Option<usize> {
    let mut done = 0;
    while done < data.len() {
        match stream.write(&data[done..]) {
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    Some(done)
}
