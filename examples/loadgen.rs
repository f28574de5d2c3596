//! Load generator of the end-to-end echo benchmark (`benches/e2e.sh` drives it).
//!
//! One thread, one mio `Poll`, `--conns` connections that each keep `--depth`
//! messages of `--size` bytes in flight (closed loop: every echoed message
//! sends the next one). Every byte that comes back is compared with what was
//! sent; a mismatch, a lost connection or a missing echo ends the run with a
//! non-zero exit status and a message saying where.
//!
//! Each connection's byte stream is a window onto one pseudo-random pattern,
//! starting at an offset of its own, so sending and checking are slice copies
//! and compares, never per-byte work: the generator stays cheap enough not to
//! be the bottleneck (it reports its own CPU use so you can check).
//!
//! Phases: connect in batches (each connection echoes one message, so the
//! server has accepted it), warm up, measure for `--duration`, drain every
//! outstanding echo. Given the server's `--pid`, it also reads the server's
//! CPU time and memory from `/proc` and, with `--perf`, counts the server's
//! system calls over the measured window with `perf stat` and splits its CPU
//! time into user and kernel mode from `perf record`'s cpu-clock samples
//! (~5,000 a second, where `/proc`'s user time has 100 ticks a second).
//!
//! Prints one `result key=value ...` line on stdout and a summary on stderr.
//!
//! With `--lines`, every message ends with a `\n` and holds no other, for
//! servers that echo lines (`echo_async`, as eventlet's does): the pattern's
//! length is then a multiple of the message size, with a newline at the end
//! of each message-sized piece, and every stream starts at a piece.
//!
//! Usage: `loadgen --addr 127.0.0.1:6000 [--conns 50] [--size 64] [--depth 1]
//! [--duration 5] [--warmup 1] [--pid PID] [--perf] [--sources 4]
//! [--max-msgs N] [--lines] [--label name=value ...]`

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

/// Length of the byte pattern the streams are cut from; not a multiple of any
/// message size, so consecutive messages differ.
const PATTERN: usize = 128 * 1024 + 7;

/// The pattern's length in use: [`PATTERN`], or with `--lines` the largest
/// multiple of the message size below it (set once, before any connection).
static PERIOD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(PATTERN);

fn period() -> usize {
    PERIOD.load(std::sync::atomic::Ordering::Relaxed)
}
/// Connections opened (and confirmed with one echo) at a time.
const CONNECT_BATCH: usize = 256;
/// How long any phase that waits for the server may take before we give up.
const PATIENCE: Duration = Duration::from_secs(30);

struct Opts {
    addr: SocketAddr,
    conns: usize,
    size: usize,
    depth: usize,
    duration: Duration,
    warmup: Duration,
    pid: Option<u32>,
    perf: bool,
    sources: usize,
    max_msgs: u64,
    lines: bool,
    labels: Vec<String>,
}

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("loadgen: FAILED: {msg}");
    std::process::exit(2);
}

fn num<T: std::str::FromStr>(flag: &str, value: &str) -> T {
    value
        .parse()
        .unwrap_or_else(|_| fail(format!("bad value {value:?} for {flag}")))
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        addr: "127.0.0.1:6000".parse().unwrap(),
        conns: 1,
        size: 64,
        depth: 1,
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
        pid: None,
        perf: false,
        sources: 0,
        max_msgs: 1_000_000_000,
        lines: false,
        labels: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--perf" {
            o.perf = true;
            continue;
        }
        if flag == "--lines" {
            o.lines = true;
            continue;
        }
        let value = args
            .next()
            .unwrap_or_else(|| fail(format!("{flag} needs a value")));
        let secs = |v: &str| Duration::from_secs_f64(num(&flag, v));
        match flag.as_str() {
            "--addr" => o.addr = value.parse().unwrap_or_else(|e| fail(e)),
            "--conns" => o.conns = num(&flag, &value),
            "--size" => o.size = num(&flag, &value),
            "--depth" => o.depth = num(&flag, &value),
            "--duration" => o.duration = secs(&value),
            "--warmup" => o.warmup = secs(&value),
            "--pid" => o.pid = Some(num(&flag, &value)),
            "--sources" => o.sources = num(&flag, &value),
            "--max-msgs" => o.max_msgs = num(&flag, &value),
            "--label" => o.labels.push(value),
            _ => fail(format!("unknown option {flag}")),
        }
    }
    if o.conns == 0 || o.size == 0 || o.depth == 0 || o.size * o.depth > PATTERN / 2 {
        fail("need conns, size, depth > 0 and size * depth <= 64 KiB");
    }
    if o.sources == 0 {
        // Spread big runs over several loopback source addresses so the
        // ephemeral ports of one address never run short.
        o.sources = if o.conns > 4000 { 8 } else { 1 };
    }
    o
}

