//! Backpressure: a peer that never reads cannot grow the server past its
//! caps while others are served, and a peer that stops reading then resumes
//! loses nothing.

mod common_net;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use common_net::{connect, random_bytes, round_trip, wait_until, Server};
use evloop::net::{self, CloseReason, Conn, ConnConfig, Handler, ListenConfig};
use evloop::{Ctx, SourceId};

/// What the server saw of one connection that asked for big replies.
#[derive(Debug, Default, Clone)]
struct Hog {
    answered: usize,
    max_queued: usize,
    refused: usize,
    closed: Option<CloseReason>,
}

type Hogs = Arc<Mutex<HashMap<SourceId, Hog>>>;

/// Echoes, except that each `B` is answered with 1 MiB.
struct BigReplies {
    hogs: Hogs,
}

const BIG: usize = 1 << 20;

impl Handler<()> for BigReplies {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        let mut rest = data;
        while let Some(&first) = rest.first() {
            if first != b'B' {
                let n = rest.iter().position(|&c| c == b'B').unwrap_or(rest.len());
                conn.write(&rest[..n]);
                rest = &rest[n..];
                continue;
            }
            rest = &rest[1..];
            let accepted = conn.write(&[b'x'; BIG]);
            let mut hogs = self.hogs.lock().unwrap();
            let hog = hogs.entry(conn.id()).or_default();
            hog.answered += 1;
            hog.max_queued = hog.max_queued.max(conn.queued());
            if !accepted {
                hog.refused += 1;
                break; // the connection is closing
            }
        }
        data.len()
    }
    fn on_close(&mut self, conn: &mut Conn, reason: CloseReason, _: &mut Ctx<()>, _: &mut ()) {
        if let Some(hog) = self.hogs.lock().unwrap().get_mut(&conn.id()) {
            hog.max_queued = hog.max_queued.max(conn.queued());
            hog.closed = Some(reason);
        }
    }
}

