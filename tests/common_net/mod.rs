//! Scaffolding for the networking tests: a server loop on its own thread,
//! blocking std clients with timeouts, and reproducible pseudo-random bytes.
//!
//! Every wait here is bounded: the server loop turns with a 50 ms poll cap
//! and checks a stop flag, clients have read and write timeouts, and calls
//! into the loop give up after [`WAIT`]. Not every test file uses every helper.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use evloop::net::{self, Addr, Conn, Handler, ListenConfig};
use evloop::{Builder, Ctx, EventLoop, Remote};

/// The poll cap of every server turn.
pub const TICK: Duration = Duration::from_millis(50);

/// How long any single blocking step of a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// Sends back every byte it receives.
pub struct Echo;

impl<S> Handler<S> for Echo {
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], _: &mut Ctx<S>, _: &mut S) -> usize {
        conn.write(data);
        data.len()
    }
}

/// A server loop running on its own thread over state `S`.
///
/// Dropping it (or calling [`stop`](Server::stop)) stops the loop and joins
/// the thread.
pub struct Server<S: 'static> {
    /// Where the server listens.
    pub addr: Addr,
    remote: Remote<S>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<S>>,
}

impl<S: Send + 'static> Server<S> {
    /// Build a default loop on a new thread, let `setup` register what it
    /// wants (it returns the address clients should use), then turn the loop
    /// until stopped.
    pub fn start<F>(state: S, setup: F) -> Server<S>
    where
        F: FnOnce(&mut EventLoop<S>) -> io::Result<Addr> + Send + 'static,
    {
        Server::start_with(EventLoop::builder(), state, setup)
    }

    /// Like [`start`](Server::start), with a loop built from `builder`.
    pub fn start_with<F>(builder: Builder, mut state: S, setup: F) -> Server<S>
    where
        F: FnOnce(&mut EventLoop<S>) -> io::Result<Addr> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("server-loop".into())
            .spawn(move || {
                let mut el: EventLoop<S> = builder.build().expect("build loop");
                let remote = el.remote().expect("remote");
                let addr = setup(&mut el).expect("server setup");
                tx.send((addr, remote)).expect("report address");
                while !flag.load(Ordering::Acquire) {
                    el.turn(&mut state, Some(TICK)).expect("turn");
                }
                state
            })
            .expect("spawn server thread");
        let (addr, remote) = rx.recv_timeout(WAIT).expect("server did not start");
        Server {
            addr,
            remote,
            stop,
            thread: Some(thread),
        }
    }

    /// The TCP address (panics for a Unix socket server).
    pub fn tcp(&self) -> SocketAddr {
        match &self.addr {
            Addr::Tcp(a) => *a,
            Addr::Unix(p) => panic!("server listens on unix:{}", p.display()),
        }
    }

    /// Run `f` on the loop's thread (in a dispatch phase) and return its result.
    pub fn call<R, F>(&self, f: F) -> R
    where
        R: Send + 'static,
        F: FnOnce(&mut Ctx<S>, &mut S) -> R + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        self.remote
            .post(move |ctx, state| {
                let _ = tx.send(f(ctx, state));
            })
            .expect("server loop gone");
        rx.recv_timeout(WAIT).expect("server loop did not answer")
    }

    /// Stop the loop, join its thread, and hand back the state.
    pub fn stop(mut self) -> S {
        self.halt().expect("server thread panicked")
    }

    fn halt(&mut self) -> Option<S> {
        self.stop.store(true, Ordering::Release);
        self.remote.wake();
        self.thread.take().and_then(|t| t.join().ok())
    }
}

impl<S: 'static> Drop for Server<S> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.remote.wake();
        if let Some(t) = self.thread.take() {
            let result = t.join();
            if result.is_err() && !std::thread::panicking() {
                panic!("server thread panicked");
            }
        }
    }
}

/// An echo server on 127.0.0.1 (any port) with `cfg`.
pub fn echo_server_with(cfg: ListenConfig) -> Server<()> {
    Server::start((), move |el| {
        let l = net::listen(el, &"127.0.0.1:0".parse()?, cfg, |_, _, _, _| Some(Echo))?;
        Ok(l.addr)
    })
}

/// An echo server on 127.0.0.1 (any port) with the default settings.
pub fn echo_server() -> Server<()> {
    echo_server_with(ListenConfig::default())
}

/// A blocking client with read and write timeouts of [`WAIT`].
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Write `msg` and read back exactly as many bytes.
pub fn round_trip<T: Read + Write>(s: &mut T, msg: &[u8]) -> io::Result<Vec<u8>> {
    s.write_all(msg)?;
    let mut back = vec![0; msg.len()];
    s.read_exact(&mut back)?;
    Ok(back)
}

