//! 100,000 echoes through a task allocate nothing: the task's waker is made
//! once, wakes and polls reuse the loop's lists, and the connection's input
//! buffer comes from the loop's pool and goes back to it.
//!
//! A counting global allocator, so this must be the only test in its binary.

mod common;
mod common_alloc;

use std::io::{self, Read, Write};
use std::net::TcpStream;

use evloop::net::Addr;
use evloop::task;
use evloop::EventLoop;

#[test]
fn a_hundred_thousand_echoes_through_a_task_allocate_nothing() {
    const WARM_UP: usize = 1_000;
    const MEASURED: usize = 100_000;
    let mut el = EventLoop::<()>::new().unwrap();
    let listener = task::listen(&mut el, &"127.0.0.1:0".parse().unwrap(), Default::default()).unwrap();
    let Addr::Tcp(addr) = listener.local_addr().clone() else {
        unreachable!()
    };
    el.spawn(async move {
        let mut conn = listener.accept().await.unwrap();
        let mut line = Vec::with_capacity(128);
        loop {
            line.clear();
            if conn.read_line(&mut line).await.unwrap() == 0 {
                break;
            }
            conn.write_all(&line).await.unwrap();
        }
    })
    .unwrap();
    let mut client = TcpStream::connect(addr).unwrap();
    client.set_nodelay(true).unwrap();
    client.set_nonblocking(true).unwrap();
    let msg = [b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ!\n".as_slice()].concat();
    let mut back = vec![0u8; msg.len()];
    let mut echo = |el: &mut EventLoop<()>| {
        client.write_all(&msg).unwrap();
        let mut got = 0;
        let mut turns = 0;
        while got < msg.len() {
            el.turn(&mut (), Some(common::TICK)).unwrap();
            turns += 1;
            assert!(turns < 1_000, "no echo");
            match client.read(&mut back[got..]) {
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        assert!(back == msg);
    };
    for _ in 0..WARM_UP {
        echo(&mut el);
    }
    let allocations = common_alloc::count_allocations(|| {
        for _ in 0..MEASURED {
            echo(&mut el);
        }
    });
    assert_eq!(allocations, 0, "allocations over {MEASURED} echoes");
}
