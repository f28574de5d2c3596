//! Dropping the loop with tasks parked on I/O, timers and channels closes
//! every fd they held.
//!
//! Counts `/proc/self/fd`, so it must be the only test in its binary.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use evloop::net::{Addr, ConnectConfig, Target};
use evloop::task::{self, AsyncReceiver};
use evloop::EventLoop;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn dropping_the_loop_with_parked_tasks_closes_every_fd() {
    let start = open_fds();
    let mut el = EventLoop::<()>::new().unwrap();
    let listener = task::listen(&mut el, &"127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
    let Addr::Tcp(addr) = listener.local_addr().clone() else {
        unreachable!()
    };
    let parked = std::rc::Rc::new(std::cell::Cell::new(0));
    let p = parked.clone();
    el.spawn(async move {
        loop {
            let mut conn = listener.accept().await.unwrap();
            p.set(p.get() + 1);
            task::spawn(async move {
                let mut buf = [0u8; 16];
                // Parked on I/O for good: the client never writes.
                let _ = conn.read(&mut buf).await;
            })
            .unwrap();
        }
    })
    .unwrap();
    // Parked on a timer, holding a connection out.
    let mut out = task::connect(&mut el, &Target::Addr(Addr::Tcp(addr)), ConnectConfig::default()).unwrap();
    el.spawn(async move {
        task::sleep(Duration::from_secs(3600)).await;
        let _ = out.write_all(b"late\n").await;
    })
    .unwrap();
    // Parked on a channel.
    let (tx, rx) = evloop::channel::<u8>();
    let mut rx = AsyncReceiver::register(&mut el, rx).unwrap();
    el.spawn(async move {
        let _ = rx.recv().await;
    })
    .unwrap();
    let mut clients: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    common::turn_until(&mut el, &mut (), |_| parked.get() == 5); // 4 clients and the task's own connect
    assert!(open_fds() > start + 8);

    drop(el);
    for c in &mut clients {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(c.read(&mut buf).unwrap(), 0, "the server's end is closed");
    }
    drop(clients);
    drop(tx);
    assert_eq!(
        open_fds(),
        start,
        "every fd the loop and its tasks held is closed"
    );
}
