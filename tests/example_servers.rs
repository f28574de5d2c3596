//! The kv, http and pubsub examples, run in-process on a port-0 loop on a
//! thread and driven by small blocking clients written here.
//!
//! Each example file is included whole as a module (its `main` goes unused):
//! the test runs the very `start` function the example's `main` calls.

// The http and pubsub examples each include examples/fair/mod.rs.
#![allow(clippy::duplicate_mod)]

#[path = "../examples/http.rs"]
#[allow(dead_code)]
mod http;
#[path = "../examples/kv.rs"]
#[allow(dead_code)]
mod kv;
#[path = "../examples/pubsub.rs"]
#[allow(dead_code)]
mod pubsub;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use evloop::net::{Addr, Listening};
use evloop::{Ctx, EventLoop, Remote};

/// No read in these tests waits longer than this.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A server running on its own thread; stopped and joined on drop.
struct Server<S: 'static> {
    addr: SocketAddr,
    remote: Remote<S>,
    thread: Option<JoinHandle<()>>,
}

fn serve<S: Default + 'static>(start: fn(&mut Ctx<S>, &Addr) -> io::Result<Listening>) -> Server<S> {
    let (tx, rx) = mpsc::channel();
    let thread = thread::spawn(move || {
        let mut el = EventLoop::<S>::new().unwrap();
        let listening = start(&mut el, &"127.0.0.1:0".parse().unwrap()).unwrap();
        let Addr::Tcp(addr) = listening.addr else {
            unreachable!("a TCP address was asked for")
        };
        tx.send((addr, el.remote().unwrap())).unwrap();
        el.run(&mut S::default()).unwrap();
    });
    let (addr, remote) = rx.recv().expect("the server thread started");
    Server {
        addr,
        remote,
        thread: Some(thread),
    }
}

impl<S> Server<S> {
    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        s.set_write_timeout(Some(TIMEOUT)).unwrap();
        s
    }
}

impl<S> Drop for Server<S> {
    fn drop(&mut self) {
        self.remote.stop();
        if let Some(t) = self.thread.take() {
            let result = t.join();
            if !thread::panicking() {
                result.expect("the server thread panicked");
            }
        }
    }
}

/// Read until EOF (or a reset); true if the peer closed within the timeout.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

// ---------------------------------------------------------------- kv ----

/// A RESP2 reply.
#[derive(Debug, PartialEq, Eq)]
enum Value {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Value>),
}

fn ok() -> Value {
    Value::Simple("OK".into())
}

fn int(n: i64) -> Value {
    Value::Int(n)
}

fn bulk(s: &str) -> Value {
    Value::Bulk(Some(s.as_bytes().to_vec()))
}

fn nil() -> Value {
    Value::Bulk(None)
}

