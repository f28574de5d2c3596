//! One client's burst cannot hold up the others (issue 21, item 6): the
//! http and pubsub examples serve a pipeline of thousands of requests a
//! slice at a time, and a second client's request, sent after the burst,
//! is answered before the burst is through.
//!
//! The loop runs on the test's own thread, one `turn` at a time, and the
//! burst's answers are counted after every turn: the measure is how many of
//! them came before the second client's, not how long anything took.

// The http and pubsub examples each include examples/fair/mod.rs.
#![allow(clippy::duplicate_mod)]

#[path = "../examples/fair/mod.rs"]
mod fair;
#[path = "../examples/http.rs"]
#[allow(dead_code)]
mod http;
#[path = "../examples/pubsub.rs"]
#[allow(dead_code)]
mod pubsub;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use evloop::net::{Addr, Listening};
use evloop::{Ctx, EventLoop};

/// The most turns any test here runs (each polls for at most 10 ms).
const MAX_TURNS: usize = 20_000;

/// An example server on a loop that the test turns.
struct Turned<S: 'static> {
    el: EventLoop<S>,
    state: S,
    addr: SocketAddr,
}

impl<S: Default + 'static> Turned<S> {
    fn start(start: fn(&mut Ctx<S>, &Addr) -> io::Result<Listening>) -> Turned<S> {
        let mut el = EventLoop::<S>::new().unwrap();
        let listening = start(&mut el, &"127.0.0.1:0".parse().unwrap()).unwrap();
        let Addr::Tcp(addr) = listening.addr else {
            unreachable!("a TCP address was asked for")
        };
        Turned {
            el,
            state: S::default(),
            addr,
        }
    }

    fn turn(&mut self) {
        self.el
            .turn(&mut self.state, Some(Duration::from_millis(10)))
            .unwrap();
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_nonblocking(true).unwrap();
        s
    }

    /// Turn until `reader` holds `want` bytes in all; returns them.
    fn read_exactly(&mut self, reader: &mut TcpStream, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        for _ in 0..MAX_TURNS {
            drain(reader, &mut got);
            if got.len() >= want {
                return got;
            }
            self.turn();
        }
        panic!("only {} of {want} bytes came", got.len());
    }
}

/// Append what `s` has for us now, without blocking.
fn drain(s: &mut TcpStream, into: &mut Vec<u8>) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => into.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Write what of `data` the kernel takes now (the server is not reading:
/// the loop turns on this thread), then the rest from a thread of its own.
/// Returns that thread; `then` runs between the two, once the first part
/// is in the kernel, so whatever it sends arrives after it.
fn burst(s: &mut TcpStream, data: &[u8], then: impl FnOnce()) -> thread::JoinHandle<()> {
    let mut at = 0;
    while at < data.len() {
        match s.write(&data[at..]) {
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("write: {e}"),
        }
    }
    then();
    send_all(s, data[at..].to_vec())
}

/// Write `data` from a thread of its own (the loop runs on this one). The
/// socket stays non-blocking (its clone shares the flag with the reader's):
/// a full buffer is waited out a millisecond at a time, 20 s at most.
fn send_all(s: &TcpStream, data: Vec<u8>) -> thread::JoinHandle<()> {
    let mut s = s.try_clone().unwrap();
    thread::spawn(move || {
        if data.is_empty() {
            return;
        }
        let mut at = 0;
        for _ in 0..20_000 {
            match s.write(&data[at..]) {
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("write: {e}"),
            }
            if at == data.len() {
                return;
            }
        }
        panic!("wrote only {at} of {} bytes", data.len());
    })
}

/// The burst's client sends `burst` requests of the same shape, each
/// answered by `answer_len` bytes; then the other client sends `probe`,
/// answered by `probe_len` bytes that start with `probe_starts`. Returns how many burst answers had come when
/// the probe's did, checking that every burst answer comes in the end.
fn burst_then_probe<S: Default + 'static>(
    server: &mut Turned<S>,
    request: &[u8],
    burst: usize,
    answer_len: usize,
    other: &mut TcpStream,
    probe: &[u8],
    (probe_len, probe_starts): (usize, &[u8]),
) -> usize {
    // One request first, so the burst's connection is open and served.
    let mut flooder = server.connect();
    flooder.write_all(request).unwrap();
    assert_eq!(server.read_exactly(&mut flooder, answer_len).len(), answer_len);
    let writer = self::burst(&mut flooder, &request.repeat(burst), || {
        other.write_all(probe).unwrap()
    });
    let mut answers = Vec::new();
    let mut probe_got = Vec::new();
    let mut before = None;
    for _ in 0..MAX_TURNS {
        server.turn();
        drain(&mut flooder, &mut answers);
        drain(other, &mut probe_got);
        if before.is_none() && probe_got.len() >= probe_len {
            assert_eq!(probe_got.len(), probe_len);
            assert!(probe_got.starts_with(probe_starts), "{probe_got:?}");
            before = Some(answers.len() / answer_len);
        }
        if before.is_some() && answers.len() >= burst * answer_len {
            break;
        }
    }
    writer.join().unwrap();
    let before = before.expect("the probe was never answered");
    assert_eq!(
        answers.len(),
        burst * answer_len,
        "the burst was not answered whole"
    );
    before
}

