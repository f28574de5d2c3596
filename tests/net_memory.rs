//! Heap bytes per idle connection: at most 256.
//!
//! A counting global allocator tracks the live heap of this process. The
//! server loop runs on the test thread; the 10,000 clients live in a child
//! process (this test binary re-executed with `EVLOOP_MEMORY_CLIENTS` set),
//! so their sockets and heap are not ours and both ends of 10,000
//! connections need not fit under one RLIMIT_NOFILE.
//!
//! Run it alone to see the figure:
//! `cargo test --release --test net_memory -- --nocapture`

mod common_net;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use common_net::{set_fd_limit, spawn_self, Echo, WAIT};
use evloop::net::{self, Conn, Handler, ListenConfig};
use evloop::{Ctx, EventLoop};

/// The system allocator, counting live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; we only
// add up the sizes on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CLIENTS_ENV: &str = "EVLOOP_MEMORY_CLIENTS";
const WANTED: usize = 10_000;
/// The bound is for release builds (207 bytes measured). With debug
/// assertions mio adds a 16-byte selector id to every socket.
const LIMIT_BYTES: isize = if cfg!(debug_assertions) { 256 + 16 } else { 256 };

/// The child's part: connect `n` idle clients, hold them until stdin closes.
fn be_the_clients(spec: &str) -> ! {
    set_fd_limit(|hard| hard);
    let (addr, n) = spec.split_once(',').expect("ADDR,N");
    let addr: SocketAddr = addr.parse().unwrap();
    let n: usize = n.parse().unwrap();
    let clients: Vec<TcpStream> = (0..n)
        .map(|i| TcpStream::connect(addr).unwrap_or_else(|e| panic!("client {i}: {e}")))
        .collect();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(clients);
    std::process::exit(0);
}

/// Counts opened connections in the loop state; otherwise an echo.
struct Counted;

impl Handler<usize> for Counted {
    fn on_open(&mut self, _: &mut Conn, _: &mut Ctx<usize>, opened: &mut usize) {
        *opened += 1;
    }
    fn on_data(&mut self, conn: &mut Conn, data: &[u8], ctx: &mut Ctx<usize>, st: &mut usize) -> usize {
        Echo.on_data(conn, data, ctx, st)
    }
}

#[test]
fn idle_connection_heap_bytes() {
    if let Ok(spec) = std::env::var(CLIENTS_ENV) {
        be_the_clients(&spec);
    }
    let limit = set_fd_limit(|hard| hard) as usize;
    // Our side needs one fd per connection plus a few for the loop and the
    // test harness; the clients are in the child and count against its limit.
    let n = WANTED.min(limit.saturating_sub(64));
    if n < WANTED {
        println!("RLIMIT_NOFILE hard limit {limit}: measuring {n} connections instead of {WANTED}");
    }

    let mut el = EventLoop::<usize>::new().unwrap();
    let cfg = ListenConfig {
        backlog: 4096,
        ..ListenConfig::default()
    };
    let l = net::listen(&mut el, &"127.0.0.1:0".parse().unwrap(), cfg, |_, _, _, _| {
        Some(Counted)
    })
    .unwrap();
    let addr = match l.addr {
        net::Addr::Tcp(a) => a,
        other => panic!("{other}"),
    };
    let base_sources = el.source_count();
    let mut opened = 0usize;

    // Warm up: one connection through a whole echo and close, so one-off
    // buffers the loop keeps (its read scratch, its spare output buffer) are
    // in the baseline.
    {
        use std::io::Write;
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        c.write_all(b"warm").unwrap();
        let mut back = [0u8; 4];
        while opened == 0 {
            el.turn(&mut opened, Some(Duration::from_millis(10))).unwrap();
        }
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"warm");
        drop(c);
        let deadline = Instant::now() + WAIT;
        while el.source_count() > base_sources {
            assert!(Instant::now() < deadline, "warm-up connection never closed");
            el.turn(&mut opened, Some(Duration::from_millis(10))).unwrap();
        }
        opened = 0;
    }

    let mut child = spawn_self("idle_connection_heap_bytes", CLIENTS_ENV, &format!("{addr},{n}"));
    // Nothing of ours has touched the heap for the clients yet: they wait in
    // the kernel's backlog until the loop turns.
    let before = LIVE.load(Ordering::SeqCst);

    let deadline = Instant::now() + Duration::from_secs(120);
    while opened < n {
        el.turn(&mut opened, Some(Duration::from_millis(10))).unwrap();
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!("client process exited early ({status}) with {opened} of {n} connected");
        }
        assert!(Instant::now() < deadline, "only {opened} of {n} accepted in time");
    }
    // A few more turns: every connection has had its first dispatch.
    for _ in 0..10 {
        el.turn(&mut opened, Some(Duration::from_millis(10))).unwrap();
    }
    assert_eq!(el.source_count(), base_sources + n);
    let after = LIVE.load(Ordering::SeqCst);

    let total = after - before;
    let per = total / n as isize;
    println!(
        "{n} idle connections: {total} heap bytes in all, {per} bytes each \
         (size_of::<Conn>() = {})",
        std::mem::size_of::<Conn>()
    );
    assert!(
        per <= LIMIT_BYTES,
        "{per} heap bytes per idle connection, over {LIMIT_BYTES}"
    );
    drop(child);
}