/// Read until EOF (an error such as a timeout or reset is returned as is).
pub fn read_to_eof<T: Read>(s: &mut T) -> io::Result<Vec<u8>> {
    let mut got = Vec::new();
    s.read_to_end(&mut got)?;
    Ok(got)
}

/// `n` reproducible pseudo-random bytes (xorshift64*), different per `seed`.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(n);
    out
}

/// `args` as a RESP command: an array of bulk strings.
pub fn resp_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Poll `cond` every 10 ms until it holds or [`WAIT`] passes; returns whether it held.
pub fn wait_until(cond: impl FnMut() -> bool) -> bool {
    wait_for(WAIT, cond)
}

/// Poll `cond` every 10 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A child process that is killed and reaped however the test ends.
pub struct Reaper(pub std::process::Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// utime + stime of a process, from /proc/PID/stat.
pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// How many file descriptors a process has open, from /proc/PID/fd.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the process's fd table")
        .count()
}

/// Re-run this test binary as a helper process: only test `name`, with
/// `env=value` set (the test checks for it and plays its part), stdin and
/// stdout piped, stderr shared. The helper should exit when its stdin closes.
pub fn spawn_self(name: &str, env: &str, value: &str) -> Reaper {
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env, value)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("re-run the test binary");
    Reaper(child)
}

/// Set this process's soft RLIMIT_NOFILE to what `pick` makes of the hard
/// limit; returns the new soft limit.
pub fn set_fd_limit(pick: impl FnOnce(libc::rlim_t) -> libc::rlim_t) -> libc::rlim_t {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = pick(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

/// `clients` clients connected at once to `addr`, `trips` round trips each
/// of a message `msg(len, seed)` makes, every reply checked.
pub fn concurrent_round_trips(
    addr: SocketAddr,
    clients: usize,
    trips: usize,
    msg: fn(usize, u64) -> Vec<u8>,
) {
    // Connect everyone first, so all are open at the same time.
    let socks: Vec<_> = (0..clients).map(|_| connect(addr)).collect();
    let workers: Vec<_> = socks
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            std::thread::spawn(move || {
                for trip in 0..trips {
                    let m = msg(1 + (i * 31 + trip * 17) % 300, (i * trips + trip) as u64);
                    let back = round_trip(&mut s, &m).unwrap();
                    assert_eq!(back, m, "client {i} trip {trip}");
                }
            })
        })
        .collect();
    for (i, w) in workers.into_iter().enumerate() {
        w.join().unwrap_or_else(|_| panic!("client {i} failed"));
    }
}

/// Send `data` to the echo server at `addr` from one thread in odd-sized
/// chunks (so writes and reads never line up) while this one reads it
/// back, and check every byte.
pub fn echo_while_writing(addr: SocketAddr, data: &[u8]) {
    let mut reader = connect(addr);
    let mut writer = reader.try_clone().unwrap();
    let to_send = data.to_vec();
    let w = std::thread::spawn(move || {
        for chunk in to_send.chunks(7_919) {
            writer.write_all(chunk).unwrap();
        }
    });
    let mut got = vec![0; data.len()];
    reader.read_exact(&mut got).unwrap();
    w.join().expect("writer");
    assert!(got == data, "echoed bytes differ from what was sent");
}

/// A plain std peer on 127.0.0.1 (any port) that accepts one connection,
/// with read and write timeouts of [`WAIT`], and runs `f` on it on its own
/// thread; join the handle for what `f` returns.
pub fn one_peer<T, F>(f: F) -> (SocketAddr, JoinHandle<T>)
where
    T: Send + 'static,
    F: FnOnce(TcpStream) -> T + Send + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a peer");
    let addr = listener.local_addr().unwrap();
    let thread = std::thread::spawn(move || {
        let (s, _) = listener.accept().expect("the peer's connection");
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_write_timeout(Some(WAIT)).unwrap();
        f(s)
    });
    (addr, thread)
}

/// A listener with a backlog of one, filled by a connection it never
/// accepts: further handshakes get no answer. Keep all three alive.
pub fn black_hole() -> (socket2::Socket, TcpStream, SocketAddr) {
    let l = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    l.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    l.listen(0).unwrap();
    let addr = l.local_addr().unwrap().as_socket().unwrap();
    let filler = TcpStream::connect_timeout(&addr, WAIT).unwrap();
    (l, filler, addr)
}

/// The process's resident memory, KiB, once malloc has handed back what
/// it holds free (so the figure is what is in use).
pub fn rss_kib() -> usize {
    // SAFETY: malloc_trim takes no pointer; it only releases free memory.
    unsafe { libc::malloc_trim(0) };
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
