//! The connection's framing contract, through the real net layer: a
//! handler's `on_data` gets every byte not yet consumed and returns how many
//! it used; the net layer keeps the rest and offers it again, with more. So
//! however the input is cut into reads, the handler must see the same
//! stream and give the same answers as when it all arrives in one piece.
//!
//! The handler is the `http` example's framing (examples/proto/http_session.rs):
//! requests are answered in order, bodies skipped, an error ends the
//! connection. Each run writes the input into a Unix socket in pieces, the
//! loop reading each piece before the next is sent, and compares the
//! answers with those of one `on_data` call over the whole input. The net
//! layer's own checks ride along: nothing consumed twice, nothing lost.
#![no_main]

#[path = "../../examples/proto/http_parse.rs"]
#[allow(dead_code)]
mod http_parse;
#[path = "../../examples/proto/http_session.rs"]
#[allow(dead_code)]
mod http_session;

use std::cell::RefCell;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use evloop::net::{self, Addr, CloseReason, Conn, Handler, ListenConfig};
use evloop::{Ctx, EventLoop};
use http_session::Session;
use libfuzzer_sys::fuzz_target;

/// What the handler saw of the one connection under test.
#[derive(Default)]
struct Seen {
    opened: bool,
    /// Bytes consumed so far, and the bytes offered in all (consumed plus
    /// the latest `data`'s length): what the net layer has read.
    consumed: usize,
    offered: usize,
    answers: Vec<String>,
    closed: Option<CloseReason>,
}

struct Framing(Session);

impl Handler<Seen> for Framing {
    fn on_open(&mut self, _: &mut Conn, _: &mut Ctx<Seen>, seen: &mut Seen) {
        seen.opened = true;
    }
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<Seen>, seen: &mut Seen) -> usize {
        // What is offered again is exactly what was left unconsumed.
        assert!(seen.offered - seen.consumed <= data.len());
        seen.offered = seen.consumed + data.len();
        let answers = &mut seen.answers;
        let (used, open) = self.0.on_data(data, |a| answers.push(format!("{a:?}")));
        assert!(used <= data.len());
        seen.consumed += used;
        if !open {
            conn.close();
        }
        used
    }
    fn on_close(&mut self, _: &mut Conn, reason: CloseReason, _: &mut Ctx<Seen>, seen: &mut Seen) {
        seen.closed = Some(reason);
    }
}

struct Rig {
    el: EventLoop<Seen>,
    addr: std::path::PathBuf,
}

thread_local! {
    static RIG: RefCell<Option<Rig>> = const { RefCell::new(None) };
}

fn rig() -> Rig {
    let path = std::env::temp_dir().join(format!("evloop-fuzz-framing-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let mut el = EventLoop::new().expect("loop");
    let cfg = ListenConfig {
        conn: net::ConnConfig {
            linger: None,
            ..net::ConnConfig::default()
        },
        ..ListenConfig::default()
    };
    net::listen(&mut el, &Addr::Unix(path.clone()), cfg, |_, _, _, _| {
        Some(Framing(Session::default()))
    })
    .expect("listen");
    Rig { el, addr: path }
}

/// Turn until `done` holds; a bounded number of turns.
fn turn_until(el: &mut EventLoop<Seen>, seen: &mut Seen, mut done: impl FnMut(&Seen) -> bool) -> bool {
    for _ in 0..10_000 {
        if done(seen) {
            return true;
        }
        el.turn(seen, Some(Duration::from_millis(10))).expect("turn");
    }
    done(seen)
}

/// The answers when everything arrives at once.
fn in_one_piece(data: &[u8]) -> Vec<String> {
    let mut answers = Vec::new();
    Session::default().on_data(data, |a| answers.push(format!("{a:?}")));
    answers
}

fuzz_target!(|input: &[u8]| {
    // input[0] % 8 cut points follow as fractions of the rest; then the data.
    let Some((&n, rest)) = input.split_first() else {
        return;
    };
    let n = usize::from(n % 8).min(rest.len());
    let (cuts, data) = rest.split_at(n);
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| data.len() * usize::from(c) / 256).collect();
    cuts.push(data.len());
    cuts.sort_unstable();

    RIG.with(|r| {
        let mut r = r.borrow_mut();
        let rig = r.get_or_insert_with(rig);
        let mut seen = Seen::default();
        let mut client = UnixStream::connect(&rig.addr).expect("connect");
        assert!(turn_until(&mut rig.el, &mut seen, |s| s.opened), "never opened");
        let mut at = 0;
        for &cut in &cuts {
            if cut == at || seen.closed.is_some() {
                continue;
            }
            if client.write_all(&data[at..cut]).is_err() {
                break; // the server closed after an error
            }
            at = cut;
            // Let the loop read this piece before the next is written.
            let want = at;
            assert!(
                turn_until(&mut rig.el, &mut seen, |s| s.offered >= want || s.closed.is_some()),
                "the net layer never delivered byte {want}"
            );
        }
        drop(client);
        assert!(turn_until(&mut rig.el, &mut seen, |s| s.closed.is_some()), "never closed");
        assert_eq!(seen.answers, in_one_piece(data), "pieces cut at {cuts:?}");
    });
});