/// One client connection and its stream positions (in bytes since connect).
struct Conn {
    sock: TcpStream,
    /// Where this connection's stream starts in the pattern.
    start: usize,
    /// Bytes generated (the messages owed to the socket end here).
    generated: u64,
    /// Bytes the kernel has taken.
    sent: u64,
    /// Bytes echoed back and verified.
    received: u64,
    /// When each message still in flight was generated, oldest first.
    in_flight: VecDeque<Instant>,
}

/// Counters of the load, reset when the measured window opens.
#[derive(Default, Clone, Copy)]
struct Count {
    msgs: u64,
    bytes: u64,
}

struct Gen {
    poll: Poll,
    conns: Vec<Conn>,
    /// The pattern, twice over, so any window of up to `PATTERN` bytes is one slice.
    pattern: Vec<u8>,
    buf: Vec<u8>,
    size: usize,
    /// Send a new message for each one echoed.
    refill: bool,
    hist: Histogram<u64>,
    count: Count,
}

/// `len` bytes of the stream that starts at `start` in the pattern, from `off` on.
fn bytes_at(pattern: &[u8], start: usize, off: u64, len: usize) -> &[u8] {
    let at = ((start as u64 + off) % period() as u64) as usize;
    &pattern[at..at + len]
}

/// Write whatever is owed to connection `i` until the kernel stops taking it.
fn flush(c: &mut Conn, pattern: &[u8], i: usize) {
    loop {
        let owed = (c.generated - c.sent).min(period() as u64 / 2) as usize;
        if owed == 0 {
            return;
        }
        match c.sock.write(bytes_at(pattern, c.start, c.sent, owed)) {
            Ok(n) => c.sent += n as u64,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => fail(format!("connection {i}: write: {e}")),
        }
    }
}

impl Gen {
    /// Queue `n` new messages on connection `i`.
    fn generate(&mut self, i: usize, n: usize, now: Instant) {
        let c = &mut self.conns[i];
        c.generated += (n * self.size) as u64;
        c.in_flight.extend(std::iter::repeat(now).take(n));
    }

    fn flush(&mut self, i: usize) {
        flush(&mut self.conns[i], &self.pattern, i);
    }

