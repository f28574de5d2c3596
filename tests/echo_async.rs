//! The `echo_async` example (tasks) through the same integrity and
//! backpressure tests as the callback echo, with line-terminated data: it
//! echoes lines, as eventlet's server does.

mod common_net;
#[path = "../examples/echo.rs"]
#[allow(dead_code)]
mod echo;
#[path = "../examples/echo_async.rs"]
#[allow(dead_code)]
mod echo_async;

use std::io::{Read, Write};
use std::thread;
use std::time::Duration;

use common_net::{connect, random_bytes, round_trip, Server};

fn server() -> Server<()> {
    Server::start((), |el| echo_async::start(el, &"127.0.0.1:0".parse()?))
}

/// `n` bytes of lines of pseudo-random length and content, the last one
/// ending the data.
fn lines(n: usize, seed: u64) -> Vec<u8> {
    let mut data = random_bytes(n, seed);
    let mut next_break = 0usize;
    for (i, b) in data.iter_mut().enumerate() {
        if i == next_break {
            next_break = i + 1 + (i * 7919 + seed as usize) % 3000;
        }
        *b = if i + 1 == next_break {
            b'\n'
        } else if *b == b'\n' {
            b' '
        } else {
            *b
        };
    }
    if let Some(last) = data.last_mut() {
        *last = b'\n';
    }
    data
}

#[test]
fn four_mib_of_lines_echoed_while_writing_and_reading() {
    let server = server();
    common_net::echo_while_writing(server.tcp(), &lines(4 << 20, 1));
}

/// The callback line echo (`echo --lines`), the yardstick `echo_async` is
/// measured against, does the same work: every line back, whole, however
/// the reads split it.
#[test]
fn callback_line_echo_returns_every_line() {
    let server = Server::start((), |el| Ok(echo::start_lines(el, &"127.0.0.1:0".parse()?)?.addr));
    common_net::echo_while_writing(server.tcp(), &lines(4 << 20, 2));
    common_net::concurrent_round_trips(server.tcp(), 50, 20, lines);
}

/// The last line goes back at EOF even without its newline, as eventlet's
/// `readline` returns it: from the task and from the callback alike.
#[test]
fn an_unfinished_last_line_comes_back_at_eof() {
    let task = server();
    let callback = Server::start((), |el| Ok(echo::start_lines(el, &"127.0.0.1:0".parse()?)?.addr));
    for addr in [task.tcp(), callback.tcp()] {
        let mut c = connect(addr);
        c.write_all(b"first\nsec").unwrap();
        thread::sleep(Duration::from_millis(20));
        c.write_all(b"ond, no end").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"first\nsecond, no end", "from {addr}");
    }
}

/// Both echoes take a line of exactly the 1 MiB cap (its newline
/// included) and close on a longer one, even when its end arrives in the
/// read that crosses the cap (the callback echo looked only at what was
/// left unfinished, and echoed such a line).
#[test]
fn both_echoes_hold_lines_to_the_same_cap() {
    const CAP: usize = 1024 * 1024;
    let task = server();
    let callback = Server::start((), |el| Ok(echo::start_lines(el, &"127.0.0.1:0".parse()?)?.addr));
    let mut longest = vec![b'a'; CAP - 1];
    longest.push(b'\n');
    for addr in [task.tcp(), callback.tcp()] {
        let mut c = connect(addr);
        let reader = c.try_clone().unwrap();
        let got = thread::spawn(move || {
            let mut got = Vec::new();
            let _ = { reader }.read_to_end(&mut got);
            got
        });
        c.write_all(&longest).unwrap();
        // Most of a line one byte too long, then its end.
        c.write_all(&longest[..CAP - 100]).unwrap();
        thread::sleep(Duration::from_millis(50));
        let _ = c.write_all(&longest[CAP - 101..]);
        let got = got.join().unwrap();
        assert!(got == longest, "from {addr}: {} bytes back", got.len());
    }
}

#[test]
fn three_hundred_clients_fifty_round_trips() {
    let server = server();
    common_net::concurrent_round_trips(server.tcp(), 300, 50, lines);
}

/// A client that sends 32 MiB without reading is throttled (its task waits
/// in `write_all`, its connection stops reading) while others are served,
/// and, once it reads, gets every byte back: throttled, not cut off.
#[test]
fn peer_that_does_not_read_is_throttled_while_others_are_served() {
    let server = server();
    let data = lines(32 << 20, 3);
    let mut hog = connect(server.tcp());
    let mut hog_writer = hog.try_clone().unwrap();
    hog_writer
        .set_write_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let to_send = data.clone();
    let w = thread::spawn(move || hog_writer.write_all(&to_send).map(|_| ()));
    thread::sleep(Duration::from_millis(300));
    assert!(
        !w.is_finished(),
        "32 MiB cannot fit in the kernel's buffers and a bounded server"
    );

    let workers: Vec<_> = (0..20)
        .map(|i| {
            let addr = server.tcp();
            thread::spawn(move || {
                let mut s = connect(addr);
                for trip in 0..100 {
                    let msg = lines(1 + (i * 7 + trip) % 500, (i * 1000 + trip) as u64);
                    assert_eq!(round_trip(&mut s, &msg).unwrap(), msg, "client {i} trip {trip}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("ordinary client");
    }
    assert!(!w.is_finished(), "the hog is still throttled");

    let mut got = vec![0; data.len()];
    hog.read_exact(&mut got).unwrap();
    w.join().unwrap().expect("the hog's writes all went through");
    assert!(got == data, "the hog got its bytes back intact");
}
