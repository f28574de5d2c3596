//! Connecting out from inside a task (`AsyncConn::connect`, no `Ctx` at
//! hand): by address and by host name, a refused connect seen as an error
//! on first use, and the case it exists for, a task that accepts a client
//! and dials an upstream for it (a proxy written as a straight line).

use std::future::Future;
use std::io;
use std::task::Poll;
use std::time::Duration;

use evloop::net::{Addr, ConnectConfig, ListenConfig, Target};
use evloop::task::{self, AsyncConn, AsyncListener};
use evloop::{Ctx, EventLoop};

/// Bound every wait: a test that would hang fails instead.
const LIMIT: Duration = Duration::from_secs(20);

/// An echo server made of tasks on `ctx`'s loop (eventlet's, line by line).
fn echo_server<S>(ctx: &mut Ctx<S>) -> Addr
where
    S: 'static,
{
    let server = task::listen(ctx, &"127.0.0.1:0".parse().unwrap(), ListenConfig::default()).unwrap();
    let addr = server.local_addr().clone();
    ctx.spawn(async move {
        while let Ok(mut conn) = server.accept().await {
            task::spawn(async move {
                let mut line = Vec::new();
                while conn.read_line(&mut line).await.unwrap_or(0) > 0 {
                    if conn.write_all(&line).await.is_err() {
                        break;
                    }
                    line.clear();
                }
            })
            .unwrap();
        }
    })
    .unwrap();
    addr
}

/// Send `lines` on a connection made from inside the task, and read them back.
async fn round_trip(to: Target, lines: &[&str]) -> io::Result<Vec<u8>> {
    let mut conn = AsyncConn::connect(&to, ConnectConfig::default()).await?;
    let mut got = Vec::new();
    for line in lines {
        conn.write_all(line.as_bytes()).await?;
        conn.read_line(&mut got).await?;
    }
    Ok(got)
}

#[test]
fn a_task_connects_by_address_and_by_name() {
    let mut el = EventLoop::<()>::new().unwrap();
    let Addr::Tcp(addr) = echo_server(&mut el) else {
        unreachable!()
    };
    let by_name: Target = format!("localhost:{}", addr.port()).parse().unwrap();
    let (a, b) = el
        .block_on(
            &mut (),
            task::timeout(LIMIT, async {
                (
                    round_trip(addr.into(), &["one\n", "two\n"]).await,
                    // "localhost" may resolve to ::1 first: the connect tries
                    // each address in turn, as net::connect does.
                    round_trip(by_name, &["three\n"]).await,
                )
            }),
        )
        .unwrap()
        .expect("within the limit");
    assert_eq!(a.unwrap(), b"one\ntwo\n");
    assert_eq!(b.unwrap(), b"three\n");
}

/// A connection made to a name learns its peer's address once connected.
#[test]
fn a_connection_made_to_a_name_knows_its_peer_once_connected() {
    let mut el = EventLoop::<()>::new().unwrap();
    let Addr::Tcp(addr) = echo_server(&mut el) else {
        unreachable!()
    };
    let by_name: Target = format!("localhost:{}", addr.port()).parse().unwrap();
    let peer = el
        .block_on(
            &mut (),
            task::timeout(LIMIT, async {
                let mut conn = AsyncConn::connect(&by_name, ConnectConfig::default()).await?;
                let before = conn.peer_addr();
                conn.write_all(b"x\n").await?;
                conn.read_line(&mut Vec::new()).await?;
                Ok::<_, io::Error>((before, conn.peer_addr()))
            }),
        )
        .unwrap()
        .expect("within the limit")
        .unwrap();
    assert_eq!(peer, (None, Some(addr)));
}

#[test]
fn a_refused_connect_is_an_error_on_first_use() {
    // A port nobody listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut el = EventLoop::<()>::new().unwrap();
    let to: Target = format!("127.0.0.1:{port}").parse().unwrap();
    let err = el
        .block_on(&mut (), task::timeout(LIMIT, round_trip(to, &["x\n"])))
        .unwrap()
        .expect("within the limit")
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
}

/// A name that does not resolve is `NotFound`, a kind stable Rust can
/// match (the resolver's own kind is not one), on first use as from
/// `task::resolve`.
#[test]
fn a_name_that_does_not_resolve_is_not_found() {
    let mut el = EventLoop::<()>::new().unwrap();
    let err = el
        .block_on(
            &mut (),
            task::timeout(LIMIT, task::resolve("no-such-host.invalid:80")),
        )
        .unwrap()
        .expect("within the limit")
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("no-such-host.invalid"), "{err}");
    // A name no resolver is asked about is bad input, not an unknown host.
    let err = el
        .block_on(&mut (), task::resolve("nul\0host:80"))
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    let to: Target = "no-such-host.invalid:80".parse().unwrap();
    let err = el
        .block_on(&mut (), task::timeout(LIMIT, round_trip(to, &["x\n"])))
        .unwrap()
        .expect("within the limit")
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
}