#[test]
fn peer_that_never_reads_stays_bounded_while_others_are_served() {
    let hogs: Hogs = Arc::default();
    let cfg = ListenConfig::default();
    let cap = cfg.conn.max_queued;
    let high_water = cfg.conn.high_water;
    let seen = hogs.clone();
    let server = Server::start((), move |el| {
        let l = net::listen(el, &"127.0.0.1:0".parse()?, cfg, move |_, _, _| {
            Some(BigReplies { hogs: seen.clone() })
        })?;
        Ok(l.addr)
    });
    let addr = server.tcp();

    // Hog 1 asks for 1 MiB at a time, each request after the previous one
    // was answered, until the server is throttled (queue past high water):
    // from then on it reads no more of hog 1's requests.
    let queued_of = |id: SourceId| server.call(move |ctx, _| ctx.source_mut::<Conn>(id).map(|c| c.queued()));
    let answered = |id: Option<SourceId>| {
        let hogs = hogs.lock().unwrap();
        match id {
            Some(id) => hogs.get(&id).map_or(0, |h| h.answered),
            None => hogs.values().map(|h| h.answered).sum(),
        }
    };
    let mut hog1 = connect(addr);
    let mut hog1_id = None;
    let mut throttled_at = None;
    for sent in 1..=64 {
        hog1.write_all(b"B").unwrap();
        assert!(
            wait_until(|| answered(hog1_id) == sent),
            "request {sent} was not answered"
        );
        let id = *hog1_id.get_or_insert_with(|| *hogs.lock().unwrap().keys().next().unwrap());
        let queued = queued_of(id).expect("hog 1 closed");
        if queued > high_water {
            throttled_at = Some(sent);
            break;
        }
    }
    let (hog1_id, throttled_at) = (hog1_id.unwrap(), throttled_at.expect("never throttled"));
    // More requests: they stay in the kernel's buffers, unread.
    hog1.write_all(&[b'B'; 100]).unwrap();

    // Hog 2 asks for 200 MiB in one write: its replies overflow the cap.
    let mut hog2 = connect(addr);
    hog2.write_all(&[b'B'; 200]).unwrap();
    assert!(
        wait_until(|| hogs.lock().unwrap().len() == 2),
        "the server did not start answering hog 2"
    );

    // Meanwhile, ordinary clients are served as usual.
    let workers: Vec<_> = (0..20)
        .map(|i| {
            thread::spawn(move || {
                let mut s = connect(addr);
                for trip in 0..100 {
                    let msg = random_bytes(1 + (i * 7 + trip) % 500, (i * 1000 + trip) as u64);
                    let msg: Vec<u8> = msg
                        .into_iter()
                        .map(|b| if b == b'B' { b'b' } else { b })
                        .collect();
                    assert_eq!(round_trip(&mut s, &msg).unwrap(), msg, "client {i} trip {trip}");
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("ordinary client");
    }

    // Hog 1 is still open, still throttled, and its queue still bounded.
    let queued = queued_of(hog1_id).expect("hog 1 was closed");
    assert!(queued > high_water && queued <= cap, "hog 1 has {queued} queued");
    assert_eq!(
        answered(Some(hog1_id)),
        throttled_at,
        "the server read from a throttled peer"
    );

    let hogs = hogs.lock().unwrap().clone();
    println!(
        "cap {cap}, high water {high_water}; hog 1 throttled after {throttled_at} requests; hogs: {hogs:?}"
    );
    for (id, hog) in &hogs {
        assert!(
            hog.max_queued <= cap,
            "{id}: {} bytes queued, over the cap of {cap}",
            hog.max_queued
        );
        match hog.closed {
            None => assert_eq!(hog.refused, 0, "{id}: a refused write must close the connection"),
            Some(reason) => {
                assert_eq!(reason, CloseReason::Overflow, "{id}");
                assert!(hog.refused > 0);
            }
        }
    }
    drop((hog1, hog2));
}

/// Echo that records the largest queue it ever had.
struct WatchQueue(Arc<AtomicUsize>);

impl Handler<()> for WatchQueue {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<()>, _: &mut ()) -> usize {
        assert!(conn.write(data), "echo refused");
        self.0.fetch_max(conn.queued(), Ordering::SeqCst);
        data.len()
    }
}

#[test]
fn reader_that_pauses_then_resumes_gets_everything() {
    const SIZE: usize = 8 << 20;
    let max_queued = Arc::new(AtomicUsize::new(0));
    let conn_cfg = ConnConfig::default();
    let high_water = conn_cfg.high_water;
    let cfg = ListenConfig {
        conn: conn_cfg,
        ..ListenConfig::default()
    };
    let watch = max_queued.clone();
    let server = Server::start((), move |el| {
        let l = net::listen(el, &"127.0.0.1:0".parse()?, cfg, move |_, _, _| {
            Some(WatchQueue(watch.clone()))
        })?;
        Ok(l.addr)
    });

    let data = random_bytes(SIZE, 42);
    let mut reader = connect(server.tcp());
    let mut writer = reader.try_clone().unwrap();
    let sent = data.clone();
    let w = thread::spawn(move || writer.write_all(&sent).unwrap());

    // Do not read until the server has queued past its high-water mark
    // (so it has stopped reading from us) ...
    assert!(
        wait_until(|| max_queued.load(Ordering::SeqCst) > high_water),
        "the server never queued past high water (max {})",
        max_queued.load(Ordering::SeqCst)
    );
    // ... then read it all back, in bursts.
    let mut got = vec![0u8; SIZE];
    let mut at = 0;
    while at < SIZE {
        let end = (at + (512 << 10)).min(SIZE);
        reader.read_exact(&mut got[at..end]).unwrap();
        at = end;
    }
    w.join().expect("writer");
    assert!(got == data, "data lost or reordered across throttling");
    assert!(max_queued.load(Ordering::SeqCst) <= ConnConfig::default().max_queued);
}
