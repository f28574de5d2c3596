"""Hostile peers around examples/proxy.rs. The upstream is played by this
script (threads) on PORT+1.
usage: python3 benches/fault/proxy_attacks.py ATTACK [PORT]
ATTACK: silent_upstream | no_accept | eof_after_burst | upload_then_close | client_partial"""
import socket, sys, time, os, threading, hashlib
sys.path.insert(0, os.path.dirname(__file__))
from common import Server, Prober, args

attack, port, conn = args(41004)
up_port = port + 1
stop = threading.Event()
up_conns = []
BURST = os.urandom(1 << 20) * 20  # 20 MiB

def upstream(mode):
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", up_port)); ls.listen(0 if mode == "no_accept" else 4096)
    up_conns.append(ls)
    if mode == "no_accept":
        stop.wait(); return
    ls.settimeout(0.2)
    while not stop.is_set():
        try: c, _ = ls.accept()
        except socket.timeout: continue
        up_conns.append(c)
        threading.Thread(target=serve, args=(c, mode), daemon=True).start()

up_got = {}
def serve(c, mode):
    c.settimeout(20)
    try:
        if mode == "echo":
            while not stop.is_set():
                d = c.recv(65536)
                if not d: break
                c.sendall(d)
        elif mode == "silent":
            while not stop.is_set():
                if not c.recv(65536): break
        elif mode == "burst":
            c.sendall(BURST); c.close()
        elif mode == "slow_reader":
            h = hashlib.sha256(); n = 0
            while True:
                d = c.recv(65536)
                if not d: break
                h.update(d); n += len(d); time.sleep(0.002)
            up_got["n"], up_got["sha"] = n, h.hexdigest()
    except OSError as e:
        up_got.setdefault("err", repr(e))

mode = {"silent_upstream": "silent", "no_accept": "no_accept", "eof_after_burst": "burst",
        "upload_then_close": "slow_reader", "client_partial": "echo"}[attack]
threading.Thread(target=upstream, args=(mode,), daemon=True).start()
time.sleep(0.2)
srv = Server("proxy", port, [f"127.0.0.1:{up_port}"])
time.sleep(0.5); up_got.clear()  # forget the readiness check's pair
pr = None
extra = ""
try:
    if attack == "silent_upstream":
        cs = []
        for i in range(1000):
            s = conn(); s.sendall(b"hello\n"); cs.append(s)
        time.sleep(2)
        extra = f"clients=1000 proxy_fds={srv.fds()} rss={srv.sample()}"
        for s in cs: s.close()
        for w in (1, 5):
            time.sleep(w); extra += f" fds_{w}s_after_close={srv.fds()}"
        wait = int(os.environ.get("WAIT", 0)); t1 = time.time()
        while time.time() - t1 < wait:
            time.sleep(10); extra += f" fds_{time.time()-t1:.0f}s={srv.fds()}"
    elif attack == "no_accept":
        cs = []; t0 = time.time()
        for i in range(300):
            s = conn(); s.setblocking(False)
            try: s.send(b"x" * 100000)
            except OSError: pass
            cs.append(s)
        c0 = srv.cpu(); time.sleep(2)
        extra = f"clients=300 fds_2s={srv.fds()} cpu_2s={(srv.cpu()-c0)/2*100:.0f}%"
        closed_at = {}
        while time.time() - t0 < 14 and len(closed_at) < len(cs):
            for i, s in enumerate(cs):
                if i in closed_at: continue
                try:
                    if s.recv(65536) == b"": closed_at[i] = time.time() - t0
                except BlockingIOError: pass
                except OSError: closed_at[i] = time.time() - t0
            time.sleep(0.05)
        v = sorted(closed_at.values())
        extra += (f" closed_by_14s={len(v)}" + (f" first={v[0]:.1f}s last={v[-1]:.1f}s" if v else "")
                  + f" fds_14s={srv.fds()}")
        time.sleep(max(0, t0 + 17 - time.time())); extra += f" fds_17s={srv.fds()} rss_17s={srv.sample()}"
        for s in cs: s.close()
        time.sleep(1); extra += f" fds_after_client_close={srv.fds()}"
    elif attack == "eof_after_burst":
        # upstream sends 20 MiB then closes at once; the client reads slowly
        s = conn(); s.settimeout(10)  # sends nothing: the upstream's close must not be a reset
        h = hashlib.sha256(); n = 0; err = None
        try:
            while True:
                d = s.recv(32768)
                if not d: break
                h.update(d); n += len(d); time.sleep(0.0005)
        except OSError as e: err = repr(e)
        extra = f"client_got={n}/{len(BURST)} intact={h.hexdigest()==hashlib.sha256(BURST).hexdigest()} err={err} peak_rss={srv.sample()}"
    elif attack == "upload_then_close":
        # client sends 20 MiB and closes at once (no reset); the upstream reads slowly
        s = conn(); s.sendall(BURST); s.close()
        t0 = time.time()
        while "n" not in up_got and "err" not in up_got and time.time() - t0 < 20: time.sleep(0.1)
        extra = (f"upstream_got={up_got.get('n')}/{len(BURST)} "
                 f"intact={up_got.get('sha') == hashlib.sha256(BURST).hexdigest()} err={up_got.get('err')}")
    elif attack == "client_partial":
        # echo upstream; 500 slowloris clients trickle bytes, others reset mid-stream;
        # the probe checks round trips through the proxy
        pr = Prober("proxy", port); pr.start()
        cs = [conn() for _ in range(500)]
        t_end = time.time() + 5
        while time.time() < t_end:
            for s in cs:
                try: s.send(b"\x00")
                except OSError: pass
            time.sleep(0.01); srv.sample()
        extra = f"slow_clients=500 fds={srv.fds()}"
        for s in cs: s.close()
finally:
    if pr: pr.finish()
    stop.set()
    srv.report(attack, pr, extra)
    for c in up_conns:
        try: c.close()
        except OSError: pass