#[test]
fn outside_a_task_it_is_an_error_not_a_hang() {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let to: Target = "127.0.0.1:1".parse().unwrap();
    let dial = AsyncConn::connect(&to, ConnectConfig::default());
    let mut dial = std::pin::pin!(dial);
    match std::future::Future::poll(dial.as_mut(), &mut cx) {
        Poll::Ready(Err(e)) => assert!(e.to_string().contains("outside a task"), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }
}

/// A proxy as a straight line: each accepted client gets a task that dials
/// the upstream and copies lines both ways, in turn.
fn line_proxy<S: 'static>(ctx: &mut Ctx<S>, upstream: Addr) -> Addr {
    let front: AsyncListener =
        task::listen(ctx, &"127.0.0.1:0".parse().unwrap(), ListenConfig::default()).unwrap();
    let addr = front.local_addr().clone();
    ctx.spawn(async move {
        while let Ok(mut client) = front.accept().await {
            let upstream = Target::from(upstream.clone());
            task::spawn(async move {
                let Ok(mut up) = AsyncConn::connect(&upstream, ConnectConfig::default()).await else {
                    return;
                };
                let mut line = Vec::new();
                loop {
                    line.clear();
                    if client.read_line(&mut line).await.unwrap_or(0) == 0
                        || up.write_all(&line).await.is_err()
                    {
                        break;
                    }
                    line.clear();
                    if up.read_line(&mut line).await.unwrap_or(0) == 0
                        || client.write_all(&line).await.is_err()
                    {
                        break;
                    }
                }
            })
            .unwrap();
        }
    })
    .unwrap();
    addr
}

#[test]
fn a_proxy_task_dials_upstream_for_each_client() {
    let mut el = EventLoop::<()>::new().unwrap();
    let upstream = echo_server(&mut el);
    let front = line_proxy(&mut el, upstream);
    let replies = el
        .block_on(
            &mut (),
            task::timeout(LIMIT, async move {
                let mut replies = Vec::new();
                for i in 0..20 {
                    let lines = [format!("client {i} a\n"), format!("client {i} b\n")];
                    let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
                    replies.push(round_trip(front.clone().into(), &lines).await.unwrap());
                }
                replies
            }),
        )
        .unwrap()
        .expect("within the limit");
    for (i, got) in replies.iter().enumerate() {
        assert_eq!(got, format!("client {i} a\nclient {i} b\n").as_bytes());
    }
}

/// A connect whose future is dropped in the poll that asked for it (a
/// select that took another branch) dials nobody: the server never sees it.
#[test]
fn a_connect_dropped_before_it_started_dials_nobody() {
    let mut el = EventLoop::<()>::new().unwrap();
    let seen = std::rc::Rc::new(std::cell::Cell::new(0));
    let count = seen.clone();
    let server = evloop::net::listen(
        &mut el,
        &"127.0.0.1:0".parse().unwrap(),
        ListenConfig::default(),
        move |_, _, _, _| {
            count.set(count.get() + 1);
            None::<Never>
        },
    )
    .unwrap();
    let to = Target::from(server.addr.clone());
    el.block_on(&mut (), async {
        let mut dial = Box::pin(AsyncConn::connect(&to, ConnectConfig::default()));
        std::future::poll_fn(|cx| {
            assert!(dial.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        drop(dial);
        // A control connect that is kept: once it is accepted, the dropped
        // one would have been too.
        let _kept = AsyncConn::connect(&to, ConnectConfig::default()).await.unwrap();
        for _ in 0..50 {
            if seen.get() > 0 {
                break;
            }
            task::sleep(Duration::from_millis(5)).await;
        }
        for _ in 0..5 {
            task::yield_now().await;
        }
    })
    .unwrap();
    assert_eq!(seen.get(), 1, "only the kept connect reached the server");
}

/// A handler type for connections the test refuses at accept.
struct Never;

impl evloop::net::Handler<()> for Never {
    fn on_data(&mut self, _: &mut evloop::net::Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        data.len()
    }
}

/// Copy what `from` reads to `to` until the end of `from`'s input; then
/// `to` is dropped, which passes the end on (a FIN).
async fn copy(mut from: task::ReadHalf, mut to: task::WriteHalf) {
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

/// A byte proxy as two straight lines: each client's connection and its
/// upstream's are split, and a task copies each way.
fn byte_proxy<S: 'static>(ctx: &mut Ctx<S>, upstream: Addr) -> Addr {
    let front = task::listen(ctx, &"127.0.0.1:0".parse().unwrap(), ListenConfig::default()).unwrap();
    let addr = front.local_addr().clone();
    ctx.spawn(async move {
        while let Ok(client) = front.accept().await {
            let upstream = Target::from(upstream.clone());
            task::spawn_n(async move {
                let Ok(up) = AsyncConn::connect(&upstream, ConnectConfig::default()).await else {
                    return;
                };
                let (client_rx, client_tx) = client.into_split();
                let (up_rx, up_tx) = up.into_split();
                task::spawn_n(copy(client_rx, up_tx)).unwrap();
                copy(up_rx, client_tx).await;
            })
            .unwrap();
        }
    })
    .unwrap();
    addr
}

/// Through the split proxy, a client writes 4 MB while the echo comes back
/// (both ways at once, held to backpressure), then shuts its side: the
/// end travels to the upstream and back, and every byte arrives in order.
#[test]
fn a_split_connection_copies_both_ways_at_once_and_passes_the_end_on() {
    const SIZE: usize = 4 << 20;
    let mut el = EventLoop::<()>::new().unwrap();
    let upstream = echo_server(&mut el);
    let Addr::Tcp(front) = byte_proxy(&mut el, upstream) else {
        unreachable!()
    };
    let client = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(front).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut w = s.try_clone().unwrap();
        let data: Vec<u8> = (0..SIZE)
            .map(|i| if i % 61 == 60 { b'\n' } else { (i % 251) as u8 | 1 })
            .collect();
        let sent = data.clone();
        let writer = std::thread::spawn(move || {
            w.write_all(&sent).unwrap();
            w.shutdown(std::net::Shutdown::Write).unwrap();
        });
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        writer.join().unwrap();
        got == data
    });
    let start = std::time::Instant::now();
    while !client.is_finished() {
        assert!(start.elapsed() < LIMIT, "the proxy stalled");
        el.turn(&mut (), Some(Duration::from_millis(10))).unwrap();
    }
    assert!(client.join().unwrap(), "the bytes came back whole and in order");
}
