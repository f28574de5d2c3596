//! `echo_async`'s memory per idle client, alone in its own process (other
//! tests running beside it would move the figure).

mod common_net;
#[path = "../examples/echo_async.rs"]
#[allow(dead_code)]
mod echo_async;

use common_net::{connect, round_trip, rss_kib, Server};

fn server() -> Server<()> {
    Server::start((), |el| echo_async::start(el, &"127.0.0.1:0".parse()?))
}

/// Clients that each sent one 1 MiB line, got it back and then sit idle
/// hold no megabyte each: the task does not keep its largest line's
/// buffer (it did: 100 clients held 100 MiB until they left).
#[test]
fn idle_clients_after_a_huge_line_hold_no_line_buffer() {
    const CLIENTS: usize = 100;
    let server = server();
    let mut line = vec![b'y'; 1 << 20];
    *line.last_mut().unwrap() = b'\n';
    let before = rss_kib();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut c = connect(server.tcp());
            assert_eq!(round_trip(&mut c, &line).unwrap(), line);
            c
        })
        .collect();
    // Each round trip ended with the task back in `read_line`, idle.
    let grown = rss_kib().saturating_sub(before);
    assert!(
        grown < 40 * 1024,
        "{CLIENTS} idle clients grew the process by {grown} KiB"
    );
    drop(clients);
}
