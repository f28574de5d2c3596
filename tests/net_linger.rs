//! Lingering close: a graceful close while the peer is still sending must
//! not destroy what the peer is owed. Without it, closing a socket with
//! unread input makes the kernel send a reset, and the peer loses the part
//! of the answer it had not read yet.

mod common_net;

use std::io::{Read, Write};
use std::time::Duration;

use common_net::{connect, random_bytes, read_to_eof, Server};
use evloop::net::{self, Conn, ConnConfig, Handler, ListenConfig};
use evloop::Ctx;

/// Answers the first bytes it gets with `answer`, then closes, while the
/// client keeps sending (a pipelining client behind `Connection: close`).
struct AnswerThenClose(Vec<u8>);

impl Handler<()> for AnswerThenClose {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        if !conn.is_closing() {
            conn.write(&self.0);
            conn.close();
        }
        data.len()
    }
}

fn server(answer: Vec<u8>, linger: Option<Duration>) -> Server<()> {
    Server::start((), move |el| {
        let cfg = ListenConfig {
            conn: ConnConfig {
                linger,
                max_queued: 8 << 20,
                ..ConnConfig::default()
            },
            ..ListenConfig::default()
        };
        let l = net::listen(el, &"127.0.0.1:0".parse()?, cfg, move |_, _, _, _| {
            Some(AnswerThenClose(answer.clone()))
        })?;
        Ok(l.addr)
    })
}

/// The client reads only after it has sent everything, so when the server
/// closes, its answer is still in flight and more requests are unread.
fn ask_while_sending(server: &Server<()>) -> std::io::Result<Vec<u8>> {
    let mut c = connect(server.tcp());
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        // Requests keep coming after the answer began; a reset may cut them.
        for chunk in random_bytes(1 << 20, 3).chunks(4096) {
            if w.write_all(chunk).is_err() {
                break;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(50));
    let got = read_to_eof(&mut c);
    writer.join().unwrap();
    got
}

#[test]
fn a_client_still_sending_gets_the_whole_answer() {
    let answer = random_bytes(4 << 20, 9);
    let server = server(answer.clone(), Some(Duration::from_secs(5)));
    for _ in 0..3 {
        let got = ask_while_sending(&server).expect("the answer, then EOF, no reset");
        assert_eq!(got.len(), answer.len());
        assert!(got == answer, "the answer's bytes differ");
    }
}

/// A peer that never sends its FIN is not waited for beyond the linger
/// time, on the loop's clock.
#[test]
fn lingering_ends_when_its_time_runs_out() {
    let clock = evloop::ManualClock::new();
    let server = Server::start_with(
        evloop::EventLoop::builder().clock(evloop::Clock::Manual(clock.clone())),
        (),
        |el| {
            let l = net::listen(
                el,
                &"127.0.0.1:0".parse()?,
                ListenConfig::default(),
                |_, _, _, _| Some(AnswerThenClose(b"bye".to_vec())),
            )?;
            Ok(l.addr)
        },
    );
    let mut c = connect(server.tcp());
    c.write_all(b"hi").unwrap();
    // The answer, then our FIN: the connection lingers, open, for our FIN.
    assert_eq!(read_to_eof(&mut c).unwrap(), b"bye");
    let lingering = server.call(|ctx, _| ctx.source_count());
    clock.advance(Duration::from_secs(4));
    assert_eq!(server.call(|ctx, _| ctx.source_count()), lingering);
    clock.advance(Duration::from_secs(1));
    assert!(common_net::wait_until(|| server
        .call(|ctx, _| ctx.source_count())
        == lingering - 1));
}

/// A lingering socket still holds its fd, so it still holds its place
/// under the listener's connection limit until it is dropped.
#[test]
fn lingering_sockets_count_under_max_connections() {
    let clock = evloop::ManualClock::new();
    let server = Server::start_with(
        evloop::EventLoop::builder().clock(evloop::Clock::Manual(clock.clone())),
        (),
        |el| {
            let cfg = ListenConfig {
                max_connections: Some(2),
                ..ListenConfig::default()
            };
            let l = net::listen(el, &"127.0.0.1:0".parse()?, cfg, |_, _, _, _| {
                Some(AnswerThenClose(b"bye".to_vec()))
            })?;
            Ok(l.addr)
        },
    );
    // Two clients are answered and closed; they keep the sockets lingering
    // (they never send their FIN).
    let mut kept = Vec::new();
    for _ in 0..2 {
        let mut c = connect(server.tcp());
        c.write_all(b"hi").unwrap();
        assert_eq!(read_to_eof(&mut c).unwrap(), b"bye");
        kept.push(c);
    }
    // A third is not accepted while they linger...
    let mut third = connect(server.tcp());
    third.write_all(b"hi").unwrap();
    third.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0; 3];
    assert!(third.read(&mut buf).is_err(), "served past the limit");
    // ...and is once their linger time has run out.
    clock.advance(Duration::from_secs(5));
    third.set_read_timeout(Some(common_net::WAIT)).unwrap();
    assert_eq!(read_to_eof(&mut third).unwrap(), b"bye");
}
