//! What a forwarder or a streaming server needs from the net layer: the
//! accepted connection's id in the accept callback, writes refused for room
//! without a close (`try_write`), the room-again signal (`has_room`,
//! `on_room`) to stream a reply larger than the queue's cap, shutting
//! another connection's write half, and an owned fd as a source other
//! handlers reach.

mod common_net;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use common_net::{connect, random_bytes, read_to_eof, wait_until, Server};
use evloop::net::{self, CloseReason, Conn, ConnConfig, Handler, ListenConfig, WriteError};
use evloop::{Action, Ctx, EventLoop, FdSource, Interest, SourceId};

/// Streams `total` bytes of a pattern once the client says anything,
/// writing while there is room and resuming in `on_room`.
struct Streamer {
    total: usize,
    sent: usize,
    pattern: Arc<Vec<u8>>,
    with_try_write: bool,
    refusals: Arc<Mutex<usize>>,
}

impl Streamer {
    fn pump(&mut self, conn: &mut Conn) {
        while self.sent < self.total {
            let end = (self.sent + 16 * 1024).min(self.total);
            let chunk = &self.pattern[self.sent..end];
            if self.with_try_write {
                match conn.try_write(chunk) {
                    Ok(()) => self.sent = end,
                    Err(WriteError::Full) => {
                        *self.refusals.lock().unwrap() += 1;
                        return; // on_room follows
                    }
                    Err(e) => panic!("refused while streaming: {e}"),
                }
            } else {
                assert!(conn.write(chunk));
                self.sent = end;
                if !conn.has_room() {
                    *self.refusals.lock().unwrap() += 1;
                    return;
                }
            }
        }
        conn.close();
    }
}

impl Handler<()> for Streamer {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        if self.sent == 0 {
            self.pump(conn);
        }
        data.len()
    }
    fn on_room(&mut self, conn: &mut Conn, _: &mut Ctx<()>, _: &mut ()) {
        self.pump(conn);
    }
    fn on_close(&mut self, _: &mut Conn, reason: CloseReason, _: &mut Ctx<()>, _: &mut ()) {
        assert_eq!(reason, CloseReason::Local, "the stream must end with our close");
    }
}

/// A reply 128 times the queue's cap reaches a prompt reader whole, by
/// either writing style, and the queue's cap is never passed.
#[test]
fn a_reply_larger_than_the_cap_streams_out_as_room_appears() {
    for with_try_write in [true, false] {
        // More than the kernel's socket buffers and the queue's cap hold.
        let total = 32 << 20;
        let pattern = Arc::new(random_bytes(total, 5));
        let refusals = Arc::new(Mutex::new(0));
        let (p, r) = (pattern.clone(), refusals.clone());
        let server = Server::start((), move |el| {
            let cfg = ListenConfig {
                conn: ConnConfig {
                    max_queued: 256 * 1024,
                    high_water: 128 * 1024,
                    low_water: 32 * 1024,
                    ..ConnConfig::default()
                },
                ..ListenConfig::default()
            };
            let l = net::listen(el, &"127.0.0.1:0".parse()?, cfg, move |_, _, _, _| {
                Some(Streamer {
                    total,
                    sent: 0,
                    pattern: p.clone(),
                    with_try_write,
                    refusals: r.clone(),
                })
            })?;
            Ok(l.addr)
        });
        let mut c = connect(server.tcp());
        c.write_all(b"go").unwrap();
        // Read only once the server has had to wait for room.
        assert!(
            wait_until(|| *refusals.lock().unwrap() > 0),
            "the stream never waited for room"
        );
        let got = read_to_eof(&mut c).unwrap();
        assert_eq!(got.len(), total);
        assert!(got == *pattern, "the streamed bytes differ");
    }
}