    /// Read and verify everything connection `i` has, completing messages.
    fn read(&mut self, i: usize) {
        loop {
            let n = match self.conns[i].sock.read(&mut self.buf) {
                Ok(0) => fail(format!("connection {i}: the server closed it")),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => fail(format!("connection {i}: read: {e}")),
            };
            let c = &self.conns[i];
            if c.received + n as u64 > c.sent {
                fail(format!(
                    "connection {i}: {} bytes echoed but only {} sent",
                    c.received + n as u64,
                    c.sent
                ));
            }
            let expected = bytes_at(&self.pattern, c.start, c.received, n);
            if expected != &self.buf[..n] {
                let at = expected
                    .iter()
                    .zip(&self.buf)
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                fail(format!(
                    "connection {i}: corrupt echo at stream byte {}: expected {:#04x}, got {:#04x}",
                    c.received + at as u64,
                    expected[at],
                    self.buf[at]
                ));
            }
            let size = self.size as u64;
            let before = c.received / size;
            let after = (c.received + n as u64) / size;
            self.conns[i].received += n as u64;
            self.count.bytes += n as u64;
            let done = (after - before) as usize;
            if done > 0 {
                let now = Instant::now();
                for _ in 0..done {
                    let sent_at = self.conns[i]
                        .in_flight
                        .pop_front()
                        .expect("an echo with no message");
                    let rtt = now.saturating_duration_since(sent_at).as_nanos() as u64;
                    self.hist.saturating_record(rtt.max(1));
                }
                self.count.msgs += done as u64;
                if self.refill {
                    self.generate(i, done, now);
                    self.flush(i);
                }
            }
            if n < self.buf.len() {
                // A short read drained the socket; the next edge brings more.
                return;
            }
        }
    }

    /// One poll and its events.
    fn turn(&mut self, events: &mut Events, timeout: Duration) {
        if let Err(e) = self.poll.poll(events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                fail(format!("poll: {e}"));
            }
        }
        for ev in events.iter() {
            let i = ev.token().0;
            if ev.is_error() {
                let err = self.conns[i].sock.take_error().ok().flatten();
                fail(format!("connection {i}: socket error {err:?}"));
            }
            if ev.is_writable() {
                self.flush(i);
            }
            if ev.is_readable() || ev.is_read_closed() {
                self.read(i);
            }
        }
    }

    fn outstanding(&self) -> usize {
        self.conns.iter().map(|c| c.in_flight.len()).sum()
    }

    /// Send `what` to perf stat's control fifo, keeping the load on until it
    /// is acknowledged.
    fn perf_command(&mut self, perf: &mut PerfStat, events: &mut Events, what: &str) {
        perf.send(what);
        let deadline = Instant::now() + PATIENCE;
        while !perf.acked() {
            if Instant::now() > deadline {
                fail(format!("perf stat did not acknowledge {what}"));
            }
            self.turn(events, Duration::from_millis(1));
        }
    }

    /// Keep the load on until `child` (a perf run over the window) exits.
    fn wait_for(&mut self, child: &mut Child, events: &mut Events, what: &str) {
        let deadline = Instant::now() + PATIENCE;
        while child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                fail(format!("{what} did not finish"));
            }
            self.turn(events, Duration::from_millis(5));
        }
    }

    /// Turn until every message in flight has been echoed.
    fn drain(&mut self, events: &mut Events, what: &str) {
        let deadline = Instant::now() + PATIENCE;
        while self.outstanding() > 0 {
            if Instant::now() > deadline {
                fail(format!(
                    "{what}: {} echoes still missing after {PATIENCE:?}",
                    self.outstanding()
                ));
            }
            self.turn(events, Duration::from_millis(100));
        }
    }
}

/// The pattern, twice over; with `lines`, pieces of `size` bytes that each
/// end with the only `\n` in them.
fn make_pattern(lines: bool, size: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut p: Vec<u8> = (0..period())
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match (x >> 24) as u8 {
                _ if lines && i % size == size - 1 => b'\n',
                b'\n' if lines => b' ',
                b => b,
            }
        })
        .collect();
    p.extend_from_within(..);
    p
}

fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Wait until the server accepts connections (it may still be starting).
fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            fail(format!("nothing listens on {addr}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn connect(o: &Opts, i: usize) -> TcpStream {
    let domain = socket2::Domain::for_address(o.addr);
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, None).unwrap_or_else(|e| fail(e));
    s.set_nonblocking(true).unwrap_or_else(|e| fail(e));
    s.set_nodelay(true).unwrap_or_else(|e| fail(e));
    if o.sources > 1 && o.addr.is_ipv4() {
        let src = Ipv4Addr::new(127, 0, 0, 2 + (i % o.sources) as u8);
        s.bind(&SocketAddrV4::new(src, 0).into())
            .unwrap_or_else(|e| fail(format!("bind {src}: {e}")));
    }
    match s.connect(&o.addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => fail(format!("connect #{i}: {e}")),
    }
    TcpStream::from_std(s.into())
}

