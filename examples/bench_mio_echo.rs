//! Peer for the end-to-end benchmark: an echo server written directly on mio,
//! the baseline every other server is compared with.
//!
//! The classic shape: one `Poll`, a slab of connections, every socket
//! registered once for READABLE | WRITABLE in edge-triggered mode, reads until
//! `WouldBlock` into one shared buffer, and each chunk written back at once.
//! Whatever the kernel does not take waits in a per-connection queue until the
//! next writable edge; past 1 MiB queued the connection stops reading.
//!
//! Usage: `cargo run --release --example bench_mio_echo [ADDR]` (default 127.0.0.1:6000).

use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);
const MAX_QUEUED: usize = 1 << 20;

struct Conn {
    stream: TcpStream,
    queue: Vec<u8>,
}

fn main() -> io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:6000".into());
    let addr = addr
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    eprintln!("mio echo listening on {}", listener.local_addr()?);
    let mut conns: Slab<Conn> = Slab::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                accept_all(&listener, &poll, &mut conns);
                continue;
            }
            let key = ev.token().0;
            let Some(conn) = conns.get_mut(key) else { continue };
            if !serve(conn, &mut buf) {
                let mut conn = conns.remove(key);
                let _ = poll.registry().deregister(&mut conn.stream);
            }
        }
    }
}

fn accept_all(listener: &TcpListener, poll: &Poll, conns: &mut Slab<Conn>) {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nodelay(true);
                let entry = conns.vacant_entry();
                let interest = Interest::READABLE | Interest::WRITABLE;
                if poll
                    .registry()
                    .register(&mut stream, Token(entry.key()), interest)
                    .is_ok()
                {
                    entry.insert(Conn {
                        stream,
                        queue: Vec::new(),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // EMFILE and friends: drop this readiness; the next edge retries.
                eprintln!("accept: {e}");
                return;
            }
        }
    }
}

/// Flush the queue, then read and echo until `WouldBlock`. False: close it.
fn serve(conn: &mut Conn, buf: &mut [u8]) -> bool {
    if !flush(conn) {
        return false;
    }
    while conn.queue.len() < MAX_QUEUED {
        let n = match conn.stream.read(buf) {
            Ok(0) => return false,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        if conn.queue.is_empty() {
            match write_some(&mut conn.stream, &buf[..n]) {
                Some(w) => conn.queue.extend_from_slice(&buf[w..n]),
                None => return false,
            }
        } else {
            conn.queue.extend_from_slice(&buf[..n]);
        }
    }
    true
}

fn flush(conn: &mut Conn) -> bool {
    if conn.queue.is_empty() {
        return true;
    }
    let Some(w) = write_some(&mut conn.stream, &conn.queue) else {
        return false;
    };
    conn.queue.drain(..w);
    true
}

/// Write as much as the kernel takes; None on a fatal error.
fn write_some(stream: &mut TcpStream, data: &[u8]) -> Option<usize> {
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
