"""Hostile clients against examples/http.rs.
usage: python3 benches/fault/http_attacks.py ATTACK [PORT]
ATTACK: slow_head | odd_heads | tiny_chunks"""
import socket, sys, time, os
sys.path.insert(0, os.path.dirname(__file__))
from common import args, start
attack, port, conn = args(41020)
srv, pr = start("http", port)
extra = ""
try:
    if attack == "slow_head":
        # N connections, each sends a near-8 KiB head in 64-byte pieces, round robin, for 5 s;
        # the server re-parses the whole head on every piece
        n = int(os.environ.get("CONNS", 300)); step = int(os.environ.get("STEP", 64))
        head = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Pad: " + b"p" * 8000
        cs = [conn() for _ in range(n)]
        for s in cs: s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c0 = srv.cpu(); t0 = time.time(); pos = 0; sent = 0
        while time.time() - t0 < 5 and pos < len(head):
            for s in cs:
                try: sent += s.send(head[pos:pos + step])
                except OSError: pass
            pos += step
        dt = time.time() - t0; cpu = srv.cpu() - c0
        extra = f"conns={n} step={step}B head_bytes_each={pos} sent={sent/1e6:.1f}MB secs={dt:.1f} server_cpu={cpu:.2f}s ({cpu/dt*100:.0f}%)"
        for s in cs: s.close()
    elif attack == "odd_heads":
        reqs = [
            b"GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\nabc",
            b"GET / HTTP/1.1\r\nHost: \x00\xff\xfe\r\n\r\n",
            b"\x00\x00\x00\x00\r\n\r\n",
            b"GET / HTTP/1.1\n\n",
            b"GET / HTTP/9.9\r\n\r\n",
            b"GET / HTTP/1.1\r\n" + b"a:b\r\n" * 1600 + b"\r\n",
            b"GET / HTTP/1.1\r\n" + b" folded\r\n" * 10 + b"\r\n",
            b"\r\n" * 5000 + b"GET / HTTP/1.1\r\n\r\n",
        ]
        out = []
        for r in reqs:
            s = conn(); s.settimeout(3); s.sendall(r)
            try:
                d = s.recv(200)
                out.append(d.split(b"\r\n", 1)[0].decode("latin1") or "EOF")
            except socket.timeout:
                out.append("no answer in 3s")
            except OSError as e:
                out.append(type(e).__name__)
            s.close()
        extra = "answers=" + repr(out)
    elif attack == "tiny_chunks":
        # 20 clients each upload a chunked body of 1-byte chunks for 4 s
        cs = [conn() for _ in range(20)]
        for s in cs:
            s.sendall(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"); s.setblocking(False)
        blob = b"1\r\na\r\n" * 10000
        c0 = srv.cpu(); t0 = time.time(); sent = 0
        while time.time() - t0 < 4:
            for s in cs:
                try: sent += s.send(blob)
                except OSError: pass
        dt = time.time() - t0
        extra = f"sent={sent/1e6:.1f}MB of 1-byte chunks server_cpu={(srv.cpu()-c0)/dt*100:.0f}%"
        for s in cs: s.close()
finally:
    pr.finish()
    srv.report(attack, pr, extra)
