//! 5,000 connect/close cycles leave the server with the fds it started with.
//!
//! Alone in its file: it counts /proc/self/fd, which every test in the same
//! process would disturb.

mod common_net;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use common_net::{connect, echo_server, round_trip, wait_until};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn five_thousand_connect_close_cycles_leak_no_fd() {
    const CYCLES: usize = 5_000;
    let server = echo_server();
    let addr = server.tcp();
    // Warm up (and prove the server works) before taking the baseline.
    drop(connect(addr));
    let mut c = connect(addr);
    assert_eq!(round_trip(&mut c, b"warm").unwrap(), b"warm");
    drop(c);
    assert!(wait_until(|| server.call(|ctx, _| ctx.source_count()) == 2));
    let baseline = open_fds();
    let sources = server.call(|ctx, _| ctx.source_count());

    for i in 0..CYCLES {
        let mut c = connect(addr);
        // Vary how each one leaves: silently, after a round trip, after a
        // half-close, or with a reset.
        match i % 4 {
            0 => {}
            1 => assert_eq!(round_trip(&mut c, b"x").unwrap(), b"x"),
            2 => {
                c.write_all(b"bye").unwrap();
                c.shutdown(Shutdown::Write).unwrap();
                let mut back = Vec::new();
                c.read_to_end(&mut back).unwrap();
                assert_eq!(back, b"bye");
            }
            _ => {
                c.write_all(b"rst").unwrap();
                socket2::SockRef::from(&c)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
            }
        }
        drop(c);
    }

    let settled =
        wait_until(|| open_fds() == baseline && server.call(|ctx, _| ctx.source_count()) == sources);
    assert!(
        settled,
        "fds {} (baseline {baseline}), sources {} (baseline {sources})",
        open_fds(),
        server.call(|ctx, _| ctx.source_count())
    );
}
