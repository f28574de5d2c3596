"""Shared helpers for the fault scripts: start one example server, sample its
RSS, and time a well-behaved client's round trips while an attack runs.
Every wait is bounded."""
import os, socket, subprocess, sys, threading, time, resource

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# FAULT_BIN: another build's examples folder (to compare two builds).
BIN = os.environ.get("FAULT_BIN", os.path.join(ROOT, "target", "release", "examples"))

def args(default_port):
    """The attack named on the command line, the port (default
    `default_port`), and a function that connects a client to it."""
    raise_nofile()
    attack = sys.argv[1]
    port = int(sys.argv[2]) if len(sys.argv) > 2 else default_port
    return attack, port, lambda: socket.create_connection(("127.0.0.1", port), timeout=5)

def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

class Server:
    def __init__(self, name, port, extra=(), nofile=None, env=None):
        self.name, self.port = name, port
        self.errpath = f"/tmp/fault_{name}_{port}.stderr"
        self.err = open(self.errpath, "wb")
        pre = None
        if nofile:
            def pre():
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        e = dict(os.environ); e.update(env or {})
        self.p = subprocess.Popen([os.path.join(BIN, name), f"127.0.0.1:{port}", *extra],
                                  stdout=subprocess.DEVNULL, stderr=self.err, preexec_fn=pre, env=e)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("server did not come up")
        self.rss0 = self.rss()
        self.peak = self.rss0

    def rss(self):
        try:
            with open(f"/proc/{self.p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS"):
                        return int(line.split()[1])
        except OSError:
            return -1
        return -1

    def sample(self):
        r = self.rss()
        self.peak = max(self.peak, r)
        return r

    def fds(self):
        try:
            return len(os.listdir(f"/proc/{self.p.pid}/fd"))
        except OSError:
            return -1

    def cpu(self):
        with open(f"/proc/{self.p.pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        rc = self.p.poll()
        if rc is None:
            self.p.send_signal(2)
            try:
                rc = self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill(); rc = self.p.wait()
                rc = f"killed after SIGINT timeout ({rc})"
        self.err.close()
        with open(self.errpath, "rb") as f:
            err = f.read()
        return rc, err

    def report(self, label, prober=None, extra=""):
        alive = self.alive()
        peak, now = self.peak, self.sample()
        rc, err = self.stop()
        panics = [l for l in err.decode("utf8", "replace").splitlines()
                  if "panick" in l or "error" in l.lower() or "fatal" in l.lower()]
        s = (f"[{self.name}] {label}: alive_at_end={alive} exit={rc} "
             f"rss_kib start={self.rss0} peak={peak} end={now}")
        if prober:
            s += " " + prober.summary()
        if extra:
            s += " " + extra
        print(s, flush=True)
        for l in panics[:5]:
            print("   stderr:", l[:300], flush=True)
        return s

# ---- well-behaved probes: return True if the answer was exactly right ----

def _recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf

def probe_echo(s, i):
    msg = b"ping %d \x00\xff\xfe\n" % i
    s.sendall(msg)
    return _recv_exact(s, len(msg)) == msg

def probe_kv(s, i):
    s.sendall(b"*1\r\n$4\r\nPING\r\n")
    return _recv_exact(s, 7) == b"+PONG\r\n"

def probe_pubsub(s, i):
    s.sendall(b"PUB probe-topic-nobody x\n")
    return _recv_exact(s, 5) == b"OK 0\n"

def probe_http(s, i):
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    buf = b""
    while not buf.endswith(b"Hello, World!"):
        c = s.recv(4096)
        if not c:
            raise ConnectionError("closed")
        buf += c
    return buf.startswith(b"HTTP/1.1 200")

PROBES = {"echo": probe_echo, "echo_async": probe_echo, "kv": probe_kv,
          "pubsub": probe_pubsub, "http": probe_http, "proxy": probe_echo}

class Prober(threading.Thread):
    """One persistent well-behaved connection timing round trips every
    `every` seconds; reconnects (counted) if it is closed."""
    def __init__(self, kind, port, every=0.02, timeout=5.0):
        super().__init__(daemon=True)
        self.kind, self.port, self.every, self.timeout = kind, port, every, timeout
        self.lat, self.bad, self.errors, self.reconnects = [], 0, [], 0
        self.when = []
        self.stop_ev = threading.Event()

    def run(self):
        fn = PROBES[self.kind]
        s, i = None, 0
        while not self.stop_ev.is_set():
            try:
                if s is None:
                    t0 = time.monotonic()
                    s = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
                    s.settimeout(self.timeout)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                t0 = time.monotonic()
                ok = fn(s, i)
                self.lat.append(time.monotonic() - t0)
                self.when.append((t0, self.lat[-1]))
                if not ok:
                    self.bad += 1
            except (OSError, ConnectionError) as e:
                self.errors.append(f"{type(e).__name__}:{e}")
                self.lat.append(time.monotonic() - t0)
                try:
                    s and s.close()
                except OSError:
                    pass
                s = None
                self.reconnects += 1
            i += 1
            self.stop_ev.wait(self.every)

    def finish(self):
        self.stop_ev.set(); self.join(self.timeout + 2)

    def summary(self):
        lat = sorted(self.lat)
        if not lat:
            return "probe: no samples"
        p50 = lat[len(lat) // 2]
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        errs = ""
        if self.errors:
            errs = f" errors={len(self.errors)} first={self.errors[0]!r}"
        if os.environ.get("TIMELINE"):
            t00 = self.when[0][0] if self.when else 0
            print("timeline(s,ms):", " ".join(f"{t-t00:.1f}:{l*1e3:.0f}" for t, l in self.when if l > 0.02))
        return (f"probe n={len(lat)} p50={p50*1e3:.1f}ms p99={p99*1e3:.1f}ms "
                f"worst={lat[-1]*1e3:.1f}ms wrong={self.bad}{errs}")

def start(name, port, extra=()):
    """Start example `name` on `port` and a well-behaved client probing it."""
    srv = Server(name, port, extra)
    pr = Prober(name, port)
    pr.start()
    return srv, pr