/// Reads `/proc/PID/stat` and `/proc/PID/status` of the server.
#[derive(Clone, Copy, Default)]
struct ProcSample {
    /// User and system time, in clock ticks' resolution.
    utime_s: f64,
    stime_s: f64,
    /// Time on CPU to the nanosecond, from `/proc/PID/schedstat` (main thread).
    oncpu_s: f64,
}

fn proc_sample(pid: Option<u32>) -> ProcSample {
    let Some(pid) = pid else {
        return ProcSample::default();
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_else(|e| fail(e));
    let rest = &stat[stat.rfind(')').unwrap_or(0) + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let ticks = |k: usize| f.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / tick;
    // Fields 14 and 15 of stat(5), counted from the state (field 3).
    let sched = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap_or_default();
    let oncpu_ns: f64 = sched
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    ProcSample {
        utime_s: ticks(11),
        stime_s: ticks(12),
        oncpu_s: oncpu_ns / 1e9,
    }
}

fn proc_status_kb(pid: Option<u32>, key: &str) -> u64 {
    let Some(pid) = pid else { return 0 };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

fn self_cpu_s() -> f64 {
    // SAFETY: getrusage writes the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// The server's system calls, counted by `perf stat` over the window.
const PERF_EVENTS: [(&str, &str); 10] = [
    ("syscalls", "raw_syscalls:sys_enter"),
    ("recvfrom", "syscalls:sys_enter_recvfrom"),
    ("read", "syscalls:sys_enter_read"),
    ("readv", "syscalls:sys_enter_readv"),
    ("sendto", "syscalls:sys_enter_sendto"),
    ("write", "syscalls:sys_enter_write"),
    ("writev", "syscalls:sys_enter_writev"),
    ("epoll_wait", "syscalls:sys_enter_epoll_wait"),
    ("epoll_pwait", "syscalls:sys_enter_epoll_pwait"),
    ("epoll_ctl", "syscalls:sys_enter_epoll_ctl"),
];

/// `perf stat` attached to the server, counting only between `enable` and
/// `disable` sent through its control fifos: its window is the measured
/// window, not that plus however long perf takes to attach and detach (which
/// added ~0.5 % to every count).
struct PerfStat {
    child: Child,
    ctl: std::fs::File,
    ack: std::fs::File,
    dir: std::path::PathBuf,
}

impl PerfStat {
    fn spawn(pid: u32) -> PerfStat {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::env::temp_dir().join(format!("loadgen-{}-perf", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| fail(format!("{}: {e}", dir.display())));
        let (ctl_path, ack_path) = (dir.join("ctl"), dir.join("ack"));
        for f in [&ctl_path, &ack_path] {
            let ok = Command::new("mkfifo").arg(f).status().is_ok_and(|s| s.success());
            if !ok {
                fail(format!("mkfifo {} failed", f.display()));
            }
        }
        let events: Vec<&str> = PERF_EVENTS.iter().map(|(_, e)| *e).collect();
        let mut control = std::ffi::OsString::from("fifo:");
        control.push(&ctl_path);
        control.push(",");
        control.push(&ack_path);
        let mut child = Command::new("perf")
            .args(["stat", "-D", "-1", "--control"])
            .arg(control)
            .args(["-e", &events.join(","), "-p", &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| fail(format!("perf: {e}")));
        // Non-blocking opens, so a perf that never starts cannot hang us:
        // the reading end opens at once; the writing end once perf reads.
        let ack = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&ack_path)
            .unwrap_or_else(|e| fail(format!("{}: {e}", ack_path.display())));
        let deadline = Instant::now() + PATIENCE;
        let ctl = loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&ctl_path)
            {
                Ok(f) => break f,
                Err(_) if Instant::now() < deadline && child.try_wait().ok().flatten().is_none() => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => fail(format!("perf stat did not open its control fifo: {e}")),
            }
        };
        PerfStat { child, ctl, ack, dir }
    }

    /// Send `enable` or `disable` (then poll [`acked`](Self::acked)).
    fn send(&mut self, what: &str) {
        writeln!(self.ctl, "{what}").unwrap_or_else(|e| fail(format!("perf control: {e}")));
    }

    /// Whether perf has acknowledged the last command (non-blocking).
    fn acked(&mut self) -> bool {
        let mut buf = [0u8; 16];
        match self.ack.read(&mut buf) {
            Ok(n) if n > 0 => {
                if !buf[..n].starts_with(b"ack") {
                    fail(format!(
                        "perf control answered {:?}",
                        String::from_utf8_lossy(&buf[..n])
                    ));
                }
                true
            }
            _ => false,
        }
    }

    /// Stop perf (SIGINT makes it print its counts) and return what it printed.
    fn finish(mut self) -> String {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + PATIENCE;
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                fail("perf stat did not stop");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut s = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut s);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        s
    }
}

/// How often `perf record` samples the server's CPU (an odd rate, so the
/// samples do not beat against the kernel's 1 ms timer).
const SAMPLE_HZ: u32 = 4999;

/// Sample which mode (user or kernel) the server's CPU time is spent in,
/// for `window`, into `file`.
fn spawn_sampler(pid: u32, window: Duration, file: &std::path::Path) -> Child {
    Command::new("perf")
        .args(["record", "-q", "-e", "cpu-clock", "-F", &SAMPLE_HZ.to_string()])
        .args(["-p", &pid.to_string(), "-o"])
        .arg(file)
        .args(["--", "sleep"])
        .arg(format!("{:.3}", window.as_secs_f64()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| fail(format!("perf record: {e}")))
}

/// The share of the samples taken in user mode, and how many samples there
/// were, from `perf report` of the sampler's file.
fn user_share(file: &std::path::Path) -> Option<(f64, u64)> {
    let out = Command::new("perf")
        .args([
            "report",
            "--stdio",
            "-F",
            "overhead_us,overhead_sys,sample",
            "--sort",
            "comm",
            "-i",
        ])
        .arg(file)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let (mut us, mut sys, mut samples) = (0.0, 0.0, 0u64);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with('#') || f.len() < 3 {
            continue;
        }
        let pct = |v: &str| v.trim_end_matches('%').parse::<f64>().ok();
        us += pct(f[0])?;
        sys += pct(f[1])?;
        samples += f[2].parse::<u64>().ok()?;
    }
    (us + sys > 0.0).then(|| (us / (us + sys), samples))
}

/// Parse `perf stat` output: counts by short name.
fn parse_perf(out: &str) -> Vec<(&'static str, f64)> {
    let mut counts = Vec::new();
    for line in out.lines() {
        let mut words = line.split_whitespace();
        let (Some(first), Some(second)) = (words.next(), words.next()) else {
            continue;
        };
        if let Some((name, _)) = PERF_EVENTS.iter().find(|(_, e)| *e == second) {
            let n: f64 = first.replace([',', '.'], "").parse().unwrap_or(f64::NAN);
            counts.push((*name, n));
        }
    }
    counts
}

fn main() {
    let o = parse_opts();
    if o.lines {
        PERIOD.store(PATTERN - PATTERN % o.size, std::sync::atomic::Ordering::Relaxed);
    }
    raise_fd_limit();
    wait_listening(o.addr);
    let rss_before = proc_status_kb(o.pid, "VmRSS:");
    let mut g = Gen {
        poll: Poll::new().unwrap_or_else(|e| fail(e)),
        conns: Vec::with_capacity(o.conns),
        pattern: make_pattern(o.lines, o.size),
        buf: vec![0u8; 64 * 1024],
        size: o.size,
        refill: false,
        hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap(),
        count: Count::default(),
    };
    let mut events = Events::with_capacity(1024);

    // Connect, a batch at a time; one echo each proves the server took it.
    let t_connect = Instant::now();
    while g.conns.len() < o.conns {
        let batch = (o.conns - g.conns.len()).min(CONNECT_BATCH);
        let now = Instant::now();
        for _ in 0..batch {
            let i = g.conns.len();
            let mut sock = connect(&o, i);
            let interest = Interest::READABLE | Interest::WRITABLE;
            g.poll
                .registry()
                .register(&mut sock, Token(i), interest)
                .unwrap_or_else(|e| fail(e));
            let start = (i * 7919 + 13) % period();
            let start = if o.lines { start - start % o.size } else { start };
            g.conns.push(Conn {
                sock,
                start,
                generated: 0,
                sent: 0,
                received: 0,
                in_flight: VecDeque::new(),
            });
            g.generate(i, 1, now);
        }
        g.drain(&mut events, "connecting");
    }
    let connect_s = t_connect.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(100));
    let rss_idle = proc_status_kb(o.pid, "VmRSS:");

    // Load: every connection keeps `depth` messages in flight.
    g.refill = true;
    let now = Instant::now();
    for i in 0..g.conns.len() {
        g.generate(i, o.depth, now);
        g.flush(i);
    }
    let warm_end = Instant::now() + o.warmup;
    while Instant::now() < warm_end {
        g.turn(&mut events, Duration::from_millis(10));
    }

    // The measured window.
    let mut perf = match (o.perf, o.pid) {
        (true, Some(pid)) => Some(PerfStat::spawn(pid)),
        _ => None,
    };
    if let Some(p) = perf.as_mut() {
        g.perf_command(p, &mut events, "enable");
    }
    g.hist.reset();
    g.count = Count::default();
    let srv0 = proc_sample(o.pid);
    let cpu0 = self_cpu_s();
    let sample_file = std::env::temp_dir().join(format!("loadgen-{}.perf.data", std::process::id()));
    let mut sampler = match (o.perf, o.pid) {
        (true, Some(pid)) => Some(spawn_sampler(pid, o.duration, &sample_file)),
        _ => None,
    };
    let t0 = Instant::now();
    let end = t0 + o.duration;
    while Instant::now() < end && g.count.msgs < o.max_msgs {
        g.turn(&mut events, Duration::from_millis(10));
    }
    // Messages echoed while perf takes the disable count, as syscalls made
    // while it took the enable did not: the two ends roughly cancel.
    if let Some(p) = perf.as_mut() {
        g.perf_command(p, &mut events, "disable");
    }
    let window = t0.elapsed().as_secs_f64();
    let count = g.count;
    let srv1 = proc_sample(o.pid);
    let cpu1 = self_cpu_s();
    let hist = g.hist.clone();
    let perf_out = perf.take().map(PerfStat::finish);
    let share = sampler.take().and_then(|mut child| {
        g.wait_for(&mut child, &mut events, "perf record");
        let share = user_share(&sample_file);
        let _ = std::fs::remove_file(&sample_file);
        share
    });
    g.refill = false;
    g.drain(&mut events, "draining");
    let hwm = proc_status_kb(o.pid, "VmHWM:");
    let echoed_total: u64 = g.conns.iter().map(|c| c.received / o.size as u64).sum();
    // Close with RST: no TIME_WAIT, so back-to-back runs never run short of ports.
    for c in g.conns.drain(..) {
        let s = socket2::SockRef::from(&c.sock);
        let _ = s.set_linger(Some(Duration::ZERO));
    }

    if count.msgs == 0 {
        fail("no message was echoed in the measured window");
    }
    let msgs = count.msgs as f64;
    let rate = msgs / window;
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    let mut out = format!(
        "result{}",
        o.labels.iter().map(|l| format!(" {l}")).collect::<String>()
    );
    let mut kv = |k: &str, v: String| out.push_str(&format!(" {k}={v}"));
    kv("conns", o.conns.to_string());
    kv("size", o.size.to_string());
    kv("depth", o.depth.to_string());
    kv("window_s", format!("{window:.3}"));
    kv("msgs", count.msgs.to_string());
    kv("msgs_per_s", format!("{rate:.0}"));
    kv("mb_per_s", format!("{:.2}", count.bytes as f64 / window / 1e6));
    kv("p50_us", format!("{:.1}", q(0.5)));
    kv("p99_us", format!("{:.1}", q(0.99)));
    kv("p999_us", format!("{:.1}", q(0.999)));
    kv("echoed_total", echoed_total.to_string());
    kv("client_cpu", format!("{:.3}", (cpu1 - cpu0) / window));
    kv("connect_s", format!("{connect_s:.3}"));
    if o.pid.is_some() {
        let user = srv1.utime_s - srv0.utime_s;
        let sys = srv1.stime_s - srv0.stime_s;
        let oncpu = srv1.oncpu_s - srv0.oncpu_s;
        kv("server_cpu", format!("{:.3}", oncpu / window));
        kv("cpu_ns_per_msg", format!("{:.0}", oncpu * 1e9 / msgs));
        // User time: on-CPU time times the share of perf's samples taken in
        // user mode when there are enough of them; else /proc's ticks.
        let ticks_ns = user * 1e9 / msgs;
        match share {
            Some((frac, n)) if n >= 1000 => {
                kv("user_ns_per_msg", format!("{:.0}", oncpu * frac * 1e9 / msgs));
                kv("user_samples", n.to_string());
            }
            _ => kv("user_ns_per_msg", format!("{ticks_ns:.0}")),
        }
        kv("user_ns_per_msg_ticks", format!("{ticks_ns:.0}"));
        // SAFETY: sysconf has no preconditions.
        let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        kv("user_ticks", format!("{:.0}", user * tick));
        kv("sys_ns_per_msg", format!("{:.0}", sys * 1e9 / msgs));
        kv("rss_before_kb", rss_before.to_string());
        kv("rss_idle_kb", rss_idle.to_string());
        kv("hwm_kb", hwm.to_string());
        let per_conn = (rss_idle as f64 - rss_before as f64) * 1024.0 / o.conns as f64;
        kv("rss_per_conn_b", format!("{per_conn:.0}"));
    }
    if let Some(text) = perf_out {
        let counts = parse_perf(&text);
        if counts.is_empty() {
            fail(format!("could not read perf stat's output:\n{text}"));
        }
        // perf counted over the measured window itself.
        let get = |names: &[&str]| -> f64 {
            counts
                .iter()
                .filter(|(n, _)| names.contains(n))
                .map(|(_, c)| c)
                .sum::<f64>()
                / msgs
        };
        kv("syscalls_per_msg", format!("{:.3}", get(&["syscalls"])));
        kv(
            "reads_per_msg",
            format!("{:.3}", get(&["recvfrom", "read", "readv"])),
        );
        kv(
            "writes_per_msg",
            format!("{:.3}", get(&["sendto", "write", "writev"])),
        );
        kv(
            "polls_per_msg",
            format!("{:.3}", get(&["epoll_wait", "epoll_pwait"])),
        );
        kv("ctls_per_msg", format!("{:.3}", get(&["epoll_ctl"])));
    }
    println!("{out}");
    eprintln!(
        "loadgen: {} conns x depth {} x {} B: {rate:.0} msg/s, {:.1} MB/s, p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us",
        o.conns,
        o.depth,
        o.size,
        count.bytes as f64 / window / 1e6,
        q(0.5),
        q(0.99),
        q(0.999)
    );
}
