"""Hostile clients against the byte/line servers: echo, echo --lines,
echo_async, and proxy (in front of an echo server).
usage: python3 benches/fault/stream_attacks.py SERVER ATTACK [PORT]
SERVER: echo | echo_lines | echo_async | http | kv | pubsub
ATTACK: partial_lines | never_read | emfile | half_close | shut_rd | reset_mid | binary"""
import socket, struct, sys, time, os, random, threading
sys.path.insert(0, os.path.dirname(__file__))
from common import Server, Prober, raise_nofile

raise_nofile()
server, attack = sys.argv[1], sys.argv[2]
port = int(sys.argv[3]) if len(sys.argv) > 3 else 41003
conn = lambda: socket.create_connection(("127.0.0.1", port), timeout=5)
name, args, kind = {"echo": ("echo", [], "echo"), "echo_lines": ("echo", ["--lines"], "echo"),
                    "echo_async": ("echo_async", [], "echo_async"), "http": ("http", [], "http"),
                    "kv": ("kv", [], "kv"), "pubsub": ("pubsub", [], "pubsub")}[server]
nofile = int(os.environ.get("NOFILE", 0)) or None
srv = Server(name, port, args, nofile=nofile)
pr = Prober(kind, port); pr.start()
extra = ""
REQ = {"echo": b"x\n", "echo_async": b"x\n", "http": b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
       "kv": b"PING\r\n", "pubsub": b"PUB t m\n"}[kind]
try:
    if attack == "partial_lines":
        # N connections each send ~1 MiB (just under the line cap) without a newline, held
        n = int(os.environ.get("CONNS", 200))
        size = int(os.environ.get("SIZE", 1024 * 1024 - 16))
        blob = b"a" * size
        cs = []
        for i in range(n):
            s = conn(); s.sendall(blob); cs.append(s)
            if i % 20 == 0: srv.sample()
        time.sleep(1)
        held = srv.sample()
        for s in cs: s.close()
        time.sleep(1)
        extra = f"conns={n} partial={size}B rss_held={held} rss_after_close={srv.sample()}"
    elif attack == "never_read":
        # 50 clients send as fast as they can for 5 s and never read
        cs = []
        for i in range(50):
            s = conn(); s.setblocking(False); cs.append(s)
        blob = (REQ * (65536 // len(REQ) + 1))[:65536]
        t_end = time.time() + 5; sent = 0
        while time.time() < t_end:
            for s in cs:
                try: sent += s.send(blob)
                except BlockingIOError: pass
                except OSError: pass
            time.sleep(0.001)
            srv.sample()
        extra = f"clients=50 sent={sent/1e6:.1f}MB fds={srv.fds()}"
        for s in cs: s.close()
    elif attack == "emfile":
        # more connections than the server's RLIMIT_NOFILE, held open; count how many
        # fresh well-behaved clients get an answer meanwhile, then after release.
        target = int(os.environ.get("CONNS", 1500))
        cs = []
        for i in range(target):
            try:
                s = conn(); cs.append(s)
            except OSError as e:
                break
        time.sleep(0.5)
        c0 = srv.cpu(); t0 = time.time()
        fresh_ok = fresh_fail = 0; fresh_worst = 0
        for i in range(20):
            t1 = time.monotonic()
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2); s.settimeout(2)
                s.sendall(REQ); d = s.recv(100)
                fresh_ok += bool(d); fresh_fail += not d
                s.close()
            except OSError:
                fresh_fail += 1
            fresh_worst = max(fresh_worst, time.monotonic() - t1)
            time.sleep(0.1)
        cpu_sat = (srv.cpu() - c0) / (time.time() - t0)
        fds_sat = srv.fds()
        alive_held = 0
        for s in cs:
            s.setblocking(False)
            try:
                if s.recv(1) == b"": pass
            except BlockingIOError:
                alive_held += 1
            except OSError:
                pass
        for s in cs: s.close()
        time.sleep(1.5)
        after_ok = 0
        for i in range(5):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=2); s.settimeout(2)
                s.sendall(REQ); after_ok += bool(s.recv(100)); s.close()
            except OSError:
                pass
        extra = (f"nofile={nofile} held_open={len(cs)} still_open_at_server~{alive_held} server_fds_saturated={fds_sat} "
                 f"cpu_while_saturated={cpu_sat*100:.0f}% fresh_during ok={fresh_ok} fail={fresh_fail} worst={fresh_worst*1e3:.0f}ms "
                 f"fresh_after ok={after_ok}/5 fds_after={srv.fds()}")
    elif attack == "half_close":
        # send data, shutdown(WR), read everything back; check bytes and close
        results = []
        for trial, payload in enumerate([b"no newline at all \x00\xff", b"line1\nline2\npartial-tail",
                                         os.urandom(3_000_000)]):
            s = conn(); s.settimeout(5)
            s.sendall(payload); s.shutdown(socket.SHUT_WR)
            got = b""
            try:
                while True:
                    d = s.recv(65536)
                    if not d: break
                    got += d
                res = "EOF"
            except OSError as e:
                res = type(e).__name__
            results.append(f"t{trial}:{len(got)}/{len(payload)}B same={got == payload} end={res}")
            s.close()
        extra = " ".join(results)
    elif attack == "shut_rd":
        # client shuts its read side and keeps sending for 3 s
        s = conn(); s.shutdown(socket.SHUT_RD); s.setblocking(False)
        blob = (REQ * (65536 // len(REQ) + 1))[:65536]
        t_end = time.time() + 3; sent = 0; err = None
        while time.time() < t_end:
            try: sent += s.send(blob)
            except BlockingIOError: time.sleep(0.001)
            except OSError as e: err = e; break
            srv.sample()
        extra = f"sent={sent/1e6:.1f}MB err={err} fds={srv.fds()}"
        s.close()
    elif attack == "reset_mid":
        # 2,000 cycles: send 256 KB, read a little, close with SO_LINGER 0
        blob = (REQ * (262144 // len(REQ) + 1))[:262144]
        t_end = time.time() + 6; n = 0
        while time.time() < t_end and n < 2000:
            s = conn()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.setblocking(False)
            try: s.send(blob)
            except OSError: pass
            time.sleep(0.001)
            try: s.recv(1000)
            except OSError: pass
            s.close(); n += 1
            if n % 100 == 0: srv.sample()
        time.sleep(1)
        extra = f"cycles={n} fds_after={srv.fds()}"
    elif attack == "binary":
        # well-behaved clients with random binary (NUL, 0xff, CR) while hostile ones
        # send random junk; check every byte comes back intact
        stop = threading.Event()
        def junk():
            while not stop.is_set():
                try:
                    s = conn(); s.sendall(os.urandom(random.randint(1, 300000)))
                    s.close()
                except OSError: pass
        th = [threading.Thread(target=junk, daemon=True) for _ in range(2)]
        for t in th: t.start()
        bad = ok = 0; t_end = time.time() + 5
        cs = [conn() for _ in range(8)]
        for s in cs: s.settimeout(5)
        while time.time() < t_end:
            for s in cs:
                p = os.urandom(random.randint(1, 100000)).replace(b"\n", b"\x00") + b"\n"
                s.sendall(p)
                got = b""
                while len(got) < len(p):
                    d = s.recv(len(p) - len(got))
                    if not d: break
                    got += d
                if got == p: ok += 1
                else: bad += 1
        stop.set()
        for t in th: t.join(3)
        extra = f"binary_roundtrips ok={ok} corrupt={bad}"
finally:
    pr.finish()
    srv.report(f"{server}/{attack}", pr, extra)
