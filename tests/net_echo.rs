//! Echo through the net layer: bulk data in both directions at once, many
//! concurrent clients, and Unix sockets.

mod common_net;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::thread;

use common_net::{echo_server, random_bytes, round_trip, Echo, Server, WAIT};
use evloop::net::{self, Addr, ListenConfig};

/// 4 MiB of random bytes come back intact while the client writes and reads
/// at the same time (so the server sees partial reads and partial writes).
#[test]
fn four_mib_echoed_while_writing_and_reading() {
    let server = echo_server();
    common_net::echo_while_writing(server.tcp(), &random_bytes(4 << 20, 1));
}

/// 300 clients connected at once, 50 round trips each, every reply correct.
#[test]
fn three_hundred_clients_fifty_round_trips() {
    let server = echo_server();
    common_net::concurrent_round_trips(server.tcp(), 300, 50, random_bytes);
}

/// A listener on a Unix socket path echoes like a TCP one.
#[test]
fn unix_socket_echo() {
    let path: PathBuf = std::env::temp_dir().join(format!("evloop-net-echo-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let bind = Addr::Unix(path.clone());
    let server = Server::start((), move |el| {
        Ok(net::listen(el, &bind, ListenConfig::default(), |_, _, _, _| Some(Echo))?.addr)
    });
    assert_eq!(server.addr, Addr::Unix(path.clone()));
    let result = std::panic::catch_unwind(|| {
        let mut s = UnixStream::connect(&path).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
        for i in 0..20 {
            let msg = random_bytes(100 + i * 1000, i as u64);
            assert_eq!(round_trip(&mut s, &msg).unwrap(), msg);
        }
        // Bulk, larger than any socket buffer.
        let big = random_bytes(1 << 20, 99);
        let mut w = s.try_clone().unwrap();
        let sent = big.clone();
        let t = thread::spawn(move || w.write_all(&sent).unwrap());
        let mut got = vec![0; big.len()];
        s.read_exact(&mut got).unwrap();
        t.join().unwrap();
        assert!(got == big);
    });
    drop(server);
    let left = path.exists();
    let _ = std::fs::remove_file(&path);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    assert!(!left, "the listener left its socket file behind");
}