#[test]
fn pubsub_serves_others_between_slices_of_a_burst() {
    let mut server = Turned::start(pubsub::start);
    let mut other = server.connect();
    other.write_all(b"SUB probe\n").unwrap();
    assert_eq!(server.read_exactly(&mut other, 3), b"OK\n");
    // A publish to a topic nobody reads: one unit of work each.
    const BURST: usize = 8 * fair::SLICE;
    let before = burst_then_probe(
        &mut server,
        b"PUB nobody\n",
        BURST,
        b"OK 0\n".len(),
        &mut other,
        b"PUB probe hi\n",
        (18, b"MSG probe hi\nOK 1\n"),
    );
    // The burst was ready first, so it may be served first: one slice in
    // the turn the probe came, one more if the probe came a turn late.
    // (Without slices the first turn answers all that one dispatch reads:
    // 256 KiB, 23,831 of these publishes.)
    assert!(
        before <= 2 * fair::SLICE,
        "{before} of {BURST} burst answers came before the other client's"
    );
}

#[test]
fn pubsub_fan_out_counts_against_the_slice() {
    let mut server = Turned::start(pubsub::start);
    // Sixteen subscribers of one topic: each publish is 17 units of work.
    let mut subs: Vec<TcpStream> = (0..16).map(|_| server.connect()).collect();
    for s in &mut subs {
        s.write_all(b"SUB wide\n").unwrap();
        assert_eq!(server.read_exactly(s, 3), b"OK\n");
    }
    let mut other = server.connect();
    other.write_all(b"SUB probe\n").unwrap();
    assert_eq!(server.read_exactly(&mut other, 3), b"OK\n");
    let mut delivered = vec![Vec::new(); subs.len()];
    const BURST: usize = fair::SLICE;
    let mut flooder = server.connect();
    flooder.write_all(b"PUB wide x\n").unwrap();
    server.read_exactly(&mut flooder, b"OK 16\n".len());
    for (s, got) in subs.iter_mut().zip(&mut delivered) {
        *got = server.read_exactly(s, b"MSG wide x\n".len());
        got.clear();
    }
    let writer = burst(&mut flooder, &b"PUB wide x\n".repeat(BURST), || {
        other.write_all(b"PUB probe hi\n").unwrap()
    });
    let (mut answers, mut probe_got, mut before) = (Vec::new(), Vec::new(), None);
    for _ in 0..MAX_TURNS {
        server.turn();
        drain(&mut flooder, &mut answers);
        drain(&mut other, &mut probe_got);
        for (s, got) in subs.iter_mut().zip(&mut delivered) {
            drain(s, got);
        }
        if before.is_none() && probe_got.len() >= 18 {
            assert_eq!(&probe_got[..], b"MSG probe hi\nOK 1\n");
            before = Some(answers.len() / b"OK 16\n".len());
        }
        if before.is_some() && delivered.iter().all(|d| d.len() == BURST * b"MSG wide x\n".len()) {
            break;
        }
    }
    writer.join().unwrap();
    let before = before.expect("the probe was never answered");
    let per_slice = fair::SLICE / 17 + 1;
    assert!(
        before <= 2 * per_slice,
        "{before} of {BURST} publishes to 16 subscribers came before the other client's"
    );
    assert!(delivered.iter().all(|d| d.len() == BURST * b"MSG wide x\n".len()));
}

#[test]
fn http_serves_others_between_slices_of_a_pipeline() {
    let mut server = Turned::start(http::start);
    let mut other = server.connect();
    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    // Learn the response's length (the Date header has a fixed width).
    other.write_all(REQUEST).unwrap();
    let mut first = Vec::new();
    for _ in 0..MAX_TURNS {
        server.turn();
        drain(&mut other, &mut first);
        if first.ends_with(b"Hello, World!") {
            break;
        }
    }
    assert!(first.ends_with(b"Hello, World!"), "{first:?}");
    let answer_len = first.len();
    // 8 slices of requests: more than one dispatch's read budget, too
    // (without slices the first turn answers 256 KiB of them: 9,709).
    const BURST: usize = 8 * fair::SLICE;
    let before = burst_then_probe(
        &mut server,
        REQUEST,
        BURST,
        answer_len,
        &mut other,
        REQUEST,
        (answer_len, b"HTTP/1.1 200 OK\r\n"),
    );
    assert!(
        before <= 2 * fair::SLICE,
        "{before} of {BURST} pipelined answers came before the other client's"
    );
}