/// The tiny RESP client.
struct Resp {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Resp {
    fn connect<S>(server: &Server<S>) -> Resp {
        let s = server.connect();
        Resp {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    fn encode(args: &[&str]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
        }
        out
    }

    fn cmd(&mut self, args: &[&str]) -> Value {
        self.w.write_all(&Self::encode(args)).unwrap();
        self.read()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        assert!(
            line.ends_with("\r\n"),
            "reply line {line:?} is not CRLF-terminated"
        );
        line.truncate(line.len() - 2);
        line
    }

    fn read(&mut self) -> Value {
        let line = self.line();
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Value::Simple(rest.into()),
            "-" => Value::Error(rest.into()),
            ":" => Value::Int(rest.parse().unwrap()),
            "$" if rest == "-1" => Value::Bulk(None),
            "$" => {
                let mut data = vec![0; rest.parse::<usize>().unwrap() + 2];
                self.r.read_exact(&mut data).unwrap();
                assert_eq!(&data[data.len() - 2..], b"\r\n");
                data.truncate(data.len() - 2);
                Value::Bulk(Some(data))
            }
            "*" => {
                let n: usize = rest.parse().unwrap();
                Value::Array((0..n).map(|_| self.read()).collect())
            }
            _ => panic!("not a RESP reply: {line:?}"),
        }
    }
}

#[test]
fn kv_strings_counters_and_multi_key_commands() {
    let server = serve(kv::start);
    let mut c = Resp::connect(&server);
    assert_eq!(c.cmd(&["PING"]), Value::Simple("PONG".into()));
    assert_eq!(c.cmd(&["ping", "hi"]), bulk("hi"));
    assert_eq!(c.cmd(&["SET", "k", "v"]), ok());
    assert_eq!(c.cmd(&["GET", "k"]), bulk("v"));
    assert_eq!(c.cmd(&["GET", "missing"]), nil());
    assert_eq!(c.cmd(&["SET", "k", "longer value"]), ok());
    assert_eq!(c.cmd(&["get", "k"]), bulk("longer value"));

    assert_eq!(c.cmd(&["INCR", "n"]), int(1));
    assert_eq!(c.cmd(&["INCR", "n"]), int(2));
    assert_eq!(c.cmd(&["INCRBY", "n", "40"]), int(42));
    assert_eq!(c.cmd(&["DECR", "n"]), int(41));
    assert_eq!(c.cmd(&["GET", "n"]), bulk("41"));
    assert!(matches!(c.cmd(&["INCR", "k"]), Value::Error(e) if e.contains("not an integer")));
    assert_eq!(c.cmd(&["SET", "max", &i64::MAX.to_string()]), ok());
    assert!(matches!(c.cmd(&["INCR", "max"]), Value::Error(e) if e.contains("overflow")));

    assert_eq!(c.cmd(&["MSET", "a", "1", "b", "2"]), ok());
    assert_eq!(
        c.cmd(&["MGET", "a", "b", "nope"]),
        Value::Array(vec![bulk("1"), bulk("2"), nil()])
    );
    assert_eq!(c.cmd(&["EXISTS", "a", "b", "nope", "a"]), int(3));
    assert_eq!(c.cmd(&["DEL", "a", "b", "nope"]), int(2));
    assert_eq!(c.cmd(&["EXISTS", "a"]), int(0));
    assert_eq!(c.cmd(&["DBSIZE"]), int(3)); // k, n, max

    assert_eq!(c.cmd(&["SET", "once", "1", "NX"]), ok());
    assert_eq!(c.cmd(&["SET", "once", "2", "NX"]), nil());
    assert_eq!(c.cmd(&["SET", "absent", "1", "XX"]), nil());
    assert_eq!(c.cmd(&["SET", "once", "3", "XX", "GET"]), bulk("1"));
    assert_eq!(c.cmd(&["GET", "once"]), bulk("3"));

    assert!(matches!(c.cmd(&["GET"]), Value::Error(e) if e.contains("wrong number of arguments")));
    assert!(matches!(c.cmd(&["MSET", "a"]), Value::Error(_)));
    assert!(matches!(c.cmd(&["SET", "a", "b", "BOGUS"]), Value::Error(e) if e.contains("syntax")));
    assert!(matches!(c.cmd(&["NOSUCH"]), Value::Error(e) if e.contains("unknown command")));
    assert_eq!(c.cmd(&["FLUSHALL"]), ok());
    assert_eq!(c.cmd(&["DBSIZE"]), int(0));
}

#[test]
fn kv_expiry_on_loop_timers() {
    let server = serve(kv::start);
    let mut c = Resp::connect(&server);
    assert_eq!(c.cmd(&["SET", "k", "v"]), ok());
    assert_eq!(c.cmd(&["TTL", "k"]), int(-1));
    assert_eq!(c.cmd(&["TTL", "missing"]), int(-2));
    assert_eq!(c.cmd(&["EXPIRE", "k", "100"]), int(1));
    assert!(matches!(c.cmd(&["TTL", "k"]), Value::Int(99..=100)));
    assert!(matches!(c.cmd(&["PTTL", "k"]), Value::Int(99_000..=100_000)));
    assert_eq!(c.cmd(&["EXPIRE", "missing", "100"]), int(0));
    assert_eq!(c.cmd(&["PERSIST", "k"]), int(1));
    assert_eq!(c.cmd(&["TTL", "k"]), int(-1));
    assert_eq!(c.cmd(&["SET", "k", "v", "EX", "50"]), ok());
    assert_eq!(c.cmd(&["SET", "k", "w"]), ok());
    assert_eq!(c.cmd(&["TTL", "k"]), int(-1), "a plain SET drops the TTL");
    assert_eq!(c.cmd(&["SET", "k", "v", "EX", "50"]), ok());
    assert_eq!(c.cmd(&["INCR", "c"]), int(1));
    assert_eq!(c.cmd(&["EXPIRE", "c", "60"]), int(1));
    assert_eq!(c.cmd(&["INCR", "c"]), int(2));
    assert!(
        matches!(c.cmd(&["TTL", "c"]), Value::Int(59..=60)),
        "INCR keeps the TTL"
    );
    assert_eq!(c.cmd(&["EXPIRE", "c", "0"]), int(1), "a TTL of zero deletes");
    assert_eq!(c.cmd(&["GET", "c"]), nil());
    assert!(matches!(c.cmd(&["SET", "x", "1", "EX", "0"]), Value::Error(_)));
    assert!(matches!(c.cmd(&["SET", "x", "1", "PX", "soon"]), Value::Error(_)));

    // A short real expiry: the key's timer removes it (DBSIZE does not look
    // at TTLs, so it only drops once the timer has fired).
    assert_eq!(c.cmd(&["SET", "tmp", "x", "PX", "50"]), ok());
    assert!(matches!(c.cmd(&["PTTL", "tmp"]), Value::Int(1..=50)));
    assert_eq!(c.cmd(&["DBSIZE"]), int(2));
    let start = Instant::now();
    while c.cmd(&["DBSIZE"]) != int(1) {
        assert!(start.elapsed() < TIMEOUT, "the expiry timer never fired");
        thread::sleep(Duration::from_millis(10));
    }
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert_eq!(c.cmd(&["GET", "tmp"]), nil());
    assert_eq!(c.cmd(&["TTL", "tmp"]), int(-2));
    assert_eq!(c.cmd(&["GET", "k"]), bulk("v"));

    // Re-setting a key before its timer fires must not let the old timer
    // delete the new value.
    assert_eq!(c.cmd(&["SET", "re", "old", "PX", "30"]), ok());
    assert_eq!(c.cmd(&["DEL", "re"]), int(1));
    assert_eq!(c.cmd(&["SET", "re", "new"]), ok());
    thread::sleep(Duration::from_millis(80));
    assert_eq!(c.cmd(&["GET", "re"]), bulk("new"));
}

#[test]
fn kv_pipelining_inline_and_tool_handshakes() {
    let server = serve(kv::start);
    let mut c = Resp::connect(&server);
    // 100 commands in one write; 100 replies in order.
    let mut batch = Vec::new();
    for _ in 0..100 {
        batch.extend_from_slice(&Resp::encode(&["INCR", "p"]));
        batch.extend_from_slice(&Resp::encode(&["GET", "p"]));
    }
    c.w.write_all(&batch).unwrap();
    for i in 1..=100 {
        assert_eq!(c.read(), int(i));
        assert_eq!(c.read(), bulk(&i.to_string()));
    }
    // A command split across two writes is answered once it is whole.
    let cmd = Resp::encode(&["SET", "split", "value"]);
    c.w.write_all(&cmd[..7]).unwrap();
    thread::sleep(Duration::from_millis(20));
    c.w.write_all(&cmd[7..]).unwrap();
    assert_eq!(c.read(), ok());
    // Inline commands, as telnet and redis-cli --pipe send them.
    c.w.write_all(b"SET inline \"two words\"\r\nGET inline\nPING\r\n")
        .unwrap();
    assert_eq!(c.read(), ok());
    assert_eq!(c.read(), bulk("two words"));
    assert_eq!(c.read(), Value::Simple("PONG".into()));
    // What redis-cli and redis-benchmark ask on connect.
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "save"]),
        Value::Array(vec![bulk("save"), bulk("")])
    );
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "appendonly"]),
        Value::Array(vec![bulk("appendonly"), bulk("no")])
    );
    assert_eq!(c.cmd(&["COMMAND", "DOCS"]), Value::Array(vec![]));
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "test"]), ok());
    assert_eq!(c.cmd(&["CLIENT", "SETINFO", "lib-name", "x"]), ok());
    assert_eq!(c.cmd(&["SELECT", "0"]), ok());
    assert!(matches!(c.cmd(&["SELECT", "1"]), Value::Error(_)));
    assert_eq!(c.cmd(&["ECHO", "bye"]), bulk("bye"));
    assert_eq!(c.cmd(&["QUIT"]), ok());
    assert!(closed_by_peer(&mut c.w));
}