/// The accept callback is given the id the connection will have.
#[test]
fn the_accept_callback_knows_the_connection_id() {
    struct Check(SourceId, Arc<Mutex<Vec<bool>>>);
    impl Handler<()> for Check {
        fn on_open(&mut self, conn: &mut Conn, _: &mut Ctx<()>, _: &mut ()) {
            self.1.lock().unwrap().push(conn.id() == self.0);
            conn.write(b"ok");
            conn.close();
        }
        fn on_data(&mut self, _: &mut Conn, d: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
            d.len()
        }
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let server = Server::start((), move |el| {
        let l = net::listen(
            el,
            &"127.0.0.1:0".parse()?,
            ListenConfig::default(),
            move |_, id, ctx, _| {
                // Not reachable yet: the connection exists from `on_open` on.
                assert!(!net::write(ctx, id, b"early"));
                Some(Check(id, s.clone()))
            },
        )?;
        Ok(l.addr)
    });
    for _ in 0..3 {
        assert_eq!(read_to_eof(&mut connect(server.tcp())).unwrap(), b"ok");
    }
    assert!(wait_until(|| seen.lock().unwrap().len() == 3));
    assert_eq!(*seen.lock().unwrap(), [true, true, true]);
}

/// One connection's handler shuts another's write half: that peer sees
/// EOF and can still send.
#[test]
fn shutdown_write_reaches_another_connection() {
    /// The first connection waits; the second one's data shuts the first's
    /// write half and is echoed into it before that.
    struct Hub(Arc<Mutex<Vec<SourceId>>>, Arc<Mutex<Vec<u8>>>);
    impl Handler<()> for Hub {
        fn on_open(&mut self, conn: &mut Conn, _: &mut Ctx<()>, _: &mut ()) {
            self.0.lock().unwrap().push(conn.id());
        }
        fn on_data(&mut self, conn: &mut Conn, d: &[u8], ctx: &mut Ctx<()>, _: &mut ()) -> usize {
            let first = self.0.lock().unwrap()[0];
            if conn.id() == first {
                self.1.lock().unwrap().extend_from_slice(d);
            } else {
                assert!(net::write(ctx, first, d));
                assert!(net::shutdown_write(ctx, first));
            }
            d.len()
        }
    }
    let (ids, got) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
    let (i, g) = (ids.clone(), got.clone());
    let server = Server::start((), move |el| {
        let l = net::listen(
            el,
            &"127.0.0.1:0".parse()?,
            ListenConfig::default(),
            move |_, _, _, _| Some(Hub(i.clone(), g.clone())),
        )?;
        Ok(l.addr)
    });
    let mut first = connect(server.tcp());
    assert!(wait_until(|| ids.lock().unwrap().len() == 1));
    let mut second = connect(server.tcp());
    second.write_all(b"relayed").unwrap();
    let mut buf = Vec::new();
    first.read_to_end(&mut buf).unwrap();
    assert_eq!(buf, b"relayed", "then EOF");
    first.write_all(b"after").unwrap();
    assert!(wait_until(|| got.lock().unwrap().as_slice() == b"after"));
    second.shutdown(Shutdown::Both).unwrap();
}

/// An owned fd is a source as it is; a timer reaches it through the table.
#[test]
fn an_fd_source_is_reached_by_other_handlers() {
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let mut el = EventLoop::<Vec<u8>>::new().unwrap();
    let id = el
        .register(FdSource::new(a), Interest::READABLE, |_, _, _, _| Action::Keep)
        .unwrap();
    el.timer_after(std::time::Duration::ZERO, move |_, ctx, _| {
        let a = ctx.source_mut::<FdSource<UnixStream>>(id).expect("the source");
        a.write_all(b"from a timer").unwrap();
        ctx.close(id);
        ctx.stop();
    });
    let mut st = Vec::new();
    el.run(&mut st).unwrap();
    el.turn(&mut st, Some(std::time::Duration::ZERO)).unwrap();
    let mut buf = Vec::new();
    b.read_to_end(&mut buf).unwrap();
    assert_eq!(buf, b"from a timer", "then EOF: closing the source closed the fd");
}

/// A write the queue could never hold is refused as such, and no `on_room`
/// is owed for it; the connection stays usable.
#[test]
fn a_write_larger_than_the_cap_is_too_large_not_full() {
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    let server = Server::start((), move |el| {
        let cfg = ListenConfig {
            conn: ConnConfig {
                max_queued: 1024,
                ..ConnConfig::default()
            },
            ..ListenConfig::default()
        };
        let l = net::listen(el, &"127.0.0.1:0".parse()?, cfg, move |_, id, _, _| {
            *s.lock().unwrap() = Some(id);
            Some(common_net::Echo)
        })?;
        Ok(l.addr)
    });
    let mut c = connect(server.tcp());
    c.write_all(b"x").unwrap();
    let mut one = [0; 1];
    c.read_exact(&mut one).unwrap();
    let id = seen.lock().unwrap().expect("accepted");
    let got = server.call(move |ctx, _| (net::try_write(ctx, id, &[0; 2048]), net::try_write(ctx, id, b"y")));
    assert_eq!(got, (Err(WriteError::TooLarge), Ok(())));
    c.read_exact(&mut one).unwrap();
    assert_eq!(&one, b"y");
}
