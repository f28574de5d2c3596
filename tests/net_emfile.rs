//! Running out of file descriptors on accept (EMFILE): the server sheds what
//! it cannot take instead of spinning, keeps serving those it holds, and
//! recovers when fds free up.
//!
//! The server runs in a child process (this test binary re-executed with
//! `EVLOOP_TEST_SERVER` set) so that its RLIMIT_NOFILE of 128 and its CPU
//! time are its own.

mod common_net;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common_net::{connect, cpu_time, round_trip, set_fd_limit, spawn_self, Echo, WAIT};
use evloop::net::{self, ListenConfig};
use evloop::EventLoop;

const CHILD_ENV: &str = "EVLOOP_TEST_SERVER";
const FD_LIMIT: libc::rlim_t = 128;
const CLIENTS: usize = 300;

/// The child's side: only does something when re-executed by the test below.
#[test]
fn emfile_server_child() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    // Exit when the parent goes away (our stdin closes), whatever happens to it.
    thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    set_fd_limit(|_| FD_LIMIT);
    let mut el = EventLoop::<()>::new().unwrap();
    let l = net::listen(
        &mut el,
        &"127.0.0.1:0".parse().unwrap(),
        ListenConfig::default(),
        |_, _, _, _| Some(Echo),
    )
    .unwrap();
    println!("EVLOOP_ADDR {}", l.addr);
    std::io::stdout().flush().unwrap();
    loop {
        el.turn(&mut (), Some(Duration::from_millis(50))).unwrap();
    }
}

/// What became of a client: echoed, or closed by the server (shed).
fn outcome(s: &mut TcpStream) -> Result<bool, std::io::Error> {
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(1) => Ok(true),
        Ok(_) => Ok(false),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(false),
        Err(e) => Err(e),
    }
}

#[test]
fn emfile_sheds_without_spinning_and_recovers() {
    let mut child = spawn_self("emfile_server_child", CHILD_ENV, "1");
    let pid = child.0.id();
    // Read the child's stdout on a thread (so the wait for its address is
    // bounded, and the pipe never fills). libtest may print the address on
    // the same line as its own "test ... " banner.
    let out = BufReader::new(child.0.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in out.lines() {
            let Ok(line) = line else { break };
            if let Some(at) = line.find("EVLOOP_ADDR ") {
                let _ = tx.send(line[at + "EVLOOP_ADDR ".len()..].trim().to_string());
            }
        }
    });
    let addr: SocketAddr = rx
        .recv_timeout(WAIT)
        .expect("the child server did not report its address")
        .parse()
        .unwrap();

    // 300 clients at once, each sending a byte, all held open.
    let mut clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(addr)).collect();
    for c in &mut clients {
        c.write_all(b"!").unwrap();
    }
    // Each one is either served (its byte comes back) or shed (closed), never left hanging.
    let mut kept = Vec::new();
    let mut shed = 0;
    for (i, mut c) in clients.drain(..).enumerate() {
        match outcome(&mut c) {
            Ok(true) => kept.push(c),
            Ok(false) => shed += 1,
            Err(e) => panic!("client {i} got neither its echo nor a close: {e}"),
        }
    }
    let served = kept.len();
    println!("{served} served, {shed} shed at RLIMIT_NOFILE {FD_LIMIT}");
    assert!(
        served > 0 && shed > 0,
        "{served} served, {shed} shed: not the fd-exhaustion scenario"
    );
    assert!(served < FD_LIMIT as usize);

    // Saturated: the child holds all the fds it may. More knock meanwhile;
    // its CPU time over the window must be well under half a core.
    let cpu0 = cpu_time(pid);
    let t0 = Instant::now();
    let mut knocks = Vec::new();
    while t0.elapsed() < Duration::from_millis(1500) {
        if let Ok(s) = TcpStream::connect(addr) {
            knocks.push(s);
        }
        thread::sleep(Duration::from_millis(15));
    }
    let window = t0.elapsed();
    let cpu = cpu_time(pid) - cpu0;
    println!(
        "child CPU {cpu:?} over {window:?} while saturated ({} knocks)",
        knocks.len()
    );
    assert!(
        cpu < window / 2,
        "server burnt {cpu:?} of CPU in {window:?}: spinning?"
    );
    // The ones it holds are still served.
    for c in &mut kept {
        assert_eq!(round_trip(c, b"still").unwrap(), b"still");
    }

    // Everyone leaves; a newcomer is served (allow the server a moment to
    // reclaim: early attempts may still be shed).
    drop(kept);
    drop(knocks);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = connect(addr);
        match round_trip(&mut c, b"after") {
            Ok(back) => {
                assert_eq!(back, b"after");
                break;
            }
            Err(e) if Instant::now() < deadline => {
                println!("newcomer not served yet ({e}); retrying");
                thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("server did not recover: {e}"),
        }
    }
    assert!(child.0.try_wait().unwrap().is_none(), "child server died");
}