#[test]
fn kv_protocol_errors_close_the_connection() {
    let server = serve(kv::start);
    for (bad, text) in [
        (&b"*1\r\n:5\r\n"[..], "expected '$', got ':'"),
        (b"*-0\r\n", "invalid multibulk length"),
        (b"*1\r\n$-3\r\n", "invalid bulk length"),
        (b"*1\r\n$999999999999\r\n", "invalid bulk length"),
        (b"SET \"unbalanced\r\n", "unbalanced quotes in request"),
    ] {
        let mut c = Resp::connect(&server);
        c.w.write_all(bad).unwrap();
        assert_eq!(
            c.read(),
            Value::Error(format!("ERR Protocol error: {text}")),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
        assert!(closed_by_peer(&mut c.w));
    }
    // What Redis lets pass: an empty or negative count, unread line ends.
    let mut c = Resp::connect(&server);
    c.w.write_all(b"*0\r\n*-5\r\n*1\r\n$4\r\nPINGxx").unwrap();
    assert_eq!(c.read(), Value::Simple("PONG".into()));
    // Replies to the commands before the bad one still arrive, in order.
    let mut c = Resp::connect(&server);
    c.w.write_all(b"PING\r\n*1\r\n$4\r\nPING\r\n*1\r\n?\r\n").unwrap();
    assert_eq!(c.read(), Value::Simple("PONG".into()));
    assert_eq!(c.read(), Value::Simple("PONG".into()));
    assert!(matches!(c.read(), Value::Error(_)));
    assert!(closed_by_peer(&mut c.w));
    // And the server is still serving.
    assert_eq!(
        Resp::connect(&server).cmd(&["PING"]),
        Value::Simple("PONG".into())
    );
}

// -------------------------------------------------------------- http ----

/// One response: status code, headers (lowercased names), body.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Read one response; `head_only` for the answer to a HEAD request.
fn read_response(r: &mut BufReader<TcpStream>, head_only: bool) -> Response {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = line.split(' ').nth(1).expect("a status line").parse().unwrap();
    assert!(line.starts_with("HTTP/1.1 "), "{line:?}");
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        let l = line.trim_end_matches("\r\n");
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':').expect("a header line");
        headers.push((name.to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut resp = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if !head_only {
        let len: usize = resp
            .header("content-length")
            .expect("Content-Length")
            .parse()
            .unwrap();
        resp.body = vec![0; len];
        r.read_exact(&mut resp.body).unwrap();
    }
    resp
}

fn http_client(server: &Server<http::Http>) -> (TcpStream, BufReader<TcpStream>) {
    let s = server.connect();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

#[test]
fn http_pipelined_requests_answered_in_order() {
    let server = serve(http::start);
    let (mut w, mut r) = http_client(&server);
    // 16 requests in one write: GETs and HEADs alternate (HEAD answers have
    // no body, so the order is visible), and a POST with a body sits among them.
    let mut batch = Vec::new();
    let mut heads = Vec::new();
    for i in 0..16 {
        let head_only = i % 2 == 1;
        heads.push(head_only);
        match i {
            5 => batch.extend_from_slice(b"HEAD /5 HTTP/1.1\r\nHost: t\r\n\r\n"),
            8 => batch
                .extend_from_slice(b"POST /8 HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n0123456789"),
            _ if head_only => {
                batch.extend_from_slice(format!("HEAD /{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            }
            _ => batch.extend_from_slice(format!("GET /{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes()),
        }
    }
    w.write_all(&batch).unwrap();
    for (i, &head_only) in heads.iter().enumerate() {
        let resp = read_response(&mut r, head_only);
        assert_eq!(resp.status, 200, "response {i}");
        assert_eq!(resp.header("content-length"), Some("13"));
        assert_eq!(resp.header("content-type"), Some("text/plain"));
        assert_eq!(resp.header("date").map(str::len), Some(29));
        assert_eq!(resp.header("connection"), None);
        let expected: &[u8] = if head_only { b"" } else { b"Hello, World!" };
        assert_eq!(resp.body, expected, "response {i}");
    }
    // Still open: a request split into pieces, with a chunked body.
    let req = b"PUT /c HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n0\r\n\r\n";
    for piece in req.chunks(9) {
        w.write_all(piece).unwrap();
        thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(read_response(&mut r, false).body, b"Hello, World!");
    // Connection: close is honoured after the response.
    w.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut r, false);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(closed_by_peer(&mut w));
}

#[test]
fn http_10_closes_unless_keep_alive() {
    let server = serve(http::start);
    let (mut w, mut r) = http_client(&server);
    w.write_all(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let resp = read_response(&mut r, false);
    assert_eq!(resp.header("connection"), Some("keep-alive"));
    w.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut r, false).status, 200);
    assert!(closed_by_peer(&mut w));
}

#[test]
fn http_malformed_request_gets_400_and_close() {
    let server = serve(http::start);
    let (mut w, mut r) = http_client(&server);
    // A good request first, then garbage: the good one is answered.
    w.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut r, false).status, 200);
    let resp = read_response(&mut r, false);
    assert_eq!(resp.status, 400);
    assert_eq!(resp.header("connection"), Some("close"));
    assert!(closed_by_peer(&mut w));

    let (mut w, mut r) = http_client(&server);
    w.write_all(b"NOT HTTP AT ALL\r\n").unwrap();
    assert_eq!(read_response(&mut r, false).status, 400);
    assert!(closed_by_peer(&mut w));
}

#[test]
fn http_oversized_head_gets_431_and_close() {
    let server = serve(http::start);
    let (mut w, mut r) = http_client(&server);
    let mut req = b"GET / HTTP/1.1\r\nHost: t\r\n".to_vec();
    while req.len() < 9 * 1024 {
        req.extend_from_slice(b"X-Filler: 0123456789abcdef\r\n");
    }
    w.write_all(&req).unwrap();
    let resp = read_response(&mut r, false);
    assert_eq!(resp.status, 431);
    assert!(closed_by_peer(&mut w));
}

// ------------------------------------------------------------ pubsub ----

/// A line-protocol client of the broker.
struct Line {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Line {
    fn connect(s: TcpStream) -> Line {
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        Line {
            r: BufReader::with_capacity(256 * 1024, s.try_clone().unwrap()),
            w: s,
        }
    }

    fn send(&mut self, line: &str) {
        self.w.write_all(line.as_bytes()).unwrap();
        self.w.write_all(b"\n").unwrap();
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "incomplete line {line:?}");
        line.pop();
        line
    }

    fn subscribe(&mut self, topic: &str) {
        self.send(&format!("SUB {topic}"));
        assert_eq!(self.line(), "OK");
    }

    /// Subscribe to `k{i}` for each `i` in `range`, in one pipeline.
    fn subscribe_numbered(&mut self, range: std::ops::Range<usize>) {
        let batch: String = range.clone().map(|i| format!("SUB k{i}\n")).collect();
        self.w.write_all(batch.as_bytes()).unwrap();
        for i in range {
            assert_eq!(self.line(), "OK", "SUB k{i}");
        }
    }
}

#[test]
fn pubsub_fans_out_in_publish_order() {
    let server = serve(pubsub::start);
    let mut subs: Vec<Line> = (0..3).map(|_| Line::connect(server.connect())).collect();
    for s in &mut subs {
        s.subscribe("news");
    }
    let mut other = Line::connect(server.connect());
    other.subscribe("sports");
    let mut publisher = Line::connect(server.connect());
    let mut batch = String::new();
    for i in 0..200 {
        batch.push_str(&format!("PUB news message {i} with spaces\r\n"));
    }
    publisher.w.write_all(batch.as_bytes()).unwrap();
    for _ in 0..200 {
        assert_eq!(publisher.line(), "OK 3");
    }
    for s in &mut subs {
        for i in 0..200 {
            assert_eq!(s.line(), format!("MSG news message {i} with spaces"));
        }
    }
    // Unsubscribing and closing both take a subscriber off the topic.
    subs[0].send("UNSUB news");
    assert_eq!(subs[0].line(), "OK");
    drop(subs.pop());
    let start = Instant::now();
    let mut published = 0;
    loop {
        publisher.send("PUB news after");
        published += 1;
        match publisher.line().as_str() {
            "OK 1" => break,
            "OK 2" => {} // the broker has not seen the close yet
            other => panic!("unexpected {other:?}"),
        }
        assert!(start.elapsed() < TIMEOUT);
        thread::sleep(Duration::from_millis(5));
    }
    // The remaining subscriber got every one of them; the other topic nothing.
    for _ in 0..published {
        assert_eq!(subs[1].line(), "MSG news after");
    }
    publisher.send("PUB sports goal");
    assert_eq!(publisher.line(), "OK 1");
    assert_eq!(other.line(), "MSG sports goal");
    publisher.send("HELLO");
    assert!(publisher.line().starts_with("ERR"));
}

#[test]
fn pubsub_cuts_off_a_subscriber_that_never_reads() {
    let server = serve(pubsub::start);
    // The stuck subscriber: a small receive buffer, so the broker's queue for
    // it fills without many megabytes of kernel buffering first.
    let stuck = {
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(16 * 1024).unwrap();
        sock.connect(&server.addr.into()).unwrap();
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        TcpStream::from(sock)
    };
    let mut stuck = Line::connect(stuck);
    stuck.subscribe("t");

    const MESSAGES: usize = 12 * 1024;
    let payload = "x".repeat(1000);
    // Two subscribers that read everything, on their own threads.
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let mut sub = Line::connect(server.connect());
            sub.subscribe("t");
            let payload = payload.clone();
            thread::spawn(move || {
                for i in 0..MESSAGES {
                    assert_eq!(sub.line(), format!("MSG t {i} {payload}"), "fast subscriber");
                }
            })
        })
        .collect();

    // Publish 12 MiB (several times what kernel buffers hold) in batches of 64 messages, reading the acknowledgements.
    let mut publisher = Line::connect(server.connect());
    let mut cut_at = None;
    for batch in 0..MESSAGES / 64 {
        let mut lines = String::new();
        for i in batch * 64..(batch + 1) * 64 {
            lines.push_str(&format!("PUB t {i} {payload}\n"));
        }
        publisher.w.write_all(lines.as_bytes()).unwrap();
        for i in batch * 64..(batch + 1) * 64 {
            match publisher.line().as_str() {
                "OK 3" => assert!(cut_at.is_none(), "a cut-off subscriber came back"),
                "OK 2" => {
                    cut_at.get_or_insert(i);
                }
                other => panic!("message {i}: {other:?}"),
            }
        }
    }
    let cut_at = cut_at.expect("the stuck subscriber was never cut off");
    assert!(
        cut_at > 1000,
        "cut off after {cut_at} messages: too early for a 1 MiB queue"
    );
    for r in readers {
        r.join()
            .expect("a reading subscriber missed or reordered messages");
    }

    // The stuck subscriber got an in-order prefix, then the close.
    let mut got = 0;
    loop {
        let mut line = String::new();
        match stuck.r.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) if line.ends_with('\n') => {
                assert_eq!(line, format!("MSG t {got} {payload}\n"));
                got += 1;
            }
            Ok(_) => break, // a torn last line
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the stuck subscriber was not closed: {e}"),
        }
    }
    assert!(got < MESSAGES && got <= cut_at, "got {got}, cut at {cut_at}");
}

#[test]
fn pubsub_subscribers_leave_from_anywhere_in_a_topic() {
    let server = serve(pubsub::start);
    let mut subs: Vec<Line> = (0..4).map(|_| Line::connect(server.connect())).collect();
    for s in &mut subs {
        s.subscribe("t");
    }
    // One in the middle leaves (the last takes its place), one closes.
    subs[1].send("UNSUB t");
    assert_eq!(subs[1].line(), "OK");
    subs[1].send("UNSUB t");
    assert_eq!(subs[1].line(), "OK", "a second UNSUB is a no-op");
    let mut publisher = Line::connect(server.connect());
    publisher.send("PUB t one");
    assert_eq!(publisher.line(), "OK 3");
    for i in [0, 2, 3] {
        assert_eq!(subs[i].line(), "MSG t one");
    }
    subs[0].send("SUB t");
    assert_eq!(subs[0].line(), "OK", "a second SUB is a no-op");
    publisher.send("PUB t two");
    assert_eq!(publisher.line(), "OK 3", "subscribed once, delivered once");
    for i in [0, 2, 3] {
        assert_eq!(subs[i].line(), "MSG t two");
    }
    // One connection holds 10,000 topics (its most), then goes: every one
    // is freed.
    let mut many = Line::connect(server.connect());
    many.subscribe_numbered(0..10_000);
    publisher.send("PUB k9999 x");
    assert_eq!(publisher.line(), "OK 1");
    assert_eq!(many.line(), "MSG k9999 x");
    drop(many);
    let start = Instant::now();
    loop {
        publisher.send("PUB k0 x");
        match publisher.line().as_str() {
            "OK 0" => break,
            "OK 1" => {} // the close is not seen yet
            other => panic!("unexpected {other:?}"),
        }
        assert!(start.elapsed() < TIMEOUT);
        thread::sleep(Duration::from_millis(5));
    }
    publisher.send("PUB k1234 x");
    assert_eq!(publisher.line(), "OK 0");
}

#[test]
fn pubsub_bounds_what_a_client_subscribes_to() {
    let server = serve(pubsub::start);
    let mut client = Line::connect(server.connect());
    // A topic name of 256 bytes is taken, one of 257 refused (SUB, UNSUB
    // and PUB alike), and the connection stays.
    let longest = "t".repeat(256);
    client.subscribe(&longest);
    let too_long = "t".repeat(257);
    let commands = [
        format!("SUB {too_long}"),
        format!("UNSUB {too_long}"),
        format!("PUB {too_long} x"),
    ];
    for command in &commands {
        client.send(command);
        assert_eq!(client.line(), "ERR topic longer than 256 bytes", "{command:.6}");
    }
    // 10,000 subscriptions, then no more, until one is given up.
    client.subscribe_numbered(1..10_000);
    client.send("SUB one-too-many");
    assert_eq!(client.line(), "ERR too many subscriptions (at most 10000)");
    client.send("SUB k1");
    assert_eq!(
        client.line(),
        "OK",
        "subscribing again to a topic it has is a no-op"
    );
    client.send("UNSUB k1");
    assert_eq!(client.line(), "OK");
    client.subscribe("one-more");
    let mut publisher = Line::connect(server.connect());
    publisher.send(&format!("PUB {longest} hello"));
    assert_eq!(publisher.line(), "OK 1");
    assert_eq!(client.line(), format!("MSG {longest} hello"));
    publisher.send("PUB one-too-many x");
    assert_eq!(publisher.line(), "OK 0");
}

/// A client subscribed to its own topic pipelines 40 publishes of 1 KB in
/// one read: more than its 16 KiB queue, so the rest of its messages and
/// replies wait in the broker's backlog for it. Then it ends its session,
/// by a line over 64 KiB or by shutting its write half: everything the
/// broker answered before must still reach it, in order, before the ERR
/// and the close.
fn own_backlog_is_sent_before_the_end(end_with_long_line: bool) {
    let server = serve(pubsub::start);
    let s = server.connect();
    let mut r = BufReader::with_capacity(1 << 20, s.try_clone().unwrap());
    let mut w = s;
    w.write_all(b"SUB t\n").unwrap();
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "OK\n");
    let payload = "x".repeat(1000);
    let mut batch = Vec::new();
    for i in 0..40 {
        batch.extend_from_slice(format!("PUB t {i} {payload}\n").as_bytes());
    }
    if end_with_long_line {
        batch.extend(std::iter::repeat(b'a').take(70 * 1024));
    }
    let reader = thread::spawn(move || {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return lines,
                Ok(_) => lines.push(line),
            }
        }
    });
    // Hold the loop while the batch lands in the kernel, so that one
    // dispatch reads it whole.
    let (held_tx, held_rx) = mpsc::channel();
    server
        .remote
        .post(move |_, _| {
            held_tx.send(()).unwrap();
            thread::sleep(Duration::from_millis(200));
        })
        .unwrap();
    held_rx.recv().unwrap();
    let _ = w.write_all(&batch); // the broker may close before all of it is read
    if !end_with_long_line {
        w.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let got = reader.join().unwrap();
    let mut want = Vec::new();
    for i in 0..40 {
        want.push(format!("MSG t {i} {payload}\n"));
        want.push("OK 1\n".to_string());
    }
    if end_with_long_line {
        want.push("ERR line too long\n".to_string());
    }
    let short = |v: &[String]| {
        v.iter()
            .map(|l| l[..l.len().min(12)].to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(short(&got), short(&want), "{} lines received", got.len());
}

#[test]
fn pubsub_sends_a_clients_backlog_before_its_error_and_close() {
    own_backlog_is_sent_before_the_end(true);
}

#[test]
fn pubsub_sends_a_clients_backlog_before_closing_at_its_eof() {
    own_backlog_is_sent_before_the_end(false);
}
