//! UDP: a `bind_udp` echo round-trips datagrams from a std client intact.

mod common_net;

use std::net::UdpSocket;

use common_net::{random_bytes, Server, WAIT};
use evloop::net::{self, Addr};

#[test]
fn udp_echo_thousand_datagrams() {
    let server = Server::start((), |el| {
        let (_, local) = net::bind_udp(el, "127.0.0.1:0".parse().unwrap(), |udp, data, from, _, _| {
            assert!(udp.send_to(data, from), "send queue full");
        })?;
        Ok(Addr::Tcp(local))
    });
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client.connect(server.tcp()).unwrap();
    let mut buf = vec![0u8; 65_536];
    for i in 0..1000u64 {
        // Mostly small, now and then near the largest payload.
        let len = if i % 100 == 99 {
            60_000
        } else {
            1 + (i as usize * 37) % 1400
        };
        let msg = random_bytes(len, i);
        client.send(&msg).unwrap();
        let n = client.recv(&mut buf).expect("reply lost or late");
        assert_eq!(&buf[..n], &msg[..], "datagram {i}");
    }
}

/// A burst larger than one dispatch's receive budget (64): every datagram is
/// answered, in order (the handler yields and is called again).
#[test]
fn udp_burst_all_answered_in_order() {
    // Small enough to fit the default socket buffers (about 250 small
    // datagrams at 208 KiB): past that the kernel drops, as UDP may.
    const BURST: usize = 200;
    let server = Server::start((), |el| {
        let (_, local) = net::bind_udp(el, "127.0.0.1:0".parse().unwrap(), |udp, data, from, _, _| {
            assert!(udp.send_to(data, from), "send queue full");
        })?;
        Ok(Addr::Tcp(local))
    });
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    client.connect(server.tcp()).unwrap();
    for i in 0..BURST {
        client.send(&(i as u32).to_le_bytes()).unwrap();
    }
    let mut buf = [0u8; 16];
    for i in 0..BURST {
        let n = client
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("reply {i} lost or late: {e}"));
        assert_eq!(&buf[..n], &(i as u32).to_le_bytes(), "datagram {i}");
    }
}

/// `net::send_to` sends from outside the socket's handler (here a timer),
/// with no datagram coming in to run the handler; a stale id sends nothing.
#[test]
fn send_to_works_from_outside_the_handler() {
    let mut el = evloop::EventLoop::<()>::new().unwrap();
    let (id, _) = net::bind_udp(&mut el, "127.0.0.1:0".parse().unwrap(), |_, _, _, _, _| {}).unwrap();
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(WAIT)).unwrap();
    let to = client.local_addr().unwrap();
    el.timer_after(std::time::Duration::ZERO, move |_, ctx, _| {
        assert!(net::send_to(ctx, id, b"from a timer", to));
    });
    el.turn(&mut (), Some(std::time::Duration::ZERO)).unwrap();
    let mut buf = [0u8; 64];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"from a timer");
    el.close(id);
    el.turn(&mut (), Some(std::time::Duration::ZERO)).unwrap();
    assert!(!net::send_to(&mut el, id, b"stale", to));
}
