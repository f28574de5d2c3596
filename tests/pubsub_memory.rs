//! The pubsub broker's memory with many subscribers that do not read,
//! alone in its own process (other tests running beside it would move the
//! figure).

mod common_net;
#[path = "../examples/pubsub.rs"]
#[allow(dead_code)]
mod pubsub;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use common_net::rss_kib;
use evloop::net::Addr;
use evloop::EventLoop;

/// 20 subscribers stop reading while 60 KB messages are published, until
/// they are cut off, a megabyte behind (after the kernel's buffers for
/// them are full). What they wait for is shared: the broker keeps each
/// message once, and each connection queues a few KiB, so at its largest
/// the broker has grown by a few MB. When each connection queued its own
/// copy (up to 1 MiB), it grew by 20 MB.
#[test]
fn subscribers_behind_share_what_they_wait_for() {
    const SUBS: usize = 20;
    // The broker's state is not `Send`: it is made on the loop's thread.
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let mut el = EventLoop::new().unwrap();
        let listening = pubsub::start(&mut el, &"127.0.0.1:0".parse().unwrap()).unwrap();
        let Addr::Tcp(addr) = listening.addr else {
            unreachable!()
        };
        tx.send((addr, el.remote().unwrap())).unwrap();
        el.run(&mut pubsub::Broker::default()).unwrap();
    });
    let (addr, remote) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    let client = |subscribe: bool| {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut r = BufReader::new(s);
        if subscribe {
            r.get_mut().write_all(b"SUB t\n").unwrap();
            let mut ok = String::new();
            r.read_line(&mut ok).unwrap();
            assert_eq!(ok, "OK\n");
        }
        r
    };
    let _subs: Vec<_> = (0..SUBS).map(|_| client(true)).collect();
    let mut publisher = client(false);
    let message = format!("PUB t {}\n", "x".repeat(60_000));
    let before = rss_kib();
    let mut most = 0;
    // 4 MiB of kernel buffer a subscriber, then 1 MiB behind: ~90 messages.
    for i in 0..400 {
        publisher.get_mut().write_all(message.as_bytes()).unwrap();
        let mut ack = String::new();
        publisher.read_line(&mut ack).unwrap();
        most = most.max(rss_kib().saturating_sub(before));
        if ack != format!("OK {SUBS}\n") {
            assert!(
                i > 17,
                "cut off after {i} messages: sooner than a megabyte behind"
            );
            break;
        }
        assert!(i < 399, "nobody was cut off");
    }
    assert!(
        most < 8 * 1024,
        "{SUBS} subscribers a megabyte behind grew the broker by {most} KiB"
    );
    remote.stop();
    server.join().unwrap();
}
