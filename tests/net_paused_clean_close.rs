//! A peer that closes cleanly while we are not reading loses nothing: what
//! it sent before its close, then the end, reach the handler when it reads
//! again, and the close is `PeerClosed`. Both directions shut with no
//! error (a Unix peer's close; a TCP peer's FIN after our `shutdown_write`)
//! raise a hang-up, which was taken for a reset: the connection closed at
//! once with the peer's last bytes unread.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::{turn_until, turns, Watchdog};
use evloop::net::{self, Addr, CloseReason, Conn, Handler, ListenConfig};
use evloop::{Ctx, EventLoop, SourceId};

#[derive(Default)]
struct Seen {
    got: Vec<u8>,
    /// The connection, once its first byte paused it.
    paused: Option<SourceId>,
    closed: Option<CloseReason>,
}

/// On the first byte: optionally say goodbye and shut our side, then pause
/// reading until the test resumes it.
struct PauseAtFirst {
    shut: bool,
}

impl Handler<Seen> for PauseAtFirst {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<Seen>, seen: &mut Seen) -> usize {
        seen.got.extend_from_slice(data);
        if seen.paused.is_none() {
            if self.shut {
                conn.write(b"bye");
                conn.shutdown_write();
            }
            conn.pause_reading();
            seen.paused = Some(conn.id());
        }
        data.len()
    }

    fn on_close(&mut self, _: &mut Conn, reason: CloseReason, _: &mut Ctx<Seen>, seen: &mut Seen) {
        seen.closed = Some(reason);
    }
}

/// The peer has closed while the connection was paused; the hang-up has
/// been dispatched. Nothing may be closed yet; once reading resumes, the
/// last bytes and then the end arrive.
fn resume_and_finish(el: &mut EventLoop<Seen>, seen: &mut Seen) {
    turns(el, seen, 5);
    assert_eq!(seen.closed, None, "a clean close taken for a reset");
    net::resume_reading(el, seen.paused.unwrap());
    turn_until(el, seen, |s| s.closed.is_some());
}

/// A directory for a test's socket, removed when dropped.
struct SocketDir(std::path::PathBuf);

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loop serving a fresh Unix path with `handler` for each connection,
/// a client connected to it, and the path's directory.
fn unix_server<H>(name: &str, handler: fn() -> H) -> (EventLoop<Seen>, UnixStream, SocketDir)
where
    H: Handler<Seen> + 'static,
{
    let dir = std::env::temp_dir().join(format!("evloop-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("s.sock");
    let _ = std::fs::remove_file(&path);
    let mut el = EventLoop::<Seen>::new().unwrap();
    net::listen(
        &mut el,
        &Addr::Unix(path.clone()),
        ListenConfig::default(),
        move |_, _, _, _| Some(handler()),
    )
    .unwrap();
    let client = UnixStream::connect(&path).unwrap();
    (el, client, SocketDir(dir))
}

#[test]
fn a_paused_unix_connection_keeps_what_the_peer_sent_before_closing() {
    let _watchdog = Watchdog::new(20, "a_paused_unix_connection_keeps_what_the_peer_sent");
    let (mut el, mut client, _dir) = unix_server("paused-clean", || PauseAtFirst { shut: false });
    let mut seen = Seen::default();
    client.write_all(b"P").unwrap();
    turn_until(&mut el, &mut seen, |s| s.paused.is_some());
    client.write_all(b"hello").unwrap();
    drop(client);
    resume_and_finish(&mut el, &mut seen);
    assert_eq!(seen.got, b"Phello");
    assert_eq!(seen.closed, Some(CloseReason::PeerClosed));
}

#[test]
fn a_shut_and_paused_tcp_connection_keeps_what_the_peer_sent_before_its_fin() {
    let _watchdog = Watchdog::new(20, "a_shut_and_paused_tcp_connection_keeps");
    let mut el = EventLoop::<Seen>::new().unwrap();
    let listening = net::listen(
        &mut el,
        &"127.0.0.1:0".parse().unwrap(),
        ListenConfig::default(),
        |_, _, _, _| Some(PauseAtFirst { shut: true }),
    )
    .unwrap();
    let Addr::Tcp(addr) = listening.addr else {
        unreachable!()
    };
    let mut seen = Seen::default();
    let mut client = TcpStream::connect(addr).unwrap();
    client.write_all(b"P").unwrap();
    turn_until(&mut el, &mut seen, |s| s.paused.is_some());
    // Our goodbye, then our FIN.
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut bye = Vec::new();
    client.read_to_end(&mut bye).unwrap();
    assert_eq!(bye, b"bye");
    // The peer's last words, then its FIN: both directions are shut.
    client.write_all(b"last").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    resume_and_finish(&mut el, &mut seen);
    assert_eq!(seen.got, b"Plast");
    assert_eq!(seen.closed, Some(CloseReason::PeerClosed));
}

/// Keeps the connection open after the peer's EOF (to write later).
struct KeepAfterEof;

impl Handler<Seen> for KeepAfterEof {
    fn on_data(&mut self, _: &mut Conn, data: &[u8], _: &mut Ctx<Seen>, seen: &mut Seen) -> usize {
        seen.got.extend_from_slice(data);
        data.len()
    }

    fn on_eof(&mut self, conn: &mut Conn, _: &mut Ctx<Seen>, seen: &mut Seen) {
        seen.paused = Some(conn.id());
    }

    fn on_close(&mut self, _: &mut Conn, reason: CloseReason, _: &mut Ctx<Seen>, seen: &mut Seen) {
        seen.closed = Some(reason);
    }
}

/// A connection kept open after the peer's EOF, owing nothing, whose Unix
/// peer then closes for good, is done: closed at once, as `PeerClosed`
/// (nothing is unread, nothing owed; no write will come to find out).
#[test]
fn a_connection_kept_after_eof_closes_cleanly_when_its_unix_peer_goes() {
    let _watchdog = Watchdog::new(20, "a_connection_kept_after_eof_closes_cleanly");
    let (mut el, client, _dir) = unix_server("kept-after-eof", || KeepAfterEof);
    let mut seen = Seen::default();
    (&client).write_all(b"x").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    turn_until(&mut el, &mut seen, |s| s.paused.is_some());
    assert_eq!(seen.closed, None, "kept open after the EOF");
    drop(client);
    turn_until(&mut el, &mut seen, |s| s.closed.is_some());
    assert_eq!(seen.got, b"x");
    assert_eq!(seen.closed, Some(CloseReason::PeerClosed));
}

/// A paused Unix connection whose peer goes, leaving nothing unread, is
/// closed at once as `PeerClosed`: nothing waits for the handler, which
/// may never read again (the clean-hang-up fix had kept it, and its fd,
/// until then).
#[test]
fn a_paused_unix_connection_whose_peer_goes_with_nothing_unread_closes() {
    let _watchdog = Watchdog::new(20, "a_paused_unix_connection_whose_peer_goes");
    let (mut el, mut client, _dir) = unix_server("paused-gone", || PauseAtFirst { shut: false });
    let mut seen = Seen::default();
    client.write_all(b"x").unwrap();
    turn_until(&mut el, &mut seen, |s| s.paused.is_some());
    drop(client);
    turn_until(&mut el, &mut seen, |s| s.closed.is_some());
    assert_eq!(seen.got, b"x");
    assert_eq!(seen.closed, Some(CloseReason::PeerClosed));
}
