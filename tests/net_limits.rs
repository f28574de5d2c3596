//! `max_connections`: past the limit the listener stops accepting, and
//! resumes as soon as a connection leaves.

mod common_net;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common_net::{connect, round_trip, wait_until, Echo, Server, WAIT};
use evloop::net::{self, ListenConfig};

/// True if `s` gets no reply within a short window (the bytes sit unread in
/// the server's accept backlog). Only ever a false pass if the machine is slow,
/// never a false failure.
fn not_served(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut b = [0u8; 1];
    let quiet =
        matches!(s.read(&mut b), Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut));
    s.set_read_timeout(Some(WAIT)).unwrap();
    quiet
}

#[test]
fn third_client_waits_until_one_leaves() {
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let server = Server::start((), move |el| {
        let cfg = ListenConfig {
            max_connections: Some(2),
            ..ListenConfig::default()
        };
        let l = net::listen(el, &"127.0.0.1:0".parse()?, cfg, move |_, _, _| {
            count.fetch_add(1, Ordering::SeqCst);
            Some(Echo)
        })?;
        Ok(l.addr)
    });
    let addr = server.tcp();
    let mut c1 = connect(addr);
    assert_eq!(round_trip(&mut c1, b"one").unwrap(), b"one");
    let mut c2 = connect(addr);
    assert_eq!(round_trip(&mut c2, b"two").unwrap(), b"two");

    // The kernel completes the third handshake, but the loop does not accept it.
    let mut c3 = connect(addr);
    c3.write_all(b"three").unwrap();
    assert!(not_served(&mut c3), "third client served over the limit");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    // One leaves: the third is accepted and served, its early bytes included.
    drop(c1);
    let mut back = [0u8; 5];
    c3.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"three");
    assert_eq!(accepted.load(Ordering::SeqCst), 3);

    // Full again (c2, c3): a fourth waits, and gets in when c2 leaves.
    let mut c4 = connect(addr);
    c4.write_all(b"four").unwrap();
    assert!(not_served(&mut c4), "fourth client served over the limit");
    drop(c2);
    let mut back = [0u8; 4];
    c4.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"four");
    assert!(wait_until(|| accepted.load(Ordering::SeqCst) == 4));
    assert_eq!(round_trip(&mut c3, b"still fine").unwrap(), b"still fine");
}
